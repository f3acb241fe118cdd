"""Where a camera may stand in the synthetic world, and which move it makes (`mv2v_jax.trajectories`).

Conventions are the library's (`mv2v_jax.geometry`): world-to-camera `[F, 3, 4]` with OpenCV camera
axes (x right, y down, z forward), metres. Camera 0 of a scene is the slow source video; the others
make any of ReCamMaster's moves from a random start that keeps clear of the walls and the objects
(`sample_camera`), or, in ReCamMaster's own setting, all start at the source's first camera and turn
from there (`shared_start_cameras`).
"""

from __future__ import annotations

import math

import numpy as np

from mv2v_jax.data.synthetic.scene_config import CAMERA_CLEARANCE, SceneConfig
from mv2v_jax.data.synthetic.world import World
from mv2v_jax.geometry import invert_pose
from mv2v_jax.trajectories import TRAJECTORY_KINDS, camera_trajectory, direction, look_w2c

SLOW_KINDS = ("pan_left", "pan_right", "translate_left", "translate_right", "zoom_in")
MAX_CAMERA_TRIES = 50  # trajectories resampled before falling back to a pan (which always fits)
GROUP_JITTER = 25.0  # degrees a view's turning direction strays from its group's


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


def shared_start_cameras(
    rng: np.random.Generator, config: SceneConfig, world: World, times: np.ndarray
) -> tuple[list[str], np.ndarray]:
    """ReCamMaster's setting: every camera starts where camera 0 (the source, still) stands and looks.

    Cameras 1.. turn from that pose in `config.rotation_groups` directions (the first to the left, the
    second to the right, the others left or right with up to 45 degrees of tilt; each view strays up
    to GROUP_JITTER degrees from its group's), by `rotation_degrees`, so views of one group see ever
    more of the same region and views of different groups see different walls: what one view adds to
    the source, another may already have seen. A turn's direction `phi` mixes a pan (`cos phi`, left
    positive) and a tilt (`sin phi`, up positive; the pitch stops at `max_pitch_degrees`); the camera
    drifts up to `rotation_move_metres`.

    Returns each camera's kind (its main move, e.g. "pan_left"; camera 0 "static") and w2c `[V, F, 3, 4]`.
    """
    progress_x = np.linspace(0.0, 1.0, config.num_frames)
    # Mostly pans: a tilt far up or down sees only the ceiling or the floor.
    more = rng.choice([0.0, 180.0], size=max(config.rotation_groups - 2, 0)) + rng.uniform(-45.0, 45.0)
    groups = [0.0, 180.0, *more][: config.rotation_groups]
    for _ in range(MAX_CAMERA_TRIES):
        radius, angle = config.camera_region * math.sqrt(rng.random()), rng.uniform(0, 2 * np.pi)
        start = np.array([radius * math.cos(angle), radius * math.sin(angle), rng.uniform(*config.camera_height)])
        yaw, pitch = rng.uniform(0.0, 360.0), rng.uniform(*config.camera_pitch)
        kinds, cameras = (
            ["static"],
            [
                look_w2c(
                    np.broadcast_to(start, (config.num_frames, 3)),
                    direction(np.full(config.num_frames, yaw), np.full(config.num_frames, pitch)),
                )
            ],
        )
        for index in range(1, config.num_cameras):
            phi = np.radians(groups[(index - 1) % len(groups)] + rng.uniform(-GROUP_JITTER, GROUP_JITTER))
            amount = rng.uniform(*config.rotation_degrees)
            ease = rng.uniform(-3.0, 3.0) if rng.random() < config.variable_speed else 0.0
            progress = progress_x if abs(ease) < 1e-6 else (1 - np.exp(-ease * progress_x)) / (1 - np.exp(-ease))
            yaws = yaw + amount * math.cos(phi) * progress
            limit = config.max_pitch_degrees
            pitches = np.clip(pitch + amount * math.sin(phi) * progress, -limit, limit)
            drift = rng.normal(size=3)
            drift *= rng.uniform(0.0, config.rotation_move_metres) / np.linalg.norm(drift)
            positions = start + progress[:, None] * drift
            kinds.append(_main_move(math.cos(phi), math.sin(phi)))
            cameras.append(look_w2c(positions, direction(yaws, pitches)))
        w2c = np.stack(cameras)
        if all(camera_fits(world, invert_pose(c)[:, :, 3], times) for c in w2c):
            return kinds, w2c
    raise ValueError(f"no start in the camera region of radius {config.camera_region} keeps every camera clear")


def _main_move(pan: float, tilt: float) -> str:
    """The ReCamMaster move a turn mostly is: "pan_left" for pan > 0 (counter-clockwise), "tilt_up", ..."""
    if abs(pan) >= abs(tilt):
        return "pan_left" if pan > 0 else "pan_right"
    return "tilt_up" if tilt > 0 else "tilt_down"
