"""SIGKILL during every write path: a whole sample.py turn (its files and bank entry, and a new session
with its first turn), the memory bank's `add`, training checkpoints (orbax), latent
pre-encoding (encode_latents) and dataset building (TFDS `prepare`). After each kill the previous
state loads intact (bank entries with valid checksums, the latest complete checkpoint step), no
partial dataset is visible, and the tool resumes or a re-run completes with the same result.

Where the kill lands:
- memory bank: from inside the writer, at every I/O call `add` makes (a profile hook counts the
  Python-level open / write / flush / fsync / close / mkdir / rename / replace calls and SIGKILLs its
  own process just before the k-th), so every intermediate state on disk is visited, deterministically;
- checkpoints, latents, datasets (where the writing happens in C++ threads: tensorstore, array_record):
  from outside, after a random delay drawn from `numpy.random.default_rng(seed)` over the measured
  duration of the write (from the moment the first checkpoint / the dataset folder appears). A seed
  whose child finishes before the kill is not counted: each path loops until KILLS kills landed.
  These three loops take about two minutes together and run in `make test-slow`.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mv2v_jax.pipelines.session import Session, SourceVideo, TurnFiles
from mv2v_jax.retrieval.bank import MemoryBank, MemoryEntry

REPO = Path(__file__).parents[1]
KILLS = 10  # landed kills per time-based path
MAX_SEEDS = 40


def environment() -> dict[str, str]:
    return {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": str(REPO)}


def python(code: str, *args, **popen) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
        cwd=REPO,
        env=environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def wait_for(condition, process: subprocess.Popen, timeout: float = 120) -> float:
    """Polls `condition()` every 5 ms; returns when it held (time.monotonic())."""
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"the child exited first ({process.returncode}):\n{process.communicate()[1][-3000:]}")
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)
    return time.monotonic()


def kill_after(process: subprocess.Popen, delay: float) -> bool:
    """SIGKILLs `process` after `delay` seconds; True if it was still running (the kill landed)."""
    time.sleep(delay)
    landed = process.poll() is None
    process.send_signal(signal.SIGKILL)
    process.communicate()
    return landed and process.returncode == -signal.SIGKILL


def seeded_kills(run_once, duration: float):
    """Calls `run_once(delay)` with delays drawn per seed in [0, duration) until KILLS kills landed;
    returns the seeds whose kill landed."""
    landed = []
    for seed in range(MAX_SEEDS):
        if run_once(np.random.default_rng(seed).uniform(0, duration), seed):
            landed.append(seed)
        if len(landed) == KILLS:
            return landed
    raise AssertionError(f"only {len(landed)} of {MAX_SEEDS} kills landed before the child finished")


# -- memory bank: a kill before each I/O call of `add` ---------------------------------------------

BANK_WRITER = """
import io, os, signal, sys
import numpy as np
from mv2v_jax.pipelines.session import Session, SourceVideo, TurnFiles
from mv2v_jax.retrieval.bank import MemoryBank, MemoryEntry

IO_CALLS = {"open", "write", "flush", "fsync", "close", "mkdir", "rename", "replace", "unlink", "rmdir"}
path, kill_at = sys.argv[1], int(sys.argv[2])  # 0: count the calls only
calls = 0

def profile(frame, event, function):
    global calls
    if event == "c_call" and getattr(function, "__name__", "") in IO_CALLS:
        owner = getattr(function, "__self__", None)
        if getattr(function, "__module__", None) in ("posix", "io") or isinstance(owner, io.IOBase):
            calls += 1
            if calls == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)

rng = np.random.default_rng(2)
entry = MemoryEntry(
    latents=rng.standard_normal((3, 8, 12, 48)).astype(np.float32),
    turn=2,
    cameras=rng.standard_normal((3, 3, 4)),
    fov=rng.integers(0, 2**32, 2025, dtype=np.uint32),
)
with MemoryBank.open(path) as bank:
    sys.setprofile(profile)
    bank.add(entry)
    sys.setprofile(None)
