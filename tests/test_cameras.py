"""Camera IO: every format, written here by independent code from one trajectory, reads back as the
same OpenCV world-to-camera matrices; ReCamMaster's own conversion code gives the same relative poses
as ours; published ReCamMaster poses mean what its README says; bad files are refused by name."""

import json
import re

import numpy as np
import pytest
import torch

from mv2v_jax.geometry import invert_pose, to_3x4, to_4x4
from mv2v_jax.io.cameras import (
    CameraError,
    Trajectory,
    latent_frame_indices,
    read_cameras,
    switch_camera_axes,
    write_cameras,
)

OPENGL_FROM_OPENCV = np.diag([1.0, -1.0, -1.0, 1.0])  # camera y and z flipped
MIRROR_Y = np.diag([1.0, -1.0, 1.0])  # our right-handed world <-> Unreal's left-handed one


def random_w2c(rng, frames: int) -> np.ndarray:
    """`[frames, 4, 4]` random rigid world-to-camera matrices (proper rotations, translations ~ metres)."""
    q, r = np.linalg.qr(rng.normal(size=(frames, 3, 3)))
    rotation = q * np.sign(np.diagonal(r, axis1=1, axis2=2))[:, None, :]
    rotation[np.linalg.det(rotation) < 0] *= -1
    w2c = np.tile(np.eye(4), (frames, 1, 1))
    w2c[:, :3, :3], w2c[:, :3, 3] = rotation, rng.normal(scale=3.0, size=(frames, 3))
    return w2c


def unreal_string(w2c: np.ndarray) -> str:
    """One ReCamMaster matrix string for an OpenCV w2c (4x4), from what the format means: Unreal's
    camera forward/right/up axes and position (cm) as rows, in Unreal's world (ours with y mirrored)."""
    c2w = np.linalg.inv(w2c)
    right, down, forward, position = (c2w[:3, i] for i in range(4))
    rows = [MIRROR_Y @ forward, MIRROR_Y @ right, -(MIRROR_Y @ down), MIRROR_Y @ position * 100]
    return " ".join(f"[{' '.join(repr(float(v)) for v in row)} {int(i == 3)}]" for i, row in enumerate(rows)) + " "


def recammaster_json(trajectories: dict[str, np.ndarray]) -> dict:
    frames = len(next(iter(trajectories.values())))
    return {f"frame{i}": {cam: unreal_string(w2c[i]) for cam, w2c in trajectories.items()} for i in range(frames)}


# --- ReCamMaster's code, verbatim (inference_recammaster.py, TextVideoCameraDataset @ 39c0dc2) ---------------


class Camera:
    def __init__(self, c2w):
        c2w_mat = np.array(c2w).reshape(4, 4)
        self.c2w_mat = c2w_mat
        self.w2c_mat = np.linalg.inv(c2w_mat)


def parse_matrix(matrix_str):
    rows = matrix_str.strip().split("] [")
    matrix = []
    for row in rows:
        row = row.replace("[", "").replace("]", "")
        matrix.append(list(map(float, row.split())))
    return np.array(matrix)


def get_relative_pose(cam_params):
    abs_w2cs = [cam_param.w2c_mat for cam_param in cam_params]
    abs_c2ws = [cam_param.c2w_mat for cam_param in cam_params]
    cam_to_origin = 0
    target_cam_c2w = np.array([[1, 0, 0, 0], [0, 1, 0, -cam_to_origin], [0, 0, 1, 0], [0, 0, 0, 1]])
    abs2rel = target_cam_c2w @ abs_w2cs[0]
    ret_poses = [target_cam_c2w] + [abs2rel @ abs_c2w for abs_c2w in abs_c2ws[1:]]
    ret_poses = np.array(ret_poses, dtype=np.float32)
    return ret_poses


