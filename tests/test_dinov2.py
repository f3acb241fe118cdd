"""The JAX DINOv2 is transformers' `Dinov2Model` / `Dinov2WithRegistersModel`: tiny random models (GELU and
SwiGLU, with and without registers) converted by the CLI match in float32 on a non-square image
(position embeddings resized); the resampling matrices are torch's interpolate; preprocessing is the
reference processor's; the converter names what is wrong."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import relative_error
from flax import nnx
from PIL import Image
from torch_reference import randomize
from transformers import Dinov2Config, Dinov2Model, Dinov2WithRegistersConfig, Dinov2WithRegistersModel
from transformers.models.bit.image_processing_pil_bit import BitImageProcessorPil
from transformers.models.dinov2.modeling_dinov2 import Dinov2SwiGLUFFN

from convert_weights.common import ConversionError
from convert_weights.dinov2 import config_from_json, convert_dinov2, convert_state_dict, main
from mv2v_jax.config import load_config
from mv2v_jax.models.vision.dinov2 import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Dinov2,
    antialiased_bicubic_matrix,
    bicubic_matrix,
    embed_frames,
    load_dinov2,
    preprocess,
)
from mv2v_jax.models.vision.dinov2 import (
    Dinov2Config as OurConfig,
)
from mv2v_jax.models.weights import module_from_params

TINY = dict(hidden_size=48, num_hidden_layers=2, num_attention_heads=4, image_size=70, patch_size=14)
VARIANTS = {
    "gelu": (Dinov2Model, Dinov2Config, {}),
    "swiglu": (Dinov2Model, Dinov2Config, {"use_swiglu_ffn": True}),
    "registers": (Dinov2WithRegistersModel, Dinov2WithRegistersConfig, {}),
    "registers-swiglu": (Dinov2WithRegistersModel, Dinov2WithRegistersConfig, {"use_swiglu_ffn": True}),
}


def tiny_dinov2(variant: str, seed: int = 0):
    model_class, config_class, extra = VARIANTS[variant]
    torch.manual_seed(seed)
    return randomize(model_class(config_class(**TINY, **extra, layer_norm_eps=1e-6)), seed)


def channels_last(x: torch.Tensor) -> jax.Array:
    return jnp.asarray(x.numpy().transpose(0, 2, 3, 1))


@pytest.mark.parametrize("size", [(3, 9), (16, 11), (37, 20)])
@pytest.mark.parametrize("antialias", [False, True])
def test_resampling_matrices_are_torch_interpolate(size, antialias):
    grid = torch.randn(1, 6, 7, 7, generator=torch.Generator().manual_seed(0))
    want = F.interpolate(grid, size=size, mode="bicubic", align_corners=False, antialias=antialias)[0].numpy()
    resize = antialiased_bicubic_matrix if antialias else bicubic_matrix
    got = np.einsum("hi,wj,cij->chw", resize(7, size[0]), resize(7, size[1]), grid[0].numpy().astype(np.float64))
    assert np.abs(got - want).max() <= 1e-5
    # jax.image.resize's cubic agrees with the antialiased mode only: why the plain mode has its own matrix.
    gap = np.abs(np.asarray(jax.image.resize(jnp.asarray(grid[0].numpy()), (6, *size), "cubic")) - want).max()
    assert (gap <= 1e-5) == antialias


@pytest.mark.parametrize("variant", VARIANTS)
def test_transformers_folder_converts_and_matches(tmp_path, variant):
    torch_model = tiny_dinov2(variant)
    torch_model.save_pretrained(tmp_path / "hf")
    assert main([str(tmp_path / "hf"), str(tmp_path / "jax")]) == 0
    assert_parity(torch_model, load_dinov2(tmp_path / "jax"), variant)


@pytest.mark.parametrize("variant", ["gelu", "registers-swiglu"])
def test_state_dict_in_memory_names_converts_and_matches(variant):
    """transformers 5's in-memory names (q_proj, ..., SwiGLU's gate_proj / up_proj), not the hub's."""
    torch_model = tiny_dinov2(variant, seed=3)
    assert any(".attention.q_proj." in name for name in torch_model.state_dict())
    config = OurConfig.from_config(config_from_json(torch_model.config.to_dict(), "reference"))
    params = convert_state_dict({k: v.numpy() for k, v in torch_model.state_dict().items()}, config)
    assert_parity(torch_model, module_from_params(lambda: Dinov2(config, rngs=nnx.Rngs(0)), params), variant)


