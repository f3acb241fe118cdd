"""Shared benchmark plumbing: timing, and the repository's BENCHMARKS.md (sections: `mv2v_jax.eval.benchmarks`)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

from mv2v_jax.eval import benchmarks

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


def write_section(name: str, body: str) -> None:
    """Replaces (or appends) the section `## name` of the repository's BENCHMARKS.md with `body`."""
    benchmarks.write_section(name, body, BENCHMARKS)
