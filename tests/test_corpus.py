"""The bad-input corpus (tests/corpus/make_corpus.py) through the real tools, one process per case: each
must exit non-zero with an error naming the input and the problem, leave every file that existed
before byte for byte as it was, and leave no new file behind.

The cases run two at a time (one per core of the 2-core machine the suite is sized for), a pair when
a test first needs one of its cases; the corpus is snapshotted before and after each pair, so a file a
pair changed or left behind fails both cases.
The default suite runs a representative case of each tool and kind of input (`REPRESENTATIVE`); the
others are marked slow (`make test-slow`). Only the selected cases run.
"""

import concurrent.futures
import dataclasses
import hashlib
import itertools
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from corpus.make_corpus import CASES, Case, make_corpus, table
from ctrl_c import take_ctrl_c

REPO = Path(__file__).parents[1]
WORKERS = 2
ERROR_LINES = ("error: ", "FATAL Flags parsing error: ")  # how the CLIs report (absl for flags)
UNCLEAN = r"Traceback \(most recent call last\)|Event loop is closed"  # never on a CLI's stderr
LOCK_HOLDER = """
import sys, time
from pathlib import Path
from mv2v_jax.retrieval.bank import MemoryBank
bank = MemoryBank.open(sys.argv[1])
Path(sys.argv[2]).touch()
time.sleep(600)
"""
# Runs a command with a file size limit: RLIMIT_FSIZE set, then exec (no fork of this JAX process).
FILE_SIZE_LIMIT = "import os, resource, sys; n = int(sys.argv[1]); resource.setrlimit(resource.RLIMIT_FSIZE, (n, n)); os.execv(sys.argv[2], sys.argv[2:])"  # noqa: E501


# One case per tool and kind of bad input: a video, a camera file, a session (damaged, locked by another
# writer, interrupted), weights, flags and configs of sample.py and train.py, training data, latent
# encoding, a converter, a dataset build; a flag that would be ignored, text that is not UTF-8, an
# over-long prompt and a late output path on a real backbone's config, a damaged latent dataset, a
# checkpoint the config no longer fits, an evaluation's bad config.
REPRESENTATIVE = {
    "--compile_mesh without --compile_topology",
    "--prompt of Latin-1 bytes",
    "--prompt of 700 tokens",
    "unwritable/tokenizer (convert_weights.random's last output)",
    "data/damaged_latents/",
    "runs/nvs/ (--export, model.dit.dim changed)",
    "--config nope.py (eval.consistency)",
    "videos/empty.mp4",
    "cameras/nan.json",
    "sessions/busy/",
    "sessions/flipped_bit/",
    "sessions/interrupted/ (Ctrl-C)",
    "weights_truncated/",
    "--config nope.py",
    "--config.sample.sampling.steps=0",
    "failing_config.py",
    "data/latents (missing)",
    "config.py:scene_typo",
    "checkpoints/dit_typo/",
    "datasets/multicam/",
}


@dataclasses.dataclass
class Outcome:
    returncode: int
    stderr: str
    changed: list[str]  # files that existed before the run and differ (or are gone) after it
    created: list[str]  # new files after it


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file under `root` by relative path."""
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def environment() -> dict[str, str]:
    return {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": str(REPO)}


def hold_lock(bank: Path, ready: Path) -> subprocess.Popen:
    """Another process holding the session's memory bank open for writing."""
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(bank), str(ready)], env=environment())
    deadline = time.monotonic() + 60
    while not ready.exists():
        assert holder.poll() is None and time.monotonic() < deadline, "the lock holder did not start"
        time.sleep(0.02)
    return holder


