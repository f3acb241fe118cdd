"""The memory bank: one editing session's past outputs, durable on disk and safe across processes.

Layout of a session directory:

    manifest.json            the single source of truth: format, version, task, config hash, entries
    session.lock             flock target; holds the writer's pid and host while it is open
    entries/<id>/            one published entry: <array>.npy files and entry.json (its manifest record)
    .tmp-*, entries/.tmp-*   temporaries of an unfinished write (removed when a writer opens the session)

An entry is one generated video: its VAE latents `[F, H, W, C]`, its retrieval key (the array named
by the session's `key`, which the task chooses: cameras `[F, 3, 4]` for novel view synthesis, the
source segment's pooled embedding `[D]` for long editing), optionally its
packed FOV bitmask (uint32, relative to its own first camera), the turn index, the prompt, a config
hash and free-form JSON metadata.

Writing an entry: arrays and entry.json go into `entries/.tmp-<id>-<random>/` (each file flushed and
fsynced), the directory is fsynced and renamed to `entries/<id>`, and only then is the entry
published by atomically replacing manifest.json (temporary file in the same directory, flush, fsync,
`os.replace`, fsync of the directory). A crash at any point before that replace leaves the previous
manifest, hence the previous session, intact; the unpublished files are removed the next time a
writer opens the session. Deleting unpublishes first, then removes the files.

The manifest's format, its checks and the entry arrays' shapes are `retrieval.manifest`'s.

Checksums: the manifest records the sha256 of every .npy file (header included, so shape and dtype
are covered too); `load` verifies them and raises `CorruptEntryError` naming the entry and array.

Concurrency: one writer at a time, by an exclusive lock on session.lock (`io.locks`, an `flock`),
held from `create`/`open` to `close`; the holder writes its pid and host into the file. A
second writer waits up to `lock_timeout` seconds (default 0: it is refused at once) and then gets
`BankLockedError` naming the holder's pid. Readers (`open(readonly=True)`) take no lock: they read
the manifest at each call, and published entries never change, so a reader sees the session as of
its last published write. flock is advisory and local: it does not protect sessions on NFS (no
fallback to a lock-by-existence marker file, which a killed writer would leave behind).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import os
import shutil
import socket
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mv2v_jax.io import locks
from mv2v_jax.io.atomic import TEMPORARY_PREFIX, fsync_path, write_json
from mv2v_jax.retrieval.manifest import (
    ARRAYS,
    MANIFEST,
    BankError,
    BankFormatError,
    EntryInfo,
    entry_array,
    manifest_key,
    new_manifest,
    now,
    read_manifest,
)

LOCK = "session.lock"
ENTRIES = "entries"
ENTRY_RECORD = "entry.json"
TMP = TEMPORARY_PREFIX  # temporaries (io.atomic) and staged entries share it
__all__ = [  # the errors and EntryInfo are the format's (retrieval.manifest), raised and returned here
    "BankError",
    "BankFormatError",
    "BankLockedError",
    "CorruptEntryError",
    "EntryInfo",
    "MemoryBank",
    "MemoryEntry",
    "config_hash",
]

log = logging.getLogger(__name__)


class BankLockedError(BankError):
    """Another process has the session open for writing."""


class CorruptEntryError(BankError):
    """An entry's file is missing or fails its checksum."""


@dataclasses.dataclass(frozen=True)
class MemoryEntry:
    """One generated video and what retrieval needs to find it again.

    Attributes:
      latents: `[F, H, W, C]` VAE latents (float16/32/64; bfloat16 is stored as float32, losslessly).
      turn: the editing turn (or segment index) that produced it, >= 0.
      prompt: the text prompt of that turn.
      cameras: `[F, 3, 4]` world-to-camera extrinsics ("nvs"; required there).
      embedding: `[D]` the source segment's pooled embedding ("long_edit"; required there).
      fov: uint32 `[W]` packed VideoFOV bitmask relative to the entry's own first camera (optional).
      config_hash: the generating config's hash; None means the session's.
      metadata: JSON-serialisable extras.
      entry_id: set by the bank on load; ignored by `add`.
    """

    latents: np.ndarray | None
    turn: int
    prompt: str = ""
    cameras: np.ndarray | None = None
    embedding: np.ndarray | None = None
    fov: np.ndarray | None = None
    config_hash: str | None = None
    metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    entry_id: str | None = None


