"""Video IO: round trips within stated codec tolerances, sampling and resize+crop against independent
computations, every container we claim to read, and bad files refused with the file and the problem
named. Every input is generated here (tmp_path); nothing binary is checked in."""

from fractions import Fraction

import av
import numpy as np
import pytest
from PIL import Image

from mv2v_jax.io import video
from mv2v_jax.io.images import contact_sheet, write_contact_sheet
from mv2v_jax.io.video import (
    VideoError,
    cover_crop_geometry,
    frames_to_model,
    model_to_frames,
    read_video,
    resize_center_crop,
    sample_indices,
    write_video,
)

# Lossy round trips on smooth content at the default quality: the tolerance of the issue.
MAX_MEAN_ABS_ERROR = 3.0  # in uint8 levels, i.e. 3/255
MIN_PSNR_DB = 35.0


def smooth_frames(count: int, height: int = 48, width: int = 64) -> np.ndarray:
    """Low-frequency moving colour gradients `[count, height, width, 3]` uint8 (codec-friendly)."""
    t, y, x = np.meshgrid(np.arange(count), np.linspace(0, 1, height), np.linspace(0, 1, width), indexing="ij")
    red = 128 + 90 * np.sin(np.pi * (x + t / 24))
    green = 128 + 90 * np.cos(np.pi * (y - t / 32))
    blue = 60 + 120 * x * y + 2 * t
    return np.stack([red, green, blue], -1).round().astype(np.uint8)


def numbered_frames(count: int, height: int = 32, width: int = 32) -> np.ndarray:
    """Frame i is flat grey level 7 * i: a decoded frame tells which source frame it was."""
    return np.broadcast_to(
        (7 * np.arange(count, dtype=np.uint8))[:, None, None, None], (count, height, width, 3)
    ).copy()


def encode(path, frames, codec="libx264", fmt=None, pix_fmt="yuv420p", rate=16, options=None, rotation=None):
    """Writes a video with PyAV directly (independently of write_video), for containers and cases
    write_video does not produce. No faststart: an mp4's index goes at the end, as most encoders do."""
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=rate, options=options or {})
        stream.height, stream.width, stream.pix_fmt = *frames.shape[1:3], pix_fmt
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for i, frame in enumerate(frames):
            picture = av.VideoFrame.from_ndarray(frame, format="rgb24")
            picture.pts = i
            container.mux(stream.encode(picture))
        container.mux(stream.encode())
    return path


def decode_all(path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def psnr(a, b) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255**2 / mse))


def mean_abs_error(a, b) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


# --- round trips ---------------------------------------------------------------------------------


@pytest.mark.parametrize("codec", [None, "mpeg4"])
def test_round_trip_within_codec_tolerance(tmp_path, codec):
    frames = smooth_frames(17)
    path = write_video(tmp_path / "clip.mp4", frames, fps=16, codec=codec)
    clip = read_video(path, num_frames=17, size=None)
    with av.open(str(path)) as container:
        assert container.streams.video[0].codec_context.name == (codec or "h264")
    assert clip.frames.shape == frames.shape and clip.frames.dtype == np.uint8
    assert clip.fps == 16 and clip.source_frames == 17 and clip.indices == tuple(range(17))
    assert mean_abs_error(clip.frames, frames) < MAX_MEAN_ABS_ERROR
    assert psnr(clip.frames, frames) > MIN_PSNR_DB


def test_falls_back_to_mpeg4_without_libx264(tmp_path, monkeypatch):
    monkeypatch.setattr(video, "_has_encoder", lambda name: name != "libx264")
    path = write_video(tmp_path / "clip.mp4", smooth_frames(5), fps=16)
    with av.open(str(path)) as container:
        assert container.streams.video[0].codec_context.name == "mpeg4"
    monkeypatch.setattr(video, "_has_encoder", lambda name: False)
    with pytest.raises(VideoError, match=r"other\.mp4: this PyAV build has no libx264 or mpeg4 encoder"):
        write_video(tmp_path / "other.mp4", smooth_frames(5), fps=16)


def test_lossless_round_trip_is_exact_at_odd_sizes(tmp_path):
    frames = np.random.default_rng(0).integers(0, 256, (9, 27, 35, 3), dtype=np.uint8)  # noise: worst case
    clip = read_video(write_video(tmp_path / "exact.mkv", frames, fps=24, lossless=True), 9, size=None)
    np.testing.assert_array_equal(clip.frames, frames)
    assert clip.fps == 24


