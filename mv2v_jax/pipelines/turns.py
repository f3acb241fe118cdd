"""Turn requests: what one `sample.py` command asks of a session, read and checked in full before
anything is loaded or created.

A turns file (`--turns turns.json`) is a UTF-8 JSON list of objects, one per turn, run in order:

    [{"camera": "pan_left", "prompt": "a sunny room", "seed": 3},
     {"camera": "cameras/orbit.json"},
     {"camera": "camera_extrinsics.json", "camera_index": 3}]

Keys (`TURN_KEYS`):
- camera (required): a preset name (pipelines.presets) or a camera file (io.cameras); a relative path
  is looked up next to the turns file first, then from the current folder;
- prompt: the text prompt (default: `--prompt`);
- seed: the noise seed, an integer in 0..2**32 - 1 (default: `--seed` plus the turn's index from 0);
- camera_index, camera_convention, camera_axes: as the flags of the same names, for this turn's camera
  file (default: the flags').
Any other key, a value of the wrong type, an empty list or a seed out of range is an error naming the
file, the turn and the key.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from pathlib import Path
from typing import Any

import numpy as np

from mv2v_jax.config import check_text

MAX_SEED = 2**32 - 1  # JAX's PRNG keys take 32 bits of a seed: a larger one would repeat a smaller one
CONVENTIONS, AXES = ("w2c", "c2w"), ("opencv", "opengl")
TURN_KEYS = {
    "camera": "a preset name or a camera file",
    "prompt": "a string",
    "seed": f"an integer in 0..{MAX_SEED}",
    "camera_index": "a camera of a ReCamMaster file: an integer or a name like 'cam03'",
    "camera_convention": f"one of {list(CONVENTIONS)}",
    "camera_axes": f"one of {list(AXES)}",
}


class TurnError(ValueError):
    """A turn request that cannot be run; the message names where it came from and the problem."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class CameraRequest:
    """A trajectory as asked: a preset name or a camera file, and how to read the file."""

    camera: str
    index: int | str | None = None
    convention: str | None = None
    axes: str | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class Turn:
    """One novel-view-synthesis turn: `cameras` w2c `[F, 3, 4]` per video frame in the session's frame
    (pipelines.nvs), `camera` the trajectory's name as the user gave it, the prompt and the seed."""

    cameras: np.ndarray
    camera: str = ""
    prompt: str = ""
    seed: int = 0

    def __post_init__(self):
        check_seed(self.seed, "the turn's seed")
        if not isinstance(self.prompt, str):
            raise TurnError(f"the turn's prompt must be a string, got {self.prompt!r}")


def check_seed(seed: Any, where: str) -> int:
    """`seed` if it is an integer in 0..MAX_SEED, else a TurnError naming `where`."""
    if not isinstance(seed, int | np.integer) or isinstance(seed, bool) or not 0 <= seed <= MAX_SEED:
        raise TurnError(f"{where}: {seed!r} is not a seed; seeds are integers in 0..{MAX_SEED} (2**32 - 1)")
    return int(seed)


def _check_value(key: str, value: Any, where: str) -> Any:
    if key == "seed":
        return check_seed(value, f"{where} 'seed'")
    if key == "camera_index":
        ok = isinstance(value, str | int) and not isinstance(value, bool)
    elif key == "camera_convention":
        ok = value in CONVENTIONS
    elif key == "camera_axes":
        ok = value in AXES
    else:
        ok = isinstance(value, str) and (key != "camera" or value.strip() != "")
    if not ok:
        raise TurnError(f"{where} {key!r} must be {TURN_KEYS[key]}, got {value!r}")
    if key == "prompt":
        check_text(value, f"{where} 'prompt'")  # a JSON escape such as "\udc80" is no character
    return value


