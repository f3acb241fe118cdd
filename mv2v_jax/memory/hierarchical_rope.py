"""Hierarchical RoPE: where each stream sits on the temporal RoPE axis.

The paper's table (T = latent frames of the target):

| task | target | user input | memory |
|---|---|---|---|
| novel view synthesis | 0 .. T-1 | T .. 2T-1 | 2T .. 3T-1 |
| long video editing | 0 .. T-1 (source channel-concatenated) | previous segment T .. 2T-1 | older segments 2T .. 3T-1 |

The memory range is one T-wide band however many memory videos there are: the K memory slots are laid
end to end inside it, slot j covering `[2T + j T/K, 2T + (j+1) T/K)` with its frames evenly spaced
(fractional positions; RoPE takes them, rope.py). So K = 1 gives exactly 2T .. 3T-1, and the order of
the memory videos is visible to attention. The band layout is our reading of the paper's table (it
gives one range for all memory); `layout="consecutive"` gives each memory video a whole T-range of
its own instead.

Order. The paper trains with memory in chronological order and samples reverse-chronologically.
That suits its data: its long-edit training memory comes from *after* the clip (FramePack
extensions), so reversing at inference shows past segments the way training showed future ones.
Our training memory is what inference retrieves: for long editing the segments *before* the target
(the previous one always in slot 0), for novel view synthesis views of one scene in a random turn
order. So training and inference use one order, newest memory nearest the input band
(`reverse=True`): for long editing, training chronologically would show the model at inference the
mirror image of the timeline it learned; for novel view synthesis the random turns make both orders
the same distribution, so the paper's setting is kept in effect.

Training-time perturbations (paper: "RoPE dropout for user-input tokens" and "Gaussian noise on memory
tokens", values not given) are here too; their defaults live in configs and are justified there.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

LAYOUTS = ("band", "consecutive")


def segment_times(first: float, frames: int, width: float) -> jax.Array:
    """`[frames]` positions of one video spread over `[first, first + width)` (width T: one per frame)."""
    return first + jnp.arange(frames, dtype=jnp.float32) * (width / frames)


def chronological_rank(turns: jax.Array, valid: jax.Array) -> jax.Array:
    """`[B, K]` rank of each valid slot by turn, 0 = oldest (ties by slot); invalid slots rank last."""
    key = jnp.where(valid, turns, jnp.iinfo(jnp.int32).max)
    order = jnp.argsort(key, axis=1, stable=True)
    return jnp.argsort(order, axis=1, stable=True)


def memory_times(
    turns: jax.Array,
    valid: jax.Array,
    frames: int,
    target_frames: int,
    first: float,
    reverse: bool,
    layout: str = "band",
) -> jax.Array:
    """`[B, K, frames]` temporal positions of K memory slots.

    The valid memories are ordered by `turns` (newest first when `reverse`, oldest first otherwise)
    and laid end to end from `first`: in the band layout each gets
    T / count of `[first, first + T)`, in the consecutive layout a whole T each. Empty slots sit at
    `first` (they are masked out anyway).
    """
    if layout not in LAYOUTS:
        raise ValueError(f"memory RoPE layout {layout!r} is not one of {LAYOUTS}")
    count = jnp.maximum(valid.sum(axis=1, keepdims=True), 1)
    rank = chronological_rank(turns, valid)
    place = (count - 1 - rank if reverse else rank).astype(jnp.float32)
    width = target_frames / count.astype(jnp.float32) if layout == "band" else jnp.full_like(place, target_frames)
    progress = jnp.arange(frames, dtype=jnp.float32) / frames
    times = first + (place[..., None] + progress) * width[..., None]
    return jnp.where(valid[..., None], times, first)


def rope_keep_mask(key: jax.Array, batch: int, rate: float) -> jax.Array:
    """RoPE dropout for the user-input stream: `[B]` bool, False (drop) with probability `rate`.

    A dropped example's input tokens get position 0 on every axis, the identity rotation (see
    `Stream.rope_keep`), so the model cannot rely on the positional alignment of input and target alone.
    """
    return jax.random.uniform(key, (batch,)) >= rate


def perturb_memory(latents: jax.Array, key: jax.Array, max_std: float) -> jax.Array:
    """Adds Gaussian noise of a per-example standard deviation drawn from U(0, max_std) to memory
    latents `[B, F, H, W, C]`, so the model learns to use imperfect (generated) memories."""
    k_std, k_noise = jax.random.split(key)
    std = jax.random.uniform(k_std, (latents.shape[0],) + (1,) * (latents.ndim - 1), maxval=max_std)
    return latents + std * jax.random.normal(k_noise, latents.shape, latents.dtype)
