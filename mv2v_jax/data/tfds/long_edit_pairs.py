"""LongEditPairs: long source/edited video pairs with their edit prompts, cut into fixed-length
segments, for training long video editing with memory (docs/paper.md, "Training": Señorita-2M clips
extended to 233 frames; memory segments are earlier segments of the same pair).

Layout of the manual dir (ours; one folder per pair, as a Señorita-2M pair extended to a long video):

    <manual_dir>/
      train/<pair_id>/source.mp4    the original long video
                     /edited.mp4    its edit: the same number of frames
                     /prompt.txt    the edit instruction / target caption (UTF-8, not empty)
      validation/<pair_id>/...      optional, the same

Each pair becomes one record. Its videos are cut into S consecutive, non-overlapping segments of
`segment_frames` (4k + 1) frames taken every `stride` source frames; frames past the last whole
segment are dropped, and S is capped at `max_segments`. A pair shorter than `min_segments`
segments, a missing file, an empty prompt or a source and edit of different lengths is an error
naming the pair folder.

Record (S varies per pair, L = segment_frames, H x W = (height, width)):

    pair            bytes   "train/<pair_id>"
    prompt          bytes   prompt.txt, stripped
    source          [S, L, H, W, 3]  uint8
    edited          [S, L, H, W, 3]  uint8
    segment_starts  [S]              int32  source frame index of each segment's first frame
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import ClassVar

import numpy as np
import tensorflow_datasets as tfds

from mv2v_jax.data.tfds.common import LayoutError, natural_key, raise_problems
from mv2v_jax.io.video import VideoError, check_num_frames, read_video

SPLITS = ("train", "validation")
SOURCE, EDITED, PROMPT = "source.mp4", "edited.mp4", "prompt.txt"


@dataclasses.dataclass(eq=False, kw_only=True)
class LongEditPairsConfig(tfds.core.BuilderConfig):
    """Frame size, segment length and how many segments a pair gives."""

    height: int = 480
    width: int = 832
    segment_frames: int = 81  # 4k + 1; the paper's 480x832x81 segments
    stride: int = 1
    # Ours: a pair must give a target segment and at least one earlier segment to remember.
    min_segments: int = 2
    max_segments: int | None = None


class LongEditPairs(tfds.core.GeneratorBasedBuilder):
    """Long source/edited video pairs with prompts, in fixed-length segments."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "First version."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Put each long video pair in <manual_dir>/train/<pair_id>/ (and optionally validation/<pair_id>/)"
        f" as {SOURCE}, {EDITED} (same frame count) and {PROMPT} (the edit prompt)."
    )
    BUILDER_CONFIGS: ClassVar[list[tfds.core.BuilderConfig]] = [
        LongEditPairsConfig(name="full", height=480, width=832, segment_frames=81),
        LongEditPairsConfig(name="small", height=64, width=96, segment_frames=17),  # the shipped CPU model
    ]
    DEFAULT_CONFIG_NAME = "full"

    def _info(self) -> tfds.core.DatasetInfo:
        config = self.builder_config
        segment = (config.segment_frames, config.height, config.width, 3)
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=tfds.features.FeaturesDict(
                {
                    "pair": tfds.features.Text(),
                    "prompt": tfds.features.Text(),
                    "source": tfds.features.Tensor(shape=(None, *segment), dtype=np.uint8),
                    "edited": tfds.features.Tensor(shape=(None, *segment), dtype=np.uint8),
                    "segment_starts": tfds.features.Tensor(shape=(None,), dtype=np.int32),
                }
            ),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        root = Path(dl_manager.manual_dir)
        config = self.builder_config
        check_num_frames(config.segment_frames)
        if config.min_segments < 1 or (config.max_segments is not None and config.max_segments < config.min_segments):
            raise ValueError(
                f"need 1 <= min_segments <= max_segments, got {config.min_segments}, {config.max_segments}"
            )
        splits = {split: root / split for split in SPLITS if (root / split).is_dir()}
        if not splits:
            raise LayoutError(f"{root}: holds neither train/ nor validation/ pair folders")
        pairs = {split: find_pairs(folder) for split, folder in splits.items()}
        problems = [problem for folders in pairs.values() for pair in folders for problem in pair_problems(pair)]
        raise_problems(f"{root}: long edit pair layout", problems)
        return {split: self._generate_examples(root, folders) for split, folders in pairs.items()}

    def _generate_examples(self, root: Path, pairs: list[Path]):
        for pair in pairs:
            name = pair.relative_to(root).as_posix()
            yield name, {"pair": name, **self.read_pair(pair)}

    def read_pair(self, pair: Path) -> dict[str, np.ndarray | str]:
        """One pair folder -> the record's arrays and prompt; LayoutError names the pair."""
        config = self.builder_config
        size, length, stride = (config.height, config.width), config.segment_frames, config.stride
        source, edited, starts = [], [], []
        try:
            count = None
            while count is None or len(source) < count:
                start = len(source) * length * stride
                source_clip = read_video(pair / SOURCE, length, size, "first", stride, start)
                edited_clip = read_video(pair / EDITED, length, size, "first", stride, start)
                if count is None:
                    count = self._segment_count(pair, source_clip.source_frames, edited_clip.source_frames)
                source.append(source_clip.frames)
                edited.append(edited_clip.frames)
                starts.append(start)
        except VideoError as e:
            raise LayoutError(f"pair {pair}: {e}") from e
        return {
            "prompt": read_prompt(pair),
            "source": np.stack(source),
            "edited": np.stack(edited),
            "segment_starts": np.array(starts, np.int32),
        }

    def _segment_count(self, pair: Path, source_frames: int, edited_frames: int) -> int:
        config = self.builder_config
        if source_frames != edited_frames:
            raise LayoutError(f"pair {pair}: {SOURCE} has {source_frames} frames but {EDITED} has {edited_frames}")
        count = ((source_frames - 1) // config.stride + 1) // config.segment_frames
        if count < config.min_segments:
            raise LayoutError(
                f"pair {pair}: {source_frames} frames give {count} segment(s) of {config.segment_frames} frames"
                f" (stride {config.stride}); at least {config.min_segments} are needed"
            )
        return count if config.max_segments is None else min(count, config.max_segments)


def find_pairs(folder: Path) -> list[Path]:
    """The pair folders of a split folder, in natural order."""
    pairs = sorted((p for p in folder.iterdir() if p.is_dir()), key=natural_key)
    if not pairs:
        raise LayoutError(f"{folder}: no pair folders")
    return pairs


def pair_problems(pair: Path) -> list[str]:
    """What stops a pair from being read, found before anything is decoded."""
    problems = [f"pair {pair}: missing {name}" for name in (SOURCE, EDITED, PROMPT) if not (pair / name).is_file()]
    if (pair / PROMPT).is_file():
        try:
            read_prompt(pair)
        except LayoutError as e:
            problems.append(str(e))
    return problems


def read_prompt(pair: Path) -> str:
    try:
        prompt = (pair / PROMPT).read_text(encoding="utf-8").strip()
    except UnicodeDecodeError as e:
        raise LayoutError(
            f"pair {pair}: {PROMPT} is not UTF-8 text ({e.reason} at byte {e.start}): save it as UTF-8"
        ) from e
    if not prompt:
        raise LayoutError(f"pair {pair}: {PROMPT} is empty")
    return prompt
