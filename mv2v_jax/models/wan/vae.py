"""The Wan2.1 and Wan2.2 causal video VAEs in Flax NNX, with the reference's chunked feature cache.

Numerically diffusers' `AutoencoderKLWan` and the native `WanVAE_` of Wan2.1 (`wan/modules/vae.py`) and
Wan2.2 (`wan/modules/vae2_2.py`) (docs/models.md, "Wan VAE"). One class family covers both:

- Wan2.1: z 16, 4x temporal and 8x spatial compression, upsamplers halve the channels.
- Wan2.2 (`is_residual=True`, `patch_size=2`): 2x2 pixel patches folded into 12 channels before the
  encoder, down/up blocks with the parameter-free AvgDown3D / DupUp3D shortcuts, upsamplers that keep
  the channel count, a wider decoder (`decoder_base_dim`); z 48, 4x16x16.

Video is channels-last `[B, F, H, W, C]` in [-1, 1]; latents `[B, f, h, w, z]`. Decoded video is
clamped to [-1, 1] for both versions, as both references do (diffusers `_decode`; Wan2.1 `WanVAE.decode`,
Wan2.2 `Wan2_2_VAE.decode`); diffusers' `clip_output` switch for Wan2.2 was removed (diffusers #12041).

**Chunked causal processing**, exactly as the reference: the encoder sees frames `[0]`, `[1:5]`,
`[5:9]`, ... (one latent frame per chunk), the decoder one latent frame at a time. Each chunk is one call
of a jit-compiled step (`_encode_step`, `_decode_step`), so only one chunk's activations live at a time
and a video of any length compiles two steps per direction (the first chunk, and the later chunks).
The state carried between chunks is a `FeatureCache`: a flat tuple of arrays, one per cached layer in
call order (the reference's `feat_cache` list), passed in and returned by the step:

- every causal 3x3x3 conv caches the last `CACHE_T = 2` frames of its (padded) input; the first chunk
  sees two zero frames, so a chunked pass equals a causal conv over the whole sequence;
- `downsample3d`'s time conv (k3, stride 2, no padding) caches 1 frame; on the first chunk it is
  skipped (`o[0] = x[0]`), later `o[k] = conv(x[2k-2], x[2k-1], x[2k])`;
- `upsample3d`'s time conv (C -> 2C, two output frames per input frame) is skipped on the first chunk
  (the reference's "Rep" marker: frame 0 passes through) and then runs causally over the frames after
  frame 0, with zeros before frame 1;
- Wan2.2's DupUp3D shortcut drops its first `factor_t - 1` frames on the first chunk.

The cache holds the same shapes after the first chunk as after any later one, so the later-chunk step
compiles once. Grouping more frames per chunk (`chunk_frames` a multiple of 4 for encoding,
`chunk_latents` for decoding) gives the same result with fewer, larger steps (tests/test_vae_parity.py).

Conv3d runs as the sum over its time taps of per-frame 2D convolutions ("taps": 1.6x faster than XLA's
3D convolution on CPU, for ~40% more temporaries) or as one `conv_general_dilated` in NDHWC/DHWIO
("xla3d"); `conv_impl="auto"` picks taps on CPU and xla3d elsewhere (BENCHMARKS.md). Parameters are small
(0.5 GB for Wan2.1, 2.6 GB for Wan2.2) and replicated: every parameter's logical axes are None.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping
from typing import Any

import einops
import jax
import jax.numpy as jnp
from flax import nnx
from tqdm import tqdm

from mv2v_jax.config import dataclass_from_config
from mv2v_jax.models.layers import DTYPES, check_dtypes, param
from mv2v_jax.models.wan.attention import AttentionConfig, attention

CACHE_T = 2  # frames of history a causal 3x3x3 conv keeps between chunks

# Published latent statistics (diffusers configs `latents_mean/std`; Wan2.1 `WanVAE.mean/std`, Wan2.2
# `Wan2_2_VAE`): latents are normalised as (mu - mean) / std.
WAN21_LATENTS_MEAN = (
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
)  # fmt: skip
WAN21_LATENTS_STD = (
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
)  # fmt: skip
WAN22_LATENTS_MEAN = (
    -0.2289, -0.0052, -0.1323, -0.2339, -0.2799, 0.0174, 0.1838, 0.1557,
    -0.1382, 0.0542, 0.2813, 0.0891, 0.1570, -0.0098, 0.0375, -0.1825,
    -0.2246, -0.1207, -0.0698, 0.5109, 0.2665, -0.2108, -0.2158, 0.2502,
    -0.2055, -0.0322, 0.1109, 0.1567, -0.0729, 0.0899, -0.2799, -0.1230,
    -0.0313, -0.1649, 0.0117, 0.0723, -0.2839, -0.2083, -0.0520, 0.3748,
    0.0152, 0.1957, 0.1433, -0.2944, 0.3573, -0.0548, -0.1681, -0.0667,
)  # fmt: skip
WAN22_LATENTS_STD = (
    0.4765, 1.0364, 0.4514, 1.1677, 0.5313, 0.4990, 0.4818, 0.5013,
    0.8158, 1.0344, 0.5894, 1.0901, 0.6885, 0.6165, 0.8454, 0.4978,
    0.5759, 0.3523, 0.7135, 0.6804, 0.5833, 1.4146, 0.8986, 0.5659,
    0.7069, 0.5338, 0.4889, 0.4917, 0.4069, 0.4999, 0.6866, 0.4093,
    0.5709, 0.6065, 0.6415, 0.4944, 0.5726, 1.2042, 0.5458, 1.6887,
    0.3971, 1.0600, 0.3943, 0.5537, 0.5444, 0.4089, 0.7468, 0.7744,
)  # fmt: skip

CONV_IMPLS = ("auto", "taps", "xla3d")


@dataclasses.dataclass(frozen=True)
class WanVAEConfig:
    """Architecture and execution switches. Defaults are the Wan2.1 VAE (diffusers' defaults)."""

    base_dim: int = 96
    decoder_base_dim: int | None = None  # None: base_dim; Wan2.2 decodes with 256
    z_dim: int = 16
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    temporal_downsample: tuple[bool, ...] = (False, True, True)  # per encoder level but the last
    is_residual: bool = False  # Wan2.2 down/up blocks with AvgDown3D / DupUp3D shortcuts
    in_channels: int = 3  # encoder input channels, after patchify (Wan2.2: 3 x 2 x 2 = 12)
    out_channels: int = 3  # decoder output channels, before unpatchify
    patch_size: int = 1
    latents_mean: tuple[float, ...] = WAN21_LATENTS_MEAN
    latents_std: tuple[float, ...] = WAN21_LATENTS_STD
    param_dtype: str = "float32"
    dtype: str = "float32"  # compute dtype; the Wan pipelines run their VAE in float32
    conv_impl: str = "auto"  # one of CONV_IMPLS
    # "auto": chunked on CPU, XLA elsewhere (cuDNN flash attention does not take the 384+ wide heads).
    attention: AttentionConfig = dataclasses.field(default_factory=AttentionConfig)

    def __post_init__(self):
        levels = len(self.dim_mult)
        if len(self.temporal_downsample) != levels - 1:
            raise ValueError(
                f"temporal_downsample has {len(self.temporal_downsample)} entries; {levels} levels "
                f"(dim_mult={self.dim_mult}) need {levels - 1}"
            )
        for name in ("latents_mean", "latents_std"):
            if len(getattr(self, name)) != self.z_dim:
                raise ValueError(f"{name} has {len(getattr(self, name))} values; z_dim is {self.z_dim}")
        for name in ("in_channels", "out_channels"):
            if getattr(self, name) % self.patch_size**2:
                raise ValueError(f"{name}={getattr(self, name)} is not divisible by patch_size**2={self.patch_size**2}")
        if self.conv_impl not in CONV_IMPLS:
            raise ValueError(f"conv_impl={self.conv_impl!r} is not one of {CONV_IMPLS}")
        check_dtypes(self, auto=())

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> WanVAEConfig:
        """From an ml_collections ConfigDict / dict; an unknown key is an error that names it."""
        return dataclass_from_config(cls, config, "VAE", {"attention": AttentionConfig})

    @property
    def decoder_dim(self) -> int:
        return self.base_dim if self.decoder_base_dim is None else self.decoder_base_dim

    @property
    def spatial_compression(self) -> int:
        return self.patch_size * 2 ** (len(self.dim_mult) - 1)

    @property
    def temporal_compression(self) -> int:
        return 2 ** sum(self.temporal_downsample)

    @property
    def video_channels(self) -> int:
        return self.in_channels // self.patch_size**2

    @property
    def compute_dtype(self):
        return DTYPES[self.dtype]

    def resolved_conv_impl(self) -> str:
        if self.conv_impl != "auto":
            return self.conv_impl
        return "taps" if jax.default_backend() == "cpu" else "xla3d"

    def resolved_attention(self) -> AttentionConfig:
        if self.attention.impl != "auto":
            return self.attention
        impl = "chunked" if jax.default_backend() == "cpu" else "xla"
        return dataclasses.replace(self.attention, impl=impl)


# Fields that describe the architecture, stored with converted weights; the others are run-time choices.
ARCH_FIELDS = tuple(
    f.name for f in dataclasses.fields(WanVAEConfig) if f.name not in ("dtype", "conv_impl", "attention")
)


class FeatureCache:
    """The state one chunk hands to the next: what every cached layer saw last (the reference's feat_cache).

    Layers call `previous()` then `record(...)` in a fixed order; `previous()` returns what the same layer
    recorded in the previous chunk, or None on the first chunk. `entries()` is the tuple the next chunk's
    step takes. Only tracing-time bookkeeping: the arrays are the step's inputs and outputs.
    """

    def __init__(self, entries: tuple[jax.Array, ...] | None):
        self._previous = entries
        self._recorded: list[jax.Array] = []

    @property
    def first(self) -> bool:
        return self._previous is None

    def previous(self) -> jax.Array | None:
        return None if self._previous is None else self._previous[len(self._recorded)]

    def record(self, x: jax.Array) -> None:
        self._recorded.append(x)

    def entries(self) -> tuple[jax.Array, ...]:
        if self._previous is not None and len(self._previous) != len(self._recorded):
            raise ValueError(f"cache has {len(self._previous)} entries, this pass recorded {len(self._recorded)}")
        return tuple(self._recorded)


def _param(rngs: nnx.Rngs, initializer, shape: tuple[int, ...], config: WanVAEConfig) -> nnx.Param:
    return param(rngs, initializer, shape, (None,) * len(shape), DTYPES[config.param_dtype])  # replicated


def _conv_frames(x: jax.Array, kernel: jax.Array, stride: int, padding) -> jax.Array:
    """2D convolution of every frame: `[B, T, H, W, C]`, kernel `[kh, kw, C, O]` -> `[B, T, H', W', O]`."""
    b, t = x.shape[:2]
    if kernel.shape[:2] == (1, 1) and stride == 1:
        return jnp.einsum("bthwc,co->bthwo", x, kernel[0, 0])
    y = jax.lax.conv_general_dilated(
        x.reshape(b * t, *x.shape[2:]),
        kernel,
        (stride, stride),
        padding,
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )
    return y.reshape(b, t, *y.shape[1:])


class Conv3d(nnx.Module):
    """Conv3d with time 'valid' (callers put the history in front) and zero 'same' padding in space.

    `__call__(x)` convolves `[B, T, H, W, C]` as given; `causal(x, cache)` first prepends the
    `CACHE_T` frames this conv saw last (zeros on the first chunk) and records its new history.
    Kernel `[kt, kh, kw, C, O]` (torch Conv3d `[O, C, kt, kh, kw]` transposed).
    """

    def __init__(
        self,
        din: int,
        dout: int,
        kernel: int | tuple[int, int, int],
        config: WanVAEConfig,
        rngs: nnx.Rngs,
        time_stride: int = 1,
    ):
        kernel = (kernel,) * 3 if isinstance(kernel, int) else tuple(kernel)
        self.time_stride = time_stride
        self.impl = config.resolved_conv_impl()
        self.dtype = config.compute_dtype
        init = nnx.initializers.variance_scaling(1.0, "fan_in", "uniform", in_axis=(0, 1, 2, 3), out_axis=4)
        self.kernel = _param(rngs, init, (*kernel, din, dout), config)
        self.bias = _param(rngs, nnx.initializers.zeros_init(), (dout,), config)

    def __call__(self, x: jax.Array) -> jax.Array:
        """`[B, T, H, W, C]` -> `[B, (T - kt) // stride + 1, H, W, O]`."""
        kernel = self.kernel[...].astype(self.dtype)
        kt, kh, kw = kernel.shape[:3]
        spatial = [(kh // 2, kh // 2), (kw // 2, kw // 2)]
        x = x.astype(self.dtype)
        if self.impl == "xla3d" and (kt, kh, kw) != (1, 1, 1):
            y = jax.lax.conv_general_dilated(
                x, kernel, (self.time_stride, 1, 1), [(0, 0), *spatial], dimension_numbers=("NDHWC", "DHWIO", "NDHWC")
            )
        else:
            frames = (x.shape[1] - kt) // self.time_stride + 1
            span = self.time_stride * (frames - 1) + 1
            y = sum(
                _conv_frames(x[:, tap : tap + span : self.time_stride], kernel[tap], 1, spatial) for tap in range(kt)
            )
        return y + self.bias[...].astype(self.dtype)

    def causal(self, x: jax.Array, cache: FeatureCache) -> jax.Array:
        past = cache.previous()
        if past is None:
            past = jnp.zeros((x.shape[0], CACHE_T, *x.shape[2:]), x.dtype)
        x = jnp.concatenate([past.astype(x.dtype), x], axis=1)
        cache.record(x[:, -CACHE_T:])
        return self(x)


class Conv2d(nnx.Module):
    """Conv2d applied to every frame of `[B, T, H, W, C]`; kernel `[kh, kw, C, O]`; explicit padding."""

    def __init__(self, din: int, dout: int, kernel: int, config: WanVAEConfig, rngs: nnx.Rngs, stride=1, padding=0):
        self.stride = stride
        self.padding = ((padding, padding),) * 2 if isinstance(padding, int) else tuple(padding)
        self.dtype = config.compute_dtype
        init = nnx.initializers.variance_scaling(1.0, "fan_in", "uniform", in_axis=(0, 1, 2), out_axis=3)
        self.kernel = _param(rngs, init, (kernel, kernel, din, dout), config)
        self.bias = _param(rngs, nnx.initializers.zeros_init(), (dout,), config)

    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.kernel[...].astype(self.dtype)
        y = _conv_frames(x.astype(self.dtype), kernel, self.stride, self.padding)
        return y + self.bias[...].astype(self.dtype)


class RMSNorm(nnx.Module):
    """`x / max(|x|_2, 1e-12) * sqrt(C) * gamma` over channels, in float32 (WanRMS_norm: F.normalize)."""

    def __init__(self, dim: int, config: WanVAEConfig, rngs: nnx.Rngs):
        self.gamma = _param(rngs, nnx.initializers.ones_init(), (dim,), config)

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        norm = jnp.sqrt(jnp.sum(jnp.square(x32), axis=-1, keepdims=True))
        y = x32 / jnp.maximum(norm, 1e-12) * math.sqrt(x.shape[-1]) * self.gamma[...].astype(jnp.float32)
        return y.astype(x.dtype)


class ResidualBlock(nnx.Module):
    """`shortcut(x) + conv2(silu(norm2(conv1(silu(norm1(x))))))`, both convs causal and cached."""

    def __init__(self, din: int, dout: int, config: WanVAEConfig, rngs: nnx.Rngs):
        self.norm1 = RMSNorm(din, config, rngs)
        self.conv1 = Conv3d(din, dout, 3, config, rngs)
        self.norm2 = RMSNorm(dout, config, rngs)
        self.conv2 = Conv3d(dout, dout, 3, config, rngs)
        self.conv_shortcut = Conv3d(din, dout, 1, config, rngs) if din != dout else None

    def __call__(self, x: jax.Array, cache: FeatureCache) -> jax.Array:
        shortcut = x if self.conv_shortcut is None else self.conv_shortcut(x)
        x = self.conv1.causal(jax.nn.silu(self.norm1(x)), cache)
        x = self.conv2.causal(jax.nn.silu(self.norm2(x)), cache)
        return x + shortcut


class AttentionBlock(nnx.Module):
    """Single-head self-attention over the `H*W` positions of each frame, with a residual."""

    def __init__(self, dim: int, config: WanVAEConfig, rngs: nnx.Rngs):
        self.norm = RMSNorm(dim, config, rngs)
        self.to_qkv = Conv2d(dim, 3 * dim, 1, config, rngs)
        self.proj = Conv2d(dim, dim, 1, config, rngs)
        self.attention = config.resolved_attention()

    def __call__(self, x: jax.Array) -> jax.Array:
        b, t, h, w, _ = x.shape
        q, k, v = (
            einops.rearrange(a, "b t h w c -> (b t) (h w) 1 c") for a in jnp.split(self.to_qkv(self.norm(x)), 3, -1)
        )
        out = attention(q, k, v, config=self.attention)
        return x + self.proj(einops.rearrange(out, "(b t) (h w) 1 c -> b t h w c", b=b, t=t, h=h, w=w))


class MidBlock(nnx.Module):
    def __init__(self, dim: int, config: WanVAEConfig, rngs: nnx.Rngs):
        self.resnets = nnx.List([ResidualBlock(dim, dim, config, rngs) for _ in range(2)])
        self.attention = AttentionBlock(dim, config, rngs)

    def __call__(self, x: jax.Array, cache: FeatureCache) -> jax.Array:
        return self.resnets[1](self.attention(self.resnets[0](x, cache)), cache)


class Resample(nnx.Module):
    """2x spatial up/down-sampling per frame; the `*3d` modes add the reference's cached time path.

    - upsample: nearest x2, then a 3x3 conv (to `dout` channels); `upsample3d` first doubles the frames.
    - downsample: zero-pad right/bottom by 1, then a 3x3 stride-2 conv; `downsample3d` then halves them.
    """

    MODES = ("upsample2d", "upsample3d", "downsample2d", "downsample3d")

    def __init__(self, dim: int, mode: str, config: WanVAEConfig, rngs: nnx.Rngs, dout: int | None = None):
        if mode not in self.MODES:
            raise ValueError(f"resample mode {mode!r} is not one of {self.MODES}")
        self.mode = mode
        if mode.startswith("up"):
            self.conv = Conv2d(dim, dout, 3, config, rngs, padding=1)
        else:
            self.conv = Conv2d(dim, dim, 3, config, rngs, stride=2, padding=((0, 1), (0, 1)))
        if mode == "upsample3d":
            self.time_conv = Conv3d(dim, 2 * dim, (3, 1, 1), config, rngs)
        elif mode == "downsample3d":
            self.time_conv = Conv3d(dim, dim, (3, 1, 1), config, rngs, time_stride=2)
        else:
            self.time_conv = None

    def __call__(self, x: jax.Array, cache: FeatureCache) -> jax.Array:
        if self.mode == "upsample3d":
            x = self._double_frames(x, cache)
        if self.mode.startswith("up"):
            x = jnp.repeat(jnp.repeat(x, 2, axis=2), 2, axis=3)  # nearest-exact at scale 2
        x = self.conv(x)
        if self.mode == "downsample3d":
            x = self._halve_frames(x, cache)
        return x

    def _double_frames(self, x: jax.Array, cache: FeatureCache) -> jax.Array:
        """`[B, T, ...]` -> `[B, 2T, ...]`; on the first chunk frame 0 passes unchanged (the reference's "Rep")."""
        past = cache.previous()
        if past is None:
            cache.record(jnp.zeros((x.shape[0], CACHE_T, *x.shape[2:]), x.dtype))
            return x
        x = jnp.concatenate([past.astype(x.dtype), x], axis=1)
        cache.record(x[:, -CACHE_T:])
        return einops.rearrange(self.time_conv(x), "b t h w (two c) -> b (t two) h w c", two=2)

    def _halve_frames(self, x: jax.Array, cache: FeatureCache) -> jax.Array:
        """`[B, T, ...]` -> `[B, T/2, ...]` with the last frame of the previous chunk in front; first chunk as is."""
        past = cache.previous()
        cache.record(x[:, -1:])
        if past is None:
            return x
        return self.time_conv(jnp.concatenate([past.astype(x.dtype), x], axis=1))


def avg_down(x: jax.Array, dout: int, factor_t: int, factor_s: int) -> jax.Array:
    """Wan2.2's AvgDown3D shortcut: space/time to channels, then the mean of groups of channels.

    `[B, T, H, W, C]` -> `[B, ceil(T / ft), H / fs, W / fs, dout]`; time is zero-padded in front.
    """
    pad = -x.shape[1] % factor_t
    x = jnp.pad(x, [(0, 0), (pad, 0), (0, 0), (0, 0), (0, 0)])
    x = einops.rearrange(x, "b (t a) (h p) (w q) c -> b t h w (c a p q)", a=factor_t, p=factor_s, q=factor_s)
    return x.reshape(*x.shape[:-1], dout, -1).mean(-1)


def dup_up(x: jax.Array, dout: int, factor_t: int, factor_s: int, first_chunk: bool) -> jax.Array:
    """Wan2.2's DupUp3D shortcut: repeat channels, then channels to space/time (inverse layout of `avg_down`).

    `[B, T, H, W, C]` -> `[B, T * ft, H * fs, W * fs, dout]`, less the first `ft - 1` frames on the first chunk.
    """
    repeats = dout * factor_t * factor_s * factor_s // x.shape[-1]
    x = jnp.repeat(x, repeats, axis=-1)
    x = einops.rearrange(x, "b t h w (c a p q) -> b (t a) (h p) (w q) c", a=factor_t, p=factor_s, q=factor_s)
    return x[:, factor_t - 1 :] if first_chunk else x


class DownBlock(nnx.Module):
    """One encoder level: residual blocks, then a downsampler (every level but the last).

    Wan2.2 adds the AvgDown3D shortcut of the level's input.
    """

    def __init__(self, din: int, dout: int, temporal: bool, down: bool, config: WanVAEConfig, rngs: nnx.Rngs):
        n = config.num_res_blocks
        self.resnets = nnx.List([ResidualBlock(din if j == 0 else dout, dout, config, rngs) for j in range(n)])
        mode = "downsample3d" if temporal else "downsample2d"
        self.downsampler = Resample(dout, mode, config, rngs) if down else None
        self.dout = dout
        self.shortcut_factors = (2 if temporal else 1, 2 if down else 1) if config.is_residual else None

    def __call__(self, x: jax.Array, cache: FeatureCache) -> jax.Array:
        y = x
        for resnet in self.resnets:
            y = resnet(y, cache)
        if self.downsampler is not None:
            y = self.downsampler(y, cache)
        if self.shortcut_factors is not None:
            y = y + avg_down(x, self.dout, *self.shortcut_factors).astype(y.dtype)
        return y


class UpBlock(nnx.Module):
    """One decoder level: `num_res_blocks + 1` residual blocks, then an upsampler (every level but the last).

    Wan2.1's upsamplers halve the channels; Wan2.2's keep them and add the DupUp3D shortcut of the input.
    """

    def __init__(self, din: int, dout: int, temporal: bool, up: bool, config: WanVAEConfig, rngs: nnx.Rngs):
        n = config.num_res_blocks + 1
        self.resnets = nnx.List([ResidualBlock(din if j == 0 else dout, dout, config, rngs) for j in range(n)])
        mode = "upsample3d" if temporal else "upsample2d"
        upsample_out = dout if config.is_residual else dout // 2
        self.upsampler = Resample(dout, mode, config, rngs, dout=upsample_out) if up else None
        self.dout = dout
        self.shortcut_factors = (2 if temporal else 1, 2) if config.is_residual and up else None

    def __call__(self, x: jax.Array, cache: FeatureCache) -> jax.Array:
        first_chunk = cache.first
        y = x
        for resnet in self.resnets:
            y = resnet(y, cache)
        if self.upsampler is not None:
            y = self.upsampler(y, cache)
        if self.shortcut_factors is not None:
            y = y + dup_up(x, self.dout, *self.shortcut_factors, first_chunk).astype(y.dtype)
        return y


class Encoder(nnx.Module):
    """`[B, T, H, W, in_channels]` -> `[B, T', H / 2^(L-1), W / 2^(L-1), 2 z]` for one chunk."""

    def __init__(self, config: WanVAEConfig, rngs: nnx.Rngs):
        dims = [config.base_dim * m for m in (1, *config.dim_mult)]
        last = len(config.dim_mult) - 1
        self.conv_in = Conv3d(config.in_channels, dims[0], 3, config, rngs)
        self.down_blocks = nnx.List(
            [
                DownBlock(dims[i], dims[i + 1], i < last and config.temporal_downsample[i], i < last, config, rngs)
                for i in range(last + 1)
            ]
        )
        self.mid_block = MidBlock(dims[-1], config, rngs)
        self.norm_out = RMSNorm(dims[-1], config, rngs)
        self.conv_out = Conv3d(dims[-1], 2 * config.z_dim, 3, config, rngs)

    def __call__(self, x: jax.Array, cache: FeatureCache) -> jax.Array:
        x = self.conv_in.causal(x, cache)
        for block in self.down_blocks:
            x = block(x, cache)
        x = self.mid_block(x, cache)
        return self.conv_out.causal(jax.nn.silu(self.norm_out(x)), cache)


class Decoder(nnx.Module):
    """`[B, t, h, w, z]` -> `[B, T, h * 2^(L-1), w * 2^(L-1), out_channels]` for one chunk."""

    def __init__(self, config: WanVAEConfig, rngs: nnx.Rngs):
        dims = [config.decoder_dim * m for m in (config.dim_mult[-1], *reversed(config.dim_mult))]
        temporal_upsample = tuple(reversed(config.temporal_downsample))
        last = len(config.dim_mult) - 1
        self.conv_in = Conv3d(config.z_dim, dims[0], 3, config, rngs)
        self.mid_block = MidBlock(dims[0], config, rngs)
        blocks = []
        for i in range(last + 1):
            # Wan2.1's upsamplers halved the previous level's channels.
            din = dims[i] // 2 if i > 0 and not config.is_residual else dims[i]
            up = i < last
            blocks.append(UpBlock(din, dims[i + 1], up and temporal_upsample[i], up, config, rngs))
        self.up_blocks = nnx.List(blocks)
        self.norm_out = RMSNorm(dims[-1], config, rngs)
        self.conv_out = Conv3d(dims[-1], config.out_channels, 3, config, rngs)

    def __call__(self, x: jax.Array, cache: FeatureCache) -> jax.Array:
        x = self.conv_in.causal(x, cache)
        x = self.mid_block(x, cache)
        for block in self.up_blocks:
            x = block(x, cache)
        return self.conv_out.causal(jax.nn.silu(self.norm_out(x)), cache)


def patchify(video: jax.Array, p: int) -> jax.Array:
    """`[B, F, H, W, C]` -> `[B, F, H/p, W/p, C p p]`, channel order `(c, w-offset, h-offset)` as Wan2.2's."""
    return einops.rearrange(video, "b f (h q) (w r) c -> b f h w (c r q)", q=p, r=p)


def unpatchify(x: jax.Array, p: int) -> jax.Array:
    return einops.rearrange(x, "b f h w (c r q) -> b f (h q) (w r) c", q=p, r=p)


def _time_chunks(total: int, size: int) -> list[slice]:
    """`[0:1]`, then `size` at a time: the reference's chunking when `size` is 4 (encode) or 1 (decode)."""
    return [slice(0, 1)] + [slice(start, min(start + size, total)) for start in range(1, total, size)]


class WanVAE(nnx.Module):
    """The Wan video VAE. `encode` -> normalised latents, `decode` -> video in [-1, 1].

    Shapes (s = `config.spatial_compression`: 8 for Wan2.1, 16 for Wan2.2; temporal compression 4):
    video `[B, 1 + 4k, H, W, 3]` with H, W multiples of s (the latent grid H/s x W/s may be odd),
    latents `[B, 1 + k, H/s, W/s, z_dim]`. Other frame counts or sizes raise ValueError: the reference
    silently drops trailing frames, and sizes off the grid come back a different size.
    """

    def __init__(self, config: WanVAEConfig, *, rngs: nnx.Rngs):
        self.config = config
        self.encoder = Encoder(config, rngs)
        self.quant_conv = Conv3d(2 * config.z_dim, 2 * config.z_dim, 1, config, rngs)
        self.post_quant_conv = Conv3d(config.z_dim, config.z_dim, 1, config, rngs)
        self.decoder = Decoder(config, rngs)

    # One jit-compiled chunk each; `cache` None on the first chunk.
    def encode_chunk(self, frames: jax.Array, cache: tuple[jax.Array, ...] | None):
        """Pixels `[B, T, H, W, C]` (T = 1 first, then a multiple of 4) -> (moments `[B, T', h, w, 2z]`, cache)."""
        features = FeatureCache(cache)
        x = patchify(frames.astype(self.config.compute_dtype), self.config.patch_size)
        moments = self.quant_conv(self.encoder(x, features))
        return moments.astype(jnp.float32), features.entries()

    def decode_chunk(self, z: jax.Array, cache: tuple[jax.Array, ...] | None):
        """Un-normalised latents `[B, t, h, w, z]` (t = 1 first) -> (pixels in [-1, 1], cache)."""
        features = FeatureCache(cache)
        x = self.decoder(self.post_quant_conv(z.astype(self.config.compute_dtype)), features)
        video = unpatchify(x, self.config.patch_size).astype(jnp.float32)
        return jnp.clip(video, -1.0, 1.0), features.entries()

    def encode_moments(self, video, *, chunk_frames: int = 4, progress: bool = False) -> tuple[jax.Array, jax.Array]:
        """Posterior `(mu, logvar)`, un-normalised, each `[B, 1 + k, H/s, W/s, z]` float32.

        `video` `[B, 1 + 4k, H, W, 3]` in [-1, 1] (numpy or jax; numpy goes to the device chunk by chunk).
        `chunk_frames` (a multiple of 4) frames go through each step after the first frame; any value
        gives the same result. `progress` shows a progress bar over the chunks.
        """
        self._check_video(video, chunk_frames)
        chunks = _time_chunks(video.shape[1], chunk_frames)
        moments = _run_chunks(_encode_step, self, video, chunks, "VAE encode", progress)
        return moments[..., : self.config.z_dim], moments[..., self.config.z_dim :]

    def encode(self, video, *, chunk_frames: int = 4, progress: bool = False) -> jax.Array:
        """Normalised latents `(mu - mean) / std` `[B, 1 + k, H/s, W/s, z]` (the posterior mode, as the
        Wan pipelines use)."""
        return self.normalize(self.encode_moments(video, chunk_frames=chunk_frames, progress=progress)[0])

    def decode(self, latents, *, chunk_latents: int = 1, progress: bool = False) -> jax.Array:
        """Normalised latents `[B, f, h, w, z]` -> video `[B, 1 + 4 (f - 1), h s, w s, 3]` in [-1, 1], float32.

        `chunk_latents` latent frames go through each step after the first; any value gives the same result.
        """
        if latents.ndim != 5 or latents.shape[-1] != self.config.z_dim:
            raise ValueError(f"latents must be [B, F, H, W, {self.config.z_dim}], got shape {tuple(latents.shape)}")
        if chunk_latents < 1:
            raise ValueError(f"chunk_latents must be at least 1, got {chunk_latents}")
        z = self.denormalize(jnp.asarray(latents))
        return _run_chunks(_decode_step, self, z, _time_chunks(z.shape[1], chunk_latents), "VAE decode", progress)

    def normalize(self, mu: jax.Array) -> jax.Array:
        mean, std = (jnp.asarray(v, jnp.float32) for v in (self.config.latents_mean, self.config.latents_std))
        return (mu.astype(jnp.float32) - mean) / std

    def denormalize(self, latents: jax.Array) -> jax.Array:
        mean, std = (jnp.asarray(v, jnp.float32) for v in (self.config.latents_mean, self.config.latents_std))
        return latents.astype(jnp.float32) * std + mean

    def _check_video(self, video, chunk_frames: int) -> None:
        cfg = self.config
        s, t = cfg.spatial_compression, cfg.temporal_compression
        if video.ndim != 5 or video.shape[-1] != cfg.video_channels:
            raise ValueError(f"video must be [B, F, H, W, {cfg.video_channels}], got shape {tuple(video.shape)}")
        _, frames, height, width, _ = video.shape
        if (frames - 1) % t:
            raise ValueError(f"the VAE encodes 1 + {t}k frames; got {frames}")
        if height % s or width % s:
            raise ValueError(f"height and width must be multiples of {s}; got {height}x{width}")
        if chunk_frames < t or chunk_frames % t:
            raise ValueError(f"chunk_frames must be a positive multiple of {t}, got {chunk_frames}")


# The chunk steps: compiled once per chunk shape (first chunk, later chunks), never per video length.
# The cache is donated: each step's history replaces the previous one in place.
@functools.partial(jax.jit, static_argnums=0, donate_argnums=2)
def _encode_step(graphdef, state, cache, frames):
    return nnx.merge(graphdef, state).encode_chunk(frames, cache)


@functools.partial(jax.jit, static_argnums=0, donate_argnums=2)
def _decode_step(graphdef, state, cache, latents):
    return nnx.merge(graphdef, state).decode_chunk(latents, cache)


def _run_chunks(step, vae: WanVAE, x, chunks: list[slice], desc: str, progress: bool) -> jax.Array:
    """`step` over the time chunks of `x`, the cache carried from each to the next; outputs concatenated."""
    graphdef, state = nnx.split(vae)
    cache, outputs = None, []
    for chunk in tqdm(chunks, desc=desc, unit="chunk", disable=not progress, leave=False):
        out, cache = step(graphdef, state, cache, x[:, chunk])
        if progress:  # so that the bar shows computed chunks, not dispatched ones
            out.block_until_ready()
        outputs.append(out)
    return jnp.concatenate(outputs, axis=1)


def load_vae(path, mesh: jax.sharding.Mesh | None = None, **runtime: Any) -> WanVAE:
    """A `WanVAE` from a converted weights directory (convert_weights/wan_vae.py), parameters on `mesh`
    (replicated) or the default device.

    `runtime` overrides execution fields (`dtype`, `conv_impl`, `attention`).
    """
    from mv2v_jax.models.weights import load_module, read_config

    arch = dict(read_config(path)["architecture"])
    wrong = sorted(set(runtime) & set(ARCH_FIELDS))
    if wrong:
        raise ValueError(f"{wrong} are fixed by the weights in {path}; only run-time fields can be overridden")
    config = WanVAEConfig.from_config(arch | runtime)
    return load_module(path, lambda: WanVAE(config, rngs=nnx.Rngs(0)), mesh)
