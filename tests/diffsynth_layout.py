"""ReCamMaster's released checkpoint layout, written out name by name, independently of the converter.

ReCamMaster's `step20000.ckpt` is a state dict of DiffSynth's `WanModel` (KwaiVGI/ReCamMaster
diffsynth/models/wan_video_dit.py), which keeps Wan's native module names and adds two linear layers
to every block. `diffsynth_state_dict` fills those names from the diffusers reference model module by
module, so a test that converts it checks the converter's name mapping against the layout itself
rather than against the mapping's own inverse.
"""

from __future__ import annotations

import torch


def diffsynth_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """DiffSynth `WanModel` + ReCamMaster camera layers: name -> tensor, from a diffusers
    `WanTransformer3DModel` whose blocks carry `cam_encoder` and `projector` (tests/test_memory_model.py)."""
    state: dict[str, torch.Tensor] = {}

    def linear(name: str, module: torch.nn.Module) -> None:
        state[f"{name}.weight"] = module.weight
        state[f"{name}.bias"] = module.bias

    state["patch_embedding.weight"] = model.patch_embedding.weight
    state["patch_embedding.bias"] = model.patch_embedding.bias
    embedder = model.condition_embedder
    linear("text_embedding.0", embedder.text_embedder.linear_1)  # Sequential(Linear, GELU, Linear)
    linear("text_embedding.2", embedder.text_embedder.linear_2)
    linear("time_embedding.0", embedder.time_embedder.linear_1)  # Sequential(Linear, SiLU, Linear)
    linear("time_embedding.2", embedder.time_embedder.linear_2)
    linear("time_projection.1", embedder.time_proj)  # Sequential(SiLU, Linear)
    for n, block in enumerate(model.blocks):
        prefix = f"blocks.{n}"
        state[f"{prefix}.modulation"] = block.scale_shift_table  # [1, 6, dim]
        for name, attention in (("self_attn", block.attn1), ("cross_attn", block.attn2)):
            for short, module in (("q", attention.to_q), ("k", attention.to_k), ("v", attention.to_v)):
                linear(f"{prefix}.{name}.{short}", module)
            linear(f"{prefix}.{name}.o", attention.to_out[0])
            state[f"{prefix}.{name}.norm_q.weight"] = attention.norm_q.weight
            state[f"{prefix}.{name}.norm_k.weight"] = attention.norm_k.weight
        # The cross-attention LayerNorm is `norm3` in Wan / DiffSynth (diffusers calls it norm2); norm1 and
        # norm2 (Wan's names for the modulated LayerNorms) have no parameters.
        linear(f"{prefix}.norm3", block.norm2)
        linear(f"{prefix}.ffn.0", block.ffn.net[0].proj)  # Sequential(Linear, GELU, Linear)
        linear(f"{prefix}.ffn.2", block.ffn.net[2])
        linear(f"{prefix}.cam_encoder", block.cam_encoder)  # ReCamMaster: Linear(12, dim)
        linear(f"{prefix}.projector", block.projector)  # ReCamMaster: Linear(dim, dim)
    linear("head.head", model.proj_out)
    state["head.modulation"] = model.scale_shift_table  # [1, 2, dim]
    return {name: tensor.detach().clone().contiguous() for name, tensor in state.items()}
