"""Convert LucyEdit into a MemoryDiT weights directory (long video editing).

    python -m convert_weights.lucy_edit SRC OUT [--param-dtype bfloat16]

SRC is the `transformer` folder of decart-ai/Lucy-Edit-Dev (a diffusers WanTransformer3DModel of
Wan2.2-TI2V-5B shape with 96 input channels: 48 noisy + 48 condition). No camera layers; the dynamic
tokenizers and mergers are derived (convert_weights.memory_dit). For the plain DiT alone,
`python -m convert_weights.wan_dit` takes the same folder.
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
    """LucyEdit's transformer state dict (diffusers names) -> the nested parameters of the long video
    editing MemoryDiT on `dit`; `memory` overrides the tokenizer / merge config. The memory modules are
    derived as the CLI derives them."""
    config = memory_dit.memory_config(dit, get_task("long_edit").adapters, memory)
    return memory_dit.convert_state_dict(state_dict, config, progress=progress)


def main(argv: Sequence[str]) -> int:
    return run_memory_cli("python -m convert_weights.lucy_edit", __doc__, get_task("long_edit").adapters, argv)


if __name__ == "__main__":
    run_app(main, absl_flags=False)
