"""sample.py end to end with tiny random models: multi-turn NVS and long-edit sessions on disk,
resumed by a second process, one compilation per session, and clear errors that leave a session as it was."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from flax import nnx

from mv2v_jax.config import load_config
from mv2v_jax.data.synthetic import PRESETS, generate_scene
from mv2v_jax.io.cameras import Trajectory, write_cameras
from mv2v_jax.io.video import read_video, write_video
from mv2v_jax.memory.model import MemoryConfig, MemoryDiT
from mv2v_jax.pipelines.build import build_codec
from mv2v_jax.pipelines.presets import preset_trajectory
from mv2v_jax.train.loop import export_weights

ROOT = Path(__file__).parents[1]
TINY = dict(dim=32, ffn_dim=64, num_heads=2, num_layers=3, text_dim=16, freq_dim=16)


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sample")
    c = build_codec(load_config("tiny_nvs.py").sample.codec).channels  # the experiment's latents
    for name, adapters, channels in (("nvs", ("camera",), c), ("long_edit", (), 2 * c)):  # long edit: + the source
        dit = TINY | dict(in_channels=channels, out_channels=c)
        config = MemoryConfig.from_config(dict(dit=dit, adapters=adapters))
        model = MemoryDiT(config, rngs=nnx.Rngs(0))
        export_weights(nnx.state(model), config, tmp / f"{name}_weights", {})
    scene = generate_scene(3, PRESETS["tiny"])  # 9 frames of 32 x 48
    write_video(tmp / "source.mp4", scene["video"][0], 8, lossless=True)
    write_video(tmp / "long.mp4", np.concatenate([scene["video"][v] for v in range(3)]), 8, lossless=True)  # 27
    return tmp


def sample(assets, *args, task="nvs", cache: Path | None = None):
    """sample.py in a new process; `cache` is JAX's persistent compilation cache (every program kept)."""
    env = dict(os.environ)
    if cache is not None:
        env |= {
            "JAX_COMPILATION_CACHE_DIR": str(cache),
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
            "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
        }
    overrides = [
        f"--config.sample.weights={assets / f'{task}_weights'}",
        "--config.sample.video.frames=9",
        "--config.sample.video.height=32",
        "--config.sample.video.width=48",
        "--config.sample.sampling.steps=2",
        "--config.sample.long_edit.segment_frames=9",
    ]
    return subprocess.run(
        [sys.executable, "sample.py", "--config", "configs/tiny_nvs.py", *overrides, "--task", task, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def records(session: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((session / "turns").glob("turn_*.json"))]


def test_nvs_session_feeds_its_memories_and_compiles_once_per_count(assets, tmp_path):
    """A 7-turn session: turn k feeds its k - 1 memories (k = 6 slots at most), so turn 1 runs plain
    ReCamMaster's token count; each count compiles once, and a later process takes every program it
    needs from the persistent compilation cache."""
    session, cache = tmp_path / "session", tmp_path / "jax_cache"
    turns = tmp_path / "turns.json"
    cameras = ["pan_left", "pan_right", "tilt_down", "pan_right", "pan_left"]
    turns.write_text(json.dumps([{"camera": c} for c in cameras]))
    first = sample(
        assets, "--session", str(session), "--video", str(assets / "source.mp4"), "--turns", str(turns), cache=cache
    )
    assert first.returncode == 0, first.stderr[-3000:]
    # A second process: turn 6 and 7 add the fifth and sixth memory.
    turns.write_text(json.dumps([{"camera": "tilt_up"}, {"camera": "zoom_in"}]))
    second = sample(assets, "--session", str(session), "--turns", str(turns), cache=cache)
    assert second.returncode == 0, second.stderr[-3000:]
    made = records(session)
    assert [r["turn"] for r in made] == [1, 2, 3, 4, 5, 6, 7]
    assert [len(r["retrieved"]) for r in made] == [0, 1, 2, 3, 4, 5, 6]  # every preset starts at the source
    assert [p["turn"] for p in made[2]["retrieved"]] == [2, 1]
    assert made[3]["retrieved"][0]["turn"] == 2 and made[3]["retrieved"][0]["score"] == pytest.approx(1.0)
    assert made[4]["retrieved"][0]["turn"] == 1
    target = 3 * 4 * 6
    assert made[0]["tokens"] == {"target": target, "memory": 0, "padding": 0, "per_block": [2 * target] * 3}
    for k, record in enumerate(made):
        assert record["tokens"]["padding"] == 0 and (record["tokens"]["memory"] > 0) == (k > 0)
        assert record["flops_per_forward"] > 0 and record["compiled_this_turn"]
        assert Path(record["files"]["video"]).exists() and Path(record["files"]["contact_sheet"]).exists()
    assert [r["compilations"] for r in made] == [1, 2, 3, 4, 5, 1, 2]  # per process: one per memory count
    assert made[6]["flops_per_forward"] > made[1]["flops_per_forward"] > made[0]["flops_per_forward"]
    clip = read_video(made[-1]["files"]["video"], 9, None)
    assert clip.frames.shape == (9, 32, 48, 3)
    # A new session in a third process needs programs for 0 and 1 memories: both are in the cache.
    entries = sorted(p.name for p in cache.rglob("*") if p.is_file())
    turns.write_text(json.dumps([{"camera": "pan_left"}, {"camera": "pan_right"}]))
    other = tmp_path / "other"
    third = sample(
        assets, "--session", str(other), "--video", str(assets / "source.mp4"), "--turns", str(turns), cache=cache
    )
    assert third.returncode == 0, third.stderr[-3000:]
    assert [len(r["retrieved"]) for r in records(other)] == [0, 1]
    assert sorted(p.name for p in cache.rglob("*") if p.is_file()) == entries  # nothing new compiled


def test_memory_that_does_not_overlap_is_not_fed(assets, tmp_path):
    """A turn looking the other way overlaps no earlier output (VideoFOV score 0): it is skipped, named in
    the record, and the turn runs the program without memory."""
    backward = preset_trajectory("pan_left", 9)
    turn_around = np.diag([-1.0, 1.0, -1.0])  # 180 degrees about the camera's vertical axis
    write_cameras(tmp_path / "backward.json", Trajectory(np.einsum("ij,fjk->fik", turn_around, backward)))
    turns = tmp_path / "turns.json"
    turns.write_text(json.dumps([{"camera": "pan_left"}, {"camera": str(tmp_path / "backward.json")}]))
    session = tmp_path / "session"
    result = sample(assets, "--session", str(session), "--video", str(assets / "source.mp4"), "--turns", str(turns))
    assert result.returncode == 0, result.stderr[-3000:]
    first, second = records(session)
    assert first["retrieved"] == first["skipped"] == []
    assert second["retrieved"] == [] and second["tokens"]["memory"] == 0
    (skipped,) = second["skipped"]
    assert skipped["turn"] == 1 and skipped["score"] == 0.0 and "min_score" in skipped["reason"]
    assert second["compilations"] == 1 and not second["compiled_this_turn"]  # turn 1's program again


def test_long_edit_session(assets, tmp_path):
    session = tmp_path / "edit"
    result = sample(
        assets, "--session", str(session), "--video", str(assets / "long.mp4"), "--prompt", "winter", task="long_edit"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    made = records(session)
    assert [r["segment"] for r in made] == [0, 1, 2] and [r["start_frame"] for r in made] == [0, 9, 18]
    assert made[0]["retrieved"] == []
    # 0-based like the record's own: segment 2 remembers segment 1 (the previous one, first) and segment 0.
    assert made[2]["retrieved"][0]["segment"] == 1 and {p["segment"] for p in made[2]["retrieved"]} == {0, 1}
    edited = read_video(session / "edited.mp4", 25, None)  # 27 frames in all
    assert edited.source_frames == 27
    again = sample(assets, "--session", str(session), "--video", str(assets / "long.mp4"), task="long_edit")
    assert again.returncode == 0 and len(records(session)) == 3  # nothing left to do


def snapshot(folder: Path) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_errors_are_clear_and_leave_the_session_untouched(assets, tmp_path):
    session = tmp_path / "session"
    ok = sample(assets, "--session", str(session), "--video", str(assets / "source.mp4"), "--camera", "pan_left")
    assert ok.returncode == 0, ok.stderr[-3000:]
    before = snapshot(session)

    unknown = sample(assets, "--session", str(session), "--camera", "barrel_roll")
    assert unknown.returncode == 1 and "barrel_roll" in unknown.stderr and "pan_left" in unknown.stderr

    cameras = tmp_path / "cameras.json"
    write_cameras(cameras, Trajectory(preset_trajectory("pan_left", 13)))
    wrong = sample(assets, "--session", str(session), "--camera", str(cameras))
    assert wrong.returncode == 1 and "13 frames but 9 were asked for" in wrong.stderr

    other = sample(assets, "--session", str(session), "--video", str(assets / "long.mp4"), task="long_edit")
    assert other.returncode == 1 and "is a 'nvs' session, not 'long_edit'" in other.stderr

    missing = subprocess.run(
        [
            sys.executable,
            "sample.py",
            "--config",
            "configs/tiny_nvs.py",
            "--config.sample.weights=/nonexistent/weights",
            "--session",
            str(session),
            "--camera",
            "pan_left",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert missing.returncode == 1 and "model weights not found at '/nonexistent/weights'" in missing.stderr
    assert snapshot(session) == before


def test_merge_schedule_and_budget_are_checked_before_anything_loads():
    from mv2v_jax.pipelines.build import build_pipeline, memory_budget

    sample_config = load_config("tiny_nvs.py").sample
    sample_config.weights = "/nonexistent/weights"
    sample_config.merge_schedule = "eager"
    with pytest.raises(ValueError, match=r"unknown sample.merge_schedule 'eager'; choose one of \['early', 'paper'\]"):
        build_pipeline(sample_config, "nvs")
    with pytest.raises(ValueError, match=r"retrieval.buckets=\[0, 2\] must be ascending slot counts ending at slots=6"):
        memory_budget({"slots": 6, "buckets": (0, 2)})
    budget = memory_budget({"slots": 6, "min_score": 0.1, "buckets": (0, 2, 6)})
    assert [budget.slots_for(n) for n in range(7)] == [0, 2, 2, 6, 6, 6, 6]