print(calls)
"""


def bank_entry(turn: int) -> MemoryEntry:
    rng = np.random.default_rng(turn)
    return MemoryEntry(
        latents=rng.standard_normal((3, 8, 12, 48)).astype(np.float32),
        turn=turn,
        cameras=rng.standard_normal((3, 3, 4)),
        fov=rng.integers(0, 2**32, 2025, dtype=np.uint32),
    )


def assert_entries(path: Path, turns: list[int]) -> None:
    with MemoryBank.open(path, readonly=True) as bank:
        infos = bank.entries()
        assert [i.turn for i in infos] == turns
        for info in infos:  # checksums are verified by load
            np.testing.assert_array_equal(bank.load(info.entry_id).latents, bank_entry(info.turn).latents)


def test_killed_bank_writes_leave_the_previous_entries_intact(tmp_path):
    template = tmp_path / "template"
    with MemoryBank.create(template, "nvs", "h", key="cameras") as bank:
        bank.add(bank_entry(0))
        bank.add(bank_entry(1))
    counting = python(BANK_WRITER, shutil.copytree(template, tmp_path / "count"), 0)
    out, err = counting.communicate(timeout=120)
    assert counting.returncode == 0, err
    calls = int(out)
    assert calls >= 20  # arrays, entry.json, their fsyncs, the renames and the manifest
    published = 0
    for kill_at in range(1, calls + 1):
        path = shutil.copytree(template, tmp_path / f"kill{kill_at}")
        writer = python(BANK_WRITER, path, kill_at)
        writer.communicate(timeout=120)
        assert writer.returncode == -signal.SIGKILL, kill_at
        with MemoryBank.open(path, readonly=True) as reader:
            turns = [i.turn for i in reader.entries()]
        assert turns in ([0, 1], [0, 1, 2]), (kill_at, turns)  # the manifest is the old one or the new one
        published += turns == [0, 1, 2]
        assert_entries(path, turns)
        with MemoryBank.open(path) as bank:  # the writer that comes next cleans up and carries on
            leftovers = [p.name for p in path.rglob("*") if p.name.startswith(".tmp-")]
            assert not leftovers, (kill_at, leftovers)
            assert sorted(p.name for p in (path / "entries").iterdir()) == [i.entry_id for i in bank.entries()]
            bank.add(bank_entry(3))
        assert_entries(path, [*turns, 3])
    assert 0 < published < calls  # kills from the manifest's replace on see the new entry, earlier ones do not
    print(f"\nmemory bank: {calls} kill points (every I/O call of add), {published} after the publish")


# -- a whole turn: its files, its bank entry and, for a new session, the session itself -----------------

# One process stores turn `turn` of the session at argv[1] once per kill point k = 1..N (N: argv[3]), each in a
# copy (argv[1] + f".kill{k}", made from argv[1] if it exists) and in a forked child that SIGKILLs itself just
# before its k-th I/O call of Session.open, commit_turn and close; N = 0 counts the calls once, unkilled.
TURN_WRITER = """
import io, os, shutil, signal, sys
from pathlib import Path
import numpy as np
from mv2v_jax.pipelines.session import Session, SourceVideo, TurnFiles
from mv2v_jax.retrieval.bank import MemoryEntry

IO_CALLS = {"open", "write", "flush", "fsync", "close", "mkdir", "rename", "replace", "unlink", "rmdir"}
template, turn, kills = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
if turn == 1:
    import mv2v_jax.tasks  # before the forks: a new session asks its task for the retrieval key
CONFIG = {"task": "nvs", "video": {"frames": 9}}

def store(path, kill_at):
    calls = 0

    def profile(frame, event, function):
        nonlocal calls
        if event == "c_call" and getattr(function, "__name__", "") in IO_CALLS:
            owner = getattr(function, "__self__", None)
            if getattr(function, "__module__", None) in ("posix", "io") or isinstance(owner, io.IOBase):
                calls += 1
                if calls == kill_at:
                    os.kill(os.getpid(), signal.SIGKILL)

    rng = np.random.default_rng(turn)
    frames = rng.integers(0, 256, (9, 32, 48, 3), dtype=np.uint8)
    entry = MemoryEntry(
        latents=rng.standard_normal((3, 8, 12, 48)).astype(np.float32),
        turn=turn,
        cameras=np.tile(np.eye(3, 4), (3, 1, 1)),
        fov=rng.integers(0, 2**32, 64, dtype=np.uint32),
    )
    files = TurnFiles(video=frames, fps=8, sheet=[frames, frames], labels=["source", f"turn {turn}"])
    source = SourceVideo.from_frames(frames, "source.mp4") if turn == 1 else None
    sys.setprofile(profile)
    session = Session.open(path, task="nvs", config=CONFIG, source=source)
    if turn == 1:
        session.save_source(entry.latents)
    session.commit_turn(entry, files, {"turn": turn, "seed": turn})
    session.close()
    sys.setprofile(None)
    return calls

def copy(name):
    path = template.with_name(f"{template.name}.{name}")
    if template.exists():
        shutil.copytree(template, path)
    return path

