"""Random weights of an experiment config's architecture, written where the config looks for its weights,
so the real backbones' configs run end to end with nothing downloaded.

    python -m convert_weights.random --config configs/recammaster_nvs.py:tiny
    python -m convert_weights.random --config configs/lucy_edit_long.py:tiny --out weights/random-lucy
    python sample.py --config configs/lucy_edit_long.py:tiny --config.weights_dir=weights/random-lucy ...

For the config given (with the same `--config.x=y` overrides as sample.py and train.py; `--out ROOT`
sets `weights_dir`, the folder the config's weights paths hang off) it writes:
- the MemoryDiT of `model` at `init_weights` and `sample.weights`;
- the Wan VAE of preset `sample.codec.preset` (configs/wan_vae.py) at `sample.codec.weights`;
- the umT5 encoder of preset `sample.text.preset` (configs/umt5.py) at `sample.text.weights`, and a
  tokenizer at `sample.text.tokenizer` (`tokenizer.json`: T5's special tokens, ASCII characters and
  word-initial letters, a unigram model the library's tokenizer reads like umT5's own);
- DINOv2 of preset `sample.embedder.preset` (configs/dinov2.py) at `sample.embedder.weights`.

Every parameter is drawn on its own from a generator seeded by (`--seed`, its path, its layer), so
the weights do not depend on the order they are written in, and streamed tensor by tensor (a stacked
parameter layer by layer) through the weights writer: a full-size model needs memory for one tensor.
The draw keeps activations near unit scale at any width: weights `N(0, 1 / fan_in)` (fan-in: every axis
but the last), vector scales `1 + 0.1 N(0, 1)`, biases `0.02 N(0, 1)`. No parameter is zero or an
identity, unlike the models' own initialisations (Wan's zero output head, ReCamMaster's zero camera
encoder), so outputs depend on every input and training moves every trainable parameter.

Nothing is written unless every output is free (or `--overwrite`); each folder appears whole or not at all.
"""

from __future__ import annotations

import shutil
import sys
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import mv2v_jax.cli_start  # noqa: F401  (first: Ctrl-C in the imports below is one line, exit 130)

import numpy as np
from absl import flags, logging
from flax import nnx
from ml_collections import config_flags

from mv2v_jax.config import REPO_CONFIGS, load_config, run_app
from mv2v_jax.models.weights import WeightsWriter

TOKENIZER_FILE = "tokenizer.json"
STACKED_AXIS = "layers"  # the logical name of the leading axis of parameters stacked over blocks


def parameter_specs(build: Callable[[], nnx.Module]) -> dict[tuple[str, ...], tuple[tuple[int, ...], np.dtype, bool]]:
    """Parameter path -> (shape, dtype, stacked) of the module `build()` creates (nothing allocated);
    `stacked`: the leading axis runs over blocks."""
    specs = {}
    for path, variable in nnx.to_flat_state(nnx.state(nnx.eval_shape(build), nnx.Param)):
        axes = variable.get_metadata().get("out_sharding") or ()
        stacked = bool(axes) and axes[0] == STACKED_AXIS
        specs[tuple(str(p) for p in path)] = (tuple(variable.shape), np.dtype(variable.dtype), stacked)
    return specs


def random_tensor(path: tuple[str, ...], shape: tuple[int, ...], seed: int, layer: int = 0) -> np.ndarray:
    """One parameter (or one layer of a stacked one), float64, drawn as the module docstring says."""
    rng = np.random.default_rng([seed, zlib.crc32("/".join(path).encode()), layer])
    noise = rng.standard_normal(shape)
    if "bias" in path[-1]:
        return 0.02 * noise
    if len(shape) == 1:
        return 1.0 + 0.1 * noise
    return noise / np.sqrt(np.prod(shape[:-1]))


def write_random(build: Callable[[], nnx.Module], out: Path, record: Mapping[str, Any], seed: int, overwrite: bool):
    """Writes random parameters of `build()`'s module into the weights directory `out`."""
    with WeightsWriter(out, overwrite=overwrite) as writer:
        for path, (shape, dtype, stacked) in sorted(parameter_specs(build).items()):
            if stacked:
                layers = writer.create(path, shape, dtype, stacked=True)
                for layer in range(shape[0]):
                    layers[layer] = random_tensor(path, shape[1:], seed, layer).astype(dtype)
            else:
                writer.write(path, random_tensor(path, shape, seed).astype(dtype))
        return writer.commit(record)


def write_tokenizer(folder: Path) -> Path:
    """A small umT5-style `tokenizer.json` (ids: `<pad>` 0, `</s>` 1, `<unk>` 2, as T5's) in `folder`,
    replacing one that is there (written beside it and renamed)."""
    import string

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [(c, -3.0) for c in string.ascii_letters + string.digits + string.punctuation]
    pieces += [("▁" + c, -2.5) for c in string.ascii_letters + string.digits]
    tokenizer = Tokenizer(models.Unigram(pieces, unk_id=2))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{TOKENIZER_FILE}.tmp"
    tokenizer.save(str(tmp))
    tmp.replace(folder / TOKENIZER_FILE)
    return folder / TOKENIZER_FILE


