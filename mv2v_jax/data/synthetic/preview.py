"""Contact sheets of synthetic scenes, for looking at what the generator makes.

`python -m mv2v_jax.data.synthetic OUT.png --preset small --seed 0` (`main`) writes one of a scene's
cameras; docs/synthetic_multicam.png is `--columns 5 --rows 8` of that.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mv2v_jax.data.synthetic.scene_config import PRESETS
from mv2v_jax.data.synthetic.scenes import generate_scene
from mv2v_jax.io.images import SHEET_COLUMNS, write_contact_sheet


def write_preview(
    path: str | Path, scene: Mapping[str, Any], columns: int = SHEET_COLUMNS, rows: int | None = None
) -> Path:
    """A PNG contact sheet of a scene: one row per camera (the first `rows`, default all), labelled
    with its trajectory kind; `columns` frames evenly spaced from first to last."""
    video = scene["video"][:rows]
    frames = np.linspace(0, video.shape[1] - 1, min(columns, video.shape[1])).round().astype(int)
    labels = [f"cam{v:02d} {kind}" for v, kind in enumerate(scene["trajectories"][:rows])]
    return write_contact_sheet(path, list(video), labels=labels, frame_indices=frames)


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