def recammaster_camera_embedding(cam_data, cam_type, num_frames=81):
    cam_idx = list(range(num_frames))[::4]
    traj = [parse_matrix(cam_data[f"frame{idx}"][f"cam{int(cam_type):02d}"]) for idx in cam_idx]
    traj = np.stack(traj).transpose(0, 2, 1)
    c2ws = []
    for c2w in traj:
        c2w = c2w[:, [1, 2, 0, 3]]
        c2w[:3, 1] *= -1.0
        c2w[:3, 3] /= 100
        c2ws.append(c2w)
    tgt_cam_params = [Camera(cam_param) for cam_param in c2ws]
    relative_poses = []
    for i in range(len(tgt_cam_params)):
        relative_pose = get_relative_pose([tgt_cam_params[0], tgt_cam_params[i]])
        relative_poses.append(torch.as_tensor(relative_pose)[:, :3, :][1])
    return torch.stack(relative_poses, dim=0)  # 21x3x4 (float32; bf16 only when fed to the model)


# --- formats ----------------------------------------------------------------------------------------------


def test_every_format_gives_the_same_w2c(tmp_path, rng):
    w2c = random_w2c(rng, 9)
    c2w = np.linalg.inv(w2c)
    files = {}
    np.save(tmp_path / "w2c_opencv.npy", w2c[:, :3])
    files["w2c_opencv.npy"] = dict(convention="w2c", axes="opencv")
    np.save(tmp_path / "c2w_opengl.npy", c2w @ OPENGL_FROM_OPENCV)
    files["c2w_opengl.npy"] = dict(convention="c2w", axes="opengl")
    (tmp_path / "w2c_opengl.json").write_text(json.dumps((OPENGL_FROM_OPENCV @ w2c).tolist()))
    files["w2c_opengl.json"] = dict(convention="w2c", axes="opengl")
    (tmp_path / "c2w_opencv.json").write_text(json.dumps(c2w[:, :3].tolist()))
    files["c2w_opencv.json"] = dict(convention="c2w", axes="opencv")
    other = random_w2c(rng, 9)
    (tmp_path / "recammaster.json").write_text(json.dumps(recammaster_json({"cam01": other, "cam02": w2c})))
    files["recammaster.json"] = dict(camera=2)  # centimetres, / 100 by default as ReCamMaster

    for name, arguments in files.items():
        trajectory = read_cameras(tmp_path / name, num_frames=9, **arguments)
        np.testing.assert_allclose(trajectory.w2c, w2c[:, :3], atol=1e-12, err_msg=name)
        assert trajectory.w2c.dtype == np.float64 and trajectory.source == str(tmp_path / name)
    assert read_cameras(tmp_path / "recammaster.json", camera="cam02").selection == "cam02"
    centimetres = read_cameras(tmp_path / "recammaster.json", camera="cam02", translation_scale=1.0)
    np.testing.assert_allclose(centimetres.w2c[:, :, 3], w2c[:, :3, 3] * 100, atol=1e-10)
    np.testing.assert_allclose(centimetres.w2c[:, :, :3], w2c[:, :3, :3], atol=1e-12)


def test_our_json_round_trips_exactly(tmp_path, rng):
    K = np.array([[500.0, 0.0, 416.0], [0.0, 510.0, 240.0], [0.0, 0.0, 1.0]])
    trajectory = Trajectory(random_w2c(rng, 5)[:, :3], K, "scene7/cameras.json", "cam03")
    path = write_cameras(tmp_path / "out" / "trajectory.json", trajectory)
    again = read_cameras(path, num_frames=5)
    np.testing.assert_array_equal(again.w2c, trajectory.w2c)
    np.testing.assert_array_equal(again.K, K)
    assert again.selection == "cam03" and again.source == str(path)
    halved = read_cameras(path, translation_scale=0.5)
    np.testing.assert_array_equal(halved.w2c[:, :, 3], trajectory.w2c[:, :, 3] / 2)


def test_relative_poses_equal_recammasters_code(tmp_path, rng):
    cam_data = recammaster_json({f"cam{i:02d}": random_w2c(rng, 81) for i in range(1, 4)})
    (tmp_path / "camera_extrinsics.json").write_text(json.dumps(cam_data))
    for cam_type in (1, 3):
        reference = recammaster_camera_embedding(cam_data, cam_type).numpy()
        trajectory = read_cameras(tmp_path / "camera_extrinsics.json", camera=cam_type, num_frames=81)
        poses = trajectory.select(latent_frame_indices(81))
        relative = to_4x4(poses.w2c[0]) @ to_4x4(poses.c2w)  # w2c_ref @ c2w_i, in the first camera's frame
        np.testing.assert_allclose(to_3x4(relative), reference, atol=1e-5)  # ReCamMaster rounds to float32


