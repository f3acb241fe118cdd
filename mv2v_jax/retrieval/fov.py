"""VideoFOV (docs/paper.md, "VideoFOV retrieval"): the viewing directions a camera trajectory sees, as bitmasks.

Cameras. Per-frame world-to-camera extrinsics `[F, 3, 4]` = `[R | t]` in OpenCV axes (x right, y down,
z forward): a world point X is at `x_cam = R X + t` in camera coordinates; the camera centre is
`-R^T t`. Intrinsics `(fx, fy, cx, cy)` with the image spanning `u in [0, W]`, `v in [0, H]`
(`Intrinsics.from_hfov` puts the principal point at the centre, so `hfov` is exactly the angle from
`u = 0` to `u = W`).

Reference frame. The paper makes every pose relative to the target trajectory's first frame with
`R' = R_ref^T R, t' = R_ref^T (t - t_ref)`. That formula composes camera-to-world poses
(`P' = P_ref^-1 P`). In our world-to-camera convention the same change of world frame reads
`R'_i = R_i R_ref^T`, `t'_i = t_i - R'_i t_ref` (`relative_to`): the new world frame is the reference
camera's own frame, the reference camera becomes `[I | 0]` and its centre the origin.

Grid. `N_THETA x N_PHI = 180 x 360 = 64,800` unit directions at cell centres, in the reference
camera's axes: `theta_i = (i + 1/2) pi / 180` is the polar angle from the reference camera's up axis
(-y), `phi_j = -pi + (j + 1/2) 2 pi / 360` the azimuth from forward (+z) towards right (+x), and
`d(theta, phi) = (sin theta sin phi, -cos theta, sin theta cos phi)`. Direction `n = i * 360 + j`
(theta-major). Poles up and down put the grid's dense rows where cameras rarely look.

Area. A lat-long cell's solid angle shrinks towards the poles (row i spans `cos theta_i - cos
theta_(i+1)` of the sphere's height), so counting cells would weigh a polar direction up to 115 times
more than an equatorial one (default grid) and make scores depend on where the pole points. Every size
`|F|` is therefore the fraction of the sphere F covers: the sum of its cells' solid angles over 4 pi
(`cell_areas`; all cells sum to 1), in integer units of 2^-30 of the sphere (`AREA_UNITS`; rounding
moves a polar cell's area by < 0.3%, the sphere's by < 4e-5), so that sums are exact and fast. The
grid and the bits are the paper's; only their weights are ours.

Visibility. A direction d is visible in frame i if `x = x_cam` has `z > 0` and `(fx x/z + cx,
fy y/z + cy)` lies in `[0, W] x [0, H]`. Which point is projected is the `radius` parameter:
- `radius = r` (default 1.0, the paper's unit sphere): the point `c_ref + r d` on the sphere of
  radius r around the target's first camera, `x_cam = R'_i (r d) + t'_i`. The paper centres the sphere
  at a camera position and transforms translations, which only matters for points at finite
  distance; r is in scene units (ReCamMaster's poses are in metres: UE centimetres / 100).
- `radius = inf`: the direction at infinity, `x_cam = R'_i d`, translation ignored (scale-free, a
  panorama-style reading).
Both are one formula, `x_cam ~ R'_i d + t'_i / r`, since z > 0 and x/z do not change under positive
scaling. With z > 0 the image test is four linear inequalities in x_cam (`fx x + cx z >= 0`,
`fx x + (cx - W) z <= 0`, the same for y), and on the lat-long grid each is
`sin(theta) a(phi) + b(theta)`, so a frame costs one multiply-add per direction and inequality.

Bitmask layout. Direction n is bit `n % 32` (least significant first) of uint32 word `n // 32`:
2,025 words = 8,100 bytes for the default grid. As bytes (little-endian) this is exactly
`np.packbits(bits, bitorder="little")`. Bits past the grid's last direction are 0 and carry no area.
The bits mean what they meant before scores were area-weighted, so stored bitmasks stay valid.

Scores. `s_overlap = |Ft & Fm| / |Ft | Fm|`, `s_contain = |Ft & Fm| / |Ft|`,
`score = (s_overlap + s_contain) / 2`, with `|.|` the area above, by popcount on the packed words
(`fov_scores`, one jitted call for all entries). A 32-bit word spans at most `ceil(32 / n_phi) + 1`
grid rows (2 on the default grid), so a set's area is, per word and row piece, the popcount of the
word under that piece's mask times the row's cell area (`word_weights`). An empty target set scores 0
against everything.

Reusing stored bitmasks. A memory video's set depends on the target: the sphere is centred at the
target's first camera and the grid is aligned with it. So for a new target each entry's set is
recomputed from its stored cameras, relative to the new target's first frame (`fov_bitmasks`, all
entries' frames in one jitted call). An entry's bitmask relative to its own first frame (kept in
the bank) equals that recomputation exactly when its first camera is the target's first camera
(same rotation, and same position unless radius is inf), as with ReCamMaster's preset trajectories,
which all start at the input video's camera; `memory_bitmasks` reuses those and recomputes the rest.
Scoring itself (`fov_scores`) always runs on bitmasks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import cache, partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mv2v_jax.geometry import HIGHEST, Intrinsics, relative_to
from mv2v_jax.retrieval.ranking import TopK, top_k

N_THETA, N_PHI = 180, 360
GRID = (N_THETA, N_PHI)
WORD_BITS = 32
AREA_UNITS = 2**30  # areas are exact int32 sums of cell areas rounded to 2^-30 of the sphere


class FovScores(NamedTuple):
    """Per memory entry, `[M]` float32."""

    overlap: jax.Array
    containment: jax.Array
    score: jax.Array


def num_words(grid: tuple[int, int] = GRID) -> int:
    """uint32 words of one packed bitmask."""
    return -(-grid[0] * grid[1] // WORD_BITS)


def grid_angles(grid: tuple[int, int] = GRID) -> tuple[np.ndarray, np.ndarray]:
    """Cell-centre polar angles `theta [n_theta]` and azimuths `phi [n_phi]` (radians, float64)."""
    n_theta, n_phi = grid
    theta = (np.arange(n_theta) + 0.5) * np.pi / n_theta
    phi = -np.pi + (np.arange(n_phi) + 0.5) * 2 * np.pi / n_phi
    return theta, phi


def grid_directions(grid: tuple[int, int] = GRID) -> np.ndarray:
    """`[n_theta * n_phi, 3]` unit directions in the reference camera's axes, theta-major."""
    theta, phi = np.meshgrid(*grid_angles(grid), indexing="ij")
    directions = np.stack([np.sin(theta) * np.sin(phi), -np.cos(theta), np.sin(theta) * np.cos(phi)], -1)
    return directions.reshape(-1, 3)


