"""One attention function for every backend.

`attention(q, k, v, q_segments, kv_segments, impl=...)` computes softmax(q k^T / sqrt(d)) v over
`[B, N, heads, head_dim]` inputs. Segment ids `[B, N]` (int32) mask attention: a query attends to
the keys of its own segment, and segment 0 marks padding (empty memory slots), which no query of
another segment sees. Without segment ids attention is full.

Implementations:
- `"chunked"`: memory-bounded XLA. Loops over heads and query blocks and runs an online softmax
  over key blocks (flash-attention style), so no `N x N` matrix is built and each score tile stays
  in cache. The CPU default: on 2 cores it runs at torch SDPA's speed, where XLA's one-shot
  attention is ~3x slower (BENCHMARKS.md).
- `"xla"`: `jax.nn.dot_product_attention`; materialises the scores; fine for short sequences.
- `"cudnn"`: cuDNN flash attention (`jax.nn.dot_product_attention(implementation="cudnn")`).
  cuDNN takes no per-token masks, only sequence lengths, so padded keys are moved to the end of the
  key sequence (attention does not depend on key order) and masked by length. This path therefore
  supports one non-padding segment per batch row, which is how streams are packed.
- `"splash"`: the Pallas splash-attention kernel for TPU, with segment ids. `interpret=True`
  runs it on CPU (slowly) so tests can check it against the XLA path.
- `"auto"`: cudnn on GPU, splash on TPU, chunked elsewhere.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp

IMPLEMENTATIONS = ("auto", "chunked", "xla", "cudnn", "splash")

# Finite so that a key block with every key masked gives exp(0) junk that the next valid block
# wipes out (its running max is larger), instead of NaN from (-inf) - (-inf).
_MASK_VALUE = -0.7 * float(jnp.finfo(jnp.float32).max)


@dataclasses.dataclass(frozen=True)
class AttentionConfig:
    """How attention runs; block sizes only change speed, never results."""

    impl: str = "auto"
    block_q: int = 512  # chunked: at most this many query rows per tile
    block_kv: int = 2048  # chunked: at most this many keys per online-softmax step
    splash_block: int = 512  # splash: q and kv tile on TPU
    interpret: bool = False  # splash: run the Pallas kernel in interpret mode (CPU tests)

    def __post_init__(self):
        if self.impl not in IMPLEMENTATIONS:
            raise ValueError(f"attention impl {self.impl!r} is not one of {IMPLEMENTATIONS}")

    def resolved(self) -> str:
        if self.impl != "auto":
            return self.impl
        return {"gpu": "cudnn", "tpu": "splash"}.get(jax.default_backend(), "chunked")


def attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    q_segments: jax.Array | None = None,
    kv_segments: jax.Array | None = None,
    config: AttentionConfig = AttentionConfig(),
) -> jax.Array:
    """Multi-head attention.

    Args:
      q: `[B, Nq, H, D]`; k, v: `[B, Nk, H, D]`.
      q_segments, kv_segments: `[B, Nq]`, `[B, Nk]` int32 segment ids, or both None for full attention.
      config: which implementation and its tile sizes.
    Returns:
      `[B, Nq, H, D]` in `q`'s dtype.
    """
    if (q_segments is None) != (kv_segments is None):
        raise ValueError("give both q_segments and kv_segments, or neither")
    impl = config.resolved()
    if impl == "chunked":
        return _chunked(q, k, v, q_segments, kv_segments, config.block_q, config.block_kv)
    if impl == "xla":
        mask = None
        if q_segments is not None:
            mask = (q_segments[:, :, None] == kv_segments[:, None, :])[:, None]
        return jax.nn.dot_product_attention(q, k, v, mask=mask, implementation="xla")
    if impl == "cudnn":
        return _cudnn(q, k, v, kv_segments)
    return _splash(q, k, v, q_segments, kv_segments, config.splash_block, config.interpret)


def _pad_to(x: jax.Array, axis: int, multiple: int, value=0) -> jax.Array:
    pad = -x.shape[axis] % multiple
    if not pad:
        return x
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, pad)
    return jnp.pad(x, widths, constant_values=value)


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _balanced_block(n: int, block: int) -> int:
    """The smallest multiple of 8 that covers `n` in as few blocks of at most `block` as possible,
    so padding stays under 8 rows a block (1950 tokens: 4 x 488, not 4 x 512)."""
    blocks = _cdiv(n, block)
    return _cdiv(_cdiv(n, blocks), 8) * 8


def _chunked(q, k, v, q_segments, kv_segments, block_q, block_kv):
    b, nq, h, d = q.shape
    nk = k.shape[1]
    block_q, block_kv = _balanced_block(nq, block_q), _balanced_block(nk, block_kv)
    dtype = q.dtype
    if q_segments is None:
        q_segments = jnp.ones((b, nq), jnp.int32)
        kv_segments = jnp.ones((b, nk), jnp.int32)
    # Keys past the end (block padding) get segment -1, which no query has.
    q_seg = _pad_to(q_segments, 1, block_q, 0)
    kv_seg = _pad_to(kv_segments, 1, block_kv, -1)
    # b n h d -> (b h) nblocks block d
    q = _pad_to(q * jnp.asarray(1 / math.sqrt(d), dtype), 1, block_q)
    q = q.transpose(0, 2, 1, 3).reshape(b * h, -1, block_q, d)
    k = _pad_to(k, 1, block_kv).transpose(0, 2, 1, 3).reshape(b * h, -1, block_kv, d)
    v = _pad_to(v, 1, block_kv).transpose(0, 2, 1, 3).reshape(b * h, -1, block_kv, d)
    q_seg = jnp.repeat(q_seg.reshape(b, 1, -1, block_q), h, axis=1).reshape(b * h, -1, block_q)
    kv_seg = jnp.repeat(kv_seg.reshape(b, 1, -1, block_kv), h, axis=1).reshape(b * h, -1, block_kv)

    # Rematerialised so that a backward pass keeps one tile of scores at a time, not N x N.
    @jax.checkpoint
    def one_query_block(qb, qsb, kh, vh, ksh):
        def step(carry, xs):
            m, denom, acc = carry
            kb, vb, ksb = xs
            s = jnp.dot(qb, kb.T, preferred_element_type=jnp.float32)
            s = jnp.where(qsb[:, None] == ksb[None, :], s, _MASK_VALUE)
            m_new = jnp.maximum(m, s.max(-1, keepdims=True))
            p = jnp.exp(s - m_new)
            scale = jnp.exp(m - m_new)
            acc = acc * scale + jnp.dot(p.astype(vb.dtype), vb, preferred_element_type=jnp.float32)
            return (m_new, denom * scale + p.sum(-1, keepdims=True), acc), None

        init = (
            jnp.full((qb.shape[0], 1), _MASK_VALUE, jnp.float32),
            jnp.zeros((qb.shape[0], 1), jnp.float32),
            jnp.zeros((qb.shape[0], d), jnp.float32),
        )
        (_, denom, acc), _ = jax.lax.scan(step, init, (kh, vh, ksh))
        return (acc / denom).astype(dtype)

    def one_head(args):
        qh, qsh, kh, vh, ksh = args
        return jax.lax.map(lambda xs: one_query_block(*xs, kh, vh, ksh), (qh, qsh))

    out = jax.lax.map(one_head, (q, q_seg, k, v, kv_seg))
    out = out.reshape(b, h, -1, d)[:, :, :nq]
    return out.transpose(0, 2, 1, 3)


def valid_keys_first(k: jax.Array, v: jax.Array, kv_segments: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Moves non-padding keys/values to the front (stable); returns them and the count per row."""
    valid = kv_segments != 0
    order = jnp.argsort(~valid, axis=1, stable=True)
    k = jnp.take_along_axis(k, order[:, :, None, None], axis=1)
    v = jnp.take_along_axis(v, order[:, :, None, None], axis=1)
    return k, v, valid.sum(1).astype(jnp.int32)


