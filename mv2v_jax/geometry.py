"""Camera geometry, in one place: pose algebra, changes of reference frame, pinhole intrinsics.

Conventions used everywhere in mv2v_jax:
- A camera pose is world-to-camera `[R | t]`, `[..., 3, 4]`, in OpenCV axes (x right, y down,
  z forward): a world point X is at `R X + t` in camera coordinates; the camera centre is `-R^T t`.
- Image sizes are given as `(height, width)`; the image spans `u in [0, width]`, `v in [0, height]`.
- Translations are in scene units (metres for ReCamMaster: its Unreal Engine centimetres / 100).

Two changes of frame are used:
- `relative_to(cameras, reference)` re-expresses world-to-camera poses in the frame of a reference
  camera (VideoFOV's target-centred sphere, preset trajectories that start at the identity);
- `relative_poses(w2c, reference)` is ReCamMaster's camera input, the camera-to-world pose of each
  frame in the reference camera's frame, `(W2C_ref @ C2W_i)[:3, :]` flattened to 12 numbers. It is
  the inverse pose of `relative_to`.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

CAMERA_DIM = 12  # a flattened 3x4 pose: the camera input of ReCamMaster's encoder
HIGHEST = jax.lax.Precision.HIGHEST  # float32 rotations stay float32 on GPU/TPU too


def to_4x4(pose: np.ndarray) -> np.ndarray:
    """`[..., 3, 4]` -> `[..., 4, 4]` with last row [0 0 0 1]."""
    pose = np.asarray(pose)
    bottom = np.broadcast_to(np.array([0, 0, 0, 1], pose.dtype), (*pose.shape[:-2], 1, 4))
    return np.concatenate([pose, bottom], axis=-2)


def to_3x4(pose: np.ndarray) -> np.ndarray:
    """`[..., 4, 4]` -> `[..., 3, 4]`, dropping the last row."""
    return np.asarray(pose)[..., :3, :]


def invert_pose(pose: np.ndarray) -> np.ndarray:
    """Rigid inverse of `[..., 3, 4]` `[R | t]` -> `[R^T | -R^T t]`: c2w <-> w2c."""
    rotation, translation = pose[..., :3, :3], pose[..., :3, 3:]
    inverse = np.swapaxes(rotation, -1, -2)
    return np.concatenate([inverse, -inverse @ translation], axis=-1)


def relative_to(cameras: jax.Array, reference: jax.Array) -> jax.Array:
    """World-to-camera `[..., 3, 4]` re-expressed in the frame of the camera `reference [3, 4]`.

    `R' = R R_ref^T`, `t' = t - R' t_ref`: the new world frame is the reference camera's own frame,
    so `reference` maps to `[I | 0]` and its centre to the origin. (The paper writes this change of
    frame for camera-to-world poses, `R_ref^T R, R_ref^T (t - t_ref)`; this is the same for ours.)
    Traceable (jnp); float32 rotations are multiplied at full precision.
    """
    rotation = jnp.einsum("...ij,kj->...ik", cameras[..., :3], reference[:, :3], precision=HIGHEST)
    translation = cameras[..., 3] - jnp.einsum("...ij,j->...i", rotation, reference[:, 3], precision=HIGHEST)
    return jnp.concatenate([rotation, translation[..., None]], axis=-1)


def relative_poses(w2c: np.ndarray, reference_w2c: np.ndarray) -> np.ndarray:
    """ReCamMaster's camera input for a trajectory.

    Args:
      w2c: `[..., F, 3, 4]` world-to-camera extrinsics.
      reference_w2c: `[..., 3, 4]` the reference camera (mv2v_jax: the source video's first camera).
    Returns:
      `[..., F, 12]` float32: `(W2C_ref @ C2W_i)[:3, :]` flattened row-major.
    """
    c2w = to_4x4(invert_pose(np.asarray(w2c, np.float64)))
    reference = to_4x4(np.asarray(reference_w2c, np.float64))
    relative = reference[..., None, :, :] @ c2w
    return relative[..., :3, :].reshape(*relative.shape[:-2], CAMERA_DIM).astype(np.float32)


class Intrinsics(NamedTuple):
    """Pinhole intrinsics in pixels and the image size; a pytree, so values are traced, not compiled in."""

    fx: float
    fy: float
    cx: float
    cy: float
    height: float
    width: float

    @classmethod
    def from_hfov(cls, hfov_degrees: float, height: float, width: float) -> Intrinsics:
        """Square pixels, principal point at the image centre, `hfov` between the left and right edges."""
        if not 0 < hfov_degrees < 180:
            raise ValueError(f"horizontal field of view must be in (0, 180) degrees, got {hfov_degrees}")
        focal = width / 2 / math.tan(math.radians(hfov_degrees) / 2)
        return cls(focal, focal, width / 2, height / 2, float(height), float(width))

    @classmethod
    def from_matrix(cls, matrix: np.ndarray, height: float, width: float) -> Intrinsics:
        """From a 3x3 K (skew must be 0)."""
        k = np.asarray(matrix, np.float64)
        if k.shape != (3, 3) or k[0, 1] != 0 or k[1, 0] != 0 or k[2, 0] != 0 or k[2, 1] != 0 or k[2, 2] != 1:
            raise ValueError(f"intrinsics must be [[fx, 0, cx], [0, fy, cy], [0, 0, 1]], got {k.tolist()}")
        return cls(float(k[0, 0]), float(k[1, 1]), float(k[0, 2]), float(k[1, 2]), float(height), float(width))

    def matrix(self) -> np.ndarray:
        """The 3x3 K, float64."""
        return np.array([[self.fx, 0, self.cx], [0, self.fy, self.cy], [0, 0, 1]], np.float64)


def cell_directions(poses: np.ndarray, intrinsics: Intrinsics, grid: tuple[int, int]) -> np.ndarray:
    """Unit viewing directions `[F, h, w, 3]`, in the reference frame, through the centres of an `h x w`
    grid of cells spanning the image, for the frames of `poses` `[F, 12]` (`relative_poses`' camera-to-
    reference poses)."""
    h, w = grid
    rows = (np.arange(h) + 0.5) * intrinsics.height / h
    cols = (np.arange(w) + 0.5) * intrinsics.width / w
    v, u = np.meshgrid(rows, cols, indexing="ij")
    local = np.stack([(u - intrinsics.cx) / intrinsics.fx, (v - intrinsics.cy) / intrinsics.fy, np.ones_like(u)], -1)
    rotation = np.asarray(poses, np.float64).reshape(-1, 3, 4)[:, :, :3]
    directions = np.einsum("fij,hwj->fhwi", rotation, local)
    return directions / np.linalg.norm(directions, axis=-1, keepdims=True)


def sees(poses: np.ndarray, directions: np.ndarray, intrinsics: Intrinsics) -> np.ndarray:
    """bool `[...]`: whether any frame of `poses` `[F, 12]` (as `cell_directions`) sees the directions
    `[..., 3]` at infinity (translations ignored: views that share a centre), inside its image."""
    rotation = np.asarray(poses, np.float64).reshape(-1, 3, 4)[:, :, :3]
    camera = np.einsum("fji,...j->f...i", rotation, directions)  # R^T d: the direction in each camera's axes
    z = camera[..., 2]
    safe = np.where(z > 1e-9, z, 1.0)
    u = intrinsics.fx * camera[..., 0] / safe + intrinsics.cx
    v = intrinsics.fy * camera[..., 1] / safe + intrinsics.cy
    inside = (z > 1e-9) & (u >= 0) & (u <= intrinsics.width) & (v >= 0) & (v <= intrinsics.height)
    return inside.any(axis=0)
