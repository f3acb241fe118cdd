# mv2v-jax: `make demo` and `make test` set everything up on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: install constraints demo test test-slow lint bench interrupts

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# Re-installs when pyproject.toml or constraints.txt change. constraints.txt holds the versions the tests
# ran with, torch at 2.13.0 (the CPU build where an index offers it); pyproject.toml keeps the ranges.
# The tpu extra brings libtpu, with which the tests compile the train and sampling steps for TPU v5p.
$(INSTALLED): pyproject.toml constraints.txt | $(PY)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test,tpu]'
	touch $(INSTALLED)

install: $(INSTALLED)

# After changing a dependency in pyproject.toml (and running the tests): constraints.txt from $(VENV).
constraints: | $(PY)
	$(PY) -m pip install --quiet -e '.[test,tpu]'
	$(PY) .ci/constraints.py

# Both tasks with the shipped small models on held-out synthetic data, memory against no memory:
# five novel-view turns and the segments of one long video; prints where the pictures and mp4s are.
demo: install
	$(PY) -m mv2v_jax.eval.demo --out outputs/demo

lint: install
	$(PY) -m ruff check .

# The default suite, then its 15 slowest tests, on every core up to 4 (pytest-xdist; a worker holds a few GB).
# XLA compiles with its backend (LLVM) optimisation off: the same HLO, compiled in a third less time, and
# the suite passes at either level (a plain `pytest` compiles as users do). The tests marked slow (longer
# than a minute, the rest of the bad-input corpus, the Ctrl-C stress run) run in test-slow, which compiles
# as users' programs are compiled. The 2-process training tests (tests/test_multihost.py) run there by
# themselves, after the rest: beside other tests on 2 cores, a resumed run's last checkpoint save has hung
# in orbax's process syncs (both processes idle, one past the save); alone they pass.
WORKERS := -n auto --maxprocesses 4 --dist worksteal
test: install lint
	XLA_FLAGS="--xla_backend_optimization_level=0 $(XLA_FLAGS)" $(PY) -m pytest -q -m "not slow" $(WORKERS)

test-slow: install
	$(PY) -m pytest -q -m slow $(WORKERS) --ignore tests/test_multihost.py
	$(PY) -m pytest -q -m slow tests/test_multihost.py

# Ctrl-C at 60 seeded random moments of long-edit and NVS sessions and training runs, each continued to
# its end (bench/interrupts.py; about 10 minutes on 2 CPU cores, more the first time, with a cold
# compilation cache): writes the "Interrupts" section of BENCHMARKS.md, exit 1 on any crash.
interrupts: install
	$(PY) bench/interrupts.py

bench: install interrupts
	$(PY) bench/dit_forward.py
	$(PY) bench/encoders.py
	$(PY) bench/retrieval.py
	$(PY) bench/vae.py
	$(PY) bench/memory_cost.py
	$(PY) bench/train_step.py
	$(PY) bench/turn_startup.py
	$(PY) bench/step_cache.py
