"""Video files in and out (PyAV): clips at the model's resolution, and mp4s people look at.

Reading (`read_video`) decodes any container FFmpeg demuxes (mp4/H.264, webm/VP9, mov, avi/MJPEG,
gif, ...) or a folder of PNG/JPEG frames, and returns uint8 RGB frames `[F, H, W, 3]`:

- Sampling picks source frame indices before decoding: `"first"` takes `start, start + stride,
  ...` (ReCamMaster's clips are the first 81 consecutive frames, stride 1), `"uniform"` spreads the
  frames over the whole video, index `k` being `round(k * (total - 1) / (F - 1))` (halves rounded
  up). Decoding streams: every frame is decoded in order, only picked ones are kept, and decoding
  stops after the last pick, so memory holds F frames whatever the video's length. Frames are
  counted first by demuxing (reading every packet of the file once, decoding none).
- Frame counts are 4k + 1 (Wan's VAE keeps the first frame and compresses the rest 4x in time).
- Resize + centre crop, as ReCamMaster's data loader (`crop_and_resize` then `CenterCrop` in
  inference_recammaster.py / train_recammaster.py), so our frames match its preprocessing pixel
  for pixel: scale by `s = max(H / h, W / w)` so the frame covers (H, W), resize to
  `(round(h * s), round(w * s))` with PIL's BILINEAR filter (which widens its triangle kernel to
  the scale factor when shrinking: an antialiased, area-like downsampling, no aliasing on the
  1280x1280 -> 832x832 MultiCamVideo shrink), then crop `(H, W)` at top `round((h' - H) / 2)`,
  left `round((w' - W) / 2)` (Python's round, half to even, as torchvision's CenterCrop).
- Display rotation (phone videos) is applied before resizing, as FFmpeg's autorotate.
- Bad input raises `VideoError` naming the file and the problem: missing, empty, not a video, a
  still image, no video stream, truncated or corrupt (the container's frame count disagrees with
  its data, or decoding fails: reported with the frame index), too few frames for the request.

Writing (`write_video`) makes mp4 (or mov/mkv) files: H.264 (`libx264`, CRF 18, yuv420p) where the
PyAV build has it, else MPEG-4 Part 2 (`mpeg4`, qscale 2, yuv420p) in the same container;
`lossless=True` writes exact RGB with `libx264rgb` at QP 0. yuv420p needs even sizes: an odd
height or width is padded by repeating the last row or column (so the file is one pixel larger).
The file appears atomically (`io.atomic.atomic_output`): a failure leaves the destination as it was.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal, Protocol

import av
import numpy as np
from PIL import Image

from mv2v_jax.config import positive, require
from mv2v_jax.io.atomic import atomic_output
from mv2v_jax.io.images import to_uint8

Sampling = Literal["first", "uniform"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# Output containers by suffix; H.264 and MPEG-4 Part 2 fit all three.
CONTAINERS = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska"}
ENCODERS = ("libx264", "mpeg4")  # preference order when `codec` is not given
DEFAULT_CRF = 18  # visually lossless for x264; 0 is its lossless-YUV end, 51 the worst
MPEG4_QSCALE = 2  # 1 (best) .. 31
FF_QP2LAMBDA = 118  # FFmpeg's scale between a quantiser and `global_quality`


class VideoError(ValueError):
    """A video file (or frame folder, or frame array) that cannot be read or written as asked."""


@dataclass(frozen=True)
class VideoClip:
    """Frames read from a video: `frames` uint8 RGB `[F, H, W, 3]`; `indices[i]` is the source index
    of `frames[i]`; `source_frames` counts the source's frames; `fps` is the source frame rate
    (None for a folder of frames); `source_size` is `(h, w)` of the source's frames as displayed,
    before any resize and crop (None: not recorded)."""

    frames: np.ndarray
    fps: float | None
    source_frames: int
    indices: tuple[int, ...]
    path: Path
    source_size: tuple[int, int] | None = None

    def changes(self) -> dict[str, Any]:
        """What reading did to the source, for records: frames used and dropped, resize and crop."""
        used = len(self.indices)
        changes: dict[str, Any] = {
            "source_frames": self.source_frames,
            "frames_used": used,
            "frames_dropped": self.source_frames - used,
            "first_frame": self.indices[0],
            "stride": self.indices[1] - self.indices[0] if used > 1 else 1,
            "source_fps": self.fps,
        }
        size = tuple(self.frames.shape[1:3])
        if self.source_size is not None:
            resized, (top, left) = cover_crop_geometry(self.source_size, size)
            changes |= {
                "source_size": list(self.source_size),
                "resized_to": list(resized) if resized != self.source_size else None,
                "cropped_to": list(size) if resized != size else None,
                "crop_offset": [top, left] if resized != size else None,
            }
        return changes

    def describe(self, output_fps: float | None = None) -> str | None:
        """One line saying what reading changed (frames dropped, a resize, a crop, the frame rate), or
        None when the frames are the source's as they are."""
        c, parts = self.changes(), []
        if c["frames_dropped"]:
            kept = f"frames {self.indices[0]}-{self.indices[-1]}" if c["stride"] == 1 else f"{c['frames_used']} frames"
            parts.append(f"{c['source_frames']} frames, {kept} used ({c['frames_dropped']} dropped)")
        if c.get("resized_to"):
            parts.append(f"{_hw(c['source_size'])} resized to {_hw(c['resized_to'])}")
        if c.get("cropped_to"):
            top, left = c["crop_offset"]
            parts.append(f"centre-cropped to {_hw(c['cropped_to'])} (from top {top}, left {left})")
        if output_fps is not None and self.fps is not None and abs(self.fps - output_fps) > 1e-3:
            parts.append(f"{self.fps:g} fps, written at {output_fps:g} fps")
        return f"{self.path}: {'; '.join(parts)}" if parts else None


