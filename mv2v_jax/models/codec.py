"""Latent codecs: how videos become the latents the DiT denoises, and back.

A codec maps uint8 frames `[F, H, W, 3]` with F = 1 + 4k to latents `[1 + k, H / s, W / s, C]` and back.
The Wan VAEs are codecs (models.wan.vae, via `WanVAECodec`). For the small CPU model shipped with the
repository we use a fixed, stated mapping instead of a trained VAE, `SpaceToDepthCodec`: keep every
4th frame (the frames a Wan latent frame is anchored on, 0, 4, 8, ...), scale to [-1, 1], standardise
each colour with the data's mean and std (as the Wan VAEs normalise their latents: noise of std 1 must
meet data of std 1, or every noise level but the lowest hides the video) and fold each s x s pixel
block into channels. It is exact on those key frames, needs no training, and decodes
the frames in between by linear interpolation of neighbouring key frames (the small model then only
has to get key frames right; the interpolation shows as blur in fast motion).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol

import einops
import jax
import jax.numpy as jnp
import numpy as np

TEMPORAL = 4  # Wan's temporal compression: latent frame k anchors pixel frame 4k


class LatentCodec(Protocol):
    channels: int
    spatial: int

    def encode(self, frames: np.ndarray) -> jax.Array:
        """uint8 `[F, H, W, 3]` (F = 1 + 4k) -> latents `[1 + k, H / s, W / s, C]`."""
        ...

    def decode(self, latents: jax.Array) -> np.ndarray:
        """latents `[1 + k, h, w, C]` -> uint8 frames `[1 + 4k, h s, w s, 3]`."""
        ...


def check_frame_count(frames: int) -> None:
    if frames < 1 or (frames - 1) % TEMPORAL:
        raise ValueError(f"a video for the codec needs 1 + 4k frames, got {frames}")


@dataclasses.dataclass(frozen=True)
class SpaceToDepthCodec:
    """Key frames (every 4th), standardised per colour, folded `s x s` into channels: `C = 3 s^2` (s = 4:
    48, Wan2.2's channel count). `mean` / `std`: RGB statistics of the data in [-1, 1] pixel units."""

    spatial: int = 4
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def __post_init__(self):
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"codec mean and std need 3 values, std > 0; got {self.mean}, {self.std}")

    @property
    def channels(self) -> int:
        return 3 * self.spatial**2

    def encode(self, frames: np.ndarray) -> jax.Array:
        frames = np.asarray(frames)
        check_frame_count(frames.shape[0])
        _, height, width, _ = frames.shape
        if height % self.spatial or width % self.spatial:
            raise ValueError(f"frames {height}x{width} are not divisible by the codec's {self.spatial}")
        keys = jnp.asarray(frames[::TEMPORAL], jnp.float32) / 127.5 - 1.0
        keys = (keys - jnp.asarray(self.mean)) / jnp.asarray(self.std)
        return einops.rearrange(keys, "t (h p) (w q) c -> t h w (p q c)", p=self.spatial, q=self.spatial)

    def decode(self, latents: jax.Array) -> np.ndarray:
        keys = einops.rearrange(
            jnp.asarray(latents, jnp.float32), "t h w (p q c) -> t (h p) (w q) c", p=self.spatial, q=self.spatial
        )
        keys = np.asarray(jnp.clip(keys * jnp.asarray(self.std) + jnp.asarray(self.mean), -1.0, 1.0))
        count = keys.shape[0]
        frames = np.empty((1 + TEMPORAL * (count - 1), *keys.shape[1:]), np.float32)
        for i in range(frames.shape[0]):
            k, offset = divmod(i, TEMPORAL)
            w = offset / TEMPORAL
            frames[i] = keys[k] if offset == 0 else (1 - w) * keys[k] + w * keys[k + 1]
        return np.clip(np.round((frames + 1.0) * 127.5), 0, 255).astype(np.uint8)


@dataclasses.dataclass(frozen=True)
class WanVAECodec:
    """A Wan VAE (models.wan.vae) as a codec: normalised posterior-mean latents, frames in [-1, 1]."""

    vae: Any

    @property
    def channels(self) -> int:
        return self.vae.config.z_dim

    @property
    def spatial(self) -> int:
        return self.vae.config.spatial_compression

    def encode(self, frames: np.ndarray) -> jax.Array:
        check_frame_count(np.shape(frames)[0])
        video = jnp.asarray(frames, jnp.float32)[None] / 127.5 - 1.0
        return self.vae.encode(video)[0]

    def decode(self, latents: jax.Array) -> np.ndarray:
        video = np.asarray(self.vae.decode(jnp.asarray(latents)[None])[0])
        return np.clip(np.round((video + 1.0) * 127.5), 0, 255).astype(np.uint8)
