"""TFDS builders on tiny fabricated folders in the published layouts (lossless mp4s of flat frames
whose grey level encodes scene, camera and frame; ReCamMaster camera JSONs whose positions encode
the frame), read back through `as_data_source`; malformed folders refused naming the folder."""

import dataclasses
import json

import numpy as np
import pytest

from mv2v_jax.data.synthetic import PRESETS, generate_scene
from mv2v_jax.data.tfds.common import LayoutError, prepare
from mv2v_jax.data.tfds.long_edit_pairs import LongEditPairs, LongEditPairsConfig
from mv2v_jax.data.tfds.multicam_video import MulticamVideo, MulticamVideoConfig
from mv2v_jax.data.tfds.synthetic_multicam import SyntheticMulticam, SyntheticMulticamConfig, scene_seed
from mv2v_jax.geometry import invert_pose
from mv2v_jax.io.video import write_video

SOURCE_SIZE = (40, 40)  # square, as MultiCamVideo's 1280x1280
SIZE = (16, 24)


def flat_video(path, levels, size=SOURCE_SIZE):
    """A lossless video whose frame i is flat grey `levels[i]`."""
    frames = np.broadcast_to(np.asarray(levels, np.uint8)[:, None, None, None], (len(levels), *size, 3))
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_video(path, frames, fps=15, lossless=True)


def level(scene: int, camera: int, frame: int) -> int:
    return 3 * scene + 20 * camera + 10 * frame


def ue_position(camera: int, frame: int) -> tuple[float, float, float]:
    """UE centimetres: x walks 1 m a frame, y 20 cm a camera."""
    return 100.0 * frame, 20.0 * camera, 150.0


def write_recammaster_cameras(path, num_frames, cameras):
    """camera_extrinsics.json in ReCamMaster's form: UE rows forward, right, up, position (cm)."""
    document = {
        f"frame{i}": {
            f"cam{c:02d}": "[1 0 0 0] [0 1 0 0] [0 0 1 0] [{} {} {} 1] ".format(*ue_position(c, i)) for c in cameras
        }
        for i in range(num_frames)
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document))


def multicam_scene(folder, scene, cameras=(1, 2, 3), num_frames=9, camera_frames=None):
    for camera in cameras:
        flat_video(folder / "videos" / f"cam{camera:02d}.mp4", [level(scene, camera, i) for i in range(num_frames)])
    write_recammaster_cameras(folder / "cameras" / "camera_extrinsics.json", camera_frames or num_frames, cameras)


MULTICAM = MulticamVideoConfig(
    name="test", height=SIZE[0], width=SIZE[1], num_frames=5, sampling="uniform", cameras=(1, 2, 3)
)


@pytest.fixture
def multicam_root(tmp_path):
    root = tmp_path / "MultiCamVideo-Dataset"
    multicam_scene(root / "train" / "f24_aperture5" / "scene1", 1)
    multicam_scene(root / "train" / "f24_aperture5" / "scene2", 2)
    multicam_scene(root / "val" / "10basic_trajectories", 5)
    return root


def records_by(source, key):
    return {record[key].decode(): record for record in (source[i] for i in range(len(source)))}


