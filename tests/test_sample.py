"""sample.py end to end with tiny random models: multi-turn NVS and long-edit sessions on disk,
resumed by a second process, one compilation per session, and clear errors that leave a session as it was."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

from mv2v_jax.config import load_config
from mv2v_jax.data.synthetic import PRESETS, generate_scene
from mv2v_jax.io.cameras import Trajectory, write_cameras
from mv2v_jax.io.video import read_video, write_video
from mv2v_jax.memory.model import MemoryConfig, MemoryDiT
from mv2v_jax.models.build import build_codec
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


def sample(assets, *args, task="nvs", cache: Path | None = None, cwd: Path = ROOT, driver: str | None = None):
    """sample.py in a new process; `cache` is the user cache folder (mv2v_jax.cache; by default one the
    module's tests share), every program kept. `driver`: Python code that runs sample.py (its argv[1:]
    is sample.py's command line); its stderr then goes into stdout, so lines keep the order they were
    written in."""
    env = dict(os.environ) | {
        "MV2V_CACHE_DIR": str(cache or assets / "cache"),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
        "PYTHONPATH": str(ROOT),
    }
    overrides = [
        f"--config.sample.weights={assets / f'{task}_weights'}",
        "--config.sample.video.frames=9",
        "--config.sample.video.height=32",
        "--config.sample.video.width=48",
        "--config.sample.sampling.steps=2",
        *(["--config.sample.long_edit.segment_frames=9"] if task == "long_edit" else []),  # refused for nvs
    ]
    python = [sys.executable, "-c", driver] if driver else [sys.executable]
    command = [*python, str(ROOT / "sample.py"), "--config", str(ROOT / "configs/tiny_nvs.py"), *overrides]
    return subprocess.run(
        [*command, "--task", task, *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if driver else subprocess.PIPE,
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
    # 6 slots, a program per count (the shipped config has 3 slots and buckets (0, 3)).
    per_count = ("--config.sample.retrieval.slots=6", "--config.sample.retrieval.buckets=(0,1,2,3,4,5,6)")
    first = sample(
        assets,
        *per_count,
        "--session",
        str(session),
        "--video",
        str(assets / "source.mp4"),
        "--turns",
        str(turns),
        cache=cache,
    )
    assert first.returncode == 0, first.stderr[-3000:]
    # A second process: turn 6 and 7 add the fifth and sixth memory.
    turns.write_text(json.dumps([{"camera": "tilt_up"}, {"camera": "zoom_in"}]))
    second = sample(assets, *per_count, "--session", str(session), "--turns", str(turns), cache=cache)
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
    entries = sorted(p.name for p in (cache / "jax").rglob("*") if p.is_file())
    assert len(entries) >= 7  # the seven programs are in the cache
    turns.write_text(json.dumps([{"camera": "pan_left"}, {"camera": "pan_right"}]))
    other = tmp_path / "other"
    third = sample(
        assets,
        *per_count,
        "--session",
        str(other),
        "--video",
        str(assets / "source.mp4"),
        "--turns",
        str(turns),
        cache=cache,
    )
    assert third.returncode == 0, third.stderr[-3000:]
    assert [len(r["retrieved"]) for r in records(other)] == [0, 1]
    assert sorted(p.name for p in (cache / "jax").rglob("*") if p.is_file()) == entries  # nothing new compiled


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
    record = (session / "turns" / "turn_002.json").read_text()
    for lost in ("turns/turn_002.json", "turns/turn_002.png", "edited.mp4"):  # derived from the bank: made again
        (session / lost).unlink()
    again = sample(assets, "--session", str(session), "--video", str(assets / "long.mp4"), task="long_edit")
    assert again.returncode == 0 and len(records(session)) == 3  # nothing left to do but the lost files
    assert "wrote the missing files of turn(s) [2] again from the memory bank" in again.stderr
    assert (session / "turns" / "turn_002.json").read_text() == record
    assert (session / "turns" / "turn_002.png").exists() and (session / "edited.mp4").exists()


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


def test_a_session_knows_its_video_by_content_and_says_what_reading_changed(assets, tmp_path):
    """The source video is identified by its frames: a copy given by a relative path on turn 2 is the same
    video, another video is refused by name. Reading a 27-frame video for 9 frames says so, once, in one
    line and in the turn's record."""
    session = tmp_path / "session"
    first = sample(assets, "--session", str(session), "--video", str(assets / "long.mp4"), "--camera", "pan_left")
    assert first.returncode == 0, first.stderr[-3000:]
    notes = [line for line in first.stderr.splitlines() if line.startswith("note: ")]
    assert notes == [f"note: {assets / 'long.mp4'}: 27 frames, frames 0-8 used (18 dropped)"], first.stderr[-3000:]
    (record,) = records(session)
    assert record["source"]["video"] == str(assets / "long.mp4")
    assert record["source"] | {"sha256": None} == {
        "video": str(assets / "long.mp4"),
        "sha256": None,
        "frames": 9,
        "source_frames": 27,
        "frames_used": 9,
        "frames_dropped": 18,
        "first_frame": 0,
        "stride": 1,
        "source_fps": 8.0,
        "source_size": [32, 48],
        "resized_to": None,
        "cropped_to": None,
        "crop_offset": None,
    }
    copy = tmp_path / "videos" / "copy.mp4"
    copy.parent.mkdir()
    copy.write_bytes((assets / "long.mp4").read_bytes())
    second = sample(assets, "--session", "session", "--video", "videos/copy.mp4", "--camera", "pan_right", cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert [r["turn"] for r in records(session)] == [1, 2]
    before = snapshot(session)
    backwards = tmp_path / "videos" / "backwards.mp4"  # the same frames in another order
    write_video(backwards, read_video(assets / "long.mp4", 9, None).frames[::-1], 8, lossless=True)
    other = sample(assets, "--session", str(session), "--video", str(backwards), "--camera", "tilt_up")
    assert other.returncode == 1
    assert f"session {session} edits the video {assets / 'long.mp4'} (sha256 " in other.stderr
    assert f"not {backwards} (sha256 " in other.stderr
    assert snapshot(session) == before


def test_reading_a_video_says_what_it_changed(tmp_path):
    """A 12-frame 4:3 video read as 9 frames at 32 x 48: frames dropped, the resize and the centre crop,
    in one line and as record fields."""
    frames = np.random.default_rng(0).integers(0, 256, (12, 48, 64, 3), dtype=np.uint8)
    write_video(tmp_path / "four_three.mp4", frames, 30, lossless=True)
    clip = read_video(tmp_path / "four_three.mp4", 9, (32, 48))
    assert clip.describe(8) == (
        f"{tmp_path / 'four_three.mp4'}: 12 frames, frames 0-8 used (3 dropped); 64x48 resized to 48x36; "
        "centre-cropped to 48x32 (from top 2, left 0); 30 fps, written at 8 fps"
    )
    assert clip.changes() == {
        "source_frames": 12,
        "frames_used": 9,
        "frames_dropped": 3,
        "first_frame": 0,
        "stride": 1,
        "source_fps": 30.0,
        "source_size": [48, 64],
        "resized_to": [36, 48],
        "cropped_to": [32, 48],
        "crop_offset": [2, 0],
    }
    assert read_video(tmp_path / "four_three.mp4", 9, None).describe() == (
        f"{tmp_path / 'four_three.mp4'}: 12 frames, frames 0-8 used (3 dropped)"
    )


def test_a_failed_first_turn_creates_nothing(assets, tmp_path):
    """A first turn that fails after the model loaded (a video width the DiT's patches do not divide is
    only known then) leaves no session, no hidden folder and no parent folder behind; the corrected
    command then just works."""
    session = tmp_path / "new" / "session"
    args = ("--session", str(session), "--video", str(assets / "source.mp4"), "--camera", "pan_left")
    failed = sample(assets, *args, "--config.sample.video.width=44")
    assert failed.returncode == 1
    assert "sample.video.width=44: must be a multiple of 8" in failed.stderr, failed.stderr[-3000:]
    assert list(tmp_path.iterdir()) == []
    fixed = sample(assets, *args)
    assert fixed.returncode == 0, fixed.stderr[-3000:]
    assert [r["turn"] for r in records(session)] == [1]


def test_lost_turn_files_are_written_again_from_the_bank(assets, tmp_path):
    """A turn's files are derived from its bank entry: deleted ones are written again on the next open."""
    session = tmp_path / "session"
    first = sample(assets, "--session", str(session), "--video", str(assets / "source.mp4"), "--camera", "pan_left")
    assert first.returncode == 0, first.stderr[-3000:]
    record = (session / "turns" / "turn_001.json").read_text()
    for suffix in (".json", ".png", ".mp4"):
        (session / "turns" / f"turn_001{suffix}").unlink()
    second = sample(assets, "--session", str(session), "--camera", "pan_right")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "wrote the missing files of turn(s) [1] again from the memory bank" in second.stderr
    assert (session / "turns" / "turn_001.json").read_text() == record
    assert read_video(session / "turns" / "turn_001.mp4", 9, None).frames.shape == (9, 32, 48, 3)
    assert (session / "turns" / "turn_001.png").stat().st_size > 0


# Runs sample.py with the next turn's preparation spied on: when it starts, the spy says (on stderr)
# which turn files are in place, after taking and releasing the session's lock (refused while held).
SPY_ON_PREPARATION = """
import json, runpy, sys
from mv2v_jax.pipelines.nvs import NVSPipeline
from mv2v_jax.retrieval.bank import MemoryBank

prepare = NVSPipeline.prepare_next_turn

def spied(self, session, *args, **kwargs):
    MemoryBank.open(session.path / "bank").close()
    files = sorted(p.name for p in (session.path / "turns").iterdir())
    print("preparing the next turn; files in place:", json.dumps(files), file=sys.stderr, flush=True)
    return prepare(self, session, *args, **kwargs)

NVSPipeline.prepare_next_turn = spied
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_a_turn_is_written_and_announced_before_the_next_turn_is_prepared(assets, tmp_path):
    """The turn's files are in place, its line is out (through a pipe, as a program reading sample.py
    sees it) and the session is released before the next turn's program is compiled: the user has the
    result, and could start the next turn, meanwhile."""
    session = tmp_path / "session"
    args = ("--session", str(session), "--video", str(assets / "source.mp4"), "--camera", "pan_left")
    result = sample(assets, *args, driver=SPY_ON_PREPARATION)
    assert result.returncode == 0, result.stdout[-3000:]
    lines = result.stdout.splitlines()
    position = lambda test: next((i for i, line in enumerate(lines) if test(line)), None)
    announced = position(lambda line: line.startswith("turn 1: ") and line.endswith("turn_001.mp4"))
    spied = position(lambda line: line.startswith("preparing the next turn; files in place: "))
    compiled = position(lambda line: line.startswith("compiling the next turn's denoiser"))  # 0 -> 3 slots
    assert None not in (announced, spied, compiled) and announced < spied < compiled, result.stdout[-3000:]
    assert json.loads(lines[spied].split(": ", 1)[1]) == ["turn_001.json", "turn_001.mp4", "turn_001.png"]


def test_merge_schedule_and_budget_are_checked_before_anything_loads():
    from mv2v_jax.pipelines.build import build_pipeline, memory_budget

    sample_config = load_config("tiny_nvs.py").sample
    sample_config.weights = "/nonexistent/weights"
    sample_config.merge_schedule = "eager"
    with pytest.raises(ValueError, match=r"unknown sample.merge_schedule 'eager'; choose one of \['early', 'paper'\]"):
        build_pipeline(sample_config, "nvs")
    with pytest.raises(ValueError, match=r"retrieval.buckets=\[2, 0\] must be ascending slot counts >= 0"):
        memory_budget({"slots": 6, "buckets": (2, 0)})
    assert memory_budget({"slots": 6, "buckets": (0, 2)}).buckets == (0, 2, 6)  # slots is always a bucket
    assert memory_budget({"slots": 1, "buckets": (0, 6)}).buckets == (0, 1)  # a lowered budget keeps its buckets
    budget = memory_budget({"slots": 6, "min_score": 0.1, "buckets": (0, 2, 6)})
    assert [budget.slots_for(n) for n in range(7)] == [0, 2, 2, 6, 6, 6, 6]


def bank_latents(session: Path) -> list[np.ndarray]:
    from mv2v_jax.retrieval.bank import MemoryBank

    with MemoryBank.open(session / "bank", readonly=True) as bank:
        return [bank.load(e.entry_id).latents for e in sorted(bank.entries(), key=lambda e: e.turn)]


def busy_weights(assets, task: str, folder: Path) -> str:
    """The task's tiny weights with every parameter moved off its initial value (memory and camera layers
    start at zero, which would make the memory path a no-op)."""
    from mv2v_jax.memory.model import load_memory_dit

    model = load_memory_dit(str(assets / f"{task}_weights"))
    state = nnx.state(model, nnx.Param)
    keys = iter(jax.random.split(jax.random.key(1), len(jax.tree.leaves(state))))
    nnx.update(model, jax.tree.map(lambda p: p + 0.05 * jax.random.normal(next(keys), p.shape), state))
    export_weights(nnx.state(model), model.config, folder, {})
    return f"--config.sample.weights={folder}"


def test_sessions_run_on_a_device_mesh_and_move_between_meshes(assets, tmp_path):
    """sample.py on the 8 fake devices: an NVS session whose turn 1 runs split over 4 devices and whose
    turn 2 (fed turn 1 as memory) over all 8, and a long edit over 2 x 2, give one device's outputs."""
    weights = {task: busy_weights(assets, task, tmp_path / task) for task in ("nvs", "long_edit")}
    video = ("--video", str(assets / "source.mp4"))
    one = tmp_path / "one"
    for camera in ("pan_left", "pan_right"):
        result = sample(assets, weights["nvs"], "--session", str(one), *video, "--camera", camera)
        assert result.returncode == 0, result.stderr[-3000:]
    moved = tmp_path / "moved"
    for camera, mesh in (("pan_left", "sequence=4"), ("pan_right", "auto")):
        mesh = f"--config.sample.mesh={mesh}"
        result = sample(assets, weights["nvs"], mesh, "--session", str(moved), *video, "--camera", camera)
        assert result.returncode == 0, result.stderr[-3000:]
    assert records(moved)[1]["retrieved"]  # turn 2 read turn 1
    assert [r["mesh"] for r in records(moved)] == [{"sequence": 4}, {"sequence": 8}]
    assert [r["mesh"] for r in records(one)] == [{}, {}]
    expected, got = bank_latents(one), bank_latents(moved)
    tolerance = 2e-4 * np.abs(expected[0]).max()
    # The same seed: turn 2 differs from turn 1 only by its camera and memory, far beyond the tolerance.
    assert len(got) == 2 and np.abs(expected[1] - expected[0]).max() > 20 * tolerance
    for ours, reference in zip(got, expected, strict=True):
        np.testing.assert_allclose(ours, reference, atol=tolerance)

    edits = {}
    for mesh in ("sequence=1", "sequence=2,data=2"):
        session = tmp_path / f"edit-{mesh}"
        result = sample(
            assets,
            weights["long_edit"],
            f"--config.sample.mesh={mesh}",
            "--session",
            str(session),
            "--video",
            str(assets / "long.mp4"),
            task="long_edit",
        )
        assert result.returncode == 0, result.stderr[-3000:]
        edits[mesh] = bank_latents(session)
        assert records(session)[-1]["mesh"] == ({} if mesh == "sequence=1" else {"data": 2, "sequence": 2})
    for ours, reference in zip(edits["sequence=2,data=2"], edits["sequence=1"], strict=True):
        np.testing.assert_allclose(ours, reference, atol=2e-4 * np.abs(reference).max())


def test_a_bad_sampling_mesh_is_named_before_anything_loads(assets, tmp_path):
    for mesh, message in (
        ("pipeline=2", "sample.mesh: unknown mesh axes ['pipeline']"),
        ("sequence=0", "sample.mesh: mesh axis sizes are >= 1 or -1"),
        ("sequence=x", "expected axis=size pairs"),
        ("sequence=16", "needs 16 devices, this process has 8"),
    ):
        session = tmp_path / mesh.replace("=", "-")
        result = sample(
            assets,
            f"--config.sample.mesh={mesh}",
            "--session",
            str(session),
            "--video",
            str(assets / "source.mp4"),
            "--camera",
            "pan_left",
        )
        assert result.returncode == 1 and message in result.stderr, (mesh, result.stderr[-2000:])
        assert not session.exists() or not any(session.iterdir()), mesh
