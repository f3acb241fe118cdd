"""Dynamic tokenizers, hierarchical RoPE and adaptive token merging, each checked against an
independent computation."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mv2v_jax.memory import hierarchical_rope
from mv2v_jax.memory.builders import MemoryBatch, lucy_edit_streams, recammaster_streams
from mv2v_jax.memory.merging import (
    MergeConfig,
    TokenMerger,
    area_weights,
    merge_memory,
    merged_grid,
    plan_merge,
    responsiveness,
)
from mv2v_jax.memory.streams import Stream, pack_streams, stream_positions
from mv2v_jax.memory.tokenizers import DynamicTokenizers, TokenizerConfig, tile_average_kernel
from mv2v_jax.models.wan.attention import AttentionConfig
from mv2v_jax.models.wan.dit import PatchEmbed, WanDiT, WanDiTConfig
from mv2v_jax.models.wan.sequence import BlockState

CONFIG = WanDiTConfig(
    dim=32,
    ffn_dim=64,
    num_heads=2,
    num_layers=6,
    in_channels=4,
    out_channels=4,
    text_dim=8,
    freq_dim=16,
    attention=AttentionConfig(impl="chunked", block_q=64, block_kv=64),
)


# -- dynamic tokenizers -------------------------------------------------------------------------------


@pytest.mark.parametrize("patch", [(1, 4, 4), (1, 8, 8)])
def test_untrained_coarse_token_is_the_mean_of_the_fine_tokens(rng, patch):
    base = PatchEmbed((1, 2, 2), 4, CONFIG, nnx.Rngs(0))
    base.bias[...] = jnp.asarray(rng.standard_normal(32), jnp.float32)
    tokenizers = DynamicTokenizers(base, CONFIG, TokenizerConfig(), nnx.Rngs(1))
    coarse = tokenizers.mapping(base)[patch]
    latents = jnp.asarray(rng.standard_normal((2, 3, 16, 24, 4)), jnp.float32)
    fine = np.asarray(base(latents))  # [2, 3, 8, 12, 32]
    k = patch[1] // 2
    want = fine.reshape(2, 3, 8 // k, k, 12 // k, k, 32).mean(axis=(3, 5))
    np.testing.assert_allclose(np.asarray(coarse(latents)), want, atol=1e-5)


def test_tile_average_refuses_a_non_multiple():
    with pytest.raises(ValueError, match="whole multiple"):
        tile_average_kernel(jnp.zeros((1, 2, 2, 4, 8)), (1, 2, 2), (1, 3, 3))


def test_rank_schedule_is_the_papers():
    config = TokenizerConfig()
    assert [config.patch_for_rank(r) for r in range(6)] == [(1, 4, 4)] * 3 + [(1, 8, 8)] * 3
    assert config.patches == ((1, 4, 4), (1, 8, 8))


def test_coarse_positions_sit_at_the_centre_of_the_fine_tokens():
    stream = Stream(jnp.zeros((1, 2, 16, 16, 4)), role="memory", patch=(1, 8, 8), frame_times=jnp.array([5.0, 6.0]))
    positions = np.asarray(stream_positions(stream))[0]  # 2 frames x 2 x 2 tokens
    # A 1x8x8 token covers 4x4 base (1x2x2) tokens: rows 0..3 -> centre 1.5, rows 4..7 -> 5.5.
    np.testing.assert_array_equal(positions[:4], [[5, 1.5, 1.5], [5, 1.5, 5.5], [5, 5.5, 1.5], [5, 5.5, 5.5]])
    np.testing.assert_array_equal(positions[4:, 0], [6, 6, 6, 6])


def test_a_memory_at_the_base_patch_is_embedded_by_the_dits_own_patch_embedding():
    """Scaled to small latents, the top memory keeps 1x2x2: no second embedder for it, and the target and
    the input keep the DiT's own (one embedder per patch size in the mapping)."""
    base = PatchEmbed((1, 2, 2), 4, CONFIG, nnx.Rngs(0))
    config = TokenizerConfig(ranked=((1, 2, 2), (1, 4, 4)), rest=(1, 4, 4))
    tokenizers = DynamicTokenizers(base, CONFIG, config, nnx.Rngs(1))
    assert list(tokenizers.embedders) == ["1x4x4"]
    assert tokenizers.mapping(base)[(1, 2, 2)] is base


