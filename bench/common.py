"""Shared benchmark plumbing: timing, machine description, and the BENCHMARKS.md section writer."""

from __future__ import annotations

import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

BENCHMARKS = Path(__file__).parents[1] / "BENCHMARKS.md"


def timed(*fns: Callable[[], object], repeats: int, warmup: int = 1) -> list[list[float]]:
    """Wall-clock seconds of `repeats` calls of each of `fns` after `warmup` calls.

    The functions take turns (a, b, a, b, ...) so that a slow patch of the machine hits both alike.
    Each must block until its work is done.
    """
    for fn in fns:
        for _ in range(warmup):
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, bucket in zip(fns, times, strict=True):
            start = time.perf_counter()
            fn()
            bucket.append(time.perf_counter() - start)
    return times


def summary(times: list[float]) -> str:
    return f"{statistics.median(times):.3f} s (min {min(times):.3f}, n={len(times)})"


def machine() -> str:
    """One line: CPU model and cores, accelerator, and the jax / torch versions."""
    import jax

    cpu = platform.processor() or platform.machine()
    try:
        text = Path("/proc/cpuinfo").read_text()
        cpu = re.search(r"model name\s*:\s*(.*)", text).group(1)
    except (OSError, AttributeError):
        pass
    devices = ", ".join(sorted({d.device_kind for d in jax.devices()}))
    versions = f"jax {jax.__version__}"
    try:
        import torch

        versions += f", torch {torch.__version__}"
    except ImportError:
        pass
    return f"{cpu}, {os.cpu_count()} cores; JAX devices: {devices}; {versions}"


def git_revision() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def write_section(name: str, body: str) -> None:
    """Replaces (or appends) the section `## name` of BENCHMARKS.md with `body`."""
    spec = getattr(sys.modules["__main__"], "__spec__", None)  # set under `python -m`
    program = f"-m {spec.name}" if spec is not None else os.path.relpath(sys.argv[0])
    command = " ".join(["python", program, *sys.argv[1:]])
    section = f"## {name}\n\nCommand: `{command}` (commit {git_revision()})\n\nMachine: {machine()}\n\n{body.strip()}\n"
    text = (
        BENCHMARKS.read_text()
        if BENCHMARKS.exists()
        else "# Benchmarks\n\nEach section is written by the command it names.\n"
    )
    pattern = re.compile(rf"^## {re.escape(name)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub(section + "\n", text) if pattern.search(text) else text.rstrip() + "\n\n" + section
    BENCHMARKS.write_text(text)
