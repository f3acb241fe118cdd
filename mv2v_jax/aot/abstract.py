"""Abstract, sharded arguments of a step (`jax.ShapeDtypeStruct`s carrying their `NamedSharding`):
the model's state, replicated scalars, batch-major arrays and a turn's `Conditions`, so a program is
lowered for a mesh of devices this host cannot run on."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from mv2v_jax.memory.builders import Conditions, MemoryBatch
from mv2v_jax.memory.model import MemoryConfig, MemoryDiT
from mv2v_jax.models.layers import in_compute_dtype
from mv2v_jax.parallel.mesh import batch_sharding, state_shardings


def abstract(tree: Any, shardings: Any) -> Any:
    """`tree`'s arrays as ShapeDtypeStructs with the matching leaves of `shardings`."""
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), tree, shardings)


def abstract_model(
    config: MemoryConfig, mesh: jax.sharding.Mesh, rules: Any, serving: bool = False
) -> tuple[nnx.GraphDef, nnx.State]:
    """The MemoryDiT's graph and its abstract state, each variable sharded by its logical names; `serving`:
    the weights held in their compute dtype, as sampling holds them (`models.layers.in_compute_dtype`)."""
    serve = in_compute_dtype if serving else lambda model: model
    graphdef, state = nnx.split(nnx.eval_shape(lambda: serve(MemoryDiT(config, rngs=nnx.Rngs(0)))))
    return graphdef, abstract(state, state_shardings(state, mesh, rules))


def replicated(mesh: jax.sharding.Mesh, value: Any) -> jax.ShapeDtypeStruct:
    spec = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    return jax.ShapeDtypeStruct(value.shape, value.dtype, sharding=spec)


def _mesh_size(mesh, entry) -> int:
    """Devices along a PartitionSpec entry (None, an axis name, or a tuple of them)."""
    axes = () if entry is None else (entry,) if isinstance(entry, str) else entry
    return math.prod(mesh.shape[a] for a in axes)


def batch_sds(mesh: jax.sharding.Mesh, rules: Any) -> Callable[..., jax.ShapeDtypeStruct]:
    """Abstract batch-major arrays, split over the batch axes when they divide the batch and on every
    device otherwise (a turn's batch of 1; guidance's batch of 2 splits over a data axis of 2)."""

    def sds(*shape, dtype=jnp.float32):
        sharding = batch_sharding(mesh, len(shape), rules)
        if sharding.spec and shape[0] % _mesh_size(mesh, sharding.spec[0]):
            sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
        return jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)

    return sds


def turn_conditions(
    task, batch: int, slots: int, latents: tuple[int, int, int, int], sds: Callable[..., Any]
) -> Conditions:
    """A turn's `Conditions` for `task`, its arrays made by `sds(*shape, dtype=...)`: the input video of
    `latents` `[F, H, W, C]`, `slots` memory slots of the task's channels, and the cameras a camera
    adapter reads (the target's per frame, and each memory video's)."""
    f, h, w, c = latents
    camera = "camera" in task.adapters
    memory = MemoryBatch(
        latents=sds(batch, slots, f, h, w, task.memory_factor * c),
        valid=sds(batch, slots, dtype=jnp.bool_),
        turns=sds(batch, slots, dtype=jnp.int32),
        camera=sds(batch, slots, f, 12) if camera else None,
    )
    return Conditions(sds(batch, f, h, w, c), memory, {"camera": sds(batch, f, 12)} if camera else {})
