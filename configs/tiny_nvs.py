"""The small Memory-V2V novel-view-synthesis model trained on this CPU and shipped in the repository.

    python train.py --config configs/tiny_nvs.py --workdir outputs/tiny_nvs
    python sample.py --config configs/tiny_nvs.py --task nvs --session outputs/demo --video v.mp4 --camera pan_left

A tiny Wan-style DiT with every memory module, on `synthetic_multicam` (the `small` preset: 64x96,
17 frames, 10 cameras) through the space-to-depth latent mapping (models.codec: 5 latent frames of
16 x 24 x 48), without text (the synthetic prompts add nothing a camera does not say).
"""

import ml_collections

from mv2v_jax.parallel.mesh import DEFAULT_RULES

VIDEO = dict(frames=17, height=64, width=96, fps=8)


def model_config() -> dict:
    return dict(
        dit=dict(
            dim=192,
            ffn_dim=768,
            num_heads=2,
            num_layers=6,
            in_channels=48,
            out_channels=48,
            text_dim=16,
            freq_dim=64,
            attention=dict(impl="auto"),
        ),
        camera=True,
        tokenizers=dict(ranked=((1, 4, 4),) * 3, rest=(1, 8, 8)),  # paper: top 3 at 1x4x4, the rest 1x8x8
        merge=dict(blocks=(10, 20), fraction=0.5, keep_ratio=0.5),  # paper; blocks scale to 2 and 4 of 6
    )


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    del arg
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.model = model_config()
    config.sample = dict(
        weights="checkpoints/tiny_nvs",
        codec=dict(kind="space_to_depth", spatial=4),
        text=dict(kind="none"),
        embedder=dict(kind="dinov2_random", preset="tiny", seed=0),
        video=VIDEO,
        sampling=dict(sampler="unipc", steps=20, shift=3.0, guidance=1.0, keep_ratio=0.5, negative_prompt=""),
        # The synthetic cameras' field of view; k = 6 memory slots (paper: up to 6).
        retrieval=dict(slots=6, hfov_degrees=65.0, fov_radius=1.0),
        long_edit=dict(segment_frames=17, overlap=0),
        runtime={},
    )
    return config
