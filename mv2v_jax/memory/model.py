"""MemoryDiT: the Wan DiT with the memory-conditioning modules plugged into its hooks.

    model = MemoryDiT(MemoryConfig.from_config(config), rngs=nnx.Rngs(0))
    velocity = model(task.streams(noisy, conditions, model.config.tokenizers), timestep, text)

Parameters: `dit/...` (the base model, unchanged), one group per block adapter the task needs (`camera/...`:
ReCamMaster's per-block camera encoder and projector, for novel view synthesis), `tokenizers/...` (coarse
memory embedders) and `mergers/...` (one C_theta per merge block).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
from flax import nnx

from mv2v_jax.config import dataclass_from_config
from mv2v_jax.memory.camera import CAMERA_INPUTS, camera_adapter, token_rays
from mv2v_jax.memory.merging import MergeConfig, TokenMerger, TokenMergers, merge_hooks
from mv2v_jax.memory.streams import Stream, pack_streams
from mv2v_jax.memory.tokenizers import DynamicTokenizers, TokenizerConfig
from mv2v_jax.models.wan.dit import ARCH_FIELDS, ThroughBlocks, WanDiT, WanDiTConfig
from mv2v_jax.models.wan.sequence import BlockAdapter
from mv2v_jax.parallel.mesh import DEFAULT_RULES, SERVING_RULES

# Block adapters by name: `name -> (model config, rngs) -> stacked per-block module`. The model holds each
# under its name (so its parameters are `<name>/...`) and the DiT scans them with the blocks.
ADAPTERS: dict[str, Callable[[MemoryConfig, nnx.Rngs], BlockAdapter]] = {
    "camera": lambda config, rngs: camera_adapter(config.dit, rngs, config.camera_input)
}


@dataclasses.dataclass(frozen=True)
class MemoryConfig:
    """Attributes:
    dit: the base Wan DiT.
    adapters: names of the block adapters (ADAPTERS) the task needs, applied in this order:
      ("camera",) for ReCamMaster-style novel view synthesis, () for LucyEdit.
    tokenizers: which patch each memory rank gets.
    merge: adaptive token merging.
    camera_input: what the camera layers read (memory.camera): "pose", ReCamMaster's per-frame pose, or
      "rays", each token's own ray (ours, for small models trained from scratch).
    camera_hfov_degrees: the fixed horizontal field of view "rays" assumes (unused with "pose").
    """

    dit: WanDiTConfig
    adapters: tuple[str, ...] = ("camera",)
    tokenizers: TokenizerConfig = dataclasses.field(default_factory=TokenizerConfig)
    merge: MergeConfig = dataclasses.field(default_factory=MergeConfig)
    camera_input: str = "pose"
    camera_hfov_degrees: float = 65.0

    def __post_init__(self):
        if unknown := [name for name in self.adapters if name not in ADAPTERS]:
            raise ValueError(f"unknown block adapters {unknown}; choose from {sorted(ADAPTERS)}")
        if self.camera_input not in CAMERA_INPUTS:
            raise ValueError(f"model.camera_input={self.camera_input!r} must be one of {sorted(CAMERA_INPUTS)}")
        if not 0 < self.camera_hfov_degrees < 180:
            raise ValueError(f"model.camera_hfov_degrees={self.camera_hfov_degrees} must be in (0, 180)")

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> MemoryConfig:
        """From a ConfigDict / dict with sections `dit`, `tokenizers`, `merge`; unknown keys are errors.

        Weights written before adapters were named say `camera: true/false` instead; it is read as
        `adapters: ("camera",)` / `()`.
        """
        config = dict(config.items())
        if "camera" in config and "adapters" not in config:
            config["adapters"] = ("camera",) if config.pop("camera") else ()
        if "dit" in config and not isinstance(config["dit"], WanDiTConfig):
            config["dit"] = WanDiTConfig.from_config(config["dit"])
        if "adapters" in config:
            config["adapters"] = tuple(config["adapters"])
        return dataclass_from_config(cls, config, "model", {"tokenizers": TokenizerConfig, "merge": MergeConfig})

    def record(self) -> dict[str, Any]:
        """What a MemoryDiT weights directory's config.json says of the model (`load_memory_dit` reads it)."""
        return {
            "model": "MemoryDiT",
            "architecture": {k: getattr(self.dit, k) for k in ARCH_FIELDS},
            "memory": {
                "adapters": list(self.adapters),
                "tokenizers": dataclasses.asdict(self.tokenizers),
                "merge": dataclasses.asdict(self.merge),
                "camera_input": self.camera_input,
                "camera_hfov_degrees": self.camera_hfov_degrees,
            },
        }


