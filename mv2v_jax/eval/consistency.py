"""Does memory make turns consistent? Measured on held-out synthetic scenes with ground-truth geometry.

    python -m mv2v_jax.eval.consistency --config configs/tiny_nvs.py --scenes 8 --out outputs/consistency

Per held-out scene (seeds disjoint from training's), the source video is camera 0 and five turns ask
for other cameras of the scene (their trajectories given in the session's frame, where the source's
first camera is the identity), chosen greedily so that each new turn overlaps the turns before it
(revisits). Three settings run the same model and sampler:
- memory: one session; each turn retrieves earlier outputs by VideoFOV (ours, Memory-V2V);
- independent: every turn alone, the memory slots empty (the paper's "Ind" baseline);
- autoregressive: each turn takes the previous turn's output as its input video, no memory (the
  paper's "AR" baseline).
Metrics: cross-turn error, the mean absolute colour difference (0..1) between every pair of turn
outputs on pixels both see, matched through the ground-truth depth and cameras (eval.metrics.
warp_error; lower is more consistent; the ground-truth videos' own error is the floor), and accuracy
against the ground-truth renders of each turn's trajectory (PSNR, SSIM). Writes results.json, a
markdown table, a bar plot and a contact sheet of one scene, and the "Consistency" section of
BENCHMARKS.md.
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
from mv2v_jax.eval.benchmarks import write_section
from mv2v_jax.eval.metrics import psnr, ssim, warp_error
from mv2v_jax.geometry import relative_to
from mv2v_jax.io.images import write_contact_sheet
from mv2v_jax.pipelines.build import build_pipeline, session_config
from mv2v_jax.pipelines.session import Session, SourceVideo
from mv2v_jax.pipelines.turns import Turn

SETTINGS = ("memory", "independent", "autoregressive")
HELD_OUT_SEED = 1_000_000  # training scenes use numpy SeedSequence-derived 63-bit seeds; these are plain ints


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


def session_frame(w2c: np.ndarray, source_w2c: np.ndarray) -> np.ndarray:
    """A scene trajectory `[F, 3, 4]` in the world frame of a session whose source video was filmed
    along `source_w2c` `[F, 3, 4]`: its first camera is the identity there (pipelines.nvs)."""
    return np.asarray(relative_to(np.asarray(w2c, np.float64), np.asarray(source_w2c[0], np.float64)), np.float64)


def run_setting(pipeline, sample, setting: str, scene: Mapping[str, Any], cams: Sequence[int], folder: Path):
    """The turn outputs (uint8 videos) of one setting on one scene."""
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


def cross_turn_error(videos: Sequence[np.ndarray], scene: Mapping[str, Any], cams: Sequence[int]) -> float:
    """Pixel-weighted mean of `warp_error` over every ordered pair of turns."""
    total, count = 0.0, 0
    for a, b in itertools.permutations(range(len(cams)), 2):
        i, j = cams[a], cams[b]
        error, n = warp_error(
            videos[a], videos[b], scene["depth"][i], scene["depth"][j], scene["w2c"][i], scene["w2c"][j], scene["K"]
        )
        if n:
            total, count = total + error * n, count + n
    return total / count if count else float("nan")


def evaluate(config, scenes: int, turns: int, out: Path, steps: int | None = None) -> dict[str, Any]:
    sample = config.sample
    if steps is not None:
        sample.sampling.steps = steps
    pipeline = build_pipeline(sample, "nvs")
    scene_config = SceneConfig.from_config(dict(config.data.source.scene))
    results: dict[str, dict[str, list[float]]] = {s: {"cross_turn_error": [], "psnr": [], "ssim": []} for s in SETTINGS}
    floors = []
    sheet_rows, sheet_labels = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for k in tqdm(range(scenes), desc="scenes", unit="scene"):
            scene = generate_scene(HELD_OUT_SEED + k, scene_config)
            cams = turn_cameras(scene, turns)
            truth = [scene["video"][c] for c in cams]
            floors.append(cross_turn_error(truth, scene, cams))
            for setting in SETTINGS:
                videos = run_setting(pipeline, sample, setting, scene, cams, Path(tmp) / f"scene{k}")
                results[setting]["cross_turn_error"].append(cross_turn_error(videos, scene, cams))
                results[setting]["psnr"].append(
                    float(np.mean([psnr(v, t) for v, t in zip(videos, truth, strict=True)]))
                )
                results[setting]["ssim"].append(
                    float(np.mean([ssim(v, t) for v, t in zip(videos, truth, strict=True)]))
                )
                if k == 0:
                    sheet_rows.append(np.stack([v[len(v) // 2] for v in videos]))
                    sheet_labels.append(f"{setting}: middle frame of turns 1-{turns}")
            if k == 0:
                sheet_rows.insert(0, np.stack([t[len(t) // 2] for t in truth]))
                sheet_labels.insert(0, "ground truth")
    summary = {s: {m: float(np.nanmean(v)) for m, v in r.items()} for s, r in results.items()}
    memory, independent = summary["memory"]["cross_turn_error"], summary["independent"]["cross_turn_error"]
    report = {
        "scenes": scenes,
        "turns": turns,
        "sampling": sample.sampling.to_dict(),
        "summary": summary,
        "ground_truth_floor": float(np.nanmean(floors)),
        "memory_vs_independent_error_reduction": 1 - memory / independent,
        "per_scene": results,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(report, indent=2))
    write_contact_sheet(out / "turns.png", sheet_rows, labels=sheet_labels, frame_indices=list(range(turns)))
    _plot(summary, report["ground_truth_floor"], out / "consistency.png")
    (out / "table.md").write_text(table(report))
    return report


def table(report: Mapping[str, Any]) -> str:
    rows = [
        "| setting | cross-turn error (lower is better) | PSNR vs ground truth (dB) | SSIM vs ground truth |",
        "|---|---|---|---|",
    ]
    for setting, m in report["summary"].items():
        rows.append(f"| {setting} | {m['cross_turn_error']:.4f} | {m['psnr']:.2f} | {m['ssim']:.3f} |")
    rows.append(f"| ground-truth videos (floor) | {report['ground_truth_floor']:.4f} | | |")
    return "\n".join(rows) + (
        f"\n\nMemory vs independent turns: {100 * report['memory_vs_independent_error_reduction']:.1f}% lower "
        f"cross-turn error ({report['scenes']} held-out scenes, {report['turns']} turns each; paper: 28% lower MEt3R)."
    )


def _plot(summary: Mapping[str, Mapping[str, float]], floor: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    names = list(summary)
    axes[0].bar(names, [summary[n]["cross_turn_error"] for n in names], color=["tab:green", "tab:gray", "tab:blue"])
    axes[0].axhline(floor, color="k", linestyle="--", label="ground truth")
    axes[0].set_title("cross-turn error (lower is better)")
    axes[0].legend()
    axes[1].bar(names, [summary[n]["psnr"] for n in names], color=["tab:green", "tab:gray", "tab:blue"])
    axes[1].set_title("PSNR vs ground truth (dB)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/tiny_nvs.py")
    parser.add_argument("--weights", default=None, help="override the config's sample.weights")
    parser.add_argument("--scenes", type=int, default=8)
    parser.add_argument("--turns", type=int, default=5)
    parser.add_argument("--steps", type=int, default=None, help="override the sampler's steps")
    parser.add_argument("--out", default="outputs/consistency")
    parser.add_argument("--write-benchmarks", action="store_true", help="also write ./BENCHMARKS.md's section")
    args = parser.parse_args()
    config = load_config(args.config)
    if args.weights:
        config.sample.weights = args.weights
    report = evaluate(config, args.scenes, args.turns, Path(args.out), args.steps)
    print(table(report))
    if args.write_benchmarks:
        write_section(
            "Consistency (synthetic novel view synthesis)",
            f"Model: `{config.sample.weights}`; plot `{Path(args.out) / 'consistency.png'}`.\n\n" + table(report),
        )


if __name__ == "__main__":
    main()
