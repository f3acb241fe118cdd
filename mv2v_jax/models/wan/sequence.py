"""The DiT's input contract: one packed token sequence, and the state its blocks carry.

Whatever enters the DiT (a target video, a source video frame-concatenated to it, memory videos
tokenized at coarser patches) arrives as one `TokenSequence`. The target stream always comes first,
so its tokens are `tokens[:, :F*H*W]` on the grid `target_grid`, and only those reach the output
head. Building a sequence from videos is `memory.streams.pack_streams`; `TokenSequence.of_video` is
the plain backbone's sequence, one embedded video and nothing else.
"""

from __future__ import annotations

from typing import Any, Protocol

import einops
import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class TokenSequence:
    """Packed, embedded tokens.

    Attributes:
      tokens: `[B, N, D]` embedded tokens, target first.
      positions: `[B, N, 3]` float (t, h, w) RoPE positions in base-token-grid units.
      segment_ids: `[B, N]` int32; 0 marks padding (an empty memory slot), never attended to.
      features: per-token side inputs `[B, N, ...]` read by block adapters (e.g. `"camera"`: `[B, N, 12]`).
      target_grid: `(F, H, W)` token grid of the target stream (static).
      layout: the packer's static description of where each stream sits (opaque to the DiT; hooks
        that need it, such as token merging, read it).
    """

    tokens: jax.Array
    positions: jax.Array
    segment_ids: jax.Array
    features: dict[str, jax.Array]
    target_grid: tuple[int, int, int] = struct.field(pytree_node=False)
    layout: Any = struct.field(pytree_node=False, default=None)

    @property
    def num_target(self) -> int:
        f, h, w = self.target_grid
        return f * h * w

    @classmethod
    def of_video(cls, embedded: jax.Array) -> TokenSequence:
        """The sequence of one embedded video `[B, F, H, W, D]` (a patch embedding's output): its
        tokens in (f, h, w) order at their grid positions, all valid, no features."""
        b, f, h, w, _ = embedded.shape
        grid = jnp.stack(jnp.meshgrid(*(jnp.arange(n, dtype=jnp.float32) for n in (f, h, w)), indexing="ij"), -1)
        return cls(
            tokens=einops.rearrange(embedded, "b f h w d -> b (f h w) d"),
            positions=jnp.broadcast_to(grid.reshape(1, f * h * w, 3), (b, f * h * w, 3)),
            segment_ids=jnp.ones((b, f * h * w), jnp.int32),
            features={},
            target_grid=(f, h, w),
        )


@struct.dataclass
class BlockState:
    """What flows from block to block, and what a between-block hook may rewrite.

    A hook that changes the number of tokens (merging) must change every per-token field alike:
    `x`, `positions` with `rope_cos`/`rope_sin`, `segment_ids`, per-token `modulation` and `features`. It must leave the
    target tokens (the first `num_target`) where they are.

    Attributes:
      x: `[B, N, D]` float32 residual stream.
      positions: `[B, N, 3]` RoPE positions (a hook that moves tokens recomputes `rope_cos`/`rope_sin`).
      rope_cos, rope_sin: `[B, N, head_dim // 2]`.
      segment_ids: `[B, N]` int32.
      modulation: `[B, 6, D]`, or `[B, N, 6, D]` with per-token timesteps; float32.
      features: per-token side inputs, as in `TokenSequence`.
      num_target: number of target tokens at the front (static).
      layout: as in `TokenSequence` (static).
    """

    x: jax.Array
    positions: jax.Array
    rope_cos: jax.Array
    rope_sin: jax.Array
    segment_ids: jax.Array
    modulation: jax.Array
    features: dict[str, jax.Array]
    num_target: int = struct.field(pytree_node=False)
    layout: Any = struct.field(pytree_node=False, default=None)


class BlockAdapter(Protocol):
    """Per-block additions inside self-attention (e.g. ReCamMaster's camera encoder and projector).

    An adapter is an `nnx.Module` whose parameters are stacked along a leading layer axis, like the
    blocks, and is scanned together with them; `layer(i)`'s view is what one block sees.
    """

    def modulated_input(self, h: jax.Array, state: BlockState) -> jax.Array:
        """Called on the modulated self-attention input `h` `[B, N, D]` (compute dtype)."""
        ...

    def attention_output(self, y: jax.Array, state: BlockState) -> jax.Array:
        """Called on the self-attention output `y` `[B, N, D]` before the gated residual add."""
        ...


class BlockHook(Protocol):
    """Runs between blocks at a chosen index (e.g. adaptive token merging before blocks 10 and 20).

    Receives the state entering block `index` and that block (its parameters sliced from the stack,
    so the hook can use its projections), and returns the state the block will see.
    """

    def __call__(self, state: BlockState, block: Any, index: int) -> BlockState: ...