class MemoryDiT(nnx.Module):
    """Wan DiT + the task's block adapters + dynamic tokenizers + token mergers."""

    def __init__(self, config: MemoryConfig, *, rngs: nnx.Rngs):
        self.config = config
        self.dit = WanDiT(config.dit, rngs=rngs)
        for name in config.adapters:
            setattr(self, name, ADAPTERS[name](config, rngs))
        self.tokenizers = DynamicTokenizers(self.dit.patch_embedding, config.dit, config.tokenizers, rngs)
        self.mergers = TokenMergers(config.merge.block_indices(config.dit.num_layers), config.dit, config.merge, rngs)

    def with_merge(self, merge: MergeConfig) -> MemoryDiT:
        """This model with another merge schedule (an inference-time choice, e.g. `sample.merge`): mergers
        of blocks the model already merges at are kept; a block new to the schedule gets an untrained
        merger, which is plain area pooling (its learned residual starts at zero)."""
        if merge.kernel != self.config.merge.kernel:
            raise ValueError(f"merge.kernel={merge.kernel} is not the trained mergers' {self.config.merge.kernel}")
        rngs = nnx.Rngs(0)
        for i in merge.block_indices(self.config.dit.num_layers):
            if i not in self.mergers:
                self.mergers[i] = TokenMerger(self.config.dit, merge, rngs)
        self.config = dataclasses.replace(self.config, merge=merge)
        return self

    def __call__(
        self,
        streams: Sequence[Stream],
        timestep: jax.Array,
        context: jax.Array,
        *,
        keep_ratio: float | None = None,
        through_blocks: ThroughBlocks | None = None,
    ) -> jax.Array:
        """Target velocity `[B, T, H, W, C]`.

        Args:
          streams: from the task's stream builder (`Task.streams`), target first.
          timestep: `[B]` (or `[B, N]`), the DiT's `sigma * 1000`.
          context: `[B, L, text_dim]` text encoder states.
          keep_ratio: merge memory tokens with this r (static); None turns merging off.
          through_blocks: how the DiT's blocks run (`WanDiT.__call__`); None: all of them.
        """
        seq = pack_streams(streams, self.tokenizers.mapping(self.dit.patch_embedding))
        if self.config.camera_input == "rays" and "camera" in seq.features:
            seq = seq.replace(features=seq.features | {"camera": token_rays(streams, self.config.camera_hfov_degrees)})
        hooks = {}
        if keep_ratio is not None:
            blocks = self.config.merge.block_indices(self.config.dit.num_layers)
            mergers = {i: self.mergers[i] for i in blocks}
            hooks = merge_hooks(mergers, self.config.merge.fraction, self.dit.rope, keep_ratio)
        adapters = tuple(getattr(self, name) for name in self.config.adapters)
        return self.dit(seq, timestep, context, adapters=adapters, hooks=hooks, through_blocks=through_blocks)


def load_memory_dit(path, mesh: jax.sharding.Mesh | None = None, *, serving: bool = False, **runtime: Any) -> MemoryDiT:
    """A `MemoryDiT` from a weights directory (convert_weights.recammaster / lucy_edit, or training),
    restored into `mesh` by the training rules, or with `serving` as sampling holds it (`SERVING_RULES`,
    weights in their compute dtype).

    `runtime` overrides the DiT's execution fields (`dtype`, `attention`, `scan_layers`, `remat`, ...).
    """
    from mv2v_jax.models.weights import load_module, read_config

    record = read_config(path)
    if record.get("model") != "MemoryDiT":
        raise ValueError(f"{path} holds a {record.get('model')!r}, not a MemoryDiT")
    dit = WanDiTConfig.from_config(dict(record["architecture"]) | runtime)
    config = MemoryConfig.from_config({"dit": dit, **record["memory"]})
    rules = SERVING_RULES if serving else DEFAULT_RULES
    return load_module(path, lambda: MemoryDiT(config, rngs=nnx.Rngs(0)), mesh, rules, serving)