# Published strings from ReCamMaster's example_test_data/cameras/camera_extrinsics.json: frame0 is the
# same for every camera; frame80 of cam01 (pan right), cam03 (tilt up), cam05 (zoom in), cam07 (translate up).
PUBLISHED_FRAME0 = "[1 0 0 0] [-0 1 0 0] [0 -0 1 0] [3390 1380 240 1] "
PUBLISHED_FRAME80 = {
    "cam01": "[0.940432 0.339982 0 0] [-0.339982 0.940432 0 0] [0 -0 1 0] [3390 1380 240 1] ",
    "cam03": "[0.984995 -2.13821e-50 0.17258 0] [2.69953e-34 1 -1.54074e-33 0] [-0.17258 1.56421e-33 0.984995 0]"
    " [3390 1380 240 1] ",
    "cam05": "[1 0 0 0] [-0 1 0 0] [0 -0 1 0] [3588.76 1380 240 1] ",
    "cam07": "[0.970496 0 -0.241117 0] [-0 1 0 0] [0.241117 0 0.970496 0] [3390 1380 339.379 1] ",
}


@pytest.mark.parametrize(
    ("camera", "forward", "position"),
    [
        ("cam01", [0.339982, 0, 0.940432], [0, 0, 0]),  # pan right: looks to +x (right)
        ("cam03", [0, -0.17258, 0.984995], [0, 0, 0]),  # tilt up: looks to -y (up, y points down)
        ("cam05", [0, 0, 1], [0, 0, 1.9876]),  # zoom in: moves 198.76 cm forward (+z)
        ("cam07", [0, 0.241117, 0.970496], [0, -0.99379, 0]),  # translate up 99.379 cm, tilting down
    ],
)
def test_published_trajectories_move_as_the_readme_says(tmp_path, camera, forward, position):
    path = tmp_path / "camera_extrinsics.json"
    path.write_text(json.dumps({"frame0": {camera: PUBLISHED_FRAME0}, "frame1": {camera: PUBLISHED_FRAME80[camera]}}))
    trajectory = read_cameras(path, camera=camera)
    relative_c2w = to_4x4(trajectory.w2c[0]) @ to_4x4(trajectory.c2w[1])  # the last frame seen from the first
    np.testing.assert_allclose(relative_c2w[:3, 2], forward, atol=1e-6)
    # Positions are printed to 0.01 cm (3588.76) and rotations to 6 digits: 1e-4 m is their precision.
    np.testing.assert_allclose(relative_c2w[:3, 3], position, atol=1e-4)


# --- helpers ----------------------------------------------------------------------------------------------


def test_pose_helpers_agree_with_matrix_algebra(rng):
    w2c = random_w2c(rng, 6)
    np.testing.assert_allclose(to_4x4(invert_pose(w2c[:, :3])), np.linalg.inv(w2c), atol=1e-12)
    np.testing.assert_array_equal(to_4x4(w2c[:, :3]), w2c)
    np.testing.assert_array_equal(to_3x4(w2c), w2c[:, :3])
    c2w = np.linalg.inv(w2c)
    np.testing.assert_allclose(switch_camera_axes(c2w[:, :3], "c2w"), (c2w @ OPENGL_FROM_OPENCV)[:, :3], atol=1e-12)
    np.testing.assert_allclose(switch_camera_axes(w2c[:, :3], "w2c"), (OPENGL_FROM_OPENCV @ w2c)[:, :3], atol=1e-12)
    np.testing.assert_array_equal(switch_camera_axes(switch_camera_axes(w2c, "w2c"), "w2c"), w2c)


def test_latent_frame_indices_match_recammaster():
    assert latent_frame_indices(81) == list(range(81))[::4] == [4 * i for i in range(21)]
    assert latent_frame_indices(1) == [0]
    with pytest.raises(CameraError, match="num_frames=80 is not of the form 4k"):
        latent_frame_indices(80)


