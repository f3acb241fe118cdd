"""Does memory make novel-view turns consistent? Measured on held-out synthetic scenes with ground-truth geometry.

    python -m mv2v_jax.eval.consistency --config configs/tiny_nvs.py --scenes 16 --cameras revisit
    python -m mv2v_jax.eval.consistency --config configs/tiny_nvs.py --scenes 16 --cameras covisible

Per held-out scene (seeds disjoint from training's) the source video is camera 0, and five turns ask for
other trajectories (given in the session's frame, where the source's first camera is the identity):
- `revisit`: trajectories that look where the source never did (eval.revisit; in ReCamMaster's
  setting of the shipped model, turns from the source's first camera that all turn the same way): the
  first turn has to invent what it sees there, later turns see again what only earlier outputs saw.
  This isolates memory, and is the headline;
- `covisible`: other cameras of the scene, chosen greedily so that each new turn overlaps the turns
  before it (turn_cameras).
Three settings run the same model and sampler, with the same seed per turn:
- memory: one session; each turn retrieves earlier outputs by VideoFOV (ours, Memory-V2V);
- independent: every turn alone, the memory slots empty (the paper's "Ind" baseline);
- autoregressive: each turn takes the previous turn's output as its input video, no memory (the
  paper's "AR" baseline).
Metrics, on the codec's key frames (every 4th frame: the frames a latent frame holds; the frames between
are the codec's interpolation of them, the same for every setting), per scene and then as means over
scenes with 95% bootstrap intervals (eval.report):
- cross-turn error: the mean absolute colour difference (0..1) between every pair of turn outputs on
  pixels both see, matched through the ground-truth depth and cameras (eval.metrics.warp_error); lower
  is more consistent. Per turn, the same against the turns before it;
- PSNR and SSIM against the ground-truth renders of each turn's trajectory;
- detail ratio: the outputs' high-frequency energy over the ground truth's (eval.metrics.detail), so
  that blur, which agrees with itself across turns, cannot pass for consistency.
The floor is the ground truth passed through the codec (encoded and decoded, as every output is): the
cross-turn error, PSNR and detail no model can beat. Writes results.json, table.md, a bar plot, a
per-turn plot and a contact sheet of one scene, and with --write-benchmarks the section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import mv2v_jax.cli_start  # noqa: F401  (first: Ctrl-C in the imports below is one line, exit 130)

import numpy as np
from tqdm import tqdm

from mv2v_jax.config import ArgumentParser, int_at_least, load_config, run_app
from mv2v_jax.data.synthetic import SceneConfig, generate_scene
from mv2v_jax.eval import report
from mv2v_jax.eval.benchmarks import write_section
from mv2v_jax.eval.metrics import detail_ratio, psnr, ssim, warp_error
from mv2v_jax.eval.revisit import revisit_scene
from mv2v_jax.geometry import relative_to
from mv2v_jax.io.images import write_contact_sheet
from mv2v_jax.models.codec import TEMPORAL
from mv2v_jax.pipelines.build import build_pipeline, session_config
from mv2v_jax.pipelines.session import Session, SourceVideo
from mv2v_jax.pipelines.turns import Turn

SETTINGS = ("memory", "independent", "autoregressive")
CAMERAS = ("revisit", "covisible")
HELD_OUT_SEED = 1_000_000  # training scenes use numpy SeedSequence-derived 63-bit seeds; these are plain ints
COLUMNS = (
    ("cross_turn_error", "cross-turn error (lower is better)", ".4f"),
    ("psnr", "PSNR vs ground truth (dB)", ".2f"),
    ("ssim", "SSIM vs ground truth", ".3f"),
    ("detail_ratio", "detail ratio (ground truth: 1)", ".2f"),
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


def key_frames(scene: Mapping[str, Any]) -> dict[str, Any]:
    """The scene at the codec's key frames (every TEMPORAL-th frame): `video`, `depth`, `w2c` `[V, K, ...]`."""
    return dict(scene) | {k: scene[k][:, ::TEMPORAL] for k in ("video", "depth", "w2c")}


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


def weighted_error(pairs: np.ndarray) -> float:
    """The pixel-weighted mean error of `pairs` `[..., 2]` (error, pixels); NaN without pixels."""
    count = pairs[..., 1].sum()
    return float((pairs[..., 0] * pairs[..., 1]).sum() / count) if count else float("nan")


def turn_errors(pairs: np.ndarray) -> list[float]:
    """Per turn from the second: the pixel-weighted error against every earlier turn (both directions)."""
    return [weighted_error(np.concatenate([pairs[a, :a], pairs[:a, a]])) for a in range(1, len(pairs))]


def scores(videos: Sequence[np.ndarray], truth: Sequence[np.ndarray], scene, cams) -> tuple[dict, list[float]]:
    """The metrics of one setting's key-frame turn videos on one scene (`scene` at its key frames) and
    its per-turn curve."""
    pairs = pair_errors(videos, scene, cams)
    both = list(zip(videos, truth, strict=True))
    values = {
        "cross_turn_error": weighted_error(pairs),
        "psnr": float(np.mean([psnr(v, t) for v, t in both])),
        "ssim": float(np.mean([ssim(v, t) for v, t in both])),
        "detail_ratio": float(np.mean([detail_ratio(v, t) for v, t in both])),
    }
    return values, turn_errors(pairs)


