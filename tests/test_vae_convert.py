"""The Wan VAE converter: native release files land every tensor where the diffusers folder does, the
name mappings agree with diffusers' own converter, the presets describe the released models, and bad
checkpoints are refused naming the offending tensors."""

import json

import jax
import numpy as np
import pytest
import safetensors.torch
import torch
from flax import nnx
from vae_reference import native_state_dict, tiny_wan_vae

from convert_weights.common import ConversionError, expected_params, plan
from convert_weights.wan_vae import (
    RULES,
    config_from_json,
    convert_vae,
    diffusers_to_native,
    diffusers_to_ours,
    main,
    native_to_diffusers,
)
from mv2v_jax.config import load_config
from mv2v_jax.models.wan.vae import WAN22_LATENTS_MEAN, WAN22_LATENTS_STD, WanVAE, WanVAEConfig, load_vae
from mv2v_jax.models.weights import read_config

# diffusers' `vae22_diffusers_config` (scripts/convert_wan_to_diffusers.py).
WAN22_DIFFUSERS = dict(
    base_dim=160,
    decoder_base_dim=256,
    z_dim=48,
    is_residual=True,
    in_channels=12,
    out_channels=12,
    patch_size=2,
    scale_factor_temporal=4,
    scale_factor_spatial=16,
    latents_mean=list(WAN22_LATENTS_MEAN),
    latents_std=list(WAN22_LATENTS_STD),
)
RELEASED = {"wan2.1": {}, "wan2.2": WAN22_DIFFUSERS}


def released_vae(name: str):
    """The full-size diffusers VAE on the meta device (shapes only)."""
    from diffusers import AutoencoderKLWan

    with torch.device("meta"):
        return AutoencoderKLWan(**RELEASED[name])


@pytest.mark.parametrize("name", RELEASED)
def test_presets_match_the_released_vaes(name):
    reference = released_vae(name)
    shapes = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    config = WanVAEConfig.from_config(load_config(f"configs/wan_vae.py:{name}"))
    arch = config_from_json(dict(reference.config), name)
    assert {k: getattr(config, k) for k in arch} == arch
    expected = expected_params(lambda: WanVAE(config, rngs=nnx.Rngs(0)))
    rename = lambda n: diffusers_to_ours(n, config.num_res_blocks, config.is_residual)
    pieces = plan(shapes, shapes.__getitem__, RULES, expected, rename)  # raises on any gap
    assert len(pieces) == len(shapes) == len(expected)
    assert sum(int(np.prod(s.shape)) for s in expected.values()) == sum(p.numel() for p in reference.parameters())


def test_native_names_match_diffusers_own_wan21_converter():
    """Our native -> diffusers mapping is `convert_wan_vae_to_diffusers` (single_file_utils.py) on the real
    Wan2.1 names, which `diffusers_to_native` regenerates from the diffusers model."""
    from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

    names = list(released_vae("wan2.1").state_dict())
    native = [diffusers_to_native(n, 2, False) for n in names]
    assert "decoder.upsamples.4.shortcut.weight" in native and "encoder.downsamples.8.time_conv.weight" in native
    assert sorted(convert_wan_vae_to_diffusers(dict.fromkeys(native, 0))) == sorted(names)
    assert [native_to_diffusers(n, 2) for n in native] == names


def test_wan22_native_names_round_trip():
    names = list(released_vae("wan2.2").state_dict())
    native = [diffusers_to_native(n, 2, True) for n in names]
    # The layout of Wan2.2 vae2_2.py: Down_ResidualBlock / Up_ResidualBlock wrap Sequentials.
    for name in (
        "encoder.downsamples.1.downsamples.2.time_conv.weight",
        "encoder.downsamples.0.downsamples.1.residual.6.weight",
        "decoder.upsamples.0.upsamples.3.time_conv.bias",
        "decoder.upsamples.2.upsamples.0.shortcut.weight",
        "decoder.middle.1.to_qkv.weight",
        "conv2.weight",
    ):
        assert name in native
    assert [native_to_diffusers(n, 2) for n in native] == names


@pytest.mark.parametrize("name", ["wan2.1", "wan2.2"])
def test_native_release_file_converts_like_the_diffusers_folder(tmp_path, name):
    """A native `.pth` (no config: architecture off the shapes, published latent statistics) fills every
    parameter with the same tensor as the diffusers folder, whose outputs test_vae_parity.py checks."""
    z_dim = 16 if name == "wan2.1" else 48
    torch_model = tiny_wan_vae(name, seed=1, z_dim=z_dim)
    torch_model.save_pretrained(tmp_path / "diffusers")
    (tmp_path / "native").mkdir()
    torch.save(native_state_dict(torch_model), tmp_path / "native" / f"{name.title()}_VAE.pth")
    assert main([str(tmp_path / "diffusers"), str(tmp_path / "from_diffusers")]) == 0
    assert main([str(tmp_path / "native"), str(tmp_path / "from_native")]) == 0

    from_diffusers, from_native = read_config(tmp_path / "from_diffusers"), read_config(tmp_path / "from_native")
    assert (from_native["source"]["format"], from_native["source"]["version"]) == ("native", name)
    published = WanVAEConfig.from_config(load_config(f"configs/wan_vae.py:{name}"))
    for key in ("latents_mean", "latents_std"):
        assert from_native["architecture"].pop(key) == list(getattr(published, key))
        from_diffusers["architecture"].pop(key)
    assert from_native["architecture"] == from_diffusers["architecture"]
    ours, theirs = (nnx.state(load_vae(tmp_path / d)) for d in ("from_native", "from_diffusers"))
    leaves = jax_leaves(ours), jax_leaves(theirs)
    assert len(leaves[0]) == len(leaves[1]) == len(torch_model.state_dict())
    for path in leaves[1]:
        np.testing.assert_array_equal(leaves[0][path], leaves[1][path], err_msg=path)


