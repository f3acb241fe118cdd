"""An on-disk cache of prompt embeddings, so a turn whose prompts were seen before never loads umT5-XXL.

One file per (tokenizer, encoder weights and compute dtype, text length, prompt), named by the
sha256 of those four (`PromptCache.key`). A file holds only the prompt's real rows `[len, d_model]`
(the tokens and the EOS); the rows past `len` are zero by Wan's definition and are put back by the
caller. Layout: the magic line, one JSON header line (key, dtype, shape, sha256 of the data), then
the raw little-endian array.

Writes are atomic (`io.atomic.atomic_output`: temporary file beside the target, fsync, `os.replace`,
fsync of the folder), so a killed process leaves either the old file or the new one. A file that
fails its checks (truncated, bad header, wrong key, checksum mismatch) is reported, deleted and
treated as a miss, so the caller recomputes it instead of using it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import ml_dtypes
import numpy as np

from mv2v_jax.io.atomic import atomic_output

MAGIC = b"mv2v-prompt-embedding-v1\n"
_DTYPES = {"float32": np.dtype(np.float32), "bfloat16": np.dtype(ml_dtypes.bfloat16)}
log = logging.getLogger(__name__)


class CorruptEntry(ValueError):
    """A cache file that fails its checks; the message names the file and the check."""


class PromptCache:
    """`get`/`put` of `[len, d_model]` prompt embeddings under `folder`, keyed by `key(...)`."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def key(prompt: str, *, tokenizer_id: str, encoder_id: str, text_len: int) -> str:
        """sha256 of everything the embedding depends on. `tokenizer_id`: `UMT5Tokenizer.identity`;
        `encoder_id`: `umt5.encoder_identity(weights, dtype)`; the prompt is hashed as given (uncleaned)."""
        prompt_hash = hashlib.sha256(prompt.encode("utf-8")).hexdigest()
        fields = {"tokenizer": tokenizer_id, "encoder": encoder_id, "text_len": int(text_len), "prompt": prompt_hash}
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()

    def path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.bin"

    def get(self, key: str) -> np.ndarray | None:
        """The stored `[len, d_model]` array, or None on a miss (a corrupt file counts as a miss and is removed)."""
        path = self.path(key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            return _decode(data, key, path)
        except CorruptEntry as e:
            log.warning("%s; removing it, the embedding will be recomputed", e)
            path.unlink(missing_ok=True)
            return None

    def put(self, key: str, embedding: np.ndarray) -> Path:
        """Stores `embedding` (`[len, d_model]`, float32 or bfloat16) atomically; returns its file."""
        embedding = np.ascontiguousarray(embedding)
        dtype = next((name for name, d in _DTYPES.items() if d == embedding.dtype), None)
        if dtype is None or embedding.ndim != 2:
            raise ValueError(
                f"expected a [len, d_model] float32 or bfloat16 array, got {embedding.dtype} {embedding.shape}"
            )
        payload = embedding.tobytes()
        header = {
            "key": key,
            "dtype": dtype,
            "shape": list(embedding.shape),
            "sha256": hashlib.sha256(payload).hexdigest(),
        }
        path = self.path(key)
        with atomic_output(path) as tmp:
            tmp.write_bytes(MAGIC + json.dumps(header).encode() + b"\n" + payload)
        return path


def _decode(data: bytes, key: str, path: Path) -> np.ndarray:
    if not data.startswith(MAGIC):
        raise CorruptEntry(f"prompt cache file {path} does not start with the cache magic")
    end = data.find(b"\n", len(MAGIC))
    if end < 0:
        raise CorruptEntry(f"prompt cache file {path} has no complete header")
    try:
        header = json.loads(data[len(MAGIC) : end])
        dtype, shape, digest = _DTYPES[header["dtype"]], tuple(header["shape"]), header["sha256"]
        stored_key = header["key"]
    except (ValueError, KeyError, TypeError):
        raise CorruptEntry(f"prompt cache file {path} has an unreadable header") from None
    if stored_key != key:
        raise CorruptEntry(f"prompt cache file {path} holds key {stored_key!r}, not {key!r}")
    payload = data[end + 1 :]
    if len(payload) != int(np.prod(shape)) * dtype.itemsize or hashlib.sha256(payload).hexdigest() != digest:
        raise CorruptEntry(f"prompt cache file {path} fails its checksum (truncated or overwritten)")
    return np.frombuffer(payload, dtype).reshape(shape).copy()