def assert_parity(torch_model, model, variant: str) -> None:
    g = torch.Generator().manual_seed(1)
    # 5 x 7 patches (and a partial patch row) against a 5 x 5 position grid: resized; once the native grid.
    for height, width in ((75, 98), (70, 70)) if variant == "gelu" else ((75, 98),):
        pixels = torch.randn(2, 3, height, width, generator=g)
        masked = torch.rand(2, (height // 14) * (width // 14), generator=g) < 0.3
        with torch.no_grad():
            want = torch_model(pixel_values=pixels, bool_masked_pos=masked)
        got = model(channels_last(pixels), jnp.asarray(masked.numpy()))
        assert got.last_hidden_state.shape == want.last_hidden_state.shape
        assert relative_error(got.last_hidden_state, want.last_hidden_state.numpy()) <= 1e-4
        assert relative_error(got.pooler_output, want.pooler_output.numpy()) <= 1e-4
        registers = torch_model.config.to_dict().get("num_register_tokens", 0)
        patches = want.last_hidden_state[:, 1 + registers :].numpy()
        assert relative_error(got.patch_tokens, patches) <= 1e-4


PROCESSOR = BitImageProcessorPil(
    size={"shortest_edge": 256},
    crop_size={"height": 224, "width": 224},
    resample=3,  # PIL bicubic, as in facebook/dinov2-*/preprocessor_config.json
    image_mean=IMAGENET_MEAN,
    image_std=IMAGENET_STD,
)


def reference_preprocess(frames: np.ndarray) -> np.ndarray:
    pixels = [PROCESSOR(Image.fromarray(f), return_tensors="np")["pixel_values"][0] for f in frames]
    return np.stack(pixels).transpose(0, 2, 3, 1)


@pytest.mark.parametrize("shape", [(480, 832), (301, 417), (1080, 720)])
def test_preprocess_is_the_reference_processor(rng, shape):
    frames = rng.integers(0, 256, (2, *shape, 3), dtype=np.uint8)
    got = np.asarray(preprocess(frames))
    assert got.shape == (2, 224, 224, 3) and got.dtype == np.float32
    # One uint8 step is 1/255/0.229 = 0.017 here: 1e-6 means the same pixels, rounding aside.
    assert np.abs(got - reference_preprocess(frames)).max() <= 1e-6
    with pytest.raises(ValueError, match=r"uint8 frames \[N, H, W, 3\]"):
        preprocess(frames.astype(np.float32))


def test_embed_frames_is_the_normalised_reference_cls(tmp_path, rng):
    torch_model = tiny_dinov2("registers", seed=2)
    torch_model.save_pretrained(tmp_path / "hf")
    assert main([str(tmp_path / "hf"), str(tmp_path / "jax")]) == 0
    frames = rng.integers(0, 256, (5, 120, 160, 3), dtype=np.uint8)
    got = embed_frames(load_dinov2(tmp_path / "jax"), frames, batch_size=4)  # two batches, the last padded
    with torch.no_grad():
        cls = torch_model(pixel_values=torch.from_numpy(reference_preprocess(frames)).permute(0, 3, 1, 2)).pooler_output
    want = F.normalize(cls, dim=-1).numpy()
    assert got.shape == (5, 48) and relative_error(got, want) <= 1e-4
    np.testing.assert_allclose(np.linalg.norm(got, axis=-1), 1.0, rtol=1e-6)


def test_presets():
    giant = OurConfig.from_config(load_config("configs/dinov2.py:giant"))
    reference = Dinov2SwiGLUFFN(Dinov2Config(hidden_size=1536, mlp_ratio=4, use_swiglu_ffn=True))
    assert giant.mlp_dim == reference.gate_proj.out_features == 4096
    base = OurConfig.from_config(load_config("configs/dinov2.py:base-registers"))
    assert (base.hidden_size, base.num_heads, base.num_register_tokens, base.position_grid) == (768, 12, 4, 37)
    with pytest.raises(ValueError, match=r"unknown DINOv2 config keys \['hidden'\]"):
        OurConfig.from_config(dict(load_config("configs/dinov2.py:tiny")) | {"hidden": 4})


# -- converter errors ------------------------------------------------------------------------------


def write_checkpoint(folder, state_dict, config):
    import safetensors.torch

    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    safetensors.torch.save_file(state_dict, folder / "model.safetensors")
    return folder


@pytest.fixture
def checkpoint(tmp_path):
    tiny_dinov2("swiglu").save_pretrained(tmp_path / "saved")  # the hub names, as save_pretrained writes them
    import safetensors.torch

    state = safetensors.torch.load_file(tmp_path / "saved" / "model.safetensors")
    return state, json.loads((tmp_path / "saved" / "config.json").read_text())


def test_missing_extra_and_misshaped_tensors_are_named(tmp_path, checkpoint, capsys):
    state, config = checkpoint
    del state["encoder.layer.1.layer_scale2.lambda1"]
    state["classifier.weight"] = torch.zeros(10, 96)
    state["encoder.layer.0.mlp.weights_in.weight"] = torch.zeros(2 * 64, 48)
    src = write_checkpoint(tmp_path / "src", state, config)
    assert main([str(src), str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "layers/layer_scale2 layers [1]" in err and "classifier.weight" in err
    assert "encoder.layer.0.mlp.weights_in.weight -> layers/mlp/weights_in_kernel: (48, 2, 64) but the model" in err
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))


def test_bad_configs_are_refused(tmp_path, checkpoint):
    state, config = checkpoint
    for name, change, message in [
        ("vit", {"model_type": "vit"}, "model_type 'vit' is not one of"),
        ("relu", {"hidden_act": "relu"}, "hidden_act='relu'"),
        ("lacks", {"hidden_size": None}, "lacks 'hidden_size'"),
    ]:
        bad = {k: v for k, v in (config | change).items() if v is not None}
        with pytest.raises(ConversionError, match=message):
            convert_dinov2(write_checkpoint(tmp_path / name, state, bad), tmp_path / "out")
    src = write_checkpoint(tmp_path / "noconfig", state, config)
    (src / "config.json").unlink()
    with pytest.raises(ConversionError, match=r"config\.json: missing"):
        convert_dinov2(src, tmp_path / "out")
