"""`make demo` on fewer turns and sampler steps: both shipped checkpoints, held-out data, memory against none."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mv2v_jax.io.video import read_all_frames, read_video

ROOT = Path(__file__).parents[1]


def run_demo(out: Path, *args: str) -> subprocess.CompletedProcess:
    """`make demo`'s command writing under `out`; it must succeed."""
    result = subprocess.run(
        [sys.executable, "-m", "mv2v_jax.eval.demo", "--out", str(out), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_demo_writes_both_tasks_comparisons(tmp_path):
    result = run_demo(tmp_path, "--turns", "2", "--steps", "2")
    (run,) = list(tmp_path.iterdir())
    assert str(run) in result.stdout
    summary = json.loads((run / "summary.json").read_text())
    segments = len(summary["long_edit"]["memory"]["error_against_earlier_segments"]) + 1
    for task, turns in (("nvs", 2), ("long_edit", segments)):
        folder = run / task
        assert str(folder / "comparison.png") in result.stdout
        sheet = Image.open(folder / "comparison.png")
        assert sheet.size[0] > turns * 2 * 72 and sheet.size[1] > 3 * 2 * 48  # three rows of enlarged frames
        movie = read_all_frames(folder / "comparison.mp4", None).frames
        assert len(movie) == turns * 9 and movie.std() > 1
        for row in ("memory", "no_memory", "ground_truth_through_codec"):
            values = summary[task][row]
            assert all(np.isfinite(values[k]) for k in ("psnr", "detail_ratio"))
    # Every turn of the memory session has its mp4, contact sheet and record, and remembers the turns before it.
    for turn in (1, 2):
        stem = run / "nvs" / "sessions" / "memory" / "turns" / f"turn_{turn:03d}"
        assert read_video(stem.with_suffix(".mp4"), 9, None).frames.shape == (9, 48, 72, 3)
        record = json.loads(stem.with_suffix(".json").read_text())
        assert record["turn"] == turn and len(record["retrieved"]) == turn - 1 and not record["skipped"]
    assert summary["nvs"]["turns_retrieving"] == [2]
    nvs, edit = summary["nvs"], summary["long_edit"]
    assert len(nvs["memory"]["error_against_earlier_turns"]) == 1
    assert nvs["ground_truth_through_codec"]["psnr"] > nvs["no_memory"]["psnr"]  # the codec is the ceiling
    assert np.isfinite(edit["ground_truth_through_codec"]["cross_segment_error"])
    assert len(list((run / "long_edit" / "sessions" / "memory" / "turns").glob("*.json"))) == segments
    for line in ("novel views, error between turns", "long edit, wall colour error across segments"):
        assert line in result.stdout


@pytest.mark.slow
def test_demo_shows_memory_winning_on_both_tasks(tmp_path):
    """The full `make demo` (every turn and sampler step): what the shipped models are for. With memory,
    the turns (segments) agree with each other more than without it, with no worse PSNR and detail no
    blurrier, and every turn after the first retrieves its memory."""
    run_demo(tmp_path)
    (run,) = list(tmp_path.iterdir())
    summary = json.loads((run / "summary.json").read_text())
    assert summary["nvs"]["turns_retrieving"] == [2, 3, 4, 5]
    for task, error in (("nvs", "cross_turn_error"), ("long_edit", "cross_segment_error")):
        memory, none = summary[task]["memory"], summary[task]["no_memory"]
        assert memory[error] < 0.75 * none[error], (task, memory[error], none[error])
        assert memory["psnr"] >= none["psnr"], task
        assert memory["detail_ratio"] >= 0.8 * summary[task]["ground_truth_through_codec"]["detail_ratio"], task
