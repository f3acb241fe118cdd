"""Tiny fabricated latent scenes and a micro training config for the training tests."""

from __future__ import annotations

import numpy as np

from mv2v_jax.parallel.mesh import DEFAULT_RULES


def look_at_w2c(center: np.ndarray, yaw: float) -> np.ndarray:
    """OpenCV world-to-camera for a camera at `center` looking along the horizontal direction `yaw`."""
    forward = np.array([np.sin(yaw), 0.0, np.cos(yaw)])
    down = np.array([0.0, 1.0, 0.0])
    right = np.cross(down, forward)
    rotation = np.stack([right, down, forward])  # rows: camera axes in world
    return np.concatenate([rotation, -rotation @ center[:, None]], axis=1)


def latent_scene(seed: int, views: int = 4, frames: int = 3, size: int = 8, channels: int = 4, text: int = 16):
    """A scene record as `data.memory_sampling.nvs_example` reads it: smooth random latents per view,
    cameras panning from different headings."""
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((channels, 3, 3))
    yy, xx = np.meshgrid(np.linspace(0, 2, size), np.linspace(0, 2, size), indexing="ij")
    latents = np.zeros((views, frames, size, size, channels), np.float32)
    w2c = np.zeros((views, frames, 3, 4))
    for v in range(views):
        for f in range(frames):
            shift = 0.3 * v + 0.15 * f
            for c in range(channels):
                latents[v, f, :, :, c] = np.sin(xx * base[c, 0, 0] + shift) + np.cos(yy * base[c, 1, 1] - shift)
            w2c[v, f] = look_at_w2c(np.zeros(3), 0.8 * v + 0.1 * f)
    return {
        "latents": latents,
        "w2c": w2c.astype(np.float32),
        "K": np.array([[24.0, 0, 24], [0, 24.0, 24], [0, 0, 1]], np.float32),
        "image_size": np.array([48, 48]),
        "context": rng.standard_normal((5, text)).astype(np.float32),
        "scene": f"scene{seed}",
    }


def long_edit_pair(seed: int, segments: int = 4, frames: int = 3, size: int = 8, channels: int = 4, text: int = 16):
    """A pair record as `data.memory_sampling.long_edit_example` reads it: smooth random source latents
    per segment, an edit that adds a per-pair colour offset (so memory of earlier segments tells it), and
    per-segment embeddings."""
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.linspace(0, 2, size), np.linspace(0, 2, size), indexing="ij")
    source = np.zeros((segments, frames, size, size, channels), np.float32)
    for s in range(segments):
        for f in range(frames):
            for c in range(channels):
                source[s, f, :, :, c] = np.sin(xx * (c + 1) + 0.4 * s + 0.1 * f) * np.cos(yy - 0.2 * c)
    offset = rng.uniform(-1, 1, channels).astype(np.float32)
    return {
        "source_latents": source,
        "edited_latents": 0.5 * source + offset,
        "embeddings": rng.standard_normal((segments, 8)).astype(np.float32),
        "context": rng.standard_normal((5, text)).astype(np.float32),
        "pair": f"pair{seed}",
    }


def micro_config(task: str = "nvs", **overrides) -> dict:
    config = dict(
        seed=0,
        model=dict(
            dit=dict(
                dim=32,
                ffn_dim=64,
                num_heads=2,
                num_layers=3,
                in_channels=4 if task == "nvs" else 8,  # long edit: noisy + condition
                out_channels=4,
                text_dim=16,
                freq_dim=16,
                attention=dict(impl="chunked", block_q=64, block_kv=128),
            ),
            adapters=("camera",) if task == "nvs" else (),
            tokenizers=dict(ranked=((1, 4, 4),) * 2, rest=(1, 8, 8)),
            merge=dict(blocks=(10, 20), fraction=0.5, keep_ratio=0.5),
        ),
        init_weights="",
        # Two step variants (merging on or off) keep compilation short.
        memory_sampling=dict(
            slots=3,
            min_memory=1,
            max_memory=2,
            uniform_tokenizer_prob=0.0,
            merge_prob=0.5,
            merge_ratios=(0.5,),
            fov_radius=1.0,
        ),
        step=dict(
            task=task,
            shift=3.0,
            timestep_sampling="uniform",
            loss_weighting="none",
            memory_noise=0.05,
            rope_dropout=0.1,
            ema_decay=0.0,
        ),
        optimizer=dict(
            lr=3e-3,
            schedule="constant",
            warmup_steps=5,
            steps=60,
            final_ratio=0.1,
            b1=0.9,
            b2=0.99,
            weight_decay=0.0,
            clip_norm=1.0,
            accumulate=1,
        ),
        trainable=[".*"],
        mesh=dict(data=-1),
        mesh_dcn={},
        mesh_devices=1,  # one of the 8 fake CPU devices: the sharding test covers the mesh
        mesh_rules=DEFAULT_RULES,
        batch_size=4,
        steps=60,
        log_every=1,
        eval_every=20,
        checkpoint_every=20,
        keep_checkpoints=2,
        eval_sampling_steps=3,
    )
    config.update(overrides)
    return config
