"""Long synthetic videos and a deterministic edit of each, for long video editing with memory.

A long video is one camera moving through one room for S segments of F frames (F = 4k + 1, the editing
model's segment length): it pans round the room by more than a full turn in all (`sweep_degrees`), so
the last segments come back to what the first ones showed, while drifting in a straight line across the
camera region; the objects move on their paths over the whole video.

Two edits (`LongVideoConfig.edit`), each with one prompt for every video that names no colour, so that
neither the prompt nor the current segment determines the edited segment: only the segments edited
before it (memory) do.
- "objects": every moving object recoloured with one colour, drawn per video from the object colours
  the scene does not already use. With `grade` > 0 the edit also tints every frame towards that colour,
  a global, style-like part of the edit (as "make it winter" is) that carries the colour in every pixel.
- "walls": every wall repainted its own new colour, drawn per video (four different palette colours,
  each unlike the wall's own; as pale as the scene's `palette_mix` makes walls). A segment shows two or
  three walls: the previous segment shows some of them, and once the camera has turned more than a
  full turn, the others were last seen segments earlier, which only retrieval of older segments
  (similar source segments) brings back.
Landmarks, light and (for "walls") objects are unchanged, so the edit's consistency across segments can
be measured against the edited ground truth, region by region (`edit_regions`).

Everything comes from `np.random.default_rng(seed)`: a seed and a `LongVideoConfig` fix a video.

    video = generate_long_edit(0, LONG_PRESETS["small"])   # source, edited [S, 17, 64, 96, 3], prompt, ...
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mv2v_jax.config import dataclass_from_config
from mv2v_jax.data.synthetic.cameras import camera_fits
from mv2v_jax.data.synthetic.captions import describe
from mv2v_jax.data.synthetic.render import render
from mv2v_jax.data.synthetic.scene_config import COLOURS, OBJECT_COLOURS, SceneConfig
from mv2v_jax.data.synthetic.world import SURFACE_NAMES, WALL_PALETTE, World, draw_world, pale
from mv2v_jax.geometry import invert_pose
from mv2v_jax.trajectories import direction, look_w2c

EDIT_PROMPTS = {
    "objects": "Recolour every moving object with one new colour.",
    "walls": "Repaint every wall in a new colour.",
}
EDIT_PROMPT = EDIT_PROMPTS["objects"]
WALLS = tuple(range(4))  # the surfaces "walls" repaints: SURFACE_NAMES[:4]


@dataclasses.dataclass(frozen=True)
class LongVideoConfig:
    """A long video: its world and frame size (`scene`; `scene.num_frames` is the segment length F and
    `scene.num_cameras` is not used: one camera), how many segments (inclusive range) and the camera move.

    sweep_degrees: total pan over the video, drawn from this range, either direction (ours: more than
      360 so that later segments revisit earlier ones, which is when remembering an edit matters).
    drift_metres: straight-line travel of the camera over the video, at most (inside the camera region).
    pitch_degrees: the camera's fixed pitch, drawn from this range (ours: looking down enough to keep the
      objects, which move near the floor, in view; `scene.camera_pitch` is not used).
    edit: "objects" or "walls" (module docstring).
    grade: share by which every edited pixel is blended towards the edit colour, in [0, 1) (0: the edit
      recolours the objects only); "objects" only.
    """

    scene: SceneConfig = dataclasses.field(
        default_factory=lambda: SceneConfig(num_frames=17, num_cameras=1, num_objects=(3, 5))
    )
    num_segments: tuple[int, int] = (4, 6)
    sweep_degrees: tuple[float, float] = (390.0, 480.0)
    drift_metres: float = 0.6
    pitch_degrees: tuple[float, float] = (-28.0, -18.0)
    grade: float = 0.0
    edit: str = "objects"

    def __post_init__(self):
        low, high = self.num_segments
        if not 2 <= low <= high:
            raise ValueError(f"num_segments={self.num_segments} must be 2 <= low <= high (memory needs two)")
        if not 0 < self.sweep_degrees[0] <= self.sweep_degrees[1]:
            raise ValueError(f"sweep_degrees={self.sweep_degrees} must be 0 < low <= high")
        if not 0 <= self.drift_metres <= 2 * self.scene.camera_region:
            raise ValueError(
                f"drift_metres={self.drift_metres} must be in [0, {2 * self.scene.camera_region}] (the camera region)"
            )
        if not 0 <= self.grade < 1:
            raise ValueError(f"grade={self.grade} must be in [0, 1)")
        if self.edit not in EDIT_PROMPTS:
            raise ValueError(f"edit={self.edit!r} must be one of {sorted(EDIT_PROMPTS)}")
        if self.grade and self.edit != "objects":
            raise ValueError(f"grade={self.grade} tints towards the objects' colour: it needs edit='objects'")

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> LongVideoConfig:
        """From an ml_collections ConfigDict / dict with a nested `scene`; an unknown key is an error that names it."""
        return dataclass_from_config(cls, config, "LongVideoConfig", {"scene": SceneConfig})


LONG_PRESETS: dict[str, LongVideoConfig] = {
    # Tests: three or four 9-frame segments at the smallest size the Wan2.2 VAE + DiT patch take (64 x 96).
    "tiny": LongVideoConfig(SceneConfig(height=64, width=96, num_frames=9, num_cameras=1, num_objects=(3, 5)), (3, 4)),
    "small": LongVideoConfig(),  # the small long-editing model: 4-6 segments of 17 frames at 64 x 96
    "full": LongVideoConfig(SceneConfig(height=480, width=832, num_frames=81, num_cameras=1, num_objects=(3, 5))),
}


def camera_path(rng: np.random.Generator, config: LongVideoConfig, num_frames: int) -> np.ndarray:
    """The long video's camera, w2c `[num_frames, 3, 4]`: a pan of `sweep_degrees` at a fixed pitch and
    height while drifting in a straight line inside the camera region (where no object ever comes)."""
    scene = config.scene
    start = _point_in_disc(rng, scene.camera_region)
    heading = rng.uniform(0, 2 * np.pi)
    travel = rng.uniform(0, config.drift_metres) * np.array([math.cos(heading), math.sin(heading)])
    end = start + travel
    if np.linalg.norm(end) > scene.camera_region:  # keep both ends, hence the whole line, inside the disc
        end = end * (scene.camera_region / np.linalg.norm(end))
    progress = np.linspace(0.0, 1.0, num_frames)
    height = rng.uniform(*scene.camera_height)
    positions = np.column_stack([start + progress[:, None] * (end - start), np.full(num_frames, height)])
    yaw = rng.uniform(0.0, 360.0) + rng.choice([-1.0, 1.0]) * rng.uniform(*config.sweep_degrees) * progress
    return look_w2c(positions, direction(yaw, rng.uniform(*config.pitch_degrees)))


def recolour_objects(world: World, colour: str) -> World:
    """The same world with every moving object painted `colour` (a name of `COLOURS`)."""
    objects = tuple(dataclasses.replace(o, colour_name=colour, colour=np.array(COLOURS[colour])) for o in world.objects)
    return dataclasses.replace(world, objects=objects)


def repaint_walls(world: World, colours: Sequence[str], mix: float) -> World:
    """The same world with wall i painted flat `colours[i]` (names of `COLOURS`) blended `mix` towards
    the pale grey of "palette" scenes; landmarks, floor and ceiling unchanged."""
    surfaces = list(world.surfaces)
    for wall, colour in zip(WALLS, colours, strict=True):
        flat = np.tile(pale(COLOURS[colour], mix), (2, 1))
        surfaces[wall] = dataclasses.replace(
            surfaces[wall], pattern="plain", colour_names=(colour, colour), colours=flat
        )
    return dataclasses.replace(world, surfaces=tuple(surfaces))


def edit_regions(ids: np.ndarray, edit: str) -> dict[str, np.ndarray]:
    """What `edit` changes, by region: `ids` `[..., H, W]` (`render(..., with_ids=True)`) -> name -> bool
    mask; "walls": one region per wall, "objects": one for all moving objects (one colour)."""
    if edit == "walls":
        return {SURFACE_NAMES[w]: ids == w for w in WALLS}
    return {"objects": ids >= len(SURFACE_NAMES)}


def generate_long_edit(seed: int | Sequence[int], config: LongVideoConfig = LONG_PRESETS["small"]) -> dict[str, Any]:
    """A long video and its edit, determined by `seed` and `config`.

    Returns a dict: `source` and `edited` uint8 `[S, F, H, W, 3]` (consecutive segments), `depth`
    float32 and `ids` int16 `[S, F, H, W]` (z-depth and what each pixel shows, `render`'s ids),
    `segment_starts` int32 `[S]`, `w2c` float64 `[S, F, 3, 4]`, `K` float64 `[3, 3]`, `prompt` (the edit
    instruction), `edit_colour` (the colour the objects became, or the walls' new colours joined by
    commas), `description` (a caption of the source), `world` and `edited_world`, `seed`, `config`.
    """
    rng = np.random.default_rng(seed)
    scene = config.scene
    world = draw_world(rng, scene)
    segments = int(rng.integers(config.num_segments[0], config.num_segments[1] + 1))
    frames = segments * scene.num_frames
    w2c = camera_path(rng, config, frames)
    times = np.linspace(0.0, 1.0, frames)
    if not camera_fits(world, invert_pose(w2c)[:, :, 3], times):
        raise AssertionError("unreachable: the camera region is clear of walls and objects by construction")
    if config.edit == "walls":
        colours = _new_wall_colours(rng, [world.surfaces[w].colour_names[0] for w in WALLS])
        edited_world, colour = repaint_walls(world, colours, scene.palette_mix), ",".join(colours)
    else:
        used = {o.colour_name for o in world.objects}
        colour = str(rng.choice([c for c in OBJECT_COLOURS if c not in used]))
        edited_world = recolour_objects(world, colour)
    size, K = (scene.height, scene.width), scene.intrinsics
    source, depth, ids = render(world, w2c, K, size, times, with_ids=True)
    edited, _ = render(edited_world, w2c, K, size, times)
    if config.grade:
        tint = 255.0 * np.asarray(COLOURS[colour])
        edited = np.round((1 - config.grade) * edited + config.grade * tint).astype(np.uint8)
    split = (segments, scene.num_frames)
    return {
        "source": source.reshape(*split, *source.shape[1:]),
        "edited": edited.reshape(*split, *edited.shape[1:]),
        "depth": depth.reshape(*split, *depth.shape[1:]),
        "ids": ids.reshape(*split, *ids.shape[1:]),
        "segment_starts": np.arange(segments, dtype=np.int32) * scene.num_frames,
        "w2c": w2c.reshape(*split, 3, 4),
        "K": K,
        "prompt": EDIT_PROMPTS[config.edit],
        "edit_colour": colour,
        "description": describe(world),
        "world": world,
        "edited_world": edited_world,
        "seed": seed,
        "config": config,
    }


def _point_in_disc(rng: np.random.Generator, radius: float) -> np.ndarray:
    r, angle = radius * math.sqrt(rng.random()), rng.uniform(0, 2 * np.pi)
    return np.array([r * math.cos(angle), r * math.sin(angle)])


def _new_wall_colours(rng: np.random.Generator, old: Sequence[str]) -> list[str]:
    """Four different palette colours, wall i's unlike `old[i]` (its colour before the edit)."""
    while True:
        colours = [str(c) for c in rng.choice(WALL_PALETTE, size=len(old), replace=False)]
        if all(new != was for new, was in zip(colours, old, strict=True)):
            return colours
