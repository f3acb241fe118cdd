"""Contact sheets of synthetic scenes and long videos, for looking at what the generator makes.

`python -m mv2v_jax.data.synthetic OUT.png --preset small --seed 0` (`main`) writes one of a scene's
cameras; docs/synthetic_multicam.png is `--columns 5 --rows 8` of that. With `--long` it writes a long
video's segments, source above edit; docs/synthetic_long_edit.png is `--long --seed 1 --columns 5`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mv2v_jax.config import ArgumentParser, int_at_least
from mv2v_jax.data.synthetic.long_video import LONG_PRESETS, generate_long_edit
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


def write_long_preview(path: str | Path, video: Mapping[str, Any], columns: int = SHEET_COLUMNS) -> Path:
    """A PNG contact sheet of a long video and its edit (`generate_long_edit`): per segment a row of the
    source and a row of the edit, `columns` frames evenly spaced from first to last."""
    source, edited = video["source"], video["edited"]
    frames = np.linspace(0, source.shape[1] - 1, min(columns, source.shape[1])).round().astype(int)
    rows = [row for pair in zip(source, edited, strict=True) for row in pair]
    labels = [f"segment {s} {kind}" for s in range(len(source)) for kind in ("source", "edited")]
    return write_contact_sheet(path, rows, labels=labels, frame_indices=frames)


def main(argv: Sequence[str]) -> None:
    parser = ArgumentParser(prog="python -m mv2v_jax.data.synthetic", description=write_preview.__doc__)
    parser.add_argument("out", type=Path, help="PNG to write")
    parser.add_argument("--long", action="store_true", help="a long video and its edit instead of a scene")
    parser.add_argument("--preset", default="small", choices=sorted(PRESETS), help="PRESETS, or LONG_PRESETS")
    parser.add_argument("--seed", type=int_at_least(0), default=0)
    parser.add_argument("--columns", type=int_at_least(1), default=SHEET_COLUMNS, help="frames shown per camera")
    parser.add_argument("--rows", type=int_at_least(1), default=None, help="cameras shown (default all)")
    args = parser.parse_args(argv)
    if args.long:
        video = generate_long_edit(args.seed, LONG_PRESETS[args.preset])
        print(f"{video['prompt']} ({video['config'].edit}: {video['edit_colour']})")
        print(write_long_preview(args.out, video, args.columns))
        return
    scene = generate_scene(args.seed, PRESETS[args.preset])
    print(scene["prompt"])
    print(write_preview(args.out, scene, args.columns, args.rows))
