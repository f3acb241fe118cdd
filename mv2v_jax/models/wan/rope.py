"""Wan's 3D rotary position embedding, driven by explicit per-token (t, h, w) positions.

Wan splits each head's `head_dim` channels into a temporal and two spatial parts
(`t = d - 4 (d // 6)`, `h = w = 2 (d // 6)`; 44/42/42 for d=128) and rotates interleaved
channel pairs `(x[2i], x[2i+1])` by `position * theta^(-2j / d_axis)`.

The reference builds its angle tables in float64 for integer grid positions. Positions here are
float32 and may be fractional (a coarse memory token sits at the centre of the fine patches it
covers), so an angle is split into the integer part, looked up in a float64-built table, and the
fractional part, rotated on top with the angle-addition formula. Integer positions therefore match
the reference bit for bit in float32, and fractional ones stay accurate to float32 rounding.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np


def axis_dims(head_dim: int) -> tuple[int, int, int]:
    """Channels of one head given to (t, h, w): `(d - 4 (d // 6), 2 (d // 6), 2 (d // 6))`."""
    hw = 2 * (head_dim // 6)
    t = head_dim - 2 * hw
    if head_dim % 2 or t % 2 or t <= 0:
        raise ValueError(f"head_dim={head_dim} cannot be split into even (t, h, w) RoPE parts")
    return t, hw, hw


@dataclasses.dataclass(frozen=True)
class Rope3D:
    """Angle tables for the three axes; `max_len` is the largest position + 1 (the reference's 1024)."""

    head_dim: int
    theta: float = 10000.0
    max_len: int = 1024

    def _freqs(self) -> list[np.ndarray]:
        return [1.0 / self.theta ** (np.arange(0, d, 2, dtype=np.float64) / d) for d in axis_dims(self.head_dim)]

    def cos_sin(self, positions: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Per-token rotation of every channel pair.

        Args:
          positions: `[B, N, 3]` float (t, h, w) in units of the base 1x2x2 token grid, `0 <= p < max_len`.
        Returns:
          `(cos, sin)`, each `[B, N, head_dim // 2]` float32, ordered [t pairs, h pairs, w pairs].
        """
        positions = positions.astype(jnp.float32)
        whole = jnp.clip(jnp.floor(positions), 0, self.max_len - 1)
        frac = positions - whole
        grid = np.arange(self.max_len, dtype=np.float64)
        cos_parts, sin_parts = [], []
        for axis, freqs in enumerate(self._freqs()):
            table = np.outer(grid, freqs)
            cos_table = jnp.asarray(np.cos(table), jnp.float32)
            sin_table = jnp.asarray(np.sin(table), jnp.float32)
            idx = whole[..., axis].astype(jnp.int32)
            cos_i, sin_i = cos_table[idx], sin_table[idx]
            delta = frac[..., axis, None] * jnp.asarray(freqs, jnp.float32)
            cos_d, sin_d = jnp.cos(delta), jnp.sin(delta)
            cos_parts.append(cos_i * cos_d - sin_i * sin_d)
            sin_parts.append(sin_i * cos_d + cos_i * sin_d)
        return jnp.concatenate(cos_parts, -1), jnp.concatenate(sin_parts, -1)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """Rotates interleaved channel pairs of `x` `[B, N, heads, head_dim]` by `cos`/`sin` `[B, N, head_dim // 2]`.

    The rotation runs in float32 whatever the compute dtype, as the reference does, and returns
    `x`'s dtype.
    """
    dtype = x.dtype
    pairs = x.astype(jnp.float32).reshape(*x.shape[:-1], -1, 2)
    x1, x2 = pairs[..., 0], pairs[..., 1]
    cos, sin = cos[:, :, None, :], sin[:, :, None, :]
    out = jnp.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)
    return out.reshape(x.shape).astype(dtype)


def grid_positions(frames: int, height: int, width: int, t0: float = 0.0) -> np.ndarray:
    """Positions of a `frames x height x width` token grid in (f, h, w) order, w fastest: `[F*H*W, 3]`."""
    f, h, w = np.meshgrid(
        np.arange(frames, dtype=np.float32) + t0,
        np.arange(height, dtype=np.float32),
        np.arange(width, dtype=np.float32),
        indexing="ij",
    )
    return np.stack([f, h, w], axis=-1).reshape(-1, 3)
