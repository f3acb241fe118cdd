"""Training examples: VideoFOV scores of a named scene are computed once per target and reused."""

import numpy as np
from train_fixtures import latent_scene

from mv2v_jax.data import memory_sampling
from mv2v_jax.data.memory_sampling import MemorySampling, nvs_example, view_scores
from mv2v_jax.geometry import Intrinsics
from mv2v_jax.retrieval.fov import fov_bitmask, fov_bitmasks, fov_scores

SAMPLING = MemorySampling(slots=3, min_memory=3, max_memory=3)


def test_view_scores_are_the_fov_scores_of_every_view_against_the_target():
    scene = latent_scene(0, views=5)
    w2c = scene["w2c"].astype(np.float64)
    intrinsics = Intrinsics.from_matrix(scene["K"], *scene["image_size"])
    target = 2
    expected = fov_scores(
        fov_bitmask(w2c[target], intrinsics, w2c[target, 0]), fov_bitmasks(w2c, intrinsics, w2c[target, 0])
    ).score
    np.testing.assert_array_equal(view_scores(scene, target, 1.0), np.asarray(expected))
    assert np.argmax(view_scores(scene, target, 1.0)) == target  # a view overlaps itself most


def test_cached_scores_give_the_same_examples_as_computed_ones():
    scene = latent_scene(1, views=6)
    unnamed = {k: v for k, v in scene.items() if k != "scene"}  # not cached: scored every time
    memory_sampling._SCORE_CACHE.clear()
    first = [nvs_example(scene, np.random.default_rng(seed), SAMPLING) for seed in range(8)]
    assert any(key[0] == scene["scene"] for key in memory_sampling._SCORE_CACHE)
    cached = [nvs_example(scene, np.random.default_rng(seed), SAMPLING) for seed in range(8)]
    computed = [nvs_example(unnamed, np.random.default_rng(seed), SAMPLING) for seed in range(8)]
    for a, b, c in zip(first, cached, computed, strict=True):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
            np.testing.assert_array_equal(a[key], c[key])
