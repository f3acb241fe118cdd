"""The command-line entry points run as a user runs them."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).parents[1]


def run(*args, cwd=ROOT):
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def test_converter_help():
    result = run("-m", "convert_weights.wan_dit", "--help")
    assert result.returncode == 0
    assert "diffusers" in result.stdout and "--param-dtype" in result.stdout


def test_converter_cli_reports_a_missing_source(tmp_path):
    result = run("-m", "convert_weights.wan_dit", str(tmp_path / "nope"), str(tmp_path / "out"))
    assert result.returncode == 1
    assert str(tmp_path / "nope") in result.stderr
    assert not (tmp_path / "out").exists()


def test_sample_writes_latents_and_contact_sheet(tmp_path):
    result = run("sample.py", "--out", str(tmp_path / "demo"), "--steps", "2", "--latent_shape", "3,8,12")
    assert result.returncode == 0, result.stderr
    assert "RANDOM WEIGHTS" in result.stdout
    latents = np.load(tmp_path / "demo" / "latents.npy")
    assert latents.shape == (3, 8, 12, 16) and np.isfinite(latents).all()
    assert Image.open(tmp_path / "demo" / "latents.png").size[0] > 3 * 12
    assert json.loads((tmp_path / "demo" / "run.json").read_text())["steps"] == 2
