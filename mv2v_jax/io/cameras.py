"""Camera trajectories: per-frame extrinsics read from pose files, validated, converted and written.

The library's convention, which every reader converts to:

- `w2c`: float64 `[F, 3, 4]` world-to-camera `[R | t]`, so `x_cam = R @ x_world + t`;
- camera axes OpenCV: x right, y down, z forward (the viewing direction);
- the world is right-handed; origin and unit are the file's (ReCamMaster: metres, see below);
- R is a rotation: max |R^T R - I| < ROTATION_TOLERANCE (1e-3: files print 6 digits, ~1e-6 error)
  and det R > 0;
- intrinsics, where a format has them, are a separate `K` `[3, 3]` in pixels,
  `[[fx, s, cx], [0, fy, cy], [0, 0, 1]]`.

`switch_camera_axes` (OpenGL/Blender <-> OpenCV) and `unreal_c2w_to_w2c` are the file conventions'
conversions; the pose algebra itself (`invert_pose`, `to_4x4`, ...) lives in `mv2v_jax.geometry`.

Formats `read_cameras` reads:

1. ReCamMaster's `camera_extrinsics.json` (its `example_test_data/cameras/` and every
   MultiCamVideo scene's `cameras/`): `{"frame0": {"cam01": "[a b c 0] [d e f 0] [g h i 0] [x y z 1] ",
   ..., "cam10": ...}, ..., "frame80": {...}}`, 81 frames of 10 cameras. Each string is the
   camera-to-world transform of Unreal Engine 5 (which rendered MultiCamVideo), printed row by row
   in UE's row-vector layout: rows 0-2 are the camera's forward, right and up axes in world
   coordinates, row 3 its position in centimetres; UE's world is x forward, y right, z up
   (left-handed). Pick a camera with `camera=1` or `camera="cam01"`. See `unreal_c2w_to_w2c`.
2. Our trajectory JSON (`write_cameras`): OpenCV w2c, optional K, the selection; self-describing.
3. Plain arrays, `.npy` or a `.json` list: `[F, 3, 4]` or `[F, 4, 4]` extrinsics whose convention
   must be stated, `convention="w2c"|"c2w"` and `axes="opencv"|"opengl"`: nothing is guessed.

Every problem raises `CameraError` naming the file and what is wrong (shape, NaN/inf, a last row
that is not [0 0 0 1], a non-rotation with its worst frame, a frame-count mismatch, an unknown
camera, malformed JSON).
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from mv2v_jax.geometry import invert_pose
from mv2v_jax.io.atomic import write_json

Convention = Literal["w2c", "c2w"]
Axes = Literal["opencv", "opengl"]

ROTATION_TOLERANCE = 1e-3  # on max |R^T R - I|
HOMOGENEOUS_TOLERANCE = 1e-6  # on the last row of a 4x4 against [0 0 0 1]
# Cameras further than this from the world origin (100 km in metres) are a unit mistake, and their
# poses lose the float32 precision the model and VideoFOV compute in (NaN or inf past ~1e19).
MAX_TRANSLATION = 1e5
RECAMMASTER_TRANSLATION_SCALE = 0.01  # ReCamMaster's `c2w[:3, 3] /= 100`: UE centimetres -> metres
TRAJECTORY_FORMAT = "mv2v_jax.trajectory"
TRAJECTORY_VERSION = 1


class CameraError(ValueError):
    """A camera file or trajectory that is not what its reader needs."""


@dataclass(frozen=True)
class Trajectory:
    """Per-frame OpenCV world-to-camera extrinsics `w2c` `[F, 3, 4]` (validated on construction),
    optional intrinsics `K` `[3, 3]`, the file it came from and the camera selected in it."""

    w2c: np.ndarray
    K: np.ndarray | None = None
    source: str = "<array>"
    selection: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "w2c", check_extrinsics(self.w2c, self.source, shapes=((3, 4),)))
        if self.K is not None:
            object.__setattr__(self, "K", check_intrinsics(self.K, self.source))

    def __len__(self) -> int:
        return len(self.w2c)

    @property
    def c2w(self) -> np.ndarray:
        """Camera-to-world `[F, 3, 4]`, OpenCV axes."""
        return invert_pose(self.w2c)

    def select(self, indices: Sequence[int]) -> Trajectory:
        """The trajectory at the given frames (e.g. `latent_frame_indices(81)`)."""
        indices = list(indices)
        if any(not -len(self) <= i < len(self) for i in indices):
            raise CameraError(f"{self.source}: frame indices {indices} out of range for {len(self)} frames")
        return Trajectory(self.w2c[indices], self.K, self.source, self.selection)


def latent_frame_indices(num_frames: int = 81, temporal_stride: int = 4) -> list[int]:
    """The video frames whose poses condition the latent frames: ReCamMaster's `range(81)[::4]`
    (21 poses for 81 frames; Wan's VAE maps frames 0, 1-4, 5-8, ... to latent frames 0, 1, 2, ...)."""
    if num_frames < 1 or (num_frames - 1) % temporal_stride:
        raise CameraError(f"num_frames={num_frames} is not of the form {temporal_stride}k + 1")
    return list(range(num_frames))[::temporal_stride]


def switch_camera_axes(pose: np.ndarray, convention: Convention) -> np.ndarray:
    """Switches `[..., 3|4, 4]` poses between OpenGL/Blender camera axes (x right, y up, z backward)
    and OpenCV axes (x right, y down, z forward), both ways: the camera's y and z axes are negated,
    which are the rotation's columns 1, 2 in a c2w and rows 1, 2 in a w2c."""
    pose = np.array(pose, np.float64)
    if convention == "c2w":
        pose[..., :3, 1:3] *= -1
    elif convention == "w2c":
        pose[..., 1:3, :] *= -1
    else:
        raise CameraError(f"unknown convention {convention!r}: use 'w2c' or 'c2w'")
    return pose


def unreal_c2w_to_w2c(c2w: np.ndarray, translation_scale: float = RECAMMASTER_TRANSLATION_SCALE) -> np.ndarray:
    """Unreal camera-to-world `[F, 3, 4]` (column vectors; camera axes forward, right, up; UE's
    left-handed world in cm) -> our OpenCV w2c `[F, 3, 4]` in a right-handed world.

    These are ReCamMaster's steps (inference_recammaster.py and train_recammaster.py), after
    `traj = np.stack(traj).transpose(0, 2, 1)` turned the stored rows into this c2w::

        c2w = c2w[:, [1, 2, 0, 3]]   # camera axes (right, up, forward)
        c2w[:3, 1] *= -1.            # (right, down, forward): OpenCV
        c2w[:3, 3] /= 100            # centimetres -> metres (`translation_scale`)

    That c2w has OpenCV camera axes in UE's left-handed world, so det R = -1. ReCamMaster only uses
    relative poses `w2c_ref @ c2w_i`, which are unchanged when the world is mirrored
    (`(S c2w_ref)^-1 (S c2w_i) = c2w_ref^-1 c2w_i`), so we mirror world y (to x forward, y left,
    z up, right-handed): R becomes a rotation, and relative poses equal ReCamMaster's exactly.
    """
    c2w = np.array(c2w, np.float64)[:, :, [1, 2, 0, 3]]
    c2w[:, :, 1] *= -1
    c2w[:, :, 3] *= translation_scale
    c2w[:, 1, :] *= -1  # mirror the world's y axis
    return invert_pose(c2w)


def check_extrinsics(matrices: Any, name: str, shapes: Sequence[tuple[int, int]] = ((3, 4), (4, 4))) -> np.ndarray:
    """Validates `[F, 3, 4]` or `[F, 4, 4]` extrinsics (either convention) -> float64 `[F, 3, 4]`.

    Refuses, naming `name` and the worst frame: another shape, NaN/inf, a last row that is not
    [0 0 0 1] (within HOMOGENEOUS_TOLERANCE), a rotation part with max |R^T R - I| >=
    ROTATION_TOLERANCE, det R <= 0 (a reflection: left-handed axes), or a translation longer than
    MAX_TRANSLATION in any axis (the camera's distance from the origin, in either convention).
    """
    try:
        if np.iscomplexobj(matrices):
            raise TypeError("complex numbers")
        matrices = np.array(matrices, np.float64)
    except (TypeError, ValueError, OverflowError) as e:
        raise CameraError(f"{name}: extrinsics are not a numeric array ({e})") from e
    if matrices.ndim != 3 or matrices.shape[1:] not in shapes or not len(matrices):
        expected = " or ".join(f"[F, {r}, {c}]" for r, c in shapes)
        raise CameraError(f"{name}: expected extrinsics {expected} with F >= 1, got shape {matrices.shape}")
    finite = np.isfinite(matrices).all(axis=(1, 2))
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise CameraError(f"{name}: NaN or inf in {len(bad)} frame(s), first {bad[:5].tolist()}")
    if matrices.shape[1] == 4:
        error = np.abs(matrices[:, 3] - [0, 0, 0, 1]).max(axis=1)
        worst = int(error.argmax())
        if error[worst] > HOMOGENEOUS_TOLERANCE:
            raise CameraError(f"{name}: frame {worst}: last row {matrices[worst, 3].tolist()} is not [0, 0, 0, 1]")
    rotation = matrices[:, :3, :3]
    with np.errstate(over="ignore", invalid="ignore"):  # huge entries overflow to inf or NaN: they fail below
        error = np.abs(np.swapaxes(rotation, 1, 2) @ rotation - np.eye(3)).max(axis=(1, 2))
    error[~np.isfinite(error)] = np.inf
    worst = int(error.argmax())
    if error[worst] >= ROTATION_TOLERANCE:
        raise CameraError(
            f"{name}: not a rotation: frame {worst} has max |R^T R - I| = {error[worst]:.3g}"
            f" (tolerance {ROTATION_TOLERANCE:g}; {int((error >= ROTATION_TOLERANCE).sum())} frame(s) fail)"
        )
    det = np.linalg.det(rotation)
    if (det <= 0).any():
        first = int(np.flatnonzero(det <= 0)[0])
        raise CameraError(
            f"{name}: frame {first} has det R = {det[first]:.3g}: a reflection, not a rotation (left-handed axes?)"
        )
    distance = np.abs(matrices[:, :3, 3]).max(axis=1)  # not the norm, whose squares overflow
    if (far := distance > MAX_TRANSLATION).any():
        worst = int(distance.argmax())
        raise CameraError(
            f"{name}: frame {worst} has a translation of {distance[worst]:.3g}, beyond {MAX_TRANSLATION:g}"
            f" ({int(far.sum())} frame(s)); translations are in the scene's units (metres): are the file's units"
            " right?"
        )
    return matrices[:, :3, :].copy()


def check_intrinsics(K: Any, name: str) -> np.ndarray:
    """Validates a pinhole `K` `[3, 3]` (finite, last row [0 0 1], K[1, 0] = 0, fx, fy > 0) -> float64."""
    try:
        K = np.array(K, np.float64)
    except (TypeError, ValueError, OverflowError) as e:
        raise CameraError(f"{name}: intrinsics K are not a numeric array ({e})") from e
    if K.shape != (3, 3) or not np.isfinite(K).all():
        raise CameraError(f"{name}: intrinsics K must be a finite [3, 3] matrix, got {K.tolist()}")
    if K[1, 0] != 0 or K[2].tolist() != [0, 0, 1] or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise CameraError(f"{name}: K {K.tolist()} is not [[fx, s, cx], [0, fy, cy], [0, 0, 1]] with fx, fy > 0")
    return K


def read_cameras(
    path: str | os.PathLike,
    *,
    camera: str | int | None = None,
    convention: Convention | None = None,
    axes: Axes | None = None,
    translation_scale: float | None = None,
    num_frames: int | None = None,
) -> Trajectory:
    """Reads a trajectory from any format of the module docstring.

    camera: ReCamMaster JSON only, which camera (`1` or `"cam01"`).
    convention, axes: plain arrays only, and required there.
    translation_scale: multiplies translations; default 0.01 for ReCamMaster (its /100) and 1 otherwise.
    num_frames: if given, the file must hold exactly this many frames.
    """
    path = Path(path)
    if not path.is_file():
        raise CameraError(f"{path}: no such file")
    data = _load(path)
    if isinstance(data, dict) and data.get("format") == TRAJECTORY_FORMAT:
        kind = "trajectory"
    elif isinstance(data, dict) and "frame0" in data:
        kind = "recammaster"
    elif isinstance(data, (list, np.ndarray)):
        kind = "array"
    else:
        raise CameraError(
            f"{path}: not a camera file this reader knows: expected a ReCamMaster camera_extrinsics.json"
            f" (keys frame0, frame1, ...), a {TRAJECTORY_FORMAT} file from write_cameras, or a list of matrices"
        )
    if kind == "recammaster" and camera is None:
        available = sorted(data["frame0"]) if isinstance(data["frame0"], dict) else []
        raise CameraError(
            f"{path}: a ReCamMaster file holds several cameras ({', '.join(available)}): choose one (--camera_index, "
            "or camera= in Python)"
        )
    if kind != "recammaster" and camera is not None:
        raise CameraError(f"{path}: camera {camera!r} asked for, but this {kind} file holds one trajectory")
    if kind != "array" and (convention is not None or axes is not None):
        raise CameraError(
            f"{path}: this {kind} file fixes its own convention; a convention and axes (--camera_convention, "
            "--camera_axes) apply to plain arrays"
        )
    default_scale = RECAMMASTER_TRANSLATION_SCALE if kind == "recammaster" else 1.0
    scale = default_scale if translation_scale is None else translation_scale
    if kind == "recammaster":
        trajectory = _read_recammaster(data, path, camera, scale)
    elif kind == "trajectory":
        trajectory = _read_trajectory(data, path, scale)
    else:
        trajectory = Trajectory(_array_to_w2c(data, path, convention, axes, scale), source=str(path))
    if num_frames is not None and len(trajectory) != num_frames:
        raise CameraError(f"{path}: holds {len(trajectory)} frames but {num_frames} were asked for")
    return trajectory


def write_cameras(path: str | os.PathLike, trajectory: Trajectory) -> Path:
    """Writes our trajectory JSON atomically; `read_cameras` reads it back bit for bit (`source` is
    recorded for people; a trajectory read back has the file it was read from as its source)."""
    path = Path(path)
    if path.suffix.lower() != ".json":
        raise CameraError(f"{path}: trajectories are written as .json")
    document = {
        "format": TRAJECTORY_FORMAT,
        "version": TRAJECTORY_VERSION,
        "convention": "w2c",
        "axes": "opencv",
        "w2c": trajectory.w2c.tolist(),
        "K": None if trajectory.K is None else trajectory.K.tolist(),
        "selection": trajectory.selection,
        "source": trajectory.source,
    }
    write_json(path, document, sort_keys=False)
    return path


def _load(path: Path) -> Any:
    if path.suffix.lower() == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise CameraError(f"{path}: not a readable .npy array ({e})") from e
        if not isinstance(array, np.ndarray):  # np.load opens a zip file as an .npz archive
            array.close()
            raise CameraError(f"{path}: an .npz archive, not a .npy array")
        return array
    if path.suffix.lower() == ".json":
        try:
            return json.loads(path.read_text())
        except UnicodeDecodeError as e:
            raise CameraError(f"{path}: not a text file ({e})") from e
        except json.JSONDecodeError as e:
            raise CameraError(f"{path}: malformed JSON at line {e.lineno} column {e.colno}: {e.msg}") from e
        except RecursionError as e:
            raise CameraError(f"{path}: JSON nested too deeply to be a camera file") from e
    raise CameraError(f"{path}: unsupported camera file type {path.suffix or '(no suffix)'}: use .json or .npy")


def _array_to_w2c(data: Any, path: Path, convention: Any, axes: Any, translation_scale: float) -> np.ndarray:
    if convention not in ("w2c", "c2w") or axes not in ("opencv", "opengl"):
        raise CameraError(
            f"{path}: a plain array of extrinsics does not say its convention: give --camera_convention w2c or c2w "
            f"(and --camera_axes opencv or opengl; in Python convention= and axes=), got convention={convention!r}, "
            f"axes={axes!r}"
        )
    matrices = check_extrinsics(data, str(path))
    if axes == "opengl":
        matrices = switch_camera_axes(matrices, convention)
    if convention == "c2w":
        matrices = invert_pose(matrices)
    matrices[:, :, 3] *= translation_scale
    return matrices


def _read_recammaster(data: dict, path: Path, camera: str | int, translation_scale: float) -> Trajectory:
    key = f"cam{camera:02d}" if isinstance(camera, int) else camera
    if unexpected := sorted(k for k in data if not re.fullmatch(r"frame(0|[1-9]\d*)", k)):
        raise CameraError(f"{path}: unexpected keys {unexpected[:5]}: a ReCamMaster file has frame0, frame1, ...")
    frames = [f"frame{i}" for i in range(len(data))]  # every key is a distinct frameN: no gap iff N < len
    if missing := [f for f in frames if f not in data]:
        raise CameraError(f"{path}: frames must be numbered without gaps; missing: {', '.join(missing[:5])}")
    stored = []
    for frame in frames:
        if not isinstance(data[frame], dict) or key not in data[frame]:
            cameras = sorted(data[frame]) if isinstance(data[frame], dict) else []
            raise CameraError(f"{path}: unknown camera {key!r} in {frame} (it has {', '.join(cameras) or 'none'})")
        text = data[frame][key]
        rows = re.findall(r"\[([^\[\]]*)\]", text) if isinstance(text, str) else []
        try:
            matrix = [[float(v) for v in row.split()] for row in rows]
        except ValueError:
            matrix = []
        if len(matrix) != 4 or any(len(row) != 4 for row in matrix):
            raise CameraError(f"{path}: {frame}/{key}: {text!r} is not four bracketed rows of four numbers")
        stored.append(matrix)
    # The rows are UE's row-vector layout: transposing gives the column-vector camera-to-world.
    c2w = check_extrinsics(np.swapaxes(np.array(stored), 1, 2), f"{path} ({key})")
    return Trajectory(unreal_c2w_to_w2c(c2w, translation_scale), source=str(path), selection=key)


def _read_trajectory(data: dict, path: Path, translation_scale: float) -> Trajectory:
    required = {"format", "version", "convention", "axes", "w2c"}
    known = required | {"K", "selection", "source"}
    if missing := required - set(data):
        raise CameraError(f"{path}: trajectory file lacks {sorted(missing)}")
    if unknown := set(data) - known:
        raise CameraError(f"{path}: unknown trajectory keys {sorted(unknown)} (known: {sorted(known)})")
    if data["version"] != TRAJECTORY_VERSION or (data["convention"], data["axes"]) != ("w2c", "opencv"):
        raise CameraError(
            f"{path}: version {data['version']}, {data['convention']}/{data['axes']}:"
            f" this reader knows version {TRAJECTORY_VERSION}, w2c/opencv"
        )
    w2c = check_extrinsics(data["w2c"], str(path), shapes=((3, 4),))
    w2c[:, :, 3] *= translation_scale
    return Trajectory(w2c, data.get("K"), str(path), data.get("selection"))
