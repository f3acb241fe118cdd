"""The long-edit data path: synthetic long videos and their edit, the TFDS builder, encoding pairs into
latents with pooled DINOv2 segment embeddings, and training the long-edit task from those records."""

import dataclasses
import json

import numpy as np
import pytest

from mv2v_jax.data.encode_latents import open_latents
from mv2v_jax.data.synthetic import (
    COLOURS,
    EDIT_PROMPT,
    LONG_PRESETS,
    generate_long_edit,
    recolour_objects,
    render,
)
from mv2v_jax.data.tfds.common import prepare
from mv2v_jax.data.tfds.synthetic_long_edit import SyntheticLongEdit, SyntheticLongEditConfig
from mv2v_jax.data.tfds.synthetic_multicam import scene_seed
from mv2v_jax.geometry import invert_pose
from mv2v_jax.models.build import build_codec, build_embedder
from mv2v_jax.parallel.mesh import DEFAULT_RULES
from mv2v_jax.retrieval.similarity import segment_embedding

TINY = LONG_PRESETS["tiny"]
CODEC = dict(kind="space_to_depth", spatial=4, frequencies=2)  # 12 channels, no VAE to compile
EMBEDDER = dict(kind="dinov2_random", preset="tiny", seed=0)


@pytest.fixture(scope="module")
def video():
    return generate_long_edit(3, TINY)


def test_long_videos_are_determined_by_their_seed(video):
    again = generate_long_edit(3, TINY)
    for key in ("source", "edited", "w2c", "segment_starts"):
        np.testing.assert_array_equal(again[key], video[key])
    segments, frames = video["source"].shape[:2]
    assert TINY.num_segments[0] <= segments <= TINY.num_segments[1] and frames == TINY.scene.num_frames
    assert video["source"].shape[2:] == (TINY.scene.height, TINY.scene.width, 3)
    assert video["segment_starts"].tolist() == [s * frames for s in range(segments)]
    other = generate_long_edit(4, TINY)
    assert other["source"].shape != video["source"].shape or (other["source"] != video["source"]).any()


def forwards(w2c: np.ndarray) -> np.ndarray:
    """Viewing directions `[..., 3]` in world coordinates (the rotation's third row)."""
    return w2c[..., 2, :3]


def test_one_camera_moves_smoothly_across_segments_and_comes_back(video):
    directions = forwards(video["w2c"].reshape(-1, 3, 4))
    steps = np.degrees(np.arccos(np.clip(np.sum(directions[1:] * directions[:-1], -1), -1, 1)))
    assert steps.max() < 2 * np.median(steps)  # segment boundaries are ordinary frames of one move
    positions = invert_pose(video["w2c"].reshape(-1, 3, 4))[:, :, 3]
    assert np.linalg.norm(positions[:, :2], axis=-1).max() <= TINY.scene.camera_region + 1e-9
    # More than a full turn: some frame of the last segment looks where the first frame did.
    last = forwards(video["w2c"][-1])
    assert np.degrees(np.arccos(np.clip(last @ directions[0], -1, 1))).min() < 10


def test_the_edit_recolours_the_objects_and_nothing_else(video):
    colour = video["edit_colour"]
    world, edited_world = video["world"], video["edited_world"]
    assert colour not in {o.colour_name for o in world.objects}
    assert {o.colour_name for o in edited_world.objects} == {colour}
    w2c = video["w2c"].reshape(-1, 3, 4)
    no_objects, _ = render(dataclasses.replace(world, objects=()), w2c, video["K"], video["source"].shape[2:4])
    source, edited = video["source"].reshape(no_objects.shape), video["edited"].reshape(no_objects.shape)
    changed = (source != edited).any(-1)
    assert changed.any(axis=(1, 2)).mean() > 0.5  # objects are in view most of the time
    assert not (changed & (source == no_objects).all(-1)).any()  # only object pixels change
    # Shading scales the albedo: the edited object pixels point along the new colour in RGB.
    pixels = edited[changed].astype(np.float64)
    target = np.asarray(COLOURS[colour])
    cosine = pixels @ target / np.maximum(np.linalg.norm(pixels, axis=-1) * np.linalg.norm(target), 1e-9)
    assert np.median(cosine) > 0.99


def test_the_grade_tints_every_edited_pixel_towards_the_edit_colour(video):
    graded = generate_long_edit(3, dataclasses.replace(TINY, grade=0.25))
    assert graded["edit_colour"] == video["edit_colour"]
    np.testing.assert_array_equal(graded["source"], video["source"])  # the source is not graded
    tint = 255.0 * np.asarray(COLOURS[video["edit_colour"]])
    want = 0.75 * video["edited"].astype(np.float64) + 0.25 * tint
    np.testing.assert_allclose(graded["edited"], want, atol=0.5 + 1e-9)
    with pytest.raises(ValueError, match=r"grade=1.0 must be in \[0, 1\)"):
        dataclasses.replace(TINY, grade=1.0)