def read_turns(
    path: str | Path, *, prompt: str, seed: int, camera: CameraRequest
) -> list[tuple[CameraRequest, str, int]]:
    """The turns of a turns file as `(camera, prompt, seed)`, checked: the format of the module docstring;
    `prompt`, `seed` and `camera`'s reading options are the defaults a turn may override."""
    path = Path(path)
    try:
        turns = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise TurnError(f"{path}: no such turns file") from e
    except IsADirectoryError as e:
        raise TurnError(f"{path}: a folder, not a turns file") from e
    except UnicodeDecodeError as e:
        raise TurnError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}): save it as UTF-8") from e
    except json.JSONDecodeError as e:
        message = f"malformed JSON at line {e.lineno}: {e.msg}"
        raise TurnError(f"{path}: not a JSON list of turns ({message})") from e
    except RecursionError as e:
        raise TurnError(f"{path}: JSON nested too deeply to be a list of turns") from e
    if not isinstance(turns, list) or not all(isinstance(t, dict) for t in turns):
        raise TurnError(f"{path}: expected a JSON list of objects with {', '.join(TURN_KEYS)}")
    if not turns:
        raise TurnError(f"{path}: the list of turns is empty: nothing to do")
    requests = []
    for i, turn in enumerate(turns):
        where = f"{path}: turn {i + 1}"
        if unknown := [key for key in turn if key not in TURN_KEYS]:
            hints = [difflib.get_close_matches(key, TURN_KEYS, n=1) for key in unknown]
            said = ", ".join(
                f"{key!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
                for key, hint in zip(unknown, hints, strict=True)
            )
            raise TurnError(f"{where} has unknown key(s) {said}; a turn's keys are {', '.join(TURN_KEYS)}")
        if "camera" not in turn:
            raise TurnError(f"{where} has no 'camera' (a preset name or a camera file)")
        values = {key: _check_value(key, value, where) for key, value in turn.items()}
        if seed + i > MAX_SEED and "seed" not in values:
            check_seed(seed + i, f"{where}: --seed {seed} + {i}")
        spec = _relative_to(values["camera"], path.parent)
        request = CameraRequest(
            camera=spec,
            index=values.get("camera_index", camera.index),
            convention=values.get("camera_convention", camera.convention),
            axes=values.get("camera_axes", camera.axes),
        )
        requests.append((request, values.get("prompt", prompt), values.get("seed", seed + i)))
    return requests


def _relative_to(camera: str, folder: Path) -> str:
    """A camera file named relative to the turns file, if it is there; else the spec as given."""
    beside = folder / camera
    return str(beside) if not Path(camera).is_absolute() and beside.is_file() else camera


def load_cameras(request: CameraRequest, frames: int) -> np.ndarray:
    """A preset name or a camera file -> w2c `[frames, 3, 4]` in the session's frame, checked
    (io.cameras: shape, NaN/inf, rotations, translations, frame count), or a CameraError naming it."""
    from mv2v_jax.io.cameras import CameraError, read_cameras
    from mv2v_jax.pipelines.presets import AMOUNTS, preset_trajectory

    if request.camera in AMOUNTS:
        options = {"camera_index": request.index, "camera_convention": request.convention, "camera_axes": request.axes}
        if given := [f"{key}={value!r}" for key, value in options.items() if value is not None]:
            raise CameraError(f"{request.camera} is a preset trajectory: {', '.join(given)} only apply to camera files")
        return preset_trajectory(request.camera, frames)
    if not Path(request.camera).exists():
        presets = ", ".join(sorted(AMOUNTS))
        raise CameraError(f"{request.camera}: neither a camera preset ({presets}) nor an existing file")
    index = request.index
    plain = request.camera.endswith((".npy", ".json"))
    convention = request.convention if plain else None
    trajectory = read_cameras(
        request.camera,
        camera=int(index) if isinstance(index, str) and index.isdigit() else index,  # `3` means cam03
        convention=convention,
        axes=request.axes or ("opencv" if convention else None),  # given without a convention: refused there
        num_frames=frames,
    )
    return trajectory.w2c
