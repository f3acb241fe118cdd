"""Procedural multi-camera scenes with ground truth: a textured room, moving objects, V synchronised
cameras, rendered by vectorised ray casting in NumPy.

The world is built so that memory matters. A room (x in [-a, a], y in [-b, b], z in [0, h], metres,
z up) has four walls, a floor and a ceiling, each with its own procedural texture (stripes,
checkers, colour blobs, a gradient; the four walls get four different ones) and unique painted
landmarks (a shape and colour appear once per scene), so places are recognisable. Spheres and boxes
of distinct colours move on smooth paths round the room. Cameras stand near the middle and look
outwards: camera 0 (the source video) moves slowly; the others follow ReCamMaster's camera types
(pans 30-60 degrees, tilts, zooms, translations, arcs; README of KwaiVGI/ReCamMaster, "Camera
Trajectories") from headings that revisit camera 0's wall or face other walls, so some pairs of
cameras share most of their view and others see walls that no other camera sees.

Conventions are the library's (`mv2v_jax.io.cameras`): `w2c` `[V, F, 3, 4]` world-to-camera with
OpenCV camera axes (x right, y down, z forward); `K` `[3, 3]` pinhole from a horizontal field of
view, square pixels, principal point at the image centre, pixel (i, j) centred at (j + 0.5, i + 0.5)
(the image spans u in [0, W], v in [0, H], as `geometry.Intrinsics.from_hfov`). Depth is
z-depth along the camera axis in metres. Time is normalised: frame f of F is at `f / (F - 1)`, so a
new trajectory of the same scene rendered at the same times shows the objects where the scene's
cameras saw them.

Everything comes from `np.random.default_rng(seed)`: a seed and a `SceneConfig` fix a scene.

    scene = generate_scene(0, PRESETS["small"])         # video [10, 17, 64, 96, 3], depth, w2c, K, prompt
    w2c = camera_trajectory("arc_left", position=(0, 0, 1.5), yaw=90, pitch=-10, amount=45, num_frames=17)
    rgb, depth = render(scene, w2c, scene["K"], (64, 96))  # a new view of the same scene

`python -m mv2v_jax.data.synthetic OUT.png --preset small --seed 0` writes a contact sheet of a
scene's cameras (`write_preview`); docs/synthetic_multicam.png is `--columns 5 --rows 8` of that.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mv2v_jax.config import dataclass_from_config
from mv2v_jax.geometry import Intrinsics, invert_pose
from mv2v_jax.io.images import SHEET_COLUMNS, write_contact_sheet
from mv2v_jax.io.video import check_num_frames

# Named colours (sRGB in [0, 1]): surfaces, landmarks and objects draw from these, so the prompt can
# name what the video shows.
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.80, 0.15, 0.15),
    "orange": (0.95, 0.55, 0.10),
    "yellow": (0.95, 0.85, 0.20),
    "green": (0.20, 0.65, 0.25),
    "teal": (0.10, 0.60, 0.60),
    "blue": (0.15, 0.30, 0.80),
    "purple": (0.50, 0.25, 0.70),
    "pink": (0.95, 0.55, 0.70),
    "brown": (0.50, 0.32, 0.18),
    "white": (0.92, 0.92, 0.90),
    "grey": (0.55, 0.55, 0.55),
    "black": (0.12, 0.12, 0.12),
}
OBJECT_COLOURS = tuple(c for c in COLOURS if c not in ("white", "grey"))  # stand out from the walls
WALL_PATTERNS = ("stripes", "checkers", "blobs", "gradient")
FLOOR_PATTERNS = ("checkers", "stripes")
CEILING_PATTERNS = ("gradient", "blobs")
LANDMARK_SHAPES = ("disc", "ring", "square", "diamond", "triangle", "cross", "star")
# Surfaces in index order: walls at x = -a, x = +a, y = -b, y = +b, then floor (z = 0), ceiling (z = h).
SURFACE_NAMES = ("wall x-", "wall x+", "wall y-", "wall y+", "floor", "ceiling")
SURFACE_NORMALS = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], np.float32)  # inward
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
SLOW_KINDS = ("pan_left", "pan_right", "translate_left", "translate_right", "zoom_in")
# Headings of cameras 1.. relative to camera 0, in degrees, assigned in a shuffled order: 0 revisits
# camera 0's wall (from another position), 180 faces the wall behind it.
HEADINGS = (0.0, 180.0, 90.0, 270.0, 0.0, 45.0, 225.0, 135.0, 315.0, 0.0)
RAYS_PER_CHUNK = 1 << 18  # bounds the renderer's temporaries (~50 floats a ray)
CAMERA_CLEARANCE = 0.35  # metres between a camera and an object's surface, or a wall
MAX_CAMERA_TRIES = 50  # trajectories resampled before falling back to a pan (which always fits)
MAX_OBJECT_TRIES = 100  # paths drawn for an object before leaving it out
MAX_WOBBLE = 0.2  # metres an object's orbit radius oscillates by, at most
OBJECT_CHECK_TIMES = 65  # times in [0, 1] at which object paths are checked for collisions
UP = np.array([0.0, 0.0, 1.0])


@dataclass(frozen=True)
class SceneConfig:
    """Size of the rendered videos and the ranges scenes are drawn from (metres, degrees)."""

    height: int = 64
    width: int = 96
    num_frames: int = 17  # 4k + 1 (Wan's VAE)
    num_cameras: int = 10  # MultiCamVideo's cameras per scene
    hfov_degrees: float = 65.0  # ours; MultiCamVideo's 18-50 mm lenses on 23.76 mm give 27-67 degrees
    room_half_extent: tuple[float, float] = (3.5, 5.0)  # a and b are drawn from this range
    room_height: tuple[float, float] = (2.6, 3.4)
    num_objects: tuple[int, int] = (2, 4)  # inclusive
    object_size: tuple[float, float] = (0.25, 0.45)  # sphere radius or box half-side
    object_travel: tuple[float, float] = (1.0, 2.5)  # metres along its path over the clip
    camera_region: float = 0.8  # cameras start within this radius of the room's centre ...
    camera_height: tuple[float, float] = (1.2, 1.7)  # ... at this height
    camera_pitch: tuple[float, float] = (-20.0, 5.0)
    heading_jitter: float = 20.0
    # ReCamMaster's README ranges: pans 5-45 (we use 30-60, the issue's), tilts 5-30, arcs 15-75,
    # translations 1/4-1 of the distance to the character (here metres).
    pan_degrees: tuple[float, float] = (30.0, 60.0)
    tilt_degrees: tuple[float, float] = (10.0, 30.0)
    arc_degrees: tuple[float, float] = (15.0, 75.0)
    arc_pivot_distance: tuple[float, float] = (1.5, 2.5)
    move_metres: tuple[float, float] = (0.5, 1.2)
    source_pan_degrees: tuple[float, float] = (10.0, 20.0)  # camera 0, the slow source video
    source_move_metres: tuple[float, float] = (0.3, 0.6)
    variable_speed: float = 0.5  # fraction of cameras with ReCamMaster's exponential speed profile
    ambient: float = 0.45

    def __post_init__(self):
        check_num_frames(self.num_frames)
        if self.height < 1 or self.width < 1 or self.num_cameras < 1:
            raise ValueError(f"height, width and num_cameras must be positive, got {self}")
        if not 1 <= self.num_objects[0] <= self.num_objects[1] <= len(OBJECT_COLOURS):
            raise ValueError(f"num_objects={self.num_objects} must be 1 <= low <= high <= {len(OBJECT_COLOURS)}")
        if not 0 < self.hfov_degrees < 180:
            raise ValueError(f"hfov_degrees={self.hfov_degrees} must be in (0, 180)")
        inner, outer = self.orbit_limits(self.room_half_extent[0], self.object_size[1], MAX_WOBBLE)
        if inner > outer:
            raise ValueError(
                f"room_half_extent={self.room_half_extent} leaves no room for objects of size {self.object_size}"
                f" round the camera region of radius {self.camera_region}"
            )

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> SceneConfig:
        """From an ml_collections ConfigDict / dict; an unknown key is an error that names it."""
        return dataclass_from_config(cls, config, "SceneConfig")

    def orbit_limits(self, half_extent: float, size: float, wobble: float) -> tuple[float, float]:
        """Orbit radii keeping an object of `size` (its orbit wobbling by `wobble`) clear of the
        cameras' starting region, with room for them to move, and inside a room whose smaller
        half-extent is `half_extent`."""
        inner = self.camera_region + self.object_size[1] + CAMERA_CLEARANCE + 0.4 + wobble
        outer = half_extent - size * math.sqrt(2) - 0.15 - wobble
        return inner, outer

    @property
    def intrinsics(self) -> np.ndarray:
        """`K` `[3, 3]` float64 for this config's size and field of view."""
        return Intrinsics.from_hfov(self.hfov_degrees, self.height, self.width).matrix()


