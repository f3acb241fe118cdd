"""The JAX DiT is the PyTorch one: tiny random diffusers models, converted by the CLI from the
diffusers folder and from the native Wan layout, or in memory from a state dict, match in float32."""

import json

import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.torch
import torch
from conftest import relative_error
from flax import nnx
from torch_reference import TINY_DIT_CONFIGS, tiny_wan_dit, to_channels_last

from convert_weights.wan_dit import config_from_json, convert_state_dict, diffusers_to_native, main, native_to_diffusers
from mv2v_jax.models.wan.dit import WanDiT, WanDiTConfig, load_dit
from mv2v_jax.models.weights import module_from_params

B, F, H, W = 2, 3, 10, 14  # odd token grid (3, 5, 7)
TEXT_LEN = 9
RUNTIME = dict(attention=dict(impl="chunked", block_q=32, block_kv=64))


def inputs(torch_model, per_token: bool, seed=0):
    g = torch.Generator().manual_seed(seed)
    cfg = torch_model.config
    x = torch.randn(B, cfg.in_channels, F, H, W, generator=g)
    # Wan2.2 TI2V takes one timestep per token.
    t = torch.randint(0, 1000, (B, F * (H // 2) * (W // 2)), generator=g) if per_token else torch.tensor([999, 250])
    context = torch.randn(B, TEXT_LEN, cfg.text_dim, generator=g)
    return x, t, context


def assert_parity(torch_model, weights_dir_or_model, per_token):
    x, t, context = inputs(torch_model, per_token)
    with torch.no_grad():
        want = to_channels_last(torch_model(x, t, context, return_dict=False)[0])
    model = weights_dir_or_model
    if not isinstance(model, WanDiT):
        model = load_dit(model, **RUNTIME)
    got = model.forward_video(jnp.asarray(to_channels_last(x)), jnp.asarray(t.numpy()), jnp.asarray(context.numpy()))
    assert got.shape == want.shape
    assert relative_error(got, want) <= 1e-4


@pytest.mark.parametrize("name", TINY_DIT_CONFIGS)
def test_diffusers_folder_converts_and_matches(tmp_path, name):
    torch_model = tiny_wan_dit(name)
    torch_model.save_pretrained(tmp_path / "diffusers", max_shard_size="40KB")  # sharded, with an index
    assert (tmp_path / "diffusers" / "diffusion_pytorch_model.safetensors.index.json").exists()
    assert main([str(tmp_path / "diffusers"), str(tmp_path / "jax")]) == 0
    assert_parity(torch_model, tmp_path / "jax", per_token=name == "ti2v-5b")


def native_config(torch_model) -> dict:
    c = torch_model.config
    return dict(
        _class_name="WanModel",
        model_type="t2v",
        dim=c.num_attention_heads * c.attention_head_dim,
        num_heads=c.num_attention_heads,
        ffn_dim=c.ffn_dim,
        num_layers=c.num_layers,
        in_dim=c.in_channels,
        out_dim=c.out_channels,
        text_dim=c.text_dim,
        freq_dim=c.freq_dim,
        eps=c.eps,
        text_len=512,
        patch_size=list(c.patch_size),
        window_size=[-1, -1],
        qk_norm=True,
        cross_attn_norm=True,
    )


def native_state_dict(torch_model) -> dict[str, torch.Tensor]:
    return {diffusers_to_native(k): v.contiguous() for k, v in torch_model.state_dict().items()}


@pytest.mark.parametrize("name", TINY_DIT_CONFIGS)
def test_native_release_converts_and_matches(tmp_path, name):
    torch_model = tiny_wan_dit(name, seed=1)
    src = tmp_path / "native"
    src.mkdir()
    (src / "config.json").write_text(json.dumps(native_config(torch_model)))
    safetensors.torch.save_file(native_state_dict(torch_model), src / "diffusion_pytorch_model.safetensors")
    assert main([str(src), str(tmp_path / "jax")]) == 0
    assert_parity(torch_model, tmp_path / "jax", per_token=name == "ti2v-5b")


def test_native_pth_without_config_is_read_off_the_shapes(tmp_path):
    torch_model = tiny_wan_dit("14b", seed=2)
    torch.save(native_state_dict(torch_model), tmp_path / "model.pth")
    assert main([str(tmp_path / "model.pth"), str(tmp_path / "jax"), "--head-dim", "24"]) == 0
    assert_parity(torch_model, tmp_path / "jax", per_token=False)


@pytest.mark.parametrize("naming", ["diffusers", "native"])
def test_state_dict_converts_in_memory_and_matches(naming, capfd):
    torch_model = tiny_wan_dit("ti2v-5b", seed=3)
    state_dict = native_state_dict(torch_model) if naming == "native" else torch_model.state_dict()
    config = WanDiTConfig.from_config(config_from_json(dict(torch_model.config), "reference") | RUNTIME)
    params = convert_state_dict({k: v.numpy() for k, v in state_dict.items()}, config)
    assert_parity(torch_model, module_from_params(lambda: WanDiT(config, rngs=nnx.Rngs(0)), params), per_token=True)
    assert capfd.readouterr().err == ""  # a library call shows no progress bar


def test_name_mapping_round_trips():
    names = list(tiny_wan_dit("14b").state_dict())
    native = [diffusers_to_native(n) for n in names]
    assert "blocks.1.norm3.weight" in native and "head.modulation" in native and "blocks.0.modulation" in native
    assert [native_to_diffusers(n) for n in native] == names
    assert native_to_diffusers("model.diffusion_model.blocks.0.self_attn.q.weight") == "blocks.0.attn1.to_q.weight"


def test_bfloat16_storage_loads(tmp_path):
    torch_model = tiny_wan_dit("1.3b")
    torch_model.save_pretrained(tmp_path / "diffusers")
    assert main([str(tmp_path / "diffusers"), str(tmp_path / "jax"), "--param-dtype", "bfloat16"]) == 0
    model = load_dit(tmp_path / "jax", **RUNTIME)
    kernel = model.blocks.self_attn.q.kernel[...]
    assert kernel.dtype == jnp.bfloat16
    want = torch_model.blocks[1].attn1.to_q.weight.detach().T.to(torch.bfloat16).float().numpy()
    np.testing.assert_array_equal(np.asarray(kernel[1], np.float32), want)
