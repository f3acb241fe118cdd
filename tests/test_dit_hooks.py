"""The DiT's hook points: a no-op adapter/hook is bit-identical; real ones take effect; scan, unroll
and remat agree."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mv2v_jax.memory.streams import Stream, pack_streams
from mv2v_jax.models.wan.attention import AttentionConfig
from mv2v_jax.models.wan.dit import WanDiT, WanDiTConfig

CONFIG = WanDiTConfig(
    dim=48,
    ffn_dim=96,
    num_heads=2,
    num_layers=4,
    in_channels=4,
    out_channels=4,
    text_dim=16,
    freq_dim=16,
    attention=AttentionConfig(impl="chunked", block_q=32, block_kv=32),
)


class NoOpAdapter(nnx.Module):
    def __init__(self, num_layers):
        self.unused = nnx.Param(jnp.zeros((num_layers, 3)))

    def modulated_input(self, h, state):
        return h

    def attention_output(self, y, state):
        return y


class ShiftAdapter(NoOpAdapter):
    """Adds a per-layer constant to the attention input of every token that has a camera feature."""

    def __init__(self, num_layers, dim):
        self.shift = nnx.Param(jnp.linspace(0.0, 1.0, num_layers * dim).reshape(num_layers, dim))

    def modulated_input(self, h, state):
        return h + (self.shift[...] * state.features["camera"][..., :1]).astype(h.dtype)


def no_op_hook(state, block, index):
    return state


def setup(config=CONFIG, seed=0):
    model = WanDiT(config, rngs=nnx.Rngs(seed))
    # Wan zero-initialises the head; make it random so outputs carry the whole network.
    model.head.proj.kernel[...] = jax.random.normal(jax.random.key(1), model.head.proj.kernel.shape) * 0.1
    key = jax.random.key(seed + 2)
    target = jax.random.normal(key, (2, 3, 6, 10, 4))
    memory = jax.random.normal(jax.random.fold_in(key, 1), (2, 2, 6, 10, 4))
    camera_t = jnp.ones((2, 3, 12))
    camera_m = jnp.zeros((2, 2, 12))
    seq = pack_streams(
        [
            Stream(target, camera=camera_t),
            Stream(
                memory,
                role="memory",
                frame_times=jnp.array([6.0, 7.0]),
                camera=camera_m,
                valid=jnp.array([True, False]),
            ),
        ],
        {(1, 2, 2): model.patch_embedding},
    )
    t = jnp.array([900.0, 10.0])
    context = jax.random.normal(jax.random.fold_in(key, 2), (2, 5, 16))
    return model, seq, t, context


def run(model, seq, t, context, **kwargs):
    graphdef, state = nnx.split(model)

    @jax.jit
    def f(state, seq, t, context):
        return nnx.merge(graphdef, state)(seq, t, context, **kwargs)

    return np.asarray(f(state, seq, t, context))


def test_no_op_hooks_and_adapter_are_bit_identical():
    model, seq, t, context = setup()
    plain = run(model, seq, t, context)
    hooked = run(
        model,
        seq,
        t,
        context,
        hooks={1: no_op_hook, 3: no_op_hook, 4: no_op_hook},
        adapters=(NoOpAdapter(CONFIG.num_layers), NoOpAdapter(CONFIG.num_layers)),
    )
    np.testing.assert_array_equal(hooked, plain)


def test_adapter_and_hook_take_effect():
    model, seq, t, context = setup()
    plain = run(model, seq, t, context)
    shifted = run(model, seq, t, context, adapters=(ShiftAdapter(CONFIG.num_layers, CONFIG.dim),))
    assert np.abs(shifted - plain).max() > 1e-3
    # Adapters compose: two that each add half the shift give what one adding all of it gives.
    halves = [ShiftAdapter(CONFIG.num_layers, CONFIG.dim) for _ in range(2)]
    for half in halves:
        half.shift[...] = half.shift[...] / 2
    np.testing.assert_allclose(run(model, seq, t, context, adapters=tuple(halves)), shifted, rtol=1e-5, atol=1e-5)

    calls = []

    def drop_memory(state, block, index):
        calls.append((index, block is not None))
        keep = jnp.arange(state.x.shape[1]) < state.num_target
        return state.replace(segment_ids=jnp.where(keep, state.segment_ids, 0))

    dropped = run(model, seq, t, context, hooks={2: drop_memory})
    assert calls == [(2, True)]
    assert np.abs(dropped - plain).max() > 1e-4


def test_hook_sees_the_block_it_precedes():
    model, seq, t, context = setup()
    seen = {}

    def grab(state, block, index):
        seen[index] = np.asarray(block.self_attn.q.kernel[...])
        return state

    model(seq, t, context, hooks={0: grab, 3: grab})  # eagerly, so the hook sees concrete arrays
    np.testing.assert_array_equal(seen[3], np.asarray(model.blocks.self_attn.q.kernel[...])[3])
    np.testing.assert_array_equal(seen[0], np.asarray(model.blocks.self_attn.q.kernel[...])[0])


@pytest.mark.parametrize("variant", [dict(scan_layers=False), dict(remat="full"), dict(remat="dots")])
def test_execution_switches_do_not_change_results(variant):
    model, seq, t, context = setup()
    want = run(model, seq, t, context)
    other = dataclasses.replace(CONFIG, **variant)
    _, state = nnx.split(model)
    model2 = nnx.merge(nnx.split(nnx.eval_shape(lambda: WanDiT(other, rngs=nnx.Rngs(0))))[0], state)
    np.testing.assert_allclose(run(model2, seq, t, context), want, atol=1e-5, rtol=1e-5)


def test_remat_gradients_match():
    model, seq, t, context = setup()
    graphdef, state = nnx.split(model)
    remat_def = nnx.split(nnx.eval_shape(lambda: WanDiT(dataclasses.replace(CONFIG, remat="full"), rngs=nnx.Rngs(0))))[
        0
    ]

    def loss(gd, params):
        return jnp.mean(nnx.merge(gd, params)(seq, t, context) ** 2)

    g1 = jax.grad(lambda p: loss(graphdef, p))(state)
    g2 = jax.grad(lambda p: loss(remat_def, p))(state)
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-4)


def test_padding_stream_does_not_affect_target():
    """Example 0's memory slot is valid, example 1's is padding: changing example 1's memory
    latents leaves its output unchanged, changing example 0's does not."""
    model, seq, t, context = setup()
    out = run(model, seq, t, context)
    memory_tokens = slice(seq.num_target, None)
    noise = jax.random.normal(jax.random.key(7), seq.tokens[:, memory_tokens].shape)  # LayerNorm ignores a constant
    tokens = seq.tokens.at[:, memory_tokens].add(noise)
    out2 = run(model, seq.replace(tokens=tokens), t, context)
    np.testing.assert_allclose(out2[1], out[1], atol=1e-6)
    assert np.abs(out2[0] - out[0]).max() > 1e-4


def test_bad_calls_are_clear_errors():
    model, seq, t, context = setup()
    with pytest.raises(ValueError, match="hook indices"):
        model(seq, t, context, hooks={9: no_op_hook})
    with pytest.raises(ValueError, match="per-token timestep"):
        model(seq, jnp.zeros((2, 7)), context)
    with pytest.raises(ValueError, match="unknown DiT config keys \\['num_layer'\\]"):
        WanDiTConfig.from_config({"num_layer": 3})
