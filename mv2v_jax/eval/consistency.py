"""Does memory make novel-view turns consistent? Measured on held-out synthetic scenes with ground-truth geometry.

    python -m mv2v_jax.eval.consistency --config configs/tiny_nvs.py --scenes 8 --cameras covisible
    python -m mv2v_jax.eval.consistency --config configs/tiny_nvs.py --scenes 8 --cameras revisit

Per held-out scene (seeds disjoint from training's) the source video is camera 0, and five turns ask for
other trajectories (given in the session's frame, where the source's first camera is the identity):
- `covisible`: other cameras of the scene, chosen greedily so that each new turn overlaps the turns
  before it (turn_cameras); most of them also overlap the source;
- `revisit`: trajectories that all face the wall behind the source camera (eval.revisit), which the
  source never shows: the first turn invents it, later turns revisit what only earlier outputs saw.
  This isolates memory.
Three settings run the same model and sampler:
- memory: one session; each turn retrieves earlier outputs by VideoFOV (ours, Memory-V2V);
- independent: every turn alone, the memory slots empty (the paper's "Ind" baseline);
- autoregressive: each turn takes the previous turn's output as its input video, no memory (the
  paper's "AR" baseline).
Metrics: cross-turn error, the mean absolute colour difference (0..1) between every pair of turn
outputs on pixels both see, matched through the ground-truth depth and cameras (eval.metrics.
warp_error; lower is more consistent; the ground-truth videos' own error is the floor), per turn the
same against the turns before it, and accuracy against the ground-truth renders of each turn's
trajectory (PSNR, SSIM). Writes results.json, table.md, a bar plot, a per-turn plot and a contact sheet
of one scene, and with --write-benchmarks the section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from mv2v_jax.config import load_config
from mv2v_jax.data.synthetic import SceneConfig, generate_scene
from mv2v_jax.eval import report
from mv2v_jax.eval.benchmarks import write_section
from mv2v_jax.eval.metrics import psnr, ssim, warp_error
from mv2v_jax.eval.revisit import revisit_scene
from mv2v_jax.geometry import relative_to
from mv2v_jax.io.images import write_contact_sheet
from mv2v_jax.pipelines.build import build_pipeline, session_config
from mv2v_jax.pipelines.session import Session, SourceVideo
from mv2v_jax.pipelines.turns import Turn

SETTINGS = ("memory", "independent", "autoregressive")
CAMERAS = ("covisible", "revisit")
HELD_OUT_SEED = 1_000_000  # training scenes use numpy SeedSequence-derived 63-bit seeds; these are plain ints
COLUMNS = (
    ("cross_turn_error", "cross-turn error (lower is better)", ".4f"),
    ("psnr", "PSNR vs ground truth (dB)", ".2f"),
    ("ssim", "SSIM vs ground truth", ".3f"),
)


def turn_cameras(scene: Mapping[str, Any], turns: int) -> list[int]:
    """Cameras 1.. in an order where each overlaps the ones before it as much as possible (by the
    number of co-visible pixels through ground-truth depth): later turns revisit earlier regions."""
    video, depth, w2c, K = scene["video"], scene["depth"], scene["w2c"], scene["K"]
    candidates = list(range(1, video.shape[0]))
    covisible = {
        (i, j): warp_error(video[i], video[j], depth[i], depth[j], w2c[i], w2c[j], K)[1]
        for i, j in itertools.permutations(candidates, 2)
    }
    chosen = [max(candidates, key=lambda c: sum(covisible[(c, o)] for o in candidates if o != c))]
    while len(chosen) < turns:
        rest = [c for c in candidates if c not in chosen]
        chosen.append(max(rest, key=lambda c: sum(covisible[(c, o)] for o in chosen)))
    return chosen


def held_out_scene(index: int, config: SceneConfig, turns: int, cameras: str) -> tuple[dict[str, Any], list[int]]:
    """Held-out scene `index` and the views its turns ask for, in turn order (view 0 is the source)."""
    if cameras == "covisible":
        scene = generate_scene(HELD_OUT_SEED + index, config)
        return scene, turn_cameras(scene, turns)
    if cameras == "revisit":
        return revisit_scene(HELD_OUT_SEED + index, config, turns), list(range(1, turns + 1))
    raise ValueError(f"unknown camera selection {cameras!r}; choose one of {CAMERAS}")


def session_frame(w2c: np.ndarray, source_w2c: np.ndarray) -> np.ndarray:
    """A scene trajectory `[F, 3, 4]` in the world frame of a session whose source video was filmed
    along `source_w2c` `[F, 3, 4]`: its first camera is the identity there (pipelines.nvs)."""
    return np.asarray(relative_to(np.asarray(w2c, np.float64), np.asarray(source_w2c[0], np.float64)), np.float64)


def run_setting(pipeline, sample, setting: str, scene: Mapping[str, Any], cams: Sequence[int], folder: Path):
    """The turn outputs (uint8 videos, decoded from the stored latents) of one setting on one scene;
    each setting's session (sessions, for autoregressive) under `folder`."""
    outputs = []
    config = session_config(sample, "nvs")
    source, source_w2c = SourceVideo.from_frames(scene["video"][0], "camera 0"), scene["w2c"][0]
    session = Session.open(folder / setting, task="nvs", config=config, source=source)
    try:
        for turn, cam in enumerate(cams):
            if setting == "autoregressive" and outputs:
                session.close()
                source = SourceVideo.from_frames(outputs[-1], f"turn {turn} (camera {cams[turn - 1]})")
                session = Session.open(folder / f"{setting}_{turn}", task="nvs", config=config, source=source)
                source_w2c = scene["w2c"][cams[turn - 1]]
            cameras = session_frame(scene["w2c"][cam], source_w2c)
            record = pipeline.run_turn(
                session, Turn(cameras=cameras, camera=f"camera {cam}", seed=turn), use_memory=setting == "memory"
            )
            # The decoded latents themselves, not the mp4 (whose compression would blur the comparison).
            outputs.append(pipeline.codec.decode(session.bank.load(record["entry"]).latents))
    finally:
        session.close()
    return outputs


