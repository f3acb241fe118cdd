"""Does memory keep a long video's edit consistent? Measured on held-out synthetic long videos.

    python -m mv2v_jax.eval.edit_consistency --config configs/tiny_long_edit.py --videos 8

Each held-out video (seeds disjoint from training's) is a camera panning round a room for 4-6
segments; its edit recolours every moving object with one colour drawn per video, which neither the
prompt nor the current segment names (data.synthetic.long_video). Three settings edit it segment by
segment with the same model, sampler and per-segment seed:
- memory: one session; each segment sees the previous edited segment and the older ones most similar
  to it by their sources' DINOv2 embeddings (ours, Memory-V2V);
- previous segment: memory of the previous edited segment only (one slot);
- no memory: every segment edited alone.
Metrics, against the ground-truth edited video:
- cross-segment error: per segment, the mean colour of the output where the ground-truth edit
  recoloured objects (eval.metrics.edit_mask / region_colour); the mean absolute difference (0..1) of
  those colours between every pair of segments that show objects. The same objects should keep one
  colour: lower is more consistent; the ground-truth edited video's own error (shading) is the floor.
  Per segment, the same against the segments before it.
- edit colour error: the per-segment object colour against the ground truth's.
- PSNR and SSIM of the whole edited video.
Writes results.json, table.md, a bar plot, a per-segment plot and a contact sheet of one video, and
with --write-benchmarks the section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from mv2v_jax.config import load_config
from mv2v_jax.data.synthetic import LongVideoConfig, generate_long_edit
from mv2v_jax.eval import report
from mv2v_jax.eval.benchmarks import write_section
from mv2v_jax.eval.consistency import HELD_OUT_SEED
from mv2v_jax.eval.metrics import edit_mask, psnr, region_colour, ssim
from mv2v_jax.io.images import write_contact_sheet
from mv2v_jax.pipelines.build import build_pipeline, session_config
from mv2v_jax.pipelines.long_edit import LongEditPipeline
from mv2v_jax.pipelines.session import Session, SourceVideo

SETTINGS = ("memory", "previous segment", "no memory")
COLUMNS = (
    ("cross_segment_error", "cross-segment error (lower is better)", ".4f"),
    ("colour_error", "edit colour error vs ground truth", ".4f"),
    ("psnr", "PSNR vs ground truth (dB)", ".2f"),
    ("ssim", "SSIM vs ground truth", ".3f"),
)


def with_slots(pipeline: LongEditPipeline, slots: int) -> LongEditPipeline:
    """The same model, codec, sampler and embedder with a memory budget of `slots` segments (a program
    per memory count)."""
    return LongEditPipeline(
        model=pipeline.model,
        codec=pipeline.codec,
        sampling=pipeline.denoiser.sampling,
        embed_frames=pipeline.embed_frames,
        budget=dataclasses.replace(pipeline.budget, slots=slots, buckets=None),
        segment_frames=pipeline.segment_frames,
        overlap=pipeline.overlap,
        text=pipeline.denoiser.text,
        fps=pipeline.fps,
    )


def _edited_segments(pipeline: LongEditPipeline, session: Session) -> list[np.ndarray]:
    """The session's edited segments in order, decoded from the stored latents (not the lossy mp4)."""
    entries = sorted(session.bank.entries(), key=lambda e: e.turn)
    channels = pipeline.codec.channels
    return [pipeline.codec.decode(session.bank.load(e.entry_id).latents[..., :channels]) for e in entries]


def edit_video(
    pipelines: Mapping[str, LongEditPipeline],
    sample,
    setting: str,
    source: np.ndarray,
    prompt: str,
    folder: Path,
    seed: int = 0,
) -> list[np.ndarray]:
    """One setting's edited segments of `source [S, F, H, W, 3]` (segment i sampled with seed + i in every
    setting); its sessions go under `folder`."""
    config = session_config(sample, "long_edit")

    def edit(path: Path, frames: np.ndarray, first_seed: int) -> list[np.ndarray]:
        source = SourceVideo.from_frames(frames, path.name)
        session = Session.open(path, task="long_edit", config=config, source=source)
        try:
            pipelines[setting].run(session, prompt=prompt, seed=first_seed)
            return _edited_segments(pipelines[setting], session)
        finally:
            session.close()

    if setting == "no memory":  # each segment a session of its own: nothing earlier to remember
        return [
            segment for i, frames in enumerate(source) for segment in edit(folder / f"{setting}_{i}", frames, seed + i)
        ]
    return edit(folder / setting, np.concatenate(list(source)), seed)


def object_colours(segments: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> np.ndarray:
    """`[S, 3]` mean colour of each segment on its edited pixels (NaN rows where no objects show)."""
    return np.stack([region_colour(v, m) for v, m in zip(segments, masks, strict=True)])


def _pair_distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).mean())


def cross_segment_error(colours: np.ndarray) -> float:
    """Mean colour distance over every pair of segments that both show objects."""
    pairs = [_pair_distance(colours[i], colours[j]) for i, j in itertools.combinations(range(len(colours)), 2)]
    return float(np.nanmean(pairs)) if np.isfinite(pairs).any() else float("nan")


