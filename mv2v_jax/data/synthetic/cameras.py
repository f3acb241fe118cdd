"""Where a camera may stand in the synthetic world, and which move it makes (`mv2v_jax.trajectories`).

Conventions are the library's (`mv2v_jax.geometry`): world-to-camera `[F, 3, 4]` with OpenCV camera
axes (x right, y down, z forward), metres. Camera 0 of a scene is the slow source video; the others
make any of ReCamMaster's moves from a random start that keeps clear of the walls and the objects.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from mv2v_jax.geometry import invert_pose
from mv2v_jax.trajectories import TRAJECTORY_KINDS, camera_trajectory

if TYPE_CHECKING:
    from mv2v_jax.data.synthetic.scene_config import SceneConfig
    from mv2v_jax.data.synthetic.world import World

SLOW_KINDS = ("pan_left", "pan_right", "translate_left", "translate_right", "zoom_in")
CAMERA_CLEARANCE = 0.35  # metres between a camera and an object's surface, or a wall
MAX_CAMERA_TRIES = 50  # trajectories resampled before falling back to a pan (which always fits)


def sample_camera(
    rng: np.random.Generator, config: SceneConfig, world: World, times: np.ndarray, index: int, heading: float
) -> tuple[str, np.ndarray]:
    """Camera `index`'s trajectory kind and w2c `[F, 3, 4]`; camera 0 is the slow source video."""
    ranges = {
        "pan": config.source_pan_degrees if index == 0 else config.pan_degrees,
        "tilt": config.tilt_degrees,
        "arc": config.arc_degrees,
        "zoom": config.source_move_metres if index == 0 else config.move_metres,
        "translate": config.source_move_metres if index == 0 else config.move_metres,
    }
    kinds = SLOW_KINDS if index == 0 else TRAJECTORY_KINDS[:-1]
    for attempt in range(MAX_CAMERA_TRIES + 1):
        radius, angle = config.camera_region * math.sqrt(rng.random()), rng.uniform(0, 2 * np.pi)
        position = (radius * math.cos(angle), radius * math.sin(angle), rng.uniform(*config.camera_height))
        yaw = heading + rng.uniform(-config.heading_jitter, config.heading_jitter)
        pitch = rng.uniform(*config.camera_pitch)
        # A pan from a start position in the camera region always fits: the fallback.
        kind = str(rng.choice(kinds)) if attempt < MAX_CAMERA_TRIES else "pan_left"
        amount = rng.uniform(*ranges.get(kind.split("_")[0], (0.0, 0.0)))
        ease = rng.uniform(-3.0, 3.0) if rng.random() < config.variable_speed else 0.0
        pivot = rng.uniform(*config.arc_pivot_distance)
        w2c = camera_trajectory(kind, position, yaw, pitch, amount, config.num_frames, ease, pivot)
        if camera_fits(world, invert_pose(w2c)[:, :, 3], times):
            return kind, w2c
    raise AssertionError("unreachable: the fallback pan fits by construction")


def camera_fits(world: World, positions: np.ndarray, times: np.ndarray) -> bool:
    """Every camera position `[F, 3]` keeps CAMERA_CLEARANCE from the walls and from every object."""
    low, high = world.bounds
    if ((positions < low + CAMERA_CLEARANCE) | (positions > high - CAMERA_CLEARANCE)).any():
        return False
    return all(
        (np.linalg.norm(positions - obj.centres(times), axis=-1) > obj.bounding_radius + CAMERA_CLEARANCE).all()
        for obj in world.objects
    )
