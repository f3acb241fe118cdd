"""Tiny random diffusers Wan VAEs (a Wan2.1-style and a Wan2.2-style one), built in-process."""

from __future__ import annotations

import numpy as np
import torch
from torch_reference import randomize

from convert_weights.wan_vae import diffusers_to_native

# Small widths, the real topology: four levels (8x / 16x spatial, 4x temporal), Wan2.2's residual
# blocks, patchify and wider decoder. One residual block per level (the releases have 2) keeps compile
# times down and tests the name mappings for an n other than the one diffusers hard-codes.
# Latent statistics are random so normalisation is checked.
TINY_VAE_CONFIGS = {
    "wan2.1": dict(base_dim=8, z_dim=4, dim_mult=[1, 2, 4, 4], num_res_blocks=1),
    "wan2.2": dict(
        base_dim=8,
        decoder_base_dim=12,
        z_dim=8,
        dim_mult=[1, 2, 4, 4],
        num_res_blocks=1,
        is_residual=True,
        in_channels=12,
        out_channels=12,
        patch_size=2,
        scale_factor_spatial=16,
    ),
}
# Video sizes giving odd latent grids: (5, 7) for Wan2.1 (8x), (3, 5) for Wan2.2 (16x).
TINY_VIDEO_HW = {"wan2.1": (40, 56), "wan2.2": (48, 80)}
# Scales the random decoder's last conv so that about 15% of the decoded values reach the reference's
# final clamp to [-1, 1]: the clamp is exercised and most values are still compared.
DECODER_OUTPUT_GAIN = {"wan2.1": 5.0, "wan2.2": 2.0}


def tiny_wan_vae(name: str, seed: int = 0, z_dim: int | None = None):
    """A random `AutoencoderKLWan` (every weight random, `DECODER_OUTPUT_GAIN` on its last conv) with
    random latent statistics."""
    from diffusers import AutoencoderKLWan

    config = dict(TINY_VAE_CONFIGS[name])
    if z_dim is not None:
        config["z_dim"] = z_dim
    rng = np.random.default_rng(seed)
    config["latents_mean"] = rng.normal(0, 0.5, config["z_dim"]).round(4).tolist()
    config["latents_std"] = rng.uniform(0.5, 2.0, config["z_dim"]).round(4).tolist()
    torch.manual_seed(seed)
    model = randomize(AutoencoderKLWan(**config), seed)
    with torch.no_grad():
        model.decoder.conv_out.weight.mul_(DECODER_OUTPUT_GAIN[name])
    return model


def native_state_dict(model) -> dict[str, torch.Tensor]:
    """The state dict in the native Wan layout (Wan2.1_VAE.pth / Wan2.2_VAE.pth names)."""
    c = model.config
    return {
        diffusers_to_native(k, c.num_res_blocks, c.is_residual): v.contiguous() for k, v in model.state_dict().items()
    }


def random_video(name: str, frames: int, seed: int = 0, batch: int = 1) -> np.ndarray:
    """`[B, F, H, W, 3]` float32 in [-1, 1], smooth enough to look like a video to the encoder."""
    h, w = TINY_VIDEO_HW[name]
    rng = np.random.default_rng(seed)
    return np.tanh(rng.standard_normal((batch, frames, h, w, 3))).astype(np.float32)


def to_torch(x: np.ndarray) -> torch.Tensor:
    """numpy `[B, F, H, W, C]` -> torch `[B, C, F, H, W]`."""
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 4, 1, 2, 3)))
