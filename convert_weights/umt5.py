"""Convert a umT5 encoder checkpoint (transformers or native Wan) into a weights directory.

    python -m convert_weights.umt5 SRC OUT [--param-dtype auto|float32|bfloat16] [--overwrite]

SRC is any of:
- a transformers `UMT5EncoderModel` folder (`config.json` + `model*.safetensors`, sharded with an
  index or not, or `pytorch_model*.bin`), e.g. `Wan2.1-T2V-14B-Diffusers/text_encoder`; a full
  `UMT5Model` / `UMT5ForConditionalGeneration` folder (google/umt5-xxl) works too: its decoder and LM
  head are skipped;
- Wan's native encoder file `models_t5_umt5-xxl-enc-bf16.pth` (names of Wan2.1 wan/modules/t5.py
  `T5Encoder`), the architecture read off the tensor shapes.

Native names are mapped to transformers names (`NATIVE_TO_HF`), then to our parameters by `RULES`.
`--param-dtype auto` keeps the checkpoint's dtype (bfloat16 for Wan's file). In memory,
`convert_state_dict(state_dict, config)` gives the same parameters from a state dict.

The weights directory's config.json records a fingerprint of the source tensors (names, shapes,
dtypes and the first bytes of each), which `mv2v_jax.models.text.umt5.encoder_identity` puts into the
prompt-cache key: converting other weights into the same folder invalidates cached embeddings.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import mv2v_jax.cli_start  # noqa: F401  (first: Ctrl-C in the imports below is one line, exit 130)

import numpy as np
from flax import nnx

from convert_weights.common import (
    LINEAR,
    ConversionError,
    Rule,
    expected_params,
    read_params,
    run_cli,
    write_weights,
)
from convert_weights.sources import StateDict, Tensors, TensorSource
from mv2v_jax.config import run_app
from mv2v_jax.models.text.umt5 import ARCH_FIELDS, UMT5Config, UMT5Encoder
from mv2v_jax.models.weights import nest_paths

# Wan's native T5Encoder module names <-> transformers module names; `{i}` is the layer index.
NATIVE_TO_HF: tuple[tuple[str, str], ...] = (
    ("token_embedding", "shared"),
    ("blocks.{i}.norm1", "encoder.block.{i}.layer.0.layer_norm"),
    *((f"blocks.{{i}}.attn.{p}", f"encoder.block.{{i}}.layer.0.SelfAttention.{p}") for p in "qkvo"),
    ("blocks.{i}.pos_embedding.embedding", "encoder.block.{i}.layer.0.SelfAttention.relative_attention_bias"),
    ("blocks.{i}.norm2", "encoder.block.{i}.layer.1.layer_norm"),
    ("blocks.{i}.ffn.gate.0", "encoder.block.{i}.layer.1.DenseReluDense.wi_0"),
    ("blocks.{i}.ffn.fc1", "encoder.block.{i}.layer.1.DenseReluDense.wi_1"),
    ("blocks.{i}.ffn.fc2", "encoder.block.{i}.layer.1.DenseReluDense.wo"),
    ("norm", "encoder.final_layer_norm"),
)


def _rename(name: str, pairs) -> str:
    """`name` with the first matching module prefix `old` replaced by `new` (templates with `{i}`)."""
    for old, new in pairs:
        m = re.fullmatch(re.escape(old).replace(r"\{i\}", r"(\d+)") + r"\.(.+)", name)
        if m:
            return (new.replace("{i}", m.group(1)) if "{i}" in old else new) + "." + m.group(m.lastindex)
    return name


def native_to_hf(name: str) -> str:
    return _rename(name, NATIVE_TO_HF)


def hf_to_native(name: str) -> str:
    """The inverse of `native_to_hf` (used to build native test checkpoints)."""
    return _rename(name, [(hf, native) for native, hf in NATIVE_TO_HF])


_BLOCK = r"encoder\.block\.(?P<layer>\d+)\.layer\."

# transformers name -> our parameter path.
RULES: tuple[Rule, ...] = (
    Rule(r"shared\.weight", "token_embedding"),
    Rule(_BLOCK + r"0\.layer_norm\.weight", "blocks/norm1/weight"),
    Rule(_BLOCK + r"0\.SelfAttention\.(q|k|v|o)\.weight", "blocks/attn/{1}/kernel", LINEAR),
    Rule(_BLOCK + r"0\.SelfAttention\.relative_attention_bias\.weight", "blocks/attn/relative_bias"),
    Rule(_BLOCK + r"1\.layer_norm\.weight", "blocks/norm2/weight"),
    Rule(_BLOCK + r"1\.DenseReluDense\.wi_0\.weight", "blocks/ffn/gate/kernel", LINEAR),
    Rule(_BLOCK + r"1\.DenseReluDense\.wi_1\.weight", "blocks/ffn/fc1/kernel", LINEAR),
    Rule(_BLOCK + r"1\.DenseReluDense\.wo\.weight", "blocks/ffn/fc2/kernel", LINEAR),
    Rule(r"encoder\.final_layer_norm\.weight", "norm/weight"),
)


class EncoderTensors:
    """The encoder's tensors of a checkpoint: a full model's `decoder.*` and `lm_head.*` are hidden, and so is
    `encoder.embed_tokens.weight` where `shared.weight` is present (transformers ties the two)."""

    def __init__(self, source: Tensors):
        self.source = source
        names = source.names()
        tied = "shared.weight" in names
        self._names = [
            n
            for n in names
            if not n.startswith(("decoder.", "lm_head.")) and not (tied and n == "encoder.embed_tokens.weight")
        ]

    def names(self) -> list[str]:
        return self._names

    def shape(self, name: str) -> tuple[int, ...]:
        return self.source.shape(name)

    def dtype(self, name: str) -> np.dtype:
        return self.source.dtype(name)

    def read(self, name: str) -> np.ndarray:
        return self.source.read(name)


def is_native(names: Sequence[str]) -> bool:
    return "token_embedding.weight" in names


def config_from_json(config: dict[str, Any], where: Path) -> dict[str, Any]:
    """Our architecture fields from a transformers `UMT5Config` config.json."""
    if config.get("model_type") != "umt5":
        raise ConversionError(
            f"{where}: model_type {config.get('model_type')!r}, not 'umt5' (T5 and mT5 share one relative-position "
            "bias across layers; umT5, which this port implements, has one per layer)"
        )
    projection = config.get("feed_forward_proj", "gated-gelu")
    if projection != "gated-gelu":
        raise ConversionError(f"{where}: feed_forward_proj={projection!r}; umT5 (and this port) use 'gated-gelu'")
    try:
        return dict(
            vocab_size=config["vocab_size"],
            d_model=config["d_model"],
            d_kv=config["d_kv"],
            d_ff=config["d_ff"],
            num_heads=config["num_heads"],
            num_layers=config["num_layers"],
            relative_attention_num_buckets=config.get("relative_attention_num_buckets", 32),
            relative_attention_max_distance=config.get("relative_attention_max_distance", 128),
            layer_norm_epsilon=config.get("layer_norm_epsilon", 1e-6),
        )
    except KeyError as e:
        raise ConversionError(f"{where}: config.json lacks {e}") from e


def config_from_shapes(source: EncoderTensors) -> dict[str, Any]:
    """Architecture read off the (transformers-named) tensor shapes, for Wan's bare .pth file; the bucket
    max distance and the norm epsilon are not in the shapes and keep umT5's values (128, 1e-6)."""
    shapes = {native_to_hf(n): source.shape(n) for n in source.names()}
    try:
        vocab_size, d_model = shapes["shared.weight"]
        inner = shapes["encoder.block.0.layer.0.SelfAttention.q.weight"][0]
        num_buckets, num_heads = shapes["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"]
        layers = {int(m.group(1)) for n in shapes if (m := re.match(r"encoder\.block\.(\d+)\.", n))}
        return dict(
            vocab_size=vocab_size,
            d_model=d_model,
            d_kv=inner // num_heads,
            d_ff=shapes["encoder.block.0.layer.1.DenseReluDense.wi_0.weight"][0],
            num_heads=num_heads,
            num_layers=max(layers) + 1,
            relative_attention_num_buckets=num_buckets,
        )
    except KeyError as e:
        where = getattr(source.source, "path", "the state dict")
        raise ConversionError(f"{where}: cannot infer the umT5 architecture, no tensor {e}") from e


