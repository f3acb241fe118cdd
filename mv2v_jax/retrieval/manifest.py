"""The memory bank's on-disk format: what manifest.json and an entry's record hold, and the checks
that a manifest read back (or an entry about to be written) is one this code understands.

    manifest.json   {"format": FORMAT, "version": FORMAT_VERSION, "task", "key", "config_hash",
                     "created", "writer", "next_id", "entries": [record, ...]}
    record          {"id", "turn", "prompt", "config_hash", "metadata", "created",
                     "arrays": {name: {"file", "sha256", "bytes", "shape", "dtype"}}}

An entry's arrays are ARRAYS: latents `[F, H, W, C]` and its retrieval key (KEYS: cameras `[F, 3, 4]`
or a segment embedding `[D]`), optionally a packed FOV bitmask (uint32 words). The session's `key`
names the array every entry carries; manifests written before it was recorded take their task's
(LEGACY_KEYS). The bank (`retrieval.bank`) writes and reads these; this module knows no files but
the manifest.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from mv2v_jax import __version__

FORMAT = "mv2v-memory-bank"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
ARRAYS = ("latents", "cameras", "embedding", "fov")
KEYS = ("cameras", "embedding")  # arrays a session can be indexed by
# Sessions written before the manifest recorded its key: the two tasks of that version and theirs.
LEGACY_KEYS = {"nvs": "cameras", "long_edit": "embedding"}
# Each entry array's dtype kinds and shape (None: any length).
ARRAY_SPECS = {
    "latents": ("f", (None, None, None, None)),
    "cameras": ("f", (None, 3, 4)),
    "embedding": ("f", (None,)),
    "fov": ("u", (None,)),
}
# What `MemoryBank.add` writes, field by field: a manifest that differs was damaged or edited by hand.
RECORD_FIELDS = {"id": str, "turn": int, "prompt": str, "config_hash": str, "metadata": dict, "created": str}
ARRAY_FIELDS = {"file": str, "sha256": str, "bytes": int, "shape": list, "dtype": str}


class BankError(Exception):
    """A memory bank cannot do what was asked; the message names the session and the problem."""


class BankFormatError(BankError):
    """The directory is not a memory bank this code can read (format, version or task)."""


@dataclasses.dataclass(frozen=True)
class EntryInfo:
    """An entry's manifest record without its arrays. `arrays` maps name -> (shape, dtype)."""

    entry_id: str
    turn: int
    prompt: str
    config_hash: str
    metadata: dict[str, Any]
    arrays: dict[str, tuple[tuple[int, ...], str]]
    created: str

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> EntryInfo:
        return cls(
            entry_id=record["id"],
            turn=record["turn"],
            prompt=record["prompt"],
            config_hash=record["config_hash"],
            metadata=record["metadata"],
            arrays={name: (tuple(a["shape"]), a["dtype"]) for name, a in record["arrays"].items()},
            created=record["created"],
        )


