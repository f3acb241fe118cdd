"""Every attention implementation against a float64 NumPy reference, with segment masking."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mv2v_jax.models.wan.attention import AttentionConfig, attention, valid_keys_first


def reference(q, k, v, q_seg=None, kv_seg=None):
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    scores = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
    if q_seg is not None:
        mask = np.asarray(q_seg)[:, None, :, None] == np.asarray(kv_seg)[:, None, None, :]
        scores = np.where(mask, scores, -np.inf)
    scores -= scores.max(-1, keepdims=True)
    p = np.exp(scores)
    p /= p.sum(-1, keepdims=True)
    return np.einsum("bhqk,bkhd->bqhd", p, v)


def make(rng, b=2, nq=70, nk=70, h=3, d=16):
    q = rng.standard_normal((b, nq, h, d), dtype=np.float32)
    k = rng.standard_normal((b, nk, h, d), dtype=np.float32)
    v = rng.standard_normal((b, nk, h, d), dtype=np.float32)
    return q, k, v


def padded_segments(b, n, valid):
    """Example 0 has `valid` real tokens then padding (0); example 1 is all real."""
    seg = np.ones((b, n), np.int32)
    seg[0, valid:] = 0
    return seg


CONFIGS = {
    "chunked": AttentionConfig(impl="chunked", block_q=16, block_kv=32),  # blocks do not divide 70
    "chunked-one-block": AttentionConfig(impl="chunked", block_q=512, block_kv=1024),
    "xla": AttentionConfig(impl="xla"),
    "splash-interpret": AttentionConfig(impl="splash", splash_block=128, interpret=True),
}


@pytest.mark.parametrize("name", CONFIGS)
def test_full_attention(rng, name):
    q, k, v = make(rng)
    out = attention(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), config=CONFIGS[name])
    np.testing.assert_allclose(out, reference(q, k, v), atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("name", CONFIGS)
def test_padding_segments_are_never_attended(rng, name):
    q, k, v = make(rng)
    seg = padded_segments(2, 70, valid=45)
    out = np.asarray(attention(*map(jnp.asarray, (q, k, v)), jnp.asarray(seg), jnp.asarray(seg), CONFIGS[name]))
    want = reference(q, k, v, seg, seg)
    real = seg != 0
    np.testing.assert_allclose(out[real], want[real], atol=2e-5, rtol=1e-4)
    # Changing padded keys/values must not move any real query's output.
    k2, v2 = k.copy(), v.copy()
    k2[0, 45:] += 5.0
    v2[0, 45:] -= 3.0
    out2 = np.asarray(attention(*map(jnp.asarray, (q, k2, v2)), jnp.asarray(seg), jnp.asarray(seg), CONFIGS[name]))
    np.testing.assert_allclose(out2[real], out[real], atol=1e-6)
    assert np.isfinite(out).all()


def test_cross_attention_lengths_differ(rng):
    q, k, v = make(rng, nq=50, nk=23)
    for name in ("chunked", "splash-interpret"):
        out = attention(*map(jnp.asarray, (q, k, v)), config=CONFIGS[name])
        np.testing.assert_allclose(out, reference(q, k, v), atol=2e-5, rtol=1e-4, err_msg=name)


def test_several_segments_per_row(rng):
    """Equality semantics: segment 1 and 2 do not see each other (packing of several examples)."""
    q, k, v = make(rng, b=1)
    seg = np.repeat(np.array([[1, 2, 0]], np.int32), [30, 25, 15], axis=1)
    for name in ("chunked", "xla", "splash-interpret"):
        out = attention(*map(jnp.asarray, (q, k, v)), jnp.asarray(seg), jnp.asarray(seg), CONFIGS[name])
        real = seg != 0
        np.testing.assert_allclose(
            np.asarray(out)[real], reference(q, k, v, seg, seg)[real], atol=2e-5, rtol=1e-4, err_msg=name
        )


def test_cudnn_key_reordering_matches_masking(rng):
    """The cuDNN path moves padded keys to the end and masks by length; check that transform with
    XLA's length masking on CPU (cuDNN itself needs a GPU)."""
    q, k, v = make(rng)
    seg = padded_segments(2, 70, valid=40)
    seg[0, :5] = 0  # padding in front too
    k_sorted, v_sorted, kv_len = valid_keys_first(jnp.asarray(k), jnp.asarray(v), jnp.asarray(seg))
    out = jax.nn.dot_product_attention(
        jnp.asarray(q), k_sorted, v_sorted, key_value_seq_lengths=kv_len, implementation="xla"
    )
    real = seg != 0
    np.testing.assert_allclose(np.asarray(out)[real], reference(q, k, v, seg, seg)[real], atol=2e-5, rtol=1e-4)


def test_chunked_gradients_match_xla(rng):
    q, k, v = map(jnp.asarray, make(rng, b=1, nq=40, nk=40, h=2, d=8))
    seg = jnp.asarray(padded_segments(1, 40, valid=33))

    def loss(impl, q, k, v):
        out = attention(q, k, v, seg, seg, AttentionConfig(impl=impl, block_q=16, block_kv=16))
        return jnp.sum(jnp.where((seg != 0)[..., None, None], out, 0.0) ** 2)

    got = jax.grad(lambda *a: loss("chunked", *a), argnums=(0, 1, 2))(q, k, v)
    want = jax.grad(lambda *a: loss("xla", *a), argnums=(0, 1, 2))(q, k, v)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, atol=1e-5, rtol=1e-4)


def test_unknown_impl_is_an_error():
    with pytest.raises(ValueError, match="flashy"):
        AttentionConfig(impl="flashy")
    with pytest.raises(ValueError, match="both"):
        attention(
            jnp.zeros((1, 4, 1, 8)),
            jnp.zeros((1, 4, 1, 8)),
            jnp.zeros((1, 4, 1, 8)),
            q_segments=jnp.ones((1, 4), jnp.int32),
        )
