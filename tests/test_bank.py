"""The memory bank: round trips, crashes mid-write, concurrent writers, corruption and format errors."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from mv2v_jax.retrieval.bank import (
    BankError,
    BankFormatError,
    BankLockedError,
    CorruptEntryError,
    MemoryBank,
    MemoryEntry,
    config_hash,
)

REPO = Path(__file__).parents[1]
CHILD_PRELUDE = """
import sys, time
from pathlib import Path
import numpy as np
from mv2v_jax.retrieval import bank as bank_module
from mv2v_jax.retrieval.bank import MemoryBank, MemoryEntry

def make_entry(turn, **metadata):
    rng = np.random.default_rng(turn)
    return MemoryEntry(
        latents=rng.standard_normal((3, 4, 6, 16)).astype(np.float32),
        turn=turn,
        prompt=f"turn {turn}",
        cameras=rng.standard_normal((9, 3, 4)).astype(np.float32),
        fov=rng.integers(0, 2**32, 2025, dtype=np.uint32),
        metadata=metadata,
    )

def signal_and_hang(ready):
    Path(ready).touch()
    time.sleep(600)
"""


_CHILD_NAMESPACE = {}
exec(CHILD_PRELUDE, _CHILD_NAMESPACE)
make_entry = _CHILD_NAMESPACE["make_entry"]  # the same entries as the child processes write


def child(code: str, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    script = CHILD_PRELUDE + textwrap.dedent(code)
    command = [sys.executable, "-c", script, *map(str, args)]
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            raise AssertionError(f"child exited early: {process.communicate()[1].decode()}")
        assert time.monotonic() < deadline, f"timed out waiting for {path}"
        time.sleep(0.02)


def assert_same_entry(got: MemoryEntry, want: MemoryEntry) -> None:
    for name in ("latents", "cameras", "embedding", "fov"):
        expected = getattr(want, name)
        if expected is None:
            assert getattr(got, name) is None
        else:
            np.testing.assert_array_equal(getattr(got, name), expected)
            assert getattr(got, name).dtype == expected.dtype
    assert (got.turn, got.prompt, dict(got.metadata)) == (want.turn, want.prompt, dict(want.metadata))


def session_files(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def test_round_trip(tmp_path):
    entries = [make_entry(0, note="first", scale=[1, 2]), make_entry(1)]
    with MemoryBank.create(tmp_path / "s", "nvs", "abc123", key="cameras") as bank:
        ids = [bank.add(entry) for entry in entries]
    assert ids == ["000000", "000001"]
    with MemoryBank.open(tmp_path / "s", readonly=True, task="nvs") as bank:
        assert (bank.task, bank.config_hash, len(bank)) == ("nvs", "abc123", 2)
        infos = bank.entries()
        assert [i.entry_id for i in infos] == ids and infos[0].metadata == {"note": "first", "scale": [1, 2]}
        assert infos[1].arrays["latents"] == ((3, 4, 6, 16), "<f4") and infos[1].config_hash == "abc123"
        for entry_id, entry in zip(ids, entries, strict=True):
            assert_same_entry(bank.load(entry_id), entry)
        keys_only = bank.load("000001", arrays=["cameras", "fov"])
        assert keys_only.latents is None and keys_only.entry_id == "000001"
        np.testing.assert_array_equal(keys_only.cameras, entries[1].cameras)


def test_reader_sees_each_published_write(tmp_path):
    writer = MemoryBank.create(tmp_path, "nvs", "h", key="cameras")
    with writer, MemoryBank.open(tmp_path, readonly=True) as reader:
        assert reader.entries() == []
        entry_id = writer.add(make_entry(0))
        assert [i.entry_id for i in reader.entries()] == [entry_id]
        writer.delete(entry_id)
        assert len(reader) == 0


def test_long_edit_round_trip_and_bfloat16_latents(tmp_path):
    latents = np.random.default_rng(0).standard_normal((2, 3, 5, 48)).astype(ml_dtypes.bfloat16)
    embedding = np.linspace(-1, 1, 384, dtype=np.float32)
    with MemoryBank.create(tmp_path, "long_edit", config_hash({"k": 3}), key="embedding") as bank:
        entry_id = bank.add(MemoryEntry(latents=latents, turn=4, embedding=embedding, config_hash="other"))
        loaded = bank.load(entry_id)
    assert loaded.latents.dtype == np.float32 and np.array_equal(loaded.latents, latents.astype(np.float32))
    np.testing.assert_array_equal(loaded.embedding, embedding)
    assert loaded.cameras is None and loaded.config_hash == "other"


@pytest.mark.parametrize("crash_point", ["after_arrays_before_manifest", "inside_an_array_write"])
def test_killed_writer_leaves_the_previous_session_intact(tmp_path, crash_point):
    path, ready = tmp_path / "s", tmp_path / "ready"
    with MemoryBank.create(path, "nvs", "h", key="cameras") as bank:
        bank.add(make_entry(0))
    manifest_before = (path / "manifest.json").read_bytes()
    hooks = {
        # The publish step is the atomic manifest replace: hang just before it.
        "after_arrays_before_manifest": "bank_module.MemoryBank._publish = lambda *_: signal_and_hang(sys.argv[2])",
        # Hang halfway through the second array file (the first is complete).
        "inside_an_array_write": """
            write_array, calls = bank_module._write_array, []
            def hanging(path, array):
                calls.append(path)
                if len(calls) == 2:
                    with open(path, "xb") as f:
                        f.write(b"partial")
                    signal_and_hang(sys.argv[2])
                return write_array(path, array)
            bank_module._write_array = hanging
        """,
    }
    writer = child(
        textwrap.dedent(hooks[crash_point])
        + "\nwith MemoryBank.open(sys.argv[1]) as bank:\n    bank.add(make_entry(1))\n",
        path,
        ready,
    )
    try:
        wait_for(ready, writer)
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    assert writer.returncode == -signal.SIGKILL
    leftovers = [f for f in session_files(path) if f.startswith("entries/") and not f.startswith("entries/000000")]
    assert leftovers, "the killed writer should have left unpublished files behind"
    assert (path / "manifest.json").read_bytes() == manifest_before

    with MemoryBank.open(path, readonly=True) as reader:  # readers see the previous session, complete
        assert [i.entry_id for i in reader.entries()] == ["000000"]
        assert_same_entry(reader.load("000000"), make_entry(0))
    with MemoryBank.open(path) as bank:  # the lock died with the writer; opening cleans up
        assert not [f for f in session_files(path) if ".tmp-" in f or f.startswith("entries/000001")]
        assert bank.add(make_entry(1)) == "000001"
    with MemoryBank.open(path, readonly=True) as reader:
        assert_same_entry(reader.load("000001"), make_entry(1))


def test_second_writer_is_refused_with_the_holders_pid(tmp_path):
    path, ready, release = tmp_path / "s", tmp_path / "ready", tmp_path / "release"
    MemoryBank.create(path, "nvs", "h", key="cameras").close()
    holder = child(
        """
        with MemoryBank.open(sys.argv[1]) as bank:
            Path(sys.argv[2]).touch()
            while not Path(sys.argv[3]).exists():
                time.sleep(0.02)
            bank.add(make_entry(0))
        """,
        path,
        ready,
        release,
    )
    try:
        wait_for(ready, holder)
        second = child(
            """
            try:
                MemoryBank.open(sys.argv[1], lock_timeout=0.2)
            except bank_module.BankLockedError as error:
                print(error)
                sys.exit(3)
            """,
            path,
        )
        out, err = second.communicate(timeout=60)
        assert second.returncode == 3, err.decode()
        assert f"pid {holder.pid}" in out.decode()
        with pytest.raises(BankLockedError, match=f"pid {holder.pid}"):
            MemoryBank.open(path)
        with MemoryBank.open(path, readonly=True) as reader:  # reading needs no lock
            assert len(reader) == 0
    finally:
        release.touch()
        assert holder.wait(timeout=60) == 0, holder.communicate()[1].decode()
    with MemoryBank.open(path) as bank:
        assert [i.turn for i in bank.entries()] == [0]


def test_waiting_writers_are_serialized_never_interleaved(tmp_path):
    path = tmp_path / "s"
    MemoryBank.create(path, "nvs", "h", key="cameras").close()
    go = tmp_path / "go"
    code = """
        name = sys.argv[2]
        while not Path(sys.argv[3]).exists():
            time.sleep(0.005)
        for i in range(4):
            with MemoryBank.open(sys.argv[1], lock_timeout=60) as bank:
                turn = len(bank)
                time.sleep(0.05)  # a window in which an unserialized writer would publish over this one
                bank.add(make_entry(turn, writer=name, index=i))
    """
    writers = [child(code, path, name, go) for name in ("a", "b")]
    time.sleep(0.5)
    go.touch()
    for writer in writers:
        assert writer.wait(timeout=120) == 0, writer.communicate()[1].decode()
    with MemoryBank.open(path, readonly=True) as bank:
        infos = bank.entries()
        assert [i.entry_id for i in infos] == [f"{n:06d}" for n in range(8)]
        # Each writer read the entry count under the lock, so turns are 0..7 with no duplicate.
        assert [i.turn for i in infos] == list(range(8))
        for name in ("a", "b"):
            assert [i.metadata["index"] for i in infos if i.metadata["writer"] == name] == [0, 1, 2, 3]
        for info in infos:
            assert_same_entry(bank.load(info.entry_id), make_entry(info.turn, **info.metadata))
    assert sorted(p.name for p in (path / "entries").iterdir()) == [f"{n:06d}" for n in range(8)]


def test_flipped_bit_is_detected_and_names_the_entry(tmp_path):
    path = tmp_path / "s"
    with MemoryBank.create(path, "nvs", "h", key="cameras") as bank:
        for turn in range(3):
            bank.add(make_entry(turn))
    latents = path / "entries" / "000001" / "latents.npy"
    data = bytearray(latents.read_bytes())
    data[-5] ^= 0x10
    latents.write_bytes(bytes(data))
    with MemoryBank.open(path, readonly=True) as bank:
        with pytest.raises(CorruptEntryError, match=r"entry 000001 array 'latents'.*checksum"):
            bank.load("000001")
        np.testing.assert_array_equal(bank.load("000001", arrays=["cameras"]).cameras, make_entry(1).cameras)
        assert_same_entry(bank.load("000002"), make_entry(2))
        (path / "entries" / "000002" / "fov.npy").unlink()
        with pytest.raises(CorruptEntryError, match=r"entry 000002 array 'fov'.*missing"):
            bank.load("000002")


def test_incompatible_sessions_give_clear_errors(tmp_path):
    path = tmp_path / "s"
    MemoryBank.create(path, "nvs", "h", key="cameras").close()
    with pytest.raises(BankFormatError, match="'nvs' session, not the 'long_edit'"):
        MemoryBank.open(path, task="long_edit")
    MemoryBank.open(path).close()  # the failed open above released its lock
    manifest = json.loads((path / "manifest.json").read_text())
    (path / "manifest.json").write_text(json.dumps({**manifest, "version": 2}))
    with pytest.raises(BankFormatError, match=r"format version 2 .*reads version 1"):
        MemoryBank.open(path, readonly=True)
    (path / "manifest.json").write_text("{ truncated")
    with pytest.raises(BankFormatError, match="not valid JSON"):
        MemoryBank.open(path)
    with pytest.raises(BankFormatError, match="not a memory bank"):
        MemoryBank.open(tmp_path / "missing")
    with pytest.raises(BankError, match="already holds a memory bank"):
        MemoryBank.create(path, "nvs", "h", key="cameras")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("x")
    with pytest.raises(BankError, match="not empty"):
        MemoryBank.create(tmp_path / "busy", "nvs", "h", key="cameras")
    assert session_files(tmp_path / "busy") == ["notes.txt"]
    with pytest.raises(BankError, match="unknown memory bank key 'camera'"):
        MemoryBank.create(tmp_path / "new", "nvs", "h", key="camera")
    assert not (tmp_path / "new").exists()
    interrupted = tmp_path / "interrupted"  # a create killed before its manifest was published
    (interrupted / "entries").mkdir(parents=True)
    (interrupted / ".tmp-manifest.json-0123abcd").write_text("{")
    MemoryBank.create(interrupted, "nvs", "h", key="cameras").close()
    assert session_files(interrupted) == ["entries", "manifest.json", "session.lock"]


def test_delete_and_listing(tmp_path):
    path = tmp_path / "s"
    with MemoryBank.create(path, "nvs", "h", key="cameras") as bank:
        ids = [bank.add(make_entry(turn)) for turn in range(3)]
        bank.delete(ids[1])
        assert [i.entry_id for i in bank.entries()] == [ids[0], ids[2]]
        assert not (path / "entries" / ids[1]).exists()
        assert bank.add(make_entry(3)) == "000003"  # ids are never reused
        with pytest.raises(BankError, match="no entry '000001'"):
            bank.load(ids[1])
        with pytest.raises(BankError, match="no entry '000009'"):
            bank.delete("000009")
    with MemoryBank.open(path, readonly=True) as reader:
        assert [i.turn for i in reader.entries()] == [0, 2, 3]
        with pytest.raises(BankError, match="read-only"):
            reader.delete(ids[0])
        with pytest.raises(BankError, match="read-only"):
            reader.add(make_entry(4))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (dict(cameras=None), "needs latents and cameras"),
        (dict(cameras=np.zeros((9, 4, 4), np.float32)), r"'cameras' has shape \(9, 4, 4\)"),
        (dict(latents=np.full((1, 2, 2, 4), np.nan, np.float32)), "'latents' contains NaN"),
        (dict(fov=np.zeros(2025, np.int64)), "'fov' has dtype int64"),
        (dict(metadata={"when": object()}), "JSON-serialisable"),
        (dict(turn=-1), "turn must be an int >= 0"),
    ],
)
def test_bad_entries_are_refused_before_anything_is_written(tmp_path, change, message):
    path = tmp_path / "s"
    with MemoryBank.create(path, "nvs", "h", key="cameras") as bank:
        bank.add(make_entry(0))
        before = session_files(path), (path / "manifest.json").read_bytes()
        fields = {**make_entry(1).__dict__, **change}
        with pytest.raises(BankError, match=message):
            bank.add(MemoryEntry(**fields))
        assert (session_files(path), (path / "manifest.json").read_bytes()) == before