def config_hash(config: Mapping[str, Any]) -> str:
    """A short stable hash of a config mapping (an ml_collections ConfigDict or a dict)."""
    data = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    text = json.dumps(data, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class _HashingWriter:
    """A write-only file wrapper that hashes what passes through (np.save writes in chunks)."""

    def __init__(self, file):
        self.file, self.sha256, self.size = file, hashlib.sha256(), 0

    def write(self, data) -> int:
        self.sha256.update(data)
        self.size += len(data)
        return self.file.write(data)


def _write_durably(path: Path, write) -> None:
    """Creates `path` (which must not exist), lets `write(file)` fill it, and flushes it to disk."""
    with open(path, "xb") as file:
        write(file)
        file.flush()
        os.fsync(file.fileno())


def _write_array(path: Path, array: np.ndarray) -> dict[str, Any]:
    """Saves `array` as .npy at `path`; returns its manifest record."""
    hashed = {}

    def write(file):
        hashed["writer"] = writer = _HashingWriter(file)
        np.save(writer, array, allow_pickle=False)

    _write_durably(path, write)
    writer = hashed["writer"]
    return {
        "file": path.name,
        "sha256": writer.sha256.hexdigest(),
        "bytes": writer.size,
        "shape": list(array.shape),
        "dtype": array.dtype.str,
    }


class MemoryBank:
    """A session directory of memory entries. Use `create` or `open`; close (or use `with`) to unlock."""

    def __init__(self, path: Path, manifest: dict[str, Any], lock: int | None):
        self.path = path
        self._manifest = manifest
        self._lock = lock  # the fd holding session.lock; None for a reader
        self._manifest_stat = None  # a reader re-reads the manifest at its first use

    # Opening and closing

    @classmethod
    def create(
        cls, path: str | os.PathLike, task: str, config_hash: str, *, key: str, lock_timeout: float = 0.0
    ) -> MemoryBank:
        """A new empty session at `path` (created if missing; must not hold anything else), open for writing.

        `task` names the session's task; `key` is the array every entry must carry for retrieval
        (one of `manifest.KEYS`).
        """
        manifest = new_manifest(task, key, config_hash)  # refuses a bad task or key before anything is made
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        _require_empty(path)  # before the lock file is made, so a refused path is left as it was
        lock = _lock(path, lock_timeout)
        try:
            _require_empty(path)  # again under the lock: another process may have created it meanwhile
            for temporary in path.glob(f"{TMP}*"):
                temporary.unlink()
            (path / ENTRIES).mkdir(exist_ok=True)
            write_json(path / MANIFEST, manifest)
        except BaseException:
            _unlock(lock)
            raise
        return cls(path, manifest, lock)

    @classmethod
    def open(
        cls, path: str | os.PathLike, readonly: bool = False, task: str | None = None, lock_timeout: float = 0.0
    ) -> MemoryBank:
        """An existing session. A writer (`readonly=False`) takes the lock and removes leftovers of
        interrupted writes; `task`, when given, must match the session's."""
        path = Path(path)
        lock = None if readonly else _lock(path, lock_timeout)
        try:
            manifest = read_manifest(path)
            if task is not None and manifest["task"] != task:
                raise BankFormatError(
                    f"memory bank {path} holds a {manifest['task']!r} session, not the {task!r} session asked for"
                )
            bank = cls(path, manifest, lock)
            if not readonly:
                bank._remove_leftovers()
        except BaseException:
            _unlock(lock)
            raise
        return bank

    def close(self) -> None:
        """Releases the writer's lock (a no-op for readers and when already closed)."""
        _unlock(self._lock)
        self._lock = None

    def __enter__(self) -> MemoryBank:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def readonly(self) -> bool:
        return self._lock is None

    @property
    def task(self) -> str:
        return self._manifest["task"]

    @property
    def key(self) -> str:
        """The array every entry carries for retrieval."""
        return manifest_key(self._manifest)

    @property
    def config_hash(self) -> str:
        return self._manifest["config_hash"]

    # Reading

    def entries(self) -> list[EntryInfo]:
        """Every published entry, oldest first, metadata only."""
        return [EntryInfo.from_record(record) for record in self._current()["entries"]]

    def __len__(self) -> int:
        return len(self._current()["entries"])

    def load(self, entry_id: str, arrays: Iterable[str] | None = None) -> MemoryEntry:
        """The entry `entry_id` with its arrays (all, or the names in `arrays`), checksums verified."""
        record = self._record(entry_id)
        names = list(record["arrays"]) if arrays is None else list(arrays)
        unknown = [n for n in names if n not in record["arrays"]]
        if unknown:
            raise BankError(
                f"memory bank {self.path}: entry {entry_id} has no array {unknown}; it has {list(record['arrays'])}"
            )
        loaded = {name: self._read_array(entry_id, name, record["arrays"][name]) for name in names}
        return MemoryEntry(
            latents=loaded.get("latents"),
            turn=record["turn"],
            prompt=record["prompt"],
            cameras=loaded.get("cameras"),
            embedding=loaded.get("embedding"),
            fov=loaded.get("fov"),
            config_hash=record["config_hash"],
            metadata=record["metadata"],
            entry_id=entry_id,
        )

    # Writing

    def add(self, entry: MemoryEntry) -> str:
        """Writes and publishes `entry`; returns its id. Nothing is published unless everything was written."""
        self._require_writer("add an entry")
        arrays, fields = self._validate(entry)
        entry_id = f"{self._manifest['next_id']:06d}"
        entries_dir = self.path / ENTRIES
        staging = entries_dir / f"{TMP}{entry_id}-{uuid.uuid4().hex[:8]}"
        final = entries_dir / entry_id
        staging.mkdir()
        try:
            records = {name: _write_array(staging / f"{name}.npy", array) for name, array in arrays.items()}
            record = {"id": entry_id, **fields, "created": now(), "arrays": records}
            write_json(staging / ENTRY_RECORD, record)
            fsync_path(staging)
            if final.exists():  # an unpublished leftover (ids are only taken by publishing)
                shutil.rmtree(final)
            os.rename(staging, final)
            fsync_path(entries_dir)
            manifest = {**self._manifest, "next_id": self._manifest["next_id"] + 1}
            manifest["entries"] = [*self._manifest["entries"], record]
            self._publish(manifest)
        except BaseException as error:
            shutil.rmtree(staging, ignore_errors=True)
            self._manifest = read_manifest(self.path)  # the publish may have happened before the failure
            if entry_id not in {r["id"] for r in self._manifest["entries"]}:
                shutil.rmtree(final, ignore_errors=True)
                if isinstance(error, OSError):  # a full disk, a read-only folder
                    raise BankError(
                        f"memory bank {self.path}: writing entry {entry_id} failed ({error}); the session is as "
                        "it was before this entry"
                    ) from error
            raise
        return entry_id

    def delete(self, entry_id: str) -> None:
        """Unpublishes `entry_id`, then removes its files (a crash in between leaves files the next open removes)."""
        self._require_writer("delete an entry")
        self._record(entry_id)
        manifest = {**self._manifest, "entries": [r for r in self._manifest["entries"] if r["id"] != entry_id]}
        self._publish(manifest)
        shutil.rmtree(self.path / ENTRIES / entry_id, ignore_errors=True)

    # Internals

    def _publish(self, manifest: dict[str, Any]) -> None:
        """The commit point of every write: atomically replaces manifest.json."""
        write_json(self.path / MANIFEST, manifest)
        self._manifest = manifest

    def _current(self) -> dict[str, Any]:
        """The manifest: the writer's own copy, or for a reader the one on disk now (re-read when replaced)."""
        if self.readonly and _stat_key(self.path / MANIFEST) != self._manifest_stat:
            self._manifest_stat = _stat_key(self.path / MANIFEST)
            self._manifest = read_manifest(self.path)
        return self._manifest

    def _record(self, entry_id: str) -> dict[str, Any]:
        entries = self._current()["entries"]
        for record in entries:
            if record["id"] == entry_id:
                return record
        raise BankError(f"memory bank {self.path} has no entry {entry_id!r}; it has {[r['id'] for r in entries]}")

    def _require_writer(self, action: str) -> None:
        if self.readonly:
            raise BankError(f"memory bank {self.path} is open read-only (or closed); cannot {action}")

    def _validate(self, entry: MemoryEntry) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """The entry's arrays and manifest fields, or a BankError before anything is written."""
        key = self.key
        if entry.latents is None or getattr(entry, key) is None:
            raise BankError(f"a {self.task!r} memory entry needs latents and {key}")
        if not isinstance(entry.turn, int | np.integer) or entry.turn < 0:
            raise BankError(f"entry turn must be an int >= 0, got {entry.turn!r}")
        if not isinstance(entry.prompt, str):
            raise BankError(f"entry prompt must be a str, got {type(entry.prompt).__name__}")
        try:
            metadata = json.loads(json.dumps(dict(entry.metadata), allow_nan=False))
        except (TypeError, ValueError) as error:
            raise BankError(f"entry metadata must be JSON-serialisable: {error}") from error
        arrays = {name: entry_array(name, getattr(entry, name)) for name in ARRAYS if getattr(entry, name) is not None}
        fields = {
            "turn": int(entry.turn),
            "prompt": entry.prompt,
            "config_hash": self.config_hash if entry.config_hash is None else str(entry.config_hash),
            "metadata": metadata,
        }
        return arrays, fields

    def _read_array(self, entry_id: str, name: str, record: dict[str, Any]) -> np.ndarray:
        file = self.path / ENTRIES / entry_id / record["file"]
        where = f"memory bank {self.path}: entry {entry_id} array {name!r} ({file})"
        try:
            data = file.read_bytes()
        except FileNotFoundError as error:
            raise CorruptEntryError(f"{where} is missing (deleted by another process, or damaged)") from error
        digest = hashlib.sha256(data).hexdigest()
        if digest != record["sha256"]:
            raise CorruptEntryError(
                f"{where} fails its checksum (sha256 {digest[:12]}..., manifest says {record['sha256'][:12]}...); "
                "the file is damaged: delete the entry or restore it"
            )
        return np.load(io.BytesIO(data), allow_pickle=False)

    def _remove_leftovers(self) -> None:
        """Deletes temporaries and unpublished entry directories (only ever called holding the lock)."""
        published = {r["id"] for r in self._manifest["entries"]}
        leftovers = [p for p in self.path.iterdir() if p.name.startswith(TMP)]
        leftovers += [p for p in (self.path / ENTRIES).iterdir() if p.name not in published]
        for leftover in leftovers:
            if leftover.is_dir():
                shutil.rmtree(leftover)
            else:
                leftover.unlink()
        if leftovers:
            fsync_path(self.path / ENTRIES)
            log.warning("memory bank %s: removed leftovers of interrupted writes: %s", self.path, leftovers)


def _stat_key(file: Path) -> tuple[int, int, int] | None:
    """Changes whenever the file is replaced (os.replace gives it a new inode)."""
    try:
        stat = file.stat()
    except FileNotFoundError:
        return None
    return stat.st_ino, stat.st_mtime_ns, stat.st_size


def _require_empty(path: Path) -> None:
    """Refuses a directory that holds anything but the leftovers of an interrupted `create`."""
    if (path / MANIFEST).exists():
        raise BankError(f"{path} already holds a memory bank; open it with MemoryBank.open")

    def leftover(p: Path) -> bool:
        return (p.name in (LOCK, ENTRIES) and not (p.is_dir() and any(p.iterdir()))) or p.name.startswith(TMP)

    others = sorted(p.name for p in path.iterdir() if not leftover(p))
    if others:
        raise BankError(f"cannot create a memory bank in {path}: the directory is not empty ({others[:5]})")


def _lock(path: Path, timeout: float) -> int:
    """The fd holding the exclusive lock of session `path`, waiting up to `timeout` seconds; the lock
    file then names this process. The file stays after `_unlock` (waiters share its inode)."""
    if not path.is_dir():
        raise BankFormatError(f"{path} is not a memory bank (no such directory)")
    try:
        fd = locks.hold(path / LOCK, timeout)
    except BlockingIOError:
        holder = (path / LOCK).read_text(errors="replace").strip() or "unknown pid"
        raise BankLockedError(
            f"memory bank {path} is open for writing by another process ({holder}); "
            f"waited {timeout:g} s. Close that process's bank, or open this one with readonly=True"
        ) from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _unlock(fd: int | None) -> None:
    if fd is not None:
        os.ftruncate(fd, 0)  # no holder any more
        os.close(fd)
