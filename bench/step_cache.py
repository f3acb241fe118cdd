"""Step caching and merge schedules at the real configs' 50 steps, on the shipped small models: DiT
forwards and time per turn, what caching does to the outputs, and to consistency across turns and
segments.

    python bench/step_cache.py                 # writes BENCHMARKS.md "Step caching"
    python bench/step_cache.py --scenes 2 --videos 2 --no-write

Every setting runs the memory session of the consistency evaluations (mv2v_jax.eval.consistency:
covisible novel-view turns of held-out scenes; mv2v_jax.eval.edit_consistency: the segments of held-out
long videos) with the same model, sampler, seeds and 50 steps; only `sample.cache` or
`sample.merge_schedule` differ. The settings take turns on each scene, so a slow patch of the shared
machine hits them alike. Per setting:
- DiT forwards per turn: passes that ran every block (a cached pass runs block 0 at most);
- sampling seconds per turn (the denoising loop, compilation excluded) and the speed-up over uncached;
- PSNR and SSIM of each turn's output against the uncached setting's same turn (decoded latents, all
  frames); later turns differ also through what they retrieved, which is the point: errors compound;
- cross-turn (NVS) or cross-segment (long edit) error with its 95% bootstrap interval, and whether the
  mean lies inside the uncached setting's interval.
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mv2v_jax.cli_start  # noqa: F401  (first: Ctrl-C in the imports below is one line, exit 130)

import numpy as np
from common import write_section  # bench/ is on sys.path when run as a script
from tqdm import tqdm

from mv2v_jax.config import ArgumentParser, load_config, run_app
from mv2v_jax.data.synthetic import LongVideoConfig, SceneConfig, generate_long_edit
from mv2v_jax.eval import consistency, edit_consistency, report
from mv2v_jax.eval.metrics import psnr, ssim
from mv2v_jax.models.codec import TEMPORAL
from mv2v_jax.pipelines.build import build_pipeline

UNCACHED = "uncached"


def setting(kind: str = "none", threshold: float = 0.0, merge_schedule: str = "") -> dict[str, Any]:
    """Overrides of the config's sample section: the step cache and the merge schedule ("": the weights'
    own), both explicit so that a config's own defaults never leak into the comparison."""
    cache = dict(kind=kind) | (dict(threshold=threshold) if kind != "none" else {})
    return {"cache": cache, "merge_schedule": merge_schedule}


# Thresholds span FBCache's and TeaCache's published range for Wan and beyond it, so that the table shows
# where quality gives; the merge schedules are memory.merging.MERGE_SCHEDULES.
SETTINGS: dict[str, dict[str, Any]] = {
    UNCACHED: setting(),
    "first_block 0.05": setting("first_block", 0.05),
    "first_block 0.10": setting("first_block", 0.10),
    "first_block 0.15": setting("first_block", 0.15),
    "timestep 0.10": setting("timestep", 0.10),
    "timestep 0.20": setting("timestep", 0.20),
    "uncached, merge 'early'": setting(merge_schedule="early"),
    "first_block 0.10, merge 'early'": setting("first_block", 0.10, "early"),
}
TASKS = {
    "nvs": ("configs/tiny_nvs.py", "cross_turn_error", "cross-turn error"),
    "long_edit": ("configs/tiny_long_edit.py", "cross_segment_error", "cross-segment error"),
}


def with_overrides(sample, overrides: Mapping[str, Any], steps: int):
    """A copy of the config's sample section with `overrides` applied and `steps` sampling steps."""
    sample = copy.deepcopy(sample)
    sample.sampling.steps = steps
    for key, value in overrides.items():
        if isinstance(value, dict):
            sample[key].update(value)
        else:
            sample[key] = value
    return sample


def records(session_folder: Path) -> list[dict[str, Any]]:
    """The turn records a session wrote, in turn order."""
    return [json.loads(p.read_text()) for p in sorted((session_folder / "turns").glob("turn_*.json"))]


