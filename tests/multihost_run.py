"""One process of the multi-host training test (tests/test_multihost.py), and the run it compares.

    python tests/multihost_run.py PROCESS_ID PORT OUT.json WORKDIR MODE SPLIT

starts `jax.distributed` on localhost (2 processes, 4 fake CPU devices each, gloo collectives) and runs
MODE on the mesh SPLIT names (`SPLITS`: which mesh axis crosses the two processes): "steps" trains 3
steps on this process's rows of fixed global batches, checkpoints, restores, and takes a 4th step from
the restored and from the live state; "loop" runs `train.loop.train` for 3 steps, then again to 4 (a
resume). Results go to OUT.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from train_fixtures import latent_scene, micro_config

MESH = {"data": 2, "fsdp": 2, "sequence": 2}  # 8 devices: the batch of 4 over 4, each example over 2
# MESH as (each process's mesh, the axes across the processes): "data" is the device order (process 0
# holds data 0, so the processes load different rows); "sequence" puts each example's tokens on both
# processes, which must then load the same examples.
SPLITS = {"data": (MESH, {}), "sequence": ({"data": 2, "fsdp": 2}, {"sequence": 2})}
BATCH, STEPS = 4, 3
RECORDS = 6


def config(split: str = "data", **overrides) -> dict:
    """micro_config with 2 blocks of 4 heads (Ulysses over the sequence axis of 2) on the whole mesh,
    laid out as `SPLITS[split]`."""
    base = micro_config(**overrides)
    base["model"]["dit"] |= dict(dim=64, num_heads=4, num_layers=2)
    (base["mesh"], base["mesh_dcn"]), base["mesh_devices"], base["batch_size"] = SPLITS[split], 0, BATCH
    return base


def global_batches(cfg: dict, count: int) -> list[dict[str, np.ndarray]]:
    """The same global batches in every process: examples drawn with generators seeded by position."""
    from mv2v_jax.data.memory_sampling import MemorySampling, nvs_example

    records = [latent_scene(i) for i in range(RECORDS)]
    sampling = MemorySampling(**cfg["memory_sampling"])
    batches = []
    for step in range(count):
        examples = [
            nvs_example(records[(step * BATCH + i) % RECORDS], np.random.default_rng([step, i]), sampling)
            for i in range(BATCH)
        ]
        batches.append({k: np.stack([e[k] for e in examples]) for k in examples[0]})
    return batches


def train_steps(workdir: Path, split: str = "data") -> dict:
    """3 steps on this process's rows, a checkpoint, a restore, and a 4th step from both states."""
    import jax

    from mv2v_jax.data.loader import to_train_batch, training_dataset
    from mv2v_jax.data.memory_sampling import MemorySampling
    from mv2v_jax.parallel.mesh import batch_sharding, process_batch_rows, to_host, use_mesh
    from mv2v_jax.tasks import get_task
    from mv2v_jax.train.checkpoint import Checkpointer, abstract_like
    from mv2v_jax.train.loop import initial_state, training_mesh
    from mv2v_jax.train.optimizer import make_optimizer, trainable_filter
    from mv2v_jax.train.step import StepVariant, jit_train_step

    cfg = config(split)
    mesh = training_mesh(cfg)
    rules, optimizer, trainable = cfg["mesh_rules"], make_optimizer(cfg["optimizer"]), trainable_filter([".*"])
    rows = process_batch_rows(mesh, BATCH, rules)  # the rows of the batch axis this process's devices hold
    key = jax.random.key(cfg["seed"])
    sampling = MemorySampling(**cfg["memory_sampling"])
    with use_mesh(mesh, rules):
        model, graphdef, state = initial_state(cfg, mesh, optimizer, trainable)
        variant = StepVariant(model.config.tokenizers, None)  # merging's sharding is tested in test_sequence_parallel
        step = jit_train_step(graphdef, trainable, optimizer, variant, cfg["step"])

        def batch(i):
            local = {k: v[list(rows.rows)] for k, v in global_batches(cfg, STEPS + 1)[i].items()}
            return to_train_batch(local, lambda a: batch_sharding(mesh, a.ndim, rules))

        losses = []
        for i in range(STEPS):
            state, metrics = step(state, batch(i), jax.random.fold_in(key, i))
            losses.append(float(metrics["loss"]))

        def records_iterator():
            records = [latent_scene(i) for i in range(RECORDS)]
            example = get_task("nvs").example
            return iter(training_dataset(records, example, sampling, len(rows.rows), 0, rows.shard, rows.shards))

        iterator = records_iterator()
        next(iterator)
        checkpointer = Checkpointer(workdir / "checkpoints")
        checkpointer.save(STEPS, state, iterator)
        checkpointer.wait()
        fresh = records_iterator()
        restored = checkpointer.restore(abstract_like(state), fresh)
        checkpointer.close()
        same = all(
            np.array_equal(to_host(a), to_host(b))
            for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(restored), strict=True)
        )
        # The restored iterator continues where the saved one was: its next batch is the saved one's.
        same_data = all(
            np.array_equal(a, b) for a, b in zip(next(fresh).values(), next(iterator).values(), strict=True)
        )
        step_key = jax.random.fold_in(key, STEPS)
        _, from_restored = step(restored, batch(STEPS), step_key)
        _, from_live = step(state, batch(STEPS), step_key)
    return {
        "losses": losses,
        "restored_equal": same,
        "iterator_restored": bool(same_data),
        "resumed_loss": float(from_restored["loss"]),
        "continued_loss": float(from_live["loss"]),
        "rows": list(rows.rows),
        "shard": rows.shard,
        "shards": rows.shards,
    }


def train_loop(workdir: Path, split: str = "data") -> dict:
    """`train` for 3 steps, then to 4 from the checkpoint of step 3."""
    import jax

    from mv2v_jax.train.loop import train

    records = [latent_scene(i) for i in range(RECORDS)]
    first = train(config(split, steps=STEPS, checkpoint_every=2, eval_every=1000), workdir, records)
    second = train(config(split, steps=STEPS + 1, checkpoint_every=2, eval_every=1000), workdir, records)
    return {"first": first, "second": second, "process": jax.process_index()}


def main(process_id: int, port: int, out: Path, workdir: Path, mode: str, split: str) -> None:
    import jax

    jax.distributed.initialize(f"localhost:{port}", num_processes=2, process_id=process_id)
    assert jax.device_count() == 8 and jax.local_device_count() == 4
    result = (train_steps if mode == "steps" else train_loop)(workdir, split)
    out.write_text(json.dumps(result))


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]), sys.argv[5], sys.argv[6])