def segment_errors(colours: np.ndarray) -> list[float]:
    """Per segment from the second: its mean colour distance to the earlier segments showing objects."""
    errors = []
    for s in range(1, len(colours)):
        distances = [_pair_distance(colours[s], colours[t]) for t in range(s)]
        errors.append(float(np.nanmean(distances)) if np.isfinite(distances).any() else float("nan"))
    return errors


def evaluate(config, videos: int, out: Path, steps: int | None = None) -> dict[str, Any]:
    sample = config.sample
    if steps is not None:
        sample.sampling.steps = steps
    memory = build_pipeline(sample, "long_edit")
    pipelines = {"memory": memory, "previous segment": with_slots(memory, 1), "no memory": memory}
    video_config = LongVideoConfig.from_config(config.data.source.video)
    results: dict[str, dict[str, list[float]]] = {s: {key: [] for key, _, _ in COLUMNS} for s in SETTINGS}
    curves: dict[str, list[list[float]]] = {s: [] for s in SETTINGS}
    floors, floor_curves = [], []
    sheet_rows, sheet_labels = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for k in tqdm(range(videos), desc="videos", unit="video"):
            long = generate_long_edit(HELD_OUT_SEED + k, video_config)
            masks = [edit_mask(s, e) for s, e in zip(long["source"], long["edited"], strict=True)]
            truth = object_colours(long["edited"], masks)
            floors.append(cross_segment_error(truth))
            floor_curves.append(segment_errors(truth))
            if k == 0:
                sheet_rows += [np.stack([s[len(s) // 2] for s in long["source"]])]
                sheet_rows += [np.stack([e[len(e) // 2] for e in long["edited"]])]
                sheet_labels += ["source", f"ground-truth edit (objects {long['edit_colour']})"]
            for setting in SETTINGS:
                segments = edit_video(
                    pipelines, sample, setting, long["source"], long["prompt"], Path(tmp) / f"video{k}"
                )
                colours = object_colours(segments, masks)
                results[setting]["cross_segment_error"].append(cross_segment_error(colours))
                results[setting]["colour_error"].append(
                    float(np.nanmean(np.abs(colours - truth).mean(axis=1))) if np.isfinite(colours).any() else np.nan
                )
                curves[setting].append(segment_errors(colours))
                edited = long["edited"]
                results[setting]["psnr"].append(psnr(np.stack(segments), edited))
                results[setting]["ssim"].append(ssim(np.stack(segments), edited))
                if k == 0:
                    sheet_rows.append(np.stack([s[len(s) // 2] for s in segments]))
                    sheet_labels.append(f"{setting}: middle frame of segments 1-{len(segments)}")
    summary = report.mean_over_scenes(results)
    result = {
        "videos": videos,
        "weights": str(sample.weights),
        "sampling": sample.sampling.to_dict(),
        "summary": summary,
        "ground_truth_floor": float(np.nanmean(floors)),
        "per_segment": report.mean_curves(curves),
        "ground_truth_per_segment": report.mean_curves({"truth": floor_curves})["truth"],
        "memory_vs_no_memory_error_reduction": report.reduction(summary, "cross_segment_error", "memory", "no memory"),
        "memory_vs_previous_error_reduction": report.reduction(
            summary, "cross_segment_error", "memory", "previous segment"
        ),
        "per_video": results,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=2))
    write_contact_sheet(
        out / "segments.png", sheet_rows, labels=sheet_labels, frame_indices=list(range(len(sheet_rows[0])))
    )
    report.bar_plot(
        summary,
        [("cross_segment_error", "cross-segment error (lower is better)"), ("psnr", "PSNR vs ground truth (dB)")],
        out / "edit_consistency.png",
        {"cross_segment_error": result["ground_truth_floor"]},
    )
    report.curve_plot(
        result["per_segment"],
        out / "per_segment.png",
        "segment",
        "object colour error against earlier segments",
        "long edit: each segment's object colour against the segments before it",
        floor=result["ground_truth_per_segment"],
        first=2,
    )
    (out / "table.md").write_text(table(result))
    return result


def table(result: Mapping[str, Any]) -> str:
    body = report.table(result["summary"], COLUMNS, {"cross_segment_error": result["ground_truth_floor"]})
    return body + (
        f"\n\nMemory vs no memory: {report.lower_or_higher(result['memory_vs_no_memory_error_reduction'])} "
        "cross-segment error; vs the previous segment only: "
        f"{report.lower_or_higher(result['memory_vs_previous_error_reduction'])} "
        f"({result['videos']} held-out long videos)."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/tiny_long_edit.py")
    parser.add_argument("--weights", default=None, help="override the config's sample.weights")
    parser.add_argument("--videos", type=int, default=8)
    parser.add_argument("--steps", type=int, default=None, help="override the sampler's steps")
    parser.add_argument("--out", default="outputs/edit_consistency")
    parser.add_argument("--write-benchmarks", action="store_true", help="also write BENCHMARKS.md's section")
    args = parser.parse_args()
    config = load_config(args.config)
    if args.weights:
        config.sample.weights = args.weights
    out = Path(args.out)
    result = evaluate(config, args.videos, out, args.steps)
    print(table(result))
    if args.write_benchmarks:
        write_section(
            "Consistency (synthetic long video editing)",
            f"Model: `{config.sample.weights}`; plots `{out / 'edit_consistency.png'}`, "
            f"`{out / 'per_segment.png'}`.\n\n" + table(result),
        )


if __name__ == "__main__":
    main()
