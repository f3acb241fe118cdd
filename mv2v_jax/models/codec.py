"""Latent codecs: how videos become the latents the DiT denoises, and back.

A codec maps uint8 frames `[F, H, W, 3]` with F = 1 + 4k to latents `[1 + k, H / s, W / s, C]` and back.
The Wan VAEs are codecs (models.wan.vae, via `WanVAECodec`). For the small CPU model shipped with the
repository we use a fixed, stated mapping instead of a trained VAE, `SpaceToDepthCodec`: keep every
4th frame (the frames a Wan latent frame is anchored on, 0, 4, 8, ...), scale to [-1, 1], fold each
s x s pixel block into channels as its lowest 2D DCT frequencies, and standardise each channel with
the data's mean and std (as the Wan VAEs normalise their latents: noise of std 1 must meet data of
std 1, or every noise level but the lowest hides the video). With every frequency kept it is exact
on those key frames; it needs no training, and decodes
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


def dct_matrix(size: int) -> np.ndarray:
    """The orthonormal DCT-II `[size (frequency), size (pixel)]`, JPEG's block transform."""
    k, n = np.arange(size)[:, None], np.arange(size)[None]
    matrix = np.sqrt(2.0 / size) * np.cos(np.pi * (2 * n + 1) * k / (2 * size))
    matrix[0] /= np.sqrt(2.0)
    return matrix


@dataclasses.dataclass(frozen=True)
class SpaceToDepthCodec:
    """Key frames (every 4th) in `s x s` blocks, each block and colour as its `f x f` lowest 2D DCT
    frequencies, standardised: `C = 3 f^2` channels, ordered `(u v colour)`.

    `frequencies` f = s keeps every frequency (an orthonormal change of basis of space-to-depth: exact
    on key frames, 48 channels at s = 4, Wan2.2's count); f < s drops the finer ones (JPEG's idea), so a
    small DiT spends its width on the picture rather than on carrying 48 channels of noise through
    (v-prediction must pass its input noise through to the output). `mean` / `std`: per channel
    statistics of the data's coefficients (pixels in [-1, 1]); empty means 0 and 1.
    """

    spatial: int = 4
    frequencies: int | None = None  # None: spatial, every frequency
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()

    def __post_init__(self):
        if not 1 <= self.kept <= self.spatial:
            raise ValueError(f"codec frequencies must be in [1, {self.spatial}], got {self.frequencies}")
        for name in ("mean", "std"):
            if len(getattr(self, name)) not in (0, self.channels):
                raise ValueError(
                    f"codec {name} needs {self.channels} values (one per channel), got {getattr(self, name)}"
                )
        if self.std and min(self.std) <= 0:
            raise ValueError(f"codec std must be > 0, got {self.std}")

    @property
    def kept(self) -> int:
        return self.spatial if self.frequencies is None else self.frequencies

    @property
    def channels(self) -> int:
        return 3 * self.kept**2

    def _basis(self) -> jax.Array:
        return jnp.asarray(dct_matrix(self.spatial)[: self.kept], jnp.float32)

    def _stats(self) -> tuple[jax.Array, jax.Array]:
        mean = jnp.asarray(self.mean or np.zeros(self.channels), jnp.float32)
        return mean, jnp.asarray(self.std or np.ones(self.channels), jnp.float32)

    def encode(self, frames: np.ndarray) -> jax.Array:
        frames = np.asarray(frames)
        check_frame_count(frames.shape[0])
        _, height, width, _ = frames.shape
        if height % self.spatial or width % self.spatial:
            raise ValueError(f"frames {height}x{width} are not divisible by the codec's {self.spatial}")
        keys = jnp.asarray(frames[::TEMPORAL], jnp.float32) / 127.5 - 1.0
        blocks = einops.rearrange(keys, "t (h p) (w q) c -> t h w p q c", p=self.spatial, q=self.spatial)
        basis = self._basis()
        coefficients = jnp.einsum("up,vq,thwpqc->thwuvc", basis, basis, blocks, precision="highest")
        mean, std = self._stats()
        return (einops.rearrange(coefficients, "t h w u v c -> t h w (u v c)") - mean) / std

    def decode(self, latents: jax.Array) -> np.ndarray:
        mean, std = self._stats()
        coefficients = einops.rearrange(
            jnp.asarray(latents, jnp.float32) * std + mean, "t h w (u v c) -> t h w u v c", u=self.kept, v=self.kept
        )
        basis = self._basis()
        blocks = jnp.einsum("up,vq,thwuvc->thwpqc", basis, basis, coefficients, precision="highest")
        keys = np.asarray(jnp.clip(einops.rearrange(blocks, "t h w p q c -> t (h p) (w q) c"), -1.0, 1.0))
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