def cell_areas(grid: tuple[int, int] = GRID) -> np.ndarray:
    """`[n_theta]` solid angle of one cell of each grid row, as a fraction of the sphere (float64).

    Row i spans polar angles `[i, i + 1] pi / n_theta`: `(cos theta_i - cos theta_(i+1)) / (2 n_phi)`.
    """
    n_theta, n_phi = grid
    return -np.diff(np.cos(np.arange(n_theta + 1) * np.pi / n_theta)) / (2 * n_phi)


class WordWeights(NamedTuple):
    """How to measure packed sets of a grid: a set's area is `sum(popcount(words & masks) * units)`
    (int32), and the whole sphere's is `sphere`."""

    masks: np.ndarray  # uint32 [S, W]: piece s of word w, its bits in grid row `32 w // n_phi + s`
    units: np.ndarray  # int32 [S, W]: the cell area of that row in units of 2^-30 of the sphere
    sphere: int


@cache
def word_weights(grid: tuple[int, int] = GRID) -> WordWeights:
    """The area weights of packed bits for `grid`; bits past the grid are in no piece."""
    n_theta, n_phi = grid
    words = num_words(grid)
    bit = np.arange(words * WORD_BITS).reshape(words, WORD_BITS)
    row = bit // n_phi
    piece = row - row[:, :1]
    pieces = int(piece.max()) + 1
    masks = np.zeros((pieces, words), np.uint32)
    units = np.zeros((pieces, words), np.int32)
    shifts = np.left_shift(np.uint32(1), np.arange(WORD_BITS, dtype=np.uint32))
    row_units = np.append(np.round(cell_areas(grid) * AREA_UNITS), 0)  # padding bits' "row" n_theta has none
    for s in range(pieces):
        inside = (piece == s) & (bit < n_theta * n_phi)
        masks[s] = np.sum(np.where(inside, shifts, np.uint32(0)), axis=1, dtype=np.uint32)
        units[s] = np.where(inside.any(axis=1), row_units[np.minimum(row[:, 0] + s, n_theta)], 0)
    masks.flags.writeable = units.flags.writeable = False  # cached: shared by every caller
    return WordWeights(masks, units, int(np.sum(np.bitwise_count(masks) * units.astype(np.int64))))


