"""The JAX Wan VAEs are the diffusers ones: tiny random `AutoencoderKLWan`s (Wan2.1- and Wan2.2-style),
saved with `save_pretrained` and converted by the CLI, encode and decode alike in float32 on 1 + 4k frames
with odd latent grids. The diffusers reference runs its own chunked feature cache (`encode`/`decode` ->
`_encode`/`_decode`: first frame, then 4 frames per chunk; one latent frame per chunk)."""

import dataclasses
import functools

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from conftest import relative_error
from flax import nnx
from vae_reference import random_video, tiny_wan_vae, to_torch

from convert_weights.wan_vae import convert_state_dict, diffusers_to_native, main
from mv2v_jax.config import load_config
from mv2v_jax.models.wan import vae as vae_module
from mv2v_jax.models.wan.vae import Conv3d, FeatureCache, WanVAE, WanVAEConfig, load_vae
from mv2v_jax.models.weights import flatten_paths

BATCH = {"wan2.1": 2, "wan2.2": 1}
LATENT_GRID = {"wan2.1": (5, 7), "wan2.2": (3, 5)}  # odd rows and columns


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """name -> (torch model, our model loaded from the CLI's output), built once per module."""

    @functools.cache
    def build(name):
        torch_model = tiny_wan_vae(name)
        tmp = tmp_path_factory.mktemp(name)
        torch_model.save_pretrained(tmp / "diffusers")
        assert main([str(tmp / "diffusers"), str(tmp / "jax")]) == 0
        return torch_model, load_vae(tmp / "jax")

    return build


def channels_last(x: torch.Tensor) -> np.ndarray:
    return x.detach().numpy().transpose(0, 2, 3, 4, 1)


