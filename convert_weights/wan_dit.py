"""Convert a Wan DiT checkpoint (diffusers or native Wan release) into a weights directory.

    python -m convert_weights.wan_dit SRC OUT [--param-dtype bfloat16] [--overwrite]

In memory, `convert_state_dict(state_dict, config)` gives the same parameters from a state dict
(diffusers' or native names), for `models.weights.module_from_params`:

    config = WanDiTConfig.from_config(config_from_json(dict(torch_model.config), "reference"))
    params = convert_state_dict({k: v.float().numpy() for k, v in torch_model.state_dict().items()}, config)
    model = module_from_params(lambda: WanDiT(config, rngs=nnx.Rngs(0)), params)

SRC is any of:
- a diffusers `WanTransformer3DModel` folder (`config.json` + `diffusion_pytorch_model*.safetensors`,
  sharded with an index or not), e.g. `Wan2.1-T2V-1.3B-Diffusers/transformer`;
- a native Wan release folder (`config.json` with `dim`/`num_heads`/... + safetensors shards, or
  `.pth`), e.g. `Wan2.1-T2V-1.3B`, `Wan2.2-TI2V-5B`;
- a single checkpoint file in either naming (the architecture is then read off the tensor shapes,
  with Wan's head_dim of 128).

Native names are mapped to diffusers names by the renames diffusers itself applies
(`convert_wan_transformer_to_diffusers` in diffusers/loaders/single_file_utils.py;
docs/models.md, "Wan DiT weight names"), then to our parameters by `RULES`.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import mv2v_jax.cli_start  # noqa: F401  (first: Ctrl-C in the imports below is one line, exit 130)

from flax import nnx

from convert_weights.common import (
    CONV3D,
    LINEAR,
    ConversionError,
    Rule,
    expected_params,
    read_params,
    run_cli,
    write_weights,
)
from convert_weights.sources import StateDict, Tensors, TensorSource
from mv2v_jax.config import int_at_least, run_app
from mv2v_jax.models.wan.dit import ARCH_FIELDS, WanDiT, WanDiTConfig
from mv2v_jax.models.weights import nest_paths

HEAD_DIM = 128  # Wan's attention head width, for a checkpoint without config.json

# Native -> diffusers, applied in order with str.replace (so the norm2/norm3 swap goes through a
# placeholder). Image-conditioning (I2V) and VACE keys are not mapped: those models are not ported.
NATIVE_TO_DIFFUSERS: tuple[tuple[str, str], ...] = (
    ("time_embedding.0", "condition_embedder.time_embedder.linear_1"),
    ("time_embedding.2", "condition_embedder.time_embedder.linear_2"),
    ("text_embedding.0", "condition_embedder.text_embedder.linear_1"),
    ("text_embedding.2", "condition_embedder.text_embedder.linear_2"),
    ("time_projection.1", "condition_embedder.time_proj"),
    ("cross_attn", "attn2"),
    ("self_attn", "attn1"),
    (".o.", ".to_out.0."),
    (".q.", ".to_q."),
    (".k.", ".to_k."),
    (".v.", ".to_v."),
    ("head.modulation", "scale_shift_table"),
    ("head.head", "proj_out"),
    ("modulation", "scale_shift_table"),
    ("ffn.0", "ffn.net.0.proj"),
    ("ffn.2", "ffn.net.2"),
    ("norm2", "norm__placeholder"),
    ("norm3", "norm2"),
    ("norm__placeholder", "norm3"),
)
NATIVE_PREFIX = "model.diffusion_model."  # ComfyUI-style single files carry it


def native_to_diffusers(name: str) -> str:
    name = name.removeprefix(NATIVE_PREFIX)
    for old, new in NATIVE_TO_DIFFUSERS:
        name = name.replace(old, new)
    return name


def diffusers_to_native(name: str) -> str:
    """The inverse of `native_to_diffusers` on Wan T2V/TI2V names (used to build native test checkpoints)."""
    exact = {
        "scale_shift_table": "head.modulation",
        "proj_out.weight": "head.head.weight",
        "proj_out.bias": "head.head.bias",
    }
    if name in exact:
        return exact[name]
    inverse = [(new, old) for old, new in NATIVE_TO_DIFFUSERS if "norm" not in old and not old.startswith("head.")]
    name = name.replace("norm2", "norm__placeholder").replace("norm3", "norm2").replace("norm__placeholder", "norm3")
    for new, old in inverse:
        name = name.replace(new, old)
    return name


BLOCK = r"blocks\.(?P<layer>\d+)\."
_ATTN = {"attn1": "self_attn", "attn2": "cross_attn"}

# diffusers name -> our parameter path.
RULES: tuple[Rule, ...] = (
    Rule(r"patch_embedding\.weight", "patch_embedding/kernel", CONV3D),
    Rule(r"patch_embedding\.bias", "patch_embedding/bias"),
    Rule(r"condition_embedder\.text_embedder\.linear_(1|2)\.weight", "text_fc{0}/kernel", LINEAR),
    Rule(r"condition_embedder\.text_embedder\.linear_(1|2)\.bias", "text_fc{0}/bias"),
    Rule(r"condition_embedder\.time_embedder\.linear_(1|2)\.weight", "time_fc{0}/kernel", LINEAR),
    Rule(r"condition_embedder\.time_embedder\.linear_(1|2)\.bias", "time_fc{0}/bias"),
    Rule(r"condition_embedder\.time_proj\.weight", "time_projection/kernel", LINEAR),
    Rule(r"condition_embedder\.time_proj\.bias", "time_projection/bias"),
    *(
        rule
        for theirs, ours in _ATTN.items()
        for rule in (
            Rule(BLOCK + theirs + r"\.to_(q|k|v)\.weight", f"blocks/{ours}/{{1}}/kernel", LINEAR),
            Rule(BLOCK + theirs + r"\.to_(q|k|v)\.bias", f"blocks/{ours}/{{1}}/bias"),
            Rule(BLOCK + theirs + r"\.to_out\.0\.weight", f"blocks/{ours}/o/kernel", LINEAR),
            Rule(BLOCK + theirs + r"\.to_out\.0\.bias", f"blocks/{ours}/o/bias"),
            Rule(BLOCK + theirs + r"\.norm_(q|k)\.weight", f"blocks/{ours}/norm_{{1}}/weight"),
        )
    ),
    Rule(BLOCK + r"norm2\.weight", "blocks/norm_cross_scale"),
    Rule(BLOCK + r"norm2\.bias", "blocks/norm_cross_bias"),
    Rule(BLOCK + r"ffn\.net\.0\.proj\.weight", "blocks/ffn/fc1/kernel", LINEAR),
    Rule(BLOCK + r"ffn\.net\.0\.proj\.bias", "blocks/ffn/fc1/bias"),
    Rule(BLOCK + r"ffn\.net\.2\.weight", "blocks/ffn/fc2/kernel", LINEAR),
    Rule(BLOCK + r"ffn\.net\.2\.bias", "blocks/ffn/fc2/bias"),
    Rule(BLOCK + r"scale_shift_table", "blocks/modulation"),
    Rule(r"proj_out\.weight", "head/proj/kernel", LINEAR),
    Rule(r"proj_out\.bias", "head/proj/bias"),
    Rule(r"scale_shift_table", "head/modulation"),
)


def is_native(names: Sequence[str]) -> bool:
    return not any(n.startswith("condition_embedder.") for n in names)


def source_names(source: Tensors) -> Callable[[str], str]:
    """The renaming that brings `source`'s tensor names to diffusers names (identity if they are)."""
    return native_to_diffusers if is_native(source.names()) else (lambda n: n)


