"""The block-DCT space-to-depth codec of the small model: exact with every frequency, standardised
latents, the DCT against a direct evaluation of its formula, interpolated in-between frames."""

import numpy as np
import pytest

from mv2v_jax.config import load_config
from mv2v_jax.data.synthetic import SceneConfig, generate_scene
from mv2v_jax.models.build import build_codec
from mv2v_jax.models.codec import TEMPORAL, SpaceToDepthCodec

CONFIG = load_config("tiny_nvs.py")
FRAMES = np.random.default_rng(0).integers(0, 256, (9, 8, 12, 3), np.uint8)


def test_every_frequency_round_trips_key_frames_exactly():
    codec = SpaceToDepthCodec(spatial=4, mean=tuple(np.linspace(-1, 1, 48)), std=tuple(np.linspace(0.5, 2, 48)))
    latents = np.asarray(codec.encode(FRAMES))
    assert latents.shape == (3, 2, 3, 48)
    decoded = codec.decode(latents)
    np.testing.assert_array_equal(decoded[::TEMPORAL], FRAMES[::TEMPORAL])
    halfway = (FRAMES[0].astype(np.float32) + FRAMES[4]) / 2  # in between: linear interpolation, to rounding
    np.testing.assert_allclose(decoded[2], halfway, atol=1.0)


def test_coefficients_are_the_2d_dct_of_each_block_standardised():
    codec = build_codec(CONFIG.sample.codec)
    latents = np.asarray(codec.encode(FRAMES))
    assert latents.shape == (3, 2, 3, codec.channels) and codec.channels == 12
    block = FRAMES[4, 4:8, 8:12].astype(np.float64) / 127.5 - 1.0  # key frame 1, block (1, 2)
    n = np.arange(4)
    for u in range(2):
        for v in range(2):
            cu, cv = (np.sqrt((1 if k == 0 else 2) / 4) for k in (u, v))
            wave = np.outer(np.cos(np.pi * (2 * n + 1) * u / 8), np.cos(np.pi * (2 * n + 1) * v / 8))
            for c in range(3):
                channel = (u * 2 + v) * 3 + c
                want = (cu * cv * np.sum(wave * block[..., c]) - codec.mean[channel]) / codec.std[channel]
                np.testing.assert_allclose(latents[1, 1, 2, channel], want, rtol=1e-5, atol=1e-5)


def test_dropped_frequencies_decode_to_the_block_means_at_one_frequency():
    codec = SpaceToDepthCodec(spatial=4, frequencies=1)
    decoded = codec.decode(codec.encode(FRAMES)).astype(np.float64)
    means = FRAMES[0].reshape(2, 4, 3, 4, 3).mean(axis=(1, 3))
    np.testing.assert_allclose(decoded[0, ::4, ::4], means, atol=0.51)


def test_the_configured_statistics_give_the_training_scenes_unit_scale_latents():
    codec = build_codec(CONFIG.sample.codec)
    scene = SceneConfig.from_config(dict(CONFIG.data.source.scene))
    videos = [v for seed in range(101, 109) for v in generate_scene(seed, scene)["video"][:5]]
    latents = np.concatenate([np.asarray(codec.encode(v)).reshape(-1, codec.channels) for v in videos])
    assert np.all(np.abs(latents.mean(0)) < 0.5), latents.mean(0)  # eight scenes: the mean over 20 is 0
    assert np.all((latents.std(0) > 0.5) & (latents.std(0) < 1.5)), latents.std(0)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="std must be > 0"):
        SpaceToDepthCodec(frequencies=1, mean=(0.0,) * 3, std=(1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="needs 12 values"):
        SpaceToDepthCodec(frequencies=2, mean=(0.0, 0.0, 0.0))
    with pytest.raises(ValueError, match=r"frequencies must be in \[1, 4\]"):
        SpaceToDepthCodec(frequencies=5)
