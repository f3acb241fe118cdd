"""Encode a multi-camera dataset once into latents and text embeddings, so training runs neither the
VAE nor the text encoder.

    python -m mv2v_jax.data.encode_latents --config configs/tiny_nvs.py

Reads the config's `data` section: the source dataset (`synthetic_multicam` is generated here if it
is not built yet; `multicam_video` must have been built from its manual folder), the codec and text
encoder of the `sample` section, and writes the `latent_scenes` TFDS dataset (array_record) that
train.py reads. Like every TFDS build it is written to a temporary folder and renamed when
complete, so a killed run leaves no partial dataset; running again starts over.

Record (V views, T = 1 + (F - 1) / 4 latent frames):

    scene       bytes
    latents     [V, T, h, w, C]  float16  the codec's latents of each view
    w2c         [V, T, 3, 4]     float32  the cameras of the latent frames (every 4th frame)
    K           [3, 3]           float32  intrinsics of the frames the cameras belong to
    image_size  [2]              int32    (H, W) of those frames
    context     [L, D]           float16  the scene prompt's text embedding (zeros without a text encoder)
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds
from absl import flags, logging
from ml_collections import config_flags

from mv2v_jax.config import run_app
from mv2v_jax.models.codec import TEMPORAL
from mv2v_jax.pipelines.build import build_codec, build_text

SOURCES = ("synthetic_multicam", "multicam_video")


@dataclasses.dataclass(eq=False, kw_only=True)
class LatentScenesConfig(tfds.core.BuilderConfig):
    """What to encode: the source dataset, and the codec / text settings (a `sample`-style mapping)."""

    source: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    codec: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    text: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    text_dim: int = 16


def open_source(source: Mapping[str, Any]):
    """The source dataset's builder (synthetic scenes are generated on first use)."""
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
    if name == "multicam_video":
        from mv2v_jax.data.tfds.multicam_video import MulticamVideo

        builder = MulticamVideo(config=source["name"], data_dir=source["data_dir"])
        if not builder.is_prepared():
            raise FileNotFoundError(
                f"multicam_video/{source['name']} is not built in {source['data_dir']}: build it "
                "from its manual folder first (mv2v_jax.data.tfds.multicam_video)"
            )
        return builder
    raise ValueError(f"unknown source dataset {name!r}; choose one of {SOURCES}")


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
            scene = record["scene"].decode() if isinstance(record["scene"], bytes) else str(record["scene"])
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


def latent_config(config: Mapping[str, Any]) -> LatentScenesConfig:
    """The `latent_scenes` builder config of an experiment config (`data`, `sample`, `model` sections)."""
    data, sample = config["data"], config["sample"]
    return LatentScenesConfig(
        name=data["latents_name"],
        source=data["source"].to_dict(),
        codec=sample["codec"].to_dict(),
        text=sample["text"].to_dict(),
        text_dim=config["model"]["dit"]["text_dim"],
    )


def open_latents(config: Mapping[str, Any], build: bool = False) -> tfds.core.GeneratorBasedBuilder:
    """The experiment's latent dataset; `build` makes it if missing, else a missing one is an error
    that says how to make it."""
    from mv2v_jax.data.tfds import common

    builder = LatentScenes(
        config=latent_config(config), data_dir=config["data"]["latents_dir"], file_format=common.FILE_FORMAT
    )
    if not builder.is_prepared():
        if not build:
            raise FileNotFoundError(
                f"no latent dataset {builder.builder_config.name!r} in {config['data']['latents_dir']}: run "
                "`python -m mv2v_jax.data.encode_latents --config <this config>` first"
            )
        common.build(builder)
    return builder


def main(argv: list[str]) -> int:
    del argv
    logging.set_verbosity(logging.WARNING)
    config = flags.FLAGS.config
    try:
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
