"""Sequence (context) parallelism on 8 fake CPU devices.

Attention split over the `sequence` mesh axis (Ulysses all-to-all over heads, keys and values
gathered, or the hybrid of the two) equals the single-device result, values and gradients, for the
chunked and XLA kernels and for splash in interpret mode inside `shard_map`; token counts the axis does
not divide are padded. The whole
MemoryDiT forward with token merging (with the FFN in token steps too), and one train step, under
{data, fsdp, sequence, tensor} meshes equal one device. Without a mesh none of this machinery is traced.
"""

import collections
import dataclasses

import jax
import jax.extend.core
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from train_fixtures import latent_scene, micro_config

from mv2v_jax.data.loader import to_train_batch, training_dataset
from mv2v_jax.data.memory_sampling import MemorySampling
from mv2v_jax.memory.builders import MemoryBatch, recammaster_streams
from mv2v_jax.memory.model import MemoryConfig, MemoryDiT
from mv2v_jax.models.wan.attention import AttentionConfig, attention, sequence_scheme
from mv2v_jax.models.wan.dit import FeedForward, WanDiT, WanDiTConfig
from mv2v_jax.parallel.mesh import batch_sharding, make_mesh, state_shardings, use_mesh
from mv2v_jax.tasks import get_task
from mv2v_jax.train.optimizer import make_optimizer, trainable_filter
from mv2v_jax.train.step import StepVariant, TrainState, jit_train_step

KERNELS = {
    "chunked": dict(impl="chunked", block_q=16, block_kv=32),
    "xla": dict(impl="xla"),
    "splash-interpret": dict(impl="splash", splash_block=128, interpret=True),
}
# 70 tokens: the sequence splits of 4 and 8 need padding.
MESHES = {
    "seq2-data2-tensor2": {"data": 2, "sequence": 2, "tensor": 2},
    "seq2-fsdp2-tensor2": {"fsdp": 2, "sequence": 2, "tensor": 2},
    "seq4-fsdp2": {"fsdp": 2, "sequence": 4},
    "seq8": {"sequence": 8},
}


def qkv_segments(rng, b=2, n=70, h=4, d=16):
    q, k, v = (jnp.asarray(rng.standard_normal((b, n, h, d), dtype=np.float32)) for _ in range(3))
    segments = np.ones((b, n), np.int32)
    segments[0, 52:] = 0  # an empty memory slot: padding
    return q, k, v, jnp.asarray(segments)


def value_and_grads(config: AttentionConfig, q, k, v, segments, weights):
    def loss(q, k, v):
        out = attention(q, k, v, segments, segments, config)
        return jnp.sum(out * weights), out

    (_, out), grads = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(q, k, v)
    return out, grads