def pack_bits(bits: jax.Array) -> jax.Array:
    """bool `[..., N]` -> uint32 `[..., ceil(N / 32)]`, bit n at word n // 32, bit n % 32."""
    pad = -bits.shape[-1] % WORD_BITS
    bits = jnp.pad(bits, [(0, 0)] * (bits.ndim - 1) + [(0, pad)]).astype(jnp.uint32)
    words = bits.reshape(*bits.shape[:-1], -1, WORD_BITS) << jnp.arange(WORD_BITS, dtype=jnp.uint32)
    return jnp.sum(words, axis=-1, dtype=jnp.uint32)  # distinct bits: the sum is the OR


def unpack_bits(words: np.ndarray, count: int = N_THETA * N_PHI) -> np.ndarray:
    """uint32 `[..., W]` -> bool `[..., count]` (NumPy; the inverse of `pack_bits`)."""
    words = np.asarray(words, np.uint32)
    bits = (words[..., None] >> np.arange(WORD_BITS, dtype=np.uint32)) & 1
    return bits.reshape(*words.shape[:-1], -1)[..., :count].astype(bool)


def _image_inequalities(intrinsics: Intrinsics) -> jax.Array:
    """`[5, 3]` rows c with `c . x_cam > 0` (first) and `>= 0` (others) iff x_cam projects into the image."""
    fx, fy, cx, cy, height, width = (jnp.asarray(v, jnp.float32) for v in intrinsics)
    zero, one = jnp.zeros((), jnp.float32), jnp.ones((), jnp.float32)
    return jnp.stack(
        [
            jnp.stack([zero, zero, one]),  # z > 0
            jnp.stack([fx, zero, cx]),  # u >= 0
            jnp.stack([-fx, zero, width - cx]),  # u <= W
            jnp.stack([zero, fy, cy]),  # v >= 0
            jnp.stack([zero, -fy, height - cy]),  # v <= H
        ]
    )


def _visible(relative: jax.Array, intrinsics: Intrinsics, radius, frames_valid: jax.Array, grid) -> jax.Array:
    """bool `[n_theta * n_phi]`: directions seen by any valid frame of `relative [F, 3, 4]`."""
    theta, phi = (jnp.asarray(a, jnp.float32) for a in grid_angles(grid))
    rows = _image_inequalities(intrinsics)
    a = jnp.einsum("ck,fkj->fcj", rows, relative[..., :3], precision=HIGHEST)  # [F, 5, 3]
    b = jnp.einsum("ck,fk->fc", rows, relative[..., 3], precision=HIGHEST) / radius  # [F, 5]
    # Inequality value at d(theta, phi): sin(theta) * column(phi) + row(theta).
    column = a[..., 0, None] * jnp.sin(phi) + a[..., 2, None] * jnp.cos(phi)  # [F, 5, n_phi]
    row = b[..., None] - a[..., 1, None] * jnp.cos(theta)  # [F, 5, n_theta]
    value = jnp.sin(theta)[:, None] * column[:, :, None, :] + row[..., None]  # [F, 5, n_theta, n_phi]
    inside = (value[:, 0] > 0) & jnp.all(value[:, 1:] >= 0, axis=1)
    return jnp.any(inside & frames_valid[:, None, None], axis=0).reshape(-1)