def read_architecture(src: Path, source: EncoderTensors) -> dict[str, Any]:
    """From the `config.json` beside the weights, else (Wan's native file) from the tensor shapes."""
    config_file = (src if src.is_dir() else src.parent) / "config.json"
    if config_file.is_file() and not is_native(source.names()):
        try:
            return config_from_json(json.loads(config_file.read_text()), config_file)
        except json.JSONDecodeError as e:
            raise ConversionError(f"{config_file} is not valid JSON: {e}") from e
    return config_from_shapes(source)


def source_dtype(source: EncoderTensors) -> str:
    """'bfloat16' if every floating tensor is stored in bfloat16, else 'float32'."""
    dtypes = {str(source.source.dtype(n)) for n in source.names()}
    return "bfloat16" if dtypes == {"bfloat16"} else "float32"


def source_fingerprint(source: EncoderTensors, sample_bytes: int = 1 << 16) -> str:
    """sha256 over every tensor's name, shape, dtype and first `sample_bytes` bytes: reads ~64 KiB a tensor."""
    digest = hashlib.sha256()
    for name in sorted(source.names()):
        array = source.read(name)
        digest.update(f"{name}:{array.shape}:{array.dtype}:".encode())
        digest.update(array.reshape(-1).view(np.uint8)[:sample_bytes].tobytes())
    return digest.hexdigest()