def pair_errors(videos: Sequence[np.ndarray], scene: Mapping[str, Any], cams: Sequence[int]) -> np.ndarray:
    """`warp_error` of every ordered pair of turns: `[T, T, 2]` (error, co-visible pixels); the diagonal 0."""
    errors = np.zeros((len(cams), len(cams), 2))
    for a, b in itertools.permutations(range(len(cams)), 2):
        i, j = cams[a], cams[b]
        error, n = warp_error(
            videos[a], videos[b], scene["depth"][i], scene["depth"][j], scene["w2c"][i], scene["w2c"][j], scene["K"]
        )
        errors[a, b] = (error, n) if n else (0.0, 0)
    return errors


def _weighted(pairs: np.ndarray) -> float:
    count = pairs[..., 1].sum()
    return float((pairs[..., 0] * pairs[..., 1]).sum() / count) if count else float("nan")


def cross_turn_error(videos: Sequence[np.ndarray], scene: Mapping[str, Any], cams: Sequence[int]) -> float:
    """Pixel-weighted mean of `warp_error` over every ordered pair of turns."""
    return _weighted(pair_errors(videos, scene, cams))


def turn_errors(pairs: np.ndarray) -> list[float]:
    """Per turn from the second: the pixel-weighted error against every earlier turn (both directions)."""
    return [_weighted(np.concatenate([pairs[a, :a], pairs[:a, a]])) for a in range(1, len(pairs))]


