"""The command-line entry points run as a user runs them."""

import subprocess
import sys
from pathlib import Path

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