def test_multicam_video_reads_the_published_layout(multicam_root, tmp_path):
    rows = ["file_name,text"] + [
        f'f24_aperture5/scene{s}/videos/cam{c:02d}.mp4,"scene {s}, camera {c}"' for s in (1, 2) for c in (1, 2, 3)
    ]
    (multicam_root / "metadata.csv").write_text("\n".join(rows) + "\n")
    config = dataclasses.replace(MULTICAM, name="captions", fallback_focal_mm=35.0)
    data = prepare(MulticamVideo, config, tmp_path / "data", multicam_root).as_data_source()
    train = records_by(data["train"], "scene")
    assert sorted(train) == ["train/f24_aperture5/scene1", "train/f24_aperture5/scene2"]
    record = train["train/f24_aperture5/scene2"]
    frames = [0, 2, 4, 6, 8]  # 5 frames spread over 9
    np.testing.assert_array_equal(record["frames"], frames)
    assert record["video"].shape == (3, 5, *SIZE, 3) and record["video"].dtype == np.uint8
    expected = np.array([[level(2, c, i) for i in frames] for c in (1, 2, 3)])
    np.testing.assert_array_equal(
        record["video"], np.broadcast_to(expected[..., None, None, None], record["video"].shape)
    )
    # Camera centres: UE cm -> metres, world y mirrored (mv2v_jax.io.cameras.unreal_c2w_to_w2c).
    centres = invert_pose(record["w2c"].astype(np.float64))[..., 3]
    expected_centres = [[np.array(ue_position(c, i)) * [0.01, -0.01, 0.01] for i in frames] for c in (1, 2, 3)]
    np.testing.assert_allclose(centres, expected_centres, atol=1e-5)
    # 24 mm on the 23.76 mm sensor: 40x40 frames cover 16x24 at 24x24, cropped 4 rows from the top.
    focal = 24 / 23.76 * 24
    np.testing.assert_allclose(record["K"], [[focal, 0, 12], [0, focal, 8], [0, 0, 1]], rtol=1e-6)
    assert [p.decode() for p in record["prompts"]] == ["scene 2, camera 1", "scene 2, camera 2", "scene 2, camera 3"]
    (validation,) = records_by(data["validation"], "scene").values()
    np.testing.assert_allclose(validation["K"][0, 0], 35 / 23.76 * 24, rtol=1e-6)  # the fallback lens
    assert list(validation["prompts"]) == [b"", b"", b""]  # metadata.csv captions train/ only


def break_camera_file(root):
    (root / "train" / "f24_aperture5" / "scene2" / "cameras" / "camera_extrinsics.json").unlink()


def break_frame_count(root):
    multicam_scene(root / "train" / "f24_aperture5" / "scene1", 1, camera_frames=10)


def break_video(root):
    (root / "train" / "f24_aperture5" / "scene1" / "videos" / "cam02.mp4").unlink()


def break_caption(root):
    (root / "metadata.csv").write_text("file_name,text\nf24_aperture5/scene1/videos/cam01.mp4,a caption\n")


def break_nothing(root):
    """Without fallback_focal_mm the val scene's lens is unknown."""


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (break_camera_file, r"scene \S*/scene2: missing camera file cameras/camera_extrinsics.json"),
        (
            break_frame_count,
            r"scene \S*/scene1: videos/cam01.mp4 has 9 frames but cameras/camera_extrinsics.json has 10",
        ),
        (break_video, r"scene \S*/scene1: missing video videos/cam02.mp4"),
        (break_caption, r"scene \S*/scene2: metadata.csv has no caption for f24_aperture5/scene2/videos/cam01.mp4"),
        (break_nothing, r"scene \S*/val/10basic_trajectories: no f<mm>_aperture<a> folder .* fallback_focal_mm"),
    ],
)
def test_multicam_video_malformed_scene(multicam_root, tmp_path, damage, message):
    damage(multicam_root)
    config = MULTICAM if damage is break_nothing else dataclasses.replace(MULTICAM, fallback_focal_mm=24.0)
    with pytest.raises(LayoutError, match=message):
        prepare(MulticamVideo, config, tmp_path / "data", multicam_root)
    assert not list((tmp_path / "data").glob("multicam_video/*/*/*.array_record*"))  # nothing half-written


def edit_pair(folder, num_frames, prompt="make it snowy", edited_frames=None):
    flat_video(folder / "source.mp4", [10 * i + 1 for i in range(num_frames)], SIZE)
    flat_video(folder / "edited.mp4", [250 - 10 * i for i in range(edited_frames or num_frames)], SIZE)
    (folder / "prompt.txt").write_text(f"  {prompt}\n")


LONG_EDIT = LongEditPairsConfig(name="test", height=SIZE[0], width=SIZE[1], segment_frames=5)


