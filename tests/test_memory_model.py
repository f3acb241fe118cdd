"""MemoryDiT end to end: the base models are reproduced exactly without memory, ReCamMaster and LucyEdit
checkpoints convert and match PyTorch, and a fixed memory budget compiles once for every turn."""

import dataclasses
import json
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from conftest import relative_error
from diffsynth_layout import diffsynth_state_dict
from flax import nnx
from torch_reference import TINY_DIT_CONFIGS, randomize, tiny_wan_dit, to_channels_last

from convert_weights import lucy_edit, recammaster, wan_dit
from mv2v_jax.geometry import relative_poses
from mv2v_jax.memory.builders import MemoryBatch, lucy_edit_streams, recammaster_streams
from mv2v_jax.memory.merging import MergeConfig
from mv2v_jax.memory.model import MemoryConfig, MemoryDiT, load_memory_dit
from mv2v_jax.memory.streams import Stream, pack_streams
from mv2v_jax.models.layers import in_compute_dtype
from mv2v_jax.models.wan.attention import AttentionConfig
from mv2v_jax.models.wan.dit import WanDiT, WanDiTConfig, load_dit
from mv2v_jax.models.weights import flatten_paths
from mv2v_jax.parallel.mesh import make_mesh
from mv2v_jax.train.loop import export_weights

RUNTIME = dict(attention=dict(impl="chunked", block_q=64, block_kv=128))
DIT = WanDiTConfig(
    dim=48,
    ffn_dim=96,
    num_heads=2,
    num_layers=6,
    in_channels=4,
    out_channels=4,
    text_dim=16,
    freq_dim=16,
    attention=AttentionConfig(impl="chunked", block_q=64, block_kv=128),
)


def jitted(model: MemoryDiT, keep_ratio: float | None = None):
    """`model(streams, t, context)` compiled (eager NNX dispatch is slow at these sizes)."""
    graphdef, state = nnx.split(model)
    return jax.jit(lambda streams, t, context: nnx.merge(graphdef, state)(streams, t, context, keep_ratio=keep_ratio))


def jitted_dit(model: MemoryDiT):
    """The base DiT alone on a packed sequence, compiled like `jitted`."""
    graphdef, state = nnx.split(model.dit)

    def call(streams, t, context):
        dit = nnx.merge(graphdef, state)
        return dit(pack_streams(streams, {(1, 2, 2): dit.patch_embedding}), t, context)

    return jax.jit(call)


def random_head(model: MemoryDiT):
    """Wan zero-initialises the output head; randomise it so outputs carry the whole network."""
    kernel = model.dit.head.proj.kernel
    kernel[...] = jax.random.normal(jax.random.key(3), kernel.shape) * 0.1
    return model


def inputs(rng, b=2, t=3, size=8, channels=4, slots=6):
    noisy = jnp.asarray(rng.standard_normal((b, t, size, size, channels)), jnp.float32)
    source = jnp.asarray(rng.standard_normal((b, t, size, size, channels)), jnp.float32)
    camera = jnp.asarray(rng.standard_normal((b, t, 12)), jnp.float32)
    memory = MemoryBatch.empty(b, slots, t, 2 * size, 2 * size, channels, camera=True)
    return noisy, source, camera, memory


def test_without_memory_reproduces_the_base_models_bit_for_bit(rng):
    model = random_head(MemoryDiT(MemoryConfig(dit=DIT), rngs=nnx.Rngs(0)))
    noisy, source, camera, _ = inputs(rng)
    t, context = jnp.array([700.0, 20.0]), jnp.asarray(rng.standard_normal((2, 5, 16)), jnp.float32)
    # Zero-initialised camera encoders and identity projectors: exactly plain Wan on [target, source].
    ours = jitted(model)(recammaster_streams(noisy, source, camera), t, context)
    plain = jitted_dit(model)(
        [Stream(noisy), Stream(source, role="input", frame_times=jnp.arange(3.0) + 3)], t, context
    )
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(plain))
    # LucyEdit: the channel-concatenated stream is the base model's whole input.
    lucy = random_head(
        MemoryDiT(MemoryConfig(dit=WanDiTConfig(**{**DIT.__dict__, "in_channels": 8}), adapters=()), rngs=nnx.Rngs(1))
    )
    ours = jitted(lucy)(lucy_edit_streams(noisy, source), t, context)
    plain = jitted_dit(lucy)([Stream(jnp.concatenate([noisy, source], -1))], t, context)
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(plain))


