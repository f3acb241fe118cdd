"""DINOv2 (ViT-S/B/L/g 14, optionally with register tokens) in Flax NNX, its preprocessing, and frame embeddings.

Numerically transformers' `Dinov2Model` / `Dinov2WithRegistersModel` (docs/models.md, "DINOv2"): a
stride-14 patch embedding, the CLS token, learned position embeddings resized to the input's patch
grid, register tokens inserted after the position embeddings (`[CLS, registers, patches]`), pre-norm
blocks with LayerScale (`x += ls1 * Attn(LN1(x))`, `x += ls2 * MLP(LN2(x))`; MLP = GELU(erf) or, for
ViT-g, SwiGLU), and a final LayerNorm. `pooler_output` is the CLS token after that LayerNorm.

Position-embedding resizing is torch's `F.interpolate(mode="bicubic", align_corners=False)`, as an
explicit resampling matrix: `Dinov2Model` uses torch's plain bicubic (Keys a = -0.75, borders clamped),
`Dinov2WithRegistersModel` passes `antialias=True`, which is PIL's bicubic (a = -0.5, support widened when
shrinking, weights renormalised at the borders). `jax.image.resize(method="cubic")` agrees with the
antialiased mode (~1e-6) but not with the plain one, which most DINOv2 checkpoints use (differences of
0.2 to 1.6 on unit-variance inputs; tests/test_dinov2.py measures it), hence the matrices.

`preprocess` is the reference's `BitImageProcessor` as DINOv2 configures it (resize the shortest edge to
256 with PIL's bicubic, centre-crop 224, /255, ImageNet mean/std) with PIL's 8-bit resampling done in
integer arithmetic exactly as Pillow does it (22-bit fixed-point taps, horizontal pass then vertical,
rounding to uint8 in between), so the cropped pixels equal Pillow's bit for bit.

`embed_frames` is what retrieval uses: L2-normalised `pooler_output` per frame.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from typing import Any, NamedTuple

import einops
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mv2v_jax.config import dataclass_from_config
from mv2v_jax.models.layers import DTYPES, check_dtypes, compute_dtype, layer_norm, param
from mv2v_jax.parallel.mesh import constrain

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclasses.dataclass(frozen=True)
class Dinov2Config:
    """Architecture (transformers' names where they exist) and execution switches. Defaults are ViT-B/14."""

    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    use_swiglu_ffn: bool = False
    patch_size: int = 14
    image_size: int = 518  # the position-embedding grid is image_size // patch_size (37) per side
    num_register_tokens: int = 0
    interpolate_antialias: bool = False  # True for the registers models (torch's antialiased bicubic)
    use_mask_token: bool = True
    qkv_bias: bool = True
    layer_norm_eps: float = 1e-6
    param_dtype: str = "float32"
    dtype: str = "auto"  # compute dtype; "auto": float32 on CPU, bfloat16 on accelerators

    def __post_init__(self):
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size={self.hidden_size} is not divisible by num_heads={self.num_heads}")
        check_dtypes(self)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Dinov2Config:
        """From an ml_collections ConfigDict / dict; an unknown key is an error that names it."""
        return dataclass_from_config(cls, config, "DINOv2")

    @property
    def compute_dtype(self):
        return compute_dtype(self.dtype)

    @property
    def mlp_dim(self) -> int:
        """MLP width; SwiGLU keeps two thirds of it, rounded up to a multiple of 8 (4096 for ViT-g)."""
        width = int(self.hidden_size * self.mlp_ratio)
        return (int(width * 2 / 3) + 7) // 8 * 8 if self.use_swiglu_ffn else width

    @property
    def position_grid(self) -> int:
        return self.image_size // self.patch_size


ARCH_FIELDS = tuple(f.name for f in dataclasses.fields(Dinov2Config) if f.name != "dtype")

# -- resampling weights ----------------------------------------------------------------------------


def _keys_cubic(x: np.ndarray, a: float) -> np.ndarray:
    """Keys' cubic convolution kernel with parameter `a`."""
    x = np.abs(x)
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((x - 5) * x + 8) * x * a - 4 * a
    return np.where(x < 1, near, np.where(x < 2, far, 0.0))


def bicubic_matrix(in_size: int, out_size: int) -> np.ndarray:
    """torch's bicubic resize (align_corners=False, no antialias) as a `[out, in]` float64 matrix.

    Source coordinate `(i + 0.5) * in/out - 0.5`, four taps with Keys a = -0.75, out-of-range taps clamped
    to the border pixel.
    """
    src = (np.arange(out_size) + 0.5) * (in_size / out_size) - 0.5
    base = np.floor(src)
    t = src - base
    matrix = np.zeros((out_size, in_size))
    for offset in (-1, 0, 1, 2):
        index = np.clip(base + offset, 0, in_size - 1).astype(int)
        np.add.at(matrix, (np.arange(out_size), index), _keys_cubic(t - offset, -0.75))
    return matrix


def antialiased_bicubic_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """PIL's bicubic resampling taps (torch's `antialias=True` computes the same): `(first [out], weights [out, k])`.

    Output `i` is `sum_j weights[i, j] * in[first[i] + j]`. Keys a = -0.5, the kernel widened by the
    shrink factor, taps cut at the borders and renormalised (Pillow's Resample.c `precompute_coeffs`).
    """
    scale = in_size / out_size
    filter_scale = max(scale, 1.0)
    support = 2.0 * filter_scale
    size = math.ceil(support) * 2 + 1
    center = (np.arange(out_size) + 0.5) * scale
    first = np.maximum((center - support + 0.5).astype(int), 0)  # C's (int) truncation; negatives clamp to 0
    last = np.minimum((center + support + 0.5).astype(int), in_size)
    j = np.arange(size)
    weights = _keys_cubic((j[None, :] + first[:, None] - center[:, None] + 0.5) / filter_scale, -0.5)
    weights = np.where(j[None, :] < (last - first)[:, None], weights, 0.0)
    total = weights.sum(1, keepdims=True)
    return first, np.divide(weights, total, out=np.zeros_like(weights), where=total != 0)


def antialiased_bicubic_matrix(in_size: int, out_size: int) -> np.ndarray:
    """`antialiased_bicubic_taps` as a dense `[out, in]` matrix."""
    first, weights = antialiased_bicubic_taps(in_size, out_size)
    matrix = np.zeros((out_size, in_size + weights.shape[1]))
    for j in range(weights.shape[1]):
        matrix[np.arange(out_size), first + j] = weights[:, j]
    return matrix[:, :in_size]


def resize_position_embeddings(table: jax.Array, grid: tuple[int, int], antialias: bool) -> jax.Array:
    """`[n*n, D]` patch position embeddings on an n x n grid -> `[h*w, D]` on `grid`, in float32."""
    n = math.isqrt(table.shape[0])
    h, w = grid
    if (h, w) == (n, n):
        return table
    resize = antialiased_bicubic_matrix if antialias else bicubic_matrix
    rows, cols = (jnp.asarray(resize(n, size), jnp.float32) for size in (h, w))
    square = einops.rearrange(table.astype(jnp.float32), "(i j) d -> i j d", i=n)
    out = jnp.einsum("hi,wj,ijd->hwd", rows, cols, square, precision=jax.lax.Precision.HIGHEST)
    return einops.rearrange(out, "h w d -> (h w) d").astype(table.dtype)


# -- preprocessing ---------------------------------------------------------------------------------

_PRECISION_BITS = 22  # Pillow's fixed point for 8-bit images: 32 - 8 - 2


def _fixed_point(weights: np.ndarray) -> np.ndarray:
    """Pillow's `normalize_coeffs_8bpc`: round half away from zero to 22-bit fixed point."""
    scaled = weights * (1 << _PRECISION_BITS)
    return np.trunc(scaled + np.where(scaled < 0, -0.5, 0.5)).astype(np.int32)


def _resample_axis(pixels: jax.Array, axis: int, in_size: int, out_size: int, keep: slice) -> jax.Array:
    """One Pillow 8-bit bicubic pass along `axis` of int32 pixels, only the outputs in `keep`."""
    first, weights = antialiased_bicubic_taps(in_size, out_size)
    first, taps = first[keep], _fixed_point(weights[keep])
    acc = jnp.full((), 1 << (_PRECISION_BITS - 1), jnp.int32)
    for j in range(taps.shape[1]):
        if not taps[:, j].any():
            continue
        index = jnp.asarray(np.minimum(first + j, in_size - 1))
        shape = [1] * pixels.ndim
        shape[axis] = -1
        acc = acc + jnp.take(pixels, index, axis=axis) * jnp.asarray(taps[:, j]).reshape(shape)
    return jnp.clip(acc >> _PRECISION_BITS, 0, 255)


def resized_size(height: int, width: int, shortest_edge: int) -> tuple[int, int]:
    """transformers' `get_resize_output_image_size(default_to_square=False)`: the long side truncated."""
    if width <= height:
        return int(shortest_edge * height / width), shortest_edge
    return shortest_edge, int(shortest_edge * width / height)


def preprocess(
    frames: jax.Array | np.ndarray,
    shortest_edge: int = 256,
    crop_size: int = 224,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
) -> jax.Array:
    """uint8 frames `[N, H, W, 3]` -> normalised float32 `[N, crop, crop, 3]`, as DINOv2's BitImageProcessor.

    Resize so the shortest edge is `shortest_edge` (Pillow bicubic, exact), centre-crop `crop_size`
    (top = (h - crop) // 2, like transformers), scale to [0, 1], subtract `mean`, divide by `std`.
    """
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected uint8 frames [N, H, W, 3], got {frames.dtype} {tuple(frames.shape)}")
    _, height, width, _ = frames.shape
    new_h, new_w = resized_size(height, width, shortest_edge)
    if min(new_h, new_w) < crop_size:
        raise ValueError(f"crop {crop_size} is larger than the resized frame {(new_h, new_w)}")
    top, left = (new_h - crop_size) // 2, (new_w - crop_size) // 2
    pixels = jnp.asarray(frames).astype(jnp.int32)
    # Pillow resizes horizontally first, then vertically, rounding to uint8 after each pass.
    pixels = _resample_axis(pixels, 2, width, new_w, slice(left, left + crop_size))
    pixels = _resample_axis(pixels, 1, height, new_h, slice(top, top + crop_size))
    scaled = pixels.astype(jnp.float32) / 255.0
    return (scaled - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


# -- model -----------------------------------------------------------------------------------------


TRUNC_NORMAL = nnx.initializers.truncated_normal(0.02)  # transformers' init (initializer_range 0.02)


def _linear(din: int, dout: int, axes, config: Dinov2Config, rngs: nnx.Rngs, use_bias: bool = True) -> nnx.Linear:
    return nnx.Linear(
        din,
        dout,
        use_bias=use_bias,
        dtype=config.compute_dtype,
        param_dtype=DTYPES[config.param_dtype],
        kernel_init=nnx.with_partitioning(TRUNC_NORMAL, axes, eager_sharding=False),
        bias_init=nnx.with_partitioning(nnx.initializers.zeros_init(), axes[1:], eager_sharding=False),
        rngs=rngs,
    )


class LayerNorm(nnx.Module):
    """LayerNorm with scale and bias, computed in float32 (two-pass variance, as torch)."""

    def __init__(self, config: Dinov2Config, rngs: nnx.Rngs):
        dtype = DTYPES[config.param_dtype]
        self.eps = config.layer_norm_eps
        self.scale = param(rngs, nnx.initializers.ones_init(), (config.hidden_size,), ("embed",), dtype)
        self.bias = param(rngs, nnx.initializers.zeros_init(), (config.hidden_size,), ("embed",), dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        return layer_norm(x, self.eps, self.scale[...], self.bias[...])


class Embeddings(nnx.Module):
    """Patch embedding, CLS token, resized position embeddings, register tokens."""

    def __init__(self, config: Dinov2Config, rngs: nnx.Rngs):
        d, p, dtype = config.hidden_size, config.patch_size, DTYPES[config.param_dtype]
        self.config = config
        self.patch_kernel = param(rngs, TRUNC_NORMAL, (p, p, 3, d), (None, None, "in", "embed"), dtype)
        self.patch_bias = param(rngs, nnx.initializers.zeros_init(), (d,), ("embed",), dtype)
        self.cls_token = param(rngs, TRUNC_NORMAL, (1, 1, d), (None, None, "embed"), dtype)
        if config.use_mask_token:
            self.mask_token = param(rngs, nnx.initializers.zeros_init(), (1, d), (None, "embed"), dtype)
        if config.num_register_tokens:
            shape = (1, config.num_register_tokens, d)
            self.register_tokens = param(rngs, TRUNC_NORMAL, shape, (None, None, "embed"), dtype)
        positions = 1 + config.position_grid**2
        self.position_embeddings = param(rngs, TRUNC_NORMAL, (1, positions, d), (None, None, "embed"), dtype)

    def __call__(self, pixels: jax.Array, bool_masked_pos: jax.Array | None = None) -> jax.Array:
        """`[B, H, W, 3]` -> `[B, 1 + R + (H/p)(W/p), D]` float32; a partial last patch row/column is dropped."""
        cfg, p = self.config, self.config.patch_size
        b, height, width, _ = pixels.shape
        h, w = height // p, width // p
        patches = einops.rearrange(pixels[:, : h * p, : w * p], "b (h p) (w q) c -> b (h w) (p q c)", p=p, q=p).astype(
            cfg.compute_dtype
        )
        kernel = self.patch_kernel[...].reshape(p * p * 3, -1).astype(cfg.compute_dtype)
        x = jnp.dot(patches, kernel, preferred_element_type=jnp.float32) + self.patch_bias[...].astype(jnp.float32)
        if bool_masked_pos is not None:
            if not cfg.use_mask_token:
                raise ValueError("bool_masked_pos needs a mask token; this config has use_mask_token=False")
            x = jnp.where(bool_masked_pos[..., None], self.mask_token[...].astype(jnp.float32), x)
        table = self.position_embeddings[...][0]
        positions = jnp.concatenate(
            [table[:1], resize_position_embeddings(table[1:], (h, w), cfg.interpolate_antialias)]
        ).astype(jnp.float32)
        cls = jnp.broadcast_to(self.cls_token[...].astype(jnp.float32), (b, 1, x.shape[-1]))
        x = jnp.concatenate([cls, x], axis=1) + positions
        if cfg.num_register_tokens:
            registers = jnp.broadcast_to(
                self.register_tokens[...].astype(jnp.float32), (b, *self.register_tokens.shape[1:])
            )
            x = jnp.concatenate([x[:, :1], registers, x[:, 1:]], axis=1)
        return x


class Attention(nnx.Module):
    def __init__(self, config: Dinov2Config, rngs: nnx.Rngs):
        d = config.hidden_size
        self.num_heads = config.num_heads
        self.query = _linear(d, d, ("embed", "heads"), config, rngs, config.qkv_bias)
        self.key = _linear(d, d, ("embed", "heads"), config, rngs, config.qkv_bias)
        self.value = _linear(d, d, ("embed", "heads"), config, rngs, config.qkv_bias)
        self.out = _linear(d, d, ("heads", "embed"), config, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        q, k, v = (
            einops.rearrange(f(x), "b n (h d) -> b n h d", h=self.num_heads) for f in (self.query, self.key, self.value)
        )
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32) / math.sqrt(q.shape[-1])
        probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
        return self.out(einops.rearrange(jnp.einsum("bhqk,bkhd->bqhd", probs, v), "b n h d -> b n (h d)"))


class MLP(nnx.Module):
    """`fc2(gelu(fc1(x)))` with exact (erf) GELU."""

    def __init__(self, config: Dinov2Config, rngs: nnx.Rngs):
        self.fc1 = _linear(config.hidden_size, config.mlp_dim, ("embed", "mlp"), config, rngs)
        self.fc2 = _linear(config.mlp_dim, config.hidden_size, ("mlp", "embed"), config, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.fc2(jax.nn.gelu(self.fc1(x), approximate=False))


class SwiGLU(nnx.Module):
    """`weights_out(silu(x W_gate) * (x W_up))`; `weights_in` holds [gate, up] as `[D, 2, F]`."""

    def __init__(self, config: Dinov2Config, rngs: nnx.Rngs):
        d, f, dtype = config.hidden_size, config.mlp_dim, DTYPES[config.param_dtype]
        self.dtype = config.compute_dtype
        self.weights_in_kernel = param(rngs, TRUNC_NORMAL, (d, 2, f), ("embed", None, "mlp"), dtype)
        self.weights_in_bias = param(rngs, nnx.initializers.zeros_init(), (2, f), (None, "mlp"), dtype)
        self.weights_out = _linear(f, d, ("mlp", "embed"), config, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.weights_in_kernel[...].astype(self.dtype)
        h = jnp.einsum("bnd,dgf->bngf", x.astype(self.dtype), kernel) + self.weights_in_bias[...].astype(self.dtype)
        return self.weights_out(jax.nn.silu(h[:, :, 0]) * h[:, :, 1])


class Dinov2Layer(nnx.Module):
    def __init__(self, config: Dinov2Config, rngs: nnx.Rngs):
        dtype = DTYPES[config.param_dtype]
        self.dtype = config.compute_dtype
        self.norm1 = LayerNorm(config, rngs)
        self.attention = Attention(config, rngs)
        self.layer_scale1 = param(rngs, nnx.initializers.ones_init(), (config.hidden_size,), ("embed",), dtype)
        self.norm2 = LayerNorm(config, rngs)
        self.mlp = SwiGLU(config, rngs) if config.use_swiglu_ffn else MLP(config, rngs)
        self.layer_scale2 = param(rngs, nnx.initializers.ones_init(), (config.hidden_size,), ("embed",), dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        """Residual stream `[B, N, D]` float32 in and out."""
        y = self.attention(self.norm1(x).astype(self.dtype)).astype(jnp.float32)
        x = x + y * self.layer_scale1[...].astype(jnp.float32)
        y = self.mlp(self.norm2(x).astype(self.dtype)).astype(jnp.float32)
        x = x + y * self.layer_scale2[...].astype(jnp.float32)
        return constrain(x, ("act_batch", "act_length", "act_embed"))


class Dinov2Output(NamedTuple):
    last_hidden_state: jax.Array  # [B, 1 + R + h*w, D], after the final LayerNorm
    pooler_output: jax.Array  # [B, D], the CLS token of last_hidden_state
    patch_tokens: jax.Array  # [B, h*w, D], last_hidden_state without CLS and registers


class Dinov2(nnx.Module):
    """The DINOv2 backbone: normalised images -> CLS and patch features."""

    def __init__(self, config: Dinov2Config, *, rngs: nnx.Rngs):
        self.config = config
        self.embeddings = Embeddings(config, rngs)

        @nnx.split_rngs(splits=config.num_layers)
        @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
        def make_layers(rngs: nnx.Rngs) -> Dinov2Layer:
            return Dinov2Layer(config, rngs)

        self.layers = make_layers(rngs)
        self.layernorm = LayerNorm(config, rngs)

    def __call__(self, pixels: jax.Array, bool_masked_pos: jax.Array | None = None) -> Dinov2Output:
        """`pixels` `[B, H, W, 3]` normalised as `preprocess` does; `bool_masked_pos` `[B, (H/p)(W/p)]` replaces
        those patches by the mask token. Outputs are float32."""
        x = constrain(self.embeddings(pixels, bool_masked_pos), ("act_batch", "act_length", "act_embed"))
        graphdef, layers = nnx.split(self.layers)

        def body(x, layer_state):
            return nnx.merge(graphdef, layer_state)(x), None

        x, _ = jax.lax.scan(body, x, layers)
        x = self.layernorm(x)
        return Dinov2Output(x, x[:, 0], x[:, 1 + self.config.num_register_tokens :])


@nnx.jit
def _embed(model: Dinov2, frames: jax.Array) -> jax.Array:
    cls = model(preprocess(frames)).pooler_output
    return cls / jnp.maximum(jnp.linalg.norm(cls, axis=-1, keepdims=True), 1e-12)


def embed_frames(model: Dinov2, frames: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """uint8 frames `[N, H, W, 3]` -> L2-normalised CLS embeddings `[N, D]` float32 (`preprocess` then the model).

    Runs `batch_size` frames at a time; the last batch is padded so one compiled program serves all.
    """
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected uint8 frames [N, H, W, 3], got {frames.dtype} {frames.shape}")
    out = []
    for start in range(0, len(frames), batch_size):
        batch = frames[start : start + batch_size]
        padded = np.concatenate([batch, np.zeros((batch_size - len(batch), *batch.shape[1:]), np.uint8)])
        out.append(np.asarray(_embed(model, jnp.asarray(padded)))[: len(batch)])
    return np.concatenate(out) if out else np.zeros((0, model.config.hidden_size), np.float32)


def load_dinov2(path: str | os.PathLike, mesh: jax.sharding.Mesh | None = None, **runtime: Any) -> Dinov2:
    """A `Dinov2` from a converted weights directory (convert_weights.dinov2), restored into `mesh`'s layout.

    `runtime` overrides execution fields (`dtype`).
    """
    from mv2v_jax.models.weights import load_module, read_config

    wrong = sorted(set(runtime) & set(ARCH_FIELDS))
    if wrong:
        raise ValueError(f"{wrong} are fixed by the weights in {path}; only run-time fields can be overridden")
    config = Dinov2Config.from_config(dict(read_config(path)["architecture"]) | dict(runtime))
    return load_module(path, lambda: Dinov2(config, rngs=nnx.Rngs(0)), mesh)