def _check_shape(name: str, array, shape: tuple[int | None, ...]) -> None:
    """Shape, and outside jit finite values: NaN cameras would see nothing, silently."""
    got = jnp.shape(array)
    if len(got) != len(shape) or any(s is not None and s != g for s, g in zip(shape, got, strict=True)):
        wanted = "[" + ", ".join("?" if s is None else str(s) for s in shape) + "]"
        raise ValueError(f"VideoFOV {name} must have shape {wanted}, got {tuple(got)}")
    if not isinstance(array, jax.core.Tracer) and not np.isfinite(np.asarray(array, np.float32)).all():
        raise ValueError(f"VideoFOV {name} contain NaN or inf")


def _check_intrinsics(intrinsics: Intrinsics) -> None:
    """Finite, with positive focal lengths and image size (outside jit)."""
    if any(isinstance(v, jax.core.Tracer) for v in intrinsics):
        return
    fx, fy, cx, cy, height, width = map(float, intrinsics)
    if not all(map(math.isfinite, (fx, fy, cx, cy, width, height))) or min(fx, fy, width, height) <= 0:
        raise ValueError(f"VideoFOV intrinsics must be finite with fx, fy, width, height > 0, got {intrinsics}")


def fov_bitmask(
    cameras: jax.Array,
    intrinsics: Intrinsics,
    reference: jax.Array | None = None,
    radius: float = 1.0,
    frames_valid: jax.Array | None = None,
    grid: tuple[int, int] = GRID,
) -> jax.Array:
    """Packed VideoFOV set of one trajectory: uint32 `[num_words(grid)]`.

    Args:
      cameras: `[F, 3, 4]` world-to-camera extrinsics.
      intrinsics: shared by all frames (the paper fixes them at inference).
      reference: `[3, 4]` the target's first camera; default `cameras[0]` (the target's own set).
      radius: sphere radius in scene units, or `inf` for directions at infinity (module docstring).
      frames_valid: `[F]` bool, False for padding frames; default all.
    """
    _check_shape("cameras", cameras, (None, 3, 4))
    reference = cameras[0] if reference is None else reference
    frames_valid = None if frames_valid is None else jnp.asarray(frames_valid)[None]
    return fov_bitmasks(jnp.asarray(cameras)[None], intrinsics, reference, radius, frames_valid, grid, chunk=1)[0]


def fov_bitmasks(
    cameras: jax.Array,
    intrinsics: Intrinsics,
    reference: jax.Array,
    radius: float = 1.0,
    frames_valid: jax.Array | None = None,
    grid: tuple[int, int] = GRID,
    chunk: int = 8,
) -> jax.Array:
    """Packed sets of M memory trajectories relative to one target: uint32 `[M, num_words(grid)]`.

    `cameras [M, F, 3, 4]` (pad shorter trajectories and mark the padding in `frames_valid [M, F]`),
    `reference [3, 4]` the target's first camera. One jitted call; entries run `chunk` at a time
    (`lax.map`), which bounds the working set at `chunk * F * 5 * n_theta * n_phi` values.
    """
    _check_shape("cameras", cameras, (None, None, 3, 4))
    _check_shape("reference", reference, (3, 4))
    if frames_valid is not None:
        _check_shape("frames_valid", frames_valid, jnp.shape(cameras)[:2])
    if isinstance(radius, int | float) and not radius > 0:
        raise ValueError(f"VideoFOV sphere radius must be > 0 (or inf), got {radius}")
    _check_intrinsics(intrinsics)
    return _bitmasks(cameras, intrinsics, reference, radius, frames_valid, grid=grid, chunk=chunk)