# -- camera rays ----------------------------------------------------------------------------------------


def yaw_pose(degrees: float, frames: int, x: float = 0.0) -> jnp.ndarray:
    """`[1, frames, 12]` camera-to-reference poses turned `degrees` about the camera's vertical (y) axis,
    the camera `x` to the right of the reference."""
    a = math.radians(degrees)
    rotation = np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])
    pose = np.concatenate([rotation, np.array([[x], [0.0], [0.0]])], 1)
    return jnp.asarray(np.broadcast_to(pose.reshape(12), (1, frames, 12)), jnp.float32)


def test_rays_are_each_tokens_own_viewing_direction_in_the_reference_frame():
    from mv2v_jax.memory.camera import CAMERA_INPUTS, RAY_FREQUENCIES, token_rays

    t, z = 2, jnp.zeros((1, 2, 8, 12, 4))
    memory = MemoryBatch(
        jnp.zeros((1, 2, t, 8, 12, 4)),
        jnp.array([[True, False]]),
        jnp.array([[1, 0]]),
        jnp.concatenate([yaw_pose(40.0, t, x=0.1)[:, None], jnp.zeros((1, 1, t, 12))], 1),  # slot 1 empty: zeros
    )
    tokenizers = TokenizerConfig(ranked=((1, 2, 2),), rest=(1, 4, 4))
    streams = recammaster_streams(z, z, yaw_pose(0.0, t), memory, tokenizers=tokenizers)
    rays = np.asarray(token_rays(streams, hfov_degrees=90.0))[0]
    n = 2 * 4 * 6
    assert rays.shape == (n * 3 + 2 * 2 * 3, CAMERA_INPUTS["rays"]) and np.isfinite(rays).all()
    target, source, remembered = rays[:n], rays[n : 2 * n], rays[2 * n : 3 * n]
    np.testing.assert_allclose(target, source, atol=1e-6)  # the target starts (and here stays) at the source
    # A token's direction: its pixel centre through a 90-degree lens (focal = 3 base tokens of 6 across).
    x, y = (np.arange(6) + 0.5 - 3) / 3, (np.arange(4) + 0.5 - 2) / 3
    local = np.stack(np.broadcast_arrays(x[None, :], y[:, None], 1.0), -1).reshape(-1, 3)
    local /= np.linalg.norm(local, axis=-1, keepdims=True)
    np.testing.assert_allclose(target[:24, :3], local, atol=1e-6)
    rotation = np.asarray(yaw_pose(40.0, 1)[0, 0]).reshape(3, 4)[:, :3]
    np.testing.assert_allclose(remembered[:24, :3], local @ rotation.T, atol=1e-6)  # turned with its camera
    np.testing.assert_allclose(remembered[:24, 3:6], np.cross([0.1, 0.0, 0.0], local @ rotation.T), atol=1e-6)
    np.testing.assert_allclose(remembered[:24, 6:9], np.sin(RAY_FREQUENCIES[0] * local @ rotation.T), atol=1e-6)


# -- hierarchical RoPE --------------------------------------------------------------------------------


def memory_batch(valid, turns, frames=3, camera=False, size=8, channels=4):
    valid = jnp.asarray(valid, bool)
    b, k = valid.shape
    return MemoryBatch(
        latents=jnp.zeros((b, k, frames, size, size, channels)),
        valid=valid,
        turns=jnp.asarray(turns, jnp.int32),
        camera=jnp.zeros((b, k, frames, 12)) if camera else None,
    )


def times_of(streams):
    """Temporal RoPE position of each frame of each stream (example 0), as packed."""
    out = []
    for s in streams:
        _, h, w = s.grid
        out.append(np.asarray(stream_positions(s))[0, :: h * w, 0])
    return out


def test_nvs_table_with_one_memory():
    t = 21
    z = jnp.zeros((1, t, 8, 8, 4))
    streams = recammaster_streams(z, z, jnp.zeros((1, t, 12)), memory_batch([[True]], [[0]], frames=t))
    target, source, memory = times_of(streams)
    np.testing.assert_array_equal(target, np.arange(0, t))
    np.testing.assert_array_equal(source, np.arange(t, 2 * t))
    np.testing.assert_allclose(memory, np.arange(2 * t, 3 * t))