def test_empty_memory_slots_change_nothing(rng):
    model = random_head(MemoryDiT(MemoryConfig(dit=DIT), rngs=nnx.Rngs(0)))
    noisy, source, camera, memory = inputs(rng)
    memory = memory.__class__(
        latents=jnp.asarray(rng.standard_normal(memory.latents.shape), jnp.float32),
        valid=memory.valid,
        turns=memory.turns,
        camera=memory.camera,
    )
    t, context = jnp.array([700.0, 20.0]), jnp.asarray(rng.standard_normal((2, 5, 16)), jnp.float32)
    without = jitted(model)(recammaster_streams(noisy, source, camera), t, context)
    padded = jitted(model)(recammaster_streams(noisy, source, camera, memory), t, context)
    merged = jitted(model, 0.5)(recammaster_streams(noisy, source, camera, memory), t, context)
    np.testing.assert_allclose(np.asarray(padded), np.asarray(without), atol=1e-5)
    np.testing.assert_allclose(np.asarray(merged), np.asarray(without), atol=1e-5)


def test_memory_changes_the_output(rng):
    model = random_head(MemoryDiT(MemoryConfig(dit=DIT), rngs=nnx.Rngs(0)))
    noisy, source, camera, memory = inputs(rng)
    memory = MemoryBatch(
        latents=jnp.asarray(rng.standard_normal(memory.latents.shape), jnp.float32),
        valid=jnp.ones((2, 6), bool).at[1, 3:].set(False),
        turns=jnp.arange(12).reshape(2, 6),
        camera=memory.camera,
    )
    t, context = jnp.array([700.0, 20.0]), jnp.asarray(rng.standard_normal((2, 5, 16)), jnp.float32)
    without = np.asarray(jitted(model)(recammaster_streams(noisy, source, camera), t, context))
    with_memory = np.asarray(jitted(model)(recammaster_streams(noisy, source, camera, memory), t, context))
    merged = np.asarray(jitted(model, 0.5)(recammaster_streams(noisy, source, camera, memory), t, context))
    assert np.abs(with_memory - without).max() > 1e-3
    assert np.abs(merged - with_memory).max() > 0


