"""MulticamVideo: ReCamMaster's MultiCamVideo dataset (Unreal Engine 5 renders, 10 synchronised
cameras a scene) read from its published folder layout (README of KwaiVGI/ReCamMaster, "File
Structure"), given as the manual dir:

    <manual_dir>/
      train/f18_aperture10/scene1/videos/cam01.mp4 ... cam10.mp4   81 frames, 1280x1280, 15 fps
                                 /cameras/camera_extrinsics.json    81 frames of the 10 cameras
           /f24_aperture5/..., f35_aperture2.4/..., f50_aperture2.4/...
      val/10basic_trajectories/videos/cam01.mp4 ..., cameras/camera_extrinsics.json
      metadata.csv   optional captions, ReCamMaster's: columns file_name (relative to train/, e.g.
                     f18_aperture10/scene1/videos/cam01.mp4) and text

`train/` becomes the train split, `val/` the validation split; a scene is any folder under them with
a `videos/` or `cameras/` subfolder. Videos are read with `mv2v_jax.io.video.read_video` (resize +
centre crop as ReCamMaster, `num_frames` sampled "first" or "uniform"), cameras with
`mv2v_jax.io.cameras.read_cameras` (UE c2w -> our OpenCV w2c in metres) at the same frames.

Intrinsics come from the README: focal length 18/24/35/50 mm (the `f<mm>_aperture<a>` folder of the
scene) on a 23.76 x 23.76 mm sensor, i.e. `f / 23.76 * 1280` pixels at 1280x1280, scaled and shifted
by the resize and crop. The val scene's folder does not name its focal length: set
`fallback_focal_mm` in the config to build that split.

The dataset ships no captions; with metadata.csv every train video needs one, without it (and for
val) prompts are empty.

Record (V = len(cameras), F = num_frames, H x W = (height, width)):

    scene    bytes   the scene folder relative to the manual dir, e.g. "train/f18_aperture10/scene1"
    prompts  [V]              bytes    each camera's caption ("" without metadata.csv)
    video    [V, F, H, W, 3]  uint8
    w2c      [V, F, 3, 4]     float32  world-to-camera, OpenCV axes, metres (`mv2v_jax.io.cameras`)
    K        [3, 3]           float32  pixels, for the H x W frames
    frames   [F]              int32    source frame index of each frame
"""

from __future__ import annotations

import csv
import dataclasses
import os
import re
from pathlib import Path
from typing import ClassVar

import numpy as np
import tensorflow_datasets as tfds

from mv2v_jax.data.tfds.common import LayoutError, natural_key, raise_problems
from mv2v_jax.io.cameras import CameraError, read_cameras
from mv2v_jax.io.video import VideoError, check_num_frames, cover_crop_geometry, read_video

SPLIT_FOLDERS = {"train": "train", "validation": "val"}
CAMERA_FILE = Path("cameras") / "camera_extrinsics.json"
METADATA_FILE = "metadata.csv"
SENSOR_MM = (23.76, 23.76)  # README "Camera Configurations": sensor height, width
FOCAL_FOLDER = re.compile(r"^f(\d+(?:\.\d+)?)_aperture")
NO_FOCAL = "no f<mm>_aperture<a> folder on its path names its focal length: set fallback_focal_mm in the builder config"


@dataclasses.dataclass(eq=False, kw_only=True)
class MulticamVideoConfig(tfds.core.BuilderConfig):
    """Frame size and count, which cameras, and the lens where the folder does not name it."""

    height: int = 480
    width: int = 832
    num_frames: int = 81  # 4k + 1
    sampling: str = "first"  # ReCamMaster's: the first num_frames frames; "uniform" spans the video
    stride: int = 1
    cameras: tuple[int, ...] = tuple(range(1, 11))
    # For scenes whose path has no f<mm>_aperture<a> folder (val/): the README does not say.
    fallback_focal_mm: float | None = None
    sensor_mm: tuple[float, float] = SENSOR_MM


