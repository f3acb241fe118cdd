"""A first command on a host without a TPU prints nothing a user would take for a failure.

libtpu is installed (the `tpu` extra) to compile for TPU topologies on any host (aot/). Left alone,
JAX would also start it as a backend where there is no TPU, and libtpu prints start-up errors; the
package keeps JAX to the CPU there (mv2v_jax/__init__.py), without importing JAX itself.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import mv2v_jax
from mv2v_jax.io.video import write_video

ROOT = Path(__file__).parents[1]
# Lines a user reads as something gone wrong: absl / glog errors, warnings and fatals (E0000 ..., W0000 ...),
# Python errors, and the project's own `error:` lines.
ALARM = re.compile(r"^[EWF]\d{4} |Failed to|ERROR|error:|Traceback|WARNING")
# What libtpu 0.0.42 prints when JAX starts it on a host without a TPU (abridged).
LIBTPU_START_UP = """\
Failed to find host bounds for accelerator type: WARNING: could not determine TPU accelerator type, please set env var \
`TPU_ACCELERATOR_TYPE` manually, otherwise libtpu.so may not properly initialize.
WARNING: Logging before InitGoogle() is written to STDERR
E0000 00:00:1796641111.524127   14772 common_lib.cc:554] INVALID_ARGUMENT: Error: unexpected worker hostname 'WARNING: \
could not determine TPU worker hostnames or IP addresses' from env var TPU_WORKER_HOSTNAMES.
"""


def alarms(output: str) -> list[str]:
    return [line for line in output.splitlines() if ALARM.search(line)]


def tpu_chips() -> int:
    """JAX's own count of the host's TPU chips (PCI ids; not public API)."""
    from jax._src.hardware_utils import num_available_tpu_chips_and_device_id

    return num_available_tpu_chips_and_device_id()[0]


def run_without_a_platform(args: list[str]) -> subprocess.CompletedProcess:
    """`python args` in the repository as a user runs it: no JAX_PLATFORMS (the suite sets one). libtpu may
    start although another process holds its lock file, so a libtpu started by mistake does print."""
    env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}
    env |= {"PYTHONPATH": str(ROOT), "ALLOW_MULTIPLE_LIBTPU_LOAD": "1"}
    result = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_the_check_sees_libtpus_start_up_errors():
    assert alarms(LIBTPU_START_UP) == LIBTPU_START_UP.splitlines()
    assert not alarms("denoising: 100%|##########| 2/2\nturn 1: memory none -> outputs/s/turns/turn_001.mp4\n")


def test_a_tpu_host_is_never_kept_to_the_cpu():
    assert mv2v_jax.has_tpu_devices() or not tpu_chips()


@pytest.mark.skipif(tpu_chips() > 0, reason="a TPU host starts libtpu, as it should")
@pytest.mark.parametrize("imports", ["mv2v_jax, jax", "jax, mv2v_jax"])  # JAX not imported yet, and imported
def test_the_library_keeps_jax_on_the_cpu_without_a_tpu(imports: str):
    code = f"import {imports}; print(jax.default_backend(), float(jax.numpy.ones(3).sum()))"
    result = run_without_a_platform(["-c", code])
    assert result.stdout.split() == ["cpu", "3.0"]
    assert not alarms(result.stdout + result.stderr), result.stderr


@pytest.mark.skipif(tpu_chips() > 0, reason="a TPU host starts libtpu, as it should")
def test_a_first_sample_run_prints_no_false_alarms(tmp_path):
    """sample.py's first NVS turn with the shipped model (two sampler steps)."""
    frames = np.random.default_rng(0).integers(0, 256, (9, 48, 72, 3), dtype=np.uint8)
    video = write_video(tmp_path / "source.mp4", frames, 8)
    result = run_without_a_platform(
        [
            "sample.py",
            "--config",
            "configs/tiny_nvs.py",
            "--task",
            "nvs",
            "--session",
            str(tmp_path / "session"),
            "--video",
            str(video),
            "--camera",
            "pan_left",
            "--config.sample.sampling.steps=2",
        ]
    )
    assert (tmp_path / "session" / "turns" / "turn_001.mp4").exists()
    assert not alarms(result.stdout + result.stderr), result.stdout + result.stderr
