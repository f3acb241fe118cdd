"""Convert a Wan VAE checkpoint (diffusers or native Wan release) into a weights directory.

    python -m convert_weights.wan_vae SRC OUT [--param-dtype bfloat16] [--overwrite]

SRC is any of:
- a diffusers `AutoencoderKLWan` folder (`config.json` + `diffusion_pytorch_model*.safetensors`), e.g.
  `Wan2.1-T2V-1.3B-Diffusers/vae` or `Wan2.2-TI2V-5B-Diffusers/vae`;
- a native release file, `Wan2.1_VAE.pth` (Wan2.1 `wan/modules/vae.py`) or `Wan2.2_VAE.pth` (Wan2.2
  `wan/modules/vae2_2.py`), or a folder holding one. Native files carry no config: the architecture is
  read off the tensor shapes, the version off the names (Wan2.2 nests its residual blocks,
  `encoder.downsamples.{i}.downsamples.{j}`), and the latent statistics are the published ones for
  z_dim 16 (Wan2.1) or 48 (Wan2.2).

In memory, `convert_state_dict(state_dict, config)` gives the same parameters from a state dict in
either naming (for `models.weights.module_from_params`).

Names go native -> diffusers -> our parameter paths.

Native -> diffusers (`native_to_diffusers`) is the mapping of diffusers' `convert_vae` / `convert_vae_22`
(scripts/convert_wan_to_diffusers.py) and `convert_wan_vae_to_diffusers` (loaders/single_file_utils.py),
written for any `num_res_blocks` n (diffusers hard-codes n = 2):

| native | diffusers |
|---|---|
| `conv1`, `conv2` (top level) | `quant_conv`, `post_quant_conv` |
| `{encoder,decoder}.conv1` | `{encoder,decoder}.conv_in` |
| `*.middle.{0,1,2}` | `*.mid_block.resnets.0`, `*.mid_block.attentions.0`, `*.mid_block.resnets.1` |
| `*.head.0`, `*.head.2` | `*.norm_out`, `*.conv_out` |
| residual block `residual.{0,2,3,6}`, `shortcut` | `norm1`, `conv1`, `norm2`, `conv2`, `conv_shortcut` |
| Wan2.1 `encoder.downsamples.{k}` | `encoder.down_blocks.{k}` (same flat list: n blocks + resample per level) |
| Wan2.1 `decoder.upsamples.{k}`, l, j = divmod(k, n+2) | `decoder.up_blocks.{l}.resnets.{j}`; j=n+1: `upsamplers.0` |
| Wan2.2 `encoder.downsamples.{i}.downsamples.{j}` | `encoder.down_blocks.{i}.resnets.{j}`; j = n: `.downsampler` |
| Wan2.2 `decoder.upsamples.{i}.upsamples.{j}` | `decoder.up_blocks.{i}.resnets.{j}`; j = n + 1: `.upsampler` |

Resamplers keep `resample.1` (the spatial conv) and `time_conv`. Diffusers -> ours (`diffusers_to_ours`)
regroups Wan2.1's flat `encoder.down_blocks.{k}` into levels like Wan2.2's (level, j = divmod(k, n + 1)),
renames `upsamplers.0` -> `upsampler`, `attentions.0` -> `attention`, `resample.1` -> `conv`, and `RULES`
fix the layouts: Conv3d `[O, I, t, h, w]` -> `[t, h, w, I, O]`, Conv2d `[O, I, h, w]` -> `[h, w, I, O]`,
RMS-norm gammas `[C, 1, 1(, 1)]` -> `[C]`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import mv2v_jax.cli_start  # noqa: F401  (first: Ctrl-C in the imports below is one line, exit 130)

from flax import nnx

from convert_weights.common import (
    CONV2D,
    CONV3D,
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
from mv2v_jax.models.wan.vae import (
    ARCH_FIELDS,
    WAN21_LATENTS_MEAN,
    WAN21_LATENTS_STD,
    WAN22_LATENTS_MEAN,
    WAN22_LATENTS_STD,
    WanVAE,
    WanVAEConfig,
)
from mv2v_jax.models.weights import nest_paths

# torch RMS-norm gamma `[C, 1, 1, 1]` (3D) or `[C, 1, 1]` (attention) -> `[C]`.
GAMMA = Layout("gamma", lambda a: a.reshape(-1), lambda s: (math.prod(s),))

# Our parameter path ('/'-separated, after `diffusers_to_ours`) -> layout.
RULES: tuple[Rule, ...] = (
    Rule(r"(.+)/gamma", "{0}/gamma", GAMMA),
    Rule(r"(.+/(?:conv|to_qkv|proj))/weight", "{0}/kernel", CONV2D),
    Rule(r"(.+)/weight", "{0}/kernel", CONV3D),
    Rule(r"(.+)/bias", "{0}/bias"),
)

_RESNET_NATIVE_TO_DIFFUSERS = {
    "residual.0": "norm1",
    "residual.2": "conv1",
    "residual.3": "norm2",
    "residual.6": "conv2",
    "shortcut": "conv_shortcut",
}
_PART_NATIVE_TO_DIFFUSERS = {
    "conv1": "conv_in",
    "middle.0": "mid_block.resnets.0",
    "middle.1": "mid_block.attentions.0",
    "middle.2": "mid_block.resnets.1",
    "head.0": "norm_out",
    "head.2": "conv_out",
}
_TOP_NATIVE_TO_DIFFUSERS = {"conv1": "quant_conv", "conv2": "post_quant_conv"}


def _swap_prefix(rest: str, table: dict[str, str]) -> str | None:
    for old, new in table.items():
        if rest.startswith(old + "."):
            return new + rest[len(old) :]
    return None


def native_to_diffusers(name: str, num_res_blocks: int) -> str:
    """A native Wan2.1 / Wan2.2 VAE tensor name -> its diffusers name (table in the module docstring)."""
    n = num_res_blocks
    top, _, rest = name.partition(".")
    if top in _TOP_NATIVE_TO_DIFFUSERS:
        return f"{_TOP_NATIVE_TO_DIFFUSERS[top]}.{rest}"
    if top not in ("encoder", "decoder"):
        return name
    renamed = _swap_prefix(rest, _PART_NATIVE_TO_DIFFUSERS)
    if renamed is None:
        if m := re.fullmatch(r"downsamples\.(\d+)\.downsamples\.(\d+)\.(.+)", rest):  # Wan2.2
            i, j, tail = int(m[1]), int(m[2]), m[3]
            renamed = f"down_blocks.{i}.resnets.{j}.{tail}" if j < n else f"down_blocks.{i}.downsampler.{tail}"
        elif m := re.fullmatch(r"upsamples\.(\d+)\.upsamples\.(\d+)\.(.+)", rest):  # Wan2.2
            i, j, tail = int(m[1]), int(m[2]), m[3]
            renamed = f"up_blocks.{i}.resnets.{j}.{tail}" if j <= n else f"up_blocks.{i}.upsampler.{tail}"
        elif m := re.fullmatch(r"downsamples\.(\d+)\.(.+)", rest):  # Wan2.1
            renamed = f"down_blocks.{m[1]}.{m[2]}"
        elif m := re.fullmatch(r"upsamples\.(\d+)\.(.+)", rest):  # Wan2.1
            level, j = divmod(int(m[1]), n + 2)
            renamed = f"up_blocks.{level}." + (f"resnets.{j}." if j <= n else "upsamplers.0.") + m[2]
        else:
            return name
    for old, new in _RESNET_NATIVE_TO_DIFFUSERS.items():
        renamed = renamed.replace(f".{old}.", f".{new}.")
    return f"{top}.{renamed}"


def diffusers_to_native(name: str, num_res_blocks: int, is_residual: bool) -> str:
    """The inverse of `native_to_diffusers` (used to build native test checkpoints)."""
    n = num_res_blocks
    top, _, rest = name.partition(".")
    inverse_top = {v: k for k, v in _TOP_NATIVE_TO_DIFFUSERS.items()}
    if top in inverse_top:
        return f"{inverse_top[top]}.{rest}"
    for new, old in _RESNET_NATIVE_TO_DIFFUSERS.items():
        rest = re.sub(rf"(^|\.){old}\.", rf"\g<1>{new}.", rest)
    renamed = _swap_prefix(rest, {v: k for k, v in _PART_NATIVE_TO_DIFFUSERS.items()})
    if renamed is not None:
        return f"{top}.{renamed}"
    if m := re.fullmatch(r"down_blocks\.(\d+)\.(?:resnets\.(\d+)|downsampler)\.(.+)", rest):  # Wan2.2
        j = n if m[2] is None else int(m[2])
        rest = f"downsamples.{m[1]}.downsamples.{j}.{m[3]}"
    elif is_residual and (m := re.fullmatch(r"up_blocks\.(\d+)\.(?:resnets\.(\d+)|upsampler)\.(.+)", rest)):
        j = n + 1 if m[2] is None else int(m[2])
        rest = f"upsamples.{m[1]}.upsamples.{j}.{m[3]}"
    elif m := re.fullmatch(r"down_blocks\.(\d+)\.(.+)", rest):  # Wan2.1
        rest = f"downsamples.{m[1]}.{m[2]}"
    elif m := re.fullmatch(r"up_blocks\.(\d+)\.(?:resnets\.(\d+)|upsamplers\.0)\.(.+)", rest):  # Wan2.1
        j = n + 1 if m[2] is None else int(m[2])
        rest = f"upsamples.{int(m[1]) * (n + 2) + j}.{m[3]}"
    return f"{top}.{rest}"


def diffusers_to_ours(name: str, num_res_blocks: int, is_residual: bool) -> str:
    """A diffusers `AutoencoderKLWan` tensor name -> our '/'-separated parameter path (before `RULES`)."""
    if not is_residual and (m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.(.+)", name)):
        level, j = divmod(int(m[1]), num_res_blocks + 1)
        part = f"resnets.{j}" if j < num_res_blocks else "downsampler"
        name = f"encoder.down_blocks.{level}.{part}.{m[2]}"
    for old, new in ((".upsamplers.0.", ".upsampler."), (".attentions.0.", ".attention."), (".resample.1.", ".conv.")):
        name = name.replace(old, new)
    return name.replace(".", "/")


def is_native(names: Sequence[str]) -> bool:
    if "encoder.conv1.weight" in names:
        return True
    if "encoder.conv_in.weight" in names:
        return False
    raise ConversionError("not a Wan VAE checkpoint: it has neither encoder.conv_in.weight nor encoder.conv1.weight")


def _native_num_res_blocks(names: Sequence[str]) -> int:
    """n from the native names: Wan2.2 counts its nested blocks, Wan2.1 puts the first resample at index n."""
    nested = {
        int(m[1]) for name in names if (m := re.match(r"encoder\.downsamples\.0\.downsamples\.(\d+)\.residual", name))
    }
    if nested:
        return len(nested)
    resamples = [int(m[1]) for name in names if (m := re.match(r"encoder\.downsamples\.(\d+)\.resample\.", name))]
    if not resamples:
        raise ConversionError("native Wan VAE checkpoint without any encoder resample layer")
    return min(resamples)


def published_latent_stats(z_dim: int) -> dict[str, tuple[float, ...]]:
    stats = {16: (WAN21_LATENTS_MEAN, WAN21_LATENTS_STD), 48: (WAN22_LATENTS_MEAN, WAN22_LATENTS_STD)}
    if z_dim not in stats:
        raise ConversionError(f"no published latent mean/std for z_dim={z_dim} (Wan2.1: 16, Wan2.2: 48)")
    mean, std = stats[z_dim]
    return dict(latents_mean=mean, latents_std=std)


def config_from_shapes(shapes: dict[str, tuple[int, ...]]) -> dict[str, Any]:
    """Architecture read off diffusers-named tensor shapes (native checkpoints carry no config)."""
    try:
        base_dim, in_channels = shapes["encoder.conv_in.weight"][:2]
        is_residual = any(re.match(r"encoder\.down_blocks\.\d+\.resnets\.", n) for n in shapes)
        if is_residual:
            levels = 1 + max(int(m[1]) for n in shapes if (m := re.match(r"encoder\.down_blocks\.(\d+)\.", n)))
            n = len({m[1] for k in shapes if (m := re.match(r"encoder\.down_blocks\.0\.resnets\.(\d+)\.", k))})
            first = [f"encoder.down_blocks.{i}.resnets.0" for i in range(levels)]
            downsampler = [f"encoder.down_blocks.{i}.downsampler" for i in range(levels - 1)]
        else:
            resamples = sorted(
                {int(m[1]) for k in shapes if (m := re.match(r"encoder\.down_blocks\.(\d+)\.resample\.", k))}
            )
            n, levels = resamples[0], len(resamples) + 1
            first = [f"encoder.down_blocks.{i * (n + 1)}" for i in range(levels)]
            downsampler = [f"encoder.down_blocks.{k}" for k in resamples]
        dim_mult = tuple(shapes[f"{block}.conv1.weight"][0] // base_dim for block in first)
        decoder_base_dim = shapes["decoder.conv_out.weight"][1] // dim_mult[0]
        return dict(
            base_dim=base_dim,
            decoder_base_dim=None if decoder_base_dim == base_dim else decoder_base_dim,  # as diffusers writes it
            z_dim=shapes["post_quant_conv.weight"][0],
            dim_mult=dim_mult,
            num_res_blocks=n,
            temporal_downsample=tuple(f"{block}.time_conv.weight" in shapes for block in downsampler),
            is_residual=is_residual,
            in_channels=in_channels,
            out_channels=shapes["decoder.conv_out.weight"][0],
            patch_size=math.isqrt(in_channels // 3),
            **published_latent_stats(shapes["post_quant_conv.weight"][0]),
        )
    except (KeyError, IndexError, ValueError) as e:
        raise ConversionError(f"cannot infer the VAE architecture from the tensor names and shapes: {e!r}") from e


def config_from_json(config: dict[str, Any], where: Path) -> dict[str, Any]:
    """Our architecture fields from a diffusers `AutoencoderKLWan` config.json (its defaults where absent)."""
    if config.get("attn_scales"):
        raise ConversionError(f"{where}: attention in the down/up blocks (attn_scales) is not supported")
    defaults = WanVAEConfig()
    arch = dict(
        base_dim=config.get("base_dim", 96),
        decoder_base_dim=config.get("decoder_base_dim"),
        z_dim=config.get("z_dim", 16),
        dim_mult=tuple(config.get("dim_mult", defaults.dim_mult)),
        num_res_blocks=config.get("num_res_blocks", 2),
        temporal_downsample=tuple(config.get("temperal_downsample", defaults.temporal_downsample)),
        is_residual=config.get("is_residual", False),
        in_channels=config.get("in_channels", 3),
        out_channels=config.get("out_channels", 3),
        patch_size=config.get("patch_size") or 1,
        latents_mean=tuple(config.get("latents_mean", defaults.latents_mean)),
        latents_std=tuple(config.get("latents_std", defaults.latents_std)),
    )
    derived = _vae_config(arch, where)
    for key, ours in (
        ("scale_factor_spatial", derived.spatial_compression),
        ("scale_factor_temporal", derived.temporal_compression),
    ):
        if config.get(key) not in (None, ours):
            raise ConversionError(f"{where}: {key}={config[key]} but the architecture compresses by {ours}")
    return arch


def _vae_config(arch: dict[str, Any], where) -> WanVAEConfig:
    try:
        return WanVAEConfig.from_config(arch)
    except ValueError as e:
        raise ConversionError(f"{where}: {e}") from e


def source_names(names: Sequence[str], num_res_blocks: int, is_residual: bool) -> Callable[[str], str]:
    """The renaming that brings tensor `names` (native or diffusers) to the names `RULES` match."""
    if is_native(names):
        return lambda name: diffusers_to_ours(native_to_diffusers(name, num_res_blocks), num_res_blocks, is_residual)
    return lambda name: diffusers_to_ours(name, num_res_blocks, is_residual)


def read_architecture(src: Path, source: TensorSource) -> tuple[dict[str, Any], Callable[[str], str], str]:
    """(architecture, source name -> our path, format) for a diffusers folder or a native file."""
    names = source.names()
    if is_native(names):
        n = _native_num_res_blocks(names)
        arch = config_from_shapes({native_to_diffusers(name, n): source.shape(name) for name in names})
        return arch, source_names(names, n, arch["is_residual"]), "native"
    config_file = (src if src.is_dir() else src.parent) / "config.json"
    if config_file.is_file():
        try:
            arch = config_from_json(json.loads(config_file.read_text()), config_file)
        except json.JSONDecodeError as e:
            raise ConversionError(f"{config_file} is not valid JSON: {e}") from e
    else:
        arch = config_from_shapes({name: source.shape(name) for name in names})
    return arch, source_names(names, arch["num_res_blocks"], arch["is_residual"]), "diffusers"


def convert_vae(
    src: str | Path, out: str | Path, *, param_dtype: str = "float32", overwrite: bool = False, progress: bool = False
) -> Path:
    """Converts `src` into the weights directory `out`; returns `out`. Refuses incomplete checkpoints."""
    src = Path(src)
    source = TensorSource(src)
    arch, rename, fmt = read_architecture(src, source)
    config = _vae_config(arch | {"param_dtype": param_dtype}, src)
    record = {
        "model": "WanVAE",
        "architecture": {k: getattr(config, k) for k in ARCH_FIELDS},
        "source": {
            "path": str(src.resolve()),
            "format": fmt,
            "version": "wan2.2" if config.is_residual else "wan2.1",
        },
    }
    expected = expected_params(lambda: WanVAE(config, rngs=nnx.Rngs(0)))
    return write_weights(source, RULES, expected, out, record, rename=rename, overwrite=overwrite, progress=progress)


def convert_state_dict(state_dict: Mapping[str, Any], config: WanVAEConfig, *, progress: bool = False) -> dict:
    """A diffusers `AutoencoderKLWan` or native Wan VAE state dict -> our nested parameters for `config`."""
    source = StateDict(state_dict)
    rename = source_names(source.names(), config.num_res_blocks, config.is_residual)
    expected = expected_params(lambda: WanVAE(config, rngs=nnx.Rngs(0)))
    return nest_paths(read_params(source, RULES, expected, rename=rename, progress=progress))


def main(argv: Sequence[str]) -> int:
    return run_cli(
        "python -m convert_weights.wan_vae",
        __doc__,
        lambda a: convert_vae(a.src, a.out, param_dtype=a.param_dtype, overwrite=a.overwrite, progress=True),
        argv,
    )


if __name__ == "__main__":
    run_app(main, absl_flags=False)