def _hw(size: Sequence[int]) -> str:
    """`(h, w)` as people write it: width x height."""
    return f"{size[1]}x{size[0]}"


def _frame_count_problem(num_frames: int) -> str | None:
    """Why Wan's VAE cannot encode `num_frames` frames (it needs 4k + 1), or None."""
    if num_frames >= 1 and (num_frames - 1) % 4 == 0:
        return None
    lower = max(1, (num_frames - 1) // 4 * 4 + 1)
    return (
        f"not of the form 4k + 1 (the VAE keeps frame 0 and compresses the rest 4x in time): use {lower} or {lower + 4}"
    )


def check_num_frames(num_frames: int) -> None:
    """Refuses a frame count that Wan's VAE cannot encode (it needs 4k + 1 frames)."""
    if problem := _frame_count_problem(num_frames):
        raise VideoError(f"num_frames={num_frames} is {problem}")


@dataclass(frozen=True)
class VideoConfig:
    """What every turn's video is read and written at (an experiment config's `sample.video`):
    `frames` (4k + 1) at `height` x `width` pixels, written at `fps` frames per second."""

    frames: int
    height: int
    width: int
    fps: float

    def __post_init__(self):
        problem = _frame_count_problem(self.frames)
        require(problem is None, "frames", self.frames, problem or "")
        require(self.height > 0, "height", self.height, "a video's height in pixels must be positive")
        require(self.width > 0, "width", self.width, "a video's width in pixels must be positive")
        require(positive(self.fps), "fps", self.fps, "the frame rate of the written videos must be positive")


def sample_indices(
    num_frames: int, total: int, sampling: Sampling = "first", stride: int = 1, start: int = 0
) -> list[int]:
    """Source frame indices to read: `num_frames` of them from a video of `total` frames.

    `"first"`: `start + i * stride`; `"uniform"`: `round(i * (total - 1) / (num_frames - 1))`, halves
    rounded up (exact integer arithmetic); it spans the whole video, so `start` and `stride` must
    stay at their defaults. Indices past the end (or `total < num_frames` for "uniform") are the
    caller's to refuse.
    """
    if sampling == "first":
        if stride < 1 or start < 0:
            raise VideoError(f"sampling 'first' needs stride >= 1 and start >= 0, got stride={stride}, start={start}")
        return [start + i * stride for i in range(num_frames)]
    if sampling == "uniform":
        if stride != 1 or start != 0:
            raise VideoError(f"sampling 'uniform' spans the whole video: stride={stride}, start={start} do not apply")
        if num_frames == 1:
            return [0]
        span, gaps = total - 1, num_frames - 1
        return [(2 * i * span + gaps) // (2 * gaps) for i in range(num_frames)]
    raise VideoError(f"unknown sampling {sampling!r}: use 'first' or 'uniform'")


def cover_crop_geometry(
    source_hw: tuple[int, int], target_hw: tuple[int, int]
) -> tuple[tuple[int, int], tuple[int, int]]:
    """`(resized_hw, (top, left))`: the size that covers `target_hw` at the source's aspect, and the crop offset."""
    (h, w), (height, width) = source_hw, target_hw
    scale = max(height / h, width / w)
    resized = (round(h * scale), round(w * scale))
    return resized, (round((resized[0] - height) / 2), round((resized[1] - width) / 2))


def resize_center_crop(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """`[h, w, 3]` uint8 -> `[H, W, 3]` uint8: PIL-bilinear resize to cover `size`, then centre crop."""
    (rh, rw), (top, left) = cover_crop_geometry(frame.shape[:2], size)
    image = Image.fromarray(frame)
    if (rh, rw) != frame.shape[:2]:
        image = image.resize((rw, rh), Image.Resampling.BILINEAR)
    return np.asarray(image)[top : top + size[0], left : left + size[1]]


def read_video(
    path: str | os.PathLike,
    num_frames: int = 81,
    size: tuple[int, int] | None = (480, 832),
    sampling: Sampling = "first",
    stride: int = 1,
    start: int = 0,
) -> VideoClip:
    """Reads `num_frames` (4k + 1) frames of a video file or frame folder as uint8 `[F, H, W, 3]`.

    `size=(H, W)` resizes and centre-crops each frame (see the module docstring); None keeps the
    source resolution. Raises `VideoError` naming the file and the problem.
    """
    path = Path(path)
    check_num_frames(num_frames)
    source = _open(path)
    total = source.total
    indices = sample_indices(num_frames, total, sampling, stride, start)
    needed = num_frames if sampling == "uniform" else indices[-1] + 1
    if needed > total:
        raise VideoError(
            f"{path}: the video is too short: it has {total} frame{'s' * (total != 1)}, but {num_frames} frames"
            f" sampled {sampling!r} (start {start}, stride {stride}) need {needed}"
        )
    return _clip(source, indices, size, path)


def read_all_frames(path: str | os.PathLike, size: tuple[int, int] | None = (480, 832)) -> VideoClip:
    """Every frame of a video (any count), resized and centre-cropped like `read_video`: for long
    videos that are cut into model-sized segments later."""
    path = Path(path)
    source = _open(path)
    if source.total == 0:
        raise VideoError(f"{path}: the video has no frames")
    return _clip(source, list(range(source.total)), size, path)


def _clip(source: _Source, indices: list[int], size: tuple[int, int] | None, path: Path) -> VideoClip:
    """The frames of `source` at `indices`, resized and centre-cropped to `size` (None: as they are)."""
    frames, source_size = [], None
    for frame in source.frames(indices):
        source_size = source_size or frame.shape[:2]
        frames.append(frame if size is None else resize_center_crop(frame, size))
    return VideoClip(np.stack(frames), source.fps, source.total, tuple(indices), path, tuple(source_size))


def _open(path: Path) -> _Source:
    if path.is_dir():
        return _FrameFolder(path)
    if not path.exists():
        raise VideoError(f"{path}: no such file or folder")
    if path.stat().st_size == 0:
        raise VideoError(f"{path}: the file is empty (0 bytes)")
    return _Container(path)


class _Source(Protocol):
    fps: float | None
    total: int  # frames in the source, at least 1

    def frames(self, indices: Sequence[int]) -> Iterator[np.ndarray]:
        """Yields the frames at `indices` (increasing, < total) as uint8 RGB `[h, w, 3]`."""
        ...


class _Container:
    """A media file read through FFmpeg; its frames are counted by demuxing (reading packets, no decoding)."""

    def __init__(self, path: Path):
        self.path = path
        with self._open() as container:
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            self.fps = float(rate) if rate else None
            declared = stream.frames
            try:
                self.total = sum(1 for packet in container.demux(stream) if packet.size)
            except av.error.FFmpegError as e:
                raise VideoError(f"{path}: corrupt or truncated container (FFmpeg: {e.strerror})") from e
        if self.total == 0:
            raise VideoError(f"{path}: the video stream has no frames")
        if declared and self.total < declared:
            raise VideoError(
                f"{path}: truncated: the container lists {declared} frames but holds data for {self.total}"
            )

    def _open(self) -> av.container.InputContainer:
        try:
            container = av.open(str(self.path))
        except av.error.EOFError as e:
            raise VideoError(f"{self.path}: no frame before the end (FFmpeg: {e.strerror}): empty or truncated?") from e
        except av.error.FFmpegError as e:
            raise VideoError(
                f"{self.path}: not a readable video (FFmpeg: {e.strerror}); is it truncated, corrupt or not a video?"
            ) from e
        name, kinds = container.format.name, sorted({s.type for s in container.streams})
        if not container.streams.video:
            container.close()
            if not kinds:
                raise VideoError(f"{self.path}: has no streams at all: an empty video (no frames), or not a video")
            raise VideoError(f"{self.path}: has no video stream (streams: {', '.join(kinds)})")
        if name.endswith("_pipe") or name == "image2":
            container.close()
            raise VideoError(
                f"{self.path}: is a still image ({name}), not a video; to read an image sequence pass its folder"
            )
        return container

    def frames(self, indices: Sequence[int]) -> Iterator[np.ndarray]:
        wanted, last, index = set(indices), indices[-1], -1
        with self._open() as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            try:
                for index, frame in enumerate(container.decode(stream)):
                    if index in wanted:
                        yield _upright(frame, self.path)
                    if index == last:
                        return
            except av.error.FFmpegError as e:
                raise VideoError(
                    f"{self.path}: decoding failed at frame {index + 1} of {self.total} (FFmpeg: {e.strerror});"
                    " the file is truncated or corrupt"
                ) from e
        raise VideoError(
            f"{self.path}: only {index + 1} of its {self.total} frames could be decoded, frame {last} was asked"
            " for; the file is truncated or corrupt"
        )


def _upright(frame: av.VideoFrame, path: Path) -> np.ndarray:
    """The frame as displayed: rotated by its display matrix (counter-clockwise degrees)."""
    rgb = frame.to_ndarray(format="rgb24")
    if frame.rotation % 90:
        raise VideoError(f"{path}: display rotation {frame.rotation} degrees is not a multiple of 90")
    return np.ascontiguousarray(np.rot90(rgb, frame.rotation // 90))


class _FrameFolder:
    """A folder of PNG/JPEG frames in natural name order (frame2 before frame10); fps unknown."""

    fps = None

    def __init__(self, path: Path):
        self.path = path
        natural = lambda p: [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", p.name)]
        self.files = sorted((p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES), key=natural)
        if not self.files:
            raise VideoError(f"{path}: the folder holds no {'/'.join(IMAGE_SUFFIXES)} frames")
        self.total = len(self.files)

    def frames(self, indices: Sequence[int]) -> Iterator[np.ndarray]:
        first_size = None
        for i in indices:
            file = self.files[i]
            try:
                with Image.open(file) as image:
                    rgb = np.asarray(image.convert("RGB"))
            except OSError as e:
                raise VideoError(f"{file}: not a readable image ({e})") from e
            except Image.DecompressionBombError as e:  # a header claiming more pixels than memory allows
                raise VideoError(f"{file}: refused, too large to decode as a frame ({e})") from e
            first_size = first_size or rgb.shape
            if rgb.shape != first_size:
                raise VideoError(f"{file}: frame is {rgb.shape[:2]}, earlier frames in the folder are {first_size[:2]}")
            yield rgb


def write_video(
    path: str | os.PathLike,
    frames: np.ndarray | Iterable[np.ndarray],
    fps: float | Fraction,
    codec: Literal["libx264", "mpeg4"] | None = None,
    crf: int = DEFAULT_CRF,
    lossless: bool = False,
) -> Path:
    """Writes uint8 RGB frames (`[F, H, W, 3]`, or an iterable of `[H, W, 3]`, streamed) to `path`.

    Container by suffix (.mp4, .mov, .mkv). `codec` None picks the first of `ENCODERS` this PyAV
    build has; `crf` applies to libx264. `lossless=True` writes exact RGB (libx264rgb, QP 0; plays
    in FFmpeg-based players, not in browsers). Nothing appears at `path` unless every frame is written.
    """
    path = Path(path)
    container_format = CONTAINERS.get(path.suffix.lower())
    if container_format is None:
        raise VideoError(f"{path}: cannot write {path.suffix or 'no suffix'}: use one of {', '.join(CONTAINERS)}")
    if not (math.isfinite(fps) and fps > 0):
        raise VideoError(f"{path}: fps must be a positive number, got {fps}")
    rate = fps if isinstance(fps, Fraction) else Fraction(float(fps)).limit_denominator(1001)
    name, pix_fmt, options = _encoder(path, codec, crf, lossless)
    muxer_options = {} if container_format == "matroska" else {"movflags": "+faststart"}
    index, shape = -1, None
    try:
        with (
            atomic_output(path) as tmp,
            av.open(str(tmp), "w", format=container_format, options=muxer_options) as container,
        ):
            for index, frame in enumerate(frames):
                frame = _check_frame(frame, path, index)
                if shape is None:
                    shape = frame.shape
                    # yuv420p stores chroma at half resolution: pad odd sizes by one edge row/column.
                    pad = (shape[0] % 2, shape[1] % 2) if pix_fmt == "yuv420p" else (0, 0)
                    stream = container.add_stream(name, rate=rate, options=options)
                    stream.pix_fmt = pix_fmt
                    stream.height, stream.width = shape[0] + pad[0], shape[1] + pad[1]
                elif frame.shape != shape:
                    raise VideoError(f"{path}: frame {index} is {frame.shape[:2]}, frame 0 was {shape[:2]}")
                if any(pad):
                    frame = np.pad(frame, ((0, pad[0]), (0, pad[1]), (0, 0)), mode="edge")
                picture = av.VideoFrame.from_ndarray(frame, format="rgb24")
                picture.pts = index
                container.mux(stream.encode(picture))
            if shape is None:
                raise VideoError(f"{path}: no frames to write")
            container.mux(stream.encode())
    except av.error.FFmpegError as e:
        raise VideoError(f"{path}: encoding failed at frame {index} (FFmpeg: {e.strerror})") from e
    return path


def _encoder(path: Path, codec: str | None, crf: int, lossless: bool) -> tuple[str, str, dict[str, str]]:
    """`(codec name, pixel format, codec options)` for `write_video`."""
    if lossless and codec is not None:
        raise VideoError(f"{path}: lossless=True always uses libx264rgb; do not pass codec={codec!r}")
    if codec is not None and codec not in ENCODERS:
        raise VideoError(f"{path}: unsupported codec {codec!r}: use one of {', '.join(ENCODERS)}")
    candidates = ("libx264rgb",) if lossless else (codec,) if codec is not None else ENCODERS
    name = next((c for c in candidates if _has_encoder(c)), None)
    if name is None:
        raise VideoError(f"{path}: this PyAV build has no {' or '.join(candidates)} encoder")
    if name == "libx264rgb":
        return name, "rgb24", {"qp": "0"}
    if name == "libx264":
        return name, "yuv420p", {"crf": str(crf), "preset": "medium"}
    return name, "yuv420p", {"flags": "+qscale", "global_quality": str(MPEG4_QSCALE * FF_QP2LAMBDA)}


def _has_encoder(name: str) -> bool:
    try:
        av.codec.Codec(name, "w")
    except av.codec.codec.UnknownCodecError:
        return False
    return True


def _check_frame(frame: np.ndarray, path: Path, index: int) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[-1] != 3:
        raise VideoError(
            f"{path}: frame {index} must be uint8 RGB [H, W, 3], got {frame.dtype} {frame.shape}"
            " (model outputs in [-1, 1] go through model_to_frames)"
        )
    return frame


def frames_to_model(frames: np.ndarray) -> np.ndarray:
    """uint8 `[..., H, W, 3]` -> float32 in [-1, 1] (the model's pixel range): `x / 127.5 - 1`."""
    frames = np.asarray(frames)
    if frames.dtype != np.uint8:
        raise VideoError(f"frames_to_model expects uint8 frames, got {frames.dtype}")
    return frames.astype(np.float32) / 127.5 - 1


def model_to_frames(pixels: np.ndarray) -> np.ndarray:
    """Model pixels in [-1, 1] (any float array, e.g. a decoded video) -> uint8, clipped and rounded."""
    return to_uint8(np.asarray(pixels, np.float32), -1.0, 1.0)
