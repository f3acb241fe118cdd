"""Image metrics for the evaluation: PSNR, SSIM, and cross-view photometric error through known geometry.

`warp_error` measures how consistent two videos of one scene are where they see the same surfaces:
each pixel of view j, lifted to 3D with view j's ground-truth depth and camera, is projected into
view i at the same frame (the cameras are synchronised, so moving objects are at the same place);
where view i's ground-truth depth agrees (the point is not occluded there), the colours of the two
videos at the two pixels are compared. Generated videos of one scene that agree on what is where have
a low error; the error of the ground-truth videos themselves is the floor set by sampling.

PSNR and SSIM are checked against dm_pix (tests/test_metrics.py: equal to float32 precision) and kept
here: float64 NumPy on the host, where the evaluation's uint8 videos are, and no JAX library added to
what the evaluation needs.

`edit_mask` and `region_colour` measure an edit that recolours objects: the pixels the ground-truth edit
changed, and the mean colour a video has there (its eroded interior, away from the blur of edges).

`detail` is what the consistency and accuracy metrics cannot see on their own: a video blurred towards
its mean agrees with itself across turns (a constant output has a cross-turn error of exactly 0) and
scores a fair PSNR against any ground truth. Its detail is the energy of a band of spatial frequencies,
the mean squared difference between two Gaussian blurs of it (`DETAIL_BAND`, sigmas in pixels): the
edges of walls, landmarks and objects at the scales a latent codec carries. A constant video has none,
every blur removes some, while pixel noise and a codec's block artifacts lie above the band and barely
count (the ground truth passed through the small models' codec keeps 0.89 of it, a 2-pixel blur 0.32,
noise of 10 levels changes it by 3%). `detail(output) / detail(ground truth)`, the detail ratio, is
reported beside them.
"""

from __future__ import annotations

import numpy as np

