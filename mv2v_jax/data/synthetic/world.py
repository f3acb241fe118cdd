"""The world of a synthetic scene: a textured room and the objects moving in it, drawn from a seed.

A room (x in [-a, a], y in [-b, b], z in [0, h], metres, z up) has four walls, a floor and a ceiling,
and unique painted landmarks (a shape and colour appear once per scene), so places are recognisable.
The surfaces are either
- "patterns": each its own procedural texture (stripes, checkers, colour blobs, a gradient; the four
  walls get four different ones), with periods of 0.3-0.8 m; or
- "palette": each wall one flat colour, four different ones drawn from a palette, with large landmarks:
  content a coarse latent codec carries (a few pixels per stripe is below what the small models' codec
  resolves) and that a view which never saw a wall cannot predict.
Spheres and boxes of distinct colours move on smooth paths round the room's centre, clear of the region
the cameras stand in. Everything is drawn from one `np.random.Generator`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from mv2v_jax.data.synthetic.scene_config import COLOURS, MAX_WOBBLE, OBJECT_COLOURS, SceneConfig

WALL_PATTERNS = ("stripes", "checkers", "blobs", "gradient")
WALL_PALETTE = OBJECT_COLOURS  # "palette" walls: four different ones of these
FLOOR_PALETTE = ("grey", "brown", "white")  # "palette" floors; the ceiling is white
PALE_GREY = 0.75  # what SceneConfig.palette_mix blends "palette" surfaces towards
FLOOR_PATTERNS = ("checkers", "stripes")
CEILING_PATTERNS = ("gradient", "blobs")
LANDMARK_COUNTS = (2, 2, 2, 2, 1, 1)  # per surface, in SURFACE_NAMES order
LANDMARK_SHAPES = ("disc", "ring", "square", "diamond", "triangle", "cross", "star")
# Surfaces in index order: walls at x = -a, x = +a, y = -b, y = +b, then floor (z = 0), ceiling (z = h).
SURFACE_NAMES = ("wall x-", "wall x+", "wall y-", "wall y+", "floor", "ceiling")
SURFACE_NORMALS = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], np.float32)  # inward
MAX_OBJECT_TRIES = 100  # paths drawn for an object before leaving it out
OBJECT_CHECK_TIMES = 65  # times in [0, 1] at which object paths are checked for collisions


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


def sample_world(seed: int | Sequence[int], config: SceneConfig) -> World:
    """The world of `generate_scene(seed, config)` without cameras or rendering (it is drawn first)."""
    return draw_world(np.random.default_rng(seed), config)


def draw_world(rng: np.random.Generator, config: SceneConfig) -> World:
    """A world drawn from `rng` (which it advances: scenes draw their cameras from it next)."""
    a, b = rng.uniform(*config.room_half_extent, size=2)
    height = rng.uniform(*config.room_height)
    extents = [(b, height), (b, height), (a, height), (a, height), (a, b), (a, b)]
    surfaces = (_palette_surfaces if config.surfaces == "palette" else _pattern_surfaces)(rng, config, extents)
    objects = _sample_objects(rng, config, min(a, b))
    light = np.array([rng.uniform(-0.5, 0.5) * a, rng.uniform(-0.5, 0.5) * b, height - 0.3])
    return World((float(a), float(b)), float(height), tuple(surfaces), objects, light, config.ambient)


def pale(colours: np.ndarray, mix: float) -> np.ndarray:
    """`colours` `[..., 3]` blended `mix` of the way towards PALE_GREY ("palette" surfaces)."""
    return (1 - mix) * np.asarray(colours, np.float64) + mix * PALE_GREY


def _pattern_surfaces(rng: np.random.Generator, config: SceneConfig, extents) -> list[Surface]:
    patterns = [*rng.permutation(WALL_PATTERNS), rng.choice(FLOOR_PATTERNS), rng.choice(CEILING_PATTERNS)]
    # Every (shape, colour) landmark appears at most once in a scene, so it names a place.
    combos = [(s, c) for s in LANDMARK_SHAPES for c in COLOURS if c != "white"]
    chosen = rng.choice(len(combos), size=sum(LANDMARK_COUNTS), replace=False)
    surfaces, used = [], 0
    for index, (pattern, count, extent) in enumerate(zip(patterns, LANDMARK_COUNTS, extents, strict=True)):
        picks = [combos[i] for i in chosen[used : used + count]]
        used += count
        surfaces.append(
            _sample_surface(rng, SURFACE_NAMES[index], str(pattern), picks, extent, index >= 4, config.landmark_radius)
        )
    return surfaces


def _palette_surfaces(rng: np.random.Generator, config: SceneConfig, extents) -> list[Surface]:
    """Flat walls of four different palette colours, a floor and a white ceiling, each blended
    `config.palette_mix` towards PALE_GREY; each surface's landmarks (full colours) differ from its
    colour, and no (shape, colour) landmark appears twice."""
    walls = [str(c) for c in rng.choice(WALL_PALETTE, size=4, replace=False)]
    names = [*walls, str(rng.choice(FLOOR_PALETTE)), "white"]
    taken: set[tuple[str, str]] = set()
    surfaces = []
    for index, (colour, count, extent) in enumerate(zip(names, LANDMARK_COUNTS, extents, strict=True)):
        combos = [
            (s, c) for s in LANDMARK_SHAPES for c in COLOURS if c not in (colour, "white") and (s, c) not in taken
        ]
        picks = [combos[i] for i in rng.choice(len(combos), size=count, replace=False)]
        taken.update(picks)
        surface = _surface(
            rng, SURFACE_NAMES[index], "plain", (colour, colour), picks, extent, index >= 4, config.landmark_radius
        )
        surfaces.append(replace(surface, colours=pale(surface.colours, config.palette_mix)))
    return surfaces


def _sample_surface(
    rng: np.random.Generator,
    name: str,
    pattern: str,
    landmarks: Sequence[tuple[str, str]],
    extent: tuple[float, float],
    horizontal: bool,
    landmark_radius: tuple[float, float],
) -> Surface:
    """A patterned surface whose colours differ from its landmarks', so every landmark stands out."""
    free = [c for c in COLOURS if c not in {colour for _, colour in landmarks}]
    names = tuple(str(c) for c in rng.choice(free, size=2, replace=False))
    return _surface(rng, name, pattern, names, landmarks, extent, horizontal, landmark_radius)


def _surface(
    rng: np.random.Generator,
    name: str,
    pattern: str,
    names: tuple[str, str],
    landmarks: Sequence[tuple[str, str]],
    extent: tuple[float, float],
    horizontal: bool,
    landmark_radius: tuple[float, float],
) -> Surface:
    """extent: the surface's half-width along u and, for walls, the full height along v (v from 0)."""
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
        radius = rng.uniform(*landmark_radius)
        margin = max(0.6, radius + 0.15)  # off the edges, whole
        for _ in range(100):  # keep landmarks apart and off the edges
            centre = (rng.uniform(-half_u + margin, half_u - margin), rng.uniform(v_low + margin, v_high - margin))
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
