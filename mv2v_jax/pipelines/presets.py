"""Named camera trajectories for novel view synthesis, as ReCamMaster offers them.

A preset is a camera move that starts at the source video's first camera (the identity pose) and
ends `amount` away: pans and tilts and arcs (orbits around a point 2 m ahead) in degrees, zooms
(dollies along the viewing direction; the lens stays fixed, as ReCamMaster conditions on extrinsics
only) and translations in metres. The amounts are ours: ReCamMaster's basic trajectories turn by
about 20-30 degrees and move by about 1-2 m.
"""

from __future__ import annotations

import numpy as np

from mv2v_jax.geometry import relative_to
from mv2v_jax.trajectories import camera_trajectory

AMOUNTS = {
    "pan_left": 30.0,
    "pan_right": 30.0,
    "tilt_up": 20.0,
    "tilt_down": 20.0,
    "zoom_in": 1.0,
    "zoom_out": 1.0,
    "translate_left": 1.0,
    "translate_right": 1.0,
    "translate_up": 0.5,
    "translate_down": 0.5,
    "arc_left": 30.0,
    "arc_right": 30.0,
    "orbit_left": 60.0,
    "orbit_right": 60.0,
}


def preset_trajectory(name: str, num_frames: int, amount: float | None = None) -> np.ndarray:
    """World-to-camera `[num_frames, 3, 4]` (OpenCV axes) of the preset, relative to its first frame."""
    if name not in AMOUNTS:
        raise ValueError(f"unknown camera preset {name!r}; choose one of {sorted(AMOUNTS)}")
    kind = name.replace("orbit", "arc")
    w2c = camera_trajectory(kind, (0.0, 0.0, 0.0), 0.0, 0.0, AMOUNTS[name] if amount is None else amount, num_frames)
    return np.asarray(relative_to(w2c, w2c[0]), np.float64)
