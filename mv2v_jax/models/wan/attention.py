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

On a mesh (`parallel.mesh.use_mesh`), the kernel runs inside `jax.shard_map`: the batch split over the
batch axes (data, fsdp), heads over tensor, and queries over the `sequence` axis. Mosaic (splash) and
cuDNN kernels cannot be partitioned by XLA, and a split sequence needs explicit communication, so the
chunked and XLA paths take `shard_map` too once the sequence is split. Self-attention then crosses the
sequence axis of size s in one of three ways (`AttentionConfig.sequence_parallel`), size being a chip's
share of q:
- `"ulysses"` (DeepSpeed-Ulysses; Wan's own multi-GPU inference): all-to-all q, k and v from
  `[B, N/s, H, D]` to `[B, N, H/s, D]`, run the kernel over the whole sequence for H/s heads, and
  all-to-all the output back. Each chip sends `4 size (s-1)/s` per call. Needs the heads of a tensor
  shard divisible by s.
- `"all_gather"` (maxdiffusion's context parallelism): gather k and v over the sequence axis and run
  the local queries against every key. Each chip sends `2 size (s-1)` per call: s/2 times Ulysses.
- `"hybrid"`: Ulysses within groups of u = gcd(H, s) neighbouring chips, H being a tensor shard's heads
  (`[B, N/s, H, D]` to `[B, N/g, H/u, D]`, g = s/u groups, each a contiguous run of tokens), k and v
  gathered across the g groups (`[B, N, H/u, D]`), the output all-to-all'd back within the group. Each
  chip sends `4 size (u-1)/u + 2 size (g-1)` and holds k and v of `g size` each where the gather holds
  `s size`. u = s is Ulysses, u = 1 the gather.
- `"auto"` (default): Ulysses when s divides the heads, else the hybrid when they share a factor (the
  1.3B's 12 heads over 8 chips: u = 4, 5 size sent against the gather's 14), else all_gather.
Measured on the compiled TPU v5p programs (BENCHMARKS.md, "Sequence-parallel attention"): at s = 4 for
the 1.3B's 96,642-token turn Ulysses sends half the bytes of the gather in the forward pass and a
quarter in training, and needs a third of the temporary memory (the gather holds every key and value of
the sequence on each chip); at s = 8 the hybrid sends a third of the gather's bytes in the forward pass
and a quarter in training, with a quarter to a third of its temporaries. Ring attention (k and v passed
around the ring, overlapped with compute) was not built: it sends what the gather sends, and needs the
kernel's log-sum-exp, which splash returns only without a backward pass, so it would not have worked for
training with splash or cuDNN. Token counts that s does not divide are padded with segment -1, which
only padding sees.
Cross-attention keeps the text whole on every chip (`cross=True`): no communication.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from mv2v_jax.parallel.mesh import current_mesh, logical_to_spec

IMPLEMENTATIONS = ("auto", "chunked", "xla", "cudnn", "splash")
SEQUENCE_PARALLEL = ("auto", "ulysses", "hybrid", "all_gather")

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
    sequence_parallel: str = "auto"  # over a split sequence: "ulysses", "hybrid", "all_gather", or "auto" (module doc)

    def __post_init__(self):
        if self.impl not in IMPLEMENTATIONS:
            raise ValueError(f"attention impl {self.impl!r} is not one of {IMPLEMENTATIONS}")
        if self.sequence_parallel not in SEQUENCE_PARALLEL:
            raise ValueError(f"sequence_parallel {self.sequence_parallel!r} is not one of {SEQUENCE_PARALLEL}")

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
    *,
    cross: bool = False,
) -> jax.Array:
    """Multi-head attention, split over the current mesh when there is one (see module doc).

    Args:
      q: `[B, Nq, H, D]`; k, v: `[B, Nk, H, D]`.
      q_segments, kv_segments: `[B, Nq]`, `[B, Nk]` int32 segment ids, or both None for full attention.
      config: which implementation and its tile sizes.
      cross: k and v are a context every device holds whole (cross-attention to the text), not tokens
        split over the sequence axis like the queries.
    Returns:
      `[B, Nq, H, D]` in `q`'s dtype.
    """
    if (q_segments is None) != (kv_segments is None):
        raise ValueError("give both q_segments and kv_segments, or neither")
    impl = config.resolved()
    mesh = current_mesh()
    # XLA partitions the chunked and XLA paths by itself while the sequence is whole; Mosaic and cuDNN
    # kernels cannot be partitioned automatically, and a split sequence needs explicit collectives.
    if mesh is not None and (impl in ("splash", "cudnn") or _mesh_size(mesh, _axes("act_length")) > 1):
        return _sharded(q, k, v, q_segments, kv_segments, config, impl, mesh, cross)
    return _local(q, k, v, q_segments, kv_segments, config, impl)


def _local(q, k, v, q_segments, kv_segments, config: AttentionConfig, impl: str) -> jax.Array:
    """Attention on the arrays as given (one device, or one shard inside `shard_map`)."""
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


def _axes(name: str) -> tuple[str, ...]:
    """Mesh axes of the logical axis `name` under the current rules."""
    entry = logical_to_spec((name,))[0]
    return () if entry is None else (entry,) if isinstance(entry, str) else tuple(entry)


def _mesh_size(mesh, axes: tuple[str, ...]) -> int:
    return math.prod(mesh.shape[a] for a in axes)


def _dividing(mesh, axes: tuple[str, ...], n: int) -> tuple[str, ...]:
    """The longest prefix of `axes` whose devices divide `n` evenly."""
    while axes and n % _mesh_size(mesh, axes):
        axes = axes[:-1]
    return axes


def _entry(axes: tuple[str, ...]):
    return None if not axes else axes[0] if len(axes) == 1 else axes


def sequence_scheme(config: AttentionConfig, local_heads: int, sequence: int) -> str:
    """How self-attention crosses a sequence split `sequence` ways with `local_heads` heads per tensor
    shard: "ulysses", "hybrid" or "all_gather" (see module doc), or "none" for an unsplit sequence."""
    if sequence == 1:
        return "none"
    common = math.gcd(local_heads, sequence)
    if config.sequence_parallel == "ulysses" and common != sequence:
        raise ValueError(
            f"Ulysses attention splits the {local_heads} heads of each tensor shard over the sequence axis "
            f"of {sequence}, which does not divide them; use sequence_parallel='hybrid', 'all_gather' or 'auto'"
        )
    if config.sequence_parallel != "auto":
        return config.sequence_parallel
    return "ulysses" if common == sequence else "hybrid" if common > 1 else "all_gather"


def _ulysses_ways(scheme: str, local_heads: int, sequence: int) -> int:
    """u: how many devices of the sequence axis split the heads between them (the all-to-all's group)."""
    return {"ulysses": sequence, "hybrid": math.gcd(local_heads, sequence)}.get(scheme, 1)


def _device_groups(sequence: int, ulysses_ways: int) -> tuple[list[list[int]] | None, list[list[int]] | None]:
    """Positions along the sequence axis of the all-to-all groups (u neighbours, so that a group's queries
    are consecutive tokens, in order) and of the gather groups (one device of each all-to-all group, all
    with the same share of the heads); None where a group is the whole axis."""
    gathered = sequence // ulysses_ways
    ulysses = [[group * ulysses_ways + j for j in range(ulysses_ways)] for group in range(gathered)]
    across = [list(column) for column in zip(*ulysses, strict=True)]
    return (None if gathered == 1 else ulysses), (None if ulysses_ways == 1 else across)


def _sharded(q, k, v, q_segments, kv_segments, config, impl, mesh, cross) -> jax.Array:
    """`_local` inside `shard_map`: batch over the batch axes, heads over the tensor axes, queries (and,
    for self-attention, keys) over the sequence axes. A batch or head count that the axes do not divide
    is computed whole on those devices rather than refused (CFG's batch of 2 on a wider data axis)."""
    b, nq, h, _ = q.shape
    batch = _dividing(mesh, _axes("act_batch"), b)
    heads = _dividing(mesh, _axes("act_heads"), h)
    seq = _axes("act_length")
    s = _mesh_size(mesh, seq)
    local_heads = h // _mesh_size(mesh, heads)
    scheme = "none" if cross else sequence_scheme(config, local_heads, s)
    u = _ulysses_ways(scheme, local_heads, s)  # ulysses: s; all_gather, none: 1
    ulysses_groups, gather_groups = _device_groups(s, u)

    # Every shard needs the same number of tokens: pad to a multiple of the split with segment -1, which
    # only the padding has (it sees itself; real queries, padding slots included, never see it).
    if -nq % s and not cross:  # the keys are the same tokens: padded alike
        if q_segments is None:
            q_segments = kv_segments = jnp.ones((b, nq), jnp.int32)
        kv_segments, k, v = _pad_to(kv_segments, 1, s, -1), _pad_to(k, 1, s), _pad_to(v, 1, s)
    if q_segments is not None:
        q_segments = _pad_to(q_segments, 1, s, -1)
    q = _pad_to(q, 1, s)

    def local(q, k, v, q_segments, kv_segments):
        if scheme != "none":
            if u > 1:  # [b, N/s, h, d] -> [b, N/g, h/u, d]: the group's tokens, a share of the heads
                q, k, v = (
                    jax.lax.all_to_all(a, seq, 2, 1, tiled=True, axis_index_groups=ulysses_groups) for a in (q, k, v)
                )
            if u < s:  # every group's keys and values: [b, N, h/u, d]
                k, v = (jax.lax.all_gather(a, seq, axis=1, tiled=True, axis_index_groups=gather_groups) for a in (k, v))
            if q_segments is not None:
                kv_segments = jax.lax.all_gather(kv_segments, seq, axis=1, tiled=True)
                if u > 1:
                    q_segments = jax.lax.all_gather(
                        q_segments, seq, axis=1, tiled=True, axis_index_groups=ulysses_groups
                    )
        out = _local(q, k, v, q_segments, kv_segments, config, impl)
        if u > 1:
            out = jax.lax.all_to_all(out, seq, 1, 2, tiled=True, axis_index_groups=ulysses_groups)
        return out

    q_spec = P(_entry(batch), _entry(seq), _entry(heads), None)
    kv_spec = P(_entry(batch), None, _entry(heads), None) if cross else q_spec
    segment_spec = None if q_segments is None else P(_entry(batch), _entry(seq))
    kv_segment_spec = None if kv_segments is None else P(_entry(batch), None if cross else _entry(seq))
    out = jax.shard_map(
        local,
        mesh=mesh,
        in_specs=(q_spec, kv_spec, kv_spec, segment_spec, kv_segment_spec),
        out_specs=q_spec,
        check_vma=False,  # the Pallas kernel's outputs carry no varying-axes annotation
    )(q, k, v, q_segments, kv_segments)
    return out[:, :nq]


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
    """Moves non-padding keys/values (segment > 0) to the front (stable); returns them and the count per row."""
    valid = kv_segments > 0
    order = jnp.argsort(~valid, axis=1, stable=True)
    k = jnp.take_along_axis(k, order[:, :, None, None], axis=1)
    v = jnp.take_along_axis(v, order[:, :, None, None], axis=1)
    return k, v, valid.sum(1).astype(jnp.int32)


def _cudnn(q, k, v, kv_segments):
    if kv_segments is None:
        return jax.nn.dot_product_attention(q, k, v, implementation="cudnn")
    k, v, kv_len = valid_keys_first(k, v, kv_segments)
    return jax.nn.dot_product_attention(q, k, v, key_value_seq_lengths=kv_len, implementation="cudnn")


def _splash_kernel(heads: int, nq: int, nk: int, block_q: int, block_kv: int, interpret: bool):
    """Built in the trace that uses it (its mask arrays become that trace's constants); splash caches
    the costly part, the processed mask, itself."""
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