def config_from_json(config: dict[str, Any], where: Path) -> dict[str, Any]:
    """Our architecture fields from a diffusers or a native Wan `config.json`."""
    if (
        config.get("image_dim")
        or config.get("added_kv_proj_dim")
        or config.get("model_type", "t2v")
        not in (
            "t2v",
            "ti2v",
        )
    ):
        raise ConversionError(f"{where}: image-conditioned (I2V/FLF2V/VACE) Wan models are not supported")
    try:
        if "num_attention_heads" in config:  # diffusers
            arch = dict(
                dim=config["num_attention_heads"] * config["attention_head_dim"],
                num_heads=config["num_attention_heads"],
                ffn_dim=config["ffn_dim"],
                num_layers=config["num_layers"],
                in_channels=config["in_channels"],
                out_channels=config.get("out_channels") or config["in_channels"],
                patch_size=tuple(config.get("patch_size", (1, 2, 2))),
                text_dim=config.get("text_dim", 4096),
                freq_dim=config.get("freq_dim", 256),
                eps=config.get("eps", 1e-6),
                cross_attn_norm=config.get("cross_attn_norm", True),
                rope_max_len=config.get("rope_max_seq_len", 1024),
            )
        else:  # native WanModel
            arch = dict(
                dim=config["dim"],
                num_heads=config["num_heads"],
                ffn_dim=config["ffn_dim"],
                num_layers=config["num_layers"],
                in_channels=config["in_dim"],
                out_channels=config["out_dim"],
                patch_size=tuple(config.get("patch_size", (1, 2, 2))),
                text_dim=config.get("text_dim", 4096),
                freq_dim=config.get("freq_dim", 256),
                eps=config.get("eps", 1e-6),
                cross_attn_norm=config.get("cross_attn_norm", True),
            )
    except KeyError as e:
        raise ConversionError(f"{where}: config.json lacks {e}") from e
    return arch