OCCLUSION_TOLERANCE = 0.05  # relative depth difference still counted as the same surface
EDIT_THRESHOLD = 40  # uint8 levels: a pixel the edit changed by more than this in some channel was edited
MIN_REGION_PIXELS = 16  # fewer edited pixels than this in a video: no colour measured there (NaN)
DETAIL_BAND = (1.0, 3.0)  # pixels: detail is what lies between Gaussian blurs this wide


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of uint8 images/videos."""
    mse = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-12)))


def _gaussian_blur(x: np.ndarray, sigma: float = 1.5, radius: int = 5) -> np.ndarray:
    """Separable Gaussian over the two axes before the last of `[..., H, W, C]`, 'valid' region
    (`radius` pixels smaller on every side)."""
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    x = sum(taps[k] * x[..., k : x.shape[-3] - 2 * radius + k, :, :] for k in range(2 * radius + 1))
    return sum(taps[k] * x[..., k : x.shape[-2] - 2 * radius + k, :] for k in range(2 * radius + 1))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03) of uint8
    images `[..., H, W, C]`, averaged over channels and frames."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_a, mu_b = _gaussian_blur(a), _gaussian_blur(b)
    var_a = _gaussian_blur(a * a) - mu_a**2
    var_b = _gaussian_blur(b * b) - mu_b**2
    cov = _gaussian_blur(a * b) - mu_a * mu_b
    value = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(value.mean())


def detail(video: np.ndarray) -> float:
    """Band-pass energy of uint8 `video` `[..., H, W, C]` (0..1 colour units squared): the mean squared
    difference between its Gaussian blurs of DETAIL_BAND, over the region the wider one sees whole."""
    x = np.asarray(video, np.float64) / 255.0
    (fine, coarse), (r_fine, r_coarse) = DETAIL_BAND, (int(np.ceil(3 * s)) for s in DETAIL_BAND)
    crop = r_coarse - r_fine
    sharp = _gaussian_blur(x, fine, r_fine)[..., crop : -crop or None, crop : -crop or None, :]
    return float(np.mean((sharp - _gaussian_blur(x, coarse, r_coarse)) ** 2))


def detail_ratio(video: np.ndarray, truth: np.ndarray) -> float:
    """`detail(video) / detail(truth)`: 1 when the video is as sharp as the ground truth, 0 when flat."""
    return detail(video) / max(detail(truth), 1e-12)


def _bilinear(image: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """`image [H, W, C]` sampled at pixel coordinates (u right, v down; pixel centres at +0.5)."""
    h, w = image.shape[:2]
    x, y = np.clip(u - 0.5, 0, w - 1), np.clip(v - 0.5, 0, h - 1)
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    top = image[y0, x0] * (1 - fx) + image[y0, x1] * fx
    bottom = image[y1, x0] * (1 - fx) + image[y1, x1] * fx
    return top * (1 - fy) + bottom * fy


def warp_error(
    video_i: np.ndarray,
    video_j: np.ndarray,
    depth_i: np.ndarray,
    depth_j: np.ndarray,
    w2c_i: np.ndarray,
    w2c_j: np.ndarray,
    K: np.ndarray,
    mask_j: np.ndarray | None = None,
) -> tuple[float, int]:
    """Mean absolute colour difference (0..1) between view j's pixels and where they land in view i,
    over co-visible pixels of every frame; and how many pixels that was.

    Args:
      video_*: uint8 `[F, H, W, 3]`; depth_*: ground-truth z-depth `[F, H, W]`; w2c_*: `[F, 3, 4]`; K: `[3, 3]`.
      mask_j: bool `[F, H, W]`, the only pixels of view j that count (default all).
    """
    frames, height, width = depth_j.shape
    v, u = np.meshgrid(np.arange(height) + 0.5, np.arange(width) + 0.5, indexing="ij")
    rays = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1).reshape(-1, 3)
    total, count = 0.0, 0
    for f in range(frames):
        camera_j = rays * depth_j[f].reshape(-1, 1)
        rotation_j, translation_j = w2c_j[f, :, :3], w2c_j[f, :, 3]
        world = (camera_j - translation_j) @ rotation_j  # R^T (x - t)
        camera_i = world @ w2c_i[f, :, :3].T + w2c_i[f, :, 3]
        z = camera_i[:, 2]
        safe = np.where(z > 1e-6, z, 1.0)
        ui, vi = K[0, 0] * camera_i[:, 0] / safe + K[0, 2], K[1, 1] * camera_i[:, 1] / safe + K[1, 2]
        inside = (z > 1e-6) & (ui >= 0.5) & (ui <= width - 0.5) & (vi >= 0.5) & (vi <= height - 0.5)
        seen = depth_i[f][np.clip(vi.astype(int), 0, height - 1), np.clip(ui.astype(int), 0, width - 1)]
        visible = inside & (np.abs(seen - z) < OCCLUSION_TOLERANCE * z)
        if mask_j is not None:
            visible &= mask_j[f].reshape(-1)
        if not visible.any():
            continue
        colours_i = _bilinear(video_i[f].astype(np.float64), ui[visible], vi[visible])
        colours_j = video_j[f].reshape(-1, 3)[visible].astype(np.float64)
        total += np.abs(colours_i - colours_j).mean(axis=1).sum() / 255.0
        count += int(visible.sum())
    return (total / count if count else float("nan")), count


def edit_mask(
    source: np.ndarray, edited: np.ndarray, erode: int = 1, within: np.ndarray | None = None, threshold: int = 0
) -> np.ndarray:
    """bool `[F, H, W]`: where the edited video `[F, H, W, 3]` (uint8) differs from its source by more
    than `threshold` (default EDIT_THRESHOLD) in some channel, and lies `within` a region when one is
    given, shrunk by `erode` pixels (a 3x3 minimum filter per step), so only the interior of each edited
    region counts."""
    change = np.abs(np.asarray(edited, np.int16) - np.asarray(source, np.int16)).max(axis=-1)
    mask = change > (threshold or EDIT_THRESHOLD)
    if within is not None:
        mask &= within
    for _ in range(erode):
        padded = np.pad(mask, ((0, 0), (1, 1), (1, 1)), constant_values=False)
        height, width = mask.shape[1:]
        mask = np.logical_and.reduce(
            [padded[:, dy : dy + height, dx : dx + width] for dy in range(3) for dx in range(3)]
        )
    return mask


def region_colour(video: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean colour (0..1) `[3]` of uint8 `video [F, H, W, 3]` over `mask [F, H, W]`; NaN when the mask
    has fewer than MIN_REGION_PIXELS pixels."""
    if mask.sum() < MIN_REGION_PIXELS:
        return np.full(3, np.nan)
    return np.asarray(video, np.float64)[mask].mean(axis=0) / 255.0