@pytest.mark.parametrize("reverse", [False, True])
def test_memory_order_training_chronological_inference_reversed(reverse):
    t = 4
    z = jnp.zeros((1, t, 8, 8, 4))
    # Slots in retrieval order; made at turns 5, 2, 9 (empty fourth slot).
    memory = memory_batch([[True, True, True, False]], [[5, 2, 9, 0]], frames=t)
    streams = recammaster_streams(z, z, jnp.zeros((1, t, 12)), memory, reverse=reverse)
    starts = {turn: times_of(streams)[2 + k][0] for k, turn in enumerate([5, 2, 9])}
    # Three memories share the band [2T, 3T) = [8, 12), a third each.
    order = [9, 5, 2] if reverse else [2, 5, 9]  # nearest to 2T first
    assert [starts[turn] for turn in order] == pytest.approx([8, 8 + 4 / 3, 8 + 8 / 3])
    for span in times_of(streams)[2:5]:
        assert span.min() >= 8 and span.max() < 12 and np.all(np.diff(span) > 0)
    assert [s.patch for s in streams[2:]] == [(1, 4, 4)] * 3 + [(1, 8, 8)]
    assert not bool(streams[5].valid[0])


def test_long_edit_table():
    t = 5
    z = jnp.zeros((1, t, 8, 8, 4))
    memory = memory_batch([[True, True, True]], [[7, 3, 6]], frames=t, channels=8)
    streams = lucy_edit_streams(z, z, memory, reverse=True)
    assert streams[0].latents.shape[-1] == 8  # noisy and condition channel-concatenated
    target, previous, older_a, older_b = times_of(streams)
    np.testing.assert_array_equal(target, np.arange(t))
    np.testing.assert_array_equal(previous, np.arange(t, 2 * t))
    # Older segments (turns 3 and 6) share [2T, 3T); at inference the newer one (6) comes first.
    np.testing.assert_allclose(older_b, 2 * t + np.arange(t) / 2)
    np.testing.assert_allclose(older_a, 2 * t + t / 2 + np.arange(t) / 2)


def test_consecutive_layout_gives_each_memory_a_whole_range():
    times = hierarchical_rope.memory_times(
        jnp.array([[1, 0]]), jnp.array([[True, True]]), 3, 3, 6.0, False, "consecutive"
    )
    np.testing.assert_allclose(times[0], [[9, 10, 11], [6, 7, 8]])
    with pytest.raises(ValueError, match="layout"):
        hierarchical_rope.memory_times(jnp.zeros((1, 1)), jnp.ones((1, 1), bool), 3, 3, 6.0, False, "spiral")


def test_rope_dropout_drops_whole_examples_at_the_rate():
    keep = hierarchical_rope.rope_keep_mask(jax.random.key(0), 20000, 0.1)
    assert abs(1 - float(keep.mean()) - 0.1) < 0.01
    stream = Stream(
        jnp.zeros((2, 2, 4, 4, 4)), role="input", frame_times=jnp.array([3.0, 4.0]), rope_keep=jnp.array([True, False])
    )
    positions = np.asarray(stream_positions(stream))
    assert positions[0].any() and not positions[1].any()


def test_memory_noise_has_the_configured_scale():
    latents = jnp.full((2000, 1, 16, 16, 4), 3.0)
    noise = np.asarray(hierarchical_rope.perturb_memory(latents, jax.random.key(0), 0.2) - latents)
    std = noise.reshape(2000, -1).std(axis=1)  # 1024 samples each: about 2% sampling error
    # Per-example std ~ U(0, 0.2): mean 0.1, median 0.1, never much above 0.2.
    assert std.max() < 0.2 * 1.1 and abs(std.mean() - 0.1) < 0.005 and abs(np.median(std) - 0.1) < 0.01


# -- merging -----------------------------------------------------------------------------------------