def test_odd_sizes_are_padded_by_repeating_the_edge(tmp_path):
    frames = smooth_frames(5, 47, 63)
    clip = read_video(write_video(tmp_path / "odd.mp4", frames, fps=16), 5, size=None)
    assert clip.frames.shape == (5, 48, 64, 3)
    assert mean_abs_error(clip.frames[:, :47, :63], frames) < MAX_MEAN_ABS_ERROR
    padded = np.pad(frames, ((0, 0), (0, 1), (0, 1), (0, 0)), mode="edge")
    assert mean_abs_error(clip.frames[:, 47], padded[:, 47]) < MAX_MEAN_ABS_ERROR
    assert mean_abs_error(clip.frames[:, :, 63], padded[:, :, 63]) < MAX_MEAN_ABS_ERROR


@pytest.mark.parametrize("fps", [15, Fraction(30000, 1001), 30000 / 1001])
def test_frame_rate_is_kept(tmp_path, fps):
    clip = read_video(write_video(tmp_path / "rate.mov", smooth_frames(5), fps=fps), 5, size=None)
    assert clip.fps == pytest.approx(float(fps), rel=1e-9)


@pytest.mark.parametrize(
    ("name", "codec", "fmt", "pix_fmt", "tolerance"),
    [
        ("h264.mp4", "libx264", None, "yuv420p", MAX_MEAN_ABS_ERROR),
        ("vp9.webm", "libvpx-vp9", None, "yuv420p", MAX_MEAN_ABS_ERROR),
        ("h264.mov", "libx264", None, "yuv420p", MAX_MEAN_ABS_ERROR),
        ("mjpeg.avi", "mjpeg", None, "yuvj420p", MAX_MEAN_ABS_ERROR),
        ("ffv1.mkv", "ffv1", "matroska", "yuv444p", 1.0),  # lossless codec: only the RGB -> YUV rounding
        ("palette.gif", "gif", None, "rgb8", 20.0),  # a fixed 256-colour palette with dithering
    ],
)
def test_reads_common_containers(tmp_path, name, codec, fmt, pix_fmt, tolerance):
    frames = smooth_frames(9)
    quality = {"flags": "+qscale", "global_quality": str(2 * 118)} if codec == "mjpeg" else None  # JPEG q 2
    path = encode(tmp_path / name, frames, codec, fmt, pix_fmt, options=quality)
    clip = read_video(path, num_frames=9, size=None)
    np.testing.assert_array_equal(clip.frames, decode_all(path))  # exactly what FFmpeg decodes
    assert mean_abs_error(clip.frames, frames) < tolerance
    assert clip.source_frames == 9


def test_reads_a_folder_of_frames_in_natural_order(tmp_path):
    frames = numbered_frames(12)
    for i, frame in enumerate(frames):  # frame1.png .. frame12.png: frame10 must not sort before frame2
        Image.fromarray(frame).save(tmp_path / f"frame{i + 1}.png")
    (tmp_path / "notes.txt").write_text("not a frame")
    clip = read_video(tmp_path, num_frames=5, size=None, sampling="uniform")
    assert clip.indices == (0, 3, 6, 8, 11)  # round(k * 11 / 4), halves up: 0, 2.75, 5.5, 8.25, 11
    np.testing.assert_array_equal(clip.frames, frames[list(clip.indices)])
    assert clip.fps is None and clip.source_frames == 12


def test_display_rotation_is_applied(tmp_path):
    frames = np.random.default_rng(1).integers(0, 256, (1, 32, 48, 3), dtype=np.uint8)
    path = encode(tmp_path / "phone.mp4", frames, "libx264rgb", pix_fmt="rgb24", options={"qp": "0"}, rotation=90)
    clip = read_video(path, num_frames=1, size=None)
    # 90 degrees counter-clockwise, as the display matrix says and players show it.
    np.testing.assert_array_equal(clip.frames[0], np.rot90(frames[0]))


# --- sampling ------------------------------------------------------------------------------------


def test_sample_indices_by_hand():
    assert sample_indices(5, 100) == [0, 1, 2, 3, 4]
    assert sample_indices(5, 100, "first", stride=2, start=3) == [3, 5, 7, 9, 11]
    # round(k * 99 / 4) for k = 0..4: 0, 24.75, 49.5, 74.25, 99 (halves up)
    assert sample_indices(5, 100, "uniform") == [0, 25, 50, 74, 99]
    assert sample_indices(17, 17, "uniform") == list(range(17))
    assert sample_indices(1, 10, "uniform") == [0]
    with pytest.raises(VideoError, match="'uniform' spans the whole video"):
        sample_indices(5, 100, "uniform", stride=2)
    with pytest.raises(VideoError, match="unknown sampling 'random'"):
        sample_indices(5, 100, "random")


