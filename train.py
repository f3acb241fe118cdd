"""Train Memory-V2V: `python train.py --config configs/tiny_nvs.py --workdir outputs/tiny_nvs`.

The same command runs on one CPU, on one GPU, and on every host of a TPU pod (with `--distributed`,
which calls `jax.distributed.initialize()`; each process then reads its own shard of the data and the
mesh spans all devices). Training reads the experiment's latent dataset
(`python -m mv2v_jax.data.encode_latents --config ...` makes it) and resumes from the newest
checkpoint in `--workdir`. Outputs in the workdir: checkpoints/, metrics.jsonl, tensorboard/,
validation PNGs, and weights/ (what sample.py loads) at the end.
"""

from __future__ import annotations

import sys

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


def main(argv: list[str]) -> int:
    # Imported here, not at the top, so that `--help` answers at once.
    import jax

    from mv2v_jax.data.encode_latents import open_latents
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
    if FLAGS.compile_topology:
        from mv2v_jax.parallel.aot import compile_train_step

        return compile_train_step(config, FLAGS.compile_topology)
    if not FLAGS.workdir:
        print("error: --workdir is required", file=sys.stderr)
        return 1
    try:
        check_can_create(FLAGS.workdir)  # a read-only workdir is refused now, not after the data and the compile
        if FLAGS.export:
            print(f"wrote {export_checkpoint(config, FLAGS.workdir, ema=FLAGS.export_ema)}")
            return 0
        if not config.get("init_weights"):  # a model config typo is reported before any data is read
            MemoryConfig.from_config(config.model)
        dataclass_from_config(MemorySampling, config.memory_sampling, "memory_sampling")
        splits = open_latents(config).as_data_source()
        metrics = train(config, FLAGS.workdir, splits["train"], splits.get("validation"))
    except (ValueError, OSError) as e:  # config values, a missing dataset or checkpoint, an unwritable workdir, ...
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"done: {metrics}")
    return 0


if __name__ == "__main__":
    run_app(main)
