"""Does memory keep a long video's edit consistent? Measured on held-out synthetic long videos.

    python -m mv2v_jax.eval.edit_consistency --config configs/tiny_long_edit.py --videos 16

Each held-out video (seeds disjoint from training's) is a camera panning round a room for several
segments, and its edit (data.synthetic.long_video) is one that neither the prompt nor the current
segment determines: every wall repainted its own colour drawn per video (the shipped model's), or
every moving object recoloured with one colour. Three settings edit it segment by segment with the same
model, sampler and per-segment seed:
- memory: one session; each segment sees the previous edited segment and the older ones most similar
  to it by their sources' DINOv2 embeddings (ours, Memory-V2V);
- previous segment: memory of the previous edited segment only (one slot);
- no memory: every segment edited alone.
Metrics, on the codec's key frames (every 4th frame, as eval.consistency), against the ground-truth
edited video, per video and then as means over videos with 95% bootstrap intervals (eval.report):
- cross-segment error: the mean absolute colour difference (0..1) between every pair of segments on
  the pixels of the edited regions (each wall, or the objects: the pixels the ground-truth edit changed,
  eroded, `region_masks`) that both see, matched through the ground-truth depth and cameras, every key
  frame of one segment against every key frame of the other (eval.metrics.warp_error; walls stand
  still, a moving object is where its depth says). The same wall should keep its colour: lower is more
  consistent. Per segment, the same against the segments before it;
- edit colour error: each segment's mean colour per edited region against the ground truth's;
- PSNR and SSIM of the whole edited video, and the detail ratio (eval.metrics.detail).
The floor is the ground-truth edit passed through the codec. Writes results.json, table.md, a bar plot,
a per-segment plot and a contact sheet of one video, and with --write-benchmarks the section of
BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
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
from mv2v_jax.data.synthetic import LongVideoConfig, edit_regions, generate_long_edit
from mv2v_jax.eval import report
from mv2v_jax.eval.benchmarks import write_section
from mv2v_jax.eval.consistency import HELD_OUT_SEED, turn_errors, weighted_error
from mv2v_jax.eval.metrics import detail_ratio, edit_mask, psnr, region_colour, ssim, warp_error
from mv2v_jax.io.images import write_contact_sheet
from mv2v_jax.models.codec import TEMPORAL
from mv2v_jax.pipelines.build import build_pipeline, session_config
from mv2v_jax.pipelines.long_edit import LongEditPipeline
from mv2v_jax.pipelines.session import Session, SourceVideo

SETTINGS = ("memory", "previous segment", "no memory")
COLUMNS = (
    ("cross_segment_error", "cross-segment error (lower is better)", ".4f"),
    ("colour_error", "edit colour error vs ground truth", ".4f"),
    ("psnr", "PSNR vs ground truth (dB)", ".2f"),
    ("ssim", "SSIM vs ground truth", ".3f"),
    ("detail_ratio", "detail ratio (ground truth: 1)", ".2f"),
)
REGION_CHANGE = 8  # uint8 levels: a region's pixels the edit changed by more (landmarks on a repainted wall stay)


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


def region_masks(long: Mapping[str, Any]) -> list[dict[str, np.ndarray]]:
    """Per segment of a `generate_long_edit` video, at its key frames: edited region name -> bool mask
    `[K, H, W]` of the region's pixels the ground-truth edit changed, eroded by a pixel."""
    edit = long["config"].edit
    return [
        {
            name: edit_mask(source[::TEMPORAL], edited[::TEMPORAL], within=region, threshold=REGION_CHANGE)
            for name, region in edit_regions(ids[::TEMPORAL], edit).items()
        }
        for source, edited, ids in zip(long["source"], long["edited"], long["ids"], strict=True)
    ]


def region_colours(segments: Sequence[np.ndarray], masks: Sequence[Mapping[str, np.ndarray]]) -> np.ndarray:
    """`[S, R, 3]` mean colour of each segment (key frames) on each edited region (NaN where the segment
    does not show it)."""
    return np.stack(
        [np.stack([region_colour(v, m) for m in regions.values()]) for v, regions in zip(segments, masks, strict=True)]
    )


def pair_errors(segments: Sequence[np.ndarray], long: Mapping[str, Any], masks) -> np.ndarray:
    """`[S, S, 2]` (error, pixels): `warp_error` of every ordered pair of segments (key frames), every key
    frame of one against every key frame of the other, on the second's edited-region pixels (`masks`)."""
    depth, w2c = long["depth"][:, ::TEMPORAL], long["w2c"][:, ::TEMPORAL]
    edited = [np.logical_or.reduce(list(regions.values())) for regions in masks]
    errors = np.zeros((len(segments), len(segments), 2))
    for a, b in itertools.permutations(range(len(segments)), 2):
        total, count = 0.0, 0
        for fa, fb in itertools.product(range(len(depth[a])), range(len(depth[b]))):
            pick_a, pick_b = slice(fa, fa + 1), slice(fb, fb + 1)
            error, n = warp_error(
                segments[a][pick_a],
                segments[b][pick_b],
                depth[a][pick_a],
                depth[b][pick_b],
                w2c[a][pick_a],
                w2c[b][pick_b],
                long["K"],
                mask_j=edited[b][pick_b],
            )
            total, count = (total + error * n, count + n) if n else (total, count)
        errors[a, b] = (total / count, count) if count else (0.0, 0)
    return errors


