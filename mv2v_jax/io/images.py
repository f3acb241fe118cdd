"""Images people look at: contact sheets of video frames, written as PNG."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image


def to_uint8(frames: np.ndarray, low: float | None = None, high: float | None = None) -> np.ndarray:
    """Scales `frames` from `[low, high]` (default: their own range) to uint8."""
    frames = np.asarray(frames, np.float32)
    low = float(frames.min()) if low is None else low
    high = float(frames.max()) if high is None else high
    scaled = (frames - low) / max(high - low, 1e-8)
    return np.clip(np.round(scaled * 255), 0, 255).astype(np.uint8)


def contact_sheet(rows: list[np.ndarray], pad: int = 2) -> np.ndarray:
    """Tiles rows of frames (each `[T, H, W, 3]` uint8, same H and W) into one image `[H', W', 3]`."""
    height, width = rows[0].shape[1:3]
    columns = max(len(r) for r in rows)
    sheet = np.full((len(rows) * (height + pad) + pad, columns * (width + pad) + pad, 3), 255, np.uint8)
    for i, row in enumerate(rows):
        for j, frame in enumerate(row):
            y, x = pad + i * (height + pad), pad + j * (width + pad)
            sheet[y : y + height, x : x + width] = frame
    return sheet


def write_png(path: str | os.PathLike, image: np.ndarray) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return path
