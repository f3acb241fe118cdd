"""Retrieved memory -> the DiT's fixed budget of K memory slots (what both pipelines feed the model)."""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np

from mv2v_jax.geometry import relative_poses
from mv2v_jax.memory.builders import MemoryBatch
from mv2v_jax.retrieval.bank import MemoryBank, MemoryEntry


def load_slots(
    bank: MemoryBank | None,
    entry_ids: Sequence[str],
    slots: int,
    slot_shape: tuple[int, ...],
    reference_w2c: np.ndarray | None = None,
) -> tuple[MemoryBatch, list[MemoryEntry]]:
    """The chosen entries of `bank`, most relevant first, as a batch-1 `MemoryBatch` of `slots` slots
    (the rest empty), and the loaded entries.

    Args:
      slot_shape: `(F, H, W, C)` of a slot's latents (the task's `memory_factor` x the codec's channels).
      reference_w2c: `[3, 4]`; when given, each slot carries its entry's cameras relative to it
        (geometry.relative_poses), the camera input of tasks with camera layers.
    """
    if len(entry_ids) > slots:
        raise ValueError(f"{len(entry_ids)} memory entries for {slots} slots")
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
