"""Does the model use its memory? Held-out denoising error with the right memory, none, or another's.

    python -m mv2v_jax.eval.denoising --config configs/tiny_long_edit.py   # after encode_latents

Sampled outputs mix two things: whether the model reads its memory, and whether what it wrote in
earlier turns was worth keeping. This measures the first alone, as training does: on the held-out
(validation) split of the config's latent dataset, each example is drawn as in training (the task's
example sampler: the target, its inputs, 1-6 memories of the same scene or long video, as the paper
samples them), noised at fixed noise levels with fixed noise, and the model's velocity error is
averaged in three settings:

- memory: the example's own memories (ground-truth earlier views or edited segments);
- no memory: every slot empty (the model as a plain ReCamMaster / LucyEdit);
- another example's memory: the memories of the next example in the batch (a different scene or
  video), which the model should not be able to use.

Memory "wins" by how much lower its error is than without memory; another example's memory shows that
the gain comes from what the memory holds, not from extra tokens.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mv2v_jax.config import dataclass_from_config, load_config
from mv2v_jax.data.encode_latents import open_latents
from mv2v_jax.data.loader import decode_text, to_train_batch
from mv2v_jax.data.memory_sampling import MemorySampling
from mv2v_jax.diffusion import flow
from mv2v_jax.eval import report
from mv2v_jax.eval.benchmarks import write_section
from mv2v_jax.memory.model import MemoryDiT, load_memory_dit
from mv2v_jax.tasks import get_task

SETTINGS = ("memory", "no memory", "another example's memory")
SIGMAS = (0.25, 0.5, 0.75)  # ours: low, middle and high noise; each example is scored at all three


def memory_settings(batch: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """The numpy batch as each setting feeds it: unchanged, its memory slots emptied, or its memory
    rolled by one example (the next example's memory, cameras included)."""
    empty = dict(batch, memory_valid=np.zeros_like(batch["memory_valid"]))
    other = dict(batch)
    for key in [k for k in batch if k.startswith("memory_")]:
        other[key] = np.roll(batch[key], 1, axis=0)
    return {"memory": batch, "no memory": empty, "another example's memory": other}


def denoising_errors(
    model: MemoryDiT, config, examples: int, batch_size: int = 4, sigmas: Sequence[float] = SIGMAS, seed: int = 0
) -> dict[str, float]:
    """Mean squared velocity error per setting over `examples` validation examples and `sigmas`."""
    task = get_task(config.step.task)
    sampling = dataclass_from_config(MemorySampling, config.memory_sampling, "memory_sampling")
    records = open_latents(config).as_data_source()["validation"]
    if examples < 2 or batch_size < 2:
        raise ValueError("another example's memory needs at least 2 examples in a batch")
    tokenizers = model.config.tokenizers

    @nnx.jit
    def error(model, target, conditions, context, noise, sigma):
        noisy = flow.add_noise(target, noise, sigma)
        velocity = model(task.streams(noisy, conditions, tokenizers), sigma * 1000.0, context)
        return jnp.mean(jnp.square(velocity - flow.velocity_target(target, noise)))

    totals = {s: 0.0 for s in SETTINGS}
    count = 0
    for start in range(0, examples - batch_size + 1, batch_size):
        drawn = []
        for i in range(start, start + batch_size):
            record = decode_text(records[i % len(records)])
            drawn.append(task.example(record, np.random.default_rng((seed, i)), sampling))
        batch = {k: np.stack([e[k] for e in drawn]) for k in drawn[0]}
        noise = jax.random.normal(jax.random.key(seed + start), batch["target"].shape)
        for setting, fed in memory_settings(batch).items():
            fed = to_train_batch(fed)
            for sigma in sigmas:
                sigmas_b = jnp.full((batch_size,), sigma)
                totals[setting] += float(error(model, fed.target, fed.conditions, fed.context, noise, sigmas_b))
        count += len(sigmas)
    if not count:
        raise ValueError(f"{examples} examples make no batch of {batch_size}")
    return {s: totals[s] / count for s in SETTINGS}


COLUMNS = (("error", "denoising error (velocity MSE, lower is better)", ".4f"),)


def table(errors: dict[str, float], examples: int) -> str:
    summary = {s: {"error": errors[s]} for s in SETTINGS}
    return report.table(summary, COLUMNS, {}) + (
        f"\n\nMemory vs no memory: {report.lower_or_higher(report.reduction(summary, 'error', 'memory', 'no memory'))} "
        f"error; another example's memory: "
        f"{report.lower_or_higher(report.reduction(summary, 'error', SETTINGS[2], 'no memory'))} than no memory "
        f"({examples} held-out examples, noise levels {', '.join(str(s) for s in SIGMAS)})."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/tiny_long_edit.py")
    parser.add_argument("--weights", default=None, help="default: the config's sample.weights")
    parser.add_argument("--examples", type=int, default=32, help="validation examples (drawn again past the split)")
    parser.add_argument("--write-benchmarks", action="store_true", help="also write BENCHMARKS.md's section")
    args = parser.parse_args()
    config = load_config(args.config)
    weights = args.weights or config.sample.weights
    errors = denoising_errors(load_memory_dit(weights), config, args.examples)
    text = table(errors, args.examples)
    print(text)
    if args.write_benchmarks:
        title = f"Memory use: held-out denoising error ({config.step.task})"
        write_section(title, f"Model: `{weights}`.\n\n{text}")


if __name__ == "__main__":
    main()