def test_long_edit_pairs_segments(tmp_path):
    root = tmp_path / "pairs"
    edit_pair(root / "train" / "pair1", 20)
    edit_pair(root / "train" / "pair2", 13, prompt="turn the car red")
    edit_pair(root / "validation" / "pairA", 10)
    data = prepare(LongEditPairs, LONG_EDIT, tmp_path / "data", root).as_data_source()
    train = records_by(data["train"], "pair")
    assert sorted(train) == ["train/pair1", "train/pair2"] and len(data["validation"]) == 1
    record = train["train/pair1"]
    assert record["prompt"] == b"make it snowy"
    assert record["source"].shape == (4, 5, *SIZE, 3)
    np.testing.assert_array_equal(record["segment_starts"], [0, 5, 10, 15])
    frame = np.arange(20).reshape(4, 5)
    np.testing.assert_array_equal(record["source"][..., 0, 0, 0], 10 * frame + 1)
    np.testing.assert_array_equal(record["edited"][..., 0, 0, 0], 250 - 10 * frame)
    assert (record["source"] == record["source"][..., :1, :1, :]).all()  # flat frames stay flat
    short = train["train/pair2"]  # 13 frames: two whole segments, 3 frames dropped
    assert short["prompt"] == b"turn the car red" and short["edited"].shape[0] == 2


def test_long_edit_pairs_stride_and_cap(tmp_path):
    pair = tmp_path / "train" / "pair1"
    edit_pair(pair, 20)
    strided = LongEditPairs(config=dataclasses.replace(LONG_EDIT, stride=2), data_dir=tmp_path)
    record = strided.read_pair(pair)
    np.testing.assert_array_equal(record["segment_starts"], [0, 10])
    np.testing.assert_array_equal(record["source"][..., 0, 0, 0], 10 * np.arange(0, 20, 2).reshape(2, 5) + 1)
    capped = LongEditPairs(config=dataclasses.replace(LONG_EDIT, max_segments=3), data_dir=tmp_path)
    np.testing.assert_array_equal(capped.read_pair(pair)["segment_starts"], [0, 5, 10])


@pytest.mark.parametrize(
    ("make_pair", "message"),
    [
        (lambda p: (edit_pair(p, 20), (p / "edited.mp4").unlink()), r"pair \S*/pair2: missing edited.mp4"),
        (lambda p: edit_pair(p, 20, prompt=" "), r"pair \S*/pair2: prompt.txt is empty"),
        (
            lambda p: edit_pair(p, 20, edited_frames=19),
            r"pair \S*/pair2: source.mp4 has 20 frames but edited.mp4 has 19",
        ),
        (lambda p: edit_pair(p, 8), r"pair \S*/pair2: 8 frames give 1 segment\(s\) of 5 frames .* at least 2"),
    ],
)
def test_long_edit_pairs_malformed_pair(tmp_path, make_pair, message):
    root = tmp_path / "pairs"
    edit_pair(root / "train" / "pair1", 10)
    make_pair(root / "train" / "pair2")
    with pytest.raises(LayoutError, match=message):
        prepare(LongEditPairs, LONG_EDIT, tmp_path / "data", root)


def test_synthetic_multicam_builds_and_reads_back(tmp_path):
    tiny = PRESETS["tiny"]
    config = SyntheticMulticamConfig(name="test", scene=tiny, num_train=2, num_validation=1)
    data = prepare(SyntheticMulticam, config, tmp_path / "data").as_data_source()
    assert len(data["train"]) == 2 and len(data["validation"]) == 1
    record = records_by(data["train"], "scene")["train/000001"]
    assert record["seed"] == scene_seed(0, "train", 1)
    scene = generate_scene(record["seed"], tiny)
    views, frames = tiny.num_cameras, tiny.num_frames
    assert record["video"].shape == (views, frames, tiny.height, tiny.width, 3)
    np.testing.assert_array_equal(record["video"], scene["video"])
    assert record["depth"].dtype == np.float16
    np.testing.assert_allclose(record["depth"], scene["depth"], rtol=1e-3)
    np.testing.assert_allclose(record["w2c"], scene["w2c"], atol=1e-6)
    np.testing.assert_allclose(record["K"], scene["K"], rtol=1e-7)
    assert [p.decode() for p in record["prompts"]] == [scene["prompt"]] * views
    assert [t.decode() for t in record["trajectories"]] == scene["trajectories"]
    (validation,) = records_by(data["validation"], "scene").values()
    assert validation["seed"] == scene_seed(0, "validation", 0)
    seeds = {scene_seed(base, split, i) for base in (0, 1) for split in ("train", "validation") for i in range(50)}
    assert len(seeds) == 200
    # A second prepare reuses what is built.
    assert len(prepare(SyntheticMulticam, config, tmp_path / "data").as_data_source()["train"]) == 2
