"""Convert a transformers DINOv2 checkpoint (with or without registers) into a weights directory.

    python -m convert_weights.dinov2 SRC OUT [--param-dtype float32|bfloat16] [--overwrite]

SRC is a transformers `Dinov2Model` folder (facebook/dinov2-{small,base,large,giant}) or a
`Dinov2WithRegistersModel` folder (facebook/dinov2-with-registers-*): `config.json` plus
`model*.safetensors` (sharded with an index or not) or `pytorch_model*.bin`.

Tensor names are those the hub files and `save_pretrained` use (`attention.attention.query`, ...,
`mlp.weights_in` for SwiGLU). The SwiGLU `weights_in` `[2F, D]` holds the gate rows, then the up rows;
we keep it as one `[D, 2, F]` kernel.

In memory, `convert_state_dict(state_dict, config)` gives the same parameters from a state dict. It
takes the hub's names, or transformers 5's in-memory ones (`attention.q_proj`, ..., SwiGLU split into
`mlp.gate_proj` and `mlp.up_proj`), which `hub_state_dict` maps back as `save_pretrained` does.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import mv2v_jax.cli_start  # noqa: F401  (first: Ctrl-C in the imports below is one line, exit 130)

import numpy as np
from flax import nnx

from convert_weights.common import (
    CONV2D,
    LINEAR,
    ConversionError,
    Layout,
    Rule,
    expected_params,
    read_params,
    run_cli,
    write_weights,
)
from convert_weights.sources import StateDict, TensorSource
from mv2v_jax.config import run_app
from mv2v_jax.models.vision.dinov2 import ARCH_FIELDS, Dinov2, Dinov2Config
from mv2v_jax.models.weights import nest_paths

# torch [2F, D] (gate rows, then up rows) -> [D, 2, F]; bias [2F] -> [2, F]
SWIGLU_IN = Layout(
    "swiglu_in",
    lambda a: a.reshape(2, a.shape[0] // 2, a.shape[1]).transpose(2, 0, 1),
    lambda s: (s[1], 2, s[0] // 2),
)
SWIGLU_IN_BIAS = Layout("swiglu_in_bias", lambda a: a.reshape(2, -1), lambda s: (2, s[0] // 2))

_LAYER = r"encoder\.layer\.(?P<layer>\d+)\."

# transformers (hub) name -> our parameter path.
RULES: tuple[Rule, ...] = (
    Rule(r"embeddings\.patch_embeddings\.projection\.weight", "embeddings/patch_kernel", CONV2D),
    Rule(r"embeddings\.patch_embeddings\.projection\.bias", "embeddings/patch_bias"),
    Rule(r"embeddings\.(cls_token|mask_token|register_tokens|position_embeddings)", "embeddings/{0}"),
    Rule(_LAYER + r"norm(1|2)\.weight", "layers/norm{1}/scale"),
    Rule(_LAYER + r"norm(1|2)\.bias", "layers/norm{1}/bias"),
    Rule(_LAYER + r"attention\.attention\.(query|key|value)\.weight", "layers/attention/{1}/kernel", LINEAR),
    Rule(_LAYER + r"attention\.attention\.(query|key|value)\.bias", "layers/attention/{1}/bias"),
    Rule(_LAYER + r"attention\.output\.dense\.weight", "layers/attention/out/kernel", LINEAR),
    Rule(_LAYER + r"attention\.output\.dense\.bias", "layers/attention/out/bias"),
    Rule(_LAYER + r"layer_scale(1|2)\.lambda1", "layers/layer_scale{1}"),
    Rule(_LAYER + r"mlp\.(fc1|fc2|weights_out)\.weight", "layers/mlp/{1}/kernel", LINEAR),
    Rule(_LAYER + r"mlp\.(fc1|fc2|weights_out)\.bias", "layers/mlp/{1}/bias"),
    Rule(_LAYER + r"mlp\.weights_in\.weight", "layers/mlp/weights_in_kernel", SWIGLU_IN),
    Rule(_LAYER + r"mlp\.weights_in\.bias", "layers/mlp/weights_in_bias", SWIGLU_IN_BIAS),
    Rule(r"layernorm\.weight", "layernorm/scale"),
    Rule(r"layernorm\.bias", "layernorm/bias"),
)

MODEL_TYPES = ("dinov2", "dinov2_with_registers")
# transformers 5's module names in memory -> the hub's (save_pretrained writes the hub's).
IN_MEMORY_TO_HUB = {
    "attention.q_proj": "attention.attention.query",
    "attention.k_proj": "attention.attention.key",
    "attention.v_proj": "attention.attention.value",
    "attention.o_proj": "attention.output.dense",
    "mlp.down_proj": "mlp.weights_out",
}


def hub_state_dict(state_dict: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """A state dict in the hub's names: transformers 5's in-memory names renamed (`IN_MEMORY_TO_HUB`),
    SwiGLU's separate `mlp.gate_proj` and `mlp.up_proj` rows stacked into `mlp.weights_in` (gate
    first); hub names pass through."""
    out = {}
    for name, value in state_dict.items():
        prefix, _, tail = name.rpartition(".")  # tail: weight or bias
        module = next((m for m in IN_MEMORY_TO_HUB if prefix.endswith("." + m)), None)
        if module is not None:
            out[f"{prefix.removesuffix(module)}{IN_MEMORY_TO_HUB[module]}.{tail}"] = np.asarray(value)
        elif prefix.endswith(".mlp.gate_proj"):
            mlp = prefix.removesuffix("gate_proj")
            gate, up = np.asarray(value), np.asarray(state_dict[f"{mlp}up_proj.{tail}"])
            out[f"{mlp}weights_in.{tail}"] = np.concatenate([gate, up])
        elif not prefix.endswith(".mlp.up_proj"):
            out[name] = np.asarray(value)
    return out


def config_from_json(config: dict[str, Any], where: Path) -> dict[str, Any]:
    """Our architecture fields from a transformers `Dinov2Config` / `Dinov2WithRegistersConfig` config.json."""
    model_type = config.get("model_type")
    if model_type not in MODEL_TYPES:
        raise ConversionError(f"{where}: model_type {model_type!r} is not one of {MODEL_TYPES}")
    if config.get("hidden_act", "gelu") != "gelu" or config.get("num_channels", 3) != 3:
        raise ConversionError(
            f"{where}: hidden_act={config.get('hidden_act')!r}, num_channels={config.get('num_channels')}; "
            "DINOv2 checkpoints use 'gelu' and 3 channels, and so does this port"
        )
    registers = model_type == "dinov2_with_registers"
    try:
        image_size, patch_size = config["image_size"], config["patch_size"]
        if isinstance(image_size, list | tuple) or isinstance(patch_size, list | tuple):
            raise ConversionError(f"{where}: non-square image_size / patch_size are not supported")
        return dict(
            hidden_size=config["hidden_size"],
            num_layers=config["num_hidden_layers"],
            num_heads=config["num_attention_heads"],
            mlp_ratio=config.get("mlp_ratio", 4),
            use_swiglu_ffn=config.get("use_swiglu_ffn", False),
            patch_size=patch_size,
            image_size=image_size,
            num_register_tokens=config.get("num_register_tokens", 4) if registers else 0,
            interpolate_antialias=registers,  # the registers model resizes with antialias=True
            use_mask_token=True if registers else config.get("use_mask_token", True),
            qkv_bias=config.get("qkv_bias", True),
            layer_norm_eps=config.get("layer_norm_eps", 1e-6),
        )
    except KeyError as e:
        raise ConversionError(f"{where}: config.json lacks {e}") from e


def convert_dinov2(
    src: str | Path,
    out: str | Path,
    *,
    param_dtype: str = "float32",
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Converts the transformers folder `src` into the weights directory `out`; returns `out`."""
    src = Path(src)
    source = TensorSource(src)
    config_file = (src if src.is_dir() else src.parent) / "config.json"
    if not config_file.is_file():
        raise ConversionError(f"{config_file}: missing; a transformers DINOv2 folder has its config.json")
    try:
        arch = config_from_json(json.loads(config_file.read_text()), config_file)
    except json.JSONDecodeError as e:
        raise ConversionError(f"{config_file} is not valid JSON: {e}") from e
    config = Dinov2Config.from_config(arch | {"param_dtype": param_dtype})
    record = {
        "model": Dinov2.__name__,
        "architecture": {k: getattr(config, k) for k in ARCH_FIELDS},
        "source": {"path": str(src.resolve()), "format": "transformers"},
    }
    expected = expected_params(lambda: Dinov2(config, rngs=nnx.Rngs(0)))
    return write_weights(source, RULES, expected, out, record, overwrite=overwrite, progress=progress)


def convert_state_dict(state_dict: Mapping[str, Any], config: Dinov2Config, *, progress: bool = False) -> dict:
    """A transformers DINOv2 state dict (hub or in-memory names) -> our nested parameters for `config`."""
    expected = expected_params(lambda: Dinov2(config, rngs=nnx.Rngs(0)))
    return nest_paths(read_params(StateDict(hub_state_dict(state_dict)), RULES, expected, progress=progress))


def main(argv: Sequence[str]) -> int:
    return run_cli(
        "python -m convert_weights.dinov2",
        __doc__,
        lambda a: convert_dinov2(a.src, a.out, param_dtype=a.param_dtype, overwrite=a.overwrite, progress=True),
        argv,
    )


if __name__ == "__main__":
    run_app(main, absl_flags=False)
