"""Adaptive token merging: the memory frames that the target attends to least are merged inside the DiT.

Responsiveness of memory frame t (paper): `R_t = max_q softmax_t(q . K_t / sqrt(d))`, with `K_t` the
spatial mean key of frame t and q ranging over the target's queries. It is computed from mean keys
(a `[queries x frames]` product), never from the attention matrix. Our choices where the paper is
silent: q and k are the merge block's own self-attention projections of its modulated input, after
the q/k RMSNorm and before RoPE (averaging rotated keys would cancel their phases); the softmax runs
over all valid memory frames per head, and heads are averaged after the max.

At each merge block (paper: 10 and 20 of 30), within each group of not-yet-merged memory frames
sharing a tokenizer, the `fraction` least responsive frames are merged: their `h x w` token grid is
area-averaged to `h' x w'` (`h' w' ~ keep_ratio * h w`) and refined by a learnable depthwise-separable
convolution C_theta whose residual branch starts at zero, so an untrained merger is plain averaging
(merging beats discarding). Empty memory slots (segment 0) count as least responsive. Positions,
segment ids, per-token modulation and features of merged tokens are area-averaged the same way (the
RoPE position of a merged token is the area-weighted mean of the positions it covers). Every count is static, so one
compiled program serves any memory content.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping

import einops
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mv2v_jax.config import require
from mv2v_jax.memory.streams import StreamSlice
from mv2v_jax.models.layers import DTYPES, param
from mv2v_jax.models.wan.dit import WanBlock, WanDiTConfig, dense
from mv2v_jax.models.wan.rope import Rope3D
from mv2v_jax.models.wan.sequence import BlockState
from mv2v_jax.parallel.mesh import constrain


@dataclasses.dataclass(frozen=True)
class MergeConfig:
    """Attributes:
    blocks: merge before these blocks of a 30-block model (paper: 10 and 20); scaled for other depths.
    fraction: share of the unmerged memory frames of each tokenizer group merged at each block (paper: 50%).
    keep_ratio: r, the share of its tokens a merged frame keeps (paper: trained with r in [0.3, 0.7];
      0.5, the middle, at inference).
    kernel: spatial size of C_theta's depthwise convolution.
    """

    blocks: tuple[int, ...] = (10, 20)
    fraction: float = 0.5
    keep_ratio: float = 0.5
    kernel: int = 3

    def __post_init__(self):
        require(all(b >= 0 for b in self.blocks), "blocks", self.blocks, "block indices must be >= 0")
        require(0 <= self.fraction <= 1, "fraction", self.fraction, "the share of memory frames merged is in [0, 1]")
        require(0 < self.keep_ratio <= 1, "keep_ratio", self.keep_ratio, "a merged frame keeps a share in (0, 1]")
        require(self.kernel >= 1, "kernel", self.kernel, "the convolution's size must be >= 1")

    def block_indices(self, num_layers: int) -> tuple[int, ...]:
        """The merge blocks for a model of `num_layers` blocks (`blocks` are given for 30)."""
        return tuple(sorted({min(num_layers - 1, max(1, round(b * num_layers / 30))) for b in self.blocks}))


# Named schedules (blocks given for 30 blocks). "paper": merge half of the memory frames at r = 0.5 before
# blocks 10 and 20. "early" (ours): also before block 1, three quarters of the frames at r = 0.3: the
# mildest schedule of BENCHMARKS.md's "Memory cost" grid that saves 30% of a turn-5 forward at
# ReCamMaster's shapes and keeps a full memory within 1.5x of turn 1; merging that early ranks frames
# by less settled responsiveness (the paper's Table 1), which is its price in consistency.
MERGE_SCHEDULES = {
    "paper": MergeConfig(blocks=(10, 20), fraction=0.5, keep_ratio=0.5),
    "early": MergeConfig(blocks=(1, 10, 20), fraction=0.75, keep_ratio=0.3),
}


def merged_grid(height: int, width: int, keep_ratio: float) -> tuple[int, int]:
    """Token grid of a merged frame: each side scaled by sqrt(keep_ratio), at least 1."""
    scale = math.sqrt(keep_ratio)
    return max(1, round(height * scale)), max(1, round(width * scale))


def area_weights(n_in: int, n_out: int) -> np.ndarray:
    """`[n_out, n_in]` averaging weights of `n_out` equal bins over `n_in` cells (fractional overlaps)."""
    edges = np.linspace(0.0, n_in, n_out + 1)
    cells = np.arange(n_in)
    overlap = np.clip(np.minimum(edges[1:, None], cells[None] + 1) - np.maximum(edges[:-1, None], cells[None]), 0, None)
    return (overlap / overlap.sum(1, keepdims=True)).astype(np.float32)


def pool_frames(frames: jax.Array, out_hw: tuple[int, int]) -> jax.Array:
    """Area-averages `[B, K, h, w, ...]` to `[B, K, h', w', ...]`."""
    h, w = frames.shape[2:4]
    weights_h, weights_w = area_weights(h, out_hw[0]), area_weights(w, out_hw[1])
    pooled = jnp.tensordot(jnp.asarray(weights_h), frames.astype(jnp.float32), axes=[[1], [2]])  # H b k w ...
    pooled = jnp.tensordot(jnp.asarray(weights_w), pooled, axes=[[1], [3]])  # W H b k ...
    return jnp.moveaxis(pooled, (0, 1), (3, 2)).astype(frames.dtype)


def responsiveness(queries: jax.Array, frame_keys: jax.Array, valid: jax.Array) -> jax.Array:
    """`R_t = mean_heads max_q softmax_t(q . K_t / sqrt(d))`.

    Args:
      queries: `[B, Nq, H, d]` target queries.
      frame_keys: `[B, F, H, d]` mean key of each memory frame.
      valid: `[B, F]` bool; invalid frames get no probability and responsiveness -inf.
    Returns:
      `[B, F]` float32.
    """
    d = queries.shape[-1]
    scores = jnp.einsum("bqhd,bfhd->bhqf", queries.astype(jnp.float32), frame_keys.astype(jnp.float32)) / math.sqrt(d)
    scores = jnp.where(valid[:, None, None, :], scores, -jnp.inf)
    probs = jax.nn.softmax(scores, axis=-1, where=valid[:, None, None, :])
    r = probs.max(axis=2).mean(axis=1)
    return jnp.where(valid, r, -jnp.inf)


def centred_delta(key: jax.Array, shape: tuple[int, int, int], dtype) -> jax.Array:
    """A `[k, k, C]` depthwise kernel that is the identity: 1 at the centre tap, 0 elsewhere (no randomness)."""
    k = shape[0]
    return jnp.zeros(shape, dtype).at[k // 2, k // 2].set(1)


class TokenMerger(nnx.Module):
    """C_theta: area pooling then a residual depthwise-separable convolution (zero residual at init)."""

    def __init__(self, config: WanDiTConfig, merge: MergeConfig, rngs: nnx.Rngs):
        dim, k = config.dim, merge.kernel
        # The depthwise kernel starts as the identity, so the pointwise layer gets gradients.
        self.depthwise = param(rngs, centred_delta, (k, k, dim), (None, None, "embed"), DTYPES[config.param_dtype])
        self.pointwise = dense(dim, dim, ("mlp", "embed"), config, rngs, nnx.initializers.zeros_init())

    def __call__(self, frames: jax.Array, out_grid: tuple[int, int]) -> jax.Array:
        """`[B, K, h, w, D]` -> `[B, K, h', w', D]` float32."""
        pooled = pool_frames(frames, out_grid).astype(jnp.float32)
        b, k = pooled.shape[:2]
        flat = einops.rearrange(pooled, "b k h w d -> (b k) h w d")
        kernel = self.depthwise[...].astype(jnp.float32)[:, :, None, :]
        spatial = jax.lax.conv_general_dilated(
            flat, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=flat.shape[-1]
        )
        refined = self.pointwise(spatial.astype(self.pointwise.dtype)).astype(jnp.float32)
        return pooled + einops.rearrange(refined, "(b k) h w d -> b k h w d", b=b, k=k)


class TokenMergers(nnx.Module):
    """One `TokenMerger` per merge block, looked up by block index: `mergers[10]`, `10 in mergers`.

    Each is held under the attribute `block{i}`, so its parameters are `mergers/block{i}/...` in every
    weights directory; `blocks` lists the indices (static), so nothing is parsed back from a name.
    """

    def __init__(self, blocks: Iterable[int], config: WanDiTConfig, merge: MergeConfig, rngs: nnx.Rngs):
        self.blocks: tuple[int, ...] = ()
        for index in blocks:
            self[index] = TokenMerger(config, merge, rngs)

    def __getitem__(self, index: int) -> TokenMerger:
        if index not in self.blocks:
            raise KeyError(f"no merger before block {index}; mergers are at blocks {self.blocks}")
        return getattr(self, f"block{index}")

    def __setitem__(self, index: int, merger: TokenMerger) -> None:
        setattr(self, f"block{index}", merger)
        self.blocks = tuple(sorted({*self.blocks, int(index)}))

    def __contains__(self, index: int) -> bool:
        return index in self.blocks


@dataclasses.dataclass(frozen=True)
class GroupMerge:
    """One tokenizer group's merge at one block (static): merge `count` of its `frames` frames of
    `grid` tokens into `out_grid` tokens each."""

    slices: tuple[StreamSlice, ...]
    count: int
    grid: tuple[int, int]
    out_grid: tuple[int, int]

    @property
    def frames(self) -> int:
        return sum(s.grid[0] for s in self.slices)


def plan_merge(layout: tuple[StreamSlice, ...], fraction: float, keep_ratio: float):
    """The static part of a merge: which groups merge how many frames, and the layout afterwards.

    Returns `(groups, new_layout)`; slices outside the merged groups keep their order, each group
    follows as its kept frames then its merged frames.
    """
    by_key: dict[tuple, list[StreamSlice]] = {}
    for s in layout:
        if s.role == "memory" and not s.merged:
            by_key.setdefault((s.patch, s.grid[1:]), []).append(s)
    groups = []
    for (_, grid), slices in by_key.items():
        count = int(fraction * sum(s.grid[0] for s in slices))
        if count:
            groups.append(GroupMerge(tuple(slices), count, grid, merged_grid(*grid, keep_ratio)))
    merging = {s for g in groups for s in g.slices}
    new_layout, start = [], 0
    for s in layout:
        if s not in merging:
            new_layout.append(dataclasses.replace(s, start=start))
            start += s.stop - s.start
    for g in groups:
        patch = g.slices[0].patch
        new_layout.append(StreamSlice("memory", start, (g.frames - g.count, *g.grid), patch))
        start += (g.frames - g.count) * g.grid[0] * g.grid[1]
        new_layout.append(StreamSlice("memory", start, (g.count, *g.out_grid), patch, merged=True))
        start += g.count * g.out_grid[0] * g.out_grid[1]
    return groups, tuple(new_layout)


def _frames(array: jax.Array, slices: tuple[StreamSlice, ...]) -> jax.Array:
    """Tokens of same-grid slices as frames: `[B, sum F, h, w, ...]`."""
    parts = []
    for s in slices:
        f, h, w = s.grid
        parts.append(array[:, s.start : s.stop].reshape(array.shape[0], f, h, w, *array.shape[2:]))
    return jnp.concatenate(parts, axis=1)


def _take(frames: jax.Array, index: jax.Array) -> jax.Array:
    """`frames[b, index[b]]` for `[B, F, ...]` and `[B, K]`."""
    return jnp.take_along_axis(frames, index.reshape(index.shape + (1,) * (frames.ndim - 2)), axis=1)


def _flat(frames: jax.Array) -> jax.Array:
    return frames.reshape(frames.shape[0], -1, *frames.shape[4:])


def merge_memory(
    state: BlockState, block: WanBlock, merger: TokenMerger, rope: Rope3D, fraction: float, keep_ratio: float
) -> BlockState:
    """Merges the least responsive unmerged memory frames of each tokenizer group (see module doc)."""
    groups, layout = plan_merge(state.layout, fraction, keep_ratio)
    if not groups:
        return state

    # Responsiveness of every memory frame of every group, from mean keys: the block's own q and k
    # (normalised, before RoPE) of the target tokens and of every group's frames.
    h = block.attention_input(state)
    frames = [_frames(h, g.slices) for g in groups]  # [B, F, h, w, D] per group
    tokens = jnp.concatenate([_flat(f) for f in frames], axis=1)
    queries, keys = block.self_attn.queries_keys(h[:, : state.num_target], tokens)
    frame_keys, start = [], 0
    for f in frames:
        b, count, rows, cols = f.shape[:4]
        per_frame = keys[:, start : start + count * rows * cols].reshape(b, count, rows * cols, *keys.shape[2:])
        frame_keys.append(per_frame.mean(axis=2))  # [B, F, heads, head_dim]
        start += count * rows * cols
    frame_valid = [_frames(state.segment_ids, g.slices)[:, :, 0, 0] != 0 for g in groups]
    r_all = responsiveness(queries, jnp.concatenate(frame_keys, 1), jnp.concatenate(frame_valid, 1))

    fields = {"x": state.x, "positions": state.positions, "segment_ids": state.segment_ids}
    if state.modulation.ndim == 4:
        fields["modulation"] = state.modulation
    fields |= {f"feature:{name}": value for name, value in state.features.items()}
    # Merging moves tokens across the whole sequence: gather each field over a split sequence explicitly
    # (the batch stays split). Left to XLA, the gather became a masked all-reduce per field (0.9 GiB sent
    # per chip for the 1.3B's turn), and with guidance's batch over data libtpu's layout pass failed on it.
    fields = {name: constrain(value, ("act_batch",)) for name, value in fields.items()}
    merging = np.zeros(state.x.shape[1], bool)
    for g in groups:
        for s in g.slices:
            merging[s.start : s.stop] = True
    rest = np.flatnonzero(~merging)
    new = {name: [value[:, rest]] for name, value in fields.items()}

    offset = 0
    for g in groups:
        r = r_all[:, offset : offset + g.frames]
        offset += g.frames
        merge_idx = jnp.sort(jax.lax.top_k(-r, g.count)[1], axis=1)
        keep_idx = jnp.sort(jax.lax.top_k(r, g.frames - g.count)[1], axis=1)
        for name, value in fields.items():
            frames = _frames(value, g.slices)
            kept, merged = _take(frames, keep_idx), _take(frames, merge_idx)
            if name == "x":
                merged = merger(merged, g.out_grid)
            elif name == "segment_ids":  # one id per frame
                merged = jnp.broadcast_to(merged[:, :, :1, :1], (*merged.shape[:2], *g.out_grid))
            else:
                merged = pool_frames(merged, g.out_grid)
            new[name] += [_flat(kept), _flat(merged)]

    new = {name: jnp.concatenate(parts, axis=1) for name, parts in new.items()}
    rope_cos, rope_sin = rope.cos_sin(new["positions"])
    return state.replace(
        x=new["x"],
        positions=new["positions"],
        rope_cos=rope_cos,
        rope_sin=rope_sin,
        segment_ids=new["segment_ids"],
        modulation=new.get("modulation", state.modulation),
        features={name.removeprefix("feature:"): v for name, v in new.items() if name.startswith("feature:")},
        layout=layout,
    )


def merge_hooks(
    mergers: Mapping[int, TokenMerger], fraction: float, rope: Rope3D, keep_ratio: float
) -> dict[int, Callable[[BlockState, WanBlock, int], BlockState]]:
    """`{block index: hook}` for `WanDiT.__call__` from `{block index: merger}`."""
    return {
        index: (lambda state, block, _, m=merger: merge_memory(state, block, m, rope, fraction, keep_ratio))
        for index, merger in mergers.items()
    }
