"""Does the model use its memory? Held-out denoising error with the right memory, none, or another's.

    python -m mv2v_jax.eval.denoising --config configs/tiny_long_edit.py   # after encode_latents

Sampled outputs mix two things: whether the model reads its memory, and whether what it wrote in
earlier turns was worth keeping. This measures the first alone, as training does: on the held-out
(validation) split of the config's latent dataset, each example is drawn as in training (the task's
example sampler: the target, its inputs, memories of the same scene or long video, as training samples
them), noised with fixed noise at every noise level of a grid over the training distribution (the
midpoints of ten equal steps of sigma ~ U(0, 1)), and the error of the model's estimate of the clean
target, `x0 = noisy - sigma * velocity`, is averaged in three settings:

- memory: the example's own memories (ground-truth earlier views or edited segments);
- no memory: every slot empty (the model as a plain ReCamMaster / LucyEdit);
- another example's memory: the memories of the next example in the batch (a different scene or
  video), which the model should not be able to use.

The clean estimate's error, not the velocity's (the training loss): at noise level sigma the velocity
error is the clean estimate's divided by sigma^2, so it weighs the low noise levels, where the noisy
target shows its content and nothing needs remembering, up to a hundred times more than the high ones,
where the content is decided. The error per noise level is in results too.

Memory "wins" by how much lower its error is than without memory; another example's memory shows that
the gain comes from what the memory holds, not from extra tokens. The error is reported over all target
cells and over the memory-only cells: the latent cells of the target whose content the example's own
memory holds and its input does not (`memory_only`; for the synthetic datasets, from their ground truth),
where reading the memory is the only way to be right.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import mv2v_jax.cli_start  # noqa: F401  (first: Ctrl-C in the imports below is one line, exit 130)

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mv2v_jax.config import ArgumentParser, dataclass_from_config, int_at_least, load_config, run_app
from mv2v_jax.data.encode_latents import open_latents
from mv2v_jax.data.loader import decode_text, to_train_batch
from mv2v_jax.data.memory_sampling import MemorySampling
from mv2v_jax.data.synthetic import LongVideoConfig, edit_regions, generate_long_edit
from mv2v_jax.data.tfds.synthetic_multicam import scene_seed
from mv2v_jax.diffusion import flow
from mv2v_jax.eval import report
from mv2v_jax.eval.benchmarks import write_section
from mv2v_jax.eval.metrics import MIN_REGION_PIXELS
from mv2v_jax.geometry import Intrinsics, cell_directions, sees
from mv2v_jax.memory.model import MemoryDiT, load_memory_dit
from mv2v_jax.models.codec import TEMPORAL
from mv2v_jax.tasks import get_task

SETTINGS = ("memory", "no memory", "another example's memory")
SIGMAS = tuple(float(s) for s in np.linspace(0.05, 0.95, 10))  # the midpoints of U(0, 1), training's sigmas
SOURCE_CAMERA = np.eye(3, 4).reshape(1, 12)  # a still source at the reference camera (SceneConfig "shared")


def nvs_memory_only(example: dict[str, np.ndarray], record, config) -> np.ndarray:
    """bool `[T, h, w]`: target cells whose direction a memory frame sees and the source does not. For
    scenes whose views share a centre and whose source stands still at the reference camera (the
    shipped tiny_nvs data: translations of at most 0.1 m are ignored)."""
    video = config.sample.video
    intrinsics = Intrinsics.from_hfov(config.sample.retrieval.hfov_degrees, video.height, video.width)
    directions = cell_directions(example["camera"], intrinsics, example["target"].shape[1:3])
    in_memory = np.zeros(directions.shape[:-1], bool)
    for k in np.flatnonzero(example["memory_valid"]):
        in_memory |= sees(example["memory_camera"][k], directions, intrinsics)
    return in_memory & ~sees(SOURCE_CAMERA, directions, intrinsics)


def long_edit_memory_only(example: dict[str, np.ndarray], record, config) -> np.ndarray:
    """bool `[T, h, w]`: target cells in an edited region (a repainted wall, the recoloured objects) that
    a memory segment shows too, from the synthetic video regenerated from the record's seed."""
    split, index = record["pair"].split("/")
    source = config.data.source
    long = generate_long_edit(
        scene_seed(source.base_seed, split, int(index)), LongVideoConfig.from_config(source.video)
    )
    s = int(np.argmin(np.abs(record["edited_latents"] - example["target"]).reshape(len(long["ids"]), -1).sum(1)))
    ids = long["ids"][:, ::TEMPORAL]
    t, h, w = example["target"].shape[:3]
    cells = ids[s][:, ids.shape[2] // h // 2 :: ids.shape[2] // h, ids.shape[3] // w // 2 :: ids.shape[3] // w]
    remembered = example["memory_turns"][example["memory_valid"]]
    mask = np.zeros((t, h, w), bool)
    for name, region in edit_regions(cells, long["config"].edit).items():
        shown = sum(int(edit_regions(ids[m], long["config"].edit)[name].sum()) for m in remembered)
        if shown >= MIN_REGION_PIXELS:
            mask |= region
    return mask


MEMORY_ONLY = {"nvs": nvs_memory_only, "long_edit": long_edit_memory_only}  # the synthetic datasets' ground truth


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
) -> dict[str, dict[str, float]]:
    """Mean squared error of the clean-target estimate per setting over `examples` validation examples
    and `sigmas`: over all target cells (`"all"`), over the memory-only cells (`"memory_only"`) and, per
    noise level, over the memory-only cells (`"memory_only_by_sigma"`); the share of target cells that are
    memory-only (`"memory_only_share"`), and the 95% bootstrap interval (over examples) of the setting's
    reduction against no memory on them (`"memory_only_vs_no_memory_interval"`)."""
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
        clean = noisy - sigma[:, None, None, None, None] * velocity
        return jnp.mean(jnp.square(clean - target), axis=-1)  # [B, T, h, w]

    # Per example: summed squared error per noise level on each region, and the region's cells.
    sums = {s: {"all": [], "memory_only": []} for s in SETTINGS}
    cells: dict[str, list[int]] = {"all": [], "memory_only": []}
    for start in range(0, examples - batch_size + 1, batch_size):
        drawn, masks = [], []
        for i in range(start, start + batch_size):
            record = decode_text(records[i % len(records)])
            drawn.append(task.example(record, np.random.default_rng((seed, i)), sampling))
            masks.append(MEMORY_ONLY[task.name](drawn[-1], record, config))
        batch = {k: np.stack([e[k] for e in drawn]) for k in drawn[0]}
        regions = {"all": np.ones_like(np.stack(masks)), "memory_only": np.stack(masks)}
        noise = jax.random.normal(jax.random.key(seed + start), batch["target"].shape)
        for setting, fed in memory_settings(batch).items():
            fed = to_train_batch(fed)
            per_sigma = [
                np.asarray(error(model, fed.target, fed.conditions, fed.context, noise, jnp.full((batch_size,), s)))
                for s in sigmas
            ]
            for name, mask in regions.items():
                sums[setting][name] += [[float(e[b][mask[b]].sum()) for e in per_sigma] for b in range(batch_size)]
        for name, mask in regions.items():
            cells[name] += [int(m.sum()) for m in mask]
    if not cells["all"]:
        raise ValueError(f"{examples} examples make no batch of {batch_size}")
    mean = lambda setting, name: float(np.sum(sums[setting][name])) / len(sigmas) / max(sum(cells[name]), 1)
    pooled = lambda setting: np.sum(sums[setting]["memory_only"], axis=1)  # per example, every noise level
    return {
        s: {name: mean(s, name) for name in cells}
        | {
            "memory_only_by_sigma": list(np.sum(sums[s]["memory_only"], axis=0) / max(sum(cells["memory_only"]), 1)),
            "memory_only_share": sum(cells["memory_only"]) / sum(cells["all"]),
            "memory_only_vs_no_memory_interval": report.pooled_reduction_interval(pooled(s), pooled("no memory")),
        }
        for s in SETTINGS
    }


