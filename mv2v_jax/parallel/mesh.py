"""Device mesh, logical axis rules and sharding helpers.

Parameters carry logical axis names (`"embed"`, `"heads"`, `"mlp"`, `"layers"`, ...); activations
are constrained with logical names too. Rules in the config map them onto the mesh axes
`(data, fsdp, sequence, tensor)` (maxdiffusion's scheme plus a sequence axis), so one model file runs
replicated on one CPU, FSDP on 8 fake CPU devices, or FSDP x sequence-parallel x tensor-parallel on a
pod. The sequence axis splits the tokens of each example (one turn's forward is 65k-97k tokens at
81x480x832 and inference has a batch of 1-2, so batch axes alone cannot use more than 2 chips);
attention gathers what it needs across it (models.wan.attention).

`make_mesh` lays the devices out with `jax.experimental.mesh_utils`: on a TPU by its torus (each axis
on physical links), on CPU and GPU in id order. Across TPU slices (or processes, where the devices
are one slice) the config's `mesh_dcn` names the axes the slow data-centre network splits; each slice
then holds a contiguous block of those axes. Which rows of a batch a process loads follows from the
mesh (`process_batch_rows`): the rows its devices hold, so processes that split the same examples'
tokens over the sequence axis load the same examples.

The rules live in `flax.core.spmd`, which NNX itself reads: in flax 0.12 NNX's logical-axis API is
`nnx.get_partition_spec` for variables (used here) and `nnx.logical_axis_rules`, a re-export of
`flax.core.spmd.logical_axis_rules`, with no NNX function that maps activation names to a
`PartitionSpec` (`spmd.get_pspec`) or reads the current rules (`spmd.get_logical_axis_rules`).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import math
from collections.abc import Callable, Iterator, Mapping, Sequence

import jax
import numpy as np
from flax import nnx
from flax.core import spmd
from jax.experimental import mesh_utils

MESH_AXES = ("data", "fsdp", "sequence", "tensor")

# (logical name, mesh axes). Weights split over fsdp and sequence (ZeRO-3 style: the devices that split
# a sequence hold different tokens of the same examples, so they can hold different weight shards too,
# as MaxText shards parameters over its context axis) and over tensor along heads / FFN width; "layers"
# (the stacked-block axis) is never split. Activations ("act_*") split their batch over data and fsdp,
# their tokens over sequence, and their heads over tensor.
DEFAULT_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    ("act_batch", ("data", "fsdp")),
    ("act_length", "sequence"),
    ("act_embed", None),
    ("act_heads", "tensor"),
    ("embed", ("fsdp", "sequence")),
    ("heads", "tensor"),
    ("mlp", "tensor"),
    ("layers", None),
    ("in", None),
    ("text", None),
    ("freq", None),
    ("modulation", None),
    ("patch_out", None),
)


# Inference holds the weights whole on every chip of a sampling mesh (split over tensor only): a turn's
# forward has one or two examples, so the fsdp / sequence split of training would gather every weight on
# every denoising step for memory a sampling chip does not need. Activations split as in training.
SERVING_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = tuple(
    (name, None if name == "embed" else axes) for name, axes in DEFAULT_RULES
)


def parse_mesh(text: str) -> dict[str, int]:
    """`"data=2,sequence=4"` -> `{"data": 2, "sequence": 4}`."""
    mesh = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, size = part.partition("=")
        if not size.lstrip("-").isdigit():
            raise ValueError(f"mesh {text!r}: expected axis=size pairs such as data=2,sequence=4")
        mesh[name.strip()] = int(size)
    return mesh


def default_sampling_mesh(chips: int, guided: bool) -> dict[str, int]:
    """Guidance's batch of 2 over data (no communication), the rest of the chips over the sequence.

    Measured on the compiled v5p programs of the 1.3B's turn (BENCHMARKS.md "Scale"): on 4 chips
    data=2 x sequence=2 holds 8.1 GiB per chip and sends 8.9 GiB per step, where sequence=4 holds 10.3
    and sends 14.6, for the same roofline bound within 2%."""
    data = 2 if guided and chips % 2 == 0 else 1
    return {"data": data, "sequence": chips // data}


def sampling_mesh(spec: str, guided: bool, devices: Sequence[jax.Device] | None = None) -> jax.sharding.Mesh:
    """The mesh a turn's denoiser runs on: `spec` "auto" (`default_sampling_mesh` over every device of
    `devices`, default this process's) or axis sizes such as "data=2,sequence=4" over the first of them
    (one axis may be -1: the rest)."""
    devices = list(devices if devices is not None else jax.local_devices())
    shape = default_sampling_mesh(len(devices), guided) if spec == "auto" else parse_mesh(spec)
    if -1 not in shape.values():
        needed = math.prod(shape.values())
        if needed > len(devices):
            raise ValueError(f"mesh {spec!r} needs {needed} devices, this process has {len(devices)}")
        devices = devices[:needed]
    return make_mesh(shape, devices)


def check_mesh_shape(shape: Mapping[str, int], rest: bool = True) -> None:
    """Refuses axes other than `MESH_AXES`, sizes below 1 other than -1 (with `rest`: the rest of the
    devices), and more than one -1."""
    unknown = set(shape) - set(MESH_AXES)
    if unknown:
        raise ValueError(f"unknown mesh axes {sorted(unknown)}; expected a subset of {MESH_AXES}")
    if any(int(size) < 1 and not (rest and int(size) == -1) for size in shape.values()):
        allowed = ">= 1 or -1 (the rest of the devices)" if rest else ">= 1"
        raise ValueError(f"mesh axis sizes are {allowed}, got {dict(shape)}")
    if list(shape.values()).count(-1) > 1:
        raise ValueError(f"at most one mesh axis may be -1, got {dict(shape)}")


def _granules(devices: Sequence[jax.Device]) -> tuple[list[list[jax.Device]], bool]:
    """`devices` grouped by what the slow (DCN) network joins, in order, and whether the groups are
    processes: TPU slices where the devices span several, else processes (CPU and GPU devices have no
    `slice_index`; one slice's hosts are the only coarser unit it has)."""
    slices = {getattr(d, "slice_index", 0) for d in devices}
    by_process = len(slices) == 1
    key = (lambda d: d.process_index) if by_process else (lambda d: d.slice_index)
    groups: dict[int, list[jax.Device]] = {}
    for device in devices:
        groups.setdefault(key(device), []).append(device)
    return [groups[k] for k in sorted(groups)], by_process


def _ici_grid(sizes: Sequence[int], devices: Sequence[jax.Device]) -> np.ndarray:
    """`devices` laid out as `sizes` by the topology (a TPU's torus; on CPU and GPU, id order)."""
    try:
        # Splitting a physical axis over two mesh axes is allowed: a shape the torus cannot match
        # axis for axis still gets a layout (the whole-axis one is tried first).
        return mesh_utils.create_device_mesh(sizes, devices, allow_split_physical_axes=True)
    except AssertionError:  # a subset of a TPU slice that is no cuboid of chips has no topology to follow
        return np.asarray(devices).reshape(sizes)


def make_mesh(
    shape: Mapping[str, int],
    devices: Sequence[jax.Device] | None = None,
    dcn_shape: Mapping[str, int] | None = None,
) -> jax.sharding.Mesh:
    """A mesh over `MESH_AXES` laid out by the devices' topology; one axis of `shape` may be -1 (the
    rest of the devices).

    `dcn_shape` (e.g. `{"data": 2}`) splits axes across slices (processes where the devices are one
    slice): `shape` is then each slice's mesh, an axis's size is its `shape` size times its
    `dcn_shape` size, and each slice holds a contiguous block of every axis `dcn_shape` splits, so only
    those axes' collectives cross the slow network."""
    devices = list(devices if devices is not None else jax.devices())
    dcn_shape = dict(dcn_shape or {})
    check_mesh_shape(shape)
    check_mesh_shape(dcn_shape, rest=False)
    dcn_sizes = [int(dcn_shape.get(axis, 1)) for axis in MESH_AXES]
    granules, by_process = _granules(devices) if math.prod(dcn_sizes) > 1 else ([devices], False)
    unit = "processes" if by_process else "slices"
    if len(granules) != math.prod(dcn_sizes):
        needed, span = math.prod(dcn_sizes), len(granules)
        raise ValueError(f"DCN shape {dcn_shape} needs {needed} {unit}, the {len(devices)} devices span {span}")
    if len({len(g) for g in granules}) > 1:
        raise ValueError(f"DCN shape {dcn_shape}: the {len(granules)} {unit} hold different numbers of the devices")
    per_granule = len(granules[0])
    sizes = [int(shape.get(axis, 1)) for axis in MESH_AXES]
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if per_granule % known:
            raise ValueError(f"{per_granule} devices cannot fill mesh {dict(shape)}")
        sizes[sizes.index(-1)] = per_granule // known
    if math.prod(sizes) != per_granule:
        raise ValueError(
            f"mesh {dict(zip(MESH_AXES, sizes, strict=True))} needs {math.prod(sizes)} devices, have {per_granule}"
            + (f" in each of {len(granules)} {unit}" if len(granules) > 1 else "")
        )
    if len(granules) == 1:
        return jax.sharding.Mesh(_ici_grid(sizes, devices), MESH_AXES)
    grid = mesh_utils.create_hybrid_device_mesh(
        sizes, dcn_sizes, devices, process_is_granule=by_process, allow_split_physical_axes=True
    )
    return jax.sharding.Mesh(grid, MESH_AXES)


def _rules(rules) -> tuple:
    return tuple((name, tuple(axes) if isinstance(axes, list) else axes) for name, axes in rules)


@contextlib.contextmanager
def use_mesh(mesh: jax.sharding.Mesh, rules=DEFAULT_RULES) -> Iterator[None]:
    """Makes `mesh` current and `rules` the logical-to-mesh mapping while tracing and running."""
    with jax.set_mesh(mesh), spmd.logical_axis_rules(_rules(rules)):
        yield


def _without_unit_axes(spec: jax.sharding.PartitionSpec, mesh) -> jax.sharding.PartitionSpec:
    """`spec` without the mesh axes of size 1 (they change nothing; specs read as the mesh is used)."""

    def keep(entry):
        if entry is None:
            return None
        axes = tuple(a for a in ((entry,) if isinstance(entry, str) else entry) if mesh.shape[a] > 1)
        return None if not axes else axes[0] if len(axes) == 1 else axes

    return jax.sharding.PartitionSpec(*(keep(entry) for entry in spec))


def current_mesh() -> jax.sharding.AbstractMesh | None:
    """The mesh of the enclosing `use_mesh` (None outside one, or without logical rules)."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or not spmd.get_logical_axis_rules():
        return None
    return mesh


def logical_to_spec(names: Sequence[str | None]) -> jax.sharding.PartitionSpec:
    """Mesh `PartitionSpec` of logical axis names under the current rules (and mesh, if any)."""
    spec = spmd.get_pspec(tuple(names))
    mesh = jax.sharding.get_abstract_mesh()
    return spec if mesh.empty else _without_unit_axes(spec, mesh)


def axis_size(name: str) -> int:
    """How many ways the logical axis `name` is split on the current mesh (1 outside `use_mesh`)."""
    mesh = current_mesh()
    if mesh is None:
        return 1
    entry = logical_to_spec((name,))[0]
    axes = () if entry is None else (entry,) if isinstance(entry, str) else entry
    return math.prod(mesh.shape[a] for a in axes)


def constrain(x: jax.Array, names: Sequence[str | None]) -> jax.Array:
    """`with_sharding_constraint` by logical names; a no-op outside `use_mesh`."""
    mesh = current_mesh()
    if mesh is None:
        return x
    return jax.lax.with_sharding_constraint(x, jax.sharding.NamedSharding(mesh, logical_to_spec(names)))


def state_shardings(state: nnx.State, mesh: jax.sharding.Mesh, rules=DEFAULT_RULES) -> nnx.State:
    """`NamedSharding` for every variable of `state`, from its logical `out_sharding` names."""
    with spmd.logical_axis_rules(_rules(rules)):
        specs = nnx.get_partition_spec(state)
    return jax.tree.map(lambda spec: jax.sharding.NamedSharding(mesh, _without_unit_axes(spec, mesh)), specs)


def sharded_init(
    factory: Callable[[], nnx.Module], mesh: jax.sharding.Mesh, rules=DEFAULT_RULES
) -> tuple[nnx.GraphDef, Callable[[], nnx.State]]:
    """The graph of `factory()`'s module and its initialisation as a jitted function of no arguments whose
    outputs carry every variable's sharding (from its logical names): run, each device makes only its
    own shard, and no process ever holds the whole model (a 14B one included)."""
    graphdef, abstract_state = nnx.split(nnx.eval_shape(factory))
    return graphdef, jax.jit(lambda: nnx.state(factory()), out_shardings=state_shardings(abstract_state, mesh, rules))


def init_on_mesh(factory: Callable[[], nnx.Module], mesh: jax.sharding.Mesh, rules=DEFAULT_RULES) -> nnx.Module:
    """`factory()`'s module made on `mesh` by `sharded_init`: the values are `factory()`'s."""
    graphdef, make = sharded_init(factory, mesh, rules)
    return nnx.merge(graphdef, make())


def batch_sharding(mesh: jax.sharding.Mesh, ndim: int, rules=DEFAULT_RULES) -> jax.sharding.NamedSharding:
    """Sharding of a batch-major array: axis 0 over the batch axes, the rest replicated."""
    with spmd.logical_axis_rules(_rules(rules)):
        spec = spmd.get_pspec(("act_batch",) + (None,) * (ndim - 1))
    return jax.sharding.NamedSharding(mesh, _without_unit_axes(spec, mesh))


@dataclasses.dataclass(frozen=True)
class BatchRows:
    """The rows of the global batch one process loads.

    rows: the rows its devices hold, ascending: its local batch, in the order
        `jax.make_array_from_process_local_data` reads it.
    shard, shards: its part of the record split (`records[shard::shards]`). Processes whose devices hold
        the same rows (they split those examples' tokens or heads, not the batch) are one shard and load
        the same records in the same order; `shards` is how many different row sets there are.
    """

    rows: tuple[int, ...]
    shard: int
    shards: int


def process_batch_rows(
    mesh: jax.sharding.Mesh, batch_size: int, rules=DEFAULT_RULES, process: int | None = None
) -> BatchRows:
    """The `BatchRows` of `process` (default this one) for a global batch of `batch_size` laid out by
    `batch_sharding`: the union of the rows its devices hold."""
    sharding = batch_sharding(mesh, 1, rules)
    entry = sharding.spec[0] if sharding.spec else None
    ways = math.prod(mesh.shape[a] for a in ((entry,) if isinstance(entry, str) else entry or ()))
    if batch_size % ways:
        raise ValueError(f"a batch of {batch_size} does not split into the mesh's {ways} batch shards")
    held: dict[int, set[int]] = collections.defaultdict(set)
    for device, (index,) in sharding.devices_indices_map((batch_size,)).items():
        held[device.process_index].update(range(batch_size)[index])
    row_sets = sorted({tuple(sorted(rows)) for rows in held.values()})
    if sum(map(len, row_sets)) != batch_size or len({len(rows) for rows in row_sets}) > 1:
        raise ValueError(f"the processes' rows of a batch of {batch_size} overlap or differ in size: {row_sets}")
    rows = tuple(sorted(held[jax.process_index() if process is None else process]))
    return BatchRows(rows, row_sets.index(rows), len(row_sets))


def to_host(array: jax.Array) -> np.ndarray:
    """The whole of `array` as NumPy on this host; an array spread over several processes is gathered
    from all of them (every process must call this)."""
    if array.is_fully_addressable or array.is_fully_replicated:
        return np.asarray(jax.device_get(array))
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(array, tiled=True))