def _cudnn(q, k, v, kv_segments):
    if kv_segments is None:
        return jax.nn.dot_product_attention(q, k, v, implementation="cudnn")
    k, v, kv_len = valid_keys_first(k, v, kv_segments)
    return jax.nn.dot_product_attention(q, k, v, key_value_seq_lengths=kv_len, implementation="cudnn")


@functools.cache
def _splash_kernel(heads: int, nq: int, nk: int, block_q: int, block_kv: int, interpret: bool):
    from jax.experimental.pallas.ops.tpu import splash_attention as sa

    mask = sa.MultiHeadMask([sa.FullMask((nq, nk))] * heads)
    sizes = sa.BlockSizes(
        block_q=block_q,
        block_kv=block_kv,
        block_kv_compute=block_kv,
        block_q_dkv=block_q,
        block_kv_dkv=block_kv,
        block_kv_dkv_compute=block_kv,
        block_q_dq=block_q,
        block_kv_dq=block_kv,
    )
    return sa, sa.make_splash_mha_single_device(mask, block_sizes=sizes, interpret=interpret)


def _splash(q, k, v, q_segments, kv_segments, block, interpret):
    b, nq, h, d = q.shape
    nk = k.shape[1]
    # Tiles are multiples of 128; the padding rows and columns get segment -1, seen only by each other.
    block_q = min(block, _cdiv(nq, 128) * 128)
    block_kv = min(block, _cdiv(nk, 128) * 128)
    if q_segments is None:
        q_segments = jnp.ones((b, nq), jnp.int32)
        kv_segments = jnp.ones((b, nk), jnp.int32)
    qs = _pad_to(q_segments, 1, block_q, -1)
    ks = _pad_to(kv_segments, 1, block_kv, -1)
    qp = _pad_to(q * jnp.asarray(1 / math.sqrt(d), q.dtype), 1, block_q).transpose(0, 2, 1, 3)
    kp = _pad_to(k, 1, block_kv).transpose(0, 2, 1, 3)
    vp = _pad_to(v, 1, block_kv).transpose(0, 2, 1, 3)
    sa, kernel = _splash_kernel(h, qp.shape[2], kp.shape[2], block_q, block_kv, interpret)
    out = jax.vmap(lambda q_, k_, v_, s, t: kernel(q_, k_, v_, segment_ids=sa.SegmentIds(q=s, kv=t)))(
        qp, kp, vp, qs, ks
    )
    return out.transpose(0, 2, 1, 3)[:, :nq].astype(q.dtype)
