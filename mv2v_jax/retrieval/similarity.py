"""Long-video-editing retrieval (docs/paper.md, "Long video editing retrieval"): which earlier segments to remember.

Each cached output is indexed by the SOURCE segment it was edited from: the per-frame DINOv2
embeddings of that segment, mean-pooled (`segment_embedding`). For the current source segment the
memory is the most recent cached segment, always, plus the k - 1 others whose pooled embeddings have
the highest cosine similarity to the current one (`select_segments`).

The encoder is a parameter, `embed_frames(frames uint8 [N, H, W, 3]) -> [N, D]`, one global
embedding per frame (DINOv2's CLS token, mv2v_jax/models/vision/dinov2.py), so this module depends
on no model.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from mv2v_jax.retrieval.ranking import TopK, top_k

EmbedFrames = Callable[[np.ndarray], "jax.Array | np.ndarray"]
EPS = 1e-12  # a zero embedding has similarity 0 to everything instead of NaN


def segment_embedding(frames: np.ndarray, embed_frames: EmbedFrames, chunk: int = 16) -> np.ndarray:
    """Mean of the per-frame embeddings of one segment `frames uint8 [N, H, W, 3]`: float32 `[D]`.

    Frames go through `embed_frames` `chunk` at a time (the last chunk may be shorter), which bounds
    the encoder's activations for long segments.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise ValueError(f"segment frames must be uint8 [N, H, W, 3] with N >= 1, got {frames.dtype} {frames.shape}")
    total = None
    for start in range(0, len(frames), chunk):
        batch = frames[start : start + chunk]
        embeddings = np.asarray(embed_frames(batch), np.float32)
        if embeddings.ndim != 2 or embeddings.shape[0] != len(batch):
            raise ValueError(f"embed_frames must return [N, D] for N frames, got {embeddings.shape}")
        if not np.isfinite(embeddings).all():
            raise ValueError(f"embed_frames returned NaN or inf for frames {start}..{start + len(batch) - 1}")
        batch_sum = embeddings.sum(axis=0, dtype=np.float64)
        total = batch_sum if total is None else total + batch_sum
    return (total / len(frames)).astype(np.float32)


def check_embeddings(query: jax.Array, keys: jax.Array) -> None:
    """A ValueError naming the input unless `query` is `[D]` and `keys` `[M, D]`, all finite (the
    values are checked outside jit only; inside, callers check before they trace)."""
    query_shape, keys_shape = jnp.shape(query), jnp.shape(keys)
    if len(query_shape) != 1 or len(keys_shape) != 2 or keys_shape[1] != query_shape[0]:
        raise ValueError(f"similarity needs query [D] and keys [M, D], got shapes {query_shape} and {keys_shape}")
    for name, array in (("query", query), ("keys", keys)):
        if not isinstance(array, jax.core.Tracer) and not np.isfinite(np.asarray(array, np.float32)).all():
            raise ValueError(f"similarity {name} contain NaN or inf")


def cosine_similarity(query: jax.Array, keys: jax.Array) -> jax.Array:
    """`query [D]` against `keys [M, D]`: `[M]` float32 in [-1, 1]."""
    check_embeddings(query, keys)
    return _cosine_similarity(query, keys)


@jax.jit
def _cosine_similarity(query: jax.Array, keys: jax.Array) -> jax.Array:
    query, keys = jnp.asarray(query, jnp.float32), jnp.asarray(keys, jnp.float32)
    # Cosine is scale-free: scaling each vector by its largest entry first keeps huge ones from overflowing.
    query = query / jnp.maximum(jnp.max(jnp.abs(query), initial=0.0), EPS)
    keys = keys / jnp.maximum(jnp.max(jnp.abs(keys), axis=-1, keepdims=True, initial=0.0), EPS)
    dots = jnp.einsum("md,d->m", keys, query, precision=jax.lax.Precision.HIGHEST)
    norms = jnp.linalg.norm(keys, axis=-1) * jnp.linalg.norm(query)
    return dots / jnp.maximum(norms, EPS)


def select_segments(
    query: jax.Array,
    keys: jax.Array,
    k: int,
    valid: jax.Array | None = None,
    most_recent: jax.Array | int | None = None,
) -> TopK:
    """The k cached segments to condition on: `[k]` rows of `keys [M, D]` (rows oldest first).

    Slot 0 is the most recent segment (`most_recent`, default the last valid row) whatever its
    similarity: it is the previous segment, which gets its own RoPE range. Slots 1..k-1 are the
    other valid rows by decreasing cosine similarity to `query [D]`, equal similarities more recent
    first. With fewer than k valid rows the trailing slots are empty (`valid` False); with no valid
    row (or an invalid `most_recent`) slot 0 is empty too. `scores` holds each selected row's cosine
    similarity.
    """
    if k < 1:
        raise ValueError(f"select_segments needs k >= 1, got {k}")
    check_embeddings(query, keys)
    if valid is not None and jnp.shape(valid) != jnp.shape(keys)[:1]:
        raise ValueError(f"select_segments valid must be [M] = {jnp.shape(keys)[:1]}, got {jnp.shape(valid)}")
    return _select_segments(query, keys, k, valid, most_recent)


@partial(jax.jit, static_argnames="k")
def _select_segments(query, keys, k, valid, most_recent) -> TopK:
    count = keys.shape[0]
    if count == 0:
        return TopK(jnp.full(k, -1, jnp.int32), jnp.full(k, -jnp.inf, jnp.float32), jnp.zeros(k, bool))
    valid = jnp.ones(count, bool) if valid is None else jnp.asarray(valid, bool)
    rows = jnp.arange(count)
    recent = jnp.max(jnp.where(valid, rows, -1)) if most_recent is None else jnp.asarray(most_recent, jnp.int32)
    safe = jnp.clip(recent, 0, count - 1)
    has_recent = (recent >= 0) & (recent < count) & valid[safe]
    similarity = _cosine_similarity(query, keys)
    head = TopK(
        jnp.where(has_recent, recent, -1).astype(jnp.int32)[None],
        jnp.where(has_recent, similarity[safe], -jnp.inf)[None],
        has_recent[None],
    )
    if k == 1:
        return head
    rest = top_k(similarity, k - 1, valid & (rows != recent))
    return TopK(*(jnp.concatenate(pair) for pair in zip(head, rest, strict=True)))
