"""Dynamic tokenization: coarser patches for less relevant memory videos.

The user-input video keeps the DiT's own 1x2x2 patch embedding. Retrieved memory videos get learnable
1x4x4 (the top-ranked ones) and 1x8x8 (the rest) embedders, 4x and 16x fewer tokens per video
(paper: top-3 at 1x4x4, the rest at 1x8x8).

Initialisation ("tile and average"): a coarse kernel is the base 1x2x2 kernel tiled over the patches
it covers and divided by their number, so an untrained coarse token is exactly the mean of the fine
tokens it covers (bias included). We prefer this to resampling the kernel (FlexiViT-style PI-resize):
the mean of fine tokens is a token the pretrained DiT already understands, whereas a resampled
kernel's output has no such meaning. RoPE places each coarse token at the centre of the fine tokens it
covers (memory.streams.stream_positions), so both live on one spatial grid.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
from flax import nnx

from mv2v_jax.models.wan.dit import PatchEmbed, WanDiTConfig

Patch = tuple[int, int, int]


@dataclasses.dataclass(frozen=True)
class TokenizerConfig:
    """Which patch a memory video gets by its retrieval rank (0 = most relevant).

    Attributes:
      ranked: patch for ranks 0, 1, ...; ranks past the end get `rest`. Paper: top-3 at 1x4x4.
      rest: patch for every lower-ranked memory video. Paper: 1x8x8.
    """

    ranked: tuple[Patch, ...] = ((1, 4, 4),) * 3
    rest: Patch = (1, 8, 8)

    @property
    def patches(self) -> tuple[Patch, ...]:
        """The coarse patches that need embedders, in a fixed order."""
        return tuple(sorted(set(self.ranked) | {self.rest}))

    def patch_for_rank(self, rank: int) -> Patch:
        return self.ranked[rank] if rank < len(self.ranked) else self.rest

    def label_for_rank(self, rank: int) -> str:
        """The patch of `rank` as turn records write it, e.g. "1x4x4"."""
        return "x".join(map(str, self.patch_for_rank(rank)))


def tile_average_kernel(kernel: jax.Array, base: Patch, patch: Patch) -> jax.Array:
    """`[bt, bh, bw, C, D]` base kernel -> `[pt, ph, pw, C, D]` whose token is the mean of the base tokens
    covering the same pixels (`patch` must be a whole multiple of `base` on every axis)."""
    reps = []
    for b, p in zip(base, patch, strict=True):
        if p % b:
            raise ValueError(f"patch {patch} is not a whole multiple of the base patch {base}")
        reps.append(p // b)
    count = reps[0] * reps[1] * reps[2]
    return jnp.tile(kernel, (*reps, 1, 1)) / count


def patch_name(patch: Patch) -> str:
    """`(1, 4, 4)` -> `"1x4x4"`, the embedder's name in the parameter tree."""
    return "x".join(map(str, patch))


class DynamicTokenizers(nnx.Module):
    """The coarse memory embedders (`embedders/1x4x4`, `embedders/1x8x8`), initialised from `base`."""

    def __init__(self, base: PatchEmbed, dit_config: WanDiTConfig, config: TokenizerConfig, rngs: nnx.Rngs):
        self.config = config
        embedders = {}
        for patch in config.patches:
            if patch == base.patch:  # a memory at the DiT's own patch uses its own embedding, as the input does
                continue
            embedder = PatchEmbed(patch, dit_config.in_channels, dit_config, rngs, pad=True)
            embedder.kernel[...] = tile_average_kernel(base.kernel[...], base.patch, patch)
            embedder.bias[...] = base.bias[...]
            embedders[patch_name(patch)] = embedder
        self.embedders = nnx.Dict(embedders)

    def mapping(self, base: PatchEmbed) -> Mapping[Patch, Callable[[jax.Array], jax.Array]]:
        """Patch -> embedder, the base patch included (what `pack_streams` takes)."""
        return {base.patch: base} | {e.patch: e for e in self.embedders.values()}
