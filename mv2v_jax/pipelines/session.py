"""A multi-turn session on disk: the memory bank plus the turn outputs people look at.

    <session>/bank/              the memory bank (retrieval.bank): every output's latents and keys
    <session>/session.json       task, config hash, the source video of an NVS session
    <session>/source.npy         the NVS source latents, encoded once
    <session>/turns/turn_003.mp4 / .png / .json   per turn: the video, a contact sheet, the record

A session belongs to one task and one configuration (its hash is checked on every open, so a
session made with other weights, codec or retrieval settings is refused instead of mixed), and to
one source video for novel view synthesis. All files are written atomically.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from mv2v_jax.io.atomic import atomic_output, write_json
from mv2v_jax.io.images import write_contact_sheet
from mv2v_jax.io.video import write_video
from mv2v_jax.retrieval.bank import MemoryBank, config_hash
from mv2v_jax.tasks import get_task

SESSION_FILE = "session.json"


class SessionError(ValueError):
    """A session that cannot be used as asked; the message names the session and the problem."""


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


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


class Session:
    """Opens (or creates) a session directory for `task` with the given configuration."""

    def __init__(self, path: str | Path, task: str, config: Mapping[str, Any]):
        self.path = Path(path)
        self.task = task
        self.config_hash = config_hash(config)
        meta_file = self.path / SESSION_FILE
        if meta_file.exists():
            try:
                meta = json.loads(meta_file.read_text())
            except json.JSONDecodeError as e:
                raise SessionError(f"session {self.path}: {SESSION_FILE} is not valid JSON ({e})") from e
            if meta.get("task") != task:
                raise SessionError(f"session {self.path} is a {meta.get('task')!r} session, not {task!r}")
            if meta.get("config_hash") != self.config_hash:
                raise SessionError(
                    f"session {self.path} was made with another configuration (hash {meta.get('config_hash')}, "
                    f"this run {self.config_hash}): weights, codec or retrieval settings differ; start a new session"
                )
            self.meta = meta
            self.bank = MemoryBank.open(self.path / "bank")
        else:
            if self.path.exists() and any(self.path.iterdir()):
                raise SessionError(f"{self.path} is not empty and holds no session; choose a new session folder")
            self.path.mkdir(parents=True, exist_ok=True)
            key = get_task(task).retrieval_key
            self.bank = MemoryBank.create(self.path / "bank", task, self.config_hash, key=key)
            self.meta = {"task": task, "config_hash": self.config_hash}
            write_json(meta_file, self.meta, default=_jsonable)

    def update(self, **fields: Any) -> None:
        self.meta |= fields
        write_json(self.path / SESSION_FILE, self.meta, default=_jsonable)

    @property
    def next_turn(self) -> int:
        return 1 + max((e.turn for e in self.bank.entries()), default=0)

    def save_source(self, latents: np.ndarray, video: str) -> None:
        with atomic_output(self.path / "source.npy") as tmp:
            np.save(tmp, np.asarray(latents))
        self.update(source_video=video)

    def load_source(self) -> np.ndarray | None:
        path = self.path / "source.npy"
        return np.load(path) if path.exists() else None

    def write_turn(
        self, turn: int, frames: np.ndarray, fps: float, sheet_rows, labels, record: dict[str, Any]
    ) -> dict[str, Any]:
        """Writes the turn's mp4, contact sheet and JSON record (with their paths under "files")."""
        stem = self.path / "turns" / f"turn_{turn:03d}"
        record["files"] = {
            "video": str(stem.with_suffix(".mp4")),
            "contact_sheet": str(stem.with_suffix(".png")),
            "record": str(stem.with_suffix(".json")),
        }
        write_video(stem.with_suffix(".mp4"), frames, fps)
        write_contact_sheet(stem.with_suffix(".png"), sheet_rows, labels=labels)
        write_json(stem.with_suffix(".json"), record, default=_jsonable)
        return record

    def close(self) -> None:
        self.bank.close()
