"""What the two small models shipped in the repository share: configs/tiny_nvs.py and configs/tiny_long_edit.py.

The rooms (pale palette walls, large landmarks) and video size, the block-DCT codec and its statistics,
the DiT's size, the memory draw's fixed part, the training step and optimizer, and the sampling
settings. Each file adds its task's data, model inputs, memory draw and retrieval. Not an experiment
itself (no `get_config`): the two load it with `mv2v_jax.config.load_module`.
"""

import ml_collections

from mv2v_jax.parallel.mesh import DEFAULT_RULES

VIDEO = dict(frames=9, height=48, width=72, fps=8)
# Walls are flat pale colours of a palette with large landmarks (0.5-0.85 m) in full colours: content the
# codec carries and a source video cannot predict.
ROOM = dict(
    height=48,
    width=72,
    num_frames=9,
    num_objects=(1, 2),
    surfaces="palette",
    palette_mix=0.5,  # walls half way to a pale grey: a guess at an unseen wall's colour errs less
    landmark_radius=(0.5, 0.85),
)
# 4 x 4 pixel blocks as their 2 x 2 lowest DCT frequencies per colour: 12 channels (ours: a 192-wide DiT
# cannot carry 48 channels of noise through): 3 latent frames of 12 x 18 x 12 per 9-frame video. Key
# frames (every 4th) only, the rest interpolated: 29.4 dB on key frames, 18.1 dB over all frames of
# tiny_nvs.py's fast turns, so the evaluations score key frames.
# Mean / std: per channel over the key frames of the 10 cameras of 20 tiny_nvs.py training scenes.
CODEC = dict(
    kind="space_to_depth",
    spatial=4,
    frequencies=2,
    mean=(0.218, -0.252, -0.436, -0.002, -0.001, 0.003, -0.016, -0.009, -0.009, 0.0, 0.0, 0.0),
    std=(1.236, 0.994, 1.034, 0.205, 0.147, 0.158, 0.252, 0.177, 0.199, 0.097, 0.071, 0.078),
)


def dit(in_channels: int) -> dict:
    """The tiny Wan-style DiT taking `in_channels` (the codec's 12, or more with a condition)."""
    return dict(
        dim=192,  # ours: what 2 CPU cores train in 1.5-2.5 hours (4,000-7,500 steps of batch 8)
        ffn_dim=768,
        num_heads=3,  # head dim 64
        num_layers=6,
        in_channels=in_channels,
        out_channels=12,  # the codec's 3 f^2 channels
        text_dim=16,
        freq_dim=64,
        attention=dict(impl="auto"),
    )


MERGE = dict(blocks=(10, 20), fraction=0.5, keep_ratio=0.5)  # paper; blocks scale to 2 and 4 of 6
# Memory as the paper trains it; the values the paper does not give are ours, as noted.
MEMORY_SAMPLING = dict(
    slots=3,  # ours (paper: 1 to 6): what 2 CPU cores train; 3 slots hold what 5 turns (segments) revisit
    min_memory=1,
    max_memory=3,
    uniform_tokenizer_prob=0.5,  # paper: 50% of steps one tokenizer for all memory videos
    merge_prob=0.5,  # paper: merging on 50% of steps
    merge_ratios=(0.3, 0.5, 0.7),  # paper: r in [0.3, 0.7]
)
STEP = dict(
    shift=1.0,  # ours: 162 target tokens need no shift towards noise; Wan uses 5.0 at 32,760
    timestep_sampling="uniform",
    loss_weighting="none",
    memory_noise=0.1,  # ours: memory latents get N(0, s^2), s ~ U(0, 0.1), against imperfect outputs
    rope_dropout=0.1,  # ours: 10% of novel-view examples train without the source's RoPE (long editing has none)
    ema_decay=0.999,
)
SAMPLE = dict(
    codec=CODEC,
    # The prompts add nothing (a camera says it all; the edit prompt is the same for every video and names
    # no colour): no text encoder, a zero context.
    text=dict(kind="none"),
    # Long editing's retrieval index: the tiny DINOv2 preset at random weights (seed fixed, the same network
    # in encode_latents and at inference). Retrieval only has to find older segments that look like the
    # current one; random ViT features of these rooms (each wall a different pattern and colour) already
    # separate them, and a real DINOv2-B would cost more than the DiT on this CPU.
    embedder=dict(kind="dinov2_random", preset="tiny", seed=0),
    video=VIDEO,
    sampling=dict(sampler="unipc", steps=20, shift=1.0, guidance=1.0, keep_ratio=0.5, negative_prompt=""),
)


def sample_config(weights: str, retrieval: dict, long_edit: dict) -> dict:
    """`config.sample`: the shared settings around a task's weights, retrieval and segmenting."""
    return dict(
        weights=weights,
        **SAMPLE,
        retrieval=retrieval,
        long_edit=long_edit,
        merge_schedule="",  # the weights' own; or a name in memory.merging.MERGE_SCHEDULES
        # Step caching (pipelines.step_cache; docs/step_caching.md): off at these 20 steps, which the
        # evaluations' tables were made with and caching was not measured at. At the real configs' 50 steps
        # (BENCHMARKS.md "Step caching") first_block at 0.10 ran 2.7x-3.4x fewer forwards at >= 35 dB:
        # --config.sample.sampling.steps=50 --config.sample.cache.kind=first_block --config.sample.cache.threshold=0.1
        cache=dict(kind="none", threshold=0.05, warmup=2, uncond_every=1),
        # Ours: one device; a 4 M-parameter model gains nothing from more ("auto" spreads it over all).
        mesh="sequence=1",
        runtime={},
    )


def run_config(config: ml_collections.ConfigDict, steps: int) -> None:
    """Adds the optimizer and the run's sections (mesh, batch, logging, checkpoints) for `steps` steps."""
    config.optimizer = dict(
        lr=5e-4,
        schedule="cosine",
        warmup_steps=100,
        steps=steps,
        final_ratio=0.05,
        b1=0.9,
        b2=0.99,
        weight_decay=0.01,
        clip_norm=1.0,
        accumulate=1,
    )
    # From scratch, everything trains (recammaster_nvs.py and lucy_edit_long.py fine-tune a subset).
    config.trainable = [".*"]
    config.init_weights = ""
    config.runtime = {}
    config.mesh = dict(data=-1)
    # Axes split across TPU slices (processes where there is one slice), e.g. dict(data=2): then `mesh` is
    # each slice's mesh. Default: one slice.
    config.mesh_dcn = {}
    config.mesh_devices = 0  # every device
    config.mesh_rules = [list(r) for r in DEFAULT_RULES]
    config.batch_size = 8
    config.steps = steps
    config.log_every = 25
    config.eval_every = 500
    config.checkpoint_every = 250  # a killed run loses at most 250 steps (5 minutes)
    config.keep_checkpoints = 3
    config.eval_sampling_steps = 20
