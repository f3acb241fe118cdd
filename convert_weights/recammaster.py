"""Convert a ReCamMaster checkpoint into a MemoryDiT weights directory (novel view synthesis).

    python -m convert_weights.recammaster SRC OUT [--param-dtype bfloat16]

SRC is ReCamMaster's released DiT (`step20000.ckpt`, a torch state dict of DiffSynth's WanModel:
native Wan names plus `blocks.N.cam_encoder` and `blocks.N.projector`), or a folder holding it next
to the Wan2.1-T2V-1.3B `config.json`. Without a config the architecture is read off the tensor shapes.
The dynamic tokenizers and mergers are derived (convert_weights.memory_dit).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import mv2v_jax.cli_start  # noqa: F401  (first: Ctrl-C in the imports below is one line, exit 130)

from convert_weights import memory_dit
from convert_weights.memory_dit import run_memory_cli
from mv2v_jax.config import run_app
from mv2v_jax.models.wan.dit import WanDiTConfig
from mv2v_jax.tasks import get_task


def convert_state_dict(
    state_dict: Mapping[str, Any], dit: WanDiTConfig, memory: Mapping[str, Any] | None = None, *, progress: bool = False
) -> dict:
    """ReCamMaster's state dict (DiffSynth's native Wan names plus the camera layers) -> the nested
    parameters of the novel view synthesis MemoryDiT on `dit`; `memory` overrides the tokenizer / merge
    config. The memory modules are derived as the CLI derives them."""
    config = memory_dit.memory_config(dit, get_task("nvs").adapters, memory)
    return memory_dit.convert_state_dict(state_dict, config, progress=progress)


def main(argv: Sequence[str]) -> int:
    return run_memory_cli("python -m convert_weights.recammaster", __doc__, get_task("nvs").adapters, argv)


if __name__ == "__main__":
    run_app(main, absl_flags=False)
