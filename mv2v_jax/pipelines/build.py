"""Pipelines from an experiment config's `sample` section (what sample.py and the evaluation call).

sample.weights        MemoryDiT weights directory (convert_weights.recammaster / lucy_edit, or train.py)
sample.codec, sample.text, sample.embedder: the base models (models.build)
sample.video          frames, height, width, fps (what every turn's video is read and written at)
sample.sampling       memory.pipelines.denoiser.SamplingConfig fields
sample.cache          step caching (pipelines.step_cache.StepCacheConfig: kind, threshold, warmup, uncond_every;
                      absent: off)
sample.retrieval      slots (the memory budget k), min_score, buckets (pipelines.slots.MemoryBudget); NVS:
                      hfov_degrees, fov_radius
sample.long_edit      segment_frames, overlap
sample.runtime        DiT execution overrides (dtype, attention, ...)
sample.merge_schedule "" (the weights' own) or a name in memory.merging.MERGE_SCHEDULES (blocks, fraction, r)
sample.mesh           where each turn's denoiser runs: "auto" (every device of this process: guidance's batch
                      over data, the rest over sequence) or axis sizes, "data=2,sequence=4", over the first
                      devices (parallel.mesh.sampling_mesh); the weights in the serving layout
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from mv2v_jax.config import dataclass_from_config, require
from mv2v_jax.geometry import Intrinsics
from mv2v_jax.io.video import VideoConfig
from mv2v_jax.memory.merging import MERGE_SCHEDULES
from mv2v_jax.memory.model import load_memory_dit
from mv2v_jax.models.build import build_codec, build_embedder, build_text, existing_weights
from mv2v_jax.parallel.mesh import check_mesh_shape, parse_mesh, sampling_mesh
from mv2v_jax.pipelines.denoiser import SamplingConfig
from mv2v_jax.pipelines.long_edit import LongEditPipeline
from mv2v_jax.pipelines.nvs import NVSPipeline
from mv2v_jax.pipelines.slots import MemoryBudget
from mv2v_jax.pipelines.step_cache import StepCacheConfig
from mv2v_jax.tasks import get_task


def session_config(sample: Mapping[str, Any], task: str) -> dict[str, Any]:
    """What a session's stored outputs depend on (its hash guards the session): weights, codec,
    retrieval geometry and the video's frames and size. Sampler settings, the memory budget (how many
    memories a turn feeds) and the frame rate the mp4s are written at may change between turns."""
    config = {"task": task} | {k: _plain(sample[k]) for k in ("weights", "codec", "retrieval", "video")}
    budget = {f.name for f in dataclasses.fields(MemoryBudget)}
    config["retrieval"] = {k: v for k, v in config["retrieval"].items() if k not in budget}
    config["video"] = {k: v for k, v in config["video"].items() if k != "fps"}
    return config


def _plain(value: Any) -> Any:
    return value.to_dict() if hasattr(value, "to_dict") else value


def check_weights_exist(sample: Mapping[str, Any], task: str) -> None:
    """Refuses, naming it, a weights folder the `sample` section points at that does not exist (before
    anything is loaded or created; loading checks what is in them)."""
    existing_weights(sample["weights"], "model weights")
    if sample["codec"]["kind"] == "wan_vae":
        existing_weights(sample["codec"]["weights"], "VAE weights")
    if sample["text"]["kind"] == "umt5":
        existing_weights(sample["text"]["weights"], "umT5 weights")
    if task == "long_edit" and sample["embedder"]["kind"] == "dinov2":
        existing_weights(sample["embedder"]["weights"], "DINOv2 weights")


CODECS, TEXT_ENCODERS, EMBEDDERS = ("space_to_depth", "wan_vae"), ("none", "umt5"), ("dinov2", "dinov2_random")


def check_sample_config(sample: Mapping[str, Any], task: str | None = None) -> None:
    """Refuses values that make no sense in the `sample` section (steps 0, keep_ratio 2, fps 0, a NaN
    shift, an unknown codec, a field of view of 180 degrees, ...), naming the key, before anything is
    loaded or created; with `task`, that task's keys too."""
    dataclass_from_config(SamplingConfig, sample["sampling"], "sample.sampling").make_sampler()
    step_cache(sample)
    dataclass_from_config(VideoConfig, sample["video"], "sample.video")
    memory_budget(sample["retrieval"])
    schedule = sample.get("merge_schedule", "")
    if schedule and schedule not in MERGE_SCHEDULES:
        raise ValueError(f"unknown sample.merge_schedule {schedule!r}; choose one of {sorted(MERGE_SCHEDULES)}")
    mesh = sample.get("mesh", "auto")
    require(isinstance(mesh, str), "sample.mesh", mesh, 'a mesh is "auto" or axis sizes such as "data=2,sequence=4"')
    if mesh != "auto":
        try:
            check_mesh_shape(parse_mesh(mesh))
        except ValueError as e:
            raise ValueError(f"sample.mesh: {e}") from None
    kinds_of = {"codec": CODECS, "text": TEXT_ENCODERS} | ({"embedder": EMBEDDERS} if task == "long_edit" else {})
    for section, kinds in kinds_of.items():
        kind = sample[section].get("kind") if hasattr(sample[section], "get") else None
        require(kind in kinds, f"sample.{section}.kind", kind, f"choose one of {list(kinds)}")
    if task == "nvs":
        retrieval = sample["retrieval"]
        hfov, radius = retrieval["hfov_degrees"], retrieval["fov_radius"]
        require(
            _real(hfov) and 0 < hfov < 180, "sample.retrieval.hfov_degrees", hfov, "a field of view in (0, 180) degrees"
        )
        require(
            _real(radius) and radius > 0,
            "sample.retrieval.fov_radius",
            radius,
            "VideoFOV's sphere radius must be > 0 (or inf: directions at infinity)",
        )
    if task == "long_edit":
        edit = sample["long_edit"]
        frames, overlap = edit["segment_frames"], edit["overlap"]
        require(
            _count(frames) and (frames - 1) % 4 == 0,
            "sample.long_edit.segment_frames",
            frames,
            "segments have 4k + 1 frames (the VAE keeps frame 0 and compresses the rest 4x)",
        )
        require(
            isinstance(overlap, int) and not isinstance(overlap, bool) and 0 <= overlap < frames,
            "sample.long_edit.overlap",
            overlap,
            f"segments overlap by 0 to segment_frames - 1 = {frames - 1} frames",
        )