def run(case: Case, root: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, *(arg.replace("{root}", str(root)) for arg in case.argv)]
    if case.file_size_limit is not None:
        command = [sys.executable, "-c", FILE_SIZE_LIMIT, str(case.file_size_limit), *command]
    env = environment() | dict(case.env)
    if case.interrupt is not None:
        return run_interrupted(command, case.interrupt, env)
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def run_interrupted(command: list[str], trigger: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """Runs `command` and sends it SIGINT, as Ctrl-C does, once its stderr matches `trigger`."""
    process = subprocess.Popen(
        command,
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=take_ctrl_c,
    )
    seen = b""
    while not re.search(trigger.encode(), seen):
        chunk = os.read(process.stderr.fileno(), 1 << 16)
        if not chunk:  # it ended without showing `trigger`: the case then fails on its message
            break
        seen += chunk
    process.send_signal(signal.SIGINT)
    stdout, rest = process.communicate(timeout=600)
    return subprocess.CompletedProcess(command, process.returncode, stdout.decode(), (seen + rest).decode())


class Outcomes:
    """The outcome of each selected case, run with its pair (`WORKERS` consecutive selected cases) when a
    test first asks for one of them: a pytest-xdist worker runs only the pairs of the cases it is given."""

    def __init__(self, root: Path, ready: Path, cases: list[Case]):
        self.root, self.ready = root, ready
        self.pairs = {
            case.input: cases[start : start + WORKERS]
            for start in range(0, len(cases), WORKERS)
            for case in cases[start : start + WORKERS]
        }
        self.done: dict[str, Outcome] = {}
        self.locks = itertools.count()  # names of the files the lock holders touch once they hold the lock

    def __getitem__(self, name: str) -> Outcome:
        if name not in self.done:
            self._run(self.pairs[name])
        return self.done[name]

    def _run(self, pair: list[Case]) -> None:
        root = self.root
        holders = [hold_lock(root / case.lock, self.ready / str(next(self.locks))) for case in pair if case.lock]
        try:
            before = snapshot(root)  # with the holders' pids in their lock files
            with concurrent.futures.ThreadPoolExecutor(WORKERS) as pool:
                done = list(pool.map(lambda case: run(case, root), pair))
            after = snapshot(root)
        finally:
            for holder in holders:
                holder.send_signal(signal.SIGKILL)
                holder.wait()
        changed = sorted(name for name, digest in before.items() if after.get(name) != digest)
        # What a case may leave (`leaves`) is allowed for its pair too: which of the two wrote a file is unknown.
        leaves = [pattern for case in pair for pattern in case.leaves]
        created = [n for n in sorted(after.keys() - before.keys()) if not any(map(Path(n).match, leaves))]
        for case, result in zip(pair, done, strict=True):
            self.done[case.input] = Outcome(result.returncode, result.stderr, changed, created)


@pytest.fixture(scope="session")
def outcomes(request, tmp_path_factory) -> Iterator[Outcomes]:
    """The cases this session selected, against a freshly generated corpus, two at a time."""
    selected = {
        item.callspec.params["case"].input
        for item in request.session.items
        if getattr(item, "originalname", None) == "test_bad_input_is_named_and_nothing_is_lost"
    }
    root = tmp_path_factory.mktemp("corpus") / "corpus"
    make_corpus(root)
    yield Outcomes(root, tmp_path_factory.mktemp("locks"), [case for case in CASES if case.input in selected])
    if (root / "unwritable").is_dir():
        (root / "unwritable").chmod(0o755)  # so that pytest can clean up


def test_the_corpus_has_at_least_30_cases():
    print(f"\n{len(CASES)} bad-input cases\n{table()}")
    assert len(CASES) >= 30
    assert len({case.input for case in CASES}) == len(CASES)
    assert REPRESENTATIVE.issubset(case.input for case in CASES)


@pytest.mark.parametrize(
    "case",
    [pytest.param(case, marks=() if case.input in REPRESENTATIVE else pytest.mark.slow) for case in CASES],
    ids=[case.input for case in CASES],
)
def test_bad_input_is_named_and_nothing_is_lost(outcomes, case):
    outcome = outcomes[case.input]
    error = outcome.stderr
    assert outcome.returncode != 0, f"exit 0 on {case.input}:\n{error[-3000:]}"
    if case.exit_code is not None:
        assert outcome.returncode == case.exit_code, f"{case.input}: exit {outcome.returncode}:\n{error[-3000:]}"
    if case.warns is not None:
        assert re.search(case.warns, error, re.MULTILINE), f"{case.input}: expected /{case.warns}/ in:\n{error[-3000:]}"
    if case.argv[0] != "-c":  # a CLI prints an error line, not a traceback, and ends cleanly (orbax's threads too)
        assert not re.search(UNCLEAN, error), f"{case.input}: a traceback or an unclean shutdown:\n{error[-3000:]}"
        error = "\n".join(line for line in error.splitlines() if line.startswith(ERROR_LINES))
    assert re.search(case.expect, error, re.MULTILINE), (
        f"{case.input}: expected /{case.expect}/ in:\n{outcome.stderr[-3000:]}"
    )
    assert not outcome.changed, f"{case.input}: existing files changed or removed: {outcome.changed}"
    assert not outcome.created, f"{case.input}: the failed run left new files: {outcome.created}"
