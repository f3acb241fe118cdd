"""Top-k selection over cached entries: masked, fixed output shape, deterministic on ties.

Entries are kept in creation order (row m was written before row m + 1), so "later row" means "more
recent output". Equal scores are ordered more recent first: after an edit the newest output is the
one the user has seen last and the one later turns must stay consistent with.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp


class TopK(NamedTuple):
    """The selected rows, best first. Shapes `[k]`.

    Attributes:
      indices: int32 row of each selected entry; -1 in the slots left empty (`valid` False).
      scores: the score of each selected entry (-inf in empty slots).
      valid: False in the trailing slots when fewer than k candidates exist.
    """

    indices: jax.Array
    scores: jax.Array
    valid: jax.Array

    def rows(self) -> list[int]:
        """The selected rows as Python ints, best first, empty slots dropped."""
        return [int(i) for i, v in zip(self.indices.tolist(), self.valid.tolist(), strict=True) if v]


@partial(jax.jit, static_argnames="k")
def top_k(scores: jax.Array, k: int, candidates: jax.Array | None = None) -> TopK:
    """The `k` highest `scores [M]` among `candidates [M]` (bool, default all), ties to the later row.

    Fewer than `k` candidates (including `M < k`) leave the trailing slots empty (`valid` False,
    index -1), so the output shape is always `[k]`.
    """
    if k < 1:
        raise ValueError(f"top_k needs k >= 1, got {k}")
    count = scores.shape[-1]
    if count == 0:
        return TopK(jnp.full(k, -1, jnp.int32), jnp.full(k, -jnp.inf, scores.dtype), jnp.zeros(k, bool))
    candidates = jnp.ones(scores.shape, bool) if candidates is None else candidates
    masked = jnp.where(candidates, scores, -jnp.inf)
    # lax.top_k puts the lower index first among equal values; reversing the rows makes that the later row.
    values, reversed_rows = jax.lax.top_k(masked[::-1], min(k, count))
    rows = (count - 1 - reversed_rows).astype(jnp.int32)
    valid = candidates[rows]
    missing = k - rows.shape[0]
    rows = jnp.pad(jnp.where(valid, rows, -1), (0, missing), constant_values=-1)
    values = jnp.pad(jnp.where(valid, values, -jnp.inf), (0, missing), constant_values=-jnp.inf)
    return TopK(rows, values, jnp.pad(valid, (0, missing)))