def check_video_size(video: Mapping[str, Any], multiples: tuple[int, int]) -> None:
    """Refuses a `sample.video` size the codec and the DiT's patches do not divide (`multiples` pixels,
    height and width)."""
    for key, multiple in zip(("height", "width"), multiples, strict=True):
        require(
            video[key] % multiple == 0,
            f"sample.video.{key}",
            video[key],
            f"must be a multiple of {multiple} (the codec's downsampling x the DiT's patch)",
        )


def _real(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _count(value: Any) -> bool:
    """An int >= 1."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _nvs(sample: Mapping[str, Any], **parts: Any) -> NVSPipeline:
    video, retrieval = sample["video"], sample["retrieval"]
    return NVSPipeline(
        **parts,
        intrinsics=Intrinsics.from_hfov(retrieval["hfov_degrees"], video["height"], video["width"]),
        budget=memory_budget(retrieval),
        fov_radius=retrieval["fov_radius"],
        fps=video["fps"],
    )


def _long_edit(sample: Mapping[str, Any], **parts: Any) -> LongEditPipeline:
    edit = sample["long_edit"]
    return LongEditPipeline(
        **parts,
        embed_frames=build_embedder(sample["embedder"]),
        budget=memory_budget(sample["retrieval"]),
        segment_frames=edit["segment_frames"],
        overlap=edit["overlap"],
        fps=sample["video"]["fps"],
    )


def step_cache(sample: Mapping[str, Any]) -> StepCacheConfig:
    """The `sample.cache` section's `StepCacheConfig` (absent: caching off)."""
    return dataclass_from_config(StepCacheConfig, sample.get("cache", {}), "sample.cache")


def memory_budget(retrieval: Mapping[str, Any]) -> MemoryBudget:
    """The `MemoryBudget` of a `sample.retrieval` section (its other keys are the task's retrieval geometry)."""
    fields = {k: retrieval[k] for k in ("slots", "min_score", "buckets") if k in retrieval}
    return dataclass_from_config(MemoryBudget, fields, "sample.retrieval")


# The turn driver of each task: a task's streams, examples and retrieval key live in mv2v_jax.tasks;
# what a turn is (a camera trajectory, a segment of a long video) is its pipeline's.
PIPELINES = {"nvs": _nvs, "long_edit": _long_edit}


def build_pipeline(sample: Mapping[str, Any], task: str) -> NVSPipeline | LongEditPipeline:
    get_task(task)  # an unknown task is named before anything loads
    check_sample_config(sample, task)
    sampling = dataclass_from_config(SamplingConfig, sample["sampling"], "sample.sampling")
    schedule = sample.get("merge_schedule", "")
    mesh = sampling_mesh(sample.get("mesh", "auto"), sampling.guides(sample["text"]["kind"] != "none"))
    weights = existing_weights(sample["weights"], "model weights")
    model = load_memory_dit(weights, mesh, serving=True, **_plain(sample.get("runtime", {})))
    if schedule:  # not the weights' own (memory.model.MemoryDiT.with_merge)
        model = model.with_merge(MERGE_SCHEDULES[schedule])
        sampling = dataclasses.replace(sampling, keep_ratio=MERGE_SCHEDULES[schedule].keep_ratio)
    codec = build_codec(sample["codec"])
    _, patch_h, patch_w = model.config.dit.patch_size
    check_video_size(sample["video"], (codec.spatial * patch_h, codec.spatial * patch_w))
    text = build_text(sample["text"], model.config.dit.text_dim)
    parts = dict(model=model, codec=codec, sampling=sampling, text=text, mesh=mesh, cache=step_cache(sample))
    return PIPELINES[task](sample, **parts)
