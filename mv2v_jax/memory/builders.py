"""Stream builders: a turn's videos -> the streams the DiT packs, for both base models.

- ReCamMaster (novel view synthesis): the source video is frame-concatenated after the target
  (two streams, RoPE frames 0..T-1 and T..2T-1) and both carry the target trajectory's camera, as
  ReCamMaster tiles it; memory videos carry their own cameras.
- LucyEdit (long video editing): the condition (source) latents are channel-concatenated to the noisy
  target, `cat([noisy, condition], channels)` (noisy first); memory videos are likewise
  `cat([edited output, its source], channels)` so they fill the same 96 input channels and tell the
  model which source became which output (our choice; the paper does not say how memory is
  channel-matched to LucyEdit's input).

With no memory (None, or zero slots) both reproduce their base model's input exactly. Memory comes as
a `MemoryBatch` of K slots in retrieval-rank order (slot k gets the tokenizer of rank k); at inference
K is the number of memories a turn feeds (pipelines.slots), in training a fixed budget whose empty
slots are padding (segment 0, never attended to), so each step variant compiles once. What a turn is
conditioned on, besides the text, travels as one `Conditions` pytree (the user input, the memory,
task-specific arrays), which is what a task's stream builder (mv2v_jax.tasks) reads.

Memory order on the RoPE timeline: newest memory nearest the input band (`reverse=True`), in
training and at inference alike (hierarchical_rope explains why one order serves both tasks).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from mv2v_jax.memory.hierarchical_rope import memory_times, segment_times
from mv2v_jax.memory.streams import Stream
from mv2v_jax.memory.tokenizers import TokenizerConfig

PAPER_TOKENIZERS = TokenizerConfig()


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class MemoryBatch:
    """K memory slots, most relevant first.

    Attributes:
      latents: `[B, K, F, H, W, C]` (LucyEdit: output and source channel-concatenated).
      valid: `[B, K]` bool; False marks an empty slot.
      turns: `[B, K]` int, the turn (or segment index) each memory was made in: its chronological place.
      camera: `[B, K, F, 12]` camera inputs relative to the target's first frame (memory.camera), or None.
    """

    latents: jax.Array
    valid: jax.Array
    turns: jax.Array
    camera: jax.Array | None = None

    @property
    def slots(self) -> int:
        return self.latents.shape[1]

    @classmethod
    def empty(cls, batch: int, slots: int, frames: int, height: int, width: int, channels: int, camera: bool):
        """All slots empty: turn 1, before anything is remembered."""
        return cls(
            latents=jnp.zeros((batch, slots, frames, height, width, channels)),
            valid=jnp.zeros((batch, slots), bool),
            turns=jnp.zeros((batch, slots), jnp.int32),
            camera=jnp.zeros((batch, slots, frames, 12)) if camera else None,
        )


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Conditions:
    """Everything a turn's target is generated from except the text, batch-major.

    Attributes:
      inputs: `[B, T, H, W, C]` the user input's latents (NVS: the source video; long edit: the source
        segment).
      memory: the retrieved memory slots.
      extras: task-specific per-example arrays, by name (NVS: `"camera"` `[B, T, 12]`, the target
        trajectory's camera input).
    """

    inputs: jax.Array
    memory: MemoryBatch
    extras: dict[str, jax.Array] = dataclasses.field(default_factory=dict)


def memory_streams(
    memory: MemoryBatch,
    tokenizers: TokenizerConfig,
    target_frames: int,
    first: float,
    reverse: bool = True,
    layout: str = "band",
    rank_offset: int = 0,
) -> list[Stream]:
    """One stream per slot, tokenized by rank, placed on the band from `first`."""
    times = memory_times(memory.turns, memory.valid, memory.latents.shape[2], target_frames, first, reverse, layout)
    return [
        Stream(
            memory.latents[:, k],
            role="memory",
            patch=tokenizers.patch_for_rank(k + rank_offset),
            frame_times=times[:, k],
            camera=None if memory.camera is None else memory.camera[:, k],
            valid=memory.valid[:, k],
        )
        for k in range(memory.slots)
    ]


def recammaster_streams(
    noisy_target: jax.Array,
    source: jax.Array,
    target_camera: jax.Array,
    memory: MemoryBatch | None = None,
    *,
    tokenizers: TokenizerConfig = PAPER_TOKENIZERS,
    reverse: bool = True,
    layout: str = "band",
    source_rope_keep: jax.Array | None = None,
) -> list[Stream]:
    """Novel view synthesis: target (frames 0..T-1), source (T..2T-1), memory (band from 2T).

    Args:
      noisy_target: `[B, T, H, W, C]`; source: `[B, Ts, H, W, C]` clean source latents.
      target_camera: `[B, T, 12]` target trajectory relative to the source's first camera (memory.camera).
      memory: the retrieved memory, or None (plain ReCamMaster).
      reverse: newest memory nearest 2T (the default, in training and inference); False: oldest first.
      source_rope_keep: `[B]` RoPE dropout mask for the source (training), or None.
    """
    t = noisy_target.shape[1]
    streams = [
        Stream(noisy_target, role="target", camera=target_camera),
        Stream(
            source,
            role="input",
            frame_times=segment_times(t, source.shape[1], t),
            camera=target_camera,
            rope_keep=source_rope_keep,
        ),
    ]
    if memory is not None:
        streams += memory_streams(memory, tokenizers, t, 2 * t, reverse, layout)
    return streams


def lucy_edit_streams(
    noisy_target: jax.Array,
    condition: jax.Array,
    memory: MemoryBatch | None = None,
    *,
    tokenizers: TokenizerConfig = PAPER_TOKENIZERS,
    reverse: bool = True,
    layout: str = "band",
) -> list[Stream]:
    """Long video editing: `cat([noisy, condition])` (frames 0..T-1); memory slot 0 is the previous
    segment (always retrieved) at T..2T-1, the other slots older segments on the band from 2T.

    Args:
      noisy_target: `[B, T, H, W, 48]`; condition: `[B, T, H, W, 48]` the source segment's latents.
      memory: slots `[B, K, F, H, W, 96]` (edited output and source channel-concatenated), slot 0 the
        previous segment, or None (plain LucyEdit).
    """
    t = noisy_target.shape[1]
    streams = [Stream(jnp.concatenate([noisy_target, condition], axis=-1), role="target")]
    if memory is None or memory.slots == 0:
        return streams
    previous = memory.latents[:, 0]
    streams.append(
        Stream(
            previous,
            role="memory",
            patch=tokenizers.patch_for_rank(0),
            frame_times=segment_times(t, previous.shape[1], t),
            valid=memory.valid[:, 0],
        )
    )
    if memory.slots > 1:
        older = jax.tree.map(lambda a: a[:, 1:], memory)
        streams += memory_streams(older, tokenizers, t, 2 * t, reverse, layout, rank_offset=1)
    return streams
