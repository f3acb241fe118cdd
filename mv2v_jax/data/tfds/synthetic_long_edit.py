"""SyntheticLongEdit: long synthetic videos and their edit (objects recoloured or walls repainted,
`mv2v_jax.data.synthetic.long_video`) as a TFDS dataset of long-edit pairs.

Pair i of a split is `generate_long_edit(scene_seed(base_seed, split, i), config.video)`: the dataset is
a pure function of its config. Records carry the fields of `long_edit_pairs` (so whatever reads one
reads the other) plus the ground truth of the edit.

Record (S segments, drawn per pair from `video.num_segments`; F = segment frames):

    pair            bytes   "train/000042": split and index
    prompt          bytes   the edit instruction (the same for every pair; it does not name the colour)
    source          [S, F, H, W, 3]  uint8
    edited          [S, F, H, W, 3]  uint8
    segment_starts  [S]              int32  first frame of each segment in the long video
    seed            int64   the pair's seed for `generate_long_edit`
    edit_colour     bytes   the colour every moving object became, or each wall's new colour (comma-joined)
    w2c             [S, F, 3, 4]     float32  the camera, OpenCV axes, metres
    K               [3, 3]           float32

    builder = prepare(SyntheticLongEdit, "small", data_dir)
    record = builder.as_data_source()["train"][0]
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np
import tensorflow_datasets as tfds

from mv2v_jax.data.synthetic import LONG_PRESETS, LongVideoConfig, generate_long_edit
from mv2v_jax.data.tfds.synthetic_multicam import SPLITS, scene_seed


@dataclasses.dataclass(eq=False, kw_only=True)
class SyntheticLongEditConfig(tfds.core.BuilderConfig):
    """A long-video preset and how many pairs each split holds."""

    video: LongVideoConfig = LONG_PRESETS["small"]
    num_train: int = 500
    num_validation: int = 16
    base_seed: int = 0


class SyntheticLongEdit(tfds.core.GeneratorBasedBuilder):
    """A camera panning round a procedural room for several segments, and the video with its objects recoloured."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "First version."}
    # Sizes: "small" is ~3 MB a pair (5 segments of 17 frames at 64 x 96, source and edit).
    BUILDER_CONFIGS: ClassVar[list[tfds.core.BuilderConfig]] = [
        SyntheticLongEditConfig(name="tiny", video=LONG_PRESETS["tiny"], num_train=8, num_validation=2),
        SyntheticLongEditConfig(name="small", video=LONG_PRESETS["small"], num_train=500, num_validation=16),
    ]
    DEFAULT_CONFIG_NAME = "small"

    def _info(self) -> tfds.core.DatasetInfo:
        scene = self.builder_config.video.scene
        segment = (scene.num_frames, scene.height, scene.width)
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=tfds.features.FeaturesDict(
                {
                    "pair": tfds.features.Text(),
                    "prompt": tfds.features.Text(),
                    "source": tfds.features.Tensor(shape=(None, *segment, 3), dtype=np.uint8),
                    "edited": tfds.features.Tensor(shape=(None, *segment, 3), dtype=np.uint8),
                    "segment_starts": tfds.features.Tensor(shape=(None,), dtype=np.int32),
                    "seed": tfds.features.Scalar(dtype=np.int64),
                    "edit_colour": tfds.features.Text(),
                    "w2c": tfds.features.Tensor(shape=(None, scene.num_frames, 3, 4), dtype=np.float32),
                    "K": tfds.features.Tensor(shape=(3, 3), dtype=np.float32),
                }
            ),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        config = self.builder_config
        counts = dict(zip(SPLITS, (config.num_train, config.num_validation), strict=True))
        return {split: self._generate_examples(split, count) for split, count in counts.items() if count > 0}

    def _generate_examples(self, split: str, count: int):
        config = self.builder_config
        for index in range(count):
            seed = scene_seed(config.base_seed, split, index)
            video = generate_long_edit(seed, config.video)
            key = f"{split}/{index:06d}"
            yield (
                key,
                {
                    "pair": key,
                    "prompt": video["prompt"],
                    "source": video["source"],
                    "edited": video["edited"],
                    "segment_starts": video["segment_starts"],
                    "seed": seed,
                    "edit_colour": video["edit_colour"],
                    "w2c": video["w2c"].astype(np.float32),
                    "K": video["K"].astype(np.float32),
                },
            )
