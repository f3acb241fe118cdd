"""Convert a ReCamMaster checkpoint into a MemoryDiT weights directory (novel view synthesis).

    python -m convert_weights.recammaster SRC OUT [--param-dtype bfloat16]

SRC is ReCamMaster's released DiT (`step20000.ckpt`, a torch state dict of DiffSynth's WanModel:
native Wan names plus `blocks.N.cam_encoder` and `blocks.N.projector`), or a folder holding it next
to the Wan2.1-T2V-1.3B `config.json`. Without a config the architecture is read off the tensor shapes.
The dynamic tokenizers and mergers are derived (convert_weights.memory_dit).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from convert_weights.memory_dit import run_memory_cli
from mv2v_jax.tasks import get_task


def main(argv: Sequence[str] | None = None) -> int:
    return run_memory_cli("python -m convert_weights.recammaster", __doc__, get_task("nvs").adapters, argv)


if __name__ == "__main__":
    sys.exit(main())
