"""Pipelines from an experiment config's `sample` section (what sample.py and the evaluation call).

sample.weights        MemoryDiT weights directory (convert_weights.recammaster / lucy_edit, or train.py)
sample.codec          {kind: "space_to_depth", spatial, frequencies, mean, std} | {kind: "wan_vae", weights}
sample.text           {kind: "none"} | {kind: "umt5", weights, tokenizer, cache}
sample.embedder       long edit: {kind: "dinov2", weights} | {kind: "dinov2_random", preset, seed}
sample.video          frames, height, width, fps (what every turn's video is read and written at)
sample.sampling       memory.pipelines.denoiser.SamplingConfig fields
sample.retrieval      slots (the memory budget k), min_score, buckets (pipelines.slots.MemoryBudget); NVS:
                      hfov_degrees, fov_radius
sample.long_edit      segment_frames, overlap
sample.runtime        DiT execution overrides (dtype, attention, ...)
sample.merge_schedule "" (the weights' own) or a name in memory.merging.MERGE_SCHEDULES (blocks, fraction, r)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flax import nnx

from mv2v_jax.config import dataclass_from_config
from mv2v_jax.geometry import Intrinsics
from mv2v_jax.memory.merging import MERGE_SCHEDULES
from mv2v_jax.memory.model import load_memory_dit
from mv2v_jax.models.codec import LatentCodec, SpaceToDepthCodec, WanVAECodec
from mv2v_jax.pipelines.denoiser import SamplingConfig, TextConditioning
from mv2v_jax.pipelines.long_edit import LongEditPipeline
from mv2v_jax.pipelines.nvs import NVSPipeline
from mv2v_jax.pipelines.slots import MemoryBudget
from mv2v_jax.tasks import get_task


def session_config(sample: Mapping[str, Any], task: str) -> dict[str, Any]:
    """What a session's stored outputs depend on (its hash guards the session): weights, codec,
    retrieval geometry and video size. Sampler settings and the memory budget (how many memories a turn
    feeds) may change between turns."""
    config = {"task": task} | {k: _plain(sample[k]) for k in ("weights", "codec", "retrieval", "video")}
    budget = {f.name for f in dataclasses.fields(MemoryBudget)}
    config["retrieval"] = {k: v for k, v in config["retrieval"].items() if k not in budget}
    return config


def _plain(value: Any) -> Any:
    return value.to_dict() if hasattr(value, "to_dict") else value


def build_codec(config: Mapping[str, Any]) -> LatentCodec:
    kind = config["kind"]
    if kind == "space_to_depth":
        options = {k: tuple(config[k]) for k in ("mean", "std") if k in config}
        return SpaceToDepthCodec(config["spatial"], config.get("frequencies"), **options)
    if kind == "wan_vae":
        from mv2v_jax.models.wan.vae import load_vae

        return WanVAECodec(load_vae(_existing(config["weights"], "VAE weights")))
    raise ValueError(f"unknown codec kind {kind!r}; choose space_to_depth or wan_vae")


def build_text(config: Mapping[str, Any], text_dim: int) -> TextConditioning:
    kind = config["kind"]
    if kind == "none":
        return TextConditioning(text_dim=text_dim)
    if kind == "umt5":
        from mv2v_jax.models.text.umt5 import TextEncoder

        encoder = TextEncoder(_existing(config["weights"], "umT5 weights"), config["tokenizer"], config.get("cache"))
        return TextConditioning(encoder, text_dim)
    raise ValueError(f"unknown text encoder kind {kind!r}; choose none or umt5")


def build_embedder(config: Mapping[str, Any]):
    """DINOv2 `frames -> [N, D]` for long-edit retrieval; "dinov2_random" is a randomly initialised
    network of a preset (tests and the synthetic demo, where only similar-looking segments matter)."""
    from mv2v_jax.config import load_config
    from mv2v_jax.models.vision.dinov2 import Dinov2, Dinov2Config, embed_frames, load_dinov2

    kind = config["kind"]
    if kind == "dinov2":
        model = load_dinov2(_existing(config["weights"], "DINOv2 weights"))
    elif kind == "dinov2_random":
        preset = load_config(f"configs/dinov2.py:{config['preset']}")
        model = Dinov2(Dinov2Config.from_config(preset), rngs=nnx.Rngs(config["seed"]))
    else:
        raise ValueError(f"unknown embedder kind {kind!r}; choose dinov2 or dinov2_random")
    return lambda frames: embed_frames(model, frames)


def _existing(path: str, what: str) -> Path:
    if not path or not Path(path).exists():
        raise FileNotFoundError(f"{what} not found at {path!r}; convert them first (see README, Weights)")
    return Path(path)


def _nvs(sample: Mapping[str, Any], model, codec, sampling, text) -> NVSPipeline:
    video, retrieval = sample["video"], sample["retrieval"]
    intrinsics = Intrinsics.from_hfov(retrieval["hfov_degrees"], video["height"], video["width"])
    return NVSPipeline(model, codec, sampling, intrinsics, memory_budget(retrieval), retrieval["fov_radius"], text)


def _long_edit(sample: Mapping[str, Any], model, codec, sampling, text) -> LongEditPipeline:
    edit = sample["long_edit"]
    embedder = build_embedder(sample["embedder"])
    budget = memory_budget(sample["retrieval"])
    return LongEditPipeline(model, codec, sampling, embedder, budget, edit["segment_frames"], edit["overlap"], text)


def memory_budget(retrieval: Mapping[str, Any]) -> MemoryBudget:
    """The `MemoryBudget` of a `sample.retrieval` section (its other keys are the task's retrieval geometry)."""
    fields = {k: retrieval[k] for k in ("slots", "min_score", "buckets") if k in retrieval}
    return dataclass_from_config(MemoryBudget, fields, "sample.retrieval")


# The turn driver of each task: a task's streams, examples and retrieval key live in mv2v_jax.tasks;
# what a turn is (a camera trajectory, a segment of a long video) is its pipeline's.
PIPELINES = {"nvs": _nvs, "long_edit": _long_edit}


def build_pipeline(sample: Mapping[str, Any], task: str) -> NVSPipeline | LongEditPipeline:
    get_task(task)  # an unknown task is named before anything loads
    sampling = dataclass_from_config(SamplingConfig, sample["sampling"], "sample.sampling")
    sampling.make_sampler()  # refused here, before a session is touched
    schedule = sample.get("merge_schedule", "")
    if schedule and schedule not in MERGE_SCHEDULES:
        raise ValueError(f"unknown sample.merge_schedule {schedule!r}; choose one of {sorted(MERGE_SCHEDULES)}")
    model = load_memory_dit(_existing(sample["weights"], "model weights"), **_plain(sample.get("runtime", {})))
    if schedule:  # not the weights' own (memory.model.MemoryDiT.with_merge)
        model = model.with_merge(MERGE_SCHEDULES[schedule])
        sampling = dataclasses.replace(sampling, keep_ratio=MERGE_SCHEDULES[schedule].keep_ratio)
    codec = build_codec(sample["codec"])
    text = build_text(sample["text"], model.config.dit.text_dim)
    return PIPELINES[task](sample, model, codec, sampling, text)
