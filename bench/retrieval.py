"""VideoFOV retrieval timings: the jitted JAX code against the float64 NumPy reference of tests/test_fov.py.

    python bench/retrieval.py                # 1,000 cached entries of 81 frames, 480x832, hfov 60
    python bench/retrieval.py --entries 200  # quicker

Rows: the bitmask of one 81-frame trajectory; scoring M cached entries from their packed bitmasks
(the paper's step, a popcount; NumPy: the same words with np.bitwise_count, and the reference's
boolean sets); recomputing the M entries' bitmasks relative to a new target from their cameras
(needed when an entry does not start at the target's first camera; the NumPy reference is timed on
10 entries and scaled); and `retrieve_by_fov` end to end when every entry starts at the target's
first camera, so the stored bitmasks are reused. Medians of alternating calls after a warm-up call
each (JAX compilation excluded). Then how much scores depend on where the grid's pole points, with
area-weighted sets (ours) and with cell counts: 25 random trajectories, each of the first 24 a target
scored against the other 24, with the pole along the target camera's up axis and then its forward
axis. Writes the "Retrieval (CPU)" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import mv2v_jax.cli_start  # noqa: F401  (first: Ctrl-C in the imports below is one line, exit 130)

import jax
import jax.numpy as jnp
import numpy as np
from common import timed, write_section  # bench/ is on sys.path when run as a script

from mv2v_jax.geometry import Intrinsics
from mv2v_jax.retrieval.fov import (
    fov_bitmask,
    fov_bitmasks,
    fov_scores,
    retrieve_by_fov,
    unpack_bits,
    word_weights,
)

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from test_fov import pole_turned, reference_cell_areas, reference_fov, rotation, trajectory  # the test's references

from mv2v_jax.config import ArgumentParser, int_at_least, run_app

FRAMES = 81
REFERENCE_ENTRIES = 10  # the NumPy reference of the recomputation is timed on this many and scaled


MASKS, UNITS, _ = word_weights()


def numpy_scores(target: np.ndarray, memory: np.ndarray) -> np.ndarray:
    """Overlap/containment score with NumPy popcounts on the packed words, weighted by cell area."""

    def area(words):
        return np.sum(np.bitwise_count(words[..., None, :] & MASKS) * UNITS, axis=(-2, -1), dtype=np.int64)

    intersection, union = area(memory & target), area(memory | target)
    return 0.5 * intersection / np.maximum(union, 1) + 0.5 * intersection / max(area(target), 1)


def set_scores(target: np.ndarray, memory: np.ndarray, cell_area: np.ndarray) -> np.ndarray:
    """The same on unpacked boolean sets, as the paper writes it, sizes weighted by `cell_area [N]`."""
    intersection = (memory & target) @ cell_area
    return 0.5 * intersection / ((memory | target) @ cell_area) + 0.5 * intersection / (target @ cell_area)


def pole_dependence(intrinsics: Intrinsics, rng: np.random.Generator) -> str:
    """Largest score change and top-3 changes between two pole orientations, area-weighted and by counts."""
    trajectories = np.stack(
        [trajectory(rng, 21, start=(rotation(rng), 0.3 * rng.standard_normal(3)), turn_degrees=3) for _ in range(25)]
    )
    forward = np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]])  # 90 degrees about x: the -y pole goes to +z
    counted = np.ones(64800)
    largest, changed = {"area": 0.0, "count": 0.0}, {"area": 0, "count": 0}
    for target in range(24):
        others = [m for m in range(len(trajectories)) if m != target]
        scores = {"area": [], "count": []}
        for reference in (trajectories[target, 0], pole_turned(trajectories[target, 0], forward)):
            bits = np.asarray(fov_bitmasks(trajectories, intrinsics, reference))
            scores["area"].append(np.asarray(fov_scores(bits[target], bits[others]).score))
            sets = unpack_bits(bits)
            scores["count"].append(set_scores(sets[target], sets[others], counted))
        for kind, (up, ahead) in scores.items():
            largest[kind] = max(largest[kind], float(np.abs(up - ahead).max()))
            changed[kind] += set(np.argsort(-up, kind="stable")[:3]) != set(np.argsort(-ahead, kind="stable")[:3])
    return (
        f"Pole orientation: 25 random 21-frame trajectories starting within ~0.3 of each other, each of the first "
        f"24 a target scored against the other 24 with the grid's pole along the target camera's up axis, then "
        f"along its forward axis. Area-weighted scores (ours) change by at most {largest['area']:.4f} and the "
        f"top-3 of {changed['area']} of 24 targets changes; cell counts change by up to {largest['count']:.4f} "
        f"and the top-3 of {changed['count']} of 24 targets."
    )


def duration(times: list[float], scale: float = 1.0) -> str:
    """Median (min) of `times` seconds times `scale`, in ms below a second."""
    median, low = scale * float(np.median(times)), scale * min(times)
    unit, factor = ("ms", 1e3) if median < 1 else ("s", 1.0)
    scaled = "" if scale == 1 else f", {scale:g} x measured"
    return f"{factor * median:.2f} {unit} (min {factor * low:.2f}, n={len(times)}{scaled})"


def row(what: str, numpy_times: list[float], jax_times: list[float], numpy_scale: float = 1.0) -> str:
    speedup = numpy_scale * np.median(numpy_times) / np.median(jax_times)
    return f"| {what} | {duration(numpy_times, numpy_scale)} | {duration(jax_times)} | {speedup:.0f}x |"


def main(argv: list[str]) -> None:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int_at_least(1), default=1000)
    parser.add_argument("--repeats", type=int_at_least(1), default=5)
    args = parser.parse_args(argv)
    load_before = os.getloadavg()[0]
    rng = np.random.default_rng(0)
    intrinsics = Intrinsics.from_hfov(60, 480, 832)
    target = trajectory(rng, FRAMES, turn_degrees=1.0, step=0.02)
    start = (target[0, :, :3].astype(np.float64), -target[0, :, :3].T @ target[0, :, 3])
    memory = np.stack([trajectory(rng, FRAMES, start=start, turn_degrees=1.0, step=0.02) for _ in range(args.entries)])
    rows = []

    want, _ = reference_fov(target, intrinsics, 1.0)
    mismatched = int(np.sum(unpack_bits(np.asarray(fov_bitmask(target, intrinsics))) != want))
    times = timed(
        lambda: reference_fov(target, intrinsics, 1.0),
        lambda: fov_bitmask(target, intrinsics).block_until_ready(),
        repeats=args.repeats,
    )
    rows.append(row(f"bitmask of one {FRAMES}-frame trajectory", *times))
    print(rows[-1], flush=True)

    stored = np.asarray(fov_bitmasks(memory, intrinsics, target[0]))  # each entry's own = the target's frame
    target_bits = np.asarray(fov_bitmask(target, intrinsics))
    device_target, device_memory = jnp.asarray(target_bits), jnp.asarray(stored)
    sets_target, sets_memory = unpack_bits(target_bits), unpack_bits(stored)
    got = np.asarray(fov_scores(device_target, device_memory).score)
    cell_area = reference_cell_areas(180, 360)
    np.testing.assert_allclose(got, set_scores(sets_target, sets_memory, cell_area), rtol=1e-5)
    np.testing.assert_allclose(numpy_scores(target_bits, stored), got, rtol=1e-5)
    jax_score = lambda: fov_scores(device_target, device_memory).score.block_until_ready()
    times = timed(lambda: numpy_scores(target_bits, stored), jax_score, repeats=args.repeats * 4)
    rows.append(row(f"score {args.entries:,} entries from bitmasks (NumPy popcount)", *times))
    times = timed(lambda: set_scores(sets_target, sets_memory, cell_area), jax_score, repeats=args.repeats)
    rows.append(row(f"score {args.entries:,} entries from bitmasks (NumPy boolean sets)", *times))
    print(*rows[-2:], sep="\n", flush=True)

    new_reference = memory[0, FRAMES // 2]  # a target starting elsewhere: every entry is recomputed

    def reference_recompute():
        return [reference_fov(cameras, intrinsics, 1.0, new_reference)[0] for cameras in memory[:REFERENCE_ENTRIES]]

    times = timed(
        reference_recompute,
        lambda: fov_bitmasks(memory, intrinsics, new_reference).block_until_ready(),
        repeats=max(args.repeats // 2, 1),
    )
    rows.append(
        row(
            f"recompute {args.entries:,} entries' bitmasks for a new target ({FRAMES} frames each)",
            *times,
            numpy_scale=args.entries / REFERENCE_ENTRIES,
        )
    )
    print(rows[-1], flush=True)

    memory_list, stored_list = list(memory), list(stored)

    def numpy_retrieve():
        bits = np.packbits(reference_fov(target, intrinsics, 1.0)[0], bitorder="little").view("<u4")
        return np.argsort(-numpy_scores(bits, stored), kind="stable")[:6]

    def jax_retrieve():
        return retrieve_by_fov(target, memory_list, 6, intrinsics, stored=stored_list)[0].indices.block_until_ready()

    times = timed(numpy_retrieve, jax_retrieve, repeats=args.repeats)
    rows.append(row(f"retrieve top-6 of {args.entries:,}: target bitmask + stored bitmasks reused + scores", *times))
    print(rows[-1], flush=True)

    orientation = pole_dependence(intrinsics, rng)
    print(orientation, flush=True)

    header = "| operation | NumPy reference | mv2v-jax | speedup |\n|---|---|---|---|"
    write_section(
        "Retrieval (CPU)",
        f"VideoFOV on the 180 x 360 grid with cells weighted by solid angle, 480x832 images, hfov 60 degrees, "
        f"unit-sphere points (radius 1); random "
        f"smooth {FRAMES}-frame trajectories. NumPy is the float64 reference of tests/test_fov.py; JAX float32, "
        f"jitted, on {jax.devices()[0].device_kind}. Median (min) of alternating calls after a warm-up call each "
        f"(compilation excluded). The target's bitmask differs from the reference's in {mismatched} of "
        f"64,800 directions. The 2 cores are shared: 1-minute load average {load_before:.1f} before the run, "
        f"{os.getloadavg()[0]:.1f} after (the minimum is the better guide on a busy machine).\n\n"
        + "\n".join([header, *rows])
        + f"\n\n{orientation}",
    )


if __name__ == "__main__":
    run_app(main, absl_flags=False)
