"""The umT5 encoder (Wan's text encoder, umT5-XXL) in Flax NNX, and Wan's use of it.

Numerically transformers' `UMT5EncoderModel` and Wan's `T5Encoder` (Wan2.1 wan/modules/t5.py,
docs/models.md, "umT5 text encoder"): token embedding (not scaled), `num_layers` pre-norm blocks
`x += Attn(RMS(x))`, `x += FFN(RMS(x))`, a final RMS norm. umT5 specifics: every layer has its own
relative-position bias table (bidirectional buckets), attention scores are not scaled by 1/sqrt(d),
the FFN is gated-GELU(tanh) `fc2(fc1(x) * gelu_tanh(gate(x)))`, and the norm is T5's RMS norm (no mean
subtraction, no bias). Norms, softmax and the residual stream run in float32; matmuls in
`config.dtype`.

Wan's use (`encode_prompts`, `TextEncoder`): the states of a prompt's tokens, zero past its length,
`[B, 512, d_model]`; Wan cuts `last_hidden_state[:, :len]` and zero-pads back to 512.

Parameter names follow Wan's native checkpoint (`token_embedding`, `blocks.{norm1, attn, norm2, ffn}`,
`norm`); blocks are stacked on a leading layer axis and run with `lax.scan`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import einops
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mv2v_jax.config import dataclass_from_config
from mv2v_jax.models.layers import DTYPES, check_dtypes, compute_dtype, param
from mv2v_jax.models.text.prompt_cache import PromptCache
from mv2v_jax.models.text.tokenizer import UMT5Tokenizer
from mv2v_jax.parallel.mesh import constrain


@dataclasses.dataclass(frozen=True)
class UMT5Config:
    """Architecture (transformers' `UMT5Config` names) and execution switches. Defaults are umT5-XXL."""

    vocab_size: int = 256384
    d_model: int = 4096
    d_kv: int = 64
    d_ff: int = 10240
    num_heads: int = 64
    num_layers: int = 24
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    layer_norm_epsilon: float = 1e-6
    param_dtype: str = "float32"
    dtype: str = "auto"  # compute dtype; "auto": float32 on CPU, bfloat16 on accelerators

    def __post_init__(self):
        check_dtypes(self)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> UMT5Config:
        """From an ml_collections ConfigDict / dict; an unknown key is an error that names it."""
        return dataclass_from_config(cls, config, "umT5")

    @property
    def compute_dtype(self):
        return compute_dtype(self.dtype)


# Fields stored with converted weights; the others are run-time choices.
ARCH_FIELDS = tuple(f.name for f in dataclasses.fields(UMT5Config) if f.name != "dtype")


def relative_position_buckets(length: int, num_buckets: int, max_distance: int) -> np.ndarray:
    """Bidirectional T5 buckets of `key - query` for a `length`-token self-attention: int32 `[length, length]`.

    Half the buckets per sign; inside a half, distances below `max_exact = num_buckets // 4` are exact,
    larger ones are log-spaced up to `max_distance` and capped. Computed in float32 like the reference,
    so rounding at the bucket edges agrees.
    """
    rel = np.arange(length)[None, :] - np.arange(length)[:, None]
    half = num_buckets // 2
    max_exact = half // 2
    distance = np.abs(rel)
    log_ratio = np.log(np.maximum(distance, 1).astype(np.float32) / np.float32(max_exact))
    log_ratio = log_ratio / np.float32(math.log(max_distance / max_exact)) * np.float32(half - max_exact)
    large = np.minimum(max_exact + log_ratio.astype(np.int64), half - 1)
    return ((rel > 0) * half + np.where(distance < max_exact, distance, large)).astype(np.int32)


def _linear(din: int, dout: int, axes, std: float, config: UMT5Config, rngs: nnx.Rngs) -> nnx.Linear:
    """Bias-free linear layer with T5's normal init and logical axis names."""
    return nnx.Linear(
        din,
        dout,
        use_bias=False,
        dtype=config.compute_dtype,
        param_dtype=DTYPES[config.param_dtype],
        kernel_init=nnx.with_partitioning(nnx.initializers.normal(std), axes, eager_sharding=False),
        rngs=rngs,
    )


class RMSNorm(nnx.Module):
    """T5's layer norm: `x * rsqrt(mean(x^2) + eps) * weight` in float32, no mean subtraction, no bias."""

    def __init__(self, config: UMT5Config, rngs: nnx.Rngs, out_dtype=None):
        self.eps = config.layer_norm_epsilon
        self.out_dtype = out_dtype or config.compute_dtype
        init = nnx.initializers.ones_init()
        self.weight = param(rngs, init, (config.d_model,), ("embed",), DTYPES[config.param_dtype])

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.astype(jnp.float32)
        y = x * jax.lax.rsqrt(jnp.square(x).mean(-1, keepdims=True) + self.eps)
        return (y * self.weight[...].astype(jnp.float32)).astype(self.out_dtype)


class SelfAttention(nnx.Module):
    """Unscaled multi-head self-attention with a learned relative-position bias of its own."""

    def __init__(self, config: UMT5Config, rngs: nnx.Rngs):
        d, inner = config.d_model, config.num_heads * config.d_kv
        self.num_heads = config.num_heads
        # T5's (mesh TensorFlow) init: the missing 1/sqrt(d_kv) scaling lives in q's init.
        self.q = _linear(d, inner, ("embed", "heads"), (d * config.d_kv) ** -0.5, config, rngs)
        self.k = _linear(d, inner, ("embed", "heads"), d**-0.5, config, rngs)
        self.v = _linear(d, inner, ("embed", "heads"), d**-0.5, config, rngs)
        self.o = _linear(inner, d, ("heads", "embed"), inner**-0.5, config, rngs)
        shape = (config.relative_attention_num_buckets, config.num_heads)
        self.relative_bias = param(
            rngs, nnx.initializers.normal(d**-0.5), shape, (None, None), DTYPES[config.param_dtype]
        )

    def __call__(self, x: jax.Array, buckets: jax.Array, mask: jax.Array) -> jax.Array:
        """`x` `[B, L, D]`, `buckets` int `[L, L]`, `mask` bool `[B, L]` (False: padding key) -> `[B, L, D]`."""
        q, k, v = (einops.rearrange(f(x), "b l (h d) -> b l h d", h=self.num_heads) for f in (self.q, self.k, self.v))
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
        bias = jnp.take(self.relative_bias[...].astype(jnp.float32), buckets, axis=0)
        scores = scores + einops.rearrange(bias, "q k h -> h q k")
        scores = jnp.where(mask[:, None, None, :], scores, jnp.finfo(jnp.float32).min)
        probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
        out = jnp.einsum("bhqk,bkhd->bqhd", probs, v)
        return self.o(einops.rearrange(out, "b l h d -> b l (h d)"))


class GatedFeedForward(nnx.Module):
    """`fc2(fc1(x) * gelu_tanh(gate(x)))`; transformers' wi_1, wi_0 and wo."""

    def __init__(self, config: UMT5Config, rngs: nnx.Rngs):
        d, f = config.d_model, config.d_ff
        self.gate = _linear(d, f, ("embed", "mlp"), d**-0.5, config, rngs)
        self.fc1 = _linear(d, f, ("embed", "mlp"), d**-0.5, config, rngs)
        self.fc2 = _linear(f, d, ("mlp", "embed"), f**-0.5, config, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.fc2(self.fc1(x) * jax.nn.gelu(self.gate(x), approximate=True))


class UMT5Block(nnx.Module):
    def __init__(self, config: UMT5Config, rngs: nnx.Rngs):
        self.norm1 = RMSNorm(config, rngs)
        self.attn = SelfAttention(config, rngs)
        self.norm2 = RMSNorm(config, rngs)
        self.ffn = GatedFeedForward(config, rngs)

    def __call__(self, x: jax.Array, buckets: jax.Array, mask: jax.Array) -> jax.Array:
        """Residual stream `[B, L, D]` float32 in and out."""
        x = x + self.attn(self.norm1(x), buckets, mask).astype(jnp.float32)
        x = x + self.ffn(self.norm2(x)).astype(jnp.float32)
        return constrain(x, ("act_batch", "act_length", "act_embed"))


class UMT5Encoder(nnx.Module):
    """The umT5 encoder stack: token ids and attention mask -> hidden states."""

    def __init__(self, config: UMT5Config, *, rngs: nnx.Rngs):
        self.config = config
        self.token_embedding = param(
            rngs,
            nnx.initializers.normal(1.0),
            (config.vocab_size, config.d_model),
            (None, "embed"),
            DTYPES[config.param_dtype],
        )

        @nnx.split_rngs(splits=config.num_layers)
        @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
        def make_blocks(rngs: nnx.Rngs) -> UMT5Block:
            return UMT5Block(config, rngs)

        self.blocks = make_blocks(rngs)
        self.norm = RMSNorm(config, rngs, out_dtype=jnp.float32)

    def __call__(self, token_ids: jax.Array, attention_mask: jax.Array) -> jax.Array:
        """`token_ids` int `[B, L]`, `attention_mask` `[B, L]` (1: token, 0: padding) -> `[B, L, d_model]` float32.

        Like the reference, the states at padded positions are computed (they attend to the real tokens)
        but are not zeroed; `encode_tokens` zeroes them as Wan does.
        """
        cfg = self.config
        x = jnp.take(self.token_embedding[...], token_ids, axis=0).astype(jnp.float32)
        x = constrain(x, ("act_batch", "act_length", "act_embed"))
        buckets = jnp.asarray(
            relative_position_buckets(
                token_ids.shape[1], cfg.relative_attention_num_buckets, cfg.relative_attention_max_distance
            )
        )
        mask = attention_mask.astype(bool)
        graphdef, blocks = nnx.split(self.blocks)

        def body(x, block_state):
            return nnx.merge(graphdef, block_state)(x, buckets, mask), None

        x, _ = jax.lax.scan(body, x, blocks)
        return self.norm(x)


@nnx.jit
def _encode_zeroed(encoder: UMT5Encoder, token_ids: jax.Array, attention_mask: jax.Array) -> jax.Array:
    states = encoder(token_ids, attention_mask)
    return states * attention_mask[..., None].astype(states.dtype)


def encode_tokens(encoder: UMT5Encoder, token_ids, attention_mask) -> jax.Array:
    """umT5 states zeroed past each prompt's length (Wan's padding): `[B, L]` ids and mask -> `[B, L, d_model]`."""
    return _encode_zeroed(encoder, jnp.asarray(token_ids, jnp.int32), jnp.asarray(attention_mask, jnp.int32))


def encode_prompts(encoder: UMT5Encoder, tokenizer: UMT5Tokenizer, prompts: str | Sequence[str]) -> jax.Array:
    """Prompts -> `[B, text_len, d_model]` float32 (`[B, 512, 4096]` for Wan), zero past each prompt."""
    return encode_tokens(encoder, *tokenizer(prompts))


def load_umt5(path: str | os.PathLike, mesh: jax.sharding.Mesh | None = None, **runtime: Any) -> UMT5Encoder:
    """A `UMT5Encoder` from a converted weights directory (convert_weights.umt5), restored into `mesh`'s layout.

    `runtime` overrides execution fields (`dtype`).
    """
    from mv2v_jax.models.weights import load_module

    config = _config_of(path, runtime)
    return load_module(path, lambda: UMT5Encoder(config, rngs=nnx.Rngs(0)), mesh)


def _config_of(path, runtime: Mapping[str, Any]) -> UMT5Config:
    from mv2v_jax.models.weights import read_config

    wrong = sorted(set(runtime) & set(ARCH_FIELDS))
    if wrong:
        raise ValueError(f"{wrong} are fixed by the weights in {path}; only run-time fields can be overridden")
    return UMT5Config.from_config(dict(read_config(path)["architecture"]) | dict(runtime))


def encoder_identity(path: str | os.PathLike, **runtime: Any) -> str:
    """What the encoder's outputs depend on, without loading it: the weights directory's config.json (its
    architecture and the converter's fingerprint of the source tensors) and the compute dtype."""
    config = _config_of(path, runtime)
    digest = hashlib.sha256((Path(path) / "config.json").read_bytes())
    digest.update(jnp.dtype(config.compute_dtype).name.encode())
    return digest.hexdigest()


class TextEncoder:
    """What a pipeline holds for text: the tokenizer, an optional prompt cache, and umT5 loaded on first need.

    Calling it looks every prompt up in the cache first and loads the (costly) encoder only if one
    misses; the embeddings it computes are stored. Cached entries hold a prompt's real rows only.
    """

    def __init__(
        self,
        weights: str | os.PathLike,
        tokenizer: UMT5Tokenizer | str | os.PathLike,
        cache: PromptCache | str | os.PathLike | None = None,
        *,
        mesh: jax.sharding.Mesh | None = None,
        **runtime: Any,
    ):
        self.weights = Path(weights)
        self.tokenizer = tokenizer if isinstance(tokenizer, UMT5Tokenizer) else UMT5Tokenizer(tokenizer)
        self.cache = cache if cache is None or isinstance(cache, PromptCache) else PromptCache(cache)
        self.config = _config_of(weights, runtime)
        self.identity = encoder_identity(weights, **runtime)
        self._mesh, self._runtime = mesh, runtime
        self._encoder: UMT5Encoder | None = None

    @property
    def loaded(self) -> bool:
        return self._encoder is not None

    @property
    def encoder(self) -> UMT5Encoder:
        if self._encoder is None:
            self._encoder = load_umt5(self.weights, self._mesh, **self._runtime)
        return self._encoder

    def cache_keys(self, prompts: Sequence[str]) -> list[str]:
        return [
            PromptCache.key(
                p, tokenizer_id=self.tokenizer.identity, encoder_id=self.identity, text_len=self.tokenizer.text_len
            )
            for p in prompts
        ]

    def __call__(self, prompts: str | Sequence[str]) -> np.ndarray:
        """Prompts -> `[B, text_len, d_model]` float32, zero past each prompt's length."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        keys = self.cache_keys(prompts) if self.cache is not None else [None] * len(prompts)
        rows = [self.cache.get(k) if k is not None else None for k in keys]
        missing = [i for i, r in enumerate(rows) if r is None]
        if missing:
            ids, mask = self.tokenizer([prompts[i] for i in missing])
            states = np.asarray(encode_tokens(self.encoder, ids, mask))
            for j, i in enumerate(missing):
                rows[i] = states[j, : int(mask[j].sum())]
                if keys[i] is not None:
                    self.cache.put(keys[i], rows[i])
        out = np.zeros((len(prompts), self.tokenizer.text_len, self.config.d_model), np.float32)
        for i, r in enumerate(rows):
            out[i, : len(r)] = r
        return out
