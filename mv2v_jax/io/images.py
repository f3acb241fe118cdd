"""Images people look at: contact sheets of video frames, written as PNG."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from etils import epath
from PIL import Image, ImageDraw, ImageFont

from mv2v_jax.io.atomic import atomic_output, is_uri

# Columns of a contact sheet when no frame indices are given: enough to see the motion of an
# 81-frame clip, small enough to open at 832 pixels a frame.
SHEET_COLUMNS = 8


def to_uint8(frames: np.ndarray, low: float | None = None, high: float | None = None) -> np.ndarray:
    """Scales `frames` from `[low, high]` (default: their own range) to uint8."""
    frames = np.asarray(frames, np.float32)
    low = float(frames.min()) if low is None else low
    high = float(frames.max()) if high is None else high
    scaled = (frames - low) / max(high - low, 1e-8)
    return np.clip(np.round(scaled * 255), 0, 255).astype(np.uint8)


def contact_sheet(rows: list[np.ndarray], pad: int = 2, labels: Sequence[str] | None = None) -> np.ndarray:
    """Tiles rows of frames (each `[T, H, W, 3]` uint8, same H and W) into one image `[H', W', 3]`.

    With `labels` (one per row), each row gets a white band above it with its label in PIL's
    default font.
    """
    height, width = rows[0].shape[1:3]
    columns = max(len(r) for r in rows)
    if labels is not None and len(labels) != len(rows):
        raise ValueError(f"{len(labels)} labels for {len(rows)} rows")
    font = ImageFont.load_default() if labels is not None else None
    band = 0 if font is None else max(font.getbbox(label)[3] for label in labels) + pad
    row_height = band + height + pad
    sheet = np.full((len(rows) * row_height + pad, columns * (width + pad) + pad, 3), 255, np.uint8)
    for i, row in enumerate(rows):
        for j, frame in enumerate(row):
            y, x = pad + i * row_height + band, pad + j * (width + pad)
            sheet[y : y + height, x : x + width] = frame
    if labels is None:
        return sheet
    image = Image.fromarray(sheet)
    draw = ImageDraw.Draw(image)
    for i, label in enumerate(labels):
        draw.text((pad, pad + i * row_height), label, fill=(0, 0, 0), font=font)
    return np.asarray(image)


def write_png(path: str | os.PathLike, image: np.ndarray) -> Path | epath.Path:
    path = epath.Path(path) if is_uri(path) else Path(path)  # pathlib makes a bucket's path a local one
    with atomic_output(path) as tmp:
        Image.fromarray(image).save(tmp)
    return path


def write_contact_sheet(
    path: str | os.PathLike,
    rows_of_frames: Sequence[np.ndarray],
    labels: Sequence[str] | None = None,
    frame_indices: Sequence[int] | None = None,
) -> Path:
    """Writes a PNG of selected frames of each row (rows: `[T, H, W, 3]` uint8 videos of one size).

    `frame_indices` picks the same frames from every row; by default `SHEET_COLUMNS` frames evenly
    spaced from each row's first to its last. `labels`: one caption per row.
    """
    picked, size = [], np.shape(rows_of_frames[0])[1:]
    for r, row in enumerate(rows_of_frames):
        row = np.asarray(row)
        if row.ndim != 4 or row.shape[-1] != 3 or row.dtype != np.uint8:
            raise ValueError(f"{path}: row {r} must be uint8 [T, H, W, 3] frames, got {row.dtype} {row.shape}")
        if row.shape[1:] != size:
            raise ValueError(f"{path}: row {r} frames are {row.shape[1:3]}, row 0 frames are {size[:2]}")
        if frame_indices is None:
            indices = np.linspace(0, len(row) - 1, min(len(row), SHEET_COLUMNS)).round().astype(int)
        else:
            indices = np.asarray(frame_indices, int)
            if len(indices) and (indices.min() < -len(row) or indices.max() >= len(row)):
                raise ValueError(f"{path}: frame indices {list(indices)} out of range for row {r} of {len(row)} frames")
        picked.append(row[indices])
    return write_png(path, contact_sheet(picked, labels=labels))