PRESETS: dict[str, SceneConfig] = {
    "tiny": SceneConfig(height=32, width=48, num_frames=9, num_cameras=4),  # tests
    "small": SceneConfig(height=64, width=96, num_frames=17, num_cameras=10),  # the shipped CPU model
    "medium": SceneConfig(height=128, width=192, num_frames=33, num_cameras=10),
    "full": SceneConfig(height=480, width=832, num_frames=81, num_cameras=10),  # the paper's video size
}


@dataclass(frozen=True)
class Landmark:
    """A painted shape on a surface: centre `(u, v)` and radius in surface metres, rotation in radians."""

    shape: str
    colour: str
    centre: tuple[float, float]
    radius: float
    angle: float


@dataclass(frozen=True)
class Surface:
    """One face of the room. `colours` `[2, 3]` are the pattern's two colours (named `colour_names`);
    `blobs` `[n, 6]` rows `(u, v, sigma, r, g, b)` for the blob pattern."""

    name: str
    pattern: str
    colour_names: tuple[str, str]
    colours: np.ndarray
    period: float
    angle: float
    blobs: np.ndarray
    landmarks: tuple[Landmark, ...]


@dataclass(frozen=True)
class MovingObject:
    """A sphere (`size` = radius) or a box (`size` = half-side, spinning about z) whose centre circles
    the room's centre: angle `phase + angular_speed * t`, radius `orbit_radius + wobble * sin(...)`,
    t the normalised time in [0, 1]. Spheres bounce; boxes slide on the floor."""

    shape: str
    colour_name: str
    colour: np.ndarray
    size: float
    orbit_radius: float
    phase: float
    angular_speed: float
    wobble: float
    wobble_frequency: float
    wobble_phase: float
    bounce: float
    bounce_frequency: float
    spin: float

    def centres(self, times: np.ndarray) -> np.ndarray:
        """`[T]` normalised times -> centres `[T, 3]`."""
        times = np.asarray(times, np.float64)
        angle = self.phase + self.angular_speed * times
        radius = self.orbit_radius + self.wobble * np.sin(2 * np.pi * self.wobble_frequency * times + self.wobble_phase)
        height = self.size + self.bounce * np.abs(np.sin(np.pi * self.bounce_frequency * times + self.wobble_phase))
        return np.stack([radius * np.cos(angle), radius * np.sin(angle), height], -1)

    def yaws(self, times: np.ndarray) -> np.ndarray:
        """`[T]` -> box rotations about z `[T]` (radians)."""
        return self.wobble_phase + self.spin * np.asarray(times, np.float64)

    @property
    def bounding_radius(self) -> float:
        return self.size * (math.sqrt(3) if self.shape == "box" else 1.0)