def test_five_turns_compile_once(rng):
    model = random_head(MemoryDiT(MemoryConfig(dit=DIT), rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(model)

    @jax.jit
    def turn(state, noisy, source, camera, memory, t, context):
        return nnx.merge(graphdef, state)(
            recammaster_streams(noisy, source, camera, memory), t, context, keep_ratio=0.5
        )

    noisy, source, camera, memory = inputs(rng, b=1)
    context = jnp.zeros((1, 5, 16))
    outputs = []
    for turn_index in range(5):  # turn k has k earlier outputs in memory
        valid = jnp.arange(6)[None] < turn_index
        latents = memory.latents.at[:, :turn_index].set(1.0 + turn_index)
        batch = MemoryBatch(latents=latents, valid=valid, turns=jnp.arange(6)[None], camera=memory.camera)
        outputs.append(turn(state, noisy, source, camera, batch, jnp.array([500.0]), context))
    assert turn._cache_size() == 1
    assert all(np.isfinite(np.asarray(o)).all() for o in outputs)
    assert np.abs(np.asarray(outputs[4]) - np.asarray(outputs[0])).max() > 0


# -- ReCamMaster: a PyTorch reference of its block change around diffusers' Wan block ------------------


def recammaster_reference(name: str, seed: int):
    """diffusers' Wan transformer with ReCamMaster's per-block cam_encoder / projector
    (KwaiVGI/ReCamMaster diffsynth/models/wan_video_dit.py DiTBlock.forward), random weights."""
    model = tiny_wan_dit(name, seed)
    dim = model.config.num_attention_heads * model.config.attention_head_dim
    for block in model.blocks:
        block.cam_encoder = torch.nn.Linear(12, dim)
        block.projector = torch.nn.Linear(dim, dim)

        def forward(self, hidden_states, encoder_hidden_states, temb, rotary_emb):
            shift, scale, gate, c_shift, c_scale, c_gate = (self.scale_shift_table + temb.float()).chunk(6, dim=1)
            h = (self.norm1(hidden_states.float()) * (1 + scale) + shift).type_as(hidden_states)
            # ReCamMaster: target poses embedded, tiled over the source frames, broadcast over each frame.
            cam = self.cam_encoder(self.camera).repeat(1, 2, 1)
            h = h + cam.repeat_interleave(self.tokens_per_frame, dim=1)
            attn = self.projector(self.attn1(h, None, None, rotary_emb))
            hidden_states = (hidden_states.float() + attn * gate).type_as(hidden_states)
            h = self.norm2(hidden_states.float()).type_as(hidden_states)
            hidden_states = hidden_states + self.attn2(h, encoder_hidden_states, None, None)
            h = (self.norm3(hidden_states.float()) * (1 + c_scale) + c_shift).type_as(hidden_states)
            return (hidden_states.float() + self.ffn(h).float() * c_gate).type_as(hidden_states)

        block.forward = types.MethodType(forward, block)
    return randomize(model, seed)


def test_recammaster_checkpoint_converts_and_matches(tmp_path, rng):
    torch_model = recammaster_reference("1.3b", seed=4)
    b, t, h, w, c = 2, 3, 10, 14, 16
    target = rng.standard_normal((b, c, t, h, w)).astype(np.float32)
    source = rng.standard_normal((b, c, t, h, w)).astype(np.float32)
    camera = rng.standard_normal((b, t, 12)).astype(np.float32)
    context = rng.standard_normal((b, 9, 32)).astype(np.float32)
    timestep = np.array([999, 300])
    for block in torch_model.blocks:
        block.camera, block.tokens_per_frame = torch.from_numpy(camera), (h // 2) * (w // 2)
    with torch.no_grad():
        full = torch_model(
            torch.from_numpy(np.concatenate([target, source], 2)),
            torch.from_numpy(timestep),
            torch.from_numpy(context),
            return_dict=False,
        )[0]
    want = to_channels_last(full[:, :, :t])  # ReCamMaster keeps the target frames

    # The released checkpoint's form: DiffSynth's names plus the camera layers, as a torch .ckpt, written
    # from the layout itself (not from the converter's name mapping); every parameter once.
    state = diffsynth_state_dict(torch_model)
    assert len(state) == len(list(torch_model.parameters()))
    torch.save(state, tmp_path / "step20000.ckpt")
    assert recammaster.main([str(tmp_path / "step20000.ckpt"), str(tmp_path / "jax"), "--head-dim", "24"]) == 0
    model = load_memory_dit(tmp_path / "jax", **RUNTIME)
    streams = recammaster_streams(
        jnp.asarray(to_channels_last(torch.from_numpy(target))),
        jnp.asarray(to_channels_last(torch.from_numpy(source))),
        jnp.asarray(camera),
    )
    got = jitted(model)(streams, jnp.asarray(timestep), jnp.asarray(context))
    assert relative_error(got, want) <= 1e-4
    # The derived tokenizers are the tile-average of the converted patch embedding.
    base = np.asarray(model.dit.patch_embedding.kernel[...])
    coarse = np.asarray(model.tokenizers.embedders["1x4x4"].kernel[...])
    np.testing.assert_allclose(coarse, np.tile(base, (1, 2, 2, 1, 1)) / 4, rtol=1e-6)
    meta = json.loads((tmp_path / "jax" / "config.json").read_text())
    assert meta["model"] == "MemoryDiT" and meta["memory"]["adapters"] == ["camera"]
    # In memory, the same state dict gives the same parameters, derived modules included.
    assert_same_params(
        recammaster.convert_state_dict({k: v.numpy() for k, v in state.items()}, model.config.dit), model
    )


def assert_same_params(params: dict, model) -> None:
    written = flatten_paths(nnx.to_pure_dict(nnx.state(model)))
    params = flatten_paths(params)
    assert params.keys() == written.keys()
    for path, value in written.items():
        np.testing.assert_array_equal(params[path], value, err_msg="/".join(path))


def test_lucy_edit_folder_converts_with_the_dit_converter(tmp_path, rng):
    """LucyEdit is Wan2.2-TI2V-5B shaped with 96 = 48 noisy + 48 condition input channels (here 2 x 48 too)."""
    from diffusers import WanTransformer3DModel

    config = TINY_DIT_CONFIGS["ti2v-5b"] | {"in_channels": 96, "out_channels": 48}
    torch_model = randomize(WanTransformer3DModel(patch_size=(1, 2, 2), cross_attn_norm=True, **config), 5)
    torch_model.save_pretrained(tmp_path / "transformer")
    noisy = rng.standard_normal((1, 48, 3, 6, 10)).astype(np.float32)
    condition = rng.standard_normal((1, 48, 3, 6, 10)).astype(np.float32)
    context = rng.standard_normal((1, 9, 32)).astype(np.float32)
    timestep = torch.full((1, 3 * 3 * 5), 640)  # LucyEdit's expand_timesteps: one per token
    with torch.no_grad():
        want = to_channels_last(
            torch_model(
                torch.from_numpy(np.concatenate([noisy, condition], 1)),
                timestep,
                torch.from_numpy(context),
                return_dict=False,
            )[0]
        )
    assert wan_dit.main([str(tmp_path / "transformer"), str(tmp_path / "dit")]) == 0
    dit = load_dit(tmp_path / "dit", **RUNTIME)
    latents = jnp.asarray(np.concatenate([noisy, condition], 1).transpose(0, 2, 3, 4, 1))
    assert relative_error(dit.forward_video(latents, jnp.asarray(timestep.numpy()), jnp.asarray(context)), want) <= 1e-4

    assert lucy_edit.main([str(tmp_path / "transformer"), str(tmp_path / "memory")]) == 0
    model = load_memory_dit(tmp_path / "memory", **RUNTIME)
    assert model.config.adapters == () and not hasattr(model, "camera")
    streams = lucy_edit_streams(
        jnp.asarray(noisy.transpose(0, 2, 3, 4, 1)), jnp.asarray(condition.transpose(0, 2, 3, 4, 1))
    )
    assert relative_error(jitted(model)(streams, jnp.array([640.0]), jnp.asarray(context)), want) <= 1e-4
    state = {k: v.numpy() for k, v in torch_model.state_dict().items()}
    assert_same_params(lucy_edit.convert_state_dict(state, model.config.dit), model)


def test_relative_poses_match_recammaster(rng):
    """ReCamMaster's inference_recammaster.py get_relative_pose, reproduced with its own formulas."""

    def random_c2w():
        q, _ = np.linalg.qr(rng.standard_normal((3, 3)))
        q *= np.sign(np.linalg.det(q))
        c2w = np.eye(4)
        c2w[:3, :3], c2w[:3, 3] = q, rng.standard_normal(3)
        return c2w

    c2ws = [random_c2w() for _ in range(5)]
    reference = []
    for c2w in c2ws:  # abs2rel = I @ w2c_0;  pose_i = abs2rel @ c2w_i;  keep [:3, :]
        reference.append((np.eye(4) @ np.linalg.inv(c2ws[0]) @ c2w)[:3, :].reshape(12))
    w2c = np.stack([np.linalg.inv(c)[:3] for c in c2ws])
    got = relative_poses(w2c, w2c[0])
    np.testing.assert_allclose(got, np.stack(reference), atol=1e-6)
    np.testing.assert_allclose(got[0], np.eye(4)[:3].reshape(12), atol=1e-6)  # first target frame: identity


@pytest.mark.slow
def test_another_merge_schedule_keeps_trained_mergers_and_pools_at_new_blocks(rng, monkeypatch):
    """`with_merge`: a schedule with an extra merge block adds an untrained merger there (area pooling),
    keeps the trained ones, and merges at exactly the new schedule's blocks."""
    model = random_head(MemoryDiT(MemoryConfig(dit=DIT), rngs=nnx.Rngs(0)))
    before = set(model.mergers.blocks)
    trained = model.mergers[min(before)]
    trained.pointwise.kernel[...] = jnp.ones_like(trained.pointwise.kernel[...])
    early = MergeConfig(blocks=(1, 10, 20), fraction=0.5, keep_ratio=0.3)
    model.with_merge(early)
    assert set(model.mergers.blocks) == before | set(early.block_indices(DIT.num_layers))
    assert model.mergers[min(before)] is trained
    # The parameters stay where every weights directory has them: mergers/block{i}/...
    paths = {"/".join(path[:2]) for path in flatten_paths(nnx.to_pure_dict(nnx.state(model.mergers)))}
    assert paths == {f"block{i}/{p}" for i in model.mergers.blocks for p in ("depthwise", "pointwise")}
    noisy, source, camera, memory = inputs(rng, b=1)
    seen = []
    original = WanDiT.__call__

    def spy(self, seq, t, context, *, hooks=None, **kwargs):
        seen.append(sorted(hooks))
        return original(self, seq, t, context, hooks=hooks, **kwargs)

    monkeypatch.setattr(WanDiT, "__call__", spy)
    streams = recammaster_streams(noisy, source, camera, memory)
    out = model(streams, jnp.array([500.0]), jnp.zeros((1, 5, 16)), keep_ratio=0.3)
    assert np.isfinite(np.asarray(out)).all() and seen == [list(early.block_indices(DIT.num_layers))]
    with pytest.raises(ValueError, match="kernel"):
        model.with_merge(MergeConfig(kernel=5))


def test_serving_weights_in_the_compute_dtype_give_the_same_output(rng):
    """`in_compute_dtype` (what sampling serves): every Linear that computes in bfloat16 holds bfloat16
    weights, those that compute in float32 (time embedding, head) keep float32, the model it copied is
    untouched, and the output is the same bit for bit (a Linear casts its weights on every call anyway)."""
    dit = dataclasses.replace(DIT, dtype="bfloat16")
    model = random_head(MemoryDiT(MemoryConfig(dit=dit), rngs=nnx.Rngs(0)))
    served = in_compute_dtype(model)
    dtypes = {
        "/".join(map(str, path)): variable.value.dtype
        for path, variable in nnx.to_flat_state(nnx.state(served))
        if path[-1] == "kernel" and len(variable.value.shape) >= 2
    }
    assert dtypes["dit/blocks/ffn/fc1/kernel"] == jnp.bfloat16
    assert dtypes["dit/blocks/self_attn/q/kernel"] == jnp.bfloat16
    assert dtypes["dit/time_fc1/kernel"] == jnp.float32  # computes in float32, as Wan does
    assert dtypes["dit/head/proj/kernel"] == jnp.float32
    assert model.dit.blocks.ffn.fc1.kernel.value.dtype == jnp.float32
    noisy, source, camera, memory = inputs(rng)
    t, context = jnp.array([700.0, 20.0]), jnp.asarray(rng.standard_normal((2, 5, 16)), jnp.float32)
    streams = recammaster_streams(noisy, source, camera, memory)
    want = np.asarray(jitted(model, 0.5)(streams, t, context))
    np.testing.assert_array_equal(np.asarray(jitted(served, 0.5)(streams, t, context)), want)
    assert np.abs(want).max() > 0.1


def test_sampling_restores_weights_straight_into_the_serving_layout(tmp_path):
    """`load_memory_dit(..., mesh, serving=True)` (what sample.py does): each parameter read from the
    float32 file straight into its compute dtype and its serving sharding (whole on every device of a
    sequence split), with the values of the float32 model cast."""
    dit = dataclasses.replace(DIT, dtype="bfloat16")
    model = random_head(MemoryDiT(MemoryConfig(dit=dit), rngs=nnx.Rngs(0)))
    path = export_weights(nnx.state(model), model.config, tmp_path / "weights", {})
    mesh = make_mesh({"sequence": 4}, jax.devices()[:4])
    served = load_memory_dit(path, mesh, serving=True, dtype="bfloat16")
    want = nnx.to_flat_state(nnx.state(in_compute_dtype(model)))
    got = dict(nnx.to_flat_state(nnx.state(served)))
    for name, variable in want:
        value = got[name].value
        assert value.dtype == variable.value.dtype, name
        assert value.sharding.mesh.shape == mesh.shape and value.sharding.is_fully_replicated, name
        np.testing.assert_array_equal(np.asarray(value, np.float32), np.asarray(variable.value, np.float32))
    assert got[("dit", "blocks", "ffn", "fc1", "kernel")].value.dtype == jnp.bfloat16
