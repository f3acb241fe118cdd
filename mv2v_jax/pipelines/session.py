"""A multi-turn session on disk: the memory bank plus the turn outputs people look at.

    <session>/bank/              the memory bank (retrieval.bank): every output's latents and keys
    <session>/session.json       task, config hash, the source video (its name and content hash)
    <session>/source.npy         the NVS source latents, encoded once
    <session>/turns/turn_003.mp4 / .png / .json   per turn: the video, a contact sheet, the record
    <session>/index.html         the session's report (pipelines.report), written after every turn

A session belongs to one task and one configuration (its hash is checked on every open, so a
session made with other weights, codec or retrieval settings is refused instead of mixed), and to
one source video, known by the sha256 of its frames as read (the same video under another path is
the same source; another video is refused by name).

A turn is one atomic unit (`Session.commit_turn`): its mp4, contact sheet and JSON record are
written into a hidden `turns/.tmp-turn_003-*` folder first; the bank entry, which carries the record
and that folder's name, is the commit point; then the files are renamed into place. A failure before
the commit leaves the session as it was; a kill after it leaves files the next open renames into
place (or, were they lost, the pipeline derives again from the entry: `Session.missing_files`). So
a turn's number is taken only by a whole turn, and what a reader finds under turns/ is complete.

A new session is built in a hidden folder beside it (`.tmp-<name>-*`, locked while in use) and
appears, renamed into place, with its first complete turn: a command that fails creates nothing.
Leftovers of killed writes (hidden temporaries and unpublished folders) are removed by the next open.
The report is written (atomically) after a turn's commit, so a failure to write it loses no turn; the
next open writes one that a killed process left out of date.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from mv2v_jax.io.atomic import (
    TEMPORARY_PREFIX,
    atomic_output,
    check_can_create,
    fsync_path,
    make_parents,
    new_staging,
    new_temporary,
    remove_empty,
    remove_stale_stagings,
    write_json,
)
from mv2v_jax.io.images import write_contact_sheet
from mv2v_jax.io.video import VideoClip, write_video
from mv2v_jax.pipelines.report import REPORT, ReportTurn, write_report
from mv2v_jax.retrieval.bank import EntryInfo, MemoryBank, MemoryEntry, config_hash

SESSION_FILE = "session.json"
SOURCE_FILE = "source.npy"
EDITED = "edited.mp4"  # a long edit's whole edited video, once every segment is done
BANK = "bank"
TURNS = "turns"
FILE_SUFFIXES = (".mp4", ".png", ".json")  # a turn's files: video, contact sheet, record
# Keys of a bank entry's metadata that belong to the session: the turn record and its staged files.
RECORD_KEY, STAGED_KEY = "record", "staged"

log = logging.getLogger(__name__)


class SessionError(ValueError):
    """A session that cannot be used as asked; the message names the session and the problem."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class SourceVideo:
    """A session's source video as read: uint8 frames `[F, H, W, 3]` at the session's size, the name the
    user gave, the sha256 of the frames (what identifies the video) and what reading changed."""

    frames: np.ndarray
    name: str
    sha256: str
    changes: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_frames(cls, frames: np.ndarray, name: str, changes: Mapping[str, Any] | None = None) -> SourceVideo:
        frames = np.ascontiguousarray(frames, np.uint8)
        digest = hashlib.sha256(f"{frames.shape}".encode())
        digest.update(frames.data)
        return cls(frames=frames, name=name, sha256=digest.hexdigest(), changes=dict(changes or {}))

    @classmethod
    def from_clip(cls, clip: VideoClip, name: str) -> SourceVideo:
        return cls.from_frames(clip.frames, name, clip.changes())

    def record(self) -> dict[str, Any]:
        """What session.json and turn records say about it."""
        return {"video": self.name, "sha256": self.sha256, "frames": int(self.frames.shape[0]), **self.changes}


@dataclasses.dataclass(frozen=True, kw_only=True)
class TurnFiles:
    """What a turn's files show: `video` uint8 `[F, H, W, 3]` written at `fps`, and the contact sheet's
    rows (uint8 videos `[F, H, W, 3]`, one row of frames each) with their labels."""

    video: np.ndarray
    fps: float
    sheet: Sequence[np.ndarray]
    labels: Sequence[str]


