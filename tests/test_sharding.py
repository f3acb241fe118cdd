"""Multi-device: converted weights restore straight into a (data, fsdp, sequence, tensor) mesh of 8 fake CPU
devices, and the sharded forward equals the single-device one."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P
from torch_reference import tiny_wan_dit

from convert_weights.wan_dit import convert_dit
from mv2v_jax.models.wan.dit import load_dit
from mv2v_jax.parallel.mesh import batch_sharding, make_mesh, use_mesh

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