# --- bad input --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(5, 3, 3), (5, 4, 5), (3, 4), (0, 3, 4)])
def test_wrong_shape_is_named(tmp_path, shape):
    np.save(tmp_path / "poses.npy", np.zeros(shape))
    pattern = (
        rf"poses\.npy: expected extrinsics \[F, 3, 4\] or \[F, 4, 4\] with F >= 1, got shape {re.escape(str(shape))}"
    )
    with pytest.raises(CameraError, match=pattern):
        read_cameras(tmp_path / "poses.npy", convention="w2c", axes="opencv")


def test_nan_inf_and_non_rotations_are_named_with_the_frame(tmp_path, rng):
    w2c = random_w2c(rng, 6)
    cases = {
        "nan.npy": (lambda m: m.__setitem__((2, 0, 3), np.nan), r"NaN or inf in 1 frame\(s\), first \[2\]"),
        "inf.npy": (lambda m: m.__setitem__((4, 1, 1), np.inf), r"NaN or inf in 1 frame\(s\), first \[4\]"),
        "scaled.npy": (
            lambda m: m.__setitem__((3, slice(0, 3), slice(0, 3)), 1.01 * m[3, :3, :3]),
            r"not a rotation: frame 3 has max \|R\^T R - I\| = 0\.0201 \(tolerance 0\.001; 1 frame\(s\) fail\)",
        ),
        "sheared.npy": (
            lambda m: m.__setitem__((1, 0, 1), m[1, 0, 1] + 0.01),
            r"not a rotation: frame 1 has max \|R\^T R - I\|",
        ),
        "mirrored.npy": (
            lambda m: m.__setitem__((5, 2), -m[5, 2]),
            r"frame 5 has det R = -1: a reflection, not a rotation",
        ),
        "last_row.npy": (lambda m: m.__setitem__((2, 3, 0), 0.5), r"frame 2: last row \[0\.5, 0\.0, 0\.0, 1\.0\]"),
    }
    for name, (corrupt, message) in cases.items():
        matrices = w2c.copy()
        corrupt(matrices)
        np.save(tmp_path / name, matrices)
        with pytest.raises(CameraError, match=rf"{re.escape(name)}: {message}"):
            read_cameras(tmp_path / name, convention="w2c", axes="opencv")


def test_small_rounding_is_accepted(tmp_path, rng):
    w2c = random_w2c(rng, 4)
    w2c[:, :3, :3] += 1e-5  # ~ 6 printed digits, as published pose files have
    np.save(tmp_path / "rounded.npy", w2c)
    assert len(read_cameras(tmp_path / "rounded.npy", convention="w2c", axes="opencv")) == 4


def test_frame_count_mismatch(tmp_path, rng):
    np.save(tmp_path / "five.npy", random_w2c(rng, 5))
    with pytest.raises(CameraError, match=r"five\.npy: holds 5 frames but 81 were asked for"):
        read_cameras(tmp_path / "five.npy", convention="c2w", axes="opengl", num_frames=81)


def test_plain_arrays_need_an_explicit_convention(tmp_path, rng):
    np.save(tmp_path / "poses.npy", random_w2c(rng, 3))
    with pytest.raises(CameraError, match=r"poses\.npy: a plain array of extrinsics does not say its convention"):
        read_cameras(tmp_path / "poses.npy")
    with pytest.raises(CameraError, match=r"got convention='cam2world', axes='opencv'"):
        read_cameras(tmp_path / "poses.npy", convention="cam2world", axes="opencv")
    with pytest.raises(CameraError, match=r"poses\.npy: camera 1 asked for, but this array file holds one trajectory"):
        read_cameras(tmp_path / "poses.npy", camera=1, convention="w2c", axes="opencv")