def scores(segments: Sequence[np.ndarray], long: Mapping[str, Any], masks, truth: np.ndarray):
    """The metrics of one setting's edited segments (key frames) of one video and its per-segment curve;
    `truth`: the ground-truth region colours `[S, R, 3]`."""
    pairs = pair_errors(segments, long, masks)
    errors = np.abs(region_colours(segments, masks) - truth).mean(axis=-1)
    edited = long["edited"][:, ::TEMPORAL]
    values = {
        "cross_segment_error": weighted_error(pairs),
        "colour_error": float(np.nanmean(errors)) if np.isfinite(errors).any() else float("nan"),
        "psnr": psnr(np.stack(segments), edited),
        "ssim": ssim(np.stack(segments), edited),
        "detail_ratio": detail_ratio(np.stack(segments), edited),
    }
    return values, turn_errors(pairs)


def evaluate(config, videos: int, out: Path, steps: int | None = None) -> dict[str, Any]:
    sample = config.sample
    if steps is not None:
        sample.sampling.steps = steps
    memory = build_pipeline(sample, "long_edit")
    codec = memory.codec
    pipelines = {"memory": memory, "previous segment": with_slots(memory, 1), "no memory": memory}
    video_config = LongVideoConfig.from_config(config.data.source.video)
    rows = (*SETTINGS, report.FLOOR)
    results: dict[str, dict[str, list[float]]] = {s: {key: [] for key, _, _ in COLUMNS} for s in rows}
    curves: dict[str, list[list[float]]] = {s: [] for s in rows}
    sheet_rows, sheet_labels = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for k in tqdm(range(videos), desc="videos", unit="video"):
            long = generate_long_edit(HELD_OUT_SEED + k, video_config)
            masks = region_masks(long)
            truth = region_colours(long["edited"][:, ::TEMPORAL], masks)
            outputs = {report.FLOOR: [codec.decode(codec.encode(e)) for e in long["edited"]]}
            for setting in SETTINGS:
                folder = Path(tmp) / f"video{k}"
                outputs[setting] = edit_video(pipelines, sample, setting, long["source"], long["prompt"], folder)
            for row in rows:
                values, curve = scores([s[::TEMPORAL] for s in outputs[row]], long, masks, truth)
                report.add_scene(results, curves, row, values, curve)
            if k == 0:  # the middle key frame of every segment
                middle = len(long["source"][0][::TEMPORAL]) // 2
                sheet_rows += [long["source"][:, ::TEMPORAL][:, middle], long["edited"][:, ::TEMPORAL][:, middle]]
                sheet_labels += ["source", f"ground-truth edit ({long['edit_colour']})"]
                for setting in SETTINGS:
                    sheet_rows.append(np.stack([s[::TEMPORAL][middle] for s in outputs[setting]]))
                    sheet_labels.append(f"{setting}: segments 1-{len(outputs[setting])}")
    summary = report.mean_over_scenes(results)
    result = {
        "videos": videos,
        "weights": str(sample.weights),
        "sampling": sample.sampling.to_dict(),
        "summary": summary,
        "intervals": report.intervals(results),
        "per_segment": report.mean_curves(curves),
        **report.reductions(results, "cross_segment_error", {"no_memory": "no memory", "previous": "previous segment"}),
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
        result["intervals"],
    )
    report.curve_plot(
        result["per_segment"],
        out / "per_segment.png",
        "segment",
        "error against earlier segments",
        "long edit: each segment's edit against the earlier ones",
        first=2,
    )
    (out / "table.md").write_text(table(result))
    return result


def table(result: Mapping[str, Any]) -> str:
    body = report.table(result["summary"], COLUMNS, {}, result["intervals"])
    reduction = lambda name: report.lower_or_higher(
        result[f"memory_vs_{name}_error_reduction"]["mean"], result[f"memory_vs_{name}_error_reduction"]["interval"]
    )
    return body + (
        f"\n\nMeans over {result['videos']} held-out long videos (the codec's key frames) with 95% bootstrap "
        f"intervals. Memory vs no memory: {reduction('no_memory')} cross-segment error; vs the previous "
        f"segment only: {reduction('previous')}."
    )


def main(argv: list[str]) -> int:
    from mv2v_jax.io.atomic import check_can_create
    from mv2v_jax.pipelines.build import check_sample_config, check_weights_exist

    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/tiny_long_edit.py")
    parser.add_argument("--weights", default=None, help="override the config's sample.weights")
    parser.add_argument("--videos", type=int_at_least(1), default=16)
    parser.add_argument("--steps", type=int_at_least(1), default=None, help="override the sampler's steps")
    parser.add_argument("--out", default="outputs/edit_consistency")
    parser.add_argument("--write-benchmarks", action="store_true", help="also write BENCHMARKS.md's section")
    args = parser.parse_args(argv)
    out = Path(args.out)
    try:  # everything the run reads or writes is checked before the first video
        config = load_config(args.config)
        if args.weights:
            config.sample.weights = args.weights
        check_sample_config(config.sample, "long_edit")
        check_weights_exist(config.sample, "long_edit")
        check_can_create(out)
        result = evaluate(config, args.videos, out, args.steps)
    except (ValueError, OSError) as e:  # a config, weights or output folder that cannot be used
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(table(result))
    if args.write_benchmarks:
        write_section(
            "Consistency (synthetic long video editing)",
            f"Model: `{config.sample.weights}`; plots `{out / 'edit_consistency.png'}`, "
            f"`{out / 'per_segment.png'}`.\n\n" + table(result),
        )
    return 0


if __name__ == "__main__":
    run_app(main, absl_flags=False)