def jax_leaves(state) -> dict[str, np.ndarray]:
    return {"/".join(map(str, p)): np.asarray(v) for p, v in nnx.to_flat_state(state)}


def write_folder(folder, state_dict, config):
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    safetensors.torch.save_file(state_dict, folder / "diffusion_pytorch_model.safetensors")
    return folder


@pytest.fixture(scope="module")
def checkpoint():
    model = tiny_wan_vae("wan2.1")
    return {k: v.contiguous() for k, v in model.state_dict().items()}, dict(model.config)


def test_missing_tensor_is_named(tmp_path, checkpoint, capsys):
    state, config = checkpoint
    state = dict(state)
    del state["decoder.up_blocks.1.upsamplers.0.time_conv.bias"]
    src = write_folder(tmp_path / "src", state, config)
    assert main([str(src), str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "1 model parameters not filled: decoder/up_blocks/1/upsampler/time_conv/bias" in err
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out*"))


def test_extra_and_misshaped_tensors_are_named(tmp_path, checkpoint):
    state, config = checkpoint
    state = dict(state)
    state["encoder.down_blocks.0.lora.weight"] = torch.zeros(2, 2)
    state["decoder.mid_block.resnets.0.norm1.gamma"] = torch.zeros(32, 1, 1, 2)
    state["quant_conv.weight"] = torch.zeros(8, 7, 1, 1, 1)
    src = write_folder(tmp_path / "src", state, config)
    with pytest.raises(ConversionError) as e:
        convert_vae(src, tmp_path / "out")
    message = str(e.value)
    assert "checkpoint tensors not used: encoder.down_blocks.0.lora.weight" in message
    assert "decoder.mid_block.resnets.0.norm1.gamma -> decoder/mid_block/resnets/0/norm1/gamma: (64,)" in message
    assert "quant_conv.weight -> quant_conv/kernel: (1, 1, 1, 7, 8) but the model needs (1, 1, 1, 8, 8)" in message
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "change, message",
    [
        ({"attn_scales": [0.5]}, r"attn_scales\) is not supported"),
        ({"latents_mean": [0.0] * 3}, r"config\.json: latents_mean has 3 values; z_dim is 4"),
        ({"scale_factor_spatial": 16}, r"scale_factor_spatial=16 but the architecture compresses by 8"),
    ],
)
def test_bad_config_is_refused(tmp_path, checkpoint, change, message):
    state, config = checkpoint
    src = write_folder(tmp_path / "src", state, config | change)
    with pytest.raises(ConversionError, match=message):
        convert_vae(src, tmp_path / "out")


def test_not_a_vae_and_broken_json_are_refused(tmp_path, checkpoint):
    state, config = checkpoint
    src = write_folder(tmp_path / "dit", {"patch_embedding.weight": torch.zeros(2, 2)}, config)
    with pytest.raises(ConversionError, match="not a Wan VAE checkpoint"):
        convert_vae(src, tmp_path / "out")
    src = write_folder(tmp_path / "broken", state, config)
    (src / "config.json").write_text("{not json")
    with pytest.raises(ConversionError, match=r"config\.json is not valid JSON"):
        convert_vae(src, tmp_path / "out")


def test_native_checkpoint_without_published_statistics_is_refused(tmp_path):
    torch.save(native_state_dict(tiny_wan_vae("wan2.1", z_dim=4)), tmp_path / "vae.pth")
    with pytest.raises(ConversionError, match="no published latent mean/std for z_dim=4"):
        convert_vae(tmp_path / "vae.pth", tmp_path / "out")


def test_bfloat16_storage_and_runtime_overrides(tmp_path, checkpoint):
    state, config = checkpoint
    src = write_folder(tmp_path / "src", state, config)
    assert main([str(src), str(tmp_path / "out"), "--param-dtype", "bfloat16"]) == 0
    vae = load_vae(tmp_path / "out", conv_impl="xla3d")
    assert vae.config.conv_impl == "xla3d"
    kernel = vae.encoder.conv_in.kernel[...]
    assert kernel.dtype == np.dtype("bfloat16")
    want = state["encoder.conv_in.weight"].permute(2, 3, 4, 1, 0).to(torch.bfloat16).float().numpy()
    np.testing.assert_array_equal(np.asarray(kernel, np.float32), want)
    with pytest.raises(ValueError, match=r"\['z_dim'\] are fixed by the weights"):
        load_vae(tmp_path / "out", z_dim=8)


def test_loading_onto_a_mesh_replicates_the_parameters(tmp_path, checkpoint):
    from mv2v_jax.parallel.mesh import make_mesh

    state, config = checkpoint
    out = convert_vae(write_folder(tmp_path / "src", state, config), tmp_path / "out")
    vae = load_vae(out, mesh=make_mesh({"fsdp": -1}))
    kernel = vae.decoder.up_blocks[1].resnets[0].conv1.kernel[...]
    assert kernel.sharding.is_fully_replicated and len(kernel.sharding.device_set) == len(jax.devices())
    want = state["decoder.up_blocks.1.resnets.0.conv1.weight"].permute(2, 3, 4, 1, 0).numpy()
    np.testing.assert_array_equal(np.asarray(kernel), want)