def convert_umt5(
    src: str | Path,
    out: str | Path,
    *,
    param_dtype: str = "auto",
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Converts `src` into the weights directory `out`; returns `out`. Refuses incomplete checkpoints."""
    src = Path(src)
    source = EncoderTensors(TensorSource(src))
    native = is_native(source.names())
    arch = read_architecture(src, source)
    dtype = source_dtype(source) if param_dtype == "auto" else param_dtype
    config = UMT5Config.from_config(arch | {"param_dtype": dtype})
    record = {
        "model": UMT5Encoder.__name__,
        "architecture": {k: getattr(config, k) for k in ARCH_FIELDS},
        "source": {
            "path": str(src.resolve()),
            "format": "native" if native else "transformers",
            "fingerprint": source_fingerprint(source),
        },
    }
    expected = expected_params(lambda: UMT5Encoder(config, rngs=nnx.Rngs(0)))
    rename = native_to_hf if native else (lambda n: n)
    return write_weights(source, RULES, expected, out, record, rename=rename, overwrite=overwrite, progress=progress)


def convert_state_dict(state_dict: Mapping[str, Any], config: UMT5Config, *, progress: bool = False) -> dict:
    """A transformers `UMT5EncoderModel` / `UMT5Model` or Wan native umT5 state dict -> our nested encoder
    parameters for `config` (a full model's decoder and the tied embedding copy are skipped)."""
    source = EncoderTensors(StateDict(state_dict))
    rename = native_to_hf if is_native(source.names()) else (lambda n: n)
    expected = expected_params(lambda: UMT5Encoder(config, rngs=nnx.Rngs(0)))
    return nest_paths(read_params(source, RULES, expected, rename=rename, progress=progress))


def main(argv: Sequence[str]) -> int:
    return run_cli(
        "python -m convert_weights.umt5",
        __doc__,
        lambda a: convert_umt5(a.src, a.out, param_dtype=a.param_dtype, overwrite=a.overwrite, progress=True),
        argv,
        param_dtypes=("auto", "float32", "bfloat16"),
    )


if __name__ == "__main__":
    run_app(main, absl_flags=False)