@pytest.mark.parametrize("name", ["wan2.1", "wan2.2"])
def test_encode_and_decode_match_diffusers(converted, name):
    torch_model, vae = converted(name)
    assert not torch_model.use_tiling  # diffusers' `_encode`/`_decode` run their chunked feature cache
    mean, std = np.array(torch_model.config.latents_mean), np.array(torch_model.config.latents_std)
    steps = (vae_module._encode_step._cache_size(), vae_module._decode_step._cache_size())
    compiled = []
    for frames in (5, 9):
        video = random_video(name, frames, seed=frames, batch=BATCH[name])
        with torch.no_grad():
            posterior = torch_model.encode(to_torch(video)).latent_dist
            want_mu, want_logvar = channels_last(posterior.mean), channels_last(posterior.logvar)
            want_video = channels_last(torch_model.decode(posterior.mode()).sample)
        mu, logvar = vae.encode_moments(video)
        latents = vae.encode(video)
        got_video = vae.decode(latents)

        assert mu.shape == want_mu.shape == (BATCH[name], 1 + (frames - 1) // 4, *LATENT_GRID[name], mean.size)
        assert relative_error(mu, want_mu) <= 1e-4
        assert relative_error(logvar, want_logvar) <= 1e-4
        assert relative_error(latents, (want_mu - mean) / std) <= 1e-4
        assert got_video.shape == want_video.shape == video.shape
        assert relative_error(got_video, want_video) <= 1e-4
        clamped = np.mean(np.abs(want_video) >= 1.0)
        assert 0.0 < clamped < 0.5  # the final clamp acts, and most values are compared as they are
        compiled.append((vae_module._encode_step._cache_size(), vae_module._decode_step._cache_size()))
    # Two steps per direction (first chunk, later chunks) for 5 frames; 9 frames compiles nothing new.
    assert compiled[0] == (steps[0] + 2, steps[1] + 2)
    assert compiled[1] == compiled[0]


@pytest.mark.parametrize("naming", ["diffusers", "native"])
def test_state_dict_converts_in_memory_as_the_cli_does(converted, naming):
    """The in-memory conversion fills every parameter with what the CLI wrote, from either naming."""
    torch_model, vae = converted("wan2.2")
    config = vae.config
    state_dict = {k: v.numpy() for k, v in torch_model.state_dict().items()}
    if naming == "native":
        state_dict = {
            diffusers_to_native(k, config.num_res_blocks, config.is_residual): v for k, v in state_dict.items()
        }
    params = flatten_paths(convert_state_dict(state_dict, config))
    written = flatten_paths(nnx.to_pure_dict(nnx.state(vae)))
    assert params.keys() == written.keys()
    for path, value in written.items():
        np.testing.assert_array_equal(params[path], value, err_msg="/".join(path))


def test_chunk_grouping_does_not_change_the_result(converted):
    """Larger chunks give the same latents and video. In them, the history that the reference's
    one-chunk-at-a-time pass takes from the cache (each causal conv's last 2 input frames, downsample3d's
    last frame, upsample3d's zeros before frame 1) comes from inside the chunk instead, computed with no
    cache at all: equality shows the cache carries exactly those frames across chunk boundaries.
    Wan2.2 has every time path of Wan2.1 plus the AvgDown3D / DupUp3D shortcuts."""
    _, vae = converted("wan2.2")
    video = random_video("wan2.2", 13, seed=3)
    latents = vae.encode(video)
    assert relative_error(vae.encode(video, chunk_frames=8), latents) <= 1e-5  # [0], [1:9], [9:13]
    decoded = vae.decode(latents)
    assert relative_error(vae.decode(latents, chunk_latents=2), decoded) <= 1e-5  # [0], [1:3], [3:4]


@pytest.mark.parametrize("kernel, stride", [((3, 3, 3), 1), ((3, 1, 1), 2), ((1, 1, 1), 1)])
def test_conv3d_implementations_agree(kernel, stride, rng):
    """The per-tap 2D convolutions (CPU default) compute XLA's 3D convolution."""
    convs = {
        impl: Conv3d(6, 5, kernel, WanVAEConfig(conv_impl=impl), nnx.Rngs(0), time_stride=stride)
        for impl in ("taps", "xla3d")
    }
    x = jnp.asarray(rng.standard_normal((2, 7, 5, 6, 6)), jnp.float32)
    taps, xla3d = convs["taps"](x), convs["xla3d"](x)
    assert taps.shape == xla3d.shape == (2, (7 - kernel[0]) // stride + 1, 5, 6, 5)
    np.testing.assert_allclose(taps, xla3d, rtol=1e-5, atol=1e-5)


def test_causal_conv_cache_equals_a_whole_sequence_causal_conv(rng):
    """A causal conv fed chunk by chunk through its cache equals one causal conv over the whole sequence
    (two zero frames in front), for chunks of 1 frame as for longer ones."""
    conv = Conv3d(4, 3, 3, WanVAEConfig(), nnx.Rngs(1))
    x = jnp.asarray(rng.standard_normal((1, 9, 4, 5, 4)), jnp.float32)
    whole = conv(jnp.pad(x, [(0, 0), (2, 0), (0, 0), (0, 0), (0, 0)]))
    entries, outputs = None, []
    for chunk in (slice(0, 1), slice(1, 2), slice(2, 6), slice(6, 9)):
        cache = FeatureCache(entries)
        outputs.append(conv.causal(x[:, chunk], cache))
        entries = cache.entries()
    np.testing.assert_allclose(jnp.concatenate(outputs, 1), whole, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def tiny_vae():
    """Abstract (no parameters allocated): the checks run before any computation."""
    config = WanVAEConfig.from_config(load_config("configs/wan_vae.py:tiny"))
    return nnx.eval_shape(lambda: WanVAE(config, rngs=nnx.Rngs(0)))


@pytest.mark.parametrize(
    "shape, kwargs, message",
    [
        ((1, 6, 16, 16, 3), {}, r"1 \+ 4k frames; got 6"),
        ((1, 5, 20, 16, 3), {}, r"multiples of 8; got 20x16"),
        ((1, 5, 16, 16, 4), {}, r"video must be \[B, F, H, W, 3\]"),
        ((5, 16, 16, 3), {}, r"video must be \[B, F, H, W, 3\]"),
        ((1, 5, 16, 16, 3), {"chunk_frames": 6}, r"chunk_frames must be a positive multiple of 4"),
    ],
)
def test_bad_video_is_refused_before_any_work(tiny_vae, shape, kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny_vae.encode(np.zeros(shape, np.float32), **kwargs)


def test_bad_latents_are_refused(tiny_vae):
    with pytest.raises(ValueError, match=r"latents must be \[B, F, H, W, 16\]"):
        tiny_vae.decode(np.zeros((1, 2, 3, 3, 4), np.float32))
    with pytest.raises(ValueError, match="chunk_latents must be at least 1"):
        tiny_vae.decode(np.zeros((1, 2, 3, 3, 16), np.float32), chunk_latents=0)


def test_config_rejects_typos_and_inconsistent_fields():
    with pytest.raises(ValueError, match=r"unknown VAE config keys \['z_dimm'\]"):
        WanVAEConfig.from_config({"z_dimm": 4})
    with pytest.raises(ValueError, match="latents_mean has 16 values; z_dim is 4"):
        WanVAEConfig(z_dim=4)
    with pytest.raises(ValueError, match="temporal_downsample has 3 entries"):
        WanVAEConfig(dim_mult=(1, 2))
    config = WanVAEConfig.from_config(load_config("configs/wan_vae.py:wan2.2"))
    assert (config.spatial_compression, config.temporal_compression, config.video_channels) == (16, 4, 3)
    assert dataclasses.replace(config, conv_impl="xla3d").resolved_conv_impl() == "xla3d"


def test_vae_as_a_pipeline_codec(rng):
    """The pipelines' codec view of a VAE: uint8 frames in, normalised latents, uint8 frames out."""
    from flax import nnx

    from mv2v_jax.config import load_config
    from mv2v_jax.models.codec import WanVAECodec
    from mv2v_jax.models.wan.vae import WanVAE, WanVAEConfig

    vae = WanVAE(WanVAEConfig.from_config(load_config("configs/wan_vae.py:tiny")), rngs=nnx.Rngs(0))
    codec = WanVAECodec(vae)
    frames = rng.integers(0, 256, (5, 16, 24, 3), dtype=np.uint8)
    latents = codec.encode(frames)
    assert latents.shape == (2, 2, 3, codec.channels) and codec.spatial == 8
    np.testing.assert_allclose(latents, vae.encode(jnp.asarray(frames, jnp.float32)[None] / 127.5 - 1)[0], atol=1e-6)
    decoded = codec.decode(latents)
    assert decoded.dtype == np.uint8 and decoded.shape == frames.shape
    with pytest.raises(ValueError, match="1 \\+ 4k"):
        codec.encode(frames[:4])
