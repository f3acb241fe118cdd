"""MemoryDiT: the Wan DiT with the memory-conditioning modules plugged into its hooks.

    model = MemoryDiT(MemoryConfig.from_config(config), rngs=nnx.Rngs(0))
    velocity = model(recammaster_streams(noisy, source, camera, memory), timestep, text)

Parameters: `dit/...` (the base model, unchanged), `camera/...` (per-block camera encoder and projector,
NVS only), `tokenizers/...` (coarse memory embedders) and `mergers/...` (one C_theta per merge block).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import jax
from flax import nnx

from mv2v_jax.config import dataclass_from_config
from mv2v_jax.memory.camera import camera_adapter
from mv2v_jax.memory.merging import MergeConfig, TokenMerger, merge_hooks
from mv2v_jax.memory.streams import Stream, pack_streams
from mv2v_jax.memory.tokenizers import DynamicTokenizers, TokenizerConfig
from mv2v_jax.models.wan.dit import WanDiT, WanDiTConfig


@dataclasses.dataclass(frozen=True)
class MemoryConfig:
    """Attributes:
    dit: the base Wan DiT.
    camera: add ReCamMaster's camera layers (novel view synthesis); False for LucyEdit.
    tokenizers: which patch each memory rank gets.
    merge: adaptive token merging.
    """

    dit: WanDiTConfig
    camera: bool = True
    tokenizers: TokenizerConfig = dataclasses.field(default_factory=TokenizerConfig)
    merge: MergeConfig = dataclasses.field(default_factory=MergeConfig)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> MemoryConfig:
        """From a ConfigDict / dict with sections `dit`, `tokenizers`, `merge`; unknown keys are errors."""
        if "dit" in config and not isinstance(config["dit"], WanDiTConfig):
            config = dict(config.items()) | {"dit": WanDiTConfig.from_config(config["dit"])}
        return dataclass_from_config(cls, config, "model", {"tokenizers": TokenizerConfig, "merge": MergeConfig})


class MemoryDiT(nnx.Module):
    """Wan DiT + camera layers + dynamic tokenizers + token mergers."""

    def __init__(self, config: MemoryConfig, *, rngs: nnx.Rngs):
        self.config = config
        self.dit = WanDiT(config.dit, rngs=rngs)
        self.camera = camera_adapter(config.dit, rngs) if config.camera else None
        self.tokenizers = DynamicTokenizers(self.dit.patch_embedding, config.dit, config.tokenizers, rngs)
        self.mergers = nnx.Dict(
            {
                f"block{i}": TokenMerger(config.dit, config.merge, rngs)
                for i in config.merge.block_indices(config.dit.num_layers)
            }
        )

    def __call__(
        self,
        streams: Sequence[Stream],
        timestep: jax.Array,
        context: jax.Array,
        *,
        keep_ratio: float | None = None,
    ) -> jax.Array:
        """Target velocity `[B, T, H, W, C]`.

        Args:
          streams: from a stream builder (memory.builders), target first.
          timestep: `[B]` (or `[B, N]`), the DiT's `sigma * 1000`.
          context: `[B, L, text_dim]` text encoder states.
          keep_ratio: merge memory tokens with this r (static); None turns merging off.
        """
        seq = pack_streams(streams, self.tokenizers.mapping(self.dit.patch_embedding))
        hooks = {}
        if keep_ratio is not None:
            mergers = {int(name.removeprefix("block")): merger for name, merger in self.mergers.items()}
            hooks = merge_hooks(mergers, self.config.merge.fraction, self.dit.rope, keep_ratio)
        return self.dit(seq, timestep, context, adapter=self.camera, hooks=hooks)


def load_memory_dit(path, mesh: jax.sharding.Mesh | None = None, **runtime: Any) -> MemoryDiT:
    """A `MemoryDiT` from a weights directory (convert_weights.recammaster / lucy_edit, or training).

    `runtime` overrides the DiT's execution fields (`dtype`, `attention`, `scan_layers`, `remat`).
    """
    from mv2v_jax.models.weights import load_module, read_config

    record = read_config(path)
    if record.get("model") != "MemoryDiT":
        raise ValueError(f"{path} holds a {record.get('model')!r}, not a MemoryDiT")
    dit = WanDiTConfig.from_config(dict(record["architecture"]) | runtime)
    config = MemoryConfig.from_config({"dit": dit, **record["memory"]})
    return load_module(path, lambda: MemoryDiT(config, rngs=nnx.Rngs(0)), mesh)