def test_neither_prompt_nor_segment_says_the_colour():
    videos = [generate_long_edit(seed, TINY) for seed in range(6)]
    assert {v["prompt"] for v in videos} == {EDIT_PROMPT}
    assert not any(name in EDIT_PROMPT.lower() for name in COLOURS)
    assert len({v["edit_colour"] for v in videos}) > 1  # the colour varies per video
    # The same source recoloured another way is an equally valid edit of the same segment.
    video = videos[0]
    other = next(c for c in COLOURS if c != video["edit_colour"] and c not in ("white", "grey"))
    w2c = video["w2c"][0]
    recoloured, _ = render(recolour_objects(video["world"], other), w2c, video["K"], video["source"].shape[2:4])
    assert (recoloured != video["edited"][0]).any()


def test_long_preview_shows_source_and_edit_per_segment(video, tmp_path):
    from PIL import Image

    from mv2v_jax.data.synthetic import write_long_preview

    def sheet(segments: int) -> Image.Image:
        part = {k: video[k][:segments] for k in ("source", "edited")}
        return Image.open(write_long_preview(tmp_path / f"{segments}.png", part))

    one, two, every = sheet(1), sheet(2), sheet(len(video["source"]))
    pair = two.height - one.height  # a segment adds two rows: its source and its edit
    assert pair > 2 * TINY.scene.height and every.height == one.height + (len(video["source"]) - 1) * pair


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    root = tmp_path_factory.mktemp("long_edit")
    config = SyntheticLongEditConfig(name="test", video=TINY, num_train=3, num_validation=1, base_seed=5)
    return root, prepare(SyntheticLongEdit, config, root / "tfds").as_data_source()


def test_the_builder_writes_generate_long_edit(pairs):
    _, data = pairs
    assert len(data["train"]) == 3 and len(data["validation"]) == 1
    record = by_name(data["train"], "train/000001")  # TFDS stores records in the order of its key hashes
    want = generate_long_edit(scene_seed(5, "train", 1), TINY)
    assert record["prompt"].decode() == EDIT_PROMPT
    assert record["edit_colour"].decode() == want["edit_colour"]
    for key in ("source", "edited", "segment_starts"):
        np.testing.assert_array_equal(record[key], want[key])
    np.testing.assert_allclose(record["w2c"], want["w2c"], atol=1e-6)


def by_name(records, name: str):
    return next(r for r in records if r["pair"].decode() == name)


def experiment(root, **overrides) -> dict:
    """A long-edit experiment config (the sections encode_latents and train read), tiny and text-free."""
    channels = build_codec(CODEC).channels
    config = dict(
        seed=0,
        model=dict(
            dit=dict(
                dim=32,
                ffn_dim=64,
                num_heads=2,
                num_layers=3,
                in_channels=2 * channels,
                out_channels=channels,
                text_dim=16,
                freq_dim=16,
                attention=dict(impl="chunked", block_q=64, block_kv=128),
            ),
            adapters=(),
            tokenizers=dict(ranked=((1, 4, 4),) * 2, rest=(1, 8, 8)),
            merge=dict(blocks=(10, 20), fraction=0.5, keep_ratio=0.5),
        ),
        init_weights="",
        sample=dict(codec=CODEC, text=dict(kind="none"), embedder=EMBEDDER),
        data=dict(
            source=dict(
                builder="synthetic_long_edit",
                name="test",
                preset="tiny",
                num_train=3,
                num_validation=1,
                base_seed=5,
                data_dir=str(root / "tfds"),
            ),
            latents_name="test_pairs",
            latents_dir=str(root / "latents"),
        ),
        memory_sampling=dict(
            slots=3,
            min_memory=1,
            max_memory=3,
            uniform_tokenizer_prob=0.0,
            merge_prob=0.0,
            merge_ratios=(0.5,),
            fov_radius=1.0,
        ),
        step=dict(
            task="long_edit",
            shift=1.0,
            timestep_sampling="uniform",
            loss_weighting="none",
            memory_noise=0.05,
            rope_dropout=0.0,
            ema_decay=0.0,
        ),
        optimizer=dict(
            lr=3e-3,
            schedule="constant",
            warmup_steps=1,
            steps=4,
            final_ratio=1.0,
            b1=0.9,
            b2=0.99,
            weight_decay=0.0,
            clip_norm=1.0,
            accumulate=1,
        ),
        trainable=[r"^dit/blocks/self_attn/", r"^tokenizers/", r"^mergers/"],
        mesh=dict(data=-1),
        mesh_dcn={},
        mesh_devices=1,
        mesh_rules=DEFAULT_RULES,
        batch_size=2,
        steps=4,
        log_every=1,
        eval_every=100,
        checkpoint_every=100,
        keep_checkpoints=1,
        eval_sampling_steps=2,
    )
    return config | overrides


