"""The evaluations' own pieces: revisit scenes, cross-turn and cross-segment errors, edit masks, reporting."""

import dataclasses
import itertools

import numpy as np
import pytest

from mv2v_jax.data.synthetic import PRESETS
from mv2v_jax.eval import report
from mv2v_jax.eval.consistency import pair_errors, turn_errors
from mv2v_jax.eval.edit_consistency import pair_errors as segment_pair_errors
from mv2v_jax.eval.edit_consistency import region_colours, region_masks
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


def test_region_colours_are_nan_where_a_segment_does_not_show_the_region():
    segments = [np.full((2, 4, 4, 3), 51 * k, np.uint8) for k in range(2)]
    masks = [{"a": np.ones((2, 4, 4), bool)}, {"a": np.zeros((2, 4, 4), bool)}]
    np.testing.assert_allclose(region_colours(segments, masks)[0, 0], [0, 0, 0])
    assert np.isnan(region_colours(segments, masks)[1]).all()


def test_cross_segment_errors_match_the_same_wall_points_across_segments():
    """The ground-truth edit agrees with itself across segments where they see the same wall points (up to
    resampling); segments that each repaint the walls their own way do not."""
    from mv2v_jax.data.synthetic import LONG_PRESETS, generate_long_edit

    config = dataclasses.replace(
        LONG_PRESETS["tiny"],
        scene=dataclasses.replace(LONG_PRESETS["tiny"].scene, height=24, width=36, surfaces="palette"),
        num_segments=(4, 4),
        sweep_degrees=(540.0, 540.0),
        pitch_degrees=(-10.0, -10.0),
        edit="walls",
    )
    long = generate_long_edit(2, config)
    masks = region_masks(long)
    truth = [e[::4] for e in long["edited"]]
    pairs = segment_pair_errors(truth, long, masks)
    assert pairs.shape == (4, 4, 2) and pairs[..., 1].sum() > 0
    assert 0 < turn_errors(pairs)[-1] < 0.05  # the last segment sees walls the first ones showed
    rng = np.random.default_rng(0)
    # Each segment shifts every pixel's colour its own way (a different repaint per segment).
    own = [np.clip(t.astype(int) + rng.integers(-80, 80, 3), 0, 255).astype(np.uint8) for t in truth]
    assert turn_errors(segment_pair_errors(own, long, masks))[-1] > 3 * turn_errors(pairs)[-1]


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
    spread = report.intervals(per_scene)
    with_intervals = report.table(summary, [("error", "cross-turn error", ".3f")], {}, spread)
    low, high = spread["memory"]["error"]
    assert with_intervals.splitlines()[2] == f"| memory | 0.200 [{low:.3f}, {high:.3f}] |"
    assert spread["independent"]["error"] == (pytest.approx(0.4), pytest.approx(0.4))  # no spread, no width


def test_bootstrap_intervals_cover_the_mean_narrow_with_scenes_and_pair_the_settings():
    rng = np.random.default_rng(0)
    few, many = rng.normal(1.0, 0.3, 8), rng.normal(1.0, 0.3, 128)
    (low_few, high_few), (low_many, high_many) = (report.intervals({"s": {"m": v}})["s"]["m"] for v in (few, many))
    assert low_few < few.mean() < high_few and low_many < many.mean() < high_many
    assert high_many - low_many < 0.5 * (high_few - low_few)  # ~ 1 / sqrt(scenes)
    # Paired: a setting 20% below its baseline on every scene is 20% lower in every resample, however
    # much the scenes differ from each other.
    baseline = rng.uniform(0.1, 1.0, 16)
    per_scene = {"ours": {"e": 0.8 * baseline}, "base": {"e": baseline}}
    assert report.reduction_interval(per_scene, "e", "ours", "base") == (pytest.approx(0.2), pytest.approx(0.2))
    assert report.lower_or_higher(0.2, (0.1, 0.3)) == "20.0% lower (95% interval 10.0% lower to 30.0% lower)"


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


def test_every_turn_of_the_demo_scene_retrieves_the_turns_before_it():
    """The shipped configuration on `make demo`'s scene: VideoFOV at infinite radius (views that share a
    centre), so no earlier turn is skipped as irrelevant; turn 2 retrieves turn 1 (it did not, with the
    1 m sphere and the old random starts: score 0.00)."""
    from mv2v_jax.config import load_config
    from mv2v_jax.data.synthetic import SceneConfig
    from mv2v_jax.eval.consistency import session_frame
    from mv2v_jax.eval.demo import DEMO_SEED
    from mv2v_jax.geometry import Intrinsics
    from mv2v_jax.retrieval.fov import retrieve_by_fov

    config = load_config("configs/tiny_nvs.py")
    retrieval, video = config.sample.retrieval, config.sample.video
    scene = revisit_scene(DEMO_SEED, SceneConfig.from_config(dict(config.data.source.scene)), turns=5)
    turns = [session_frame(scene["w2c"][c], scene["w2c"][0])[::4] for c in range(1, 6)]
    intrinsics = Intrinsics.from_hfov(retrieval.hfov_degrees, video.height, video.width)
    for t in range(1, 5):
        selection, scores = retrieve_by_fov(turns[t], turns[:t], retrieval.slots, intrinsics, retrieval.fov_radius)
        assert len(selection.rows()) == min(t, retrieval.slots)
        assert np.all(np.asarray(scores.score) > retrieval.min_score)
    _, first = retrieve_by_fov(turns[1], turns[:1], 1, intrinsics, retrieval.fov_radius)
    assert float(first.score[0]) > 0.3


def test_shared_start_revisit_turns_start_at_the_source_and_see_beyond_it():
    shared = dataclasses.replace(SCENE, camera_start="shared", surfaces="palette")
    scene = revisit_scene(3, shared, turns=3)
    assert scene["video"].shape[0] == 4
    np.testing.assert_allclose(scene["w2c"][1:, 0], np.broadcast_to(scene["w2c"][0, 0], (3, 3, 4)), atol=1e-9)
    for turn in (1, 2, 3):  # each ends looking where the still source never does
        last = dict(scene, video=scene["video"][:, -1:], depth=scene["depth"][:, -1:], w2c=scene["w2c"][:, -1:])
        assert covisible(last, 0, turn) < 0.9 * covisible(last, turn, turn)
    assert covisible(scene, 1, 2) > 0 and covisible(scene, 2, 3) > 0  # later turns see again what earlier ones saw


def test_memory_only_cells_are_what_memory_sees_and_the_source_does_not():
    from mv2v_jax.config import load_config
    from mv2v_jax.eval.denoising import nvs_memory_only
    from mv2v_jax.geometry import relative_poses
    from mv2v_jax.trajectories import camera_trajectory

    config = load_config("configs/tiny_nvs.py")
    left = camera_trajectory("pan_left", (0, 0, 1.5), 0.0, 0.0, 80.0, 9)[::4]  # 0, 40, 80 degrees
    source = left[0]
    example = {
        "target": np.zeros((3, 12, 18, 12)),
        "camera": relative_poses(left, source),
        "memory_camera": relative_poses(left, source)[None].repeat(2, 0),
        "memory_valid": np.array([True, False]),
    }
    mask = nvs_memory_only(example, None, config)
    assert mask.shape == (3, 12, 18)
    assert not mask[0].any()  # the first frame is the source's own view
    assert mask[2].mean() > 0.9  # 80 degrees on, almost nothing of the 65-degree source is left
    assert 0.3 < mask[1].mean() < 0.9
    example["memory_valid"][:] = False
    assert not nvs_memory_only(example, None, config).any()