COLUMNS = (
    ("all", "clean-target error, all target cells (MSE)", ".4f"),
    ("memory_only", "clean-target error, memory-only cells", ".4f"),
)


def table(errors: dict[str, dict[str, float]], examples: int) -> str:
    summary = {s: {key: errors[s][key] for key, _, _ in COLUMNS} for s in SETTINGS}

    def change(ours: str, metric: str) -> str:
        interval = errors[ours]["memory_only_vs_no_memory_interval"] if metric == "memory_only" else None
        return report.lower_or_higher(report.reduction(summary, metric, ours, "no memory"), interval)

    by_sigma = ", ".join(
        f"{sigma:.2f}: {report.lower_or_higher(1 - ours / none)}"
        for sigma, ours, none in zip(
            SIGMAS, errors["memory"]["memory_only_by_sigma"], errors["no memory"]["memory_only_by_sigma"], strict=True
        )
    )
    return report.table(summary, COLUMNS, {}) + (
        f"\n\nOn memory-only cells ({100 * errors['memory']['memory_only_share']:.0f}% of the target's cells: "
        "content the example's own memory holds and its input does not), memory vs no memory: "
        f"{change('memory', 'memory_only')} error; another example's memory: {change(SETTINGS[2], 'memory_only')} "
        f"than no memory. Over all target cells: {change('memory', 'all')} and {change(SETTINGS[2], 'all')}. "
        f"By noise level, memory vs no memory on memory-only cells: {by_sigma}. ({examples} held-out examples "
        "drawn as training draws them, intervals by bootstrap over them; the error of the clean-target "
        "estimate, lower is better.)"
    )


def main(argv: list[str]) -> int:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/tiny_long_edit.py")
    parser.add_argument("--weights", default=None, help="default: the config's sample.weights")
    parser.add_argument(
        "--examples", type=int_at_least(1), default=128, help="validation examples (drawn again past the split)"
    )
    parser.add_argument("--write-benchmarks", action="store_true", help="also write BENCHMARKS.md's section")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
        weights = args.weights or config.sample.weights
        errors = denoising_errors(load_memory_dit(weights), config, args.examples)
    except (ValueError, OSError) as e:  # a config, weights or latent dataset that cannot be used
        print(f"error: {e}", file=sys.stderr)
        return 1
    text = table(errors, args.examples)
    print(text)
    if args.write_benchmarks:
        title = f"Memory use: held-out denoising error ({config.step.task})"
        write_section(title, f"Model: `{weights}`.\n\n{text}")
    return 0


if __name__ == "__main__":
    run_app(main, absl_flags=False)
