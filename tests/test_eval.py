"""The evaluations' own pieces: revisit scenes, cross-turn and cross-segment errors, edit masks, reporting."""

import dataclasses
import itertools

import numpy as np
import pytest

from mv2v_jax.data.synthetic import PRESETS
from mv2v_jax.eval import report
from mv2v_jax.eval.consistency import pair_errors, turn_errors
from mv2v_jax.eval.edit_consistency import cross_segment_error, object_colours, segment_errors
from mv2v_jax.eval.metrics import MIN_REGION_PIXELS, edit_mask, region_colour, warp_error
from mv2v_jax.eval.revisit import heading_degrees, revisit_scene

SCENE = dataclasses.replace(PRESETS["tiny"], height=24, width=36)


@pytest.fixture(scope="module")
def scene():
    return revisit_scene(7, SCENE, turns=3)


def covisible(scene, i, j) -> int:
    v, d, w = scene["video"], scene["depth"], scene["w2c"]
    return warp_error(v[i], v[j], d[i], d[j], w[i], w[j], scene["K"])[1]


def test_revisit_turns_see_what_the_source_never_shows(scene):
    assert scene["video"].shape == (4, SCENE.num_frames, SCENE.height, SCENE.width, 3)
    for turn in (1, 2, 3):
        assert covisible(scene, 0, turn) == 0
        behind = (heading_degrees(scene["w2c"][turn, 0]) - heading_degrees(scene["w2c"][0, 0])) % 360
        assert 90 < behind < 270
    assert sum(covisible(scene, i, j) for i, j in itertools.combinations((1, 2, 3), 2)) > 0


def test_revisit_scene_needs_two_turns():
    with pytest.raises(ValueError, match="at least 2 turns"):
        revisit_scene(0, SCENE, turns=1)


def test_cross_turn_errors_are_low_for_the_truth_and_high_for_strangers(scene):
    cams = [1, 2, 3]
    truth = [scene["video"][c] for c in cams]
    pairs = pair_errors(truth, scene, cams)
    assert pairs.shape == (3, 3, 2) and np.all(pairs[np.arange(3), np.arange(3)] == 0)
    strangers = [
        np.random.default_rng(c).integers(0, 256, v.shape, dtype=np.uint8) for c, v in zip(cams, truth, strict=True)
    ]
    noisy = pair_errors(strangers, scene, cams)
    truth_turns, noisy_turns = turn_errors(pairs), turn_errors(noisy)
    assert len(truth_turns) == 2
    finite = np.isfinite(truth_turns)
    assert finite.any() and np.all(np.asarray(truth_turns)[finite] < 0.1)
    assert np.all(np.asarray(noisy_turns)[finite] > 0.2)


def test_edit_mask_keeps_the_interior_of_what_the_edit_changed():
    source = np.zeros((2, 12, 12, 3), np.uint8)
    edited = source.copy()
    edited[:, 2:8, 3:9] = (200, 40, 10)
    edited[:, 10, 10] = (5, 5, 5)  # below the threshold: not an edit
    mask = edit_mask(source, edited)
    expected = np.zeros((2, 12, 12), bool)
    expected[:, 3:7, 4:8] = True  # one pixel in from every edge
    np.testing.assert_array_equal(mask, expected)
    np.testing.assert_allclose(region_colour(edited, mask), np.array([200, 40, 10]) / 255)
    assert np.isnan(region_colour(edited, np.zeros_like(mask))).all()
    assert mask.sum() >= MIN_REGION_PIXELS


def test_cross_segment_errors_skip_segments_without_objects():
    colours = np.array([[0.2, 0.2, 0.2], [0.5, 0.2, 0.2], [np.nan] * 3, [0.2, 0.5, 0.5]])
    # pairs with objects: (0,1) 0.1, (0,3) 0.2, (1,3) 0.3
    assert cross_segment_error(colours) == pytest.approx(0.2)
    np.testing.assert_allclose(segment_errors(colours), [0.1, np.nan, 0.25])
    segments = [np.full((2, 4, 4, 3), 51 * k, np.uint8) for k in range(2)]
    masks = [np.ones((2, 4, 4), bool), np.zeros((2, 4, 4), bool)]
    np.testing.assert_allclose(object_colours(segments, masks)[0], [0, 0, 0])
    assert np.isnan(object_colours(segments, masks)[1]).all()


def test_report_means_and_table():
    per_scene = {"memory": {"error": [0.1, 0.3, np.nan]}, "independent": {"error": [0.4, 0.4, 0.4]}}
    summary = report.mean_over_scenes(per_scene)
    assert summary["memory"]["error"] == pytest.approx(0.2)
    assert report.reduction(summary, "error", "memory", "independent") == pytest.approx(0.5)
    curves = report.mean_curves({"memory": [[0.1, 0.2], [0.3], [np.nan, 0.4]]})
    np.testing.assert_allclose(curves["memory"], [0.2, 0.3])
    text = report.table(summary, [("error", "cross-turn error", ".3f")], {"error": 0.01})
    assert text.splitlines()[2] == "| memory | 0.200 |"
    assert text.splitlines()[-1] == "| ground-truth videos (floor) | 0.010 |"


def test_reductions_read_as_lower_or_higher():
    summary = {"memory": {"error": 0.9}, "baseline": {"error": 1.0}, "worse": {"error": 1.2}}
    assert report.lower_or_higher(report.reduction(summary, "error", "memory", "baseline")) == "10.0% lower"
    assert report.lower_or_higher(report.reduction(summary, "error", "worse", "baseline")) == "20.0% higher"


def test_denoising_settings_empty_or_swap_the_memory():
    from mv2v_jax.eval.denoising import memory_settings

    batch = {
        "target": np.arange(3.0),
        "memory_latents": np.arange(6.0).reshape(3, 2),
        "memory_valid": np.ones((3, 2), bool),
        "memory_turns": np.array([[1, 2], [3, 4], [5, 6]]),
    }
    settings = memory_settings(batch)
    assert settings["memory"] is batch
    assert not settings["no memory"]["memory_valid"].any()
    np.testing.assert_array_equal(settings["no memory"]["memory_latents"], batch["memory_latents"])
    other = settings["another example's memory"]
    np.testing.assert_array_equal(other["memory_latents"], batch["memory_latents"][[2, 0, 1]])
    np.testing.assert_array_equal(other["memory_turns"], batch["memory_turns"][[2, 0, 1]])
    np.testing.assert_array_equal(other["target"], batch["target"])  # only the memory moves
