"""Streams: every video that enters the DiT, and packing them into one token sequence.

A `Stream` is a latent video plus how it is tokenized and placed: its role, its patch size (which
tokenizer), the temporal RoPE index of each latent frame, an optional per-frame camera, and whether
it is present at all (an empty memory slot keeps its shape but is masked out). Frame concatenation
(ReCamMaster), hierarchical RoPE and dynamic tokenization are all choices made here, so the DiT sees
the same `TokenSequence` whatever the conditioning scheme.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence

import einops
import jax
import jax.numpy as jnp
import numpy as np

from mv2v_jax.models.wan.sequence import TokenSequence

ROLES = ("target", "input", "memory")
BASE_PATCH = (1, 2, 2)


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["latents", "frame_times", "camera", "valid", "rope_keep"],
    meta_fields=["role", "patch"],
)
@dataclasses.dataclass(frozen=True)
class Stream:
    """One latent video on its way into the DiT.

    Attributes:
      latents: `[B, F, H, W, C]` VAE latents, channels last.
      role: "target" (denoised; exactly one, packed first), "input" or "memory".
      patch: tokenizer patch `(pt, ph, pw)`; `(1, 2, 2)` is the DiT's own.
      frame_times: `[F]` or `[B, F]` temporal RoPE index of each latent frame; default `0..F-1`.
      camera: `[B, F, 12]` per-frame flattened 3x4 extrinsics, or None.
      valid: `[B]` bool; False makes the whole stream padding (segment 0). Default all valid.
      rope_keep: `[B]` bool; False gives the example's tokens position 0 on every axis, i.e. no
        rotation (RoPE dropout, memory.hierarchical_rope). Default all kept.
    """

    latents: jax.Array
    role: str = "target"
    patch: tuple[int, int, int] = BASE_PATCH
    frame_times: jax.Array | None = None
    camera: jax.Array | None = None
    valid: jax.Array | None = None
    rope_keep: jax.Array | None = None

    def __post_init__(self):
        if self.role not in ROLES:
            raise ValueError(f"stream role {self.role!r} is not one of {ROLES}")

    @property
    def grid(self) -> tuple[int, int, int]:
        """Token grid `(F, H, W)` after patching (a partial patch at the end of an axis counts: coarse
        tokenizers pad)."""
        _, f, h, w, _ = self.latents.shape
        pt, ph, pw = self.patch
        return -(-f // pt), -(-h // ph), -(-w // pw)


@dataclasses.dataclass(frozen=True)
class StreamSlice:
    """Where a stream's tokens sit in the packed sequence (static): `grid` (F, H, W) tokens from `start`.

    `merged` marks memory frames already merged inside the DiT (memory.merging); they are not merged again.
    """

    role: str
    start: int
    grid: tuple[int, int, int]
    patch: tuple[int, int, int]
    merged: bool = False

    @property
    def stop(self) -> int:
        return self.start + int(np.prod(self.grid))


def stream_positions(stream: Stream, base_patch: tuple[int, int, int] = BASE_PATCH) -> jax.Array:
    """`[B, F*H*W, 3]` RoPE positions of a stream's tokens on the base token grid.

    A coarse token covering `k x k` base tokens sits at the centre of the ones it covers, so every
    stream shares one spatial coordinate frame whatever its patch size.
    """
    b = stream.latents.shape[0]
    f, h, w = stream.grid
    pt, ph, pw = stream.patch
    scale_h, scale_w = ph / base_patch[1], pw / base_patch[2]
    rows = np.arange(h) * scale_h + (scale_h - 1) / 2
    cols = np.arange(w) * scale_w + (scale_w - 1) / 2
    if stream.frame_times is None:
        times = jnp.broadcast_to(jnp.arange(f, dtype=jnp.float32), (b, f))
    else:
        times = jnp.broadcast_to(jnp.asarray(stream.frame_times, jnp.float32), (b, f * pt))[:, ::pt]
    t = jnp.broadcast_to(times[:, :, None, None], (b, f, h, w))
    hh = jnp.broadcast_to(jnp.asarray(rows, jnp.float32)[None, None, :, None], (b, f, h, w))
    ww = jnp.broadcast_to(jnp.asarray(cols, jnp.float32)[None, None, None, :], (b, f, h, w))
    positions = einops.rearrange(jnp.stack([t, hh, ww], -1), "b f h w c -> b (f h w) c")
    if stream.rope_keep is not None:
        positions = jnp.where(jnp.asarray(stream.rope_keep)[:, None, None], positions, 0.0)
    return positions


def stream_layout(streams: Sequence[Stream]) -> tuple[StreamSlice, ...]:
    """Where each stream's tokens will sit in the packed sequence: a function of shapes and patches only."""
    layout, start = [], 0
    for stream in streams:
        layout.append(StreamSlice(stream.role, start, stream.grid, stream.patch))
        start += int(np.prod(stream.grid))
    return tuple(layout)


def pack_streams(
    streams: Sequence[Stream],
    tokenizers: Mapping[tuple[int, int, int], Callable[[jax.Array], jax.Array]],
) -> TokenSequence:
    """Tokenizes and concatenates streams into the DiT's `TokenSequence`.

    Args:
      streams: the target first, then inputs and memory, in the order their tokens should sit.
      tokenizers: patch size -> embedder `[B, F, H, W, C] -> [B, F', H', W', D]`
        (`(1, 2, 2)` is `WanDiT.patch_embedding`).
    Returns:
      The packed sequence; `layout` is a tuple of `StreamSlice`, one per stream.
    """
    if not streams or streams[0].role != "target" or sum(s.role == "target" for s in streams) != 1:
        raise ValueError("pack_streams needs exactly one target stream, first")
    with_camera = [s.camera is not None for s in streams]
    if any(with_camera) and not all(with_camera):
        raise ValueError("either every stream has a camera or none does")
    batch = streams[0].latents.shape[0]
    tokens, positions, segments, cameras = [], [], [], []
    for stream in streams:
        if stream.latents.ndim != 5:
            raise ValueError(f"{stream.role} stream latents must be [B, F, H, W, C], got shape {stream.latents.shape}")
        if stream.patch not in tokenizers:
            raise ValueError(f"no tokenizer for patch {stream.patch}; have {sorted(tokenizers)}")
        if stream.latents.shape[0] != batch:
            raise ValueError(f"stream batch {stream.latents.shape[0]} differs from the target's {batch}")
        embedded = tokenizers[stream.patch](stream.latents)
        tokens.append(einops.rearrange(embedded, "b f h w d -> b (f h w) d"))
        n = tokens[-1].shape[1]
        positions.append(stream_positions(stream))
        valid = jnp.ones((batch,), bool) if stream.valid is None else jnp.asarray(stream.valid, bool)
        segments.append(jnp.broadcast_to(valid.astype(jnp.int32)[:, None], (batch, n)))
        if stream.camera is not None:
            # One camera per latent frame, repeated over that frame's tokens.
            _, h, w = stream.grid
            per_frame = stream.camera[:, :: stream.patch[0]]
            cameras.append(einops.repeat(per_frame, "b f c -> b (f h w) c", h=h, w=w))
    features = {"camera": jnp.concatenate(cameras, 1)} if cameras else {}
    return TokenSequence(
        tokens=jnp.concatenate(tokens, 1),
        positions=jnp.concatenate(positions, 1),
        segment_ids=jnp.concatenate(segments, 1),
        features=features,
        target_grid=streams[0].grid,
        layout=stream_layout(streams),
    )