@pytest.fixture(scope="module")
def latent_pairs(pairs):
    root, data = pairs
    config = experiment(root)
    return config, data, open_latents(config, build=True).as_data_source()


def test_pairs_encode_to_latents_and_pooled_segment_embeddings(latent_pairs):
    _, data, latents = latent_pairs
    assert set(latents) == {"train", "validation"}
    record, pair = by_name(latents["train"], "train/000002"), by_name(data["train"], "train/000002")
    assert record["prompt"] == pair["prompt"]
    codec, embed = build_codec(CODEC), build_embedder(EMBEDDER)
    segments = len(pair["source"])
    assert record["source_latents"].shape == (segments, 3, 16, 24, 12) and record["source_latents"].dtype == np.float16
    for s in range(segments):
        for key, videos in (("source_latents", pair["source"]), ("edited_latents", pair["edited"])):
            np.testing.assert_array_equal(record[key][s], np.asarray(codec.encode(videos[s])).astype(np.float16))
        # What inference retrieves by (pipelines.long_edit): the mean DINOv2 embedding of the source frames.
        np.testing.assert_allclose(record["embeddings"][s], segment_embedding(pair["source"][s], embed), rtol=1e-5)
    assert not np.allclose(record["embeddings"][0], record["embeddings"][1])
    assert record["context"].shape == (1, 16) and not record["context"].any()  # no text encoder: zeros
    # The edit changed the latents where the objects are, not everywhere.
    assert (record["source_latents"] != record["edited_latents"]).any()


def test_the_long_edit_task_trains_from_latent_pairs(latent_pairs, tmp_path):
    from mv2v_jax.memory.model import load_memory_dit
    from mv2v_jax.train.loop import train

    config, _, latents = latent_pairs
    train(config, tmp_path, latents["train"])
    losses = [json.loads(line)["loss"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 4 and np.isfinite(losses).all()
    model = load_memory_dit(tmp_path / "weights")
    assert model.config.adapters == () and model.config.dit.in_channels == 24


WALLS = dataclasses.replace(
    TINY,
    scene=dataclasses.replace(TINY.scene, surfaces="palette", palette_mix=0.5),
    num_segments=(5, 5),
    sweep_degrees=(600.0, 600.0),
    pitch_degrees=(-10.0, -10.0),
    edit="walls",
)


def test_the_walls_edit_repaints_each_wall_its_own_new_colour_and_nothing_else():
    from mv2v_jax.data.synthetic import EDIT_PROMPTS, SURFACE_NAMES, edit_regions, pale

    video = generate_long_edit(3, WALLS)
    new, old = video["edit_colour"].split(","), [s.colour_names[0] for s in video["world"].surfaces[:4]]
    assert len(set(new)) == 4 and all(a != b for a, b in zip(new, old, strict=True))
    assert video["prompt"] == EDIT_PROMPTS["walls"] and not any(c in video["prompt"].lower() for c in COLOURS)
    changed = np.abs(video["edited"].astype(int) - video["source"].astype(int)).max(-1) > 8
    ids = video["ids"]
    walls = ids < 4
    assert changed[walls].mean() > 0.8  # the walls change, but for their landmarks ...
    assert not changed[~walls].any()  # ... and nothing else does: floor, ceiling, objects
    regions = edit_regions(ids, "walls")
    assert list(regions) == list(SURFACE_NAMES[:4])
    chroma = lambda rgb: np.asarray(rgb, float) / np.sum(rgb)  # shading scales a colour, not its chromaticity
    for wall, colour in enumerate(new):  # each wall now has its new (pale) colour
        shown = regions[SURFACE_NAMES[wall]] & changed
        if shown.sum() < 16:
            continue
        seen = chroma(video["edited"][shown].astype(float).mean(0))
        nearest = min(new, key=lambda c: np.abs(seen - chroma(pale(COLOURS[c], 0.5))).sum())
        assert nearest == colour
    # The camera turns more than a full turn: a wall the last segment shows, an older segment showed too.
    last = {w for w in range(4) if (ids[-1] == w).sum() > 16}
    older = {w for w in range(4) if (ids[:-2] == w).sum() > 16}
    assert last and last <= older
    with pytest.raises(ValueError, match="needs edit='objects'"):
        dataclasses.replace(WALLS, grade=0.3)
