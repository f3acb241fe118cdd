"""The space-to-depth codec of the small model: exact on key frames, standardised latents, interpolation."""

import numpy as np
import pytest

from mv2v_jax.config import load_config
from mv2v_jax.data.synthetic import SceneConfig, generate_scene
from mv2v_jax.models.codec import TEMPORAL, SpaceToDepthCodec
from mv2v_jax.pipelines.build import build_codec

CONFIG = load_config("tiny_nvs.py")


def test_key_frames_round_trip_exactly_through_the_standardised_latents():
    codec = build_codec(CONFIG.sample.codec)
    frames = np.random.default_rng(0).integers(0, 256, (9, 8, 12, 3), np.uint8)
    latents = np.asarray(codec.encode(frames))
    assert latents.shape == (3, 2, 3, 48)
    decoded = codec.decode(latents)
    np.testing.assert_array_equal(decoded[::TEMPORAL], frames[::TEMPORAL])
    # In between: the linear interpolation of the neighbouring key frames, to rounding.
    halfway = (frames[0].astype(np.float32) + frames[4]) / 2
    np.testing.assert_allclose(decoded[2], halfway, atol=1.0)
    # Standardised: the latents are (pixel - mean) / std per colour, the colour fastest in the channels.
    pixel = frames[0, 0, 0] / 127.5 - 1.0
    np.testing.assert_allclose(latents[0, 0, 0, :3], (pixel - codec.mean) / np.asarray(codec.std), rtol=1e-5)


def test_the_configured_statistics_give_the_training_scenes_unit_scale_latents():
    codec = build_codec(CONFIG.sample.codec)
    scene = SceneConfig.from_config(dict(CONFIG.data.source.scene))
    latents = np.concatenate(
        [np.asarray(codec.encode(v)).reshape(-1, 3) for s in (101, 102) for v in generate_scene(s, scene)["video"][:4]]
    )
    assert np.all(np.abs(latents.mean(0)) < 0.5), latents.mean(0)  # two scenes: the mean of 20 is 0
    assert np.all((latents.std(0) > 0.7) & (latents.std(0) < 1.4)), latents.std(0)
    raw = np.concatenate(
        [np.asarray(SpaceToDepthCodec().encode(v)).reshape(-1, 3) for v in generate_scene(101, scene)["video"][:4]]
    )
    assert raw.std() < 0.6  # without the statistics the data would hide under unit noise


def test_bad_statistics_are_refused():
    with pytest.raises(ValueError, match="std > 0"):
        SpaceToDepthCodec(std=(1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="3 values"):
        SpaceToDepthCodec(mean=(0.0, 0.0))