@pytest.mark.parametrize(
    ("sampling", "stride", "start", "expected"),
    [("first", 1, 0, [0, 1, 2, 3, 4]), ("first", 3, 2, [2, 5, 8, 11, 14]), ("uniform", 1, 0, [0, 8, 16, 24, 32])],
)
def test_sampling_decodes_the_stated_frames(tmp_path, sampling, stride, start, expected):
    path = write_video(tmp_path / "numbered.mkv", numbered_frames(33), fps=16, lossless=True)
    clip = read_video(path, num_frames=5, size=None, sampling=sampling, stride=stride, start=start)
    assert list(clip.indices) == expected
    np.testing.assert_array_equal(clip.frames[:, 0, 0, 0], 7 * np.array(expected))  # the content says which frame


def test_default_reads_81_frames_at_480x832(tmp_path):
    path = write_video(tmp_path / "long.mp4", smooth_frames(90, 36, 64), fps=16)
    clip = read_video(path)
    assert clip.frames.shape == (81, 480, 832, 3) and clip.indices == tuple(range(81)) and clip.source_frames == 90


# --- resize and centre crop ----------------------------------------------------------------------


def test_crop_geometry_by_hand():
    assert cover_crop_geometry((1280, 1280), (480, 832)) == ((832, 832), (176, 0))  # MultiCamVideo -> Wan
    assert cover_crop_geometry((1080, 1920), (480, 832)) == ((480, 853), (0, 10))  # 853 - 832 = 21 -> round(10.5) = 10
    assert cover_crop_geometry((480, 835), (480, 832)) == ((480, 835), (0, 2))  # round(1.5) = 2 (half to even)
    assert cover_crop_geometry((480, 833), (480, 832)) == ((480, 833), (0, 0))  # round(0.5) = 0


@pytest.mark.parametrize(("source_hw", "size"), [((60, 120), (30, 48)), ((20, 24), (40, 40)), ((96, 64), (40, 40))])
def test_resize_center_crop_of_a_linear_ramp(source_hw, size):
    """Any symmetric normalised filter maps a linear ramp to the ramp at the output pixel centres;
    so each output pixel must equal the ramp at its own centre mapped back into the source."""
    h, w = source_hw
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    # ~200 levels across small frames: > 3 levels per output pixel, so a crop or scale off by one pixel shows.
    ramp = lambda y, x: np.stack([20 + 197 * x / w, 20 + 193 * y / h, 20 + 101 * x / w + 97 * y / h], -1)
    frame = ramp(ys, xs).round().astype(np.uint8)
    scale = max(size[0] / h, size[1] / w)  # independent recomputation of the geometry
    top, left = round((round(h * scale) - size[0]) / 2), round((round(w * scale) - size[1]) / 2)
    out = resize_center_crop(frame, size)
    assert out.shape == (*size, 3)
    i, j = np.mgrid[0 : size[0], 0 : size[1]].astype(np.float64)
    expected = ramp((i + top + 0.5) / (round(h * scale) / h) - 0.5, (j + left + 0.5) / (round(w * scale) / w) - 0.5)
    border = int(np.ceil(2 * max(1, 1 / scale)))  # where the filter hangs over the source edge
    interior = (slice(border, size[0] - border), slice(border, size[1] - border))
    # Tolerance: the uint8 rounding of the input ramp and of the output, and PIL's fixed-point weights.
    np.testing.assert_allclose(out[interior], expected[interior], atol=1.5)


def test_read_video_resizes_each_frame(tmp_path):
    frames = np.random.default_rng(2).integers(0, 256, (5, 40, 90, 3), dtype=np.uint8)
    path = write_video(tmp_path / "wide.mkv", frames, fps=16, lossless=True)
    clip = read_video(path, num_frames=5, size=(32, 48))
    np.testing.assert_array_equal(clip.frames, np.stack([resize_center_crop(f, (32, 48)) for f in frames]))


# --- model pixel range ---------------------------------------------------------------------------


def test_model_range_round_trip_is_exact():
    frames = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1).repeat(3, -1)
    pixels = frames_to_model(frames)
    assert pixels.dtype == np.float32 and pixels.min() == -1 and pixels.max() == 1
    np.testing.assert_allclose(pixels, frames / 127.5 - 1, atol=1e-6)
    np.testing.assert_array_equal(model_to_frames(pixels), frames)
    np.testing.assert_array_equal(model_to_frames(np.array([-3.0, -1.0, 0.0, 1.0, 2.5])), [0, 0, 128, 255, 255])
    with pytest.raises(VideoError, match="expects uint8 frames, got float32"):
        frames_to_model(pixels)


