"""The small Memory-V2V novel-view-synthesis model trained on this CPU and shipped in the repository.

    python train.py --config configs/tiny_nvs.py --workdir outputs/tiny_nvs
    python sample.py --config configs/tiny_nvs.py --task nvs --session outputs/demo --video v.mp4 --camera pan_left

A tiny Wan-style DiT with every memory module, trained on `synthetic_multicam` scenes of 48 x 72
pixels, 9 frames and 10 cameras, through the block-DCT latent mapping (models.codec: 3 latent
frames of 12 x 18 x 12 per video), without text (the synthetic prompts add nothing a camera does not
say). Sizes are what 2 CPU cores train in about 90 minutes (2,500 steps); the paper's setting is configs for
the real backbones (convert_weights.recammaster) with the same `memory_sampling` and `step` sections.

    python -m mv2v_jax.data.encode_latents --config configs/tiny_nvs.py   # once: scenes -> latents
    python train.py --config configs/tiny_nvs.py --workdir outputs/tiny_nvs
"""

import ml_collections

from mv2v_jax.parallel.mesh import DEFAULT_RULES

VIDEO = dict(frames=9, height=48, width=72, fps=8)
# Ours: camera moves at half SceneConfig's ranges. 9 frames are 3 key frames for the codec, which
# interpolates the frames in between; at the full ranges a key frame moves 15-30 degrees from the last
# and even perfect key frames decode to 19.7 dB (halved: 22.3 dB). ReCamMaster's clips move about 2
# degrees per latent frame. Headings (which wall each camera faces) are unchanged.
SCENE = dict(
    height=48,
    width=72,
    num_frames=9,
    num_cameras=10,
    pan_degrees=(15.0, 30.0),
    tilt_degrees=(5.0, 15.0),
    arc_degrees=(10.0, 35.0),
    move_metres=(0.25, 0.6),
)
# 4 x 4 pixel blocks as their 2 x 2 lowest DCT frequencies per colour: 12 channels (ours: a 192-wide DiT
# cannot carry 48 channels of noise through; the codec's own PSNR on key frames is 23 dB). Mean / std:
# per channel over the key frames of the 10 cameras of 20 training scenes.
CODEC = dict(
    kind="space_to_depth",
    spatial=4,
    frequencies=2,
    mean=(-0.552, -0.976, -1.247, 0.0, 0.0, -0.006, -0.001, -0.002, -0.003, 0.0, 0.0, 0.0),
    std=(1.807, 1.405, 1.601, 0.466, 0.334, 0.384, 0.606, 0.432, 0.482, 0.296, 0.214, 0.225),
)


def model_config() -> dict:
    return dict(
        dit=dict(
            dim=192,  # ours: what 2 CPU cores train in about 90 minutes (2,500 steps of batch 8)
            ffn_dim=768,
            num_heads=3,  # head dim 64
            num_layers=6,
            in_channels=12,  # the codec's 3 f^2 channels
            out_channels=12,
            text_dim=16,
            freq_dim=64,
            attention=dict(impl="auto"),
        ),
        adapters=("camera",),  # ReCamMaster's camera layers (tasks.nvs)
        tokenizers=dict(ranked=((1, 4, 4),) * 3, rest=(1, 8, 8)),  # paper: top 3 at 1x4x4, the rest 1x8x8
        merge=dict(blocks=(10, 20), fraction=0.5, keep_ratio=0.5),  # paper; blocks scale to 2 and 4 of 6
    )


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    del arg
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.model = model_config()
    config.data = dict(
        source=dict(
            builder="synthetic_multicam",
            name="tiny_nvs_slow",
            scene=SCENE,
            num_train=300,
            num_validation=16,
            base_seed=0,
            data_dir="data/tfds",
        ),
        latents_name="tiny_nvs_slow_dct2",
        latents_dir="data/latents",
    )
    # Memory as the paper trains it; the values the paper does not give are ours, as noted.
    config.memory_sampling = dict(
        slots=6,  # paper: 1 to 6 memory videos
        min_memory=1,
        max_memory=6,
        uniform_tokenizer_prob=0.5,  # paper: 50% of steps one tokenizer for all memory videos
        merge_prob=0.5,  # paper: merging on 50% of steps
        merge_ratios=(0.3, 0.5, 0.7),  # paper: r in [0.3, 0.7]
        fov_radius=1.0,
    )
    config.step = dict(
        task="nvs",
        shift=1.0,  # ours: 162 target tokens need no shift towards noise; Wan uses 5.0 at 32,760
        timestep_sampling="uniform",
        loss_weighting="none",
        memory_noise=0.1,  # ours: memory latents get N(0, s^2), s ~ U(0, 0.1), against imperfect outputs
        rope_dropout=0.1,  # ours: 10% of examples train without the source's RoPE
        ema_decay=0.999,
    )
    config.optimizer = dict(
        lr=5e-4,
        schedule="cosine",
        warmup_steps=100,
        steps=2500,
        final_ratio=0.05,
        b1=0.9,
        b2=0.99,
        weight_decay=0.01,
        clip_norm=1.0,
        accumulate=1,
    )
    config.trainable = [".*"]  # from scratch, everything trains (ReCamMaster fine-tunes camera/self_attn/memory)
    config.init_weights = ""
    config.runtime = {}
    config.mesh = dict(data=-1)
    config.mesh_devices = 0  # every device
    config.mesh_rules = [list(r) for r in DEFAULT_RULES]
    config.batch_size = 8
    config.steps = 2500
    config.log_every = 25
    config.eval_every = 250
    config.checkpoint_every = 100  # a killed run loses at most 100 steps
    config.keep_checkpoints = 3
    config.eval_sampling_steps = 20
    config.sample = dict(
        weights="checkpoints/tiny_nvs",
        codec=CODEC,
        text=dict(kind="none"),
        embedder=dict(kind="dinov2_random", preset="tiny", seed=0),
        video=VIDEO,
        sampling=dict(sampler="unipc", steps=20, shift=1.0, guidance=1.0, keep_ratio=0.5, negative_prompt=""),
        # The synthetic cameras' field of view; k = 6 memory slots (paper: up to 6).
        # Only memories that overlap the target at all are fed (min_score; ours). Two programs, one
        # without memory and one with 6 slots, empty ones padding (ours: on a CPU compiling a program
        # per memory count costs more than the padding does).
        retrieval=dict(
            slots=6,
            min_score=0.0,
            buckets=(0, 6),
            hfov_degrees=65.0,
            fov_radius=1.0,
        ),
        long_edit=dict(segment_frames=17, overlap=0),
        merge_schedule="",  # the weights' own; or a name in memory.merging.MERGE_SCHEDULES
        runtime={},
    )
    return config
