"""Training examples: VideoFOV scores of a named scene are computed once per target and reused; the kinds
of memory an example gets (none, informative, a distractor) are what they say."""

import dataclasses

import numpy as np
from train_fixtures import latent_scene

from mv2v_jax.data import memory_sampling
from mv2v_jax.data.memory_sampling import (
    MemorySampling,
    exclusive_coverage,
    nvs_example,
    view_bitmasks,
    view_scores,
)
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


def shared_scene_record(seed: int = 0):
    """A latent scene record of a ReCamMaster-setting scene (every view starts at the still source,
    view 0): random latents, the rendered scene's cameras at its latent frames."""
    from mv2v_jax.data.synthetic import PRESETS, generate_scene

    config = dataclasses.replace(PRESETS["tiny"], num_cameras=8, camera_start="shared", surfaces="palette")
    scene = generate_scene(seed, config)
    w2c = scene["w2c"][:, ::4]
    rng = np.random.default_rng(seed)
    return {
        "latents": rng.standard_normal((8, w2c.shape[1], 4, 6, 4)).astype(np.float32),
        "w2c": w2c.astype(np.float32),
        "K": scene["K"].astype(np.float32),
        "image_size": np.array([config.height, config.width]),
        "context": np.zeros((1, 16), np.float32),
        "scene": f"shared{seed}",
    }


def kinds_of(sampling: MemorySampling, seeds: int = 24, scene_seed: int = 0):
    record = shared_scene_record(scene_seed)
    bits = view_bitmasks(record, 0)
    out = []
    for seed in range(seeds):
        example = nvs_example(record, np.random.default_rng(seed), sampling)
        target = next(v for v in range(8) if np.array_equal(record["latents"][v], example["target"]))
        chosen = [
            next(v for v in range(8) if np.array_equal(record["latents"][v], m))
            for m in example["memory_latents"][example["memory_valid"]]
        ]
        np.testing.assert_array_equal(example["inputs"], record["latents"][0])  # source_view 0, always
        out.append((target, chosen, exclusive_coverage(bits, target, 0)))
    return out


def test_examples_without_memory_with_informative_memory_and_with_a_distractor():
    base = dict(slots=3, min_memory=1, max_memory=3, source_view=0, fov_radius=float("inf"))
    for _target, chosen, _ in kinds_of(MemorySampling(**base, none_prob=1.0)):
        assert chosen == []
    informative = kinds_of(MemorySampling(**base, informative_prob=1.0, informative_coverage=0.3))
    assert all(max(coverage[chosen]) >= 0.3 for _, chosen, coverage in informative)
    for _target, chosen, coverage in kinds_of(MemorySampling(**base, distractor_prob=1.0, distractor_coverage=0.05)):
        assert len(chosen) == 1 and coverage[chosen[0]] < 0.05


def test_exclusive_coverage_is_what_a_view_sees_of_the_target_beyond_the_source():
    record = shared_scene_record(1)
    bits = view_bitmasks(record, 0)
    for target in range(1, 8):
        coverage = exclusive_coverage(bits, target, 0)
        assert coverage[0] == 0.0  # the source adds nothing to itself
        assert 0.0 < coverage[target] <= 1.0  # every target turns beyond the source (30-90 degrees)
        assert np.all((coverage >= 0) & (coverage <= coverage[target] + 1e-6))  # nobody adds more than itself
