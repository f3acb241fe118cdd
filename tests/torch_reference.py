"""Tiny random PyTorch reference models, built in-process (no downloads)."""

from __future__ import annotations

import numpy as np
import torch

# Shrunk configs shaped like the three presets: the 1.3B and 14B (16 latent channels, different
# head counts and depths) and the TI2V-5B (48 channels, per-token timesteps). head_dim 24 keeps
# Wan's uneven RoPE split (t 8, h 8, w 8) non-trivial.
TINY_DIT_CONFIGS = {
    "1.3b": dict(
        num_attention_heads=2,
        attention_head_dim=24,
        in_channels=16,
        out_channels=16,
        text_dim=32,
        freq_dim=32,
        ffn_dim=96,
        num_layers=2,
    ),
    "14b": dict(
        num_attention_heads=4,
        attention_head_dim=24,
        in_channels=16,
        out_channels=16,
        text_dim=40,
        freq_dim=32,
        ffn_dim=120,
        num_layers=3,
    ),
    "ti2v-5b": dict(
        num_attention_heads=3,
        attention_head_dim=24,
        in_channels=48,
        out_channels=48,
        text_dim=32,
        freq_dim=32,
        ffn_dim=144,
        num_layers=2,
    ),
}


def randomize(module: torch.nn.Module, seed: int, scale: float = 0.2) -> torch.nn.Module:
    """Every parameter random (norm weights and zero-initialised biases too), so a swapped or
    dropped tensor in a conversion changes the output."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * scale)
    return module.eval()


def tiny_wan_dit(name: str, seed: int = 0):
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    model = WanTransformer3DModel(
        patch_size=(1, 2, 2), cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6, **TINY_DIT_CONFIGS[name]
    )
    return randomize(model, seed)


def to_channels_last(x: torch.Tensor) -> np.ndarray:
    """torch `[B, C, F, H, W]` -> numpy `[B, F, H, W, C]`."""
    return x.detach().numpy().transpose(0, 2, 3, 4, 1)
