"""Wan DiT presets as ml_collections configs (numbers: docs/models.md, "Wan DiT").

    get_config("wan2.1-t2v-1.3b")   # an architecture: the `model.dit` of an experiment config
    get_config("wan2.2-ti2v-5b")

These are architectures, not experiments: sample.py and train.py take an experiment config with a
model, a `sample` section and training settings (configs/recammaster_nvs.py and configs/lucy_edit_long.py
build theirs from these presets).

Every preset shares head_dim 128, patch (1, 2, 2), text_dim 4096 (umT5-XXL), freq_dim 256,
eps 1e-6, q/k RMSNorm and cross-attention LayerNorm. The fields below `param_dtype` are run-time
choices, not architecture.
"""

import ml_collections

PRESETS = {
    # Wan2.1-T2V-1.3B (Wan2.1 config wan_t2v_1_3B.py); ReCamMaster's base.
    "wan2.1-t2v-1.3b": dict(dim=1536, ffn_dim=8960, num_heads=12, num_layers=30, in_channels=16, out_channels=16),
    # Wan2.1-T2V-14B (wan_t2v_14B.py).
    "wan2.1-t2v-14b": dict(dim=5120, ffn_dim=13824, num_heads=40, num_layers=40, in_channels=16, out_channels=16),
    # Wan2.2-TI2V-5B (Wan2.2 wan_ti2v_5B.py): 30 layers (not 32), Wan2.2 VAE's 48 latent channels; the
    # pipeline feeds per-token timesteps [B, N].
    "wan2.2-ti2v-5b": dict(dim=3072, ffn_dim=14336, num_heads=24, num_layers=30, in_channels=48, out_channels=48),
    # LucyEdit (decart-ai/Lucy-Edit-Dev): TI2V-5B with 96 input channels = 48 noisy + 48 condition.
    "lucy-edit": dict(dim=3072, ffn_dim=14336, num_heads=24, num_layers=30, in_channels=96, out_channels=48),
    # Our choice: a CPU-sized model for tests, demos and the shipped small checkpoint.
    "tiny": dict(
        dim=128, ffn_dim=512, num_heads=2, num_layers=4, in_channels=16, out_channels=16, text_dim=64, freq_dim=64
    ),
}


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
    if arg not in PRESETS:
        raise ValueError(f"unknown Wan DiT preset {arg!r}; choose one of {sorted(PRESETS)}")
    config = ml_collections.ConfigDict(
        dict(
            dim=1536,
            ffn_dim=8960,
            num_heads=12,
            num_layers=30,
            in_channels=16,
            out_channels=16,
            patch_size=(1, 2, 2),
            text_dim=4096,
            freq_dim=256,
            eps=1e-6,
            cross_attn_norm=True,
            rope_theta=10000.0,
            rope_max_len=1024,
            param_dtype="float32",
            dtype="auto",  # compute dtype: float32 on CPU, bfloat16 on GPU/TPU
            attention=dict(impl="auto", block_q=512, block_kv=2048, splash_block=512, interpret=False),
            scan_layers=True,
            remat="none",  # training configs use "full" or "dots" at full size
        )
    )
    config.update(PRESETS[arg])
    return config