def evaluate(
    config,
    scenes: int,
    turns: int,
    out: Path,
    steps: int | None = None,
    cameras: str = "revisit",
    settings: Sequence[str] = SETTINGS,
) -> dict[str, Any]:
    """Runs `settings` (memory and its baselines) on `scenes` held-out scenes; writes results.json, the
    table and the plots into `out` and returns the results."""
    sample = config.sample
    if steps is not None:
        sample.sampling.steps = steps
    pipeline = build_pipeline(sample, "nvs")
    codec = pipeline.codec
    scene_config = SceneConfig.from_config(dict(config.data.source.scene))
    rows = (*settings, report.FLOOR)
    results: dict[str, dict[str, list[float]]] = {s: {key: [] for key, _, _ in COLUMNS} for s in rows}
    curves: dict[str, list[list[float]]] = {s: [] for s in rows}
    sheet_rows, sheet_labels = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for k in tqdm(range(scenes), desc="scenes", unit="scene"):
            scene, cams = held_out_scene(k, scene_config, turns, cameras)
            keyed = key_frames(scene)
            truth = [keyed["video"][c] for c in cams]
            outputs = {report.FLOOR: [codec.decode(codec.encode(scene["video"][c])) for c in cams]}
            for setting in settings:
                outputs[setting] = run_setting(pipeline, sample, setting, scene, cams, Path(tmp) / f"scene{k}")
            for row in rows:
                values, curve = scores([v[::TEMPORAL] for v in outputs[row]], truth, keyed, cams)
                report.add_scene(results, curves, row, values, curve)
            if k == 0:  # the middle key frame of every turn
                middle = len(truth[0]) // 2
                sheet_rows.append(np.stack([t[middle] for t in truth]))
                sheet_labels.append("ground truth")
                for setting in settings:
                    sheet_rows.append(np.stack([v[::TEMPORAL][middle] for v in outputs[setting]]))
                    sheet_labels.append(f"{setting}: turns 1-{turns}")
    summary = report.mean_over_scenes(results)
    result = {
        "cameras": cameras,
        "scenes": scenes,
        "turns": turns,
        "weights": str(sample.weights),
        "sampling": sample.sampling.to_dict(),
        "merge_schedule": sample.get("merge_schedule") or "the weights' own",
        "summary": summary,
        "intervals": report.intervals(results),
        "per_turn": report.mean_curves(curves),
        **report.reductions(
            results,
            "cross_turn_error",
            {b: b for b in ("independent", "autoregressive") if {"memory", b} <= set(settings)},
        ),
        "per_scene": results,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=2))
    write_contact_sheet(out / "turns.png", sheet_rows, labels=sheet_labels, frame_indices=list(range(turns)))
    report.bar_plot(
        summary,
        [("cross_turn_error", "cross-turn error (lower is better)"), ("psnr", "PSNR vs ground truth (dB)")],
        out / "consistency.png",
        result["intervals"],
    )
    report.curve_plot(
        result["per_turn"],
        out / "per_turn.png",
        "turn",
        "error against earlier turns",
        f"{cameras} turns: each turn against the earlier ones",
        first=2,
    )
    (out / "table.md").write_text(table(result))
    return result


def table(result: Mapping[str, Any]) -> str:
    body = report.table(result["summary"], COLUMNS, {}, result["intervals"])
    if "memory_vs_autoregressive_error_reduction" not in result:
        return body
    reduction = lambda baseline: report.lower_or_higher(
        result[f"memory_vs_{baseline}_error_reduction"]["mean"],
        result[f"memory_vs_{baseline}_error_reduction"]["interval"],
    )
    return body + (
        f"\n\nMeans over {result['scenes']} held-out scenes ({result['turns']} {result['cameras']} turns each, the "
        "codec's key frames) with 95% bootstrap intervals. Memory vs independent turns: "
        f"{reduction('independent')} cross-turn error; vs autoregressive: {reduction('autoregressive')} "
        "(paper: 28% lower MEt3R than independent)."
    )


def main(argv: list[str]) -> int:
    from mv2v_jax.io.atomic import check_can_create
    from mv2v_jax.pipelines.build import check_sample_config, check_weights_exist

    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/tiny_nvs.py")
    parser.add_argument("--weights", default=None, help="override the config's sample.weights")
    parser.add_argument("--scenes", type=int_at_least(1), default=16)
    parser.add_argument("--turns", type=int_at_least(1), default=5)
    parser.add_argument("--cameras", choices=CAMERAS, default="revisit", help="which trajectories the turns ask for")
    parser.add_argument("--steps", type=int_at_least(1), default=None, help="override the sampler's steps")
    parser.add_argument("--settings", nargs="+", choices=SETTINGS, default=list(SETTINGS))
    parser.add_argument("--merge-schedule", default=None, help="a name in memory.merging.MERGE_SCHEDULES")
    parser.add_argument("--out", default=None, help="default outputs/consistency_<cameras>")
    parser.add_argument("--write-benchmarks", action="store_true", help="also write BENCHMARKS.md's section")
    args = parser.parse_args(argv)
    out = Path(args.out or f"outputs/consistency_{args.cameras}")
    try:  # everything the run reads or writes is checked before the first scene
        config = load_config(args.config)
        if args.weights:
            config.sample.weights = args.weights
        if args.merge_schedule:
            config.sample.merge_schedule = args.merge_schedule
        check_sample_config(config.sample, "nvs")
        check_weights_exist(config.sample, "nvs")
        check_can_create(out)
        result = evaluate(config, args.scenes, args.turns, out, args.steps, args.cameras, args.settings)
    except (ValueError, OSError) as e:  # a config, weights or output folder that cannot be used
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(table(result))
    if args.write_benchmarks:
        write_section(
            f"Consistency (synthetic novel view synthesis, {args.cameras} turns"
            + (f", merge schedule {args.merge_schedule!r})" if args.merge_schedule else ")"),
            f"Model: `{config.sample.weights}`; plots `{out / 'consistency.png'}`, `{out / 'per_turn.png'}`.\n\n"
            + table(result),
        )
    return 0


if __name__ == "__main__":
    run_app(main, absl_flags=False)
