"""The Wan2.1 / Wan2.2 diffusion transformer in Flax NNX.

Numerically the model of Wan's `WanModel` and diffusers' `WanTransformer3DModel`
(docs/models.md, "Wan DiT"): patch embedding, sinusoidal time embedding projected to six modulation
vectors, a text MLP, `num_layers` blocks (self-attention with RMSNorm on q/k across heads and 3D
RoPE; cross-attention to text; GELU-tanh FFN; scale/shift-table modulation), and an output head with
its own modulation. Norms, modulation and residual adds run in float32 as the reference keeps them;
matmuls run in `config.dtype`.

The model runs on a packed `TokenSequence` (sequence.py) and returns only the target tokens,
unpatchified; `forward_video(latents, timestep, context)` is the plain backbone on one video. Memory
conditioning plugs in without forking this file through two hook points: `BlockAdapter`s scanned
with the blocks (inside self-attention) and `BlockHook`s between blocks.

Blocks are stacked along a leading layer axis (`nnx.vmap` at init) and run with `lax.scan`
(`config.scan_layers`) or an unrolled loop, optionally rematerialised (`config.remat`).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import einops
import jax
import jax.numpy as jnp
from flax import nnx

from mv2v_jax.config import dataclass_from_config
from mv2v_jax.models.layers import DTYPES, check_dtypes, compute_dtype, layer_norm, param, partitioned
from mv2v_jax.models.wan.attention import AttentionConfig, attention
from mv2v_jax.models.wan.rope import Rope3D, apply_rope
from mv2v_jax.models.wan.sequence import BlockAdapter, BlockHook, BlockState, TokenSequence
from mv2v_jax.parallel.mesh import axis_size, constrain

REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "dots_all": jax.checkpoint_policies.dots_saveable,
}


@dataclasses.dataclass(frozen=True)
class WanDiTConfig:
    """Architecture and execution switches. Defaults are Wan2.1-T2V-1.3B."""

    dim: int = 1536
    ffn_dim: int = 8960
    num_heads: int = 12
    num_layers: int = 30
    in_channels: int = 16
    out_channels: int = 16
    patch_size: tuple[int, int, int] = (1, 2, 2)
    text_dim: int = 4096
    freq_dim: int = 256
    eps: float = 1e-6
    cross_attn_norm: bool = True
    rope_theta: float = 10000.0
    rope_max_len: int = 1024
    param_dtype: str = "float32"
    dtype: str = "auto"  # compute dtype; "auto": float32 on CPU, bfloat16 on accelerators
    attention: AttentionConfig = dataclasses.field(default_factory=AttentionConfig)
    scan_layers: bool = True
    remat: str = "none"  # one of REMAT_POLICIES
    # Tokens per device in one FFN step (0: all at once): bounds the [tokens, ffn_dim] intermediate, a
    # sampling step's largest buffer (1.6 GiB per chip for a 96k-token turn over 2 chips), for the same result.
    ffn_chunk: int = 0

    def __post_init__(self):
        sizes = ("dim", "ffn_dim", "num_heads", "num_layers", "in_channels", "out_channels", "text_dim", "freq_dim")
        if bad := [f"{name}={getattr(self, name)}" for name in sizes if getattr(self, name) < 1]:
            raise ValueError(f"DiT sizes must be >= 1: {', '.join(bad)}")
        if self.dim % self.num_heads:
            raise ValueError(f"dim={self.dim} is not divisible by num_heads={self.num_heads}")
        if self.ffn_chunk < 0:
            raise ValueError(f"ffn_chunk={self.ffn_chunk} must be >= 0 (0: the FFN over every token at once)")
        if self.remat not in REMAT_POLICIES:
            raise ValueError(f"remat={self.remat!r} is not one of {sorted(REMAT_POLICIES)}")
        check_dtypes(self)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> WanDiTConfig:
        """From an ml_collections ConfigDict / dict; an unknown key is an error that names it."""
        return dataclass_from_config(cls, config, "DiT", {"attention": AttentionConfig})

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def compute_dtype(self):
        return compute_dtype(self.dtype)


XAVIER = nnx.initializers.xavier_uniform()  # Wan's init_weights for every Linear


def dense(
    din: int,
    dout: int,
    axes: tuple[str | None, str | None],
    config: WanDiTConfig,
    rngs: nnx.Rngs,
    kernel_init=XAVIER,
    dtype=None,
) -> nnx.Linear:
    """Linear layer with bias, logical axis names, Wan's xavier init, and the config's dtypes."""
    return nnx.Linear(
        din,
        dout,
        dtype=dtype or config.compute_dtype,
        param_dtype=DTYPES[config.param_dtype],
        kernel_init=partitioned(kernel_init, axes),
        bias_init=partitioned(nnx.initializers.zeros_init(), axes[1:]),
        rngs=rngs,
    )


class RMSNorm(nnx.Module):
    """`x * rsqrt(mean(x^2) + eps) * weight`, normalised in float32 (WanRMSNorm)."""

    def __init__(self, dim: int, eps: float, config: WanDiTConfig, rngs: nnx.Rngs, axes=("heads",)):
        self.eps = eps
        self.weight = param(rngs, nnx.initializers.ones_init(), (dim,), axes, DTYPES[config.param_dtype])

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.square(x32).mean(-1, keepdims=True) + self.eps)
        return y.astype(x.dtype) * self.weight[...].astype(x.dtype)


def sinusoidal_embedding(t: jax.Array, dim: int) -> jax.Array:
    """`[cos(t f), sin(t f)]` with `f_i = 10000^(-i / (dim/2))`; `t` any shape -> `[..., dim]` float32."""
    half = dim // 2
    freqs = jnp.exp(-math.log(10000.0) * jnp.arange(half, dtype=jnp.float32) / half)
    angles = t.astype(jnp.float32)[..., None] * freqs
    return jnp.concatenate([jnp.cos(angles), jnp.sin(angles)], axis=-1)


class PatchEmbed(nnx.Module):
    """Non-overlapping 3D patch embedding (a stride = kernel Conv3d) as one matmul.

    The kernel is stored in the Conv3d layout `[pt, ph, pw, C, D]`, so coarser tokenizers can be
    initialised by resizing it. With `pad`, a grid that the patch does not divide is padded at the
    end of each axis by repeating its last latent (Wan's 60 x 104 latents under a 1x8x8 patch); the
    DiT's own embedding keeps `pad=False`, as the reference requires whole patches.
    """

    def __init__(
        self, patch: tuple[int, int, int], channels: int, config: WanDiTConfig, rngs: nnx.Rngs, pad: bool = False
    ):
        self.patch = tuple(patch)
        self.pad = pad
        fan_in = math.prod(patch) * channels
        # xavier over the flattened kernel, as Wan's init_weights does for its patch embedding.
        init = nnx.initializers.variance_scaling(1.0, "fan_avg", "uniform", in_axis=(0, 1, 2, 3), out_axis=4)
        dtype = DTYPES[config.param_dtype]
        self.kernel = param(rngs, init, (*patch, channels, config.dim), (None, None, None, "in", "embed"), dtype)
        self.bias = param(rngs, nnx.initializers.zeros_init(), (config.dim,), ("embed",), dtype)
        self.fan_in = fan_in
        self.dtype = config.compute_dtype

    def __call__(self, latents: jax.Array) -> jax.Array:
        """`[B, F, H, W, C]` -> `[B, ceil(F/pt), ceil(H/ph), ceil(W/pw), D]` float32."""
        pt, ph, pw = self.patch
        _, f, h, w, _ = latents.shape
        if f % pt or h % ph or w % pw:
            if not self.pad:
                raise ValueError(f"latent grid {(f, h, w)} is not divisible by the patch {self.patch}")
            widths = [(0, 0), (0, -f % pt), (0, -h % ph), (0, -w % pw), (0, 0)]
            latents = jnp.pad(latents, widths, mode="edge")
        patches = einops.rearrange(latents, "b (f p) (h q) (w r) c -> b f h w (p q r c)", p=pt, q=ph, r=pw).astype(
            self.dtype
        )
        kernel = self.kernel[...].reshape(self.fan_in, -1).astype(self.dtype)
        y = jnp.dot(patches, kernel, preferred_element_type=jnp.float32)
        return y + self.bias[...].astype(jnp.float32)


class Attention(nnx.Module):
    """Wan attention: q/k/v/o projections, RMSNorm on q and k over all heads, optional RoPE."""

    def __init__(self, config: WanDiTConfig, rngs: nnx.Rngs):
        d = config.dim
        self.config = config
        self.q = dense(d, d, ("embed", "heads"), config, rngs)
        self.k = dense(d, d, ("embed", "heads"), config, rngs)
        self.v = dense(d, d, ("embed", "heads"), config, rngs)
        self.o = dense(d, d, ("heads", "embed"), config, rngs)
        self.norm_q = RMSNorm(d, config.eps, config, rngs)
        self.norm_k = RMSNorm(d, config.eps, config, rngs)

    def split_heads(self, x: jax.Array) -> jax.Array:
        return einops.rearrange(x, "b n (h d) -> b n h d", h=self.config.num_heads)

    def queries_keys(self, x, context=None, rope=None):
        """Normalised, rotated q `[B, N, H, Dh]` and k `[B, M, H, Dh]`; k from `context` if given."""
        context = x if context is None else context
        q = self.split_heads(self.norm_q(self.q(x)))
        k = self.split_heads(self.norm_k(self.k(context)))
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        return q, k

    def __call__(self, x, context=None, rope=None, segment_ids=None) -> jax.Array:
        """Self-attention when `context` is None (with `rope` and `segment_ids`), else cross-attention."""
        q, k = self.queries_keys(x, context, rope)
        v = self.split_heads(self.v(x if context is None else context))
        q = constrain(q, ("act_batch", "act_length", "act_heads", None))
        out = attention(q, k, v, segment_ids, segment_ids, self.config.attention, cross=context is not None)
        return self.o(einops.rearrange(out, "b n h d -> b n (h d)"))


class FeedForward(nnx.Module):
    def __init__(self, config: WanDiTConfig, rngs: nnx.Rngs):
        self.fc1 = dense(config.dim, config.ffn_dim, ("embed", "mlp"), config, rngs)
        self.fc2 = dense(config.ffn_dim, config.dim, ("mlp", "embed"), config, rngs)
        self.chunk = config.ffn_chunk

    def _ffn(self, x: jax.Array) -> jax.Array:
        return self.fc2(jax.nn.gelu(self.fc1(x), approximate=True))

    def __call__(self, x: jax.Array) -> jax.Array:
        """`[B, N, D]` -> `[B, N, D]`, in steps of `ffn_chunk` tokens per device of the sequence split (each
        step takes the same share of every device's tokens, so no step moves tokens between devices)."""
        b, n, d = x.shape
        s = axis_size("act_length")
        steps = math.ceil(n / (s * self.chunk)) if self.chunk else 1
        if steps == 1:
            return self._ffn(x)
        per_step = math.ceil(n / (s * steps))
        x = jnp.pad(x, ((0, 0), (0, s * steps * per_step - n), (0, 0)))
        x = constrain(x.reshape(b, s, steps, per_step, d), ("act_batch", "act_length", None, None, "act_embed"))
        y = jax.lax.map(self._ffn, einops.rearrange(x, "b s c m d -> c b s m d"))
        return einops.rearrange(y, "c b s m d -> b (s c m) d")[:, :n]


def _modulate(x: jax.Array, shift: jax.Array, scale: jax.Array, eps: float, dtype) -> jax.Array:
    return (layer_norm(x, eps) * (1 + scale) + shift).astype(dtype)


class WanBlock(nnx.Module):
    """One DiT block: modulated self-attention, cross-attention to text, modulated FFN."""

    def __init__(self, config: WanDiTConfig, rngs: nnx.Rngs):
        self.config = config
        self.self_attn = Attention(config, rngs)
        self.cross_attn = Attention(config, rngs)
        self.ffn = FeedForward(config, rngs)
        dtype = DTYPES[config.param_dtype]
        d = config.dim
        if config.cross_attn_norm:
            self.norm_cross_scale = param(rngs, nnx.initializers.ones_init(), (d,), ("embed",), dtype)
            self.norm_cross_bias = param(rngs, nnx.initializers.zeros_init(), (d,), ("embed",), dtype)
        self.modulation = param(rngs, nnx.initializers.normal(d**-0.5), (1, 6, d), (None, "modulation", "embed"), dtype)

    def _modulation(self, state: BlockState) -> list[jax.Array]:
        """The six float32 modulation vectors, each `[B, 1, D]` or per token `[B, N, D]`."""
        mod = self.modulation[...].astype(jnp.float32)
        mod = mod + state.modulation if state.modulation.ndim == 3 else mod[None] + state.modulation
        return [m.squeeze(-2) if m.ndim == 4 else m for m in jnp.split(mod, 6, axis=-2)]

    def attention_input(self, state: BlockState) -> jax.Array:
        """The modulated self-attention input `LN(x) (1 + scale) + shift` `[B, N, D]` (compute dtype)."""
        shift, scale = self._modulation(state)[:2]
        return _modulate(state.x, shift, scale, self.config.eps, self.config.compute_dtype)

    def __call__(self, state: BlockState, context: jax.Array, adapters: Sequence[BlockAdapter] = ()) -> jax.Array:
        """Returns the new residual stream `[B, N, D]` float32; `context` is the embedded text; `adapters`
        act inside self-attention in the order given (see `BlockAdapter`)."""
        cfg, dtype = self.config, self.config.compute_dtype
        shift, scale, gate, c_shift, c_scale, c_gate = self._modulation(state)
        x = state.x

        h = _modulate(x, shift, scale, cfg.eps, dtype)
        for adapter in adapters:
            h = adapter.modulated_input(h, state)
        y = self.self_attn(h, rope=(state.rope_cos, state.rope_sin), segment_ids=state.segment_ids)
        for adapter in adapters:
            y = adapter.attention_output(y, state)
        x = x + y.astype(jnp.float32) * gate

        h = layer_norm(x, cfg.eps, self.norm_cross_scale[...], self.norm_cross_bias[...]) if cfg.cross_attn_norm else x
        x = x + self.cross_attn(h.astype(dtype), context=context).astype(jnp.float32)

        y = self.ffn(_modulate(x, c_shift, c_scale, cfg.eps, dtype))
        x = x + y.astype(jnp.float32) * c_gate
        return constrain(x, ("act_batch", "act_length", "act_embed"))


class Head(nnx.Module):
    """Output head: modulated LayerNorm and a linear map to `prod(patch) * out_channels` per token."""

    def __init__(self, config: WanDiTConfig, rngs: nnx.Rngs):
        self.config = config
        out = math.prod(config.patch_size) * config.out_channels
        self.proj = dense(
            config.dim,
            out,
            ("embed", "patch_out"),
            config,
            rngs,
            kernel_init=nnx.initializers.zeros_init(),
            dtype=jnp.float32,
        )
        self.modulation = param(
            rngs,
            nnx.initializers.normal(config.dim**-0.5),
            (1, 2, config.dim),
            (None, None, "embed"),
            DTYPES[config.param_dtype],
        )

    def __call__(self, x: jax.Array, temb: jax.Array) -> jax.Array:
        """`x` `[B, N, D]`, `temb` `[B, D]` or `[B, N, D]` -> `[B, N, prod(patch) * C]` float32."""
        temb = temb[:, None] if temb.ndim == 2 else temb
        mod = self.modulation[...].astype(jnp.float32)[None] + temb[:, :, None]
        shift, scale = mod[:, :, 0], mod[:, :, 1]
        return self.proj(layer_norm(x, self.config.eps) * (1 + scale) + shift)


@dataclasses.dataclass(frozen=True)
class BlockRunner:
    """One forward's blocks, to run in parts: `run(state, start, stop)` runs blocks `start` to `stop - 1`,
    each after its hook (and the hook after the last block when `stop` is `num_layers`), so running
    `(0, k)` then `(k, num_layers)` is running `(0, num_layers)`."""

    dit: WanDiT
    context: jax.Array  # the embedded text `[B, L, D]`
    adapters: tuple[BlockAdapter, ...]
    hooks: Mapping[int, BlockHook]

    @property
    def num_layers(self) -> int:
        return self.dit.config.num_layers

    def __call__(self, state: BlockState, start: int, stop: int) -> BlockState:
        bounds = sorted({start, stop, *(i for i in self.hooks if start < i < stop)})
        for first, last in itertools.pairwise(bounds):
            if first in self.hooks:
                state = self.hooks[first](state, self.dit.block(first), first)
            state = self.dit._run_blocks(state, self.context, first, last, self.adapters)
        if stop == self.num_layers and stop in self.hooks:
            state = self.hooks[stop](state, None, stop)
        return state

    def modulated_input(self, state: BlockState) -> jax.Array:
        """Block 0's modulated self-attention input `[B, N, D]` for the state entering it."""
        return self.dit.block(0).attention_input(state)


# Given the state entering block 0 and the runner, the target tokens' states after the last block.
ThroughBlocks = Callable[[BlockState, BlockRunner], jax.Array]


class WanDiT(nnx.Module):
    """Wan diffusion transformer over packed token sequences."""

    def __init__(self, config: WanDiTConfig, *, rngs: nnx.Rngs):
        self.config = config
        d = config.dim
        self.patch_embedding = PatchEmbed(config.patch_size, config.in_channels, config, rngs)
        normal02 = nnx.initializers.normal(0.02)
        self.text_fc1 = dense(config.text_dim, d, ("text", "mlp"), config, rngs, normal02)
        self.text_fc2 = dense(d, d, ("mlp", "embed"), config, rngs, normal02)
        # The time embedding stays in float32, as in both references.
        self.time_fc1 = dense(config.freq_dim, d, ("freq", "mlp"), config, rngs, normal02, jnp.float32)
        self.time_fc2 = dense(d, d, ("mlp", "embed"), config, rngs, normal02, jnp.float32)
        self.time_projection = dense(d, 6 * d, ("embed", "modulation"), config, rngs, dtype=jnp.float32)

        @nnx.split_rngs(splits=config.num_layers)
        @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
        def make_blocks(rngs: nnx.Rngs) -> WanBlock:
            return WanBlock(config, rngs)

        self.blocks = make_blocks(rngs)
        self.head = Head(config, rngs)
        self.rope = Rope3D(config.head_dim, config.rope_theta, config.rope_max_len)

    # -- embeddings -------------------------------------------------------------------------------

    def embed_text(self, context: jax.Array) -> jax.Array:
        """`[B, L, text_dim]` umT5 states (zero past the prompt, as Wan pads) -> `[B, L, D]`."""
        h = jax.nn.gelu(self.text_fc1(context.astype(self.config.compute_dtype)), approximate=True)
        return self.text_fc2(h)

    def embed_time(self, timestep: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Timesteps `[B]` or per-token `[B, N]` (Wan2.2 TI2V) -> (temb `[..., D]`, modulation `[..., 6, D]`)."""
        temb = self.time_fc2(jax.nn.silu(self.time_fc1(sinusoidal_embedding(timestep, self.config.freq_dim))))
        modulation = self.time_projection(jax.nn.silu(temb))
        return temb, modulation.reshape(*modulation.shape[:-1], 6, self.config.dim)

    # -- blocks -----------------------------------------------------------------------------------

    def block(self, index: int) -> WanBlock:
        """Block `index` as a module of its own (a view sliced from the stacked parameters)."""
        graphdef, state = nnx.split(self.blocks)
        return nnx.merge(graphdef, jax.tree.map(lambda a: a[index], state))

    def _run_blocks(self, state, context, start, stop, adapters):
        blocks_def, blocks_state = nnx.split(self.blocks)
        adapter_defs, adapter_states = zip(*map(nnx.split, adapters), strict=True) if adapters else ((), ())

        def body(x, layer):
            block_state, layer_adapters = layer
            block = nnx.merge(blocks_def, block_state)
            views = tuple(nnx.merge(d, a) for d, a in zip(adapter_defs, layer_adapters, strict=True))
            return block(state.replace(x=x), context, views), None

        policy = REMAT_POLICIES[self.config.remat]
        if self.config.remat != "none":
            body = jax.checkpoint(body, policy=policy, prevent_cse=not self.config.scan_layers)
        layers = jax.tree.map(lambda a: a[start:stop], (blocks_state, tuple(adapter_states)))
        if self.config.scan_layers:
            x, _ = jax.lax.scan(body, state.x, layers)
        else:
            x = state.x
            for i in range(stop - start):
                x, _ = body(x, jax.tree.map(lambda a, i=i: a[i], layers))
        return state.replace(x=x)

    # -- forward ----------------------------------------------------------------------------------

    def __call__(
        self,
        seq: TokenSequence,
        timestep: jax.Array,
        context: jax.Array,
        *,
        adapters: Sequence[BlockAdapter] = (),
        hooks: Mapping[int, BlockHook] | None = None,
        through_blocks: ThroughBlocks | None = None,
    ) -> jax.Array:
        """Velocity of the target stream.

        Args:
          seq: packed tokens of all streams, target first (`memory.streams.pack_streams`).
          timestep: `[B]`, or `[B, N]` per token (Wan2.2 TI2V); the reference's `sigma * 1000`.
          context: `[B, L, text_dim]` text encoder states.
          adapters: per-block modules scanned with the blocks, applied in order (see `BlockAdapter`).
          hooks: `{block index: hook}` run before that block (see `BlockHook`); index `num_layers`
            runs after the last block.
          through_blocks: how the blocks run (sampling's step cache, pipelines.step_cache): given the state
            entering block 0 and a `BlockRunner`, the target tokens' states after the last block
            `[B, num_target, D]`; None runs every block.
        Returns:
          `[B, F, H, W, out_channels]` float32 on the target's latent grid.
        """
        cfg = self.config
        hooks = dict(hooks or {})
        bad = [i for i in hooks if not 0 <= i <= cfg.num_layers]
        if bad:
            raise ValueError(f"hook indices {bad} outside 0..{cfg.num_layers}")
        if timestep.ndim == 2 and timestep.shape[1] != seq.tokens.shape[1]:
            raise ValueError(f"per-token timestep has {timestep.shape[1]} entries for {seq.tokens.shape[1]} tokens")

        temb, modulation = self.embed_time(timestep)
        context = self.embed_text(context)
        rope_cos, rope_sin = self.rope.cos_sin(seq.positions)
        state = BlockState(
            x=constrain(seq.tokens.astype(jnp.float32), ("act_batch", "act_length", "act_embed")),
            positions=seq.positions,
            rope_cos=rope_cos,
            rope_sin=rope_sin,
            segment_ids=seq.segment_ids.astype(jnp.int32),
            modulation=modulation,
            features=seq.features,
            num_target=seq.num_target,
            layout=seq.layout,
        )
        run = BlockRunner(self, context, tuple(adapters), hooks)
        n = seq.num_target
        x = run(state, 0, cfg.num_layers).x[:, :n] if through_blocks is None else through_blocks(state, run)
        temb = temb[:, :n] if temb.ndim == 3 else temb
        out = self.head(x, temb)
        return self.unpatchify(out, seq.target_grid)

    def forward_video(self, latents: jax.Array, timestep: jax.Array, context: jax.Array) -> jax.Array:
        """The plain backbone: velocity `[B, F, H, W, out_channels]` of the latents `[B, F, H, W, C]`
        (channels last) at `timestep` (`[B]`, or `[B, N]` per token) given the text `context`
        `[B, L, text_dim]`, as diffusers' `WanTransformer3DModel(latents, timestep, context)` computes it."""
        return self(TokenSequence.of_video(self.patch_embedding(latents)), timestep, context)

    def unpatchify(self, tokens: jax.Array, grid: tuple[int, int, int]) -> jax.Array:
        """`[B, F*H*W, pt*ph*pw*C]` -> `[B, F*pt, H*ph, W*pw, C]` (per-token order (pt, ph, pw, c))."""
        f, h, w = grid
        pt, ph, pw = self.config.patch_size
        return einops.rearrange(tokens, "b (f h w) (p q r c) -> b (f p) (h q) (w r) c", f=f, h=h, w=w, p=pt, q=ph, r=pw)


# Fields that describe the architecture, stored with converted weights; the others are run-time choices.
ARCH_FIELDS = (
    "dim",
    "ffn_dim",
    "num_heads",
    "num_layers",
    "in_channels",
    "out_channels",
    "patch_size",
    "text_dim",
    "freq_dim",
    "eps",
    "cross_attn_norm",
    "rope_theta",
    "rope_max_len",
    "param_dtype",
)


def load_dit(path, mesh: jax.sharding.Mesh | None = None, **runtime: Any) -> WanDiT:
    """A `WanDiT` from a converted weights directory, restored into `mesh`'s sharded layout.

    `runtime` overrides execution fields (`dtype`, `attention`, `scan_layers`, `remat`).
    """
    from mv2v_jax.models.weights import load_module, read_config

    arch = dict(read_config(path)["architecture"])
    wrong = sorted(set(runtime) & set(ARCH_FIELDS))
    if wrong:
        raise ValueError(f"{wrong} are fixed by the weights in {path}; only run-time fields can be overridden")
    config = WanDiTConfig.from_config(arch | runtime)
    return load_module(path, lambda: WanDiT(config, rngs=nnx.Rngs(0)), mesh)
