"""SyntheticMulticam: procedural multi-camera scenes (`mv2v_jax.data.synthetic`) as a TFDS dataset.

Scene i of a split is `generate_scene(scene_seed(base_seed, split, i), config.scene)`: the dataset is
a pure function of its config, and any scene can be regenerated (or re-rendered from new cameras)
from the `seed` in its record.

Record (V cameras, F frames, H x W pixels of the config's `scene`):

    scene         bytes  "train/000042": split and index
    seed          int64  the scene's seed for `generate_scene`
    prompts       [V]          bytes    the scene's description, the same for every camera (the
                                        multi-camera records of `multicam_video` have one a camera)
    video         [V, F, H, W, 3] uint8
    depth         [V, F, H, W]    float16  z-depth in metres (float16: ~4 mm steps at 8 m)
    w2c           [V, F, 3, 4]    float32  world-to-camera, OpenCV axes (`mv2v_jax.io.cameras`)
    K             [3, 3]          float32  pixels
    trajectories  [V]          bytes    each camera's move (`synthetic.TRAJECTORY_KINDS`)

    builder = prepare(SyntheticMulticam, "small", data_dir)
    record = builder.as_data_source()["train"][0]
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np
import tensorflow_datasets as tfds

from mv2v_jax.data.synthetic import PRESETS, SceneConfig, generate_scene

SPLITS = ("train", "validation")


@dataclasses.dataclass(eq=False, kw_only=True)
class SyntheticMulticamConfig(tfds.core.BuilderConfig):
    """A scene preset and how many scenes each split holds."""

    scene: SceneConfig = PRESETS["small"]
    num_train: int = 1000
    num_validation: int = 16
    base_seed: int = 0


def scene_seed(base_seed: int, split: str, index: int) -> int:
    """The seed of scene `index` of `split`: 63 bits from NumPy's SeedSequence of (base_seed, split, index)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {SPLITS}")
    state = np.random.SeedSequence([base_seed, SPLITS.index(split), index]).generate_state(1, np.uint64)[0]
    return int(state >> np.uint64(1))


class SyntheticMulticam(tfds.core.GeneratorBasedBuilder):
    """Procedural rooms with moving objects seen by V synchronised moving cameras, with depth."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "First version."}
    # Sizes: "small" is ~5 MB a scene (video + float16 depth), "medium" ~40 MB.
    BUILDER_CONFIGS: ClassVar[list[tfds.core.BuilderConfig]] = [
        SyntheticMulticamConfig(name="tiny", scene=PRESETS["tiny"], num_train=16, num_validation=4),
        SyntheticMulticamConfig(name="small", scene=PRESETS["small"], num_train=1000, num_validation=16),
        SyntheticMulticamConfig(name="medium", scene=PRESETS["medium"], num_train=500, num_validation=16),
    ]
    DEFAULT_CONFIG_NAME = "small"

    def _info(self) -> tfds.core.DatasetInfo:
        scene = self.builder_config.scene
        views, frames, size = scene.num_cameras, scene.num_frames, (scene.height, scene.width)
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=tfds.features.FeaturesDict(
                {
                    "scene": tfds.features.Text(),
                    "seed": tfds.features.Scalar(dtype=np.int64),
                    "prompts": tfds.features.Tensor(shape=(views,), dtype=np.object_),
                    "video": tfds.features.Tensor(shape=(views, frames, *size, 3), dtype=np.uint8),
                    "depth": tfds.features.Tensor(shape=(views, frames, *size), dtype=np.float16),
                    "w2c": tfds.features.Tensor(shape=(views, frames, 3, 4), dtype=np.float32),
                    "K": tfds.features.Tensor(shape=(3, 3), dtype=np.float32),
                    "trajectories": tfds.features.Tensor(shape=(views,), dtype=np.object_),
                }
            ),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        counts = {"train": self.builder_config.num_train, "validation": self.builder_config.num_validation}
        return {split: self._generate_examples(split, count) for split, count in counts.items() if count > 0}

    def _generate_examples(self, split: str, count: int):
        config = self.builder_config
        for index in range(count):
            seed = scene_seed(config.base_seed, split, index)
            scene = generate_scene(seed, config.scene)
            key = f"{split}/{index:06d}"
            yield (
                key,
                {
                    "scene": key,
                    "seed": seed,
                    "prompts": np.array([scene["prompt"]] * config.scene.num_cameras, dtype=object),
                    "video": scene["video"],
                    "depth": scene["depth"].astype(np.float16),
                    "w2c": scene["w2c"].astype(np.float32),
                    "K": scene["K"].astype(np.float32),
                    "trajectories": np.array(scene["trajectories"], dtype=object),
                },
            )