# --- bad input -----------------------------------------------------------------------------------


def test_frame_count_must_be_4k_plus_1(tmp_path):
    with pytest.raises(VideoError, match=r"num_frames=80 is not of the form 4k \+ 1.*use 77 or 81"):
        read_video(tmp_path / "any.mp4", num_frames=80)


def test_missing_empty_and_non_video_files(tmp_path):
    with pytest.raises(VideoError, match=r"missing\.mp4: no such file"):
        read_video(tmp_path / "missing.mp4", 1)
    (tmp_path / "empty.mp4").touch()
    with pytest.raises(VideoError, match=r"empty\.mp4: the file is empty \(0 bytes\)"):
        read_video(tmp_path / "empty.mp4", 1)
    (tmp_path / "notes.mp4").write_text("these are meeting notes, not a video\n" * 20)
    with pytest.raises(VideoError, match=r"notes\.mp4: not a readable video"):
        read_video(tmp_path / "notes.mp4", 1)
    Image.fromarray(smooth_frames(1)[0]).save(tmp_path / "still.png")
    with pytest.raises(VideoError, match=r"still\.png: is a still image \(png_pipe\), not a video"):
        read_video(tmp_path / "still.png", 1)
    with av.open(str(tmp_path / "sound.wav"), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        samples = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        samples.sample_rate = 8000
        container.mux(stream.encode(samples))
        container.mux(stream.encode())
    with pytest.raises(VideoError, match=r"sound\.wav: has no video stream \(streams: audio\)"):
        read_video(tmp_path / "sound.wav", 1)


def test_truncated_mp4(tmp_path):
    data = write_video(tmp_path / "full.mp4", smooth_frames(17), fps=16).read_bytes()  # index first (faststart)
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) * 6 // 10])
    with pytest.raises(VideoError, match=r"cut\.mp4: truncated: the container lists 17 frames but holds data for \d+"):
        read_video(tmp_path / "cut.mp4", 1)
    data = encode(tmp_path / "plain.mp4", smooth_frames(17)).read_bytes()  # index last: cut off with the end
    (tmp_path / "cut_index.mp4").write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoError, match=r"cut_index\.mp4: not a readable video .*truncated"):
        read_video(tmp_path / "cut_index.mp4", 1)


def test_corrupt_mp4(tmp_path):
    data = write_video(tmp_path / "full.mp4", smooth_frames(17), fps=16).read_bytes()
    payload = data.index(b"mdat") + 4  # keep the valid header and index, garble every frame's data
    garbage = np.random.default_rng(0).integers(0, 256, len(data) - payload, dtype=np.uint8).tobytes()
    (tmp_path / "garbled.mp4").write_bytes(data[:payload] + garbage)
    with pytest.raises(VideoError, match=r"garbled\.mp4: decoding failed at frame 0 of 17 .*corrupt"):
        read_video(tmp_path / "garbled.mp4", 5)


@pytest.mark.parametrize(
    ("name", "codec", "message"),
    [
        ("none.mp4", "libx264", r"none\.mp4: has no streams at all: an empty video \(no frames\)"),  # mp4 drops it
        ("none.avi", "mjpeg", r"none\.avi: the video stream has no frames"),
        ("none.mkv", "libx264", r"none\.mkv: no frame before the end"),
    ],
)
def test_zero_frame_video(tmp_path, name, codec, message):
    with av.open(str(tmp_path / name), "w") as container:
        stream = container.add_stream(codec, rate=16)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuvj420p" if codec == "mjpeg" else "yuv420p"
        container.start_encoding()
    with pytest.raises(VideoError, match=message):
        read_video(tmp_path / name, 1)


def test_single_frame_and_too_short_videos(tmp_path):
    single = write_video(tmp_path / "single.mp4", smooth_frames(1), fps=16)
    assert read_video(single, num_frames=1, size=None).frames.shape == (1, 48, 64, 3)
    with pytest.raises(VideoError, match=r"single\.mp4: the video is too short: it has 1 frame, but 5 frames"):
        read_video(single, num_frames=5)
    short = write_video(tmp_path / "short.mp4", smooth_frames(9), fps=16)
    with pytest.raises(VideoError, match=r"short\.mp4: .*it has 9 frames, but 17 frames sampled 'first'.* need 17"):
        read_video(short, num_frames=17)
    with pytest.raises(VideoError, match=r"short\.mp4: .*it has 9 frames, but 5 frames .*stride 3\) need 13"):
        read_video(short, num_frames=5, stride=3)
    with pytest.raises(VideoError, match=r"short\.mp4: .*it has 9 frames, but 17 frames sampled 'uniform'"):
        read_video(short, num_frames=17, sampling="uniform")


