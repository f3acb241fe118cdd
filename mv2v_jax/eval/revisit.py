"""Revisit scenes: turns that look where the source video never looked, so only memory keeps them consistent.

In ReCamMaster's setting (SceneConfig.camera_start "shared": every trajectory starts at the source
video's first camera, the source stands still), the turns are `turns` views of one direction group of
`shared_start_cameras`: all turn the same way (left, each straying up to 25 degrees, by `rotation_degrees`),
so each sees beyond the source's field of view on the same side, and every later turn sees again part
of what the earlier ones invented there.

Otherwise: a held-out world and its source video (camera 0, as `generate_scene` films it), and `turns` camera
trajectories drawn the way training scenes draw theirs (`sample_camera`: ReCamMaster's moves, heading
jitter, clearance) but all from the heading opposite the source's: they see the wall behind the
source camera, which the source never shows. The first turn has to invent that wall; every later
turn revisits what only earlier outputs showed. Without memory each turn invents it again; with
memory a turn can agree with what was already invented. The scene dict has `generate_scene`'s keys,
view 0 the source and views 1..turns the turns.

    scene = revisit_scene(HELD_OUT_SEED, config, turns=5)   # video [6, F, H, W, 3]: source, then turns
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from mv2v_jax.data.synthetic import SceneConfig, generate_scene, render, sample_camera

BEHIND = 180.0  # degrees from the source camera's heading


def heading_degrees(w2c: np.ndarray) -> float:
    """The yaw (degrees, counter-clockwise from +x seen from above) a camera `[3, 4]` looks along."""
    forward = np.asarray(w2c, np.float64)[2, :3]  # the rotation's third row: the camera's z axis in the world
    return math.degrees(math.atan2(forward[1], forward[0]))


def revisit_scene(seed: int, config: SceneConfig, turns: int) -> dict[str, Any]:
    """The source video of scene `seed` and `turns` trajectories facing away from it, rendered:
    `video` uint8 `[1 + turns, F, H, W, 3]`, `depth`, `w2c`, `K`, `world`, `times` (as generate_scene)."""
    if turns < 2:
        raise ValueError(f"a revisit scene needs at least 2 turns (one to invent, one to revisit), got {turns}")
    if config.camera_start == "shared":
        return generate_scene(seed, dataclasses.replace(config, num_cameras=1 + turns, rotation_groups=1))
    scene = generate_scene(seed, dataclasses.replace(config, num_cameras=1))
    world, times = scene["world"], scene["times"]
    rng = np.random.default_rng([seed, 1])  # the turns' own stream: the source stays generate_scene's
    heading = heading_degrees(scene["w2c"][0, 0]) + BEHIND
    cameras = [sample_camera(rng, config, world, times, index, heading)[1] for index in range(1, turns + 1)]
    w2c = np.concatenate([scene["w2c"], np.stack(cameras)])
    video, depth = render(world, w2c, scene["K"], (config.height, config.width), times)
    return scene | {"video": video, "depth": depth, "w2c": w2c}