def test_responsiveness_matches_brute_force(rng):
    b, nq, f, tokens, heads, d = 2, 7, 5, 6, 3, 4
    queries = rng.standard_normal((b, nq, heads, d)).astype(np.float32)
    keys = rng.standard_normal((b, f, tokens, heads, d)).astype(np.float32)
    valid = np.array([[True] * 5, [True, True, False, True, False]])
    got = np.asarray(responsiveness(jnp.asarray(queries), jnp.asarray(keys.mean(2)), jnp.asarray(valid)))
    for i in range(b):
        for t in range(f):
            if not valid[i, t]:
                assert got[i, t] == -np.inf
                continue
            per_head = []
            for h in range(heads):
                best = 0.0
                for q in range(nq):
                    logits = [
                        queries[i, q, h] @ keys[i, u, :, h].mean(0) / math.sqrt(d) for u in range(f) if valid[i, u]
                    ]
                    mine = queries[i, q, h] @ keys[i, t, :, h].mean(0) / math.sqrt(d)
                    best = max(best, math.exp(mine) / sum(math.exp(v) for v in logits))
                per_head.append(best)
            assert got[i, t] == pytest.approx(np.mean(per_head), rel=1e-5)


def test_area_weights_average_exactly():
    w = area_weights(5, 3)
    np.testing.assert_allclose(w.sum(1), 1)
    np.testing.assert_allclose(w[0], [0.6, 0.4, 0, 0, 0], atol=1e-6)
    np.testing.assert_allclose(w @ np.arange(5.0), [0.4, 2.0, 3.6], atol=1e-6)  # area-weighted index means


def merge_setup(rng, valid=(True,) * 4):
    model = WanDiT(CONFIG, rngs=nnx.Rngs(0))
    b, t = 2, 2
    target = jnp.asarray(rng.standard_normal((b, t, 8, 8, 4)), jnp.float32)
    memory = MemoryBatch(
        latents=jnp.asarray(rng.standard_normal((b, 4, 2, 16, 16, 4)), jnp.float32),
        valid=jnp.asarray([valid, (True,) * 4]),
        turns=jnp.arange(8).reshape(2, 4),
    )
    config = TokenizerConfig(ranked=((1, 4, 4),) * 2, rest=(1, 8, 8))
    tokenizers = DynamicTokenizers(model.patch_embedding, CONFIG, config, nnx.Rngs(1))
    streams = recammaster_streams(target, target, None, memory, tokenizers=config)
    seq = pack_streams(streams, tokenizers.mapping(model.patch_embedding))
    cos, sin = model.rope.cos_sin(seq.positions)
    state = BlockState(
        x=seq.tokens,
        positions=seq.positions,
        rope_cos=cos,
        rope_sin=sin,
        segment_ids=seq.segment_ids,
        modulation=model.embed_time(jnp.array([500.0, 3.0]))[1],
        features=seq.features,
        num_target=seq.num_target,
        layout=seq.layout,
    )
    return model, state


def test_merge_reduces_tokens_exactly_and_keeps_chosen_frames(rng):
    model, state = merge_setup(rng)
    merger = TokenMerger(CONFIG, MergeConfig(), nnx.Rngs(2))
    merged = merge_memory(state, model.block(2), merger, model.rope, fraction=0.5, keep_ratio=0.5)
    # Groups: two 1x4x4 slots (2 frames each of 4x4 tokens) and two 1x8x8 slots (2 frames of 2x2 tokens).
    groups, layout = plan_merge(state.layout, 0.5, 0.5)
    assert [(g.frames, g.count, g.grid, g.out_grid) for g in groups] == [(4, 2, (4, 4), (3, 3)), (4, 2, (2, 2), (1, 1))]
    removed = 2 * (16 - 9) + 2 * (4 - 1)
    assert merged.x.shape[1] == state.x.shape[1] - removed == layout[-1].stop
    assert [s.merged for s in merged.layout] == [False, False, False, True, False, True]
    # Target and source untouched, in place.
    n_fixed = state.layout[2].start
    np.testing.assert_array_equal(merged.x[:, :n_fixed], state.x[:, :n_fixed])
    # Every kept memory frame appears unchanged among the original frames.
    kept = np.asarray(merged.x[:, layout[2].start : layout[2].stop]).reshape(2, 2, 16, -1)
    original = np.concatenate(
        [np.asarray(state.x[:, s.start : s.stop]).reshape(2, 2, 16, -1) for s in state.layout[2:4]], axis=1
    )
    for b in range(2):
        for frame in kept[b]:
            assert any(np.array_equal(frame, o) for o in original[b])
    assert np.isfinite(np.asarray(merged.rope_cos)).all()


