"""Training-step throughput: steps/s, tokens/s and achieved FLOP/s of `train_step` at a stated config.

    python bench/train_step.py                          # configs/tiny_nvs.py's model and batch
    python bench/train_step.py --config configs/X.py    # another experiment (e.g. the 1.3B on a GPU)

Batches are drawn the way training draws them (data.memory_sampling on synthetic scenes through the
config's codec); each step variant (memory tokenizers, merging) is timed after its compilation.
FLOPs are the analytic forward FLOPs of the DiT (memory.budget) times 3 for forward and backward.
Writes the "Training step" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import dataclasses

import mv2v_jax.cli_start  # noqa: F401  (first: Ctrl-C in the imports below is one line, exit 130)

import jax
import jax.numpy as jnp
import numpy as np
from common import summary, timed, write_section  # bench/ is on sys.path when run as a script
from flax import nnx

from mv2v_jax.config import ArgumentParser, int_at_least, load_config, run_app
from mv2v_jax.data.loader import to_train_batch
from mv2v_jax.data.memory_sampling import MemorySampling, nvs_example
from mv2v_jax.data.synthetic import SceneConfig, generate_scene
from mv2v_jax.memory.budget import turn_cost
from mv2v_jax.memory.model import MemoryConfig, MemoryDiT
from mv2v_jax.memory.streams import pack_streams
from mv2v_jax.memory.tokenizers import TokenizerConfig
from mv2v_jax.models.build import build_codec
from mv2v_jax.models.codec import TEMPORAL
from mv2v_jax.tasks import get_task
from mv2v_jax.train.optimizer import make_optimizer, trainable_filter
from mv2v_jax.train.step import StepVariant, TrainState, jit_train_step


def batch_from_scenes(config, batch_size: int):
    codec = build_codec(config.sample.codec)
    # Every memory slot filled (the paper's draw of max_memory memories only): the most expensive step.
    sampling = dataclasses.replace(
        MemorySampling(**config.memory_sampling),
        min_memory=config.memory_sampling.max_memory,
        none_prob=0.0,
        informative_prob=0.0,
        distractor_prob=0.0,
    )
    rng = np.random.default_rng(0)
    examples = []
    for i in range(batch_size):
        scene = generate_scene(i, SceneConfig.from_config(dict(config.data.source.scene)))
        record = {
            "latents": np.stack([np.asarray(codec.encode(v)) for v in scene["video"]]),
            "w2c": scene["w2c"][:, ::TEMPORAL],
            "K": scene["K"],
            "image_size": scene["video"].shape[2:4],
            "context": np.zeros((1, config.model.dit.text_dim), np.float32),
        }
        examples.append(nvs_example(record, rng, sampling))
    return to_train_batch({k: np.stack([e[k] for e in examples]) for k in examples[0]})


def main(argv: list[str]) -> None:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/tiny_nvs.py")
    parser.add_argument("--repeats", type=int_at_least(1), default=5)
    args = parser.parse_args(argv)
    config = load_config(args.config)
    model = MemoryDiT(MemoryConfig.from_config(config.model), rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model)
    optimizer = make_optimizer(config.optimizer)
    trainable = trainable_filter(list(config.trainable))
    trainable_params, _ = nnx.split_state(params, trainable, ...)
    state = TrainState(
        step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(trainable_params), ema=None
    )
    state = jax.tree.map(lambda x: x.copy(), state)
    batch = batch_from_scenes(config, config.batch_size)
    paper = model.config.tokenizers
    coarsest = max(paper.patches)
    variants = {
        "paper tokenizers, no merging": StepVariant(paper, None),
        "paper tokenizers, merging r=0.5": StepVariant(paper, 0.5),
        f"all memory {'x'.join(map(str, coarsest))}, no merging": StepVariant(
            TokenizerConfig(ranked=(), rest=coarsest), None
        ),
    }
    rows = []
    for name, variant in variants.items():
        step = jit_train_step(graphdef, trainable, optimizer, variant, dict(config.step), donate=False)
        times = timed(
            lambda s=step: jax.block_until_ready(s(state, batch, jax.random.key(0))[1]), repeats=args.repeats
        )[0]
        streams = get_task(config.step.task).streams(batch.target, batch.conditions, variant.tokenizers)
        layout = pack_streams(streams, model.tokenizers.mapping(model.dit.patch_embedding)).layout
        cost = turn_cost(layout, model.config.dit, batch.context.shape[1], model.config.merge, variant.keep_ratio)
        seconds = float(np.median(times))
        b = batch.target.shape[0]
        target_tokens = int(np.prod(layout[0].grid)) * b
        all_tokens = cost.tokens_per_block[0] * b
        rows.append(
            f"| {name} | {summary(times)} | {1 / seconds:.2f} | {target_tokens / seconds:,.0f} | "
            f"{all_tokens / seconds:,.0f} | {3 * cost.flops * b / seconds / 1e9:.1f} |"
        )
        print(rows[-1], flush=True)
    dit = model.config.dit
    write_section(
        "Training step",
        f"Config `{args.config}`: DiT dim {dit.dim}, {dit.num_layers} blocks, batch {config.batch_size}, all "
        f"{config.memory_sampling.slots} memory slots filled; one `train_step` (forward, backward, AdamW update), "
        "median after a warm-up call (compilation excluded). Achieved GFLOP/s counts 3x the analytic forward "
        "FLOPs.\n\n"
        "| step variant | time per step | steps/s | target tokens/s | all tokens/s | achieved GFLOP/s |\n"
        "|---|---|---|---|---|---|\n" + "\n".join(rows),
    )


if __name__ == "__main__":
    run_app(main, absl_flags=False)
