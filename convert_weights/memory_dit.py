"""Wan DiT checkpoints -> MemoryDiT weights directories (the shared part of recammaster / lucy_edit).

The checkpoint fills the base DiT (`dit/...`, diffusers or native Wan names, as convert_weights.wan_dit)
and, for ReCamMaster, the per-block camera layers (`blocks.N.cam_encoder`, `blocks.N.projector` ->
`camera/...`). The memory modules the checkpoint does not have are derived: the coarse tokenizers by
tiling and averaging the converted patch embedding (memory.tokenizers), the mergers at their initial
values (plain averaging). Training then starts from a model that already behaves like its base.
`convert_state_dict` does the same in memory.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx

from convert_weights.common import (
    CONV3D,
    LINEAR,
    Rule,
    expected_params,
    prefixed,
    read_params,
    run_cli,
    write_weights,
)
from convert_weights.sources import StateDict, Tensors, TensorSource
from convert_weights.wan_dit import (
    BLOCK,
    HEAD_DIM,
    RULES,
    add_dit_arguments,
    head_dim_flag,
    is_native,
    read_architecture,
    source_names,
)
from mv2v_jax.memory.merging import TokenMergers
from mv2v_jax.memory.model import MemoryConfig, MemoryDiT
from mv2v_jax.memory.tokenizers import DynamicTokenizers
from mv2v_jax.models.wan.dit import PatchEmbed, WanDiTConfig
from mv2v_jax.models.weights import flatten_paths, nest_paths

CAMERA_RULES: tuple[Rule, ...] = (
    Rule(BLOCK + r"cam_encoder\.weight", "camera/cam_encoder/kernel", LINEAR),
    Rule(BLOCK + r"cam_encoder\.bias", "camera/cam_encoder/bias"),
    Rule(BLOCK + r"projector\.weight", "camera/projector/kernel", LINEAR),
    Rule(BLOCK + r"projector\.bias", "camera/projector/bias"),
)


def initial_memory_modules(source: Tensors, config: MemoryConfig) -> dict[tuple[str, ...], np.ndarray]:
    """Tokenizers from the checkpoint's patch embedding, mergers at their initialisation."""
    rngs = nnx.Rngs(0)
    base = PatchEmbed(config.dit.patch_size, config.dit.in_channels, config.dit, rngs)
    names = {source_names(source)(n): n for n in source.names()}
    base.kernel[...] = CONV3D.apply(source.read(names["patch_embedding.weight"])).astype(np.float32)
    base.bias[...] = source.read(names["patch_embedding.bias"]).astype(np.float32)
    modules = {
        "tokenizers": DynamicTokenizers(base, config.dit, config.tokenizers, rngs),
        "mergers": TokenMergers(config.merge.block_indices(config.dit.num_layers), config.dit, config.merge, rngs),
    }
    params = {}
    for prefix, module in modules.items():
        for path, value in flatten_paths(nnx.to_pure_dict(nnx.state(module))).items():
            params[(*prefix.split("/"), *path)] = np.asarray(value, np.dtype(config.dit.param_dtype))
    return params


def convert_memory_dit(
    src: str | Path,
    out: str | Path,
    *,
    adapters: tuple[str, ...],
    memory: Mapping[str, Any] | None = None,
    param_dtype: str = "float32",
    head_dim: int = HEAD_DIM,
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Converts `src` into a MemoryDiT weights directory; `memory` overrides the tokenizer / merge config."""
    src = Path(src)
    source = TensorSource(src)
    dit = WanDiTConfig.from_config(read_architecture(src, source, head_dim) | {"param_dtype": param_dtype})
    config = memory_config(dit, adapters, memory)
    native = is_native(source.names())
    record = config.record() | {
        "derived": "tokenizers tile-averaged from the patch embedding; mergers at initialisation",
        "source": {"path": str(src.resolve()), "format": "native" if native else "diffusers"},
    }
    return write_weights(
        source,
        checkpoint_rules(config),
        from_checkpoint(config),
        out,
        record,
        rename=source_names(source),
        overwrite=overwrite,
        derived=lambda: initial_memory_modules(source, config),
        progress=progress,
    )


def memory_config(dit: WanDiTConfig, adapters: tuple[str, ...], memory: Mapping[str, Any] | None) -> MemoryConfig:
    """The MemoryDiT on `dit` with a task's block `adapters`; `memory` overrides the tokenizer / merge config."""
    return MemoryConfig.from_config({"dit": dit, "adapters": adapters, **(memory or {})})


def checkpoint_rules(config: MemoryConfig) -> tuple[Rule, ...]:
    """The base DiT's rules under `dit/`, and the camera layers' when the model has the camera adapter."""
    return prefixed(RULES, "dit") + (CAMERA_RULES if "camera" in config.adapters else ())


def from_checkpoint(config: MemoryConfig) -> dict[tuple[str, ...], jax.ShapeDtypeStruct]:
    """The parameters a checkpoint fills: the DiT's and the camera layers' (the rest are derived)."""
    expected = expected_params(lambda: MemoryDiT(config, rngs=nnx.Rngs(0)))
    return {p: s for p, s in expected.items() if p[0] in ("dit", "camera")}


def convert_state_dict(state_dict: Mapping[str, Any], config: MemoryConfig, *, progress: bool = False) -> dict:
    """A Wan DiT state dict (plus ReCamMaster's camera layers when `config` has the camera adapter) ->
    the nested parameters of `MemoryDiT(config)`, the memory modules derived as the CLI does."""
    source = StateDict(state_dict)
    rename = source_names(source)
    params = read_params(source, checkpoint_rules(config), from_checkpoint(config), rename=rename, progress=progress)
    return nest_paths(params | initial_memory_modules(source, config))


def run_memory_cli(prog: str, doc: str, adapters: tuple[str, ...], argv: Sequence[str]) -> int:
    """The recammaster / lucy_edit CLIs: the DiT converter's options, with the task's block adapters."""
    return run_cli(
        prog,
        doc,
        lambda a: convert_memory_dit(
            a.src,
            a.out,
            adapters=adapters,
            param_dtype=a.param_dtype,
            head_dim=head_dim_flag(a),
            overwrite=a.overwrite,
            progress=True,
        ),
        argv,
        add_dit_arguments,
    )
