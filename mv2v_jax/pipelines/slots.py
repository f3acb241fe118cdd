"""Retrieved memory -> the memory slots one forward pass sees (what both pipelines feed the model).

A turn feeds exactly the memories it retrieved: `MemoryBudget.slots_for(n)` slots for n of them, so
turn 1 runs the base model's own token count and turn k compiles (once per session, then from JAX's
persistent compilation cache) a program for its k - 1 memories. `buckets` trades compilations for
padding: with buckets (0, 2, 6), three programs serve every turn, and a turn with 3 memories pads to 6
(the padded slots are empty, masked by segment id, and counted as padding in the turn record).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np

from mv2v_jax.geometry import relative_poses
from mv2v_jax.memory.builders import MemoryBatch
from mv2v_jax.retrieval.bank import MemoryBank, MemoryEntry


@dataclasses.dataclass(frozen=True)
class MemoryBudget:
    """Attributes:
    slots: k, the most memory videos one turn feeds (paper: up to 6).
    min_score: a retrieved memory is fed only if its relevance (VideoFOV score, or DINOv2 cosine
      similarity for long editing) is above this (ours: 0, "overlaps at all"); the previous segment of
      a long edit is always fed (paper).
    buckets: slot counts to compile programs for, ascending (None: every count 0..slots, no padding).
      `slots` is always the last: buckets at or above it are dropped, so lowering `slots` alone works.
    """

    slots: int = 6
    min_score: float = 0.0
    buckets: tuple[int, ...] | None = None

    def __post_init__(self):
        if self.slots < 0:
            raise ValueError(f"retrieval.slots={self.slots} must be >= 0")
        if self.buckets is not None:
            buckets = tuple(self.buckets)
            if not buckets or list(buckets) != sorted(set(buckets)) or buckets[0] < 0:
                raise ValueError(f"retrieval.buckets={list(buckets)} must be ascending slot counts >= 0")
            object.__setattr__(self, "buckets", (*(b for b in buckets if b < self.slots), self.slots))

    def slots_for(self, filled: int) -> int:
        """How many slots a turn with `filled` memories runs: `filled`, or its bucket."""
        if not 0 <= filled <= self.slots:
            raise ValueError(f"{filled} memories do not fit a budget of {self.slots} slots")
        return filled if self.buckets is None else next(b for b in self.buckets if b >= filled)


def load_slots(
    bank: MemoryBank | None,
    entry_ids: Sequence[str],
    budget: MemoryBudget,
    slot_shape: tuple[int, ...],
    reference_w2c: np.ndarray | None = None,
) -> tuple[MemoryBatch, list[MemoryEntry]]:
    """The chosen entries of `bank`, most relevant first, as a batch-1 `MemoryBatch` of
    `budget.slots_for(len(entry_ids))` slots (any beyond the entries empty), and the loaded entries.

    Args:
      slot_shape: `(F, H, W, C)` of a slot's latents (the task's `memory_factor` x the codec's channels).
      reference_w2c: `[3, 4]`; when given, each slot carries its entry's cameras relative to it
        (geometry.relative_poses), the camera input of tasks with camera layers.
    """
    slots = budget.slots_for(len(entry_ids))
    latents = np.zeros((1, slots, *slot_shape), np.float32)
    valid, turns = np.zeros((1, slots), bool), np.zeros((1, slots), np.int32)
    cameras = None if reference_w2c is None else np.zeros((1, slots, slot_shape[0], 12), np.float32)
    entries = [bank.load(entry_id) for entry_id in entry_ids] if entry_ids else []
    for slot, entry in enumerate(entries):
        if entry.latents.shape != tuple(slot_shape):
            raise ValueError(
                f"memory entry {entry.entry_id} of {bank.path} has latents {entry.latents.shape}, the turn needs "
                f"{tuple(slot_shape)}"
            )
        latents[0, slot], valid[0, slot], turns[0, slot] = entry.latents, True, entry.turn
        if cameras is not None:
            cameras[0, slot] = relative_poses(entry.cameras, reference_w2c)
    memory = MemoryBatch(
        jnp.asarray(latents), jnp.asarray(valid), jnp.asarray(turns), None if cameras is None else jnp.asarray(cameras)
    )
    return memory, entries
