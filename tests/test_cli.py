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


# `--help` prints the usage and exits 0, without importing JAX (so it answers at once).
HELP = """
import runpy, sys
sys.argv = [sys.argv[1], "--help"]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit as e:
    print("exit", e.code, "jax imported" if "jax" in sys.modules else "no jax")
"""


def test_cli_help_exits_0_without_importing_jax():
    for script, flag in (("sample.py", "--turns"), ("train.py", "--workdir")):
        result = run("-c", HELP, script)
        assert result.stdout.strip().endswith("exit 0 no jax"), result.stdout + result.stderr
        assert flag in result.stdout