def config_from_shapes(source: Tensors, head_dim: int = HEAD_DIM) -> dict[str, Any]:
    """Architecture read off tensor shapes, for bare checkpoint files without a config."""
    native = is_native(source.names())
    name = native_to_diffusers if native else (lambda n: n)
    shapes = {name(n): source.shape(n) for n in source.names()}
    try:
        dim, in_channels, *patch = shapes["patch_embedding.weight"]
        if dim % head_dim:
            where = getattr(source, "path", "the state dict")
            raise ConversionError(f"{where}: a width of {dim} does not split into heads of {head_dim} (--head-dim)")
        layers = {int(m.group(1)) for n in shapes if (m := re.match(r"blocks\.(\d+)\.", n))}
        return dict(
            dim=dim,
            num_heads=dim // head_dim,
            ffn_dim=shapes["blocks.0.ffn.net.0.proj.weight"][0],
            num_layers=max(layers) + 1,
            in_channels=in_channels,
            out_channels=shapes["proj_out.weight"][0] // (patch[0] * patch[1] * patch[2]),
            patch_size=tuple(patch),
            text_dim=shapes["condition_embedder.text_embedder.linear_1.weight"][1],
            freq_dim=shapes["condition_embedder.time_embedder.linear_1.weight"][1],
            cross_attn_norm="blocks.0.norm2.weight" in shapes,
        )
    except KeyError as e:
        where = getattr(source, "path", "the state dict")
        raise ConversionError(f"{where}: cannot infer the architecture, no tensor {e}") from e


def architecture_file(src: Path) -> Path:
    """The `config.json` beside the checkpoint `src` (a folder or a file), which gives its architecture."""
    return (src if src.is_dir() else src.parent) / "config.json"


def read_architecture(src: Path, source: TensorSource, head_dim: int = HEAD_DIM) -> dict[str, Any]:
    """From the `config.json` beside the weights, else from tensor shapes with `head_dim`."""
    config_file = architecture_file(src)
    if config_file.is_file():
        try:
            return config_from_json(json.loads(config_file.read_text()), config_file)
        except json.JSONDecodeError as e:
            raise ConversionError(f"{config_file} is not valid JSON: {e}") from e
    return config_from_shapes(source, head_dim)


def convert_dit(
    src: str | Path,
    out: str | Path,
    *,
    param_dtype: str = "float32",
    head_dim: int = HEAD_DIM,
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Converts `src` into the weights directory `out`; returns `out`. Refuses incomplete checkpoints."""
    src = Path(src)
    source = TensorSource(src)
    config = WanDiTConfig.from_config(read_architecture(src, source, head_dim) | {"param_dtype": param_dtype})
    native = is_native(source.names())
    record = {
        "model": "WanDiT",
        "architecture": {k: getattr(config, k) for k in ARCH_FIELDS},
        "source": {"path": str(src.resolve()), "format": "native" if native else "diffusers"},
    }
    expected = expected_params(lambda: WanDiT(config, rngs=nnx.Rngs(0)))
    rename = source_names(source)
    return write_weights(source, RULES, expected, out, record, rename=rename, overwrite=overwrite, progress=progress)


def convert_state_dict(state_dict: Mapping[str, Any], config: WanDiTConfig, *, progress: bool = False) -> dict:
    """A diffusers or native Wan DiT state dict (`{name: array}`) -> our nested parameters for `config`,
    in its param_dtype; refuses an incomplete or mismatched state dict like the CLI."""
    source = StateDict(state_dict)
    expected = expected_params(lambda: WanDiT(config, rngs=nnx.Rngs(0)))
    return nest_paths(read_params(source, RULES, expected, rename=source_names(source), progress=progress))


def add_dit_arguments(parser) -> None:
    parser.add_argument(
        "--head-dim",
        type=int_at_least(1),
        default=None,
        help=f"attention head width, only for a SRC without config.json (default {HEAD_DIM}, Wan's)",
    )


def head_dim_flag(args: argparse.Namespace) -> int:
    """`--head-dim` (default `HEAD_DIM`), refused where SRC has a config.json: that file gives the
    architecture, so the flag would be ignored."""
    if args.head_dim is None:
        return HEAD_DIM
    if (config_file := architecture_file(Path(args.src))).is_file():
        raise ConversionError(
            f"--head-dim {args.head_dim}: {config_file} gives the architecture; --head-dim is only for a "
            "checkpoint without config.json"
        )
    return args.head_dim


def main(argv: Sequence[str]) -> int:
    return run_cli(
        "python -m convert_weights.wan_dit",
        __doc__,
        lambda a: convert_dit(
            a.src, a.out, param_dtype=a.param_dtype, head_dim=head_dim_flag(a), overwrite=a.overwrite, progress=True
        ),
        argv,
        add_dit_arguments,
    )


if __name__ == "__main__":
    run_app(main, absl_flags=False)
