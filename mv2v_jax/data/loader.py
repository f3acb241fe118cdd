"""Training batches with grain: shard per process, shuffle, sample memory, batch, checkpoint the iterator.

The source is any random-access sequence of scene records (a TFDS array_record data source, or a list
in tests). Each process reads its shard's slice of the records (`records[shard::shards]`: processes
that hold the same rows of the batch are one shard, parallel.mesh.process_batch_rows), shuffles it with
the config's seed and repeats it; every element is turned into a training example by
the task's example sampler (`Task.example`, data.memory_sampling) with an RNG that grain derives from
(seed, element index), so an example is the same whether or not the run was interrupted. The
iterator's state (a few integers) is saved with every checkpoint.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import grain
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from mv2v_jax.data.memory_sampling import MemorySampling
from mv2v_jax.memory.builders import Conditions, MemoryBatch

Example = Callable[[Mapping[str, Any], np.random.Generator, MemorySampling], dict[str, np.ndarray]]
# Example keys of the memory slots -> MemoryBatch fields; every key other than these and target / inputs /
# context is a task extra (Conditions.extras).
MEMORY_FIELDS = {
    "memory_latents": "latents",
    "memory_valid": "valid",
    "memory_turns": "turns",
    "memory_camera": "camera",
}


@struct.dataclass
class TrainBatch:
    """Attributes:
    target: `[B, T, H, W, C]` clean target latents.
    context: `[B, L, text_dim]` text embeddings.
    conditions: the user input, K memory slots and the task's extras (memory.builders.Conditions).
    """

    target: jax.Array
    context: jax.Array
    conditions: Conditions


def decode_text(record: Mapping[str, Any]) -> dict[str, Any]:
    """A stored record as the example samplers take it: TFDS text features arrive as bytes, the rest as arrays."""
    return {k: v.decode() if isinstance(v, bytes) else v for k, v in record.items()}


class _Decode(grain.transforms.Map):
    def map(self, record: Mapping[str, Any]) -> dict[str, Any]:
        return decode_text(record)


@dataclasses.dataclass
class _Sample(grain.transforms.RandomMap):
    example: Example
    sampling: MemorySampling

    def random_map(self, record: Mapping[str, Any], rng: np.random.Generator) -> dict[str, np.ndarray]:
        return self.example(record, rng, self.sampling)


def training_dataset(
    records: Sequence[Mapping[str, Any]],
    example: Example,
    sampling: MemorySampling,
    batch_size: int,
    seed: int,
    shard: int = 0,
    shards: int = 1,
) -> grain.IterDataset:
    """Endless per-process batches of `batch_size` training examples (numpy dicts, batch-major) drawn by
    `example` (a task's example sampler) from `records[shard::shards]`."""
    if len(records) == 0:
        raise ValueError("the training source has no records")
    dataset = grain.MapDataset.source(records)[shard::shards]
    dataset = dataset.seed(seed).shuffle().repeat().map(_Decode()).random_map(_Sample(example, sampling))
    return dataset.batch(batch_size, drop_remainder=True).to_iter_dataset()


def to_train_batch(batch: Mapping[str, np.ndarray], sharding: Callable[[np.ndarray], Any] | None = None) -> TrainBatch:
    """A numpy batch -> `TrainBatch` of device arrays (placed by `sharding(array)` when given); stored
    float16 latents become float32, the parameters' precision (the model casts to its compute dtype).

    With a sharding, `batch` is this process's rows of the global batch (parallel.mesh.process_batch_rows,
    ascending), and the arrays are global: each process's devices get their rows from its `batch`.
    """

    def put(array: np.ndarray) -> jax.Array:
        array = np.asarray(array, np.float32) if np.issubdtype(array.dtype, np.floating) else np.asarray(array)
        return jax.make_array_from_process_local_data(sharding(array), array) if sharding else jnp.asarray(array)

    memory = MemoryBatch(**{field: put(batch[key]) for key, field in MEMORY_FIELDS.items() if key in batch})
    extras = {k: put(v) for k, v in batch.items() if k not in {"target", "inputs", "context", *MEMORY_FIELDS}}
    return TrainBatch(
        target=put(batch["target"]),
        context=put(batch["context"]),
        conditions=Conditions(put(batch["inputs"]), memory, extras),
    )
