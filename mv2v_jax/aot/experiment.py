"""What an experiment config says a step looks like when it is compiled for a platform this host is not:
"auto" dtypes and attention resolved for that platform, the model at the real or a reduced depth, the
latent clip, the largest training variant and the packed token layout of one example."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
from flax import nnx

from mv2v_jax.aot.abstract import turn_conditions
from mv2v_jax.config import REPO_CONFIGS, load_config
from mv2v_jax.memory.model import MemoryConfig, MemoryDiT
from mv2v_jax.memory.streams import pack_streams
from mv2v_jax.memory.tokenizers import TokenizerConfig
from mv2v_jax.models.codec import TEMPORAL
from mv2v_jax.models.wan.vae import WanVAEConfig
from mv2v_jax.train.step import StepVariant

# What "auto" resolves to on an accelerator (models.layers.compute_dtype, AttentionConfig.resolved); a
# program compiled here for another platform must say so itself.
AUTO = {"tpu": ("splash", "bfloat16"), "gpu": ("cudnn", "bfloat16")}


def resolve_auto(dit: Mapping[str, Any], platform: str | None = "tpu") -> dict[str, Any]:
    """DiT execution fields with "auto" attention and dtype as `platform` resolves them (None: leave
    "auto" to the backend that runs the program)."""
    dit = dict(dit)
    if platform is None:
        return dit
    impl, dtype = AUTO[platform]
    attention = dict(dit.get("attention", {}))
    if attention.get("impl", "auto") == "auto":
        attention["impl"] = impl
    dit["attention"] = attention
    if dit.get("dtype", "auto") == "auto":
        dit["dtype"] = dtype
    return dit


def plain(config: Any) -> Any:
    """A config section as plain Python (a `ConfigDict` as a dict; anything else as it is)."""
    return config.to_dict() if hasattr(config, "to_dict") else config


def memory_config(
    model: Mapping[str, Any], runtime: Mapping[str, Any], depth: int | None, platform: str | None
) -> MemoryConfig:
    """The MemoryConfig of an experiment's `model` section for `platform`; with `depth`, that many
    unrolled blocks and the merge hooks at the same fractions of the depth."""
    model = dict(plain(model))
    dit = resolve_auto(dict(plain(model["dit"])) | dict(plain(runtime)), platform)
    config = MemoryConfig.from_config(model | {"dit": dit})
    if depth is None:
        return config
    merges = config.merge.block_indices(config.dit.num_layers)
    blocks = tuple(30 * i / config.dit.num_layers for i in merges)  # MergeConfig places `blocks` on 30 layers
    return dataclasses.replace(
        config,
        dit=dataclasses.replace(config.dit, num_layers=depth, scan_layers=False),
        merge=dataclasses.replace(config.merge, blocks=blocks),
    )


@dataclasses.dataclass(frozen=True)
class Clip:
    """One video's latent geometry `[frames, height, width, channels]` and the text length."""

    frames: int
    height: int
    width: int
    channels: int
    text_len: int

    @property
    def latents(self) -> tuple[int, int, int, int]:
        return (self.frames, self.height, self.width, self.channels)


def clip_of(config: Mapping[str, Any]) -> Clip:
    """The latent clip an experiment samples and trains at: `sample.video` through `sample.codec`
    (Wan's 4x temporal compression; the space-to-depth codec's or the Wan VAE preset's spatial one), and
    the text length (umT5: Wan's 512 tokens; no text encoder: one zero token)."""
    sample = config["sample"]
    video, codec = sample["video"], sample["codec"]
    if codec["kind"] == "space_to_depth":
        spatial = codec["spatial"]
        channels = 3 * (codec.get("frequencies") or spatial) ** 2
    elif codec["kind"] == "wan_vae":
        vae = WanVAEConfig.from_config(load_config(f"{REPO_CONFIGS / 'wan_vae.py'}:{codec.get('preset', 'wan2.1')}"))
        spatial, channels = vae.spatial_compression, vae.z_dim
    else:
        raise ValueError(f"unknown codec kind {codec['kind']!r}")
    frames = 1 + (video["frames"] - 1) // TEMPORAL
    text_len = 512 if sample["text"]["kind"] == "umt5" else 1
    return Clip(frames, -(-video["height"] // spatial), -(-video["width"] // spatial), channels, text_len)


def largest_variant(config: MemoryConfig, sampling: Mapping[str, Any]) -> StepVariant:
    """The training step variant with the most tokens (no merging; every memory slot at the finest
    tokenizer a step can draw): the one that must fit."""
    paper = config.tokenizers
    finest = min(paper.patches, key=math.prod)
    uniform = TokenizerConfig(ranked=(), rest=finest)
    pick = uniform if sampling["uniform_tokenizer_prob"] > 0 else paper
    return StepVariant(pick, None)


def turn_layout(model_config: MemoryConfig, task, clip: Clip, slots: int, tokenizers: TokenizerConfig) -> tuple:
    """The packed token layout of one example (`memory.streams.StreamSlice`s), from the task's own
    streams, computed abstractly."""

    def pack():
        model = MemoryDiT(model_config, rngs=nnx.Rngs(0))
        conditions = turn_conditions(
            task, 1, slots, clip.latents, lambda *shape, dtype=jnp.float32: jnp.zeros(shape, dtype)
        )
        streams = task.streams(jnp.zeros((1, *clip.latents)), conditions, tokenizers)
        return pack_streams(streams, model.tokenizers.mapping(model.dit.patch_embedding))

    return nnx.eval_shape(pack).layout


def token_count(model_config: MemoryConfig, clip: Clip, slots: int, tokenizers: TokenizerConfig, task) -> int:
    """Tokens in one packed example."""
    return turn_layout(model_config, task, clip, slots, tokenizers)[-1].stop
