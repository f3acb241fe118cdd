"""3D RoPE: the reference's tables for integer positions, exact float64 maths for fractional ones."""

import jax.numpy as jnp
import numpy as np
import pytest
import torch

from mv2v_jax.models.wan.rope import Rope3D, apply_rope, axis_dims, grid_positions


def float64_angles(positions, head_dim, theta=10000.0):
    parts = []
    for axis, d in enumerate(axis_dims(head_dim)):
        freqs = 1.0 / theta ** (np.arange(0, d, 2, dtype=np.float64) / d)
        parts.append(np.asarray(positions, np.float64)[..., axis, None] * freqs)
    return np.concatenate(parts, -1)


def test_axis_split_is_wans():
    assert axis_dims(128) == (44, 42, 42)
    with pytest.raises(ValueError):
        axis_dims(7)


def test_integer_positions_match_diffusers_tables():
    from diffusers.models.transformers.transformer_wan import WanRotaryPosEmbed

    rope = WanRotaryPosEmbed(attention_head_dim=128, patch_size=(1, 2, 2), max_seq_len=1024)
    f, h, w = 5, 7, 9
    want_cos, want_sin = rope(torch.zeros(1, 1, f, 2 * h, 2 * w))  # [1, N, 1, 128], repeat-interleaved
    positions = jnp.asarray(grid_positions(f, h, w))[None]
    cos, sin = Rope3D(128).cos_sin(positions)
    np.testing.assert_array_equal(np.asarray(cos)[0], want_cos[0, :, 0, 0::2].numpy())
    np.testing.assert_array_equal(np.asarray(sin)[0], want_sin[0, :, 0, 0::2].numpy())


def test_fractional_and_large_positions_are_accurate(rng):
    positions = rng.uniform(0, 1000, size=(2, 64, 3)).astype(np.float32)
    positions[0, :8] = np.array([0.5, 1.5, 3.25])  # coarse-token centres
    cos, sin = Rope3D(128).cos_sin(jnp.asarray(positions))
    angles = float64_angles(positions, 128)
    np.testing.assert_allclose(cos, np.cos(angles), atol=3e-6)
    np.testing.assert_allclose(sin, np.sin(angles), atol=3e-6)


def test_apply_rope_rotates_interleaved_pairs(rng):
    x = rng.standard_normal((1, 4, 2, 24)).astype(np.float32)
    positions = rng.uniform(0, 50, size=(1, 4, 3)).astype(np.float32)
    cos, sin = Rope3D(24).cos_sin(jnp.asarray(positions))
    got = np.asarray(apply_rope(jnp.asarray(x), cos, sin))
    z = (x[..., 0::2] + 1j * x[..., 1::2]) * np.exp(1j * float64_angles(positions, 24))[:, :, None]
    want = np.stack([z.real, z.imag], -1).reshape(x.shape)
    np.testing.assert_allclose(got, want, atol=2e-5)
    # A rotation: norms of every pair are kept.
    np.testing.assert_allclose(np.linalg.norm(got, axis=-1), np.linalg.norm(x, axis=-1), rtol=1e-5)


def test_grid_positions_order_is_w_fastest():
    p = grid_positions(2, 3, 4, t0=10)
    assert p.shape == (24, 3)
    np.testing.assert_array_equal(p[:5], [[10, 0, 0], [10, 0, 1], [10, 0, 2], [10, 0, 3], [10, 1, 0]])
    np.testing.assert_array_equal(p[-1], [11, 2, 3])