def _preset(file: str, name: str):
    return load_config(f"{REPO_CONFIGS / file}:{name}")


def plan(config: Mapping[str, Any], seed: int, spec: str) -> dict[Path, Callable[[bool], Path]]:
    """Output path -> its writer `(overwrite) -> path`, for every weights folder the config names."""
    from mv2v_jax.memory.model import MemoryConfig, MemoryDiT
    from mv2v_jax.models.text.umt5 import ARCH_FIELDS as UMT5_FIELDS
    from mv2v_jax.models.text.umt5 import UMT5Config, UMT5Encoder
    from mv2v_jax.models.vision.dinov2 import ARCH_FIELDS as DINOV2_FIELDS
    from mv2v_jax.models.vision.dinov2 import Dinov2, Dinov2Config
    from mv2v_jax.models.wan.vae import ARCH_FIELDS as VAE_FIELDS
    from mv2v_jax.models.wan.vae import WanVAE, WanVAEConfig

    source = {"source": {"format": "random", "seed": seed, "config": spec}}
    writers: dict[Path, Callable[[bool], Path]] = {}

    def add(path: str, build: Callable[[], nnx.Module], record: dict) -> None:
        writers[Path(path)] = lambda overwrite: write_random(build, Path(path), record | source, seed, overwrite)

    def add_preset(path: str, cls, config_cls, fields, preset) -> None:
        model_config = config_cls.from_config(preset)
        record = {"model": cls.__name__, "architecture": {k: getattr(model_config, k) for k in fields}}
        add(path, lambda: cls(model_config, rngs=nnx.Rngs(0)), record)

    memory = MemoryConfig.from_config(config["model"])
    sample = config.get("sample", {})
    for path in (config.get("init_weights"), sample.get("weights")):  # where training and sampling load it
        if path:
            add(path, lambda: MemoryDiT(memory, rngs=nnx.Rngs(0)), memory.record())
    codec = sample.get("codec", {})
    if codec.get("kind") == "wan_vae":
        add_preset(codec["weights"], WanVAE, WanVAEConfig, VAE_FIELDS, _preset("wan_vae.py", codec["preset"]))
    text = sample.get("text", {})
    if text.get("kind") == "umt5":
        umt5 = _preset("umt5.py", text["preset"])
        if umt5.d_model != memory.dit.text_dim:
            raise ValueError(
                f"sample.text.preset {text['preset']!r} gives {umt5.d_model}-wide embeddings but the DiT's "
                f"text_dim is {memory.dit.text_dim}"
            )
        add_preset(text["weights"], UMT5Encoder, UMT5Config, UMT5_FIELDS, umt5)
        tokenizer = Path(text["tokenizer"])
        writers[tokenizer / TOKENIZER_FILE] = lambda overwrite: write_tokenizer(tokenizer)
    embedder = sample.get("embedder", {})
    if embedder.get("kind") == "dinov2":
        preset = _preset("dinov2.py", embedder["preset"])
        add_preset(embedder["weights"], Dinov2, Dinov2Config, DINOV2_FIELDS, preset)
    return writers


def write_all(config: Mapping[str, Any], seed: int = 0, overwrite: bool = False, spec: str = "") -> list[Path]:
    """Random weights for every weights folder of `config`; refuses (before writing anything) to
    replace an existing one unless `overwrite`."""
    from mv2v_jax.io.atomic import check_can_create, make_parents, remove_empty

    writers = plan(config, seed, spec)
    if not overwrite and (taken := [str(p) for p in writers if p.exists()]):
        raise FileExistsError(f"{', '.join(taken)} exist; pass --overwrite to replace them")
    for path in writers:  # every output checked before the first is written
        check_can_create(path)
    new = [path for path in writers if not path.exists()]
    made = [folder for path in writers for folder in make_parents(path.parent)]
    written = []
    try:
        for path, write in writers.items():
            write(overwrite)
            written.append(path)
    except BaseException:  # the folders this run added go again: all of them appear, or none
        for path in set(written) & set(new):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        remove_empty(made)
        raise
    return written


FLAGS = flags.FLAGS


def main(argv: list[str]) -> int:
    del argv
    logging.set_verbosity(logging.WARNING)
    config = FLAGS.config
    spec = config_flags.get_config_filename(FLAGS["config"])
    if FLAGS.out:
        if "weights_dir" not in config:
            print(f"error: --out needs a config with a weights_dir; {spec} has none", file=sys.stderr)
            return 1
        config.weights_dir = FLAGS.out  # the config's weights paths are references to it
    try:
        written = write_all(config, FLAGS.seed, FLAGS.overwrite, spec)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    config_flags.DEFINE_config_file("config", None, "experiment config whose weights to make up", lock_config=True)
    flags.DEFINE_string("out", None, "weights root: sets the config's weights_dir")
    flags.DEFINE_integer("seed", 0, "seed of every parameter's draw", lower_bound=0)
    flags.DEFINE_bool("overwrite", False, "replace weights folders that exist")
    run_app(main)