def test_folder_without_frames_or_with_mixed_sizes(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(VideoError, match=r"empty: the folder holds no \.png/\.jpg/\.jpeg frames"):
        read_video(tmp_path / "empty", 1)
    (tmp_path / "mixed").mkdir()
    for i in range(5):
        Image.fromarray(np.zeros((8, 8 if i < 4 else 9, 3), np.uint8)).save(tmp_path / "mixed" / f"{i}.png")
    with pytest.raises(VideoError, match=r"4\.png: frame is \(8, 9\), earlier frames in the folder are \(8, 8\)"):
        read_video(tmp_path / "mixed", 5, sampling="uniform", size=None)


def test_write_refuses_bad_frames_and_never_leaves_a_partial_file(tmp_path):
    target = tmp_path / "out.mp4"
    target.write_bytes(b"previous version")
    with pytest.raises(VideoError, match=r"out\.mp4: frame 0 must be uint8 RGB \[H, W, 3\], got float32"):
        write_video(target, frames_to_model(smooth_frames(3)), fps=16)
    with pytest.raises(VideoError, match=r"out\.mp4: no frames to write"):
        write_video(target, np.zeros((0, 8, 8, 3), np.uint8), fps=16)
    with pytest.raises(VideoError, match=r"out\.mp4: frame 2 is \(40, 64\), frame 0 was \(48, 64\)"):
        write_video(target, [*smooth_frames(2), smooth_frames(1, 40)[0]], fps=16)

    def crashing_renderer():
        yield from smooth_frames(3)
        raise RuntimeError("renderer crashed")

    with pytest.raises(RuntimeError, match="renderer crashed"):
        write_video(target, crashing_renderer(), fps=16)
    assert target.read_bytes() == b"previous version"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]  # no temporary left behind
    with pytest.raises(VideoError, match=r"out\.webm: cannot write \.webm: use one of \.mp4, \.mov, \.mkv"):
        write_video(tmp_path / "out.webm", smooth_frames(1), fps=16)
    with pytest.raises(VideoError, match=r"out\.mp4: unsupported codec 'h264': use one of libx264, mpeg4"):
        write_video(target, smooth_frames(1), fps=16, codec="h264")
    with pytest.raises(VideoError, match=r"out\.mp4: fps must be a positive number, got nan"):
        write_video(target, smooth_frames(1), fps=float("nan"))


# --- contact sheets ------------------------------------------------------------------------------


def test_contact_sheet_places_the_selected_frames(tmp_path):
    rows = [numbered_frames(9, 16, 24), 255 - numbered_frames(9, 16, 24)]
    path = write_contact_sheet(tmp_path / "sheet.png", rows, frame_indices=[0, 4, 8])
    sheet = np.asarray(Image.open(path))
    pad = 2
    assert sheet.shape == (2 * (16 + pad) + pad, 3 * (24 + pad) + pad, 3)
    for r, row in enumerate(rows):
        for c, index in enumerate([0, 4, 8]):
            y, x = pad + r * (16 + pad), pad + c * (24 + pad)
            np.testing.assert_array_equal(sheet[y : y + 16, x : x + 24], row[index])
    np.testing.assert_array_equal(sheet, contact_sheet([row[[0, 4, 8]] for row in rows]))


def test_contact_sheet_labels_and_default_columns(tmp_path):
    rows = [numbered_frames(17, 16, 24), numbered_frames(17, 16, 24)]
    plain = np.asarray(Image.open(write_contact_sheet(tmp_path / "plain.png", rows)))
    assert plain.shape[1] == 8 * (24 + 2) + 2  # 8 columns by default
    np.testing.assert_array_equal(plain[2:18, 2:26], rows[0][0])  # first and last frames are shown
    np.testing.assert_array_equal(plain[2:18, -26:-2], rows[0][16])
    labelled = np.asarray(Image.open(write_contact_sheet(tmp_path / "labelled.png", rows, labels=["source", "output"])))
    band = labelled.shape[0] - plain.shape[0]
    assert band > 0 and band % 2 == 0
    first_band = labelled[2 : 2 + band // 2]
    assert (first_band < 128).any(), "the label text is drawn"
    np.testing.assert_array_equal(labelled[2 + band // 2 : 2 + band // 2 + 16, 2:26], rows[0][0])
    with pytest.raises(ValueError, match="1 labels for 2 rows"):
        write_contact_sheet(tmp_path / "bad.png", rows, labels=["only one"])
