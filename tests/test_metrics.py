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


def test_detail_scores_blur_and_constant_outputs_below_the_ground_truth():
    """The guard against blur winning: the metric that a constant video passes (cross-turn error 0) is
    reported beside the detail ratio, which a constant or blurred video fails."""
    from mv2v_jax.data.synthetic import PRESETS, generate_scene
    from mv2v_jax.eval.metrics import _gaussian_blur, detail, detail_ratio, warp_error

    scene = generate_scene(0, PRESETS["tiny"])
    truth = scene["video"][1]
    constant = np.broadcast_to(truth.reshape(-1, 3).mean(0).round().astype(np.uint8), truth.shape)

    def blurred(sigma: float) -> np.ndarray:
        radius = int(np.ceil(3 * sigma))
        padded = np.pad(truth, ((0, 0), (radius, radius), (radius, radius), (0, 0)), "edge").astype(float)
        return np.clip(np.round(_gaussian_blur(padded, sigma, radius)), 0, 255).astype(np.uint8)

    assert blurred(1.0).shape == truth.shape
    assert detail_ratio(truth, truth) == pytest.approx(1.0)
    assert detail(constant) == pytest.approx(0.0, abs=1e-20) and detail_ratio(constant, truth) < 1e-12
    assert 0 < detail_ratio(blurred(3.0), truth) < detail_ratio(blurred(1.5), truth) < 0.8  # the more blur, the less
    # Pixel noise is not detail: it lies above the band, so a noisy video cannot pass for a sharp one.
    noisy = np.clip(truth + np.random.default_rng(0).normal(0, 10, truth.shape), 0, 255).astype(np.uint8)
    assert detail_ratio(noisy, truth) == pytest.approx(1.0, abs=0.1)
    # ... while the constant output is perfectly consistent with itself across views: cross-turn error 0.
    video, depth, w2c = scene["video"], scene["depth"], scene["w2c"]
    covisible = lambda j: warp_error(truth, video[j], depth[1], depth[j], w2c[1], w2c[j], scene["K"])
    j = max((0, 2, 3), key=lambda j: covisible(j)[1])  # the view that shares most with view 1
    floor, pixels = covisible(j)
    constant_error, _ = warp_error(constant, constant, depth[1], depth[j], w2c[1], w2c[j], scene["K"])
    assert pixels > 0 and constant_error == 0.0 < floor  # a constant output "beats" the ground truth