@dataclass(frozen=True)
class World:
    """The room `[-a, a] x [-b, b] x [0, h]`, its six surfaces (`SURFACE_NAMES` order), moving objects
    and a point light with ambient term."""

    half_extent: tuple[float, float]
    height: float
    surfaces: tuple[Surface, ...]
    objects: tuple[MovingObject, ...]
    light: np.ndarray
    ambient: float

    @property
    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        a, b = self.half_extent
        return np.array([-a, -b, 0.0]), np.array([a, b, self.height])


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
        offset = np.broadcast_arrays(*_rotate_z(tuple(start - pivot), np.radians(-signed)))
        positions = pivot + np.stack(offset, -1)
        return look_w2c(positions, pivot - positions)
    return look_w2c(positions, direction(yaws, pitches))


def render(
    scene: World | Mapping[str, Any],
    w2c: np.ndarray,
    K: np.ndarray,
    size: tuple[int, int],
    times: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Renders cameras `w2c` `[..., F, 3, 4]` (OpenCV) with intrinsics `K` of a scene (its dict or its
    World) at `size = (H, W)` -> RGB uint8 `[..., F, H, W, 3]` and z-depth float32 `[..., F, H, W]`.

    times: normalised time of each of the F frames (default `linspace(0, 1, F)`: the scene's own).
    """
    world = scene["world"] if isinstance(scene, Mapping) else scene
    w2c = np.asarray(w2c, np.float64)
    if w2c.ndim < 3 or w2c.shape[-2:] != (3, 4):
        raise ValueError(f"w2c must be [..., F, 3, 4], got {w2c.shape}")
    num_frames = w2c.shape[-3]
    times = np.linspace(0.0, 1.0, num_frames) if times is None else np.asarray(times, np.float64)
    if times.shape != (num_frames,):
        raise ValueError(f"times must be [F] = [{num_frames}], got {times.shape}")
    height, width = size
    cameras = w2c.reshape(-1, 3, 4)
    frame_times = np.broadcast_to(times, (*w2c.shape[:-3], num_frames)).reshape(-1)
    rgb = np.empty((len(cameras), height * width, 3), np.uint8)
    depth = np.empty((len(cameras), height * width), np.float32)
    rays = _camera_rays(np.asarray(K, np.float64), height, width)
    step = max(1, RAYS_PER_CHUNK // (height * width))
    for start in range(0, len(cameras), step):
        chunk = slice(start, start + step)
        rgb[chunk], depth[chunk] = _cast(world, cameras[chunk], rays, frame_times[chunk])
    return rgb.reshape(*w2c.shape[:-2], height, width, 3), depth.reshape(*w2c.shape[:-2], height, width)


def sample_world(seed: int | Sequence[int], config: SceneConfig) -> World:
    """The world of `generate_scene(seed, config)` without cameras or rendering (it is drawn first)."""
    return _sample_world(np.random.default_rng(seed), config)


def generate_scene(seed: int | Sequence[int], config: SceneConfig = PRESETS["small"]) -> dict[str, Any]:
    """A scene and its renders, determined by `seed` and `config`.

    Returns a dict: `video` uint8 `[V, F, H, W, 3]`, `depth` float32 `[V, F, H, W]` (metres, z-depth),
    `w2c` float64 `[V, F, 3, 4]`, `K` float64 `[3, 3]`, `prompt` str, `trajectories` (each camera's
    kind), `times` `[F]`, `world` (a World: everything needed to render new views), `seed`, `config`.
    """
    rng = np.random.default_rng(seed)
    world = _sample_world(rng, config)
    times = np.linspace(0.0, 1.0, config.num_frames)
    yaw0 = rng.uniform(0.0, 360.0)
    headings = [0.0] + [HEADINGS[i % len(HEADINGS)] for i in rng.permutation(config.num_cameras - 1)]
    kinds, w2c = zip(
        *(_sample_camera(rng, config, world, times, v, yaw0 + heading) for v, heading in enumerate(headings)),
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


def describe(world: World) -> str:
    """A prompt naming what the scene shows: each wall's pattern, the landmarks, floor, ceiling, objects."""
    walls = [_describe_surface(s) for s in world.surfaces[:4]]
    landmarks = [_article(f"{m.colour} {m.shape}") for s in world.surfaces for m in s.landmarks]
    objects = [_article(f"{o.colour_name} {o.shape}") for o in world.objects]
    floor, ceiling = (_article(_describe_surface(s)) for s in world.surfaces[4:])
    return (
        f"A room with {_join(walls)} walls, painted with {_join(landmarks)}; {floor} floor and {ceiling} ceiling."
        f" {_join(objects).capitalize()} {'moves' if len(objects) == 1 else 'move'} around the room."
    )


def write_preview(
    path: str | Path, scene: Mapping[str, Any], columns: int = SHEET_COLUMNS, rows: int | None = None
) -> Path:
    """A PNG contact sheet of a scene: one row per camera (the first `rows`, default all), labelled
    with its trajectory kind; `columns` frames evenly spaced from first to last."""
    video = scene["video"][:rows]
    frames = np.linspace(0, video.shape[1] - 1, min(columns, video.shape[1])).round().astype(int)
    labels = [f"cam{v:02d} {kind}" for v, kind in enumerate(scene["trajectories"][:rows])]
    return write_contact_sheet(path, list(video), labels=labels, frame_indices=frames)


def _article(noun_phrase: str) -> str:
    return f"{'an' if noun_phrase[0] in 'aeiou' else 'a'} {noun_phrase}"


def _join(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + f" and {items[-1]}"


def _describe_surface(surface: Surface) -> str:
    first, second = surface.colour_names
    if surface.pattern == "blobs":
        return f"{first} {second}-blotched"
    if surface.pattern == "gradient":
        return f"{first}-to-{second} shaded"
    return f"{first} and {second} {'striped' if surface.pattern == 'stripes' else 'checkered'}"


def _sample_world(rng: np.random.Generator, config: SceneConfig) -> World:
    a, b = rng.uniform(*config.room_half_extent, size=2)
    height = rng.uniform(*config.room_height)
    patterns = [*rng.permutation(WALL_PATTERNS), rng.choice(FLOOR_PATTERNS), rng.choice(CEILING_PATTERNS)]
    # Every (shape, colour) landmark appears at most once in a scene, so it names a place.
    combos = [(s, c) for s in LANDMARK_SHAPES for c in COLOURS if c != "white"]
    landmark_counts = [2, 2, 2, 2, 1, 1]
    chosen = rng.choice(len(combos), size=sum(landmark_counts), replace=False)
    extents = [(b, height), (b, height), (a, height), (a, height), (a, b), (a, b)]
    surfaces, used = [], 0
    for index, (pattern, count, extent) in enumerate(zip(patterns, landmark_counts, extents, strict=True)):
        picks = [combos[i] for i in chosen[used : used + count]]
        used += count
        surfaces.append(_sample_surface(rng, SURFACE_NAMES[index], str(pattern), picks, extent, index >= 4))
    objects = _sample_objects(rng, config, min(a, b))
    light = np.array([rng.uniform(-0.5, 0.5) * a, rng.uniform(-0.5, 0.5) * b, height - 0.3])
    return World((float(a), float(b)), float(height), tuple(surfaces), objects, light, config.ambient)


def _sample_surface(
    rng: np.random.Generator,
    name: str,
    pattern: str,
    landmarks: Sequence[tuple[str, str]],
    extent: tuple[float, float],
    horizontal: bool,
) -> Surface:
    """extent: the surface's half-width along u and, for walls, the full height along v (v from 0).
    The pattern's colours differ from its landmarks', so every landmark stands out."""
    free = [c for c in COLOURS if c not in {colour for _, colour in landmarks}]
    names = tuple(str(c) for c in rng.choice(free, size=2, replace=False))
    colours = np.array([COLOURS[c] for c in names]) + rng.uniform(-0.05, 0.05, size=(2, 3))
    angle = rng.choice([0.0, np.pi / 2, np.pi / 4, -np.pi / 4]) if pattern == "stripes" else rng.uniform(0, np.pi)
    period = rng.uniform(0.3, 0.8) if pattern in ("stripes", "checkers") else rng.uniform(2.0, 5.0)
    half_u, span_v = extent
    v_low, v_high = (-span_v, span_v) if horizontal else (0.0, span_v)
    num_blobs = 8 if pattern == "blobs" else 0
    blob_names = rng.choice(list(COLOURS), size=num_blobs)
    blobs = np.column_stack(
        [
            rng.uniform(-half_u, half_u, num_blobs),
            rng.uniform(v_low, v_high, num_blobs),
            rng.uniform(0.25, 0.7, num_blobs),
            np.array([COLOURS[c] for c in blob_names]).reshape(num_blobs, 3),
        ]
    )
    placed: list[Landmark] = []
    for shape, colour in landmarks:
        radius = rng.uniform(0.25, 0.45)
        for _ in range(100):  # keep landmarks apart and off the edges
            centre = (rng.uniform(-half_u + 0.6, half_u - 0.6), rng.uniform(v_low + 0.6, v_high - 0.6))
            if all(math.dist(centre, m.centre) > radius + m.radius + 0.3 for m in placed):
                break
        placed.append(
            Landmark(shape, colour, (float(centre[0]), float(centre[1])), float(radius), rng.uniform(0, np.pi))
        )
    return Surface(name, pattern, names, colours, float(period), float(angle), blobs, tuple(placed))


def _sample_objects(rng: np.random.Generator, config: SceneConfig, half_extent: float) -> tuple[MovingObject, ...]:
    """Objects on paths that keep out of the camera region and never meet (checked at OBJECT_CHECK_TIMES);
    an object that finds no such path in MAX_OBJECT_TRIES draws is left out."""
    count = int(rng.integers(config.num_objects[0], config.num_objects[1] + 1))
    names = rng.choice(OBJECT_COLOURS, size=count, replace=False)
    times = np.linspace(0.0, 1.0, OBJECT_CHECK_TIMES)
    objects: list[MovingObject] = []
    for name in names:
        for _ in range(MAX_OBJECT_TRIES):
            candidate = _sample_object(rng, config, str(name), half_extent)
            path = candidate.centres(times)
            if all(
                (
                    np.linalg.norm(path - other.centres(times), axis=-1)
                    > candidate.bounding_radius + other.bounding_radius
                ).all()
                for other in objects
            ):
                objects.append(candidate)
                break
    return tuple(objects)


def _sample_object(rng: np.random.Generator, config: SceneConfig, name: str, half_extent: float) -> MovingObject:
    shape = "sphere" if rng.random() < 0.5 else "box"
    size = rng.uniform(*config.object_size)
    wobble = rng.uniform(0.0, MAX_WOBBLE)
    orbit = rng.uniform(*config.orbit_limits(half_extent, size, wobble))
    return MovingObject(
        shape=shape,
        colour_name=name,
        colour=np.array(COLOURS[name]),
        size=float(size),
        orbit_radius=float(orbit),
        phase=float(rng.uniform(0, 2 * np.pi)),
        angular_speed=float(rng.choice([-1, 1]) * rng.uniform(*config.object_travel) / orbit),
        wobble=float(wobble),
        wobble_frequency=float(rng.uniform(0.5, 1.5)),
        wobble_phase=float(rng.uniform(0, 2 * np.pi)),
        bounce=float(rng.uniform(0.2, 0.6)) if shape == "sphere" else 0.0,
        bounce_frequency=float(rng.uniform(1.0, 2.0)),
        spin=float(rng.uniform(-np.pi, np.pi)) if shape == "box" else 0.0,
    )


def _sample_camera(
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
        if _camera_fits(world, invert_pose(w2c)[:, :, 3], times):
            return kind, w2c
    raise AssertionError("unreachable: the fallback pan fits by construction")


def _camera_fits(world: World, positions: np.ndarray, times: np.ndarray) -> bool:
    """Every camera position `[F, 3]` keeps CAMERA_CLEARANCE from the walls and from every object."""
    low, high = world.bounds
    if ((positions < low + CAMERA_CLEARANCE) | (positions > high - CAMERA_CLEARANCE)).any():
        return False
    return all(
        (np.linalg.norm(positions - obj.centres(times), axis=-1) > obj.bounding_radius + CAMERA_CLEARANCE).all()
        for obj in world.objects
    )


def _camera_rays(K: np.ndarray, height: int, width: int) -> np.ndarray:
    """Camera-space ray directions `[H * W, 3]` through pixel centres, with z = 1 (so t is z-depth)."""
    v, u = np.meshgrid(np.arange(height) + 0.5, np.arange(width) + 0.5, indexing="ij")
    y = (v - K[1, 2]) / K[1, 1]
    x = (u - K[0, 2] - K[0, 1] * y) / K[0, 0]
    return np.stack([x, y, np.ones_like(x)], -1).reshape(-1, 3)


def _cast(world: World, w2c: np.ndarray, rays: np.ndarray, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Casts `rays` `[P, 3]` from N cameras `w2c` `[N, 3, 4]` at `times` `[N]` -> RGB uint8 `[N, P, 3]`,
    z-depth float32 `[N, P]`.

    Vectors are kept as three `[N, P]` (or `[N, 1]`) component arrays: NumPy is several times faster
    on those than on reductions over a trailing axis of 3.
    """
    rotation = w2c[:, :, :3].astype(np.float32)
    centre = (-np.swapaxes(w2c[:, :, :3], 1, 2) @ w2c[:, :, 3:])[:, :, 0].astype(np.float32)
    origin = tuple(centre[:, j, None] for j in range(3))  # [N, 1] each
    ray = rays.astype(np.float32)
    # World directions R^T d: component j is sum_k d_k R[k, j].
    direction = tuple(sum(ray[None, :, k] * rotation[:, k, j, None] for k in range(3)) for j in range(3))
    objects = [
        (obj, obj.centres(times).astype(np.float32), obj.yaws(times).astype(np.float32)) for obj in world.objects
    ]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        depth, hit = _room_exit(world, origin, direction)
        for k, (obj, centres, yaws) in enumerate(objects):
            offset = tuple(origin[j] - centres[:, j, None] for j in range(3))
            if obj.shape == "sphere":
                t = _sphere_hit(offset, direction, obj.size)
            else:
                t = _box_hit(_rotate_z(offset, -yaws[:, None]), _rotate_z(direction, -yaws[:, None]), obj.size)
            closer = t < depth
            depth = np.where(closer, t, depth)
            hit = np.where(closer, len(SURFACE_NAMES) + k, hit)
    point = tuple(origin[j] + depth * direction[j] for j in range(3))
    albedo = np.empty((*depth.shape, 3), np.float32)
    normal = tuple(np.empty_like(depth) for _ in range(3))
    for s, surface in enumerate(world.surfaces):
        mask = hit == s
        u, v = _surface_coordinates(point, s, mask)
        albedo[mask] = _texture(surface, u, v)
        for j in range(3):
            normal[j][mask] = SURFACE_NORMALS[s, j]
    for k, (obj, centres, yaws) in enumerate(objects):
        mask = hit == len(SURFACE_NAMES) + k
        frame = np.nonzero(mask)[0]
        local = tuple(point[j][mask] - centres[frame, j] for j in range(3))
        albedo[mask] = obj.colour
        object_normal = _sphere_normal(local) if obj.shape == "sphere" else _box_normal(local, yaws[frame])
        for j in range(3):
            normal[j][mask] = object_normal[j]
    to_light = tuple(np.float32(world.light[j]) - point[j] for j in range(3))
    distance = np.sqrt(sum(c * c for c in to_light))
    lambert = np.maximum(sum(n * c for n, c in zip(normal, to_light, strict=True)) / distance, 0.0)
    shade = world.ambient + (1 - world.ambient) * 1.4 * lambert / (1 + (distance / 6.0) ** 2)
    floor = hit == 4
    shade[floor] *= _contact_shadows(world, point, floor, objects)
    colour = np.clip(albedo * shade[..., None], 0.0, 1.0)
    return np.round(colour * 255).astype(np.uint8), depth


Vector = tuple[np.ndarray, np.ndarray, np.ndarray]  # x, y, z components of equal (broadcastable) shape


def _room_exit(world: World, origin: Vector, direction: Vector) -> tuple[np.ndarray, np.ndarray]:
    """Where rays from inside the room leave it: t `[N, P]` and the surface index `[N, P]`."""
    low, high = world.bounds
    depth, hit = None, None
    for axis in range(3):
        positive = direction[axis] > 0
        t = (np.where(positive, np.float32(high[axis]), np.float32(low[axis])) - origin[axis]) / direction[axis]
        t = np.where(t > 0, t, np.inf)  # a zero direction component gives -inf, inf or nan
        surface = 2 * axis + positive
        if depth is None:
            depth, hit = t, surface
        else:
            hit = np.where(t < depth, surface, hit)
            depth = np.minimum(t, depth)
    return depth, hit


def _sphere_hit(offset: Vector, direction: Vector, radius: float) -> np.ndarray:
    """Nearest t > 0 of rays (origin - sphere centre = `offset`) against a sphere, inf where missed."""
    a = sum(d * d for d in direction)
    half_b = sum(d * o for d, o in zip(direction, offset, strict=True))
    c = sum(o * o for o in offset) - radius**2
    discriminant = half_b**2 - a * c
    t = (-half_b - np.sqrt(discriminant)) / a
    return np.where((discriminant > 0) & (t > 0), t, np.inf)


def _box_hit(offset: Vector, direction: Vector, half: float) -> np.ndarray:
    """Nearest t > 0 of rays against the cube `[-half, half]^3` (ray in the box's frame; slab test)."""
    near, far = None, None
    for o, d in zip(offset, direction, strict=True):
        t1, t2 = (-half - o) / d, (half - o) / d
        low, high = np.minimum(t1, t2), np.maximum(t1, t2)
        near = low if near is None else np.maximum(near, low)
        far = high if far is None else np.minimum(far, high)
    return np.where((far >= near) & (near > 0), near, np.inf)


def _rotate_z(vector: Vector, angle: np.ndarray) -> Vector:
    """Rotates by `angle` (radians, broadcastable) about z."""
    cos, sin = np.cos(angle), np.sin(angle)
    x, y, z = vector
    return cos * x - sin * y, sin * x + cos * y, z


def _sphere_normal(local: Vector) -> Vector:
    length = np.sqrt(sum(c * c for c in local))
    return tuple(c / length for c in local)


def _box_normal(local: Vector, yaw: np.ndarray) -> Vector:
    """Outward normals of a cube turned by `yaw` `[M]` at points `local` `[M]` (relative to its centre)."""
    in_box = np.stack(_rotate_z(local, -yaw), -1)
    axis = np.abs(in_box).argmax(-1)
    normal = np.zeros_like(in_box)
    np.put_along_axis(normal, axis[:, None], np.sign(np.take_along_axis(in_box, axis[:, None], -1)), -1)
    return _rotate_z(tuple(normal.T), yaw)


def _contact_shadows(world: World, point: Vector, floor: np.ndarray, objects: list) -> np.ndarray:
    """Soft darkening `[M]` of the floor points `point[floor]` under each object, stronger the lower it is."""
    frame = np.nonzero(floor)[0]
    x, y = point[0][floor], point[1][floor]
    factor = np.ones(len(frame), np.float32)
    for obj, centres, _ in objects:
        below = centres[frame]
        spread = 1.3 * obj.size + 0.3 * below[:, 2]
        weight = np.exp(-((x - below[:, 0]) ** 2 + (y - below[:, 1]) ** 2) / (2 * spread**2))
        factor *= 1 - 0.55 * weight * obj.size / below[:, 2]
    return factor


def _surface_coordinates(point: Vector, surface: int, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Texture coordinates (metres) of `point[mask]` on a surface: walls (along, up), floor and ceiling (x, y)."""
    u, v = {0: (1, 2), 1: (1, 2), 2: (0, 2), 3: (0, 2)}.get(surface, (0, 1))
    return point[u][mask], point[v][mask]


def _texture(surface: Surface, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Albedo `[M, 3]` of a surface at texture coordinates `u, v` `[M]`: its pattern, then its landmarks."""
    along = u * math.cos(surface.angle) + v * math.sin(surface.angle)
    first, second = surface.colours.astype(np.float32)
    if surface.pattern == "stripes":
        mix = 0.5 + 0.5 * np.tanh(4 * np.sin(2 * np.pi * along / surface.period))
    elif surface.pattern == "checkers":
        mix = 0.5 + 0.5 * np.tanh(4 * np.sin(np.pi * u / surface.period)) * np.tanh(
            4 * np.sin(np.pi * v / surface.period)
        )
    elif surface.pattern == "gradient":
        mix = 0.5 + 0.5 * np.sin(2 * np.pi * along / surface.period)
    else:
        mix = np.zeros_like(u)
    colour = first + mix[:, None] * (second - first)
    for bu, bv, sigma, *blob_colour in surface.blobs.astype(np.float32):
        weight = np.exp(-((u - bu) ** 2 + (v - bv) ** 2) / (2 * sigma**2))[:, None]
        colour += weight * (np.asarray(blob_colour) - colour)
    for landmark in surface.landmarks:
        # Only points in the landmark's bounding square can be inside it.
        near = np.nonzero(
            (np.abs(u - landmark.centre[0]) < landmark.radius) & (np.abs(v - landmark.centre[1]) < landmark.radius)
        )[0]
        alpha = np.clip(0.5 - _landmark_distance(landmark, u[near], v[near]) / 0.03, 0.0, 1.0)[:, None]
        colour[near] += alpha * (np.asarray(COLOURS[landmark.colour], np.float32) - colour[near])
    return colour


def _landmark_distance(landmark: Landmark, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Approximate signed distance (metres, negative inside) to a landmark's outline."""
    cos, sin, r = math.cos(landmark.angle), math.sin(landmark.angle), landmark.radius
    du, dv = u - landmark.centre[0], v - landmark.centre[1]
    x, y = cos * du + sin * dv, -sin * du + cos * dv
    distance = np.hypot(x, y)
    if landmark.shape == "disc":
        return distance - r
    if landmark.shape == "ring":
        return np.abs(distance - 0.72 * r) - 0.28 * r
    if landmark.shape == "square":
        return np.maximum(np.abs(x), np.abs(y)) - 0.8 * r
    if landmark.shape == "diamond":
        return (np.abs(x) + np.abs(y)) / math.sqrt(2) - 0.7 * r
    if landmark.shape == "triangle":
        half = math.sqrt(3) / 2
        return np.maximum.reduce([-y - r / 2, half * x + y / 2 - r / 2, -half * x + y / 2 - r / 2])
    if landmark.shape == "cross":
        arm = 0.3 * r
        return np.minimum(np.maximum(np.abs(x) - r, np.abs(y) - arm), np.maximum(np.abs(x) - arm, np.abs(y) - r))
    return distance - r * (0.62 + 0.38 * np.cos(5 * np.arctan2(y, x)))  # star


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mv2v_jax.data.synthetic", description=write_preview.__doc__)
    parser.add_argument("out", type=Path, help="PNG to write")
    parser.add_argument("--preset", default="small", choices=sorted(PRESETS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--columns", type=int, default=SHEET_COLUMNS, help="frames shown per camera")
    parser.add_argument("--rows", type=int, default=None, help="cameras shown (default all)")
    args = parser.parse_args(argv)
    scene = generate_scene(args.seed, PRESETS[args.preset])
    print(scene["prompt"])
    print(write_preview(args.out, scene, args.columns, args.rows))


if __name__ == "__main__":
    main()