@partial(jax.jit, static_argnames=("grid", "chunk"))
def _bitmasks(cameras, intrinsics, reference, radius, frames_valid, grid, chunk) -> jax.Array:
    frames_valid = jnp.ones(cameras.shape[:2], bool) if frames_valid is None else frames_valid
    relative = relative_to(jnp.asarray(cameras, jnp.float32), jnp.asarray(reference, jnp.float32))

    def entry(args):
        trajectory, valid = args
        return pack_bits(_visible(trajectory, intrinsics, radius, valid, grid))

    return jax.lax.map(entry, (relative, frames_valid), batch_size=chunk)


def _check_words(name: str, words, grid: tuple[int, int]) -> None:
    if jnp.result_type(words) != jnp.uint32:
        raise ValueError(f"VideoFOV {name} bitmask must be packed uint32 words, got {jnp.result_type(words)}")
    if not jnp.shape(words) or jnp.shape(words)[-1] != num_words(grid):
        raise ValueError(
            f"VideoFOV {name} bitmask has shape {tuple(jnp.shape(words))}; the {grid[0]} x {grid[1]} grid "
            f"packs into {num_words(grid)} words"
        )


def fov_fraction(bitmask: jax.Array, grid: tuple[int, int] = GRID) -> jax.Array:
    """The fraction of the sphere a packed set `[..., W]` covers (float32 `[...]`), its `|F|` in the scores."""
    _check_words("bitmask", bitmask, grid)
    return _fraction(bitmask, grid)


def fov_scores(target: jax.Array, memory: jax.Array, grid: tuple[int, int] = GRID) -> FovScores:
    """Overlap, containment and their mean for `memory [M, W]` against `target [W]` (packed uint32).

    One jitted call over all entries: area-weighted popcounts of the AND / OR of the packed words.
    """
    _check_words("target", target, grid)
    _check_words("memory", memory, grid)
    if jnp.ndim(target) != 1 or jnp.ndim(memory) != 2:  # integer words are finite: no _check_shape
        raise ValueError(
            f"VideoFOV bitmasks must be target [{num_words(grid)}] and memory [?, {num_words(grid)}], got "
            f"{tuple(jnp.shape(target))} and {tuple(jnp.shape(memory))}"
        )
    return _scores(target, memory, grid)


def _area(words: jax.Array, grid: tuple[int, int]) -> jax.Array:
    """`[..., W]` packed words -> `[...]` int32 area in units of `word_weights(grid).sphere`."""
    masks, units, _ = word_weights(grid)
    # One integer reduction per row piece: exact, and on CPU an order of magnitude faster than a float
    # reduction or a [..., S, W] broadcast.
    pieces = (jax.lax.population_count(words & masks[s]).astype(jnp.int32) * units[s] for s in range(len(masks)))
    return sum(jnp.sum(p, axis=-1, dtype=jnp.int32) for p in pieces)


@partial(jax.jit, static_argnames="grid")
def _fraction(words: jax.Array, grid: tuple[int, int]) -> jax.Array:
    return _area(words, grid).astype(jnp.float32) / word_weights(grid).sphere


@partial(jax.jit, static_argnames="grid")
def _scores(target: jax.Array, memory: jax.Array, grid: tuple[int, int]) -> FovScores:
    intersection, union = _area(memory & target, grid), _area(memory | target, grid)
    target_size = _area(target, grid)
    overlap = jnp.where(union > 0, intersection / jnp.maximum(union, 1), 0.0).astype(jnp.float32)
    containment = jnp.where(target_size > 0, intersection / jnp.maximum(target_size, 1), 0.0).astype(jnp.float32)
    return FovScores(overlap, containment, 0.5 * overlap + 0.5 * containment)


