"""The base models a config's `sample` section names: the latent codec, the text conditioning and the
retrieval embedder (what the pipelines and the latent encoding of a dataset share).

sample.codec     {kind: "space_to_depth", spatial, frequencies, mean, std} | {kind: "wan_vae", weights}
sample.text      {kind: "none"} | {kind: "umt5", weights, tokenizer, cache}
sample.embedder  long edit: {kind: "dinov2", weights} | {kind: "dinov2_random", preset, seed}
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from flax import nnx

from mv2v_jax.models.codec import LatentCodec, SpaceToDepthCodec, WanVAECodec
from mv2v_jax.models.text.conditioning import TextConditioning


def build_codec(config: Mapping[str, Any]) -> LatentCodec:
    kind = config["kind"]
    if kind == "space_to_depth":
        options = {k: tuple(config[k]) for k in ("mean", "std") if k in config}
        return SpaceToDepthCodec(config["spatial"], config.get("frequencies"), **options)
    if kind == "wan_vae":
        from mv2v_jax.models.wan.vae import load_vae

        return WanVAECodec(load_vae(existing_weights(config["weights"], "VAE weights")))
    raise ValueError(f"unknown codec kind {kind!r}; choose space_to_depth or wan_vae")


def build_text(config: Mapping[str, Any], text_dim: int) -> TextConditioning:
    kind = config["kind"]
    if kind == "none":
        return TextConditioning(text_dim=text_dim)
    if kind == "umt5":
        from mv2v_jax.models.text.umt5 import TextEncoder

        weights = existing_weights(config["weights"], "umT5 weights")
        return TextConditioning(TextEncoder(weights, config["tokenizer"], config.get("cache")), text_dim)
    raise ValueError(f"unknown text encoder kind {kind!r}; choose none or umt5")


def build_embedder(config: Mapping[str, Any]) -> Callable[[np.ndarray], np.ndarray]:
    """DINOv2 `frames -> [N, D]` for long-edit retrieval; "dinov2_random" is a randomly initialised
    network of a preset (tests and the synthetic demo, where only similar-looking segments matter)."""
    from mv2v_jax.config import REPO_CONFIGS, load_config
    from mv2v_jax.models.vision.dinov2 import Dinov2, Dinov2Config, embed_frames, load_dinov2

    kind = config["kind"]
    if kind == "dinov2":
        model = load_dinov2(existing_weights(config["weights"], "DINOv2 weights"))
    elif kind == "dinov2_random":
        preset = load_config(f"{REPO_CONFIGS / 'dinov2.py'}:{config['preset']}")
        model = Dinov2(Dinov2Config.from_config(preset), rngs=nnx.Rngs(config["seed"]))
    else:
        raise ValueError(f"unknown embedder kind {kind!r}; choose dinov2 or dinov2_random")
    return lambda frames: embed_frames(model, frames)


# The command that writes each kind of weights folder (README, "The real backbones").
MAKERS = {
    "model weights": "`python -m convert_weights.recammaster` or `.lucy_edit` (or a training run's weights/)",
    "VAE weights": "`python -m convert_weights.wan_vae`",
    "umT5 weights": "`python -m convert_weights.umt5`",
    "DINOv2 weights": "`python -m convert_weights.dinov2`",
}


def existing_weights(path: str, what: str) -> Path:
    """`path` as a Path, or a FileNotFoundError naming `what` (a key of `MAKERS`) is missing and how to make it."""
    if not path or not Path(path).exists():
        raise FileNotFoundError(
            f"{what} not found at {path!r}: convert them with {MAKERS[what]}, or write random ones of the config's "
            'architecture with `python -m convert_weights.random --config ...` (README, "The real backbones")'
        )
    return Path(path)
