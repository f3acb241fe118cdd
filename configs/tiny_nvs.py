"""The small Memory-V2V novel-view-synthesis model trained on this CPU and shipped in the repository.

    python train.py --config configs/tiny_nvs.py --workdir outputs/tiny_nvs
    python sample.py --config configs/tiny_nvs.py --task nvs --session outputs/demo --video v.mp4 --camera pan_left

A tiny Wan-style DiT with every memory module, trained on `synthetic_multicam` scenes of 48 x 72
pixels, 9 frames and 10 cameras, through the block-DCT latent mapping (models.codec: 3 latent
frames of 12 x 18 x 12 per video), without text (the synthetic prompts add nothing a camera does not
say). Sizes are what 2 CPU cores train in about 2.5 hours (7,500 steps); the paper's setting is configs for
the real backbones (convert_weights.recammaster) with the same `memory_sampling` and `step` sections.

    python -m mv2v_jax.data.encode_latents --config configs/tiny_nvs.py   # once: scenes -> latents
    python train.py --config configs/tiny_nvs.py --workdir outputs/tiny_nvs
"""

import ml_collections

from mv2v_jax.parallel.mesh import DEFAULT_RULES

VIDEO = dict(frames=9, height=48, width=72, fps=8)
# ReCamMaster's setting (docs/paper.md, "The small models"): every view starts at the source video's
# first camera, the source stands still, and the others turn 30-90 degrees from there (pans, some tilt,
# at most 0.1 m of travel), so the new content of a view is what lies beyond the source's field of view
# and other views of the scene may have seen it. Walls are flat pale colours of a palette with large
# landmarks (0.5-0.85 m) in full colours: content the codec carries and the source cannot predict.
SCENE = dict(
    height=48,
    width=72,
    num_frames=9,
    num_cameras=10,
    num_objects=(1, 2),
    camera_pitch=(-10.0, 5.0),
    surfaces="palette",
    palette_mix=0.5,  # walls half way to a pale grey: a guess at an unseen wall's colour errs less
    landmark_radius=(0.5, 0.85),
    camera_start="shared",
    rotation_degrees=(30.0, 90.0),
    rotation_groups=3,
    rotation_move_metres=0.1,
)
# 4 x 4 pixel blocks as their 2 x 2 lowest DCT frequencies per colour: 12 channels (ours: a 192-wide DiT
# cannot carry 48 channels of noise through). Key frames (every 4th) only, the rest interpolated: 29.4 dB
# on key frames, 18.1 dB over all frames of these fast turns, so the evaluations score key frames.
# Mean / std: per channel over the key frames of the 10 cameras of 20 training scenes.
CODEC = dict(
    kind="space_to_depth",
    spatial=4,
    frequencies=2,
    mean=(0.218, -0.252, -0.436, -0.002, -0.001, 0.003, -0.016, -0.009, -0.009, 0.0, 0.0, 0.0),
    std=(1.236, 0.994, 1.034, 0.205, 0.147, 0.158, 0.252, 0.177, 0.199, 0.097, 0.071, 0.078),
)
HFOV_DEGREES = 65.0  # SceneConfig's default field of view: the synthetic cameras', retrieval's, the rays'