def evaluate(
    config,
    scenes: int,
    turns: int,
    out: Path,
    steps: int | None = None,
    cameras: str = "covisible",
    settings: Sequence[str] = SETTINGS,
) -> dict[str, Any]:
    """Runs `settings` (memory and its baselines) on `scenes` held-out scenes; writes results.json, the
    table and the plots into `out` and returns the results."""
    sample = config.sample
    if steps is not None:
        sample.sampling.steps = steps
    pipeline = build_pipeline(sample, "nvs")
    scene_config = SceneConfig.from_config(dict(config.data.source.scene))
    results: dict[str, dict[str, list[float]]] = {s: {key: [] for key, _, _ in COLUMNS} for s in settings}
    curves: dict[str, list[list[float]]] = {s: [] for s in settings}
    floors, floor_curves = [], []
    sheet_rows, sheet_labels = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for k in tqdm(range(scenes), desc="scenes", unit="scene"):
            scene, cams = held_out_scene(k, scene_config, turns, cameras)
            truth = [scene["video"][c] for c in cams]
            truth_pairs = pair_errors(truth, scene, cams)
            floors.append(_weighted(truth_pairs))
            floor_curves.append(turn_errors(truth_pairs))
            if k == 0:
                sheet_rows.append(np.stack([t[len(t) // 2] for t in truth]))
                sheet_labels.append("ground truth")
            for setting in settings:
                videos = run_setting(pipeline, sample, setting, scene, cams, Path(tmp) / f"scene{k}")
                pairs = pair_errors(videos, scene, cams)
                results[setting]["cross_turn_error"].append(_weighted(pairs))
                curves[setting].append(turn_errors(pairs))
                results[setting]["psnr"].append(
                    float(np.mean([psnr(v, t) for v, t in zip(videos, truth, strict=True)]))
                )
                results[setting]["ssim"].append(
                    float(np.mean([ssim(v, t) for v, t in zip(videos, truth, strict=True)]))
                )
                if k == 0:
                    sheet_rows.append(np.stack([v[len(v) // 2] for v in videos]))
                    sheet_labels.append(f"{setting}: middle frame of turns 1-{turns}")
    summary = report.mean_over_scenes(results)
    result = {
        "cameras": cameras,
        "scenes": scenes,
        "turns": turns,
        "weights": str(sample.weights),
        "sampling": sample.sampling.to_dict(),
        "merge_schedule": sample.get("merge_schedule") or "the weights' own",
        "summary": summary,
        "ground_truth_floor": float(np.nanmean(floors)),
        "per_turn": report.mean_curves(curves),
        "ground_truth_per_turn": report.mean_curves({"truth": floor_curves})["truth"],
        **{
            f"memory_vs_{baseline}_error_reduction": report.reduction(summary, "cross_turn_error", "memory", baseline)
            for baseline in ("independent", "autoregressive")
            if {"memory", baseline} <= set(settings)
        },
        "per_scene": results,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=2))
    write_contact_sheet(out / "turns.png", sheet_rows, labels=sheet_labels, frame_indices=list(range(turns)))
    report.bar_plot(
        summary,
        [("cross_turn_error", "cross-turn error (lower is better)"), ("psnr", "PSNR vs ground truth (dB)")],
        out / "consistency.png",
        {"cross_turn_error": result["ground_truth_floor"]},
    )
    report.curve_plot(
        result["per_turn"],
        out / "per_turn.png",
        "turn",
        "error against earlier turns",
        f"{cameras} turns: error of each turn against the turns before it",
        floor=result["ground_truth_per_turn"],
        first=2,
    )
    (out / "table.md").write_text(table(result))
    return result


def table(result: Mapping[str, Any]) -> str:
    body = report.table(result["summary"], COLUMNS, {"cross_turn_error": result["ground_truth_floor"]})
    if "memory_vs_autoregressive_error_reduction" not in result:
        return body
    return body + (
        f"\n\nMemory vs independent turns: {report.lower_or_higher(result['memory_vs_independent_error_reduction'])} "
        "cross-turn error; vs autoregressive: "
        f"{report.lower_or_higher(result['memory_vs_autoregressive_error_reduction'])} "
        f"({result['scenes']} held-out scenes, {result['turns']} {result['cameras']} turns each; paper: 28% lower "
        "MEt3R than independent)."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/tiny_nvs.py")
    parser.add_argument("--weights", default=None, help="override the config's sample.weights")
    parser.add_argument("--scenes", type=int, default=8)
    parser.add_argument("--turns", type=int, default=5)
    parser.add_argument("--cameras", choices=CAMERAS, default="covisible", help="which trajectories the turns ask for")
    parser.add_argument("--steps", type=int, default=None, help="override the sampler's steps")
    parser.add_argument("--settings", nargs="+", choices=SETTINGS, default=list(SETTINGS))
    parser.add_argument("--merge-schedule", default=None, help="a name in memory.merging.MERGE_SCHEDULES")
    parser.add_argument("--out", default=None, help="default outputs/consistency_<cameras>")
    parser.add_argument("--write-benchmarks", action="store_true", help="also write BENCHMARKS.md's section")
    args = parser.parse_args()
    config = load_config(args.config)
    if args.weights:
        config.sample.weights = args.weights
    if args.merge_schedule:
        config.sample.merge_schedule = args.merge_schedule
    out = Path(args.out or f"outputs/consistency_{args.cameras}")
    result = evaluate(config, args.scenes, args.turns, out, args.steps, args.cameras, args.settings)
    print(table(result))
    if args.write_benchmarks:
        write_section(
            f"Consistency (synthetic novel view synthesis, {args.cameras} turns"
            + (f", merge schedule {args.merge_schedule!r})" if args.merge_schedule else ")"),
            f"Model: `{config.sample.weights}`; plots `{out / 'consistency.png'}`, `{out / 'per_turn.png'}`.\n\n"
            + table(result),
        )


if __name__ == "__main__":
    main()
