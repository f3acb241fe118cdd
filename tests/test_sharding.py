"""Multi-device: converted weights restore straight into a (data, fsdp, sequence, tensor) mesh of 8 fake CPU
devices, and the sharded forward equals the single-device one."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P
from torch_reference import tiny_wan_dit

from convert_weights.wan_dit import convert_dit
from mv2v_jax.models.wan.dit import load_dit
from mv2v_jax.parallel.mesh import BatchRows, batch_sharding, make_mesh, process_batch_rows, use_mesh

RUNTIME = dict(attention=dict(impl="chunked", block_q=32, block_kv=32))


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sharding")
    tiny_wan_dit("1.3b").save_pretrained(tmp / "src")
    return convert_dit(tmp / "src", tmp / "jax")


def forward(model, latents, t, context):
    return model.forward_video(latents, t, context)


def test_make_mesh_fills_and_validates():
    mesh = make_mesh({"data": 2, "fsdp": -1})
    assert dict(mesh.shape) == {"data": 2, "fsdp": 4, "sequence": 1, "tensor": 1}
    assert dict(make_mesh({"sequence": -1, "tensor": 2}).shape) == {"data": 1, "fsdp": 1, "sequence": 4, "tensor": 2}
    with pytest.raises(ValueError, match="needs 12 devices"):
        make_mesh({"data": 3, "fsdp": 4})
    with pytest.raises(ValueError, match="unknown mesh axes \\['model'\\]"):
        make_mesh({"model": 8})


@dataclasses.dataclass(frozen=True)
class StandIn:
    """A device of another process (or slice): one process cannot have devices of several, and
    `jax.sharding.Mesh` and the index maps read only these fields."""

    id: int
    process_index: int
    slice_index: int = 0
    platform: str = "cpu"
    device_kind: str = "cpu"


def owners(mesh, field="process_index") -> np.ndarray:
    return np.vectorize(lambda d: getattr(d, field))(mesh.devices)


def test_make_mesh_keeps_each_dcn_group_a_contiguous_block():
    devices = [StandIn(i, process_index=i // 2) for i in range(8)]  # 4 processes of 2 devices
    mesh = make_mesh({"data": 2}, devices, {"sequence": 4})
    assert dict(mesh.shape) == {"data": 2, "fsdp": 1, "sequence": 4, "tensor": 1}
    # The sequence axis crosses the 4 processes; each holds the whole (inner) data axis.
    np.testing.assert_array_equal(owners(mesh)[:, 0, :, 0], [[0, 1, 2, 3], [0, 1, 2, 3]])
    mesh = make_mesh({"fsdp": -1}, devices, {"data": 2, "sequence": 2})  # -1: the rest of each process's devices
    assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "sequence": 2, "tensor": 1}
    np.testing.assert_array_equal(owners(mesh)[:, :, :, 0], [[[0, 1], [0, 1]], [[2, 3], [2, 3]]])
    # Slices, where the devices span several, are the groups; processes within a slice are not.
    sliced = [StandIn(i, process_index=i // 2, slice_index=i // 4) for i in range(8)]
    mesh = make_mesh({"fsdp": 4}, sliced, {"data": 2})
    np.testing.assert_array_equal(owners(mesh, "slice_index")[:, :, 0, 0], [[0, 0, 0, 0], [1, 1, 1, 1]])
    # The fake CPU devices are all one process: the ICI layout is the id order, and there is no DCN group.
    assert [d.id for d in make_mesh({"data": 2, "tensor": 4}).devices.flat] == list(range(8))
    with pytest.raises(ValueError, match="needs 2 processes, the 8 devices span 1"):
        make_mesh({"data": -1}, dcn_shape={"data": 2})
    with pytest.raises(ValueError, match="needs 4 devices, have 2 in each of 4 processes"):
        make_mesh({"data": 4}, devices, {"sequence": 4})
    with pytest.raises(ValueError, match="sizes are >= 1, got"):
        make_mesh({"data": -1}, devices, {"sequence": -1})


@pytest.mark.parametrize(
    "ici, dcn, rows_by_process, shards",
    [
        # data across the processes: each loads its own rows, a shard of the records of its own
        ({"sequence": 2}, {"data": 4}, [(0, 1), (2, 3), (4, 5), (6, 7)], 4),
        # sequence across the processes: every process holds every example (different tokens of it)
        ({"data": 2}, {"sequence": 4}, [tuple(range(8))] * 4, 1),
        # both: processes 0 and 1 split the same examples' tokens, as do 2 and 3
        ({"fsdp": 2}, {"data": 2, "sequence": 2}, [(0, 1, 2, 3), (0, 1, 2, 3), (4, 5, 6, 7), (4, 5, 6, 7)], 2),
        # tensor inside each process, batch over data x fsdp across them
        ({"tensor": 2}, {"data": 2, "fsdp": 2}, [(0, 1), (2, 3), (4, 5), (6, 7)], 4),
    ],
)
def test_process_batch_rows_follow_the_mesh(ici, dcn, rows_by_process, shards):
    mesh = make_mesh(ici, [StandIn(i, process_index=i // 2) for i in range(8)], dcn)
    got = [process_batch_rows(mesh, 8, process=p) for p in range(4)]
    assert [g.rows for g in got] == rows_by_process
    assert {g.shards for g in got} == {shards}
    # One shard per row set, in row order: the processes that load the same rows load the same records.
    firsts = sorted({rows[0] for rows in rows_by_process})
    assert [g.shard for g in got] == [firsts.index(rows[0]) for rows in rows_by_process]


def test_process_batch_rows_of_one_process_and_rules():
    mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    assert process_batch_rows(mesh, 4) == BatchRows((0, 1, 2, 3), 0, 1)
    # Rules that replicate the batch: any size splits.
    assert process_batch_rows(mesh, 3, [("act_batch", None)]) == BatchRows((0, 1, 2), 0, 1)
    with pytest.raises(ValueError, match="a batch of 6 does not split into the mesh's 4 batch shards"):
        process_batch_rows(mesh, 6)


def test_restore_into_mesh_and_sharded_forward_matches(weights, rng):
    mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    sharded = load_dit(weights, mesh=mesh, **RUNTIME)
    q_kernel = sharded.blocks.self_attn.q.kernel[...]
    assert q_kernel.sharding.spec == P(None, "fsdp", "tensor")  # (layers, embed, heads)
    assert sharded.blocks.ffn.fc2.kernel[...].sharding.spec == P(None, "tensor", "fsdp")
    # Each device holds a quarter of every (embed x heads) weight: nothing is replicated whole.
    assert q_kernel.addressable_shards[0].data.shape == (2, 24, 24)

    latents = rng.standard_normal((4, 3, 6, 10, 16)).astype(np.float32)
    t = np.array([999.0, 500.0, 20.0, 0.0], np.float32)
    context = rng.standard_normal((4, 5, 32)).astype(np.float32)
    single = load_dit(weights, **RUNTIME)
    want = np.asarray(forward(single, jnp.asarray(latents), jnp.asarray(t), jnp.asarray(context)))

    with use_mesh(mesh):
        args = [jax.device_put(a, batch_sharding(mesh, a.ndim)) for a in (latents, t, context)]
        got = jax.jit(forward)(sharded, *args)
    assert got.sharding.spec[0] == ("data", "fsdp")
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-5, rtol=1e-5)


def test_random_initialisation_makes_each_shard_on_its_device():
    """init_on_mesh: the parameters `factory()` makes, each device holding only its shard of the fsdp-split
    weights (the initialisers ran on the devices, under jit, not on the host and then copied)."""
    from flax import nnx

    from mv2v_jax.config import load_config
    from mv2v_jax.memory.model import MemoryConfig, MemoryDiT
    from mv2v_jax.parallel.mesh import init_on_mesh

    config = MemoryConfig.from_config(load_config("configs/tiny_nvs.py").model)
    factory = lambda: MemoryDiT(config, rngs=nnx.Rngs(3))
    model = init_on_mesh(factory, make_mesh({"fsdp": 8}))
    ours, reference = jax.tree.leaves(nnx.state(model, nnx.Param)), jax.tree.leaves(nnx.state(factory(), nnx.Param))
    for a, b in zip(ours, reference, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
    total = sum(a.nbytes for a in ours)
    for device in range(8):
        held = sum(next(s.data.nbytes for s in a.addressable_shards if s.device.id == device) for a in ours)
        assert held < total / 6, (device, held, total)  # 1/8 of the split weights, the small ones whole
