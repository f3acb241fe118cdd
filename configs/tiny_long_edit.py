"""The small Memory-V2V long-video-editing model trained on this CPU and shipped in the repository.

    python -m mv2v_jax.data.encode_latents --config configs/tiny_long_edit.py   # once: videos -> latents
    python train.py --config configs/tiny_long_edit.py --workdir outputs/tiny_long_edit
    python sample.py --config configs/tiny_long_edit.py --task long_edit --session outputs/edit --video long.mp4

LucyEdit's conditioning in a tiny Wan-style DiT: the source segment channel-concatenated to the noisy
target (`cat([noisy, source])`, 2 x 12 input channels), no camera layers, and Memory-V2V's memory of
earlier edited segments (the previous one always, older ones retrieved by the cosine similarity of
their sources' pooled DINOv2 embeddings), with tokenizers scaled to the 12 x 18 latents (as
tiny_nvs.py) and adaptive token merging. Trained on `synthetic_long_edit`: a camera panning one and a
half to two full turns round a room of pale palette walls for 5-6 segments of 9 frames at 48 x 72, and
the same video with every wall repainted its own new colour, drawn per video (data.synthetic.long_video,
edit "walls"). Neither the prompt (the same for every video) nor the current segment says which colours:
the previous edited segment shows some of the walls, and the others were last seen segments earlier,
so only retrieval of older segments keeps them (the objects recolour of the first version, with its
tint, is `edit="objects", grade=0.3`).
Latents are tiny_nvs.py's block-DCT mapping: 3 latent frames of 12 x 18 x 12 a segment. The paper's
setting is configs/lucy_edit_long.py.
"""

from pathlib import Path

import ml_collections

from mv2v_jax.config import load_config
from mv2v_jax.parallel.mesh import DEFAULT_RULES

NVS = load_config(str(Path(__file__).with_name("tiny_nvs.py")))  # configs/tiny_nvs.py: the same codec and rooms
SEGMENT = dict(frames=9, height=48, width=72, fps=8)
# A long video: 5-6 segments of 9 frames at 48 x 72 in a tiny_nvs.py room (pale palette walls, large
# landmarks), a camera turning 540-720 degrees in all (ours: from the second full turn on, about half
# of the segments revisit walls the previous segment did not show), looking a little down (ours).
LONG_VIDEO = dict(
    scene=dict(
        height=48,
        width=72,
        num_frames=9,
        num_cameras=1,
        num_objects=(1, 2),
        surfaces="palette",
        palette_mix=NVS.data.source.scene.palette_mix,
        landmark_radius=tuple(NVS.data.source.scene.landmark_radius),
    ),
    num_segments=(5, 6),
    sweep_degrees=(540.0, 720.0),
    pitch_degrees=(-12.0, 0.0),
    edit="walls",
)
# tiny_nvs.py's codec and its statistics (the same kind of rooms).
CODEC = NVS.sample.codec.to_dict()


def model_config() -> dict:
    return dict(
        dit=dict(
            dim=192,  # ours: what 2 CPU cores train in about 90 minutes (4,000 steps)
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
        # Ours, scaled to 12 x 18 latents (docs/paper.md): the most relevant memory (the previous segment) at
        # the DiT's own 1x2x2, older segments at 1x4x4.
        tokenizers=dict(ranked=((1, 2, 2), (1, 4, 4), (1, 4, 4)), rest=(1, 4, 4)),
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
            name="tiny_long_edit_walls",
            video=LONG_VIDEO,
            num_train=400,
            num_validation=16,
            base_seed=0,
            data_dir="data/tfds",
        ),
        latents_name="tiny_long_edit_walls_dct2",
        latents_dir="data/latents",
    )
    config.memory_sampling = dict(
        slots=3,  # ours (paper: 1 to 6 memory segments): the previous one, then the 2 most similar older ones
        min_memory=1,
        max_memory=3,
        uniform_tokenizer_prob=0.5,  # paper: 50% of steps one tokenizer for all memory videos
        merge_prob=0.5,  # paper: merging on 50% of steps
        merge_ratios=(0.3, 0.5, 0.7),  # paper: r in [0.3, 0.7]
        fov_radius=1.0,  # not used by long editing
        # Ours: the first segment (nothing to remember) is a target as often as any other, and 10% of the
        # others train without memory too (every segment alone: the no-memory baseline).
        none_prob=0.1,
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
        steps=4000,
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
    # Axes split across TPU slices (processes where there is one slice), e.g. dict(data=2): then `mesh` is
    # each slice's mesh. Default: one slice.
    config.mesh_dcn = {}
    config.mesh_devices = 0  # every device
    config.mesh_rules = [list(r) for r in DEFAULT_RULES]
    config.batch_size = 8
    config.steps = 4000
    config.log_every = 25
    config.eval_every = 500
    config.checkpoint_every = 250  # a killed run loses at most 250 steps (5 minutes)
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
        # Ours: k = 3 as trained; slot 0 is always the previous segment (paper), older ones are fed when
        # more similar than min_score. Two programs, as configs/tiny_nvs.py: none and 3 slots.
        retrieval=dict(slots=3, min_score=0.0, buckets=(0, 3)),
        long_edit=dict(segment_frames=SEGMENT["frames"], overlap=0),  # paper: independent segments
        merge_schedule="",  # the weights' own; or a name in memory.merging.MERGE_SCHEDULES
        # Step caching (pipelines.step_cache; docs/step_caching.md): off until measured, e.g.
        # --config.sample.cache.kind=first_block.
        cache=dict(kind="none", threshold=0.05, warmup=2, uncond_every=1),
        # Ours: one device; a 4 M-parameter model gains nothing from more ("auto" spreads it over all).
        mesh="sequence=1",
        runtime={},
    )
    return config
