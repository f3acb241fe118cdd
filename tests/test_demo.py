"""`make demo`'s pipeline on fewer steps: the shipped checkpoint, a held-out scene, sample.py, the comparison."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from mv2v_jax.io.video import read_video

ROOT = Path(__file__).parents[1]


def test_demo_writes_every_file(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "mv2v_jax.eval.demo", "--out", str(tmp_path), "--turns", "3", "--steps", "2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = list(tmp_path.iterdir())
    assert str(run) in result.stdout
    for turn in (1, 2, 3):
        stem = run / "session" / "turns" / f"turn_{turn:03d}"
        clip = read_video(stem.with_suffix(".mp4"), 9, None)
        assert clip.frames.shape == (9, 48, 72, 3) and clip.frames.std() > 1  # not a blank video
        assert Image.open(stem.with_suffix(".png")).size[0] > 72
        record = json.loads(stem.with_suffix(".json").read_text())
        assert record["turn"] == turn and len(record["retrieved"]) == turn - 1
    summary = json.loads((run / "summary.json").read_text())
    assert len(summary["psnr_per_turn"]) == 3 and np.isfinite(summary["cross_turn_error"])
    assert Image.open(run / "comparison.png").size[1] > 2 * 48
