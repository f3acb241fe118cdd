"""Procedural video worlds with ground truth, rendered by vectorised ray casting in NumPy.

The worlds are built so that memory matters: a textured room with unique painted landmarks and moving
objects, seen either by V synchronised moving cameras whose views overlap or not (multi-camera scenes,
novel view synthesis) or by one camera panning round the room for several segments, paired with an
edit that only earlier edited segments pin down (long videos, long video editing).

One idea per module:

    world.py          the room, its surfaces and landmarks, the moving objects (`sample_world`)
    cameras.py        where cameras fit and which move (`mv2v_jax.trajectories`) each makes
    render.py         the ray caster: RGB and z-depth of any camera at any time (`render`)
    captions.py       prompts naming what a scene shows (`describe`)
    scene_config.py   `SceneConfig` (sizes and ranges) and its `PRESETS`
    scenes.py         multi-camera scenes (`generate_scene`)
    long_video.py     long videos and their edits, objects recoloured or walls repainted (`generate_long_edit`,
                      `LONG_PRESETS`, `edit_regions`)
    preview.py        contact sheets (`write_preview`, `write_long_preview`), `python -m mv2v_jax.data.synthetic`

Conventions are the library's (`mv2v_jax.geometry`): world-to-camera `[..., 3, 4]` in OpenCV camera
axes, metres, pinhole `K` from a horizontal field of view. The camera moves themselves are
`mv2v_jax.trajectories` (`camera_trajectory`), shared with the sampling presets.

    scene = generate_scene(0, PRESETS["small"])         # video [10, 17, 64, 96, 3], depth, w2c, K, prompt
    w2c = camera_trajectory("arc_left", position=(0, 0, 1.5), yaw=90, pitch=-10, amount=45, num_frames=17)
    rgb, depth = render(scene, w2c, scene["K"], (64, 96))  # a new view of the same scene
    video = generate_long_edit(0, LONG_PRESETS["small"])  # source and edited [S, 17, 64, 96, 3], prompt
"""

from mv2v_jax.data.synthetic.cameras import (
    MAX_CAMERA_TRIES,
    SLOW_KINDS,
    camera_fits,
    sample_camera,
    shared_start_cameras,
)
from mv2v_jax.data.synthetic.captions import describe
from mv2v_jax.data.synthetic.long_video import (
    EDIT_PROMPT,
    EDIT_PROMPTS,
    LONG_PRESETS,
    LongVideoConfig,
    camera_path,
    edit_regions,
    generate_long_edit,
    recolour_objects,
    repaint_walls,
)
from mv2v_jax.data.synthetic.preview import main, write_long_preview, write_preview
from mv2v_jax.data.synthetic.render import RAYS_PER_CHUNK, render
from mv2v_jax.data.synthetic.scene_config import (
    CAMERA_CLEARANCE,
    CAMERA_STARTS,
    COLOURS,
    MAX_WOBBLE,
    OBJECT_COLOURS,
    PRESETS,
    SURFACE_KINDS,
    SceneConfig,
)
from mv2v_jax.data.synthetic.scenes import HEADINGS, generate_scene
from mv2v_jax.data.synthetic.world import (
    CEILING_PATTERNS,
    FLOOR_PATTERNS,
    LANDMARK_SHAPES,
    MAX_OBJECT_TRIES,
    OBJECT_CHECK_TIMES,
    SURFACE_NAMES,
    SURFACE_NORMALS,
    WALL_PALETTE,
    WALL_PATTERNS,
    Landmark,
    MovingObject,
    Surface,
    World,
    draw_world,
    pale,
    sample_world,
)

__all__ = [
    "CAMERA_CLEARANCE",
    "CAMERA_STARTS",
    "CEILING_PATTERNS",
    "COLOURS",
    "EDIT_PROMPT",
    "EDIT_PROMPTS",
    "FLOOR_PATTERNS",
    "HEADINGS",
    "LANDMARK_SHAPES",
    "LONG_PRESETS",
    "MAX_CAMERA_TRIES",
    "MAX_OBJECT_TRIES",
    "MAX_WOBBLE",
    "OBJECT_CHECK_TIMES",
    "OBJECT_COLOURS",
    "PRESETS",
    "RAYS_PER_CHUNK",
    "SLOW_KINDS",
    "SURFACE_KINDS",
    "SURFACE_NAMES",
    "SURFACE_NORMALS",
    "WALL_PALETTE",
    "WALL_PATTERNS",
    "Landmark",
    "LongVideoConfig",
    "MovingObject",
    "SceneConfig",
    "Surface",
    "World",
    "camera_fits",
    "camera_path",
    "describe",
    "draw_world",
    "edit_regions",
    "generate_long_edit",
    "generate_scene",
    "main",
    "pale",
    "recolour_objects",
    "render",
    "repaint_walls",
    "sample_camera",
    "sample_world",
    "shared_start_cameras",
    "write_long_preview",
    "write_preview",
]