@pytest.mark.parametrize(
    "mesh_name, heads, scheme",
    [(mesh, 4, scheme) for mesh in ("seq2-data2-tensor2", "seq4-fsdp2") for scheme in ("ulysses", "all_gather")]
    + [("seq8", 12, "hybrid")],  # Wan-1.3B's 12 heads over 8: all-to-alls in 2 groups of 4, gathered across them
)
@pytest.mark.parametrize("kernel", KERNELS)
def test_attention_matches_one_device(rng, kernel, mesh_name, heads, scheme):
    config = AttentionConfig(**KERNELS[kernel], sequence_parallel=scheme)
    q, k, v, segments = qkv_segments(rng, h=heads)
    weights = jnp.asarray(rng.standard_normal(q.shape, dtype=np.float32))
    want_out, want_grads = jax.jit(value_and_grads, static_argnums=0)(config, q, k, v, segments, weights)
    with use_mesh(make_mesh(MESHES[mesh_name])):
        out, grads = jax.jit(value_and_grads, static_argnums=0)(config, q, k, v, segments, weights)
    np.testing.assert_allclose(out, want_out, atol=1e-6, rtol=1e-6)
    for got, want in zip(grads, want_grads, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


def test_cross_attention_keeps_the_text_whole(rng):
    """Queries split over the sequence axis attend to every text token on every device."""
    q, k, v, _ = qkv_segments(rng)
    config = AttentionConfig(**KERNELS["chunked"])
    want = attention(q, k[:, :9], v[:, :9], config=config)
    with use_mesh(make_mesh(MESHES["seq8"])):
        got = jax.jit(lambda q, k, v: attention(q, k, v, config=config, cross=True))(q, k[:, :9], v[:, :9])
    np.testing.assert_allclose(got, want, atol=1e-6, rtol=1e-6)


def test_ulysses_needs_heads_the_sequence_axis_divides(rng):
    """4 heads cannot be split 8 ways: "ulysses" says so, "auto" runs the hybrid instead."""
    q, k, v, segments = qkv_segments(rng)
    want = attention(q, k, v, segments, segments, AttentionConfig(**KERNELS["chunked"]))
    with use_mesh(make_mesh(MESHES["seq8"])):
        with pytest.raises(ValueError, match="4 heads of each tensor shard over the sequence axis of 8"):
            attention(q, k, v, segments, segments, AttentionConfig(**KERNELS["chunked"], sequence_parallel="ulysses"))
        auto = AttentionConfig(**KERNELS["chunked"], sequence_parallel="auto")
        got = jax.jit(lambda q, k, v, s: attention(q, k, v, s, s, auto))(q, k, v, segments)
    np.testing.assert_allclose(got, want, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize(
    "heads, sequence, scheme",
    [
        (12, 4, "ulysses"),
        (24, 8, "ulysses"),
        (12, 8, "hybrid"),
        (6, 4, "hybrid"),
        (3, 8, "all_gather"),
        (12, 1, "none"),
    ],
)
def test_auto_takes_the_scheme_that_sends_least(heads, sequence, scheme):
    """Ulysses where the sequence axis divides the heads, the hybrid where they share a factor, else the gather."""
    assert sequence_scheme(AttentionConfig(sequence_parallel="auto"), heads, sequence) == scheme


# -- the whole model ------------------------------------------------------------------------------

MODEL = dict(
    dit=dict(
        dim=64,
        ffn_dim=96,
        num_heads=4,
        num_layers=3,
        in_channels=4,
        out_channels=4,
        text_dim=16,
        freq_dim=16,
        attention=dict(impl="chunked", block_q=64, block_kv=128),
    ),
    adapters=("camera",),
    tokenizers=dict(ranked=((1, 4, 4),) * 2, rest=(1, 8, 8)),
    merge=dict(blocks=(10, 20), fraction=0.5, keep_ratio=0.5),  # merges before blocks 1 and 2 of 3
)


def turn_inputs(rng, b=2, t=3, size=8, channels=4, slots=4):
    """A batch of NVS turns with memory: 96 target/source tokens, 2 x 16 + 2 x 3 memory tokens (134, which
    no sequence split of 4 or 8 divides), slots partly empty."""
    f32 = lambda *shape: rng.standard_normal(shape).astype(np.float32)
    memory = MemoryBatch(
        latents=f32(b, slots, t, 2 * size, 2 * size, channels),
        valid=np.array([[1, 1, 1, 0], [1, 1, 0, 0]], bool),
        turns=np.array([[1, 2, 3, 0], [2, 1, 0, 0]], np.int32),
        camera=f32(b, slots, t, 12),
    )
    return (f32(b, t, size, size, channels), f32(b, t, size, size, channels), f32(b, t, 12), memory)


@pytest.mark.parametrize(
    "mesh_name, heads, ffn_chunk",
    [
        ("seq2-data2-tensor2", 4, 0),
        ("seq2-data2-tensor2", 4, 13),  # the FFN in steps of 13 tokens per device, the last one padded
        pytest.param("seq4-fsdp2", 4, 0, marks=pytest.mark.slow),
        pytest.param("seq8", 12, 0, marks=pytest.mark.slow),  # the hybrid, at Wan-1.3B's 12 heads
    ],
)
def test_memory_dit_with_merging_matches_one_device(rng, mesh_name, heads, ffn_chunk):
    dit = MODEL["dit"] | {"num_heads": heads, "dim": 16 * heads}  # head dim 16
    make = lambda **runtime: MemoryDiT(MemoryConfig.from_config(MODEL | {"dit": dit | runtime}), rngs=nnx.Rngs(0))
    model = make()
    kernel = model.dit.head.proj.kernel  # Wan zero-initialises the head; make the output carry the network
    kernel[...] = jax.random.normal(jax.random.key(3), kernel.shape) * 0.1
    graphdef, state = nnx.split(model)
    noisy, source, camera, memory = turn_inputs(rng)
    timestep, context = np.array([900.0, 100.0], np.float32), rng.standard_normal((2, 5, 16)).astype(np.float32)

    def forward(graphdef):
        @jax.jit
        def run(state, noisy, source, camera, memory, timestep, context):
            streams = recammaster_streams(noisy, source, camera, memory)
            return nnx.merge(graphdef, state)(streams, timestep, context, keep_ratio=0.5)

        return run

    args = (noisy, source, camera, memory, timestep, context)
    want = np.asarray(forward(graphdef)(state, *args))
    mesh = make_mesh(MESHES[mesh_name])
    with use_mesh(mesh):
        sharded = jax.device_put(state, state_shardings(state, mesh))
        placed = jax.tree.map(lambda a: jax.device_put(a, batch_sharding(mesh, a.ndim)), args)
        got = np.asarray(forward(nnx.split(make(ffn_chunk=ffn_chunk))[0])(sharded, *placed))
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=2e-5)
    assert np.abs(want).max() > 0.5  # the comparison sees the whole network, not a zero head


def primitives(fn, *args) -> collections.Counter:
    """How often each primitive occurs in `fn`'s jaxpr, nested ones (loop bodies, shard_map) included."""
    counts = collections.Counter()

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            counts[eqn.primitive.name] += 1
            for value in eqn.params.values():
                for sub in value if isinstance(value, tuple | list) else (value,):
                    if isinstance(sub, jax.extend.core.ClosedJaxpr | jax.extend.core.Jaxpr):
                        walk(getattr(sub, "jaxpr", sub))

    walk(jax.make_jaxpr(fn)(*args).jaxpr)
    return counts


COLLECTIVES = ("all_to_all", "all_gather", "psum", "ppermute", "reduce_scatter")


def test_one_device_runs_no_sequence_parallel_machinery(rng):
    """Without a mesh (bench/dit_forward.py on one CPU) the forward is the kernels alone: no shard_map and no
    collectives, which a split sequence brings; and the FFN at ffn_chunk=0 is two matmuls, no loop."""
    config = WanDiTConfig.from_config(MODEL["dit"])
    model = WanDiT(config, rngs=nnx.Rngs(0))
    args = (
        jnp.asarray(rng.standard_normal((1, 2, 8, 8, 4), dtype=np.float32)),
        jnp.array([500]),
        jnp.asarray(rng.standard_normal((1, 5, 16), dtype=np.float32)),
    )
    plain = primitives(model.forward_video, *args)
    with use_mesh(make_mesh(MESHES["seq2-data2-tensor2"])):
        split = primitives(model.forward_video, *args)
    assert split["shard_map"] > 0 and sum(split[c] for c in COLLECTIVES) > 0  # what the plain forward must lack
    assert plain["shard_map"] == 0 and sum(plain[c] for c in COLLECTIVES) == 0

    x = jnp.asarray(rng.standard_normal((1, 20, config.dim), dtype=np.float32))
    whole = primitives(FeedForward(config, nnx.Rngs(0)), x)
    steps = primitives(FeedForward(dataclasses.replace(config, ffn_chunk=7), nnx.Rngs(0)), x)
    assert whole["dot_general"] == 2 and whole["scan"] + whole["while"] == 0
    assert steps["scan"] + steps["while"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("mesh_name", ["seq2-data2-tensor2", "seq2-fsdp2-tensor2"])
def test_train_step_matches_one_device(mesh_name):
    """One full step (loss, gradients through the all-to-alls, AdamW, EMA) on a mesh with a sequence axis
    and Ulysses attention equals the single-device step, merging on."""
    config = micro_config(model=MODEL | {"dit": MODEL["dit"] | {"num_layers": 2}})  # one merge, before block 1
    config["step"] = dict(config["step"], ema_decay=0.99)
    model = MemoryDiT(MemoryConfig.from_config(config["model"]), rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model)
    optimizer = make_optimizer(dict(config["optimizer"]))
    trainable = trainable_filter([".*"])
    data = training_dataset(
        [latent_scene(i) for i in range(4)],
        get_task("nvs").example,
        MemorySampling(**config["memory_sampling"]),
        4,
        seed=0,
    )
    batch = next(iter(data))
    step = jit_train_step(
        graphdef, trainable, optimizer, StepVariant(model.config.tokenizers, 0.5), config["step"], False
    )

    def run(mesh):
        with use_mesh(mesh, config["mesh_rules"]):
            placed = jax.device_put(params, state_shardings(params, mesh, config["mesh_rules"]))
            state = TrainState(
                step=jnp.zeros((), jnp.int32), params=placed, opt_state=jax.jit(optimizer.init)(placed), ema=placed
            )
            device_batch = to_train_batch(batch, lambda a: batch_sharding(mesh, a.ndim, config["mesh_rules"]))
            new, metrics = step(state, device_batch, jax.random.key(5))
            return jax.device_get((new.params, new.ema, metrics))

    want = run(make_mesh({"data": 1}, jax.devices()[:1]))
    got = run(make_mesh(MESHES[mesh_name]))
    assert got[2]["loss"] == pytest.approx(float(want[2]["loss"]), rel=1e-5)
    assert got[2]["grad_norm"] == pytest.approx(float(want[2]["grad_norm"]), rel=1e-4)
    for tree in (0, 1):
        for g, w in zip(jax.tree.leaves(got[tree]), jax.tree.leaves(want[tree]), strict=True):
            np.testing.assert_allclose(g, w, atol=1e-5, rtol=1e-4)
