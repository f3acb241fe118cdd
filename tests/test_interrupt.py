"""Ctrl-C while a tool works gives one `error:` line and exit 130, no traceback, and leaves no output
behind. A real SIGINT is sent from inside the tool at a fixed point of its work (the driver below
wraps one of its functions), so the moment is the same on every run; sample.py's Ctrl-C in the middle
of denoising is a corpus case (tests/corpus), timed by its output."""

import json
import os
import subprocess
import sys
from pathlib import Path

import safetensors.torch
from ctrl_c import take_ctrl_c
from torch_reference import tiny_wan_dit

REPO = Path(__file__).parents[1]
# argv: the function to interrupt in ("package.module.function"), then the tool's command line.
DRIVER = """
import importlib, os, runpy, signal, sys
module, name = sys.argv[1].rsplit(".", 1)
target = importlib.import_module(module)
original = getattr(target, name)

def interrupted(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGINT)  # the user presses Ctrl-C
    return original(*args, **kwargs)

setattr(target, name, interrupted)
sys.argv = sys.argv[2:]
if sys.argv[0] == "-m":
    sys.argv = sys.argv[1:]
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
else:
    runpy.run_path(sys.argv[0], run_name="__main__")
"""


def interrupt(function: str, *command: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-c", DRIVER, function, *command],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        preexec_fn=take_ctrl_c,
    )
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert [line for line in result.stderr.splitlines() if line.startswith("error: ")] == [
        "error: interrupted (Ctrl-C)"
    ], result.stderr[-3000:]
    assert result.returncode == 130
    return result


def test_ctrl_c_in_a_converter(tmp_path):
    model = tiny_wan_dit("1.3b")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "config.json").write_text(json.dumps(dict(model.config)))
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    safetensors.torch.save_file(state, tmp_path / "src" / "diffusion_pytorch_model.safetensors")
    interrupt(
        "convert_weights.common.convert", "-m", "convert_weights.wan_dit", str(tmp_path / "src"), str(tmp_path / "out")
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]  # no OUT, no temporary


def test_ctrl_c_in_train(tmp_path):
    workdir = tmp_path / "run"
    command = ("train.py", "--config", "configs/tiny_nvs.py", "--workdir", str(workdir))
    interrupt("mv2v_jax.data.encode_latents.open_latents", *command)
    assert not workdir.exists()


def test_ctrl_c_in_encode_latents(tmp_path):
    command = ("-m", "mv2v_jax.data.encode_latents", "--config", "configs/tiny_nvs.py")
    flags = (f"--config.data.latents_dir={tmp_path / 'latents'}", f"--config.data.source.data_dir={tmp_path / 'tfds'}")
    interrupt("mv2v_jax.data.tfds.common.build", *command, *flags)
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


def test_the_interrupt_line_starts_a_line_after_half_a_line(tmp_path):
    """A Ctrl-C that cuts a progress line short (written, not yet ended) still gets its own line."""
    script = tmp_path / "cut_short.py"
    script.write_text(
        "import sys\n"
        "from mv2v_jax.config import run_app\n"
        "def main(argv):\n"
        "    sys.stderr.write('denoising:   0%|          | 0/1000')\n"
        "    raise KeyboardInterrupt\n"
        "run_app(main)\n"
    )
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 130
    assert "error: interrupted (Ctrl-C)" in result.stderr.splitlines(), result.stderr
