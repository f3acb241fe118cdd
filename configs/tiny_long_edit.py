"""The small Memory-V2V long-video-editing model trained on this CPU and shipped in the repository.

    python -m mv2v_jax.data.encode_latents --config configs/tiny_long_edit.py   # once: videos -> latents
    python train.py --config configs/tiny_long_edit.py --workdir outputs/tiny_long_edit
    python sample.py --config configs/tiny_long_edit.py --task long_edit --session outputs/edit --video long.mp4

LucyEdit's conditioning in a tiny Wan-style DiT: the source segment channel-concatenated to the noisy
target (`cat([noisy, source])`, 2 x 12 input channels), no camera layers, and Memory-V2V's memory of
earlier edited segments (the previous one always, older ones retrieved by the cosine similarity of
their sources' pooled DINOv2 embeddings), with the paper's tokenizers (1x4x4 for the top 3, 1x8x8 for
the rest) and adaptive token merging. Trained on `synthetic_long_edit`: a camera panning more than a
full turn round a room for 4-6 segments of 9 frames at 48 x 72, and the same video with every moving
object recoloured in one colour drawn per video and every frame tinted 30% towards it
(data.synthetic.long_video). Neither the prompt (the same for every video) nor the current segment says
which colour: only the segments edited before do.
Latents are the block-DCT mapping of models.codec: 3 latent frames of 12 x 18 x 12 a segment. The
paper's setting is configs/lucy_edit_long.py.
"""

import ml_collections

from mv2v_jax.parallel.mesh import DEFAULT_RULES

SEGMENT = dict(frames=9, height=48, width=72, fps=8)
# A long video: 4-6 segments of 9 frames at 48 x 72 (the 4-6 segments; data.synthetic.LONG_PRESETS
# "small" at tiny_nvs's frame size, so both small models share the codec and its statistics).
LONG_VIDEO = dict(
    scene=dict(height=48, width=72, num_frames=9, num_cameras=1, num_objects=(3, 5)),
    num_segments=(4, 6),
    # Ours: the edit also tints every frame 30% towards the objects' new colour. Recolouring the objects
    # alone (a few tokens of each 48 x 72 frame) was not learnt in 3,500 steps: the model copied the source.
    grade=0.3,
)


# 4 x 4 pixel blocks as their 2 x 2 lowest DCT frequencies per colour (models.codec): 12 channels, 24 dB
# on key frames. Mean / std: per channel over the key frames of 20 synthetic multi-camera scenes.
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
            dim=192,  # ours: what 2 CPU cores train in about 90 minutes (2,000 steps)
            ffn_dim=768,
            num_heads=3,
            num_layers=6,
            in_channels=24,  # LucyEdit: noisy + source condition, 2 x the codec's 12 channels
            out_channels=12,
            text_dim=16,
            freq_dim=64,
            attention=dict(impl="auto"),
        ),
        adapters=(),  # LucyEdit: no camera layers (tasks.long_edit)
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
            builder="synthetic_long_edit",
            name="tiny_long_edit_graded",
            video=LONG_VIDEO,
            num_train=400,
            num_validation=16,
            base_seed=0,
            data_dir="data/tfds",
        ),
        latents_name="tiny_long_edit_graded_dct2",
        latents_dir="data/latents",
    )
    config.memory_sampling = dict(
        slots=6,  # paper: 1 to 6 memory segments (the previous one always, then the most similar older ones)
        min_memory=1,
        max_memory=6,
        uniform_tokenizer_prob=0.5,  # paper: 50% of steps one tokenizer for all memory videos
        merge_prob=0.5,  # paper: merging on 50% of steps
        merge_ratios=(0.3, 0.5, 0.7),  # paper: r in [0.3, 0.7]
        fov_radius=1.0,  # not used by long editing
    )
    config.step = dict(
        task="long_edit",
        shift=1.0,  # ours, as configs/tiny_nvs.py: 162 target tokens need no shift towards noise
        timestep_sampling="uniform",
        loss_weighting="none",
        memory_noise=0.1,  # ours: memory latents get N(0, s^2), s ~ U(0, 0.1), against imperfect outputs
        rope_dropout=0.1,  # not used by long editing (the condition shares the target's tokens)
        ema_decay=0.999,
    )
    config.optimizer = dict(
        lr=5e-4,
        schedule="cosine",
        warmup_steps=100,
        steps=2000,
        final_ratio=0.05,
        b1=0.9,
        b2=0.99,
        weight_decay=0.01,
        clip_norm=1.0,
        accumulate=1,
    )
    config.trainable = [".*"]  # from scratch, everything trains (lucy_edit_long.py fine-tunes a subset)
    config.init_weights = ""
    config.runtime = {}
    config.mesh = dict(data=-1)
    config.mesh_devices = 0  # every device
    config.mesh_rules = [list(r) for r in DEFAULT_RULES]
    config.batch_size = 8
    config.steps = 2000
    config.log_every = 25
    config.eval_every = 250
    config.checkpoint_every = 100  # a killed run loses at most 100 steps
    config.keep_checkpoints = 3
    config.eval_sampling_steps = 20
    config.sample = dict(
        weights="checkpoints/tiny_long_edit",
        codec=CODEC,
        # The edit prompt is the same for every video (it does not name the colour), so text carries
        # nothing here: no text encoder, a zero context, as tiny_nvs.
        text=dict(kind="none"),
        # Retrieval's index: the tiny DINOv2 preset at random weights (seed fixed, the same network in
        # encode_latents and at inference). Retrieval only has to find older segments that look like the
        # current one; random ViT features of these rooms (each wall a different pattern and colour)
        # already separate them, and a real DINOv2-B would cost more than the DiT on this CPU.
        embedder=dict(kind="dinov2_random", preset="tiny", seed=0),
        video=SEGMENT,
        sampling=dict(sampler="unipc", steps=20, shift=1.0, guidance=1.0, keep_ratio=0.5, negative_prompt=""),
        # Ours: k = 6 as for NVS; slot 0 is always the previous segment (paper), older ones are fed when
        # more similar than min_score. Two programs, as configs/tiny_nvs.py: none and 6 slots.
        retrieval=dict(slots=6, min_score=0.0, buckets=(0, 6)),
        long_edit=dict(segment_frames=SEGMENT["frames"], overlap=0),  # paper: independent segments
        merge_schedule="",  # the weights' own; or a name in memory.merging.MERGE_SCHEDULES
        runtime={},
    )
    return config
