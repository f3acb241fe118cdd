"""Encode a training dataset once into latents and text embeddings, so training runs neither the VAE,
the text encoder nor DINOv2.

    python -m mv2v_jax.data.encode_latents --config configs/tiny_nvs.py

Reads the config's `data` section: the source dataset, and the codec, text encoder and (long video
editing) DINOv2 embedder of the `sample` section, and writes the latent TFDS dataset (array_record)
that train.py reads. Synthetic sources (`synthetic_multicam`, `synthetic_long_edit`) are generated here
if they are not built yet; `multicam_video` and `long_edit_pairs` are built from their manual folder
(`data.source.manual_dir`) if they are not built yet. Like every TFDS build it is written to a
temporary folder and renamed when complete, so a killed run leaves no partial dataset; running again
starts over.

Novel view synthesis: multi-camera scenes -> `latent_scenes` (V views, T = 1 + (F - 1) / 4 latent frames):

    scene       bytes
    latents     [V, T, h, w, C]  float16  the codec's latents of each view
    w2c         [V, T, 3, 4]     float32  the cameras of the latent frames (every 4th frame)
    K           [3, 3]           float32  intrinsics of the frames the cameras belong to
    image_size  [2]              int32    (H, W) of those frames
    context     [L, D]           float16  the scene prompt's text embedding (zeros without a text encoder)

Long video editing: long source/edited pairs cut into S segments -> `latent_pairs`:

    pair            bytes
    prompt          bytes
    source_latents  [S, T, h, w, C]  float16  the codec's latents of each source segment
    edited_latents  [S, T, h, w, C]  float16  ... and of each edited segment
    embeddings      [S, E]           float32  each source segment's DINOv2 embedding, mean-pooled over its
                                              frames as inference retrieves by it (retrieval.similarity)
    context         [L, D]           float16  the edit prompt's text embedding
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import mv2v_jax.cli_start  # noqa: F401  (first: Ctrl-C in the imports below is one line, exit 130)

import numpy as np
import tensorflow_datasets as tfds
from absl import flags, logging
from ml_collections import config_flags

from mv2v_jax.config import require, run_app
from mv2v_jax.models.build import build_codec, build_embedder, build_text
from mv2v_jax.models.codec import TEMPORAL
from mv2v_jax.models.text.conditioning import TextConditioning
from mv2v_jax.retrieval.similarity import segment_embedding

SCENE_SOURCES = ("synthetic_multicam", "multicam_video")
PAIR_SOURCES = ("synthetic_long_edit", "long_edit_pairs")
SOURCES = SCENE_SOURCES + PAIR_SOURCES


@dataclasses.dataclass(eq=False, kw_only=True)
class LatentScenesConfig(tfds.core.BuilderConfig):
    """What to encode: the source dataset, and the codec / text settings (a `sample`-style mapping)."""

    source: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    codec: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    text: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    text_dim: int = 16


@dataclasses.dataclass(eq=False, kw_only=True)
class LatentPairsConfig(LatentScenesConfig):
    """`LatentScenesConfig` plus the DINOv2 embedder that indexes source segments (`sample.embedder`)."""

    embedder: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def open_source(source: Mapping[str, Any]):
    """The source dataset's builder (synthetic ones are generated on first use, manual ones built from
    `manual_dir` on first use)."""
    from mv2v_jax.data.tfds.common import prepare

    name = source["builder"]
    if name == "synthetic_multicam":
        from mv2v_jax.data.synthetic import PRESETS, SceneConfig
        from mv2v_jax.data.tfds.synthetic_multicam import SyntheticMulticam, SyntheticMulticamConfig

        scene = SceneConfig.from_config(dict(source["scene"])) if "scene" in source else PRESETS[source["preset"]]
        config = SyntheticMulticamConfig(
            name=source["name"],
            scene=scene,
            num_train=source["num_train"],
            num_validation=source["num_validation"],
            base_seed=source["base_seed"],
        )
        return prepare(SyntheticMulticam, config, source["data_dir"])
    if name == "synthetic_long_edit":
        from mv2v_jax.data.synthetic import LONG_PRESETS, LongVideoConfig
        from mv2v_jax.data.tfds.synthetic_long_edit import SyntheticLongEdit, SyntheticLongEditConfig

        config = SyntheticLongEditConfig(
            name=source["name"],
            video=LongVideoConfig.from_config(source["video"]) if "video" in source else LONG_PRESETS[source["preset"]],
            num_train=source["num_train"],
            num_validation=source["num_validation"],
            base_seed=source["base_seed"],
        )
        return prepare(SyntheticLongEdit, config, source["data_dir"])
    if name in ("multicam_video", "long_edit_pairs"):
        return _manual_source(source)
    raise ValueError(f"unknown source dataset {name!r}; choose one of {SOURCES}")


def _manual_source(source: Mapping[str, Any]):
    """A dataset built from a manual folder: reused if built, else built from `source.manual_dir`."""
    from mv2v_jax.data.tfds.common import prepare

    if source["builder"] == "multicam_video":
        from mv2v_jax.data.tfds.multicam_video import MulticamVideo as builder_class
    else:
        from mv2v_jax.data.tfds.long_edit_pairs import LongEditPairs as builder_class

    builder = builder_class(config=source["name"], data_dir=source["data_dir"])
    if builder.is_prepared():
        return builder
    manual = source.get("manual_dir")
    if not manual or not Path(manual).is_dir():
        raise FileNotFoundError(
            f"{source['builder']}/{source['name']} is not built in {source['data_dir']} and its manual folder "
            f"{manual!r} does not exist: download the dataset there (see mv2v_jax.data.tfds.{source['builder']}) "
            "or set data.source.manual_dir"
        )
    return prepare(builder_class, source["name"], source["data_dir"], manual)


class LatentScenes(tfds.core.GeneratorBasedBuilder):
    """A multi-camera dataset through a latent codec (see the module docstring)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "First version."}
    BUILDER_CONFIGS: ClassVar[list[tfds.core.BuilderConfig]] = []

    def _source(self):
        return open_source(self.builder_config.source)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=tfds.features.FeaturesDict(
                {
                    "scene": tfds.features.Text(),
                    # Shapes follow the source and the codec; "bytes" stores them with each record.
                    "latents": tfds.features.Tensor(shape=(None,) * 5, dtype=np.float16, encoding="bytes"),
                    "w2c": tfds.features.Tensor(shape=(None, None, 3, 4), dtype=np.float32, encoding="bytes"),
                    "K": tfds.features.Tensor(shape=(3, 3), dtype=np.float32),
                    "image_size": tfds.features.Tensor(shape=(2,), dtype=np.int32),
                    "context": tfds.features.Tensor(shape=(None, None), dtype=np.float16, encoding="bytes"),
                }
            ),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        sources = self._source().as_data_source()
        return {split: self._generate_examples(sources[split]) for split in sources}

    def _generate_examples(self, records):
        config = self.builder_config
        codec = build_codec(config.codec)
        text = build_text(config.text, config.text_dim)
        for record in records:
            video, w2c = np.asarray(record["video"]), np.asarray(record["w2c"])
            prompts = record["prompts"]
            prompt = prompts[0].decode() if len(prompts) else ""
            scene = _text(record["scene"])
            warn_if_cut(text, prompt, f"scene {scene}")
            yield (
                scene,
                {
                    "scene": scene,
                    "latents": np.stack([np.asarray(codec.encode(v)) for v in video]).astype(np.float16),
                    "w2c": w2c[:, ::TEMPORAL],
                    "K": np.asarray(record["K"], np.float32),
                    "image_size": np.array(video.shape[2:4], np.int32),
                    "context": np.asarray(text(prompt))[0].astype(np.float16),
                },
            )