def test_recammaster_file_problems(tmp_path, rng):
    path = tmp_path / "camera_extrinsics.json"
    good = recammaster_json({"cam01": random_w2c(rng, 3), "cam02": random_w2c(rng, 3)})
    path.write_text(json.dumps(good))
    with pytest.raises(
        CameraError, match=r"camera_extrinsics\.json: unknown camera 'cam11' in frame0 \(it has cam01, cam02\)"
    ):
        read_cameras(path, camera=11)
    with pytest.raises(
        CameraError,
        match=r"holds several cameras \(cam01, cam02\): choose one \(--camera_index, or camera= in Python\)",
    ):
        read_cameras(path)
    with pytest.raises(CameraError, match=r"this recammaster file fixes its own convention"):
        read_cameras(path, camera=1, convention="w2c", axes="opencv")
    broken = {**good, "frame1": {**good["frame1"], "cam02": "[1 0 0 0] [0 1 0 0] [0 0 1 0]"}}
    path.write_text(json.dumps(broken))
    with pytest.raises(CameraError, match=r"frame1/cam02: '\[1 0 0 0\] \[0 1 0 0\] \[0 0 1 0\]' is not four bracketed"):
        read_cameras(path, camera=2)
    path.write_text(json.dumps({**good, "meta": {}}))
    with pytest.raises(
        CameraError, match=r"extrinsics\.json: unexpected keys \['meta'\]: a ReCamMaster file has frame0"
    ):
        read_cameras(path, camera=1)
    del good["frame1"]
    path.write_text(json.dumps(good))
    with pytest.raises(CameraError, match=r"extrinsics\.json: frames must be numbered without gaps; missing: frame1"):
        read_cameras(path, camera=1)


def test_malformed_missing_and_unknown_files(tmp_path):
    (tmp_path / "cut.json").write_text('{"frame0": {"cam01": "[1 0 0 0]"')
    with pytest.raises(CameraError, match=r"cut\.json: malformed JSON at line 1 column 33"):
        read_cameras(tmp_path / "cut.json", camera=1)
    with pytest.raises(CameraError, match=r"nowhere\.json: no such file"):
        read_cameras(tmp_path / "nowhere.json")
    (tmp_path / "poses.txt").write_text("1 0 0 0")
    with pytest.raises(CameraError, match=r"poses\.txt: unsupported camera file type \.txt: use \.json or \.npy"):
        read_cameras(tmp_path / "poses.txt")
    (tmp_path / "other.json").write_text(json.dumps({"poses": []}))
    with pytest.raises(CameraError, match=r"other\.json: not a camera file this reader knows"):
        read_cameras(tmp_path / "other.json")
    (tmp_path / "pickled.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(CameraError, match=r"pickled\.npy: not a readable \.npy array"):
        read_cameras(tmp_path / "pickled.npy", convention="w2c", axes="opencv")
    (tmp_path / "ragged.json").write_text(json.dumps([[[1, 0, 0, 0]], [[1, 0]]]))
    with pytest.raises(CameraError, match=r"ragged\.json: extrinsics are not a numeric array"):
        read_cameras(tmp_path / "ragged.json", convention="w2c", axes="opencv")


def test_trajectory_file_problems(tmp_path, rng):
    path = write_cameras(tmp_path / "t.json", Trajectory(random_w2c(rng, 2)[:, :3]))
    document = json.loads(path.read_text())
    path.write_text(json.dumps({**document, "fov": 60}))
    with pytest.raises(CameraError, match=r"t\.json: unknown trajectory keys \['fov'\]"):
        read_cameras(path)
    path.write_text(json.dumps({**document, "w2c": np.tile(np.eye(4), (2, 1, 1)).tolist()}))
    with pytest.raises(
        CameraError, match=r"t\.json: expected extrinsics \[F, 3, 4\] with F >= 1, got shape \(2, 4, 4\)"
    ):
        read_cameras(path)
    with pytest.raises(CameraError, match=r"intrinsics K must be a finite \[3, 3\] matrix"):
        Trajectory(random_w2c(rng, 2)[:, :3], K=np.eye(2))
    with pytest.raises(CameraError, match=r"<array>: frame indices \[5\] out of range for 2 frames"):
        Trajectory(random_w2c(rng, 2)[:, :3]).select([5])


def test_write_is_atomic(tmp_path, rng, monkeypatch):
    path = tmp_path / "t.json"
    path.write_text("previous")

    def full_disk(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(json, "dumps", full_disk)
    with pytest.raises(OSError, match="No space left"):
        write_cameras(path, Trajectory(random_w2c(rng, 2)[:, :3]))
    assert path.read_text() == "previous"
    assert [p.name for p in tmp_path.iterdir()] == ["t.json"]
    with pytest.raises(CameraError, match=r"t\.npy: trajectories are written as \.json"):
        write_cameras(tmp_path / "t.npy", Trajectory(random_w2c(rng, 2)[:, :3]))