if kills == 0:
    print(store(copy("count"), 0))
for k in range(1, kills + 1):
    path = copy(f"kill{k}")
    child = os.fork()
    if child == 0:
        store(path, k)
        os._exit(0)
    _, status = os.waitpid(child, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, (k, status)
"""
TURN_CONFIG = {"task": "nvs", "video": {"frames": 9}}


def turn_writer(template: Path, turn: int, kills: int) -> str:
    writer = python(TURN_WRITER, template, turn, kills)
    out, err = writer.communicate(timeout=900)
    assert writer.returncode == 0, err[-3000:]
    return out


def assert_whole_turns(path: Path, turns: list[int]) -> None:
    """The session at `path` holds exactly `turns`, each with its three files and record, and nothing hidden."""
    with Session.open(path, task="nvs", config=TURN_CONFIG) as session:  # the next writer repairs
        assert [e.turn for e in session.bank.entries()] == turns
        assert session.next_turn == turns[-1] + 1
        assert session.missing_files() == []
        for turn in turns:
            record = json.loads(session.turn_files(turn)["record"].read_text())
            assert record["turn"] == record["seed"] == turn
        made = sorted(p.name for p in (path / "turns").iterdir())
        assert made == sorted(f"turn_{t:03d}{s}" for t in turns for s in (".json", ".mp4", ".png")), made
    hidden = [*path.rglob(".tmp-*"), *path.parent.glob(f".tmp-{path.name}-*")]
    assert not hidden, hidden


def store_turn(path: Path) -> int:
    """Stores the session's next turn, as a writer after the killed one does; returns its number."""
    frames = np.random.default_rng(3).integers(0, 256, (9, 32, 48, 3), dtype=np.uint8)
    with Session.open(path, task="nvs", config=TURN_CONFIG) as session:
        turn = session.next_turn
        entry = MemoryEntry(latents=np.zeros((3, 8, 12, 48), np.float32), turn=turn, cameras=np.zeros((3, 3, 4)))
        files = TurnFiles(video=frames, fps=8, sheet=[frames], labels=["turn"])
        session.commit_turn(entry, files, {"turn": turn, "seed": turn})
    return turn


def test_killed_turns_leave_the_previous_session_or_the_whole_turn(tmp_path):
    """A turn stored into an existing session (files staged, bank entry, files placed), killed before each
    of its I/O calls: the session then has turn 1 alone, or turns 1 and 2 with all their files, once the
    next writer has opened it; and the turn after that is stored whole."""
    template = tmp_path / "session"
    turn_writer(template, 1, 0)
    shutil.move(tmp_path / "session.count", template)  # a session with turn 1
    shutil.rmtree(tmp_path / "session.count", ignore_errors=True)
    calls = int(turn_writer(template, 2, 0))
    assert calls >= 40  # three staged files, the bank entry, the renames
    turn_writer(template, 2, calls)
    committed_at = []
    for k in range(1, calls + 1):
        path = tmp_path / f"session.kill{k}"
        with MemoryBank.open(path / "bank", readonly=True) as bank:
            committed = [e.turn for e in bank.entries()]
        assert committed in ([1], [1, 2]), (k, committed)
        if committed == [1, 2]:
            committed_at.append(k)
        assert_whole_turns(path, committed)
        assert store_turn(path) == committed[-1] + 1  # the next turn number moved on only for a whole turn
        assert_whole_turns(path, [*committed, committed[-1] + 1])
    assert committed_at[0] > 1 and committed_at == list(range(committed_at[0], calls + 1))
    print(f"\nwhole turn: {calls} kill points, the turn committed from the {committed_at[0]}th on")


def test_killed_first_turns_leave_no_session_or_the_whole_session(tmp_path):
    """A new session's first turn (the hidden folder, its bank, source and files, the commit, the rename
    into place), killed before each of its I/O calls: there is no session afterwards (a hidden leftover
    the next open removes), or the whole session with turn 1."""
    template = tmp_path / "session"
    calls = int(turn_writer(template, 1, 0))
    turn_writer(template, 1, calls)
    published = []
    frames = np.zeros((9, 32, 48, 3), np.uint8)
    for k in range(1, calls + 1):
        path = tmp_path / f"session.kill{k}"
        if path.exists():
            published.append(k)
            assert_whole_turns(path, [1])
        else:
            Session.open(path, task="nvs", config=TURN_CONFIG, source=SourceVideo.from_frames(frames, "v")).close()
            assert not path.exists() and not list(tmp_path.glob(f".tmp-{path.name}-*")), k  # leftovers removed
    assert published and published == list(range(published[0], calls + 1))
    print(f"\nfirst turn: {calls} kill points, the session appeared from the {published[0]}th on")


# -- checkpoints: orbax saves killed at random moments ------------------------------------------

CHECKPOINT_WRITER = """
import sys, time
from pathlib import Path
import grain
import jax.numpy as jnp
from mv2v_jax.train.checkpoint import Checkpointer

directory, ready, steps = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])

def state(step):
    return {"params": {"w": jnp.full((512, 512), step, jnp.float32), "b": jnp.arange(4096.0) + step},
            "step": jnp.asarray(step, jnp.int32)}

iterator = iter(grain.MapDataset.range(10**6).to_iter_dataset())
checkpointer = Checkpointer(directory, keep=2)
start = time.perf_counter()
for step in range(1, steps + 1):
    next(iterator)
    checkpointer.save(step, state(step), iterator, val_loss=1.0 / step)  # metrics with every step
    if step == 1:
        checkpointer.wait()
        ready.touch()
        start = time.perf_counter()
checkpointer.wait()
print((time.perf_counter() - start) / (steps - 1))
checkpointer.close()
"""


def expected_state(step: int) -> dict:
    return {
        "params": {"w": jnp.full((512, 512), step, jnp.float32), "b": jnp.arange(4096.0) + step},
        "step": jnp.asarray(step, jnp.int32),
    }


@pytest.mark.slow
def test_killed_checkpoint_saves_leave_the_latest_complete_step(tmp_path):
    import grain

    from mv2v_jax.train.checkpoint import Checkpointer, abstract_like

    timing = python(CHECKPOINT_WRITER, tmp_path / "timing", tmp_path / "timing_ready", 8)
    out, err = timing.communicate(timeout=300)
    assert timing.returncode == 0, err[-3000:]
    seconds_per_save = float(out.split()[-1])
    restored_steps, in_flight = [], []

    def run_once(delay: float, seed: int) -> bool:
        directory, ready = tmp_path / f"run{seed}", tmp_path / f"ready{seed}"
        writer = python(CHECKPOINT_WRITER, directory, ready, 10**6)
        wait_for(ready.exists, writer)
        if not kill_after(writer, delay):
            return False
        in_flight.append(any(".orbax-checkpoint-tmp" in p.name for p in directory.iterdir()))
        checkpointer = Checkpointer(directory, keep=2)
        try:
            latest = checkpointer.latest
            assert latest is not None and latest >= 1
            iterator = iter(grain.MapDataset.range(10**6).to_iter_dataset())
            restored = checkpointer.restore(abstract_like(expected_state(0)), iterator)
            jax.tree.map(np.testing.assert_array_equal, restored, expected_state(latest))
            assert next(iterator) == latest  # the data position saved with that step
            assert checkpointer.best == latest  # losses fall; a step's metrics commit with the step
            checkpointer.save(latest + 1, expected_state(latest + 1), iterator)  # and training carries on
            checkpointer.wait()
            assert checkpointer.manager.latest_step() == latest + 1
        finally:
            checkpointer.close()
        restored_steps.append(latest)
        return True

    seeds = seeded_kills(run_once, 6 * seconds_per_save)
    print(
        f"\ncheckpoints ({seconds_per_save:.3f} s a save): {len(seeds)} kills (seeds {seeds}), {sum(in_flight)} with "
        f"a save in flight; latest complete steps restored {restored_steps}"
    )
    assert any(in_flight)


# -- TFDS: dataset building and latent pre-encoding, killed at random moments ------------------------------

SCENE = dict(height=32, width=48, num_frames=9, num_cameras=3)
PREPARE = """
import sys
from mv2v_jax.data.synthetic import SceneConfig
from mv2v_jax.data.tfds.common import prepare
from mv2v_jax.data.tfds.synthetic_multicam import SyntheticMulticam, SyntheticMulticamConfig

scene = SceneConfig(height=32, width=48, num_frames=9, num_cameras=3)
config = SyntheticMulticamConfig(name="crash", scene=scene, num_train=6, num_validation=2)
prepare(SyntheticMulticam, config, sys.argv[1])
"""

EXPERIMENT = """
from mv2v_jax.config import load_config

def get_config(latents_dir: str = ""):
    config = load_config("tiny_nvs.py")
    config.data.source.update(name="crash", scene={scene}, num_train=4, num_validation=1, data_dir={source!r})
    config.data.latents_dir = latents_dir
    return config
"""


def tfds_records(builder) -> dict:
    """Every record of every split, keyed by split and scene."""
    data = builder.as_data_source()
    return {
        (split, record["scene"]): record
        for split in data
        for record in (data[split][i] for i in range(len(data[split])))
    }


def assert_same_records(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for key, record in want.items():
        for name, value in record.items():
            np.testing.assert_array_equal(got[key][name], value)


def visible_versions(dataset_dir: Path) -> list[Path]:
    """Dataset versions TFDS would read (temporaries are `incomplete.*` folders beside them)."""
    return [p for p in dataset_dir.glob("*/*") if p.is_dir() and not p.name.startswith(("incomplete", "."))]


def kill_builds(tmp_path: Path, start, dataset_dir, check) -> tuple[list[int], float]:
    """Times one complete build from the moment its folder `dataset_dir(name)` appears to the moment its
    version folder does (the commit), then kills one build per seed within that span; `start(name)`
    launches a build into a fresh folder, `check(name)` runs after each kill."""
    timing = start("timing")
    began = wait_for(dataset_dir("timing").exists, timing)
    committed = wait_for(lambda: visible_versions(dataset_dir("timing")), timing)
    timing.communicate(timeout=300)
    assert timing.returncode == 0

    def run_once(delay: float, seed: int) -> bool:
        child = start(f"run{seed}")
        wait_for(dataset_dir(f"run{seed}").exists, child)
        if not kill_after(child, delay):
            return False
        check(f"run{seed}")
        return True

    return seeded_kills(run_once, committed - began), committed - began


@pytest.mark.slow
def test_killed_dataset_builds_leave_nothing_partial_and_rerun(tmp_path):
    from mv2v_jax.data.synthetic import SceneConfig
    from mv2v_jax.data.tfds.common import prepare
    from mv2v_jax.data.tfds.synthetic_multicam import SyntheticMulticam, SyntheticMulticamConfig

    config = SyntheticMulticamConfig(name="crash", scene=SceneConfig(**SCENE), num_train=6, num_validation=2)
    reference = tfds_records(prepare(SyntheticMulticam, config, tmp_path / "reference"))
    outcomes = []

    def check(name: str) -> None:
        builder = SyntheticMulticam(config=config, data_dir=str(tmp_path / name), file_format="array_record")
        visible = visible_versions(tmp_path / name / "synthetic_multicam")
        assert builder.is_prepared() == bool(visible)  # a version folder only once complete
        outcomes.append("complete" if visible else "not visible")
        assert_same_records(tfds_records(prepare(SyntheticMulticam, config, tmp_path / name)), reference)

    seeds, duration = kill_builds(
        tmp_path,
        lambda name: python(PREPARE, tmp_path / name),
        lambda name: tmp_path / name / "synthetic_multicam",
        check,
    )
    print(f"\ndataset build ({duration:.2f} s): {len(seeds)} kills (seeds {seeds}): {outcomes}")
    assert "not visible" in outcomes


@pytest.mark.slow
def test_killed_latent_encoding_leaves_nothing_partial_and_reruns(tmp_path):
    from mv2v_jax.config import load_config
    from mv2v_jax.data.encode_latents import open_latents, open_source

    (tmp_path / "experiment.py").write_text(EXPERIMENT.format(scene=SCENE, source=str(tmp_path / "source")))
    config = load_config(f"{tmp_path / 'experiment.py'}:{tmp_path / 'reference'}")
    open_source(config.data.source)  # the source dataset is built once; the kills land in the encoding
    reference = tfds_records(open_latents(config, build=True))
    outcomes = []

    def check(name: str) -> None:
        config = load_config(f"{tmp_path / 'experiment.py'}:{tmp_path / name}")
        visible = visible_versions(tmp_path / name / "latent_scenes")
        outcomes.append("complete" if visible else "not visible")
        if not visible:
            with pytest.raises(FileNotFoundError, match="no latent dataset"):  # what train.py would say
                open_latents(config)
        assert_same_records(tfds_records(open_latents(config, build=True)), reference)

    def start(name: str) -> subprocess.Popen:
        command = [
            sys.executable,
            "-m",
            "mv2v_jax.data.encode_latents",
            "--config",
            f"{tmp_path / 'experiment.py'}:{tmp_path / name}",
        ]
        return subprocess.Popen(
            command, cwd=REPO, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    seeds, duration = kill_builds(tmp_path, start, lambda name: tmp_path / name / "latent_scenes", check)
    print(f"\nlatent encoding ({duration:.2f} s): {len(seeds)} kills (seeds {seeds}): {outcomes}")
    assert "not visible" in outcomes
