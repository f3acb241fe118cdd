"""PSNR and SSIM (mv2v_jax.eval.metrics, float64 NumPy) against a maintained implementation, dm_pix
(DeepMind's JAX image library, float32), on the same images: they agree to float32 precision."""

import dm_pix
import jax.numpy as jnp
import numpy as np
import pytest

from mv2v_jax.eval.metrics import psnr, ssim


@pytest.mark.parametrize("noise", [3, 30, 120])
def test_psnr_and_ssim_match_dm_pix(rng, noise):
    a = rng.integers(0, 256, (3, 40, 52, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-noise, noise + 1, a.shape), 0, 255).astype(np.uint8)
    x, y = jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)
    # dm_pix averages SSIM per image over its window positions and channels; frames have equal weight.
    want_ssim = float(jnp.mean(dm_pix.ssim(x, y, max_val=255.0, filter_size=11, filter_sigma=1.5, k1=0.01, k2=0.03)))
    assert abs(ssim(a, b) - want_ssim) <= 1e-5
    for frame in range(len(a)):  # ours is the PSNR of the whole input's mean squared error: one frame at a time
        want_psnr = float(dm_pix.psnr(x[frame] / 255.0, y[frame] / 255.0))
        assert abs(psnr(a[frame], b[frame]) - want_psnr) <= 1e-3 * want_psnr
    assert ssim(a, a) == pytest.approx(1.0) and psnr(a, a) >= 100  # identical images
