"""BENCHMARKS.md sections: each names the command that wrote it, the commit and the machine.

The benchmark scripts (bench/) and the evaluations (`--write-benchmarks`) write through
`write_section`, which replaces the section of that name or appends it.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from pathlib import Path


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


def write_section(name: str, body: str, path: str | Path = "BENCHMARKS.md") -> None:
    """Replaces (or appends) the section `## name` of the markdown file `path` with `body`, headed by
    the command line of this process, the commit and the machine."""
    path = Path(path)
    spec = getattr(sys.modules["__main__"], "__spec__", None)  # set under `python -m`
    program = f"-m {spec.name}" if spec is not None else os.path.relpath(sys.argv[0])
    command = " ".join(["python", program, *sys.argv[1:]])
    section = f"## {name}\n\nCommand: `{command}` (commit {git_revision()})\n\nMachine: {machine()}\n\n{body.strip()}\n"
    text = path.read_text() if path.exists() else "# Benchmarks\n\nEach section is written by the command it names.\n"
    pattern = re.compile(rf"^## {re.escape(name)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub(section + "\n", text) if pattern.search(text) else text.rstrip() + "\n\n" + section
    path.write_text(text)
