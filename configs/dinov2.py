"""DINOv2 presets as ml_collections configs (numbers: docs/models.md, "DINOv2"; transformers'
convert_dinov2_to_hf.py and the facebook/dinov2-* hub configs).

    get_config("base")                 # facebook/dinov2-base, ViT-B/14
    get_config("base-registers")       # facebook/dinov2-with-registers-base
    get_config("tiny")                 # CPU-sized, for tests and demos

All share patch 14, image_size 518 (a 37 x 37 position grid), layer_norm_eps 1e-6, qkv bias and a mask
token. The registers models carry 4 register tokens and resize position embeddings with antialiasing.
`dtype` is a run-time choice, not architecture.
"""

import ml_collections

SIZES = {
    "small": dict(hidden_size=384, num_layers=12, num_heads=6),
    "base": dict(hidden_size=768, num_layers=12, num_heads=12),
    "large": dict(hidden_size=1024, num_layers=24, num_heads=16),
    # ViT-g/14: SwiGLU MLP of width ((int(1536 * 4 * 2/3) + 7) // 8) * 8 = 4096.
    "giant": dict(hidden_size=1536, num_layers=40, num_heads=24, use_swiglu_ffn=True),
}
REGISTERS = dict(num_register_tokens=4, interpolate_antialias=True)

PRESETS = {
    **SIZES,
    **{f"{name}-registers": size | REGISTERS for name, size in SIZES.items()},
    # Our choice: tiny, a 4 x 4 position grid.
    "tiny": dict(hidden_size=32, num_layers=2, num_heads=2, image_size=56),
}


def get_config(arg: str = "base") -> ml_collections.ConfigDict:
    if arg not in PRESETS:
        raise ValueError(f"unknown DINOv2 preset {arg!r}; choose one of {sorted(PRESETS)}")
    config = ml_collections.ConfigDict(
        dict(
            hidden_size=768,
            num_layers=12,
            num_heads=12,
            mlp_ratio=4.0,
            use_swiglu_ffn=False,
            patch_size=14,
            image_size=518,
            num_register_tokens=0,
            interpolate_antialias=False,
            use_mask_token=True,
            qkv_bias=True,
            layer_norm_eps=1e-6,
            param_dtype="float32",
            dtype="auto",  # compute dtype: float32 on CPU, bfloat16 on GPU/TPU
        )
    )
    config.update(PRESETS[arg])
    return config