class LatentPairs(tfds.core.GeneratorBasedBuilder):
    """A long-edit pair dataset through a latent codec, with DINOv2 segment embeddings (module docstring)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "First version."}
    BUILDER_CONFIGS: ClassVar[list[tfds.core.BuilderConfig]] = []

    def _info(self) -> tfds.core.DatasetInfo:
        latents = tfds.features.Tensor(shape=(None,) * 5, dtype=np.float16, encoding="bytes")
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=tfds.features.FeaturesDict(
                {
                    "pair": tfds.features.Text(),
                    "prompt": tfds.features.Text(),
                    "source_latents": latents,
                    "edited_latents": latents,
                    "embeddings": tfds.features.Tensor(shape=(None, None), dtype=np.float32, encoding="bytes"),
                    "context": tfds.features.Tensor(shape=(None, None), dtype=np.float16, encoding="bytes"),
                }
            ),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        sources = open_source(self.builder_config.source).as_data_source()
        return {split: self._generate_examples(sources[split]) for split in sources}

    def _generate_examples(self, records):
        config = self.builder_config
        codec = build_codec(config.codec)
        text = build_text(config.text, config.text_dim)
        embed_frames = build_embedder(config.embedder)
        for record in records:
            source, edited = np.asarray(record["source"]), np.asarray(record["edited"])
            pair, prompt = _text(record["pair"]), _text(record["prompt"])
            warn_if_cut(text, prompt, f"pair {pair}")

            def encode(segments: np.ndarray) -> np.ndarray:
                return np.stack([np.asarray(codec.encode(s)) for s in segments]).astype(np.float16)

            yield (
                pair,
                {
                    "pair": pair,
                    "prompt": prompt,
                    "source_latents": encode(source),
                    "edited_latents": encode(edited),
                    "embeddings": np.stack([segment_embedding(s, embed_frames) for s in source]),
                    "context": np.asarray(text(prompt))[0].astype(np.float16),
                },
            )


def warn_if_cut(text: TextConditioning, prompt: str, where: str) -> None:
    """A `warning:` line naming the record whose prompt the text encoder cuts (it reads at most 512 tokens)."""
    if note := text.cut_note(prompt):
        print(f"warning: {where}: prompt of {note}", file=sys.stderr)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _plain(value: Any) -> Any:
    return value.to_dict() if hasattr(value, "to_dict") else dict(value)


def open_latents(config: Mapping[str, Any], build: bool = False) -> tfds.core.GeneratorBasedBuilder:
    """The experiment's latent dataset (`latent_scenes` for multi-camera sources, `latent_pairs` for
    long-edit pairs); `build` makes it if missing, else a missing one is an error that says how to make it."""
    from mv2v_jax.data.tfds import common

    data, sample = config["data"], config["sample"]
    kind = data["source"]["builder"]
    if kind not in SOURCES:
        raise ValueError(f"unknown source dataset {kind!r}; choose one of {SOURCES}")
    fields = dict(
        name=data["latents_name"],
        source=_plain(data["source"]),
        codec=_plain(sample["codec"]),
        text=_plain(sample["text"]),
        text_dim=config["model"]["dit"]["text_dim"],
    )
    if kind in PAIR_SOURCES:
        if "embedder" not in sample:
            raise ValueError("long-edit latents need sample.embedder (the DINOv2 that indexes source segments)")
        builder_class, builder_config = LatentPairs, LatentPairsConfig(**fields, embedder=_plain(sample["embedder"]))
    else:
        builder_class, builder_config = LatentScenes, LatentScenesConfig(**fields)
    builder = builder_class(config=builder_config, data_dir=data["latents_dir"], file_format=common.FILE_FORMAT)
    if not builder.is_prepared():
        if not build:
            raise FileNotFoundError(
                f"no latent dataset {builder.builder_config.name!r} in {data['latents_dir']}: run "
                "`python -m mv2v_jax.data.encode_latents --config <this config>` first"
            )
        common.build(builder)
    return builder


class RecordError(ValueError):
    """A record of the latent dataset that cannot be read; the message names its file."""


class Records(Sequence):
    """One split of the latent dataset (a TFDS array_record data source) whose read errors name the file and
    the record (array_record's own say neither)."""

    def __init__(self, source):
        self.source = source
        instructions = source.dataset_info.splits[source.split].file_instructions
        self.files = [(str(f.filename), f.take) for f in instructions]

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> Mapping[str, Any]:
        try:
            return self.source[index]
        except Exception as e:  # array_record raises RuntimeError; a damaged feature, ValueError
            raise RecordError(f"{self.where(index)}: damaged, cannot be read ({e})") from None

    def where(self, index: int) -> str:
        """`file (record k of n)` for the dataset's record `index`."""
        for name, count in self.files:
            if index < count:
                return f"{name} (record {index} of {count})"
            index -= count
        return f"record {index} past the end of {self.source.split}"

    def check(self) -> None:
        """Reads the first record of every file: a truncated file or a damaged index fails now, before a
        run writes anything (a damaged record further in is named when it is read)."""
        start = 0
        for _, count in self.files:
            if count:
                self[start]
            start += count


def latent_records(config: Mapping[str, Any]) -> dict[str, Records]:
    """The splits of the experiment's latent dataset, each file's first record read (`Records.check`)."""
    splits = {name: Records(source) for name, source in open_latents(config).as_data_source().items()}
    for records in splits.values():
        records.check()
    return splits


def check_data_config(data: Mapping[str, Any]) -> None:
    """Refuses, before anything is generated or written, dataset sizes that make no sense
    (`data.source.num_train=0`) and output folders that cannot be created."""
    from mv2v_jax.io.atomic import check_can_create

    source = data["source"]
    for key, least in (("num_train", 1), ("num_validation", 0), ("base_seed", 0)):
        if key in source:
            value = source[key]
            ok = isinstance(value, int) and not isinstance(value, bool) and value >= least
            require(ok, f"data.source.{key}", value, f"must be an integer >= {least}")
    check_can_create(data["latents_dir"])
    if "data_dir" in source:
        check_can_create(source["data_dir"])


def main(argv: list[str]) -> int:
    del argv
    logging.set_verbosity(logging.WARNING)
    config = flags.FLAGS.config
    try:
        check_data_config(config["data"])
        builder = open_latents(config, build=True)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"latent dataset ready: {Path(builder.data_dir)} ({', '.join(builder.info.splits)})")
    return 0


if __name__ == "__main__":
    config_flags.DEFINE_config_file("config", None, "experiment config with `data` and `sample` sections")
    flags.mark_flag_as_required("config")
    run_app(main)
