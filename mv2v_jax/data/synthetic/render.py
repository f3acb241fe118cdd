"""A vectorised NumPy ray caster for the synthetic world: RGB and z-depth of any camera at any time.

Pixel (i, j) is centred at (j + 0.5, i + 0.5). Depth is z-depth along the camera axis in metres. Time is
normalised: frame f of F is at `f / (F - 1)` by default, so a new trajectory of a scene rendered at the
same times shows the objects where the scene's own cameras saw them. Lighting is a point light with an
ambient term and soft contact shadows under the objects.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from mv2v_jax.data.synthetic.scene_config import COLOURS
from mv2v_jax.data.synthetic.world import SURFACE_NAMES, SURFACE_NORMALS, Landmark, Surface, World
from mv2v_jax.trajectories import Vector, rotate_z

RAYS_PER_CHUNK = 1 << 18  # bounds the renderer's temporaries (~50 floats a ray)


def render(
    scene: World | Mapping[str, Any],
    w2c: np.ndarray,
    K: np.ndarray,
    size: tuple[int, int],
    times: np.ndarray | None = None,
    with_ids: bool = False,
) -> tuple[np.ndarray, ...]:
    """Renders cameras `w2c` `[..., F, 3, 4]` (OpenCV) with intrinsics `K` of a scene (its dict or its
    World) at `size = (H, W)` -> RGB uint8 `[..., F, H, W, 3]` and z-depth float32 `[..., F, H, W]`,
    and with `with_ids` what each pixel shows, int16 `[..., F, H, W]`: the surface's index in
    SURFACE_NAMES, or `len(SURFACE_NAMES) + k` for moving object k.

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
    ids = np.empty((len(cameras), height * width), np.int16)
    rays = _camera_rays(np.asarray(K, np.float64), height, width)
    step = max(1, RAYS_PER_CHUNK // (height * width))
    for start in range(0, len(cameras), step):
        chunk = slice(start, start + step)
        rgb[chunk], depth[chunk], ids[chunk] = _cast(world, cameras[chunk], rays, frame_times[chunk])
    grid = (*w2c.shape[:-2], height, width)
    out = (rgb.reshape(*grid, 3), depth.reshape(grid))
    return (*out, ids.reshape(grid)) if with_ids else out


def _camera_rays(K: np.ndarray, height: int, width: int) -> np.ndarray:
    """Camera-space ray directions `[H * W, 3]` through pixel centres, with z = 1 (so t is z-depth)."""
    v, u = np.meshgrid(np.arange(height) + 0.5, np.arange(width) + 0.5, indexing="ij")
    y = (v - K[1, 2]) / K[1, 1]
    x = (u - K[0, 2] - K[0, 1] * y) / K[0, 0]
    return np.stack([x, y, np.ones_like(x)], -1).reshape(-1, 3)


def _cast(world: World, w2c: np.ndarray, rays: np.ndarray, times: np.ndarray) -> tuple[np.ndarray, ...]:
    """Casts `rays` `[P, 3]` from N cameras `w2c` `[N, 3, 4]` at `times` `[N]` -> RGB uint8 `[N, P, 3]`,
    z-depth float32 `[N, P]`, what each ray hit `[N, P]` (`render`'s ids).

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
                t = _box_hit(rotate_z(offset, -yaws[:, None]), rotate_z(direction, -yaws[:, None]), obj.size)
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
    return np.round(colour * 255).astype(np.uint8), depth, hit


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


def _sphere_normal(local: Vector) -> Vector:
    length = np.sqrt(sum(c * c for c in local))
    return tuple(c / length for c in local)


def _box_normal(local: Vector, yaw: np.ndarray) -> Vector:
    """Outward normals of a cube turned by `yaw` `[M]` at points `local` `[M]` (relative to its centre)."""
    in_box = np.stack(rotate_z(local, -yaw), -1)
    axis = np.abs(in_box).argmax(-1)
    normal = np.zeros_like(in_box)
    np.put_along_axis(normal, axis[:, None], np.sign(np.take_along_axis(in_box, axis[:, None], -1)), -1)
    return rotate_z(tuple(normal.T), yaw)


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