def test_empty_slots_are_merged_first(rng):
    model, state = merge_setup(rng, valid=(True, False, True, False))
    merged = merge_memory(
        state, model.block(1), TokenMerger(CONFIG, MergeConfig(), nnx.Rngs(2)), model.rope, fraction=0.5, keep_ratio=0.5
    )
    _, layout = plan_merge(state.layout, 0.5, 0.5)
    # Example 0: the 1x4x4 group's frames of the empty slot (slot 1, frames 2 and 3) are the merged ones.
    merged_ids = np.asarray(merged.segment_ids[0, layout[3].start : layout[3].stop])
    kept_ids = np.asarray(merged.segment_ids[0, layout[2].start : layout[2].stop])
    assert not merged_ids.any() and kept_ids.all()


def test_merge_is_differentiable(rng):
    model, state = merge_setup(rng)
    merger = TokenMerger(CONFIG, MergeConfig(), nnx.Rngs(2))
    block = model.block(2)
    graphdef, params = nnx.split(merger)

    def loss(params, x):
        out = merge_memory(state.replace(x=x), block, nnx.merge(graphdef, params), model.rope, 0.5, 0.5)
        return jnp.sum(out.x[:, state.layout[2].start :] ** 2)

    grad_params, grad_x = jax.grad(loss, argnums=(0, 1))(params, state.x)
    assert float(jnp.abs(grad_params["pointwise"]["kernel"][...]).max()) > 0
    assert float(jnp.abs(grad_x).max()) > 0 and np.isfinite(np.asarray(grad_x)).all()


def test_merge_blocks_scale_with_depth():
    assert MergeConfig().block_indices(30) == (10, 20)
    assert MergeConfig().block_indices(6) == (2, 4)
    assert merged_grid(30, 52, 0.5) == (21, 37)


def test_turn_cost_follows_the_tokens_the_model_actually_sees(rng):
    from mv2v_jax.memory.budget import block_flops, turn_cost
    from mv2v_jax.memory.merging import merge_hooks
    from mv2v_jax.memory.model import MemoryConfig, MemoryDiT

    model = MemoryDiT(MemoryConfig(dit=CONFIG), rngs=nnx.Rngs(0))

    merges = merge_hooks({i: model.mergers[i] for i in model.mergers.blocks}, 0.5, model.dit.rope, 0.5)
    seen = {}

    def recorder(inner=None):
        def hook(state, block, index):
            state = inner(state, block, index) if inner else state
            seen[index] = state.x.shape[1]
            return state

        return hook

    hooks = {i: recorder(merges.get(i)) for i in range(CONFIG.num_layers)}
    seq = pack_streams(
        recammaster_streams(
            *[jnp.asarray(rng.standard_normal((2, 2, 8, 8, 4)), jnp.float32)] * 2,
            None,
            MemoryBatch(jnp.zeros((2, 4, 2, 16, 16, 4)), jnp.ones((2, 4), bool), jnp.zeros((2, 4), jnp.int32)),
            tokenizers=model.config.tokenizers,
        ),
        model.tokenizers.mapping(model.dit.patch_embedding),
    )
    model.dit(seq, jnp.array([1.0, 2.0]), jnp.zeros((2, 3, 8)), hooks=hooks)
    cost = turn_cost(seq.layout, CONFIG, 3, model.config.merge, 0.5)
    assert cost.tokens_per_block == tuple(seen[i] for i in range(CONFIG.num_layers))
    assert cost.tokens_per_block[0] > cost.tokens_per_block[-1]
    assert cost.flops > sum(block_flops(n, 3, CONFIG) for n in cost.tokens_per_block)  # plus responsiveness
    no_merge = turn_cost(seq.layout, CONFIG, 3)
    assert no_merge.flops == CONFIG.num_layers * block_flops(seq.tokens.shape[1], 3, CONFIG)
    memory = [s.stop - s.start for s in seq.layout if s.role == "memory"]
    assert (no_merge.target_tokens, no_merge.memory_tokens, no_merge.padding_tokens) == (2 * 4 * 4, sum(memory), 0)
    one_filled = turn_cost(seq.layout, CONFIG, 3, filled_memory=1)
    assert (one_filled.memory_tokens, one_filled.padding_tokens) == (memory[0], sum(memory[1:]))
    # No memory: merging has nothing to merge and costs nothing (no responsiveness either).
    plain = seq.layout[:2]
    assert turn_cost(plain, CONFIG, 3, model.config.merge, 0.5).flops == turn_cost(plain, CONFIG, 3).flops
