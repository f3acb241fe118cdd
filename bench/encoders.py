"""JAX vs PyTorch encoders, same random weights and inputs, timed side by side on this machine's CPU.

    python bench/encoders.py                # umT5 at real width, 2 layers; DINOv2-B/14 at real size; fp32
    python bench/encoders.py --layers 24    # the whole umT5-XXL depth (needs ~25 GB)

Rows:
- umT5 encoder: d_model 4096, 64 heads x 64, d_ff 10240 (umT5-XXL widths), `--layers` layers, a 32,000-token
  vocabulary (the embedding lookup costs nothing; the real 256,384 rows would only add 8 GB of RAM), one
  prompt of 120 tokens padded to Wan's text length 512 (`[1, 512]` -> `[1, 512, 4096]`).
- DINOv2-B/14 (`facebook/dinov2-base` shapes: 12 layers, 768 wide), 8 frames `[8, 224, 224, 3]` ->
  257 tokens each.
- DINOv2 preprocessing of 8 uint8 frames 480x832 -> `[8, 224, 224, 3]`: transformers' `BitImageProcessorPil`
  (Pillow) vs ours (jit).

Calls alternate (reference, ours, ...) after a warm-up call each (JAX compilation excluded). Writes the
"Encoders (CPU)" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from functools import partial

import mv2v_jax.cli_start  # noqa: F401  (first: Ctrl-C in the imports below is one line, exit 130)

import jax
import jax.numpy as jnp
import numpy as np
import torch
from common import summary, timed, write_section  # bench/ is on sys.path when run as a script
from flax import nnx
from PIL import Image

from convert_weights import dinov2 as dinov2_converter
from convert_weights import umt5 as umt5_converter
from mv2v_jax.config import ArgumentParser, int_at_least, run_app
from mv2v_jax.models.text.umt5 import UMT5Config, UMT5Encoder, encode_tokens
from mv2v_jax.models.vision.dinov2 import IMAGENET_MEAN, IMAGENET_STD, Dinov2, Dinov2Config, preprocess
from mv2v_jax.models.weights import module_from_params

TEXT_LEN, PROMPT_TOKENS, FRAMES = 512, 120, 8


def row(name: str, shapes: str, reference: Callable, ours: Callable, repeats: int) -> str:
    want, got = np.asarray(reference(), np.float32), np.asarray(ours(), np.float32)
    error = float(np.abs(got - want).max() / np.abs(want).max())
    t_ref, t_ours = timed(reference, ours, repeats=repeats)
    speedup = np.median(t_ref) / np.median(t_ours)
    return f"| {name} | {shapes} | {summary(t_ref)} | {summary(t_ours)} | {speedup:.2f}x | {error:.1e} |"


def umt5_row(layers: int, repeats: int) -> str:
    from transformers import UMT5Config as TorchConfig
    from transformers import UMT5EncoderModel

    torch.manual_seed(0)
    reference = UMT5EncoderModel(
        TorchConfig(vocab_size=32000, d_model=4096, d_kv=64, d_ff=10240, num_heads=64, num_layers=layers)
    ).eval()
    arch = umt5_converter.config_from_json(reference.config.to_dict(), "reference")
    config = UMT5Config.from_config(arch | {"dtype": "float32"})
    params = umt5_converter.convert_state_dict(reference.state_dict(), config)
    ours = module_from_params(lambda: UMT5Encoder(config, rngs=nnx.Rngs(0)), params)
    ids = np.random.default_rng(0).integers(3, 32000, (1, TEXT_LEN))
    mask = (np.arange(TEXT_LEN) < PROMPT_TOKENS)[None].astype(np.int64)
    ids *= mask
    t_ids, t_mask = torch.from_numpy(ids), torch.from_numpy(mask)

    def run_torch():
        return reference(input_ids=t_ids, attention_mask=t_mask).last_hidden_state * t_mask[..., None]

    return row(
        f"umT5 encoder, XXL widths, {layers} layers",
        f"ids `[1, {TEXT_LEN}]` ({PROMPT_TOKENS} real) -> `[1, {TEXT_LEN}, 4096]`",
        run_torch,
        lambda: encode_tokens(ours, ids, mask).block_until_ready(),
        repeats,
    )


def dinov2_row(repeats: int) -> str:
    from transformers import Dinov2Config as TorchConfig
    from transformers import Dinov2Model

    torch.manual_seed(0)
    reference = Dinov2Model(TorchConfig(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, image_size=518))
    reference.eval()
    config = Dinov2Config.from_config(dinov2_converter.config_from_json(reference.config.to_dict(), "reference"))
    params = dinov2_converter.convert_state_dict(reference.state_dict(), config)
    ours = module_from_params(lambda: Dinov2(config, rngs=nnx.Rngs(0)), params)
    pixels = np.random.default_rng(0).standard_normal((FRAMES, 224, 224, 3)).astype(np.float32)
    t_pixels, j_pixels = torch.from_numpy(pixels.transpose(0, 3, 1, 2)), jnp.asarray(pixels)
    graphdef, params = nnx.split(ours)
    forward = jax.jit(lambda params, x: nnx.merge(graphdef, params)(x).last_hidden_state)
    return row(
        "DINOv2-B/14",
        f"pixels `[{FRAMES}, 224, 224, 3]` -> `[{FRAMES}, 257, 768]`",
        lambda: reference(pixel_values=t_pixels).last_hidden_state,
        lambda: forward(params, j_pixels).block_until_ready(),
        repeats,
    )


def preprocess_row(repeats: int) -> str:
    from transformers.models.bit.image_processing_pil_bit import BitImageProcessorPil

    processor = BitImageProcessorPil(
        size={"shortest_edge": 256}, crop_size={"height": 224, "width": 224}, resample=3,
        image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD,
    )  # fmt: skip
    frames = np.random.default_rng(0).integers(0, 256, (FRAMES, 480, 832, 3), dtype=np.uint8)
    images = [Image.fromarray(f) for f in frames]
    ours = jax.jit(preprocess)

    def run_reference():
        return processor(images, return_tensors="np")["pixel_values"].transpose(0, 2, 3, 1)

    return row(
        "DINOv2 preprocessing",
        f"uint8 `[{FRAMES}, 480, 832, 3]` -> `[{FRAMES}, 224, 224, 3]`",
        run_reference,
        lambda: ours(jnp.asarray(frames)).block_until_ready(),
        repeats,
    )


def main(argv: list[str]) -> None:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int_at_least(1), default=2, help="umT5 layers (umT5-XXL has 24)")
    parser.add_argument("--repeats", type=int_at_least(1), default=3)
    args = parser.parse_args(argv)
    torch.set_grad_enabled(False)
    rows = []
    for make in (partial(umt5_row, args.layers), dinov2_row, preprocess_row):
        rows.append(make(repeats=args.repeats))
        print(rows[-1], flush=True)
    header = "| encoder | shapes | PyTorch / transformers | mv2v-jax | speedup | max rel. diff |"
    write_section(
        "Encoders (CPU)",
        "fp32 on CPU, random weights (the same in both), one call each; median (min) of alternating calls after "
        "a warm-up call each (JAX compilation excluded). The umT5 outputs are zeroed past the prompt in both, "
        "as Wan uses them; the preprocessing reference is transformers' Pillow-backed BitImageProcessor.\n\n"
        + "\n".join([header, "|---|---|---|---|---|---|", *rows]),
    )


if __name__ == "__main__":
    run_app(main, absl_flags=False)
