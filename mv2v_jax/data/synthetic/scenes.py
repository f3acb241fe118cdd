"""Multi-camera scenes: one world seen by V synchronised moving cameras, as MultiCamVideo records are.

Cameras stand near the middle of the room and look outwards: camera 0 (the source video) moves slowly;
the others follow ReCamMaster's camera types (pans 30-60 degrees, tilts, zooms, translations, arcs)
from headings that revisit camera 0's wall or face other walls, so some pairs of cameras share most of
their view and others see walls that no other camera sees: memory matters.

A seed and a `SceneConfig` fix a scene:

    scene = generate_scene(0, PRESETS["small"])         # video [10, 17, 64, 96, 3], depth, w2c, K, prompt
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mv2v_jax.data.synthetic.cameras import sample_camera, shared_start_cameras
from mv2v_jax.data.synthetic.captions import describe
from mv2v_jax.data.synthetic.render import render
from mv2v_jax.data.synthetic.scene_config import PRESETS, SceneConfig
from mv2v_jax.data.synthetic.world import draw_world

# Headings of cameras 1.. relative to camera 0, in degrees, assigned in a shuffled order: 0 revisits
# camera 0's wall (from another position), 180 faces the wall behind it.
HEADINGS = (0.0, 180.0, 90.0, 270.0, 0.0, 45.0, 225.0, 135.0, 315.0, 0.0)


def generate_scene(seed: int | Sequence[int], config: SceneConfig = PRESETS["small"]) -> dict[str, Any]:
    """A scene and its renders, determined by `seed` and `config`.

    Returns a dict: `video` uint8 `[V, F, H, W, 3]`, `depth` float32 `[V, F, H, W]` (metres, z-depth),
    `w2c` float64 `[V, F, 3, 4]`, `K` float64 `[3, 3]`, `prompt` str, `trajectories` (each camera's
    kind), `times` `[F]`, `world` (a World: everything needed to render new views), `seed`, `config`.
    """
    rng = np.random.default_rng(seed)
    world = draw_world(rng, config)
    times = np.linspace(0.0, 1.0, config.num_frames)
    if config.camera_start == "shared":
        kinds, w2c = shared_start_cameras(rng, config, world, times)
    else:
        yaw0 = rng.uniform(0.0, 360.0)
        headings = [0.0] + [HEADINGS[i % len(HEADINGS)] for i in rng.permutation(config.num_cameras - 1)]
        kinds, w2c = zip(
            *(sample_camera(rng, config, world, times, v, yaw0 + heading) for v, heading in enumerate(headings)),
            strict=True,
        )
        w2c = np.stack(w2c)
    K = config.intrinsics
    video, depth = render(world, w2c, K, (config.height, config.width), times)
    return {
        "video": video,
        "depth": depth,
        "w2c": w2c,
        "K": K,
        "prompt": describe(world),
        "trajectories": list(kinds),
        "times": times,
        "world": world,
        "seed": seed,
        "config": config,
    }
