"""Train Memory-V2V: `python train.py --config configs/tiny_nvs.py --workdir outputs/tiny_nvs`.

The same command runs on one CPU, on one GPU, and on every host of a TPU pod (with `--distributed`,
which calls `jax.distributed.initialize()`; each process then reads its own shard of the data and the
mesh spans all devices). Training reads the experiment's latent dataset
(`python -m mv2v_jax.data.encode_latents --config ...` makes it) and resumes from the newest
checkpoint in `--workdir`. Outputs in the workdir: checkpoints/, metrics.jsonl, tensorboard/,
validation PNGs, and weights/ (what sample.py loads) at the end.
"""

from __future__ import annotations

import math
import sys

import mv2v_jax.cli_start  # noqa: F401  (first: Ctrl-C in the imports below is one line, exit 130)

from absl import flags, logging
from ml_collections import config_flags

from mv2v_jax.cache import enable_compilation_cache
from mv2v_jax.config import dataclass_from_config, run_app

config_flags.DEFINE_config_file("config", None, "experiment config file", lock_config=True)
flags.mark_flag_as_required("config")
flags.DEFINE_string("workdir", None, "where checkpoints, logs and the final weights go (gs:// works)")
flags.DEFINE_bool("distributed", False, "multi-host: call jax.distributed.initialize() first")
flags.DEFINE_bool("export", False, "only write <workdir>/weights from the latest checkpoint (sample a run mid-way)")
flags.DEFINE_bool("export_ema", True, "with --export: the EMA parameters (when the run keeps one)")
flags.DEFINE_string(
    "compile_topology",
    None,
    "only compile the train step for a TPU slice (v5p-64, v5e-16, v5p:2x2x2) here and "
    "print its memory per chip and collectives; exit 1 if it does not fit",
)
FLAGS = flags.FLAGS

# Training settings checked before any data is read or anything compiles: what each must be, and the test.
MAX_SEED = 2**32 - 1  # JAX's PRNG keys take 32 bits of a seed
SETTINGS = {
    "seed": (f"an integer in 0..{MAX_SEED}", lambda v: _int(v) and 0 <= v <= MAX_SEED),
    "steps": ("an integer >= 1", lambda v: _int(v) and v >= 1),
    "batch_size": ("an integer >= 1", lambda v: _int(v) and v >= 1),
    "log_every": ("an integer >= 1", lambda v: _int(v) and v >= 1),
    "eval_every": ("an integer >= 1", lambda v: _int(v) and v >= 1),
    "checkpoint_every": ("an integer >= 1", lambda v: _int(v) and v >= 1),
    "keep_checkpoints": ("an integer >= 1", lambda v: _int(v) and v >= 1),
    "eval_sampling_steps": ("sampler steps, 1 to 1000", lambda v: _int(v) and 1 <= v <= 1000),
    "mesh_devices": ("a device count >= 0 (0: every device)", lambda v: _int(v) and v >= 0),
    "optimizer.lr": ("a learning rate > 0", lambda v: _real(v) and 0 < v < math.inf),
    "optimizer.steps": ("an integer >= 1", lambda v: _int(v) and v >= 1),
    "optimizer.warmup_steps": ("an integer >= 0", lambda v: _int(v) and v >= 0),
    "optimizer.final_ratio": ("a share in [0, 1]", lambda v: _real(v) and 0 <= v <= 1),
    "optimizer.b1": ("Adam's decay in [0, 1)", lambda v: _real(v) and 0 <= v < 1),
    "optimizer.b2": ("Adam's decay in [0, 1)", lambda v: _real(v) and 0 <= v < 1),
    "optimizer.weight_decay": ("a number >= 0", lambda v: _real(v) and 0 <= v < math.inf),
    "optimizer.clip_norm": ("a gradient norm > 0", lambda v: _real(v) and 0 < v < math.inf),
    "optimizer.accumulate": ("an integer >= 1 (steps a gradient is accumulated over)", lambda v: _int(v) and v >= 1),
    "step.shift": ("a timestep shift > 0", lambda v: _real(v) and 0 < v < math.inf),
    "step.memory_noise": ("a noise level >= 0", lambda v: _real(v) and 0 <= v < math.inf),
    "step.rope_dropout": ("a probability in [0, 1]", lambda v: _real(v) and 0 <= v <= 1),
    "step.ema_decay": ("a decay in [0, 1) (0: no EMA)", lambda v: _real(v) and 0 <= v < 1),
}


