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
Latents are tiny_nvs.py's block-DCT mapping: 3 latent frames of 12 x 18 x 12 a segment; what the two
share is in configs/tiny_common.py. The paper's setting is configs/lucy_edit_long.py.
"""

from pathlib import Path

import ml_collections

from mv2v_jax.config import load_module

COMMON = load_module(Path(__file__).with_name("tiny_common.py"))
SEGMENT = COMMON.VIDEO
# A long video: 5-6 segments of 9 frames at 48 x 72 in a tiny_nvs.py room (pale palette walls, large
# landmarks), a camera turning 540-720 degrees in all (ours: from the second full turn on, about half
# of the segments revisit walls the previous segment did not show), looking a little down (ours).
LONG_VIDEO = dict(
    scene=dict(**COMMON.ROOM, num_cameras=1),
    num_segments=(5, 6),
    sweep_degrees=(540.0, 720.0),
    pitch_degrees=(-12.0, 0.0),
    edit="walls",
)


def model_config() -> dict:
    return dict(
        dit=COMMON.dit(in_channels=24),  # LucyEdit: noisy + source condition, 2 x the codec's 12 channels
        adapters=(),  # LucyEdit: no camera layers (tasks.long_edit)
        # Ours, scaled to 12 x 18 latents (docs/paper.md): the most relevant memory (the previous segment) at
        # the DiT's own 1x2x2, older segments at 1x4x4.
        tokenizers=dict(ranked=((1, 2, 2), (1, 4, 4), (1, 4, 4)), rest=(1, 4, 4)),
        merge=COMMON.MERGE,
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
        **COMMON.MEMORY_SAMPLING,  # slots: the previous segment, then the 2 most similar older ones
        fov_radius=1.0,  # not used by long editing
        # Ours: the first segment (nothing to remember) is a target as often as any other, and 10% of the
        # others train without memory too (every segment alone: the no-memory baseline).
        none_prob=0.1,
    )
    config.step = dict(task="long_edit", **COMMON.STEP)
    COMMON.run_config(config, steps=4000)
    config.sample = COMMON.sample_config(
        weights="checkpoints/tiny_long_edit",
        # Ours: k = 3 as trained; slot 0 is always the previous segment (paper), older ones are fed when
        # more similar than min_score. Two programs, as configs/tiny_nvs.py: none and 3 slots.
        retrieval=dict(slots=3, min_score=0.0, buckets=(0, 3)),
        long_edit=dict(segment_frames=SEGMENT["frames"], overlap=0),  # paper: independent segments
    )
    return config
