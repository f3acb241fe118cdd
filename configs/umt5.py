"""umT5 encoder presets as ml_collections configs (numbers: docs/models.md, "umT5 text encoder").

    get_config("umt5-xxl")   # Wan2.1 / Wan2.2's text encoder
    get_config("tiny")       # CPU-sized, for tests and demos

Field names are transformers' `UMT5Config` names. `dtype` is a run-time choice, not architecture.
"""

import ml_collections

PRESETS = {
    # Wan2.1 wan/modules/t5.py umt5_xxl: dim 4096, dim_attn 4096 (64 heads x 64), dim_ffn 10240,
    # 24 encoder layers, 32 buckets per layer, vocab 256384.
    "umt5-xxl": dict(vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240, num_heads=64, num_layers=24),
    # Our choice: tiny, with text_dim 64 to feed the tiny DiT preset (configs/wan_dit.py).
    "tiny": dict(vocab_size=512, d_model=64, d_kv=16, d_ff=128, num_heads=4, num_layers=2),
}


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
    if arg not in PRESETS:
        raise ValueError(f"unknown umT5 preset {arg!r}; choose one of {sorted(PRESETS)}")
    config = ml_collections.ConfigDict(
        dict(
            vocab_size=256384,
            d_model=4096,
            d_kv=64,
            d_ff=10240,
            num_heads=64,
            num_layers=24,
            relative_attention_num_buckets=32,
            relative_attention_max_distance=128,
            layer_norm_epsilon=1e-6,
            param_dtype="float32",
            dtype="auto",  # compute dtype: float32 on CPU, bfloat16 on GPU/TPU
        )
    )
    config.update(PRESETS[arg])
    return config