def now() -> str:
    """The manifest's timestamps: UTC, ISO 8601, whole seconds."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def new_manifest(task: str, key: str, config_hash: str) -> dict[str, Any]:
    """The manifest of an empty session."""
    if not isinstance(task, str) or not task:
        raise BankError(f"a memory bank task must be a non-empty name, got {task!r}")
    if key not in KEYS:
        raise BankError(f"unknown memory bank key {key!r}; choose one of {KEYS}")
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "task": task,
        "key": key,
        "config_hash": config_hash,
        "created": now(),
        "writer": f"mv2v_jax {__version__}",
        "next_id": 0,
        "entries": [],
    }


def manifest_key(manifest: dict[str, Any]) -> Any:
    """The manifest's retrieval key (older manifests: their task's)."""
    return manifest["key"] if "key" in manifest else LEGACY_KEYS.get(manifest.get("task"))


def entry_array(name: str, value: Any) -> np.ndarray:
    """Entry array `name` as it is stored (C-contiguous; bfloat16 as float32, losslessly), or a
    BankError saying what is wrong with it."""
    kinds, shape = ARRAY_SPECS[name]
    array = np.asarray(value)
    if array.dtype.name == "bfloat16":
        array = array.astype(np.float32)
    if array.dtype.kind not in kinds:
        raise BankError(f"entry array {name!r} has dtype {array.dtype}; expected kind {kinds!r}")
    if array.ndim != len(shape) or any(s is not None and s != n for s, n in zip(shape, array.shape, strict=True)):
        wanted = "[" + ", ".join("?" if s is None else str(s) for s in shape) + "]"
        raise BankError(f"entry array {name!r} has shape {array.shape}; expected {wanted}")
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        raise BankError(f"entry array {name!r} contains NaN or infinity")
    if name == "fov" and array.dtype != np.uint32:
        raise BankError(f"entry array 'fov' must be packed uint32 words, got {array.dtype}")
    return np.ascontiguousarray(array)


def read_manifest(path: Path) -> dict[str, Any]:
    """The manifest of the session at `path`, checked to be one this code reads."""
    file = path / MANIFEST
    if not file.is_file():
        raise BankFormatError(f"{path} is not a memory bank (no {MANIFEST})")
    try:
        manifest = json.loads(file.read_text())
    except (ValueError, UnicodeDecodeError, RecursionError) as error:
        raise BankFormatError(f"{file} is not valid JSON ({error}); the session manifest is damaged") from error
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise BankFormatError(f"{file} is not a memory bank manifest (format {found!r})")
    if manifest.get("version") != FORMAT_VERSION:
        raise BankFormatError(
            f"memory bank {path} has format version {manifest.get('version')!r} (written by "
            f"{manifest.get('writer', 'an unknown writer')}); "
            f"this mv2v_jax {__version__} reads version {FORMAT_VERSION}"
        )
    if manifest_key(manifest) not in KEYS:
        task, key = manifest.get("task"), manifest.get("key")
        raise BankFormatError(f"memory bank {path} ({task!r}) has no known retrieval key: {key!r}, not one of {KEYS}")
    if problem := manifest_problem(manifest):
        raise BankFormatError(f"{file}: {problem}; the session manifest is damaged")
    return manifest


def manifest_problem(manifest: dict[str, Any]) -> str | None:
    """What is wrong with a manifest's fields (None: nothing), checked before any of them is used."""

    def count(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0

    def wrong(record: Any, fields: dict[str, type]) -> list[str]:
        if not isinstance(record, dict):
            return ["the record"]
        return [
            k
            for k, kind in fields.items()
            if not (count(record.get(k)) if kind is int else isinstance(record.get(k), kind))
        ]

    if not isinstance(manifest.get("config_hash"), str) or not count(manifest.get("next_id")):
        return "config_hash must be a string and next_id an int >= 0"
    if not isinstance(manifest.get("entries"), list):
        return "entries must be a list"
    seen = set()
    for i, record in enumerate(manifest["entries"]):
        if bad := wrong(record, RECORD_FIELDS | {"arrays": dict}):
            return f"entry {i}: {', '.join(bad)} missing or of the wrong type"
        entry_id = record["id"]
        if not re.fullmatch(r"\d+", entry_id) or int(entry_id) >= manifest["next_id"] or entry_id in seen:
            return f"entry {i}: id {entry_id!r} is not a unique number below next_id {manifest['next_id']}"
        seen.add(entry_id)
        if missing := sorted({"latents", manifest_key(manifest)} - set(record["arrays"])):
            return f"entry {entry_id}: no {' or '.join(missing)} array"
        for name, array in record["arrays"].items():
            if name not in ARRAYS or wrong(array, ARRAY_FIELDS) or array["file"] != f"{name}.npy":
                return f"entry {entry_id}: array {name!r} has a malformed record {array!r}"
            if not all(count(n) for n in array["shape"]):
                return f"entry {entry_id}: array {name!r} has shape {array['shape']}"
    return None
