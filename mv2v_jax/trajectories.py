"""Camera moves as ReCamMaster names them: pans, tilts, zooms, translations and arcs, as world-to-camera poses.

The moves follow ReCamMaster's camera types (README of KwaiVGI/ReCamMaster, "Camera Trajectories").
The synthetic training scenes place them in their rooms (`data.synthetic.cameras`) and the sampling
presets start them at the identity (`pipelines.presets`). Conventions are `geometry`'s: world-to-camera
`[F, 3, 4]` with OpenCV camera axes (x right, y down, z forward), world z up, metres.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

TRAJECTORY_KINDS = (
    "pan_left",
    "pan_right",
    "tilt_up",
    "tilt_down",
    "zoom_in",
    "zoom_out",
    "translate_left",
    "translate_right",
    "translate_up",
    "translate_down",
    "arc_left",
    "arc_right",
    "static",
)
UP = np.array([0.0, 0.0, 1.0])
Vector = tuple[np.ndarray, np.ndarray, np.ndarray]  # x, y, z components of equal (broadcastable) shape


def rotate_z(vector: Vector, angle: np.ndarray) -> Vector:
    """Rotates by `angle` (radians, broadcastable) about z."""
    cos, sin = np.cos(angle), np.sin(angle)
    x, y, z = vector
    return cos * x - sin * y, sin * x + cos * y, z


def look_w2c(positions: np.ndarray, forward: np.ndarray) -> np.ndarray:
    """Cameras at `positions` `[F, 3]` looking along `forward` `[F, 3]` with no roll (world z up) ->
    OpenCV w2c `[F, 3, 4]`. The rotation's rows are the camera's right, down and forward axes."""
    positions, forward = np.asarray(positions, np.float64), np.asarray(forward, np.float64)
    forward = forward / np.linalg.norm(forward, axis=-1, keepdims=True)
    right = np.cross(forward, UP)
    right /= np.linalg.norm(right, axis=-1, keepdims=True)
    down = np.cross(forward, right)
    rotation = np.stack([right, down, forward], axis=-2)
    return np.concatenate([rotation, -rotation @ positions[..., None]], axis=-1)


def direction(yaw: np.ndarray | float, pitch: np.ndarray | float) -> np.ndarray:
    """Unit viewing direction(s) `[..., 3]` from yaw (degrees, counter-clockwise from +x seen from
    above) and pitch (degrees, up positive)."""
    yaw, pitch = np.radians(yaw), np.radians(pitch)
    return np.stack(np.broadcast_arrays(np.cos(pitch) * np.cos(yaw), np.cos(pitch) * np.sin(yaw), np.sin(pitch)), -1)


def camera_trajectory(
    kind: str,
    position: Sequence[float],
    yaw: float,
    pitch: float,
    amount: float,
    num_frames: int,
    ease: float = 0.0,
    pivot_distance: float = 2.0,
) -> np.ndarray:
    """A ReCamMaster-style camera move -> w2c `[num_frames, 3, 4]`.

    kind: one of TRAJECTORY_KINDS. `amount` is degrees for pans, tilts and arcs, metres for zooms
    (a dolly along the initial viewing direction: intrinsics stay fixed, as in ReCamMaster, which
    conditions on extrinsics only) and translations. Arcs circle a pivot `pivot_distance` ahead,
    looking at it; "left" moves the camera to its left.
    ease: ReCamMaster's variable speed, progress `(1 - exp(-ease x)) / (1 - exp(-ease))` at x = i / (F - 1);
    0 is constant speed, > 0 starts fast, < 0 starts slow.
    """
    if kind not in TRAJECTORY_KINDS:
        raise ValueError(f"unknown trajectory kind {kind!r}; choose one of {TRAJECTORY_KINDS}")
    x = np.linspace(0.0, 1.0, num_frames)
    progress = x if abs(ease) < 1e-6 else (1 - np.exp(-ease * x)) / (1 - np.exp(-ease))
    start = np.asarray(position, np.float64)
    forward0 = direction(yaw, pitch)
    right0 = np.cross(forward0, UP)
    right0 /= np.linalg.norm(right0)
    positions, yaws, pitches = (
        np.broadcast_to(start, (num_frames, 3)),
        np.full(num_frames, yaw),
        np.full(num_frames, pitch),
    )
    move, sign = kind.rsplit("_", 1) if "_" in kind else (kind, "")
    signed = amount * progress * (1.0 if sign in ("left", "up", "in") else -1.0)
    if move == "pan":
        yaws = yaw + signed
    elif move == "tilt":
        pitches = pitch + signed
    elif move == "zoom":
        positions = start + signed[:, None] * forward0
    elif move == "translate":
        positions = start + signed[:, None] * (UP if sign in ("up", "down") else -right0)
    elif move == "arc":
        pivot = start + pivot_distance * forward0
        # A clockwise turn (seen from above) of the pivot-to-camera offset moves the camera to its left.
        offset = np.broadcast_arrays(*rotate_z(tuple(start - pivot), np.radians(-signed)))
        positions = pivot + np.stack(offset, -1)
        return look_w2c(positions, pivot - positions)
    return look_w2c(positions, direction(yaws, pitches))