def _int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _real(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and not math.isnan(value)


def check_settings(config) -> None:
    """Refuses a training setting that makes no sense (`steps=0`, `batch_size=0`, a NaN learning rate,
    ...), named as a user writes it, a mesh the devices cannot make, and a batch the mesh cannot split."""
    import jax

    from mv2v_jax.config import ConfigValueError, require
    from mv2v_jax.parallel.mesh import check_mesh_shape, process_batch_rows
    from mv2v_jax.train.loop import training_mesh

    for key, (what, ok) in SETTINGS.items():
        section, _, name = key.rpartition(".")
        holder = config.get(section, {}) if section else config
        if name in holder:
            require(ok(holder[name]), key, holder[name], f"must be {what}")
    available, wanted = len(jax.devices()), config.get("mesh_devices", 0)
    require(wanted <= available, "mesh_devices", wanted, f"this machine has {available} device(s)")
    for key, rest in (("mesh", True), ("mesh_dcn", False)):  # -1 (the rest of the devices) is for `mesh`
        try:
            check_mesh_shape(dict(config[key]), rest)
        except ValueError as e:
            raise ValueError(f"{key}: {e}") from None
    try:
        mesh = training_mesh(config)
    except ValueError as e:
        raise ValueError(f"mesh={dict(config.mesh)}, mesh_dcn={dict(config.mesh_dcn)}: {e}") from None
    batch = config.get("batch_size", 1)
    try:
        process_batch_rows(mesh, batch, config["mesh_rules"])
    except ValueError as e:
        raise ConfigValueError("batch_size", batch, str(e)) from None


def check_flags() -> None:
    """Refuses a flag this command would ignore, naming it and the flag it belongs with."""
    from mv2v_jax.config import given_flags, refuse_flags

    if FLAGS.compile_topology:
        refuse_flags(
            given_flags("workdir", "export", "export_ema"),
            "not used with --compile_topology, which only compiles the train step (nothing is trained or written)",
        )
    elif not FLAGS.export:
        refuse_flags(
            given_flags("export_ema"), "only with --export (the run's own export uses its EMA when it has one)"
        )


def main(argv: list[str]) -> int:
    # Imported here, not at the top, so that `--help` answers at once.
    import jax

    from mv2v_jax.data.encode_latents import latent_records
    from mv2v_jax.data.memory_sampling import MemorySampling
    from mv2v_jax.io.atomic import check_can_create
    from mv2v_jax.memory.model import MemoryConfig
    from mv2v_jax.train.loop import export_checkpoint, train

    del argv
    logging.set_verbosity(logging.WARNING)
    enable_compilation_cache()  # the next process with the same shapes loads the program (mv2v_jax.cache)
    if FLAGS.distributed:
        jax.distributed.initialize()
    config = FLAGS.config
    try:
        check_flags()
        if FLAGS.compile_topology:
            from mv2v_jax.aot import compile_train_step

            return compile_train_step(config, FLAGS.compile_topology)
        if not FLAGS.workdir:
            raise ValueError("--workdir is required")
        check_can_create(FLAGS.workdir)  # a read-only workdir is refused now, not after the data and the compile
        if FLAGS.export:
            print(f"wrote {export_checkpoint(config, FLAGS.workdir, ema=FLAGS.export_ema)}")
            return 0
        check_settings(config)
        if not config.get("init_weights"):  # a model config typo is reported before any data is read
            MemoryConfig.from_config(config.model)
        dataclass_from_config(MemorySampling, config.memory_sampling, "memory_sampling")
        splits = latent_records(config)  # a damaged file is named now, before anything is written
        metrics = train(config, FLAGS.workdir, splits["train"], splits.get("validation"))
    except (ValueError, OSError) as e:  # config values, a missing dataset or checkpoint, an unwritable workdir, ...
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"done: {metrics}")
    return 0


if __name__ == "__main__":
    run_app(main)