def model_config() -> dict:
    return dict(
        dit=dict(
            dim=192,  # ours: what 2 CPU cores train in about 2.5 hours (7,500 steps of batch 8)
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
        # Ours: each token's own ray (Plucker + Fourier features) instead of ReCamMaster's per-frame pose:
        # a 6-block DiT trained from scratch does not learn projective geometry from poses (memory.camera).
        camera_input="rays",
        camera_hfov_degrees=HFOV_DEGREES,
        # Ours, scaled to 12 x 18 latents (paper: top 3 at 1x4x4, the rest 1x8x8, on 60 x 104 latents, where
        # a 1x4x4 token covers 1/15 of the frame height; here a 1x4x4 token covers a third and a 1x8x8 token
        # two-thirds): the top 3 at the DiT's own 1x2x2 (a sixth), the rest at 1x4x4 (docs/paper.md). The
        # shipped weights trained ranks 2 and 3 at 1x4x4 for 6,500 steps, then at 1x2x2 (model card).
        tokenizers=dict(ranked=((1, 2, 2),) * 3, rest=(1, 4, 4)),
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
            name="tiny_nvs_shared",
            scene=SCENE,
            num_train=300,
            num_validation=16,
            base_seed=0,
            data_dir="data/tfds",
        ),
        latents_name="tiny_nvs_shared_dct2",
        latents_dir="data/latents",
    )
    # Memory as the paper trains it; the values the paper does not give are ours, as noted.
    config.memory_sampling = dict(
        slots=3,  # ours (paper: 1 to 6): what 2 CPU cores train; 3 slots hold what 5 turns revisit
        min_memory=1,
        max_memory=3,
        uniform_tokenizer_prob=0.5,  # paper: 50% of steps one tokenizer for all memory videos
        merge_prob=0.5,  # paper: merging on 50% of steps
        merge_ratios=(0.3, 0.5, 0.7),  # paper: r in [0.3, 0.7]
        # Views share their centre, so VideoFOV scores directions at infinity (a sphere of any finite
        # radius round the target's first camera would weigh the 0.1 m of travel for nothing).
        fov_radius=float("inf"),
        # Ours (the paper always gives 1-6 memories): 25% without memory (the first turn, the independent
        # baseline), 60% whose memory holds >= 30% of the target the source does not show, 10% with one
        # distractor that adds nothing to the source; the paper's draw for the rest.
        none_prob=0.25,
        informative_prob=0.6,
        distractor_prob=0.1,
        informative_coverage=0.3,
        distractor_coverage=0.05,
        source_view=0,  # camera 0 stands still where every other view starts: ReCamMaster's input video
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
        steps=7500,
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
    # Axes split across TPU slices (processes where there is one slice), e.g. dict(data=2): then `mesh` is
    # each slice's mesh. Default: one slice.
    config.mesh_dcn = {}
    config.mesh_devices = 0  # every device
    config.mesh_rules = [list(r) for r in DEFAULT_RULES]
    config.batch_size = 8
    config.steps = 7500
    config.log_every = 25
    config.eval_every = 500
    config.checkpoint_every = 250  # a killed run loses at most 250 steps (5 minutes)
    config.keep_checkpoints = 3
    config.eval_sampling_steps = 20
    config.sample = dict(
        weights="checkpoints/tiny_nvs",
        codec=CODEC,
        text=dict(kind="none"),
        embedder=dict(kind="dinov2_random", preset="tiny", seed=0),
        video=VIDEO,
        sampling=dict(sampler="unipc", steps=20, shift=1.0, guidance=1.0, keep_ratio=0.5, negative_prompt=""),
        # The synthetic cameras' field of view; k = 3 memory slots, as trained (paper: up to 6).
        # Only memories that overlap the target at all are fed (min_score; ours). Two programs, one
        # without memory and one with 3 slots, empty ones padding (ours: on a CPU compiling a program
        # per memory count costs more than the padding does). Directions at infinity, as trained.
        retrieval=dict(
            slots=3,
            min_score=0.0,
            buckets=(0, 3),
            hfov_degrees=HFOV_DEGREES,
            fov_radius=float("inf"),
        ),
        long_edit=dict(segment_frames=17, overlap=0),
        merge_schedule="",  # the weights' own; or a name in memory.merging.MERGE_SCHEDULES
        # Step caching (pipelines.step_cache; docs/step_caching.md): off until measured, e.g.
        # --config.sample.cache.kind=first_block.
        cache=dict(kind="none", threshold=0.05, warmup=2, uncond_every=1),
        # Ours: one device; a 4 M-parameter model gains nothing from more ("auto" spreads it over all).
        mesh="sequence=1",
        runtime={},
    )
    return config
