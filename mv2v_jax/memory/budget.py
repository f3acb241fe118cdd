"""Token and FLOP accounting for a turn: how many tokens each block sees, and what that costs.

Analytic FLOPs (2 per multiply-add) of one Wan block over N tokens with text length L, width D and
FFN width F: self-attention projections 8 N D^2, scores and weighted sum 4 N^2 D, cross-attention
4 N D^2 + 4 L D^2 + 4 N L D, FFN 4 N D F. Merging changes N at its blocks (memory.merging.plan_merge
gives the static layout), and its responsiveness costs 2 (N_target + N_merged) D^2 for the q/k
projections. Norms, modulation, RoPE and the head are below 1% and left out.

Memory tokens are counted as what they are: those of filled memory slots are memory, those of empty
(padded) slots padding; both are computed, so both count in the FLOPs.
"""

from __future__ import annotations

import dataclasses

from mv2v_jax.memory.merging import MergeConfig, plan_merge
from mv2v_jax.memory.streams import StreamSlice
from mv2v_jax.models.wan.dit import WanDiTConfig


def block_flops(tokens: int, text_len: int, config: WanDiTConfig) -> int:
    d, f, n, t = config.dim, config.ffn_dim, tokens, text_len
    self_attention = 8 * n * d * d + 4 * n * n * d
    cross_attention = 4 * n * d * d + 4 * t * d * d + 4 * n * t * d
    return self_attention + cross_attention + 4 * n * d * f


@dataclasses.dataclass(frozen=True)
class TurnCost:
    """Tokens entering each block and the analytic FLOPs of one forward pass."""

    tokens_per_block: tuple[int, ...]
    target_tokens: int
    memory_tokens: int  # tokens of filled memory slots entering the first block
    padding_tokens: int  # tokens of empty memory slots entering the first block
    flops: int
    first_block_flops: int  # what a step that reuses the other blocks' residual computes (pipelines.step_cache)


def turn_cost(
    layout: tuple[StreamSlice, ...],
    config: WanDiTConfig,
    text_len: int,
    merge: MergeConfig | None = None,
    keep_ratio: float | None = None,
    filled_memory: int | None = None,
) -> TurnCost:
    """Cost of one DiT forward over a packed `layout` (pack_streams' `TokenSequence.layout`).

    With `merge` and `keep_ratio`, merging runs before `merge.block_indices(num_layers)`. The memory
    slots appear in the layout in slot order, filled ones first: `filled_memory` of them hold memories
    (None: all), the rest are padding, computed like real ones (static shapes).
    """
    merge_blocks = set(merge.block_indices(config.num_layers)) if merge and keep_ratio is not None else set()
    target = layout[0].stop - layout[0].start
    memory = [s.stop - s.start for s in layout if s.role == "memory"]
    filled = len(memory) if filled_memory is None else filled_memory
    tokens, flops, per_block, first_block_flops = layout[-1].stop, 0, [], 0
    for block in range(config.num_layers):
        if block in merge_blocks:
            groups, layout = plan_merge(layout, merge.fraction, keep_ratio)
            if groups:  # responsiveness projects the target's queries and the merged frames' keys
                merged_tokens = sum(g.frames * g.grid[0] * g.grid[1] for g in groups)
                flops += 2 * (target + merged_tokens) * config.dim * config.dim
            tokens = layout[-1].stop
        per_block.append(tokens)
        flops += block_flops(tokens, text_len, config)
        first_block_flops = first_block_flops or flops
    return TurnCost(tuple(per_block), target, sum(memory[:filled]), sum(memory[filled:]), flops, first_block_flops)