def memory_bitmasks(
    memory_cameras: Sequence[np.ndarray],
    reference: np.ndarray,
    intrinsics: Intrinsics,
    radius: float = 1.0,
    stored: Sequence[np.ndarray | None] | None = None,
    grid: tuple[int, int] = GRID,
    atol: float = 1e-6,
) -> np.ndarray:
    """uint32 `[M, num_words(grid)]`: each memory trajectory's set relative to the target camera `reference`.

    `memory_cameras[m]` is `[F_m, 3, 4]`; `stored[m]`, when given, is that entry's bitmask relative to
    its own first camera (computed with the same intrinsics, radius and grid) and is used as is when
    that camera is `reference` (within `atol`). The others are recomputed in one `fov_bitmasks` call,
    padded to a power-of-two count and the longest trajectory so that few shapes get compiled.
    """
    reference = np.asarray(reference, np.float32)
    stored = [None] * len(memory_cameras) if stored is None else list(stored)
    if len(stored) != len(memory_cameras):
        raise ValueError(f"{len(stored)} stored bitmasks for {len(memory_cameras)} memory trajectories")
    trajectories = [np.asarray(cameras, np.float32) for cameras in memory_cameras]
    for m, cameras in enumerate(trajectories):
        if cameras.ndim != 3 or cameras.shape[1:] != (3, 4) or cameras.shape[0] == 0:
            raise ValueError(f"memory trajectory {m}: cameras must be [F, 3, 4] with F >= 1, got {cameras.shape}")
        if not np.isfinite(cameras).all():
            raise ValueError(f"memory trajectory {m}: cameras contain NaN or inf")
        if stored[m] is not None and np.shape(stored[m]) != (num_words(grid),):
            raise ValueError(f"memory trajectory {m}: stored bitmask {np.shape(stored[m])}, not [{num_words(grid)}]")
    _check_shape("reference", reference, (3, 4))
    result = np.zeros((len(trajectories), num_words(grid)), np.uint32)
    # Reusable: a stored mask whose entry starts at the reference (position irrelevant at infinity).
    columns = slice(0, 3) if math.isinf(radius) else slice(0, 4)
    firsts = np.stack([cameras[0] for cameras in trajectories]) if trajectories else np.zeros((0, 3, 4))
    same_start = np.all(np.abs(firsts[:, :, columns] - reference[:, columns]) <= atol, axis=(1, 2))
    reuse = [m for m, bits in enumerate(stored) if bits is not None and same_start[m]]
    if reuse:
        result[reuse] = np.stack([stored[m] for m in reuse])
    todo = [(m, trajectories[m]) for m in sorted(set(range(len(trajectories))) - set(reuse))]
    if todo:
        frames = max(c.shape[0] for _, c in todo)
        count = 1 << (len(todo) - 1).bit_length()
        padded = np.zeros((count, frames, 3, 4), np.float32)
        valid = np.zeros((count, frames), bool)
        for row, (_, cameras) in enumerate(todo):
            padded[row, : len(cameras)], valid[row, : len(cameras)] = cameras, True
        words = np.asarray(fov_bitmasks(padded, intrinsics, reference, radius, valid, grid=grid))
        result[[m for m, _ in todo]] = words[: len(todo)]
    return result


def retrieve_by_fov(
    target_cameras: np.ndarray,
    memory_cameras: Sequence[np.ndarray],
    k: int,
    intrinsics: Intrinsics,
    radius: float = 1.0,
    stored: Sequence[np.ndarray | None] | None = None,
    grid: tuple[int, int] = GRID,
) -> tuple[TopK, FovScores]:
    """The k memory trajectories (rows of `memory_cameras`, oldest first) that best cover the target.

    Returns the selection (best first, ties to the more recent entry) and every entry's scores.
    """
    target_cameras = np.asarray(target_cameras, np.float32)
    target = fov_bitmask(target_cameras, intrinsics, radius=radius, grid=grid)
    memory = memory_bitmasks(memory_cameras, target_cameras[0], intrinsics, radius, stored, grid)
    scores = fov_scores(target, jnp.asarray(memory), grid)
    return top_k(scores.score, k), scores