class MulticamVideo(tfds.core.GeneratorBasedBuilder):
    """ReCamMaster's MultiCamVideo: 10 synchronised camera trajectories per dynamic scene."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "First version."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Download https://huggingface.co/datasets/KwaiVGI/MultiCamVideo-Dataset, then\n"
        "  cat MultiCamVideo-Dataset.part* > MultiCamVideo-Dataset.tar.gz && tar -xzvf MultiCamVideo-Dataset.tar.gz\n"
        "and pass the extracted MultiCamVideo-Dataset folder (holding train/ and val/) as manual_dir."
    )
    BUILDER_CONFIGS: ClassVar[list[tfds.core.BuilderConfig]] = [
        MulticamVideoConfig(name="full", height=480, width=832, num_frames=81),  # ReCamMaster's training clips
        # The shipped CPU model's size, its 17 frames spread over the 81-frame trajectories.
        MulticamVideoConfig(name="small", height=64, width=96, num_frames=17, sampling="uniform"),
    ]
    DEFAULT_CONFIG_NAME = "full"

    def _info(self) -> tfds.core.DatasetInfo:
        config = self.builder_config
        views, frames, size = len(config.cameras), config.num_frames, (config.height, config.width)
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            homepage="https://huggingface.co/datasets/KwaiVGI/MultiCamVideo-Dataset",
            features=tfds.features.FeaturesDict(
                {
                    "scene": tfds.features.Text(),
                    "prompts": tfds.features.Tensor(shape=(views,), dtype=np.object_),
                    "video": tfds.features.Tensor(shape=(views, frames, *size, 3), dtype=np.uint8),
                    "w2c": tfds.features.Tensor(shape=(views, frames, 3, 4), dtype=np.float32),
                    "K": tfds.features.Tensor(shape=(3, 3), dtype=np.float32),
                    "frames": tfds.features.Tensor(shape=(frames,), dtype=np.int32),
                }
            ),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        root = Path(dl_manager.manual_dir)
        check_num_frames(self.builder_config.num_frames)
        splits = {split: root / folder for split, folder in SPLIT_FOLDERS.items() if (root / folder).is_dir()}
        if not splits:
            raise LayoutError(f"{root}: holds neither train/ nor val/: not a MultiCamVideo-Dataset folder")
        captions = read_captions(root)
        scenes = {split: find_scenes(folder) for split, folder in splits.items()}
        problems = [
            problem
            for split, folders in scenes.items()
            for scene in folders
            for problem in self._scene_problems(root, scene, captions if split == "train" else None)
        ]
        raise_problems(f"{root}: MultiCamVideo layout", problems)
        return {
            split: self._generate_examples(root, folders, captions if split == "train" else None)
            for split, folders in scenes.items()
        }

    def _generate_examples(self, root: Path, scenes: list[Path], captions: dict[Path, str] | None):
        for scene in scenes:
            name = scene.relative_to(root).as_posix()
            yield name, {"scene": name, **self.read_scene(scene, captions)}

    def read_scene(self, scene: Path, captions: dict[Path, str] | None = None) -> dict[str, np.ndarray]:
        """One scene folder -> the record's arrays (all but `scene`); LayoutError names the scene."""
        config = self.builder_config
        size = (config.height, config.width)
        cameras_file = scene / CAMERA_FILE
        videos, poses = [], []
        try:
            first = read_video(self._video(scene, config.cameras[0]), num_frames=1, size=None)
            for camera in config.cameras:
                path = self._video(scene, camera)
                clip = read_video(path, config.num_frames, size, config.sampling, config.stride)
                trajectory = read_cameras(cameras_file, camera=camera)
                if len(trajectory) != clip.source_frames:
                    raise LayoutError(
                        f"scene {scene}: {path.relative_to(scene)} has {clip.source_frames} frames but {CAMERA_FILE}"
                        f" has {len(trajectory)} for cam{camera:02d}"
                    )
                videos.append(clip.frames)
                poses.append(trajectory.select(clip.indices).w2c)
        except (VideoError, CameraError) as e:
            raise LayoutError(f"scene {scene}: {e}") from e
        prompts = [captions.get(self._video(scene, c).resolve(), "") if captions else "" for c in config.cameras]
        return {
            "prompts": np.array(prompts, dtype=object),
            "video": np.stack(videos),
            "w2c": np.stack(poses).astype(np.float32),
            "K": self.intrinsics(scene, first.frames.shape[1:3]).astype(np.float32),
            "frames": np.array(clip.indices, np.int32),
        }

    def intrinsics(self, scene: Path, source_size: tuple[int, int]) -> np.ndarray:
        """`K` `[3, 3]` of the scene's frames after resize + centre crop from `source_size` (H, W)."""
        config = self.builder_config
        focal = focal_from_path(scene) or config.fallback_focal_mm
        if focal is None:
            raise LayoutError(f"scene {scene}: {NO_FOCAL}")
        (resized_h, resized_w), (top, left) = cover_crop_geometry(source_size, (config.height, config.width))
        sensor_h, sensor_w = config.sensor_mm
        return np.array(
            [
                [focal / sensor_w * resized_w, 0.0, resized_w / 2 - left],
                [0.0, focal / sensor_h * resized_h, resized_h / 2 - top],
                [0.0, 0.0, 1.0],
            ]
        )

    def _scene_problems(self, root: Path, scene: Path, captions: dict[Path, str] | None) -> list[str]:
        """What stops a scene from being read, found before anything is decoded."""
        config = self.builder_config
        problems = []
        if not (scene / CAMERA_FILE).is_file():
            problems.append(f"scene {scene}: missing camera file {CAMERA_FILE}")
        for camera in config.cameras:
            video = self._video(scene, camera)
            if not video.is_file():
                problems.append(f"scene {scene}: missing video {video.relative_to(scene)}")
            elif captions is not None and not captions.get(video.resolve(), "").strip():
                problems.append(
                    f"scene {scene}: {METADATA_FILE} has no caption for {video.relative_to(root / 'train')}"
                )
        if focal_from_path(scene) is None and config.fallback_focal_mm is None:
            problems.append(f"scene {scene}: {NO_FOCAL}")
        return problems

    @staticmethod
    def _video(scene: Path, camera: int) -> Path:
        return scene / "videos" / f"cam{camera:02d}.mp4"


def find_scenes(folder: Path) -> list[Path]:
    """Scene folders under `folder` (those with a videos/ or cameras/ subfolder), in natural order."""
    scenes = [
        Path(path) for path, subfolders, _ in os.walk(folder) if "videos" in subfolders or "cameras" in subfolders
    ]
    if not scenes:
        raise LayoutError(f"{folder}: no scene folders (folders holding videos/ and cameras/)")
    return sorted(scenes, key=natural_key)


def focal_from_path(scene: Path) -> float | None:
    """The focal length in mm named by an `f<mm>_aperture<a>` folder on the scene's path, if any."""
    for part in reversed(scene.parts):
        if match := FOCAL_FOLDER.match(part):
            return float(match.group(1))
    return None


def read_captions(root: Path) -> dict[Path, str] | None:
    """ReCamMaster's metadata.csv as {absolute video path: caption}, None without the file."""
    path = root / METADATA_FILE
    if not path.is_file():
        return None
    with path.open(newline="") as file:
        reader = csv.DictReader(file)
        if not {"file_name", "text"} <= set(reader.fieldnames or ()):
            raise LayoutError(f"{path}: needs columns file_name and text, has {reader.fieldnames}")
        return {(root / "train" / row["file_name"]).resolve(): row["text"] or "" for row in reader}