def run_nvs(pipeline, sample, index: int, scene_config: SceneConfig, turns: int, folder: Path):
    """One setting's memory session on held-out scene `index`: (decoded turn videos, records, metrics)."""
    scene, cams = consistency.held_out_scene(index, scene_config, turns, "covisible")
    videos = consistency.run_setting(pipeline, sample, "memory", scene, cams, folder)
    keyed = consistency.key_frames(scene)
    values, _ = consistency.scores([v[::TEMPORAL] for v in videos], [keyed["video"][c] for c in cams], keyed, cams)
    return videos, records(folder / "memory"), values


def run_long_edit(pipeline, sample, index: int, video_config: LongVideoConfig, folder: Path):
    """One setting's memory session on held-out long video `index`: (decoded segments, records, metrics)."""
    long = generate_long_edit(consistency.HELD_OUT_SEED + index, video_config)
    pipelines = {"memory": pipeline}
    segments = edit_consistency.edit_video(pipelines, sample, "memory", long["source"], long["prompt"], folder)
    masks = edit_consistency.region_masks(long)
    truth = edit_consistency.region_colours(long["edited"][:, ::TEMPORAL], masks)
    values, _ = edit_consistency.scores([s[::TEMPORAL] for s in segments], long, masks, truth)
    return segments, records(folder / "memory"), values


def measure(task: str, settings: list[str], examples: int, steps: int, turns: int) -> dict[str, Any]:
    """Per setting: per-example means of forwards, cached forwards, sampling seconds, PSNR / SSIM against
    the uncached setting, and the consistency metric, over `examples` held-out scenes or videos."""
    config_path, metric, _ = TASKS[task]
    config = load_config(config_path)
    samples = {name: with_overrides(config.sample, SETTINGS[name], steps) for name in settings}
    pipelines = {name: build_pipeline(samples[name], task) for name in settings}
    keys = ("forwards", "cached_forwards", "seconds", "psnr", "ssim", metric, "detail_ratio")
    per_example: dict[str, dict[str, list[float]]] = {name: {k: [] for k in keys} for name in settings}
    worst_psnr = dict.fromkeys(settings, float("inf"))
    if task == "nvs":
        scene_config = SceneConfig.from_config(dict(config.data.source.scene))
        run = lambda name, index, folder: run_nvs(pipelines[name], samples[name], index, scene_config, turns, folder)
    else:
        video_config = LongVideoConfig.from_config(config.data.source.video)
        run = lambda name, index, folder: run_long_edit(pipelines[name], samples[name], index, video_config, folder)
    with tempfile.TemporaryDirectory() as tmp:
        # Untimed: compiles what every setting shares (the sampler's update, the codec), which the first
        # setting to run would otherwise pay inside its sampling seconds.
        run(UNCACHED, 0, Path(tmp) / "warm-up")
        for index in tqdm(range(examples), desc=f"{task}: held-out examples", unit="example"):
            outputs = {}
            for name in settings:
                folder = Path(tmp) / f"{index}" / name.replace(" ", "_").replace("'", "")
                videos, recs, values = run(name, index, folder)
                outputs[name] = videos
                row = per_example[name]
                row["forwards"].append(np.mean([r["forwards"] for r in recs]))
                row["cached_forwards"].append(np.mean([r["cached_forwards"] for r in recs]))
                row["seconds"].append(np.mean([r["seconds"]["sample"] for r in recs]))
                row[metric].append(values[metric])
                row["detail_ratio"].append(values["detail_ratio"])
            for name in settings:
                pairs = list(zip(outputs[name], outputs[UNCACHED], strict=True))
                turn_psnr = [psnr(a, b) for a, b in pairs]
                worst_psnr[name] = min(worst_psnr[name], *turn_psnr)
                per_example[name]["psnr"].append(float(np.mean(np.minimum(turn_psnr, 100.0))))
                per_example[name]["ssim"].append(float(np.mean([ssim(a, b) for a, b in pairs])))
    return {
        "task": task,
        "config": config_path,
        "examples": examples,
        "steps": steps,
        "metric": metric,
        "mean": report.mean_over_scenes(per_example),
        "intervals": report.intervals(per_example),
        "worst_psnr": worst_psnr,
        "per_example": per_example,
    }


