"""`make demo`: both tasks of Memory-V2V with the shipped small models, memory against no memory.

    python -m mv2v_jax.eval.demo --out outputs/demo

1. Novel view synthesis (configs/tiny_nvs.py, checkpoints/tiny_nvs): a room the model never saw, its
   still source video, and five camera turns from the source's first camera that all turn the same way
   (eval.revisit), beyond what the source shows. The first turn has to invent what it sees there. With
   memory every later turn is given what the earlier ones showed; without memory each turn invents it
   again.
2. Long video editing (configs/tiny_long_edit.py, checkpoints/tiny_long_edit): a long video the model
   never saw, a camera turning round a room for more than a full turn, edited segment by segment with
   "Repaint every wall in a new colour." The prompt names no colours and the first segments pick them;
   with memory later segments are given the earlier edited ones (the previous segment, and older ones
   that showed the same walls), without memory each segment picks its own.

Per task, in a new run folder under `--out` (printed at the end): `comparison.png` (rows: ground truth,
memory, no memory; a column per turn or segment, one key frame each), `comparison.mp4` (the same three
side by side, turn after turn), the sessions (each turn's mp4, contact sheet and JSON record, as
sample.py writes them) and `summary.json` with the consistency numbers of eval.consistency and
eval.edit_consistency for this one scene and video (key frames; the ground truth passed through the
codec is the floor).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import mv2v_jax.cli_start  # noqa: F401  (first: Ctrl-C in the imports below is one line, exit 130)

import numpy as np

from mv2v_jax.config import ArgumentParser, int_at_least, load_config, run_app
from mv2v_jax.data.synthetic import LongVideoConfig, SceneConfig, generate_long_edit
from mv2v_jax.eval import consistency, edit_consistency
from mv2v_jax.eval.consistency import HELD_OUT_SEED, key_frames, run_setting
from mv2v_jax.eval.edit_consistency import edit_video, region_colours, region_masks
from mv2v_jax.eval.revisit import revisit_scene
from mv2v_jax.io.atomic import check_can_create, staged_folder
from mv2v_jax.io.images import contact_sheet, write_png
from mv2v_jax.io.video import write_video
from mv2v_jax.models.codec import TEMPORAL
from mv2v_jax.pipelines.build import build_pipeline, check_sample_config, check_weights_exist

DEMO_SEED = HELD_OUT_SEED + 500  # not among the evaluations' scenes or videos either
SCALE = 2  # the small models' 48 x 72 frames, shown twice as large
ROWS = ("ground truth", "memory", "no memory")
FLOOR_KEY = "ground_truth_through_codec"  # summary.json: the ground truth encoded and decoded


def _enlarge(frames: np.ndarray) -> np.ndarray:
    return np.repeat(np.repeat(frames, SCALE, axis=-3), SCALE, axis=-2)


def _even(image: np.ndarray) -> np.ndarray:
    """Pads an `[H, W, 3]` image with white to even sides (what H.264's 4:2:0 colour takes)."""
    return np.pad(image, ((0, image.shape[0] % 2), (0, image.shape[1] % 2), (0, 0)), constant_values=255)


def write_comparison(
    folder: Path,
    videos: Sequence[Sequence[np.ndarray]],
    labels: Sequence[str],
    fps: float,
    frames: Sequence[int] | None = None,
) -> None:
    """`videos`: per row (ROWS), the turn videos `[F, H, W, 3]`. Writes comparison.png (frame `frames[t]` of
    turn t, default the middle one; a column per turn) and comparison.mp4 (the rows side by side, turn
    after turn)."""
    picks = frames or [len(v) // 2 for v in videos[0]]
    stills = [_enlarge(np.stack([v[f] for v, f in zip(row, picks, strict=True)])) for row in videos]
    write_png(folder / "comparison.png", contact_sheet(stills, labels=labels))
    movie = []
    for turn in range(len(videos[0])):
        for f in range(len(videos[0][turn])):
            panels = [_enlarge(row[turn][f])[None] for row in videos]
            movie.append(
                _even(contact_sheet([np.concatenate(panels)], labels=[f"turn {turn + 1}: " + ", ".join(ROWS)]))
            )
    write_video(folder / "comparison.mp4", np.stack(movie), fps)


def load_sample(config_path: str, weights: str | None, steps: int | None):
    """The config and its `sample` section with the demo's overrides."""
    config = load_config(config_path)
    if weights:
        config.sample.weights = weights
    if steps:
        config.sample.sampling.steps = steps
    return config, config.sample


def nvs_demo(folder: Path, config_path: str, turns: int, steps: int | None, weights: str | None = None) -> dict:
    config, sample = load_sample(config_path, weights, steps)
    pipeline = build_pipeline(sample, "nvs")
    scene = revisit_scene(DEMO_SEED, SceneConfig.from_config(dict(config.data.source.scene)), turns)
    cams = list(range(1, turns + 1))
    write_video(folder / "source.mp4", scene["video"][0], sample.video.fps, lossless=True)
    truth = [scene["video"][c] for c in cams]
    outputs = {
        setting: run_setting(pipeline, sample, setting, scene, cams, folder / "sessions")
        for setting in ("memory", "independent")
    }
    last_key = TEMPORAL * ((len(truth[0]) - 1) // TEMPORAL)  # where each turn has turned furthest
    write_comparison(
        folder,
        [truth, outputs["memory"], outputs["independent"]],
        [
            "ground truth: each turn's last frame, beyond what the source video shows",
            "memory: turn 1 invents it, later turns are given the earlier outputs",
            "no memory: every turn invents it anew",
        ],
        sample.video.fps,
        frames=[last_key] * turns,
    )
    codec = pipeline.codec
    rows = {"memory": outputs["memory"], "no_memory": outputs["independent"]}
    rows[FLOOR_KEY] = [codec.decode(codec.encode(video)) for video in truth]
    keyed = key_frames(scene)
    summary = {"scene_seed": DEMO_SEED, "weights": sample.weights, "turns_retrieving": _retrieving(folder)}
    for name, videos in rows.items():
        values, per_turn = consistency.scores(
            [v[::TEMPORAL] for v in videos], [t[::TEMPORAL] for t in truth], keyed, cams
        )
        summary[name] = values | {"error_against_earlier_turns": per_turn}
    return summary


def _retrieving(folder: Path) -> list[int]:
    """The memory session's turns that were fed at least one earlier output (their JSON records)."""
    records = sorted((folder / "sessions" / "memory" / "turns").glob("turn_*.json"))
    return [json.loads(r.read_text())["turn"] for r in records if json.loads(r.read_text())["retrieved"]]


def long_edit_demo(folder: Path, config_path: str, steps: int | None, weights: str | None = None) -> dict:
    config, sample = load_sample(config_path, weights, steps)
    pipeline = build_pipeline(sample, "long_edit")
    long = generate_long_edit(DEMO_SEED, LongVideoConfig.from_config(config.data.source.video))
    write_video(folder / "source.mp4", np.concatenate(list(long["source"])), sample.video.fps, lossless=True)
    pipelines = {"memory": pipeline, "no memory": pipeline}  # no memory: a session per segment
    outputs = {
        setting: edit_video(pipelines, sample, setting, long["source"], long["prompt"], folder / "sessions")
        for setting in ("memory", "no memory")
    }
    truth = list(long["edited"])
    masks = region_masks(long)
    write_comparison(
        folder,
        [truth, outputs["memory"], outputs["no memory"]],
        [
            f"ground truth: the walls repainted {long['edit_colour'].replace(',', ', ')} (a segment a column)",
            "memory: segments are given the earlier edited ones",
            "no memory: every segment picks its own colours",
        ],
        sample.video.fps,
        frames=[TEMPORAL * (len(s[::TEMPORAL]) // 2) for s in truth],
    )
    codec = pipeline.codec
    rows = {"memory": outputs["memory"], "no_memory": outputs["no memory"]}
    rows[FLOOR_KEY] = [codec.decode(codec.encode(segment)) for segment in truth]
    colours = region_colours(long["edited"][:, ::TEMPORAL], masks)
    summary = {"video_seed": DEMO_SEED, "weights": sample.weights, "edit_colours": long["edit_colour"]}
    for name, segments in rows.items():
        values, per_segment = edit_consistency.scores([s[::TEMPORAL] for s in segments], long, masks, colours)
        summary[name] = values | {"error_against_earlier_segments": per_segment}
    return summary


def main(argv: list[str]) -> int:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="outputs/demo")
    parser.add_argument("--nvs-config", default="configs/tiny_nvs.py")
    parser.add_argument("--edit-config", default="configs/tiny_long_edit.py")
    parser.add_argument("--turns", type=int_at_least(1), default=5, help="novel-view turns")
    parser.add_argument("--steps", type=int_at_least(1), default=None, help="sampler steps (default: the configs')")
    parser.add_argument("--nvs-weights", default=None, help="default: the config's, the shipped model")
    parser.add_argument("--edit-weights", default=None, help="default: the config's, the shipped model")
    args = parser.parse_args(argv)
    run = Path(args.out) / time.strftime("run-%Y%m%d-%H%M%S")
    start = time.perf_counter()
    demos = {
        "nvs": lambda folder: nvs_demo(folder, args.nvs_config, args.turns, args.steps, args.nvs_weights),
        "long_edit": lambda folder: long_edit_demo(folder, args.edit_config, args.steps, args.edit_weights),
    }
    summary = {}
    try:  # both configs, their weights and --out are checked before anything runs; the run folder appears whole
        for task, (config, weights) in {
            "nvs": (args.nvs_config, args.nvs_weights),
            "long_edit": (args.edit_config, args.edit_weights),
        }.items():
            sample = load_sample(config, weights, args.steps)[1]
            check_sample_config(sample, task)
            check_weights_exist(sample, task)
        check_can_create(run)
        print(
            "Memory-V2V demo: the shipped small models on a room and a long video they never saw, memory against none."
        )
        with staged_folder(run) as staged:
            for task, demo in demos.items():
                (staged / task).mkdir()
                summary[task] = demo(staged / task)
                shown, seconds = run / task, time.perf_counter() - start
                print(f"{task}: {shown / 'comparison.png'}, {shown / 'comparison.mp4'} ({seconds:.0f} s)")
            (staged / "summary.json").write_text(json.dumps(summary, indent=2))
    except (ValueError, OSError) as e:  # a config, weights or output folder that cannot be used
        print(f"error: {e}", file=sys.stderr)
        return 1
    nvs, edit = summary["nvs"], summary["long_edit"]
    line = lambda task, key, fmt: ", ".join(
        f"{label} {format(task[row][key], fmt)}"
        for label, row in (("memory", "memory"), ("no memory", "no_memory"), ("codec floor", FLOOR_KEY))
    )
    print(
        f"\nwrote {run}: per task comparison.png, comparison.mp4, source.mp4, sessions/ (every turn's mp4, contact "
        f"sheet and record), and summary.json. On key frames; the floor is the ground truth through the codec:\n"
        f"novel views, error between turns where they see the same place: {line(nvs, 'cross_turn_error', '.3f')}\n"
        f"novel views, PSNR vs ground truth: {line(nvs, 'psnr', '.1f')} dB\n"
        f"novel views, detail ratio: {line(nvs, 'detail_ratio', '.2f')}\n"
        f"long edit, wall colour error across segments: {line(edit, 'cross_segment_error', '.3f')}\n"
        f"long edit, PSNR vs ground truth: {line(edit, 'psnr', '.1f')} dB\n"
        f"long edit, detail ratio: {line(edit, 'detail_ratio', '.2f')}\n"
        f"total {time.perf_counter() - start:.0f} s"
    )
    return 0


if __name__ == "__main__":
    run_app(main, absl_flags=False)