class Stages:
    """Wall-clock seconds per pipeline stage, for the turn record."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


def _json_text(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True, default=_jsonable)


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _read_meta(path: Path) -> dict[str, Any]:
    file = path / SESSION_FILE
    try:
        meta = json.loads(file.read_text())
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise SessionError(f"session {path}: {SESSION_FILE} is not valid JSON ({e})") from e
    if not isinstance(meta, dict):
        raise SessionError(f"session {path}: {SESSION_FILE} is not a JSON object")
    return meta


def _same_source(meta: Mapping[str, Any], source: SourceVideo) -> bool:
    """Whether `source` is the session's source video: by content, or (sessions written before content
    hashes) by the resolved path."""
    stored = meta.get("source")
    if isinstance(stored, dict) and "sha256" in stored:
        return stored["sha256"] == source.sha256
    legacy = meta.get("source_video") or meta.get("video")
    return legacy is None or Path(legacy).resolve() == Path(source.name).resolve()


def check_session(
    path: str | os.PathLike,
    *,
    task: str,
    config: Mapping[str, Any],
    source: SourceVideo | None = None,
    meta: Mapping[str, Any] | None = None,
) -> dict[str, Any] | None:
    """Whether the session at `path` can be used as asked, changing nothing: its meta (None: there is
    no session yet, and one can be created there), or a SessionError (another task, configuration or
    source video, a `meta` value that differs, a folder holding other things), a BankError (a bank this
    code cannot read) or an OSError (a folder that cannot be created). `Session.open` checks the same."""
    path = Path(path)
    if not (path / SESSION_FILE).exists():
        if path.exists() and not path.is_dir():
            raise SessionError(f"{path} is a file, not a session folder; choose a new session folder")
        if path.exists() and any(path.iterdir()):
            raise SessionError(f"{path} is not empty and holds no session; choose a new session folder")
        check_can_create(path)
        return None
    stored = _read_meta(path)
    if stored.get("task") != task:
        raise SessionError(f"session {path} is a {stored.get('task')!r} session, not {task!r}")
    if stored.get("config_hash") != (this := config_hash(config)):
        differ = _differences(stored.get("config"), _plain(config), "sample") or [
            "weights, codec, retrieval settings or video"
        ]
        raise SessionError(
            f"session {path} was made with another configuration (hash {stored.get('config_hash')}, this run "
            f"{this}): {'; '.join(differ)}; a session keeps these: start a new session, or run with its values"
        )
    if source is not None and not _same_source(stored, source):
        made = stored["source"] if isinstance(stored.get("source"), dict) else {}
        name = made.get("video") or stored.get("source_video") or stored.get("video")
        raise SessionError(
            f"session {path} edits the video {name} (sha256 {str(made.get('sha256', '?'))[:12]}), "
            f"not {source.name} (sha256 {source.sha256[:12]}): its frames differ; start a new session for it"
        )
    for key, value in (meta or {}).items():
        if key in stored and stored[key] != value:
            raise SessionError(f"session {path} has {key} {stored[key]}; this run gives {value}")
    MemoryBank.open(path / BANK, readonly=True, task=task).close()  # a bank this code reads
    return stored


def _plain(config: Mapping[str, Any]) -> Any:
    """A config as plain JSON data (what session.json keeps of it)."""
    return json.loads(json.dumps(config.to_dict() if hasattr(config, "to_dict") else dict(config), default=str))


def _differences(stored: Any, given: Any, key: str = "") -> list[str]:
    """`key: stored -> given` for every leaf that differs between two plain configs ([] when `stored` is
    not a mapping: a session written before session.json kept its configuration)."""
    if not isinstance(stored, dict):
        return []
    found = []
    for name in sorted(set(stored) | set(given), key=str):
        a, b, dotted = stored.get(name), given.get(name), f"{key}.{name}" if key else name
        if isinstance(a, dict) and isinstance(b, dict):
            found += _differences(a, b, dotted)
        elif a != b:
            found.append(f"{dotted} was {a!r}, now {b!r}")
    return found


class Session:
    """A session folder open for writing: use `Session.open`, then `close` (or `with`)."""

    def __init__(self, path: Path, root: Path, task: str, meta: dict[str, Any], bank: MemoryBank, lock_fd: int | None):
        self.path = path  # where the session is (or will appear with its first turn)
        self.root = root  # where its files are now: `path`, or the hidden folder of a new session
        self.task = task
        self.meta = meta
        self.bank = bank
        self.source: SourceVideo | None = None  # the source video this command gave, if any
        self._lock_fd = lock_fd
        self._created_parents: list[Path] = []

    @classmethod
    def open(
        cls,
        path: str | os.PathLike,
        *,
        task: str,
        config: Mapping[str, Any],
        source: SourceVideo | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> Session:
        """The session at `path` for `task` and `config`, or a new one (made on disk in a hidden folder
        and published with its first turn). `source` is the source video when the command gives one
        (required to make an NVS session); `meta` holds values the session must keep (a long edit's
        segments). Raises what `check_session` raises; a writer removes leftovers of killed writes."""
        path = Path(path)
        stored = check_session(path, task=task, config=config, source=source, meta=meta)
        if stored is not None:
            remove_stale_stagings(path)  # of first turns killed before another process made it
            session = cls(path, path, task, stored, MemoryBank.open(path / BANK, task=task), None)
            session._repair()
            if session._report_out_of_date():
                session.write_report()
        else:
            session = cls._create(path, task, config, source, meta)
        session.source = source
        return session

    @classmethod
    def _create(cls, path: Path, task: str, config, source: SourceVideo | None, meta) -> Session:
        from mv2v_jax.tasks import get_task  # JAX; only a new session needs its task's retrieval key

        missing = make_parents(path.parent)
        staging, lock_fd = new_staging(path)  # its lock held through its rename into place
        try:
            hash_ = config_hash(config)
            bank = MemoryBank.create(staging / BANK, task, hash_, key=get_task(task).retrieval_key)
            stored = {"task": task, "config_hash": hash_, "config": _plain(config), **(meta or {})}
            if source is not None:
                stored["source"] = source.record()
            write_json(staging / SESSION_FILE, stored, default=_jsonable)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            os.close(lock_fd)
            remove_empty(missing)
            raise
        session = cls(path, staging, task, stored, bank, lock_fd)
        session._created_parents = missing
        return session

    @property
    def published(self) -> bool:
        """Whether the session is at its path (False until a new session's first turn is committed)."""
        return self.root == self.path

    @property
    def next_turn(self) -> int:
        return 1 + max((e.turn for e in self.bank.entries()), default=0)

    def save_source(self, latents: np.ndarray) -> None:
        with atomic_output(self.root / SOURCE_FILE) as tmp:
            np.save(tmp, np.asarray(latents))

    def load_source(self) -> np.ndarray | None:
        path = self.root / SOURCE_FILE
        return np.load(path) if path.exists() else None

    def turn_files(self, turn: int) -> dict[str, Path]:
        """Where turn `turn`'s files are once the session is published: video, contact_sheet, record."""
        stem = self.path / TURNS / f"turn_{turn:03d}"
        names = ("video", "contact_sheet", "record")
        return {name: stem.with_suffix(suffix) for name, suffix in zip(names, FILE_SUFFIXES, strict=True)}

    def commit_turn(self, entry: MemoryEntry, files: TurnFiles, record: dict[str, Any]) -> dict[str, Any]:
        """Stores a turn as one unit: its files (staged), its bank entry (the commit point, carrying the
        record), then the files in place; a new session appears at its path with this, its first turn.
        Returns the record with its files' paths under "files" and the bank entry's id under "entry"
        (the file on disk names the turn, which is unique in the bank, not the id, given by the commit)."""
        turn = entry.turn
        record = {**record, "files": {name: str(p) for name, p in self.turn_files(turn).items()}}
        turns = self.root / TURNS
        turns.mkdir(exist_ok=True)
        staging = new_temporary(turns, f"{TEMPORARY_PREFIX}turn_{turn:03d}-", directory=True)
        try:
            self._write_files(staging, turn, files, record, FILE_SUFFIXES)
            fsync_path(staging)
            fsync_path(turns)
            metadata = {**entry.metadata, RECORD_KEY: json.loads(_json_text(record)), STAGED_KEY: staging.name}
            entry_id = self.bank.add(dataclasses.replace(entry, metadata=metadata))
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        self._place(staging, turn)
        if not self.published:
            self._publish()
        self.write_report()
        return {**record, "entry": entry_id}

    def write_report(self) -> None:
        """Writes the session's report (pipelines.report) from its bank entries. A failure is logged, not
        raised: the turns it shows are committed already, and the next turn or open writes it again."""
        try:
            turns = [
                ReportTurn(
                    record=info.metadata.get(RECORD_KEY, {"turn": info.turn}),
                    files={name: p.relative_to(self.path).as_posix() for name, p in self.turn_files(info.turn).items()},
                    cameras=self.bank.load(info.entry_id, arrays=("cameras",)).cameras
                    if "cameras" in info.arrays
                    else None,
                )
                for info in self.bank.entries()
            ]
            edited = EDITED if (self.root / EDITED).exists() else None
            write_report(self.root / REPORT, self.path.name, self.meta, turns, edited=edited)
        except Exception as e:  # the report is a view of committed turns: it never fails them
            log.warning("session %s: could not write its report %s (%s: %s)", self.path, REPORT, type(e).__name__, e)

    def _report_out_of_date(self) -> bool:
        """Whether the report is missing or older than a turn's record (a process killed between them)."""
        report, records = self.path / REPORT, list((self.path / TURNS).glob("turn_*.json"))
        if not records:
            return False
        return not report.exists() or report.stat().st_mtime_ns < max(r.stat().st_mtime_ns for r in records)

    def _write_files(self, folder: Path, turn: int, files: TurnFiles, record, suffixes: Sequence[str]) -> None:
        stem = folder / f"turn_{turn:03d}"
        if ".mp4" in suffixes:
            write_video(stem.with_suffix(".mp4"), files.video, files.fps)
        if ".png" in suffixes:
            write_contact_sheet(stem.with_suffix(".png"), list(files.sheet), labels=list(files.labels))
        if ".json" in suffixes:
            write_json(stem.with_suffix(".json"), record, default=_jsonable)

    def _place(self, staging: Path, turn: int) -> None:
        """Renames the staged files of a committed turn into turns/ and removes the staging folder."""
        for suffix in FILE_SUFFIXES:
            staged = staging / f"turn_{turn:03d}{suffix}"
            if staged.exists():
                os.replace(staged, staging.parent / staged.name)
        fsync_path(staging.parent)
        shutil.rmtree(staging)

    def _publish(self) -> None:
        """Renames a new session's hidden folder to its path (an empty folder there is replaced)."""
        self.bank.close()
        try:
            os.rename(self.root, self.path)
        except OSError as e:
            if e.errno in (errno.ENOTEMPTY, errno.EEXIST):
                raise SessionError(
                    f"{self.path} was filled by another process while this session's first turn ran; its turn "
                    f"is left in {self.root}"
                ) from e
            raise
        fsync_path(self.path.parent)
        self.root = self.path
        self.bank = MemoryBank.open(self.path / BANK, task=self.task)

    def _repair(self) -> None:
        """Completes committed turns whose files a killed process had staged, and removes leftovers."""
        turns = self.path / TURNS
        if not turns.is_dir():
            return
        for info in self.bank.entries():
            staged = info.metadata.get(STAGED_KEY)
            if staged and (turns / staged).is_dir():
                self._place(turns / staged, info.turn)
        leftovers = [p for p in [*turns.iterdir(), *self.path.iterdir()] if p.name.startswith(TEMPORARY_PREFIX)]
        for leftover in leftovers:
            if leftover.is_dir():
                shutil.rmtree(leftover)
            else:
                leftover.unlink()
        for info in self.bank.entries():  # a record lost otherwise is rewritten from the entry's copy
            json_file = self.turn_files(info.turn)["record"]
            if RECORD_KEY in info.metadata and not json_file.exists():
                write_json(json_file, info.metadata[RECORD_KEY], default=_jsonable)

    def missing_files(self) -> list[tuple[EntryInfo, list[str]]]:
        """Committed turns with files missing (deleted since), which the pipeline derives again from the
        entry: `(entry, suffixes)` per turn."""
        missing = []
        for info in self.bank.entries():
            paths = self.turn_files(info.turn)
            gone = [suffix for suffix, p in zip(FILE_SUFFIXES, paths.values(), strict=True) if not p.exists()]
            if gone:
                missing.append((info, gone))
        return missing

    def restore_files(self, info: EntryInfo, files: TurnFiles, suffixes: Sequence[str]) -> None:
        """Writes again the `suffixes` files of the committed turn `info` (each atomically)."""
        record = info.metadata.get(RECORD_KEY, {"turn": info.turn, "entry": info.entry_id})
        self._write_files(self.path / TURNS, info.turn, files, record, suffixes)

    def close(self) -> None:
        """Releases the session; a new session whose first turn was not committed is removed."""
        self.bank.close()
        if not self.published:
            shutil.rmtree(self.root, ignore_errors=True)
            remove_empty(self._created_parents)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