GOALS = (
    "at least 1.6x fewer DiT forwards, every turn at least 30 dB PSNR against uncached, and the error no "
    "higher than the uncached interval's upper end"
)


def meets_goals(result: Mapping[str, Any], name: str) -> bool:
    row, base = result["mean"][name], result["mean"][UNCACHED]
    return (
        base["forwards"] / row["forwards"] >= 1.6
        and result["worst_psnr"][name] >= 30.0
        and row[result["metric"]] <= result["intervals"][UNCACHED][result["metric"]][1]
    )


def table(result: Mapping[str, Any]) -> str:
    mean, intervals, metric = result["mean"], result["intervals"], result["metric"]
    label = TASKS[result["task"]][2]
    base = mean[UNCACHED]
    low, high = intervals[UNCACHED][metric]
    lines = [
        f"| setting | DiT forwards per turn (+ cached) | fewer forwards | sampling s per turn | speed-up "
        f"| PSNR vs uncached (dB), mean (worst turn) | SSIM vs uncached | {label} [95%] "
        "| within (or below) uncached interval | detail ratio (ground truth: 1) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in mean.items():
        a, b = intervals[name][metric]
        same = name == UNCACHED
        quality = "-" if same else f"{row['psnr']:.1f} ({result['worst_psnr'][name]:.1f})"
        position = "within" if low <= row[metric] <= high else ("below" if row[metric] < low else "above")
        lines.append(
            f"| {'**' + name + '**' if not same and meets_goals(result, name) else name} "
            f"| {row['forwards']:.1f} (+{row['cached_forwards']:.1f}) | {base['forwards'] / row['forwards']:.2f}x "
            f"| {row['seconds']:.3f} | {base['seconds'] / row['seconds']:.2f}x "
            f"| {quality} | {'-' if same else format(row['ssim'], '.4f')} | {row[metric]:.4f} [{a:.4f}, {b:.4f}] "
            f"| {'-' if same else position} | {row['detail_ratio']:.2f} |"
        )
    return "\n".join(lines)


def section(results: Mapping[str, Mapping[str, Any]]) -> str:
    parts = [
        "Shipped small models, the memory session of the consistency evaluations at 50 sampling steps "
        "(guidance 1: one pass per step, so `uncond_every` has nothing to skip here); means over held-out "
        "examples, 95% bootstrap intervals; sampling seconds exclude compilation, on the shared 2 cores. "
        f"**Bold**: meets the goals ({GOALS})."
    ]
    for task, result in results.items():
        what = "covisible novel-view turns of" if task == "nvs" else "segments of"
        parts.append(
            f"**{task}** (`{result['config']}`): 5 {what} {result['examples']} held-out "
            f"{'scenes' if task == 'nvs' else 'long videos'}.\n\n{table(result)}"
        )
    return "\n\n".join(parts)


def main(argv: list[str]) -> None:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=int, default=8, help="held-out NVS scenes (covisible turns)")
    parser.add_argument("--videos", type=int, default=8, help="held-out long videos")
    parser.add_argument("--turns", type=int, default=5, help="NVS turns per scene")
    parser.add_argument("--steps", type=int, default=50, help="sampling steps (the real configs' 50)")
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    parser.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(TASKS))
    parser.add_argument("--out", default="outputs/step_cache", help="results.json goes here")
    parser.add_argument("--no-write", action="store_true", help="print the tables; leave BENCHMARKS.md alone")
    args = parser.parse_args(argv)
    settings = [UNCACHED, *(s for s in args.settings if s != UNCACHED)]
    counts = {"nvs": args.scenes, "long_edit": args.videos}
    results = {task: measure(task, settings, counts[task], args.steps, args.turns) for task in args.tasks}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=float))
    print(section(results))
    if not args.no_write:
        write_section("Step caching", section(results))


if __name__ == "__main__":
    run_app(main, absl_flags=False)
