"""Wan VAE presets as ml_collections configs (numbers: docs/models.md, "Wan VAE").

    get_config("wan2.1")   # Wan2.1_VAE: z 16, 4x8x8; used by Wan2.1-T2V-1.3B/14B and ReCamMaster
    get_config("wan2.2")   # Wan2.2_VAE: z 48, 4x16x16; used by Wan2.2-TI2V-5B and LucyEdit
    get_config("tiny")     # CPU-sized Wan2.1-style VAE for tests and demos
    get_config("tiny-wan2.2")  # CPU-sized Wan2.2-style VAE (z 48, 4x16x16) for tests and demos

The fields below `latents_std` are run-time choices, not architecture.
"""

import ml_collections

from mv2v_jax.models.wan.vae import WAN21_LATENTS_MEAN, WAN21_LATENTS_STD, WAN22_LATENTS_MEAN, WAN22_LATENTS_STD

PRESETS = {
    # Wan2.1 `WanVAE_` (dim 96); diffusers' AutoencoderKLWan defaults.
    "wan2.1": dict(),
    # Wan2.2 `Wan2_2_VAE` (dim 160, dec_dim 256); diffusers `vae22_diffusers_config`.
    "wan2.2": dict(
        base_dim=160,
        decoder_base_dim=256,
        z_dim=48,
        is_residual=True,
        in_channels=12,
        out_channels=12,
        patch_size=2,
        latents_mean=WAN22_LATENTS_MEAN,
        latents_std=WAN22_LATENTS_STD,
    ),
    # Our choice: the Wan2.1 topology at 1/6 width with one residual block per level, z 16 (what the tiny
    # DiT takes) and Wan2.1's latent statistics.
    "tiny": dict(base_dim=16, num_res_blocks=1),
    # Our choice: the Wan2.2 topology (residual blocks, 2x2 patchify, z 48, 4x16x16) at 1/10 and 1/16 width
    # with one residual block per level and Wan2.2's latent statistics, for the small LucyEdit-style config.
    "tiny-wan2.2": dict(
        base_dim=16,
        decoder_base_dim=16,
        num_res_blocks=1,
        z_dim=48,
        is_residual=True,
        in_channels=12,
        out_channels=12,
        patch_size=2,
        latents_mean=WAN22_LATENTS_MEAN,
        latents_std=WAN22_LATENTS_STD,
    ),
}


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
    if arg not in PRESETS:
        raise ValueError(f"unknown Wan VAE preset {arg!r}; choose one of {sorted(PRESETS)}")
    config = ml_collections.ConfigDict(
        dict(
            base_dim=96,
            decoder_base_dim=None,
            z_dim=16,
            dim_mult=(1, 2, 4, 4),
            num_res_blocks=2,
            temporal_downsample=(False, True, True),
            is_residual=False,
            in_channels=3,
            out_channels=3,
            patch_size=1,
            latents_mean=WAN21_LATENTS_MEAN,
            latents_std=WAN21_LATENTS_STD,
            param_dtype="float32",
            dtype="float32",  # the Wan pipelines run the VAE in float32
            conv_impl="auto",  # taps on CPU, xla3d elsewhere
            attention=dict(impl="auto", block_q=512, block_kv=2048, splash_block=512, interpret=False),
        )
    )
    config.update(PRESETS[arg])
    return config
