"""Training, both tasks: the loss falls, sharded and single-device steps agree, and a killed run resumes
exactly."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx
from train_fixtures import latent_scene, long_edit_pair, micro_config

from mv2v_jax.data.loader import to_train_batch, training_dataset
from mv2v_jax.data.memory_sampling import MemorySampling
from mv2v_jax.memory.model import MemoryConfig, MemoryDiT, load_memory_dit
from mv2v_jax.parallel.mesh import batch_sharding, make_mesh, state_shardings, use_mesh
from mv2v_jax.tasks import get_task
from mv2v_jax.train.loop import export_checkpoint, train
from mv2v_jax.train.step import StepVariant, loss_fn


def losses(workdir: Path) -> dict[int, float]:
    """Loss per step from metrics.jsonl."""
    out = {}
    for line in (workdir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "loss" in record:
            out[record["step"]] = record["loss"]
    return out


RECORDS = {"nvs": latent_scene, "long_edit": long_edit_pair}


# The long-edit variants are slow-marked: the default suite trains long edit in test_long_edit_data.py.
TASKS = ["nvs", pytest.param("long_edit", marks=pytest.mark.slow)]


@pytest.mark.parametrize("task", TASKS)
def test_loss_falls_and_the_weights_export(tmp_path, task):
    records = [RECORDS[task](i) for i in range(6)]
    train(micro_config(task), tmp_path, records, validation_records=[RECORDS[task](100)])
    curve = losses(tmp_path)
    assert len(curve) == 60
    first, last = np.mean([curve[s] for s in range(1, 11)]), np.mean([curve[s] for s in range(51, 61)])
    assert last < 0.8 * first, (first, last)
    model = load_memory_dit(tmp_path / "weights")
    assert model.config.dit.num_layers == 3
    # Exporting the last checkpoint again gives the same weights.
    kernel = np.asarray(model.dit.blocks.ffn.fc1.kernel[...])
    export_checkpoint(micro_config(task), tmp_path)
    np.testing.assert_array_equal(
        np.asarray(load_memory_dit(tmp_path / "weights").dit.blocks.ffn.fc1.kernel[...]), kernel
    )
    assert (tmp_path / "validation_60.png").exists() and (tmp_path / "tensorboard").is_dir()
    val = [
        json.loads(line)["val_loss"]
        for line in (tmp_path / "metrics.jsonl").read_text().splitlines()
        if "val_loss" in line
    ]
    assert len(val) == 3 and all(np.isfinite(val))


@pytest.mark.parametrize("task", TASKS)
def test_sharded_and_single_device_losses_agree(task):
    config = micro_config(task)
    model = MemoryDiT(MemoryConfig.from_config(config["model"]), rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model)
    records = [RECORDS[task](i) for i in range(4)]
    data = training_dataset(records, get_task(task).example, MemorySampling(**config["memory_sampling"]), 8, seed=0)
    batch = next(iter(data))
    variant = StepVariant(model.config.tokenizers, 0.5)
    results = {}
    for name, shape in (("single", {"data": 1}), ("sharded", {"data": 2, "fsdp": 2, "tensor": 2})):
        devices = jax.devices()[:1] if name == "single" else jax.devices()
        mesh = make_mesh(shape, devices)
        with use_mesh(mesh, config["mesh_rules"]):
            sharded_params = jax.device_put(params, state_shardings(params, mesh, config["mesh_rules"]))
            device_batch = to_train_batch(batch, lambda a, mesh=mesh: batch_sharding(mesh, a.ndim))

            @jax.jit
            def loss(p, b):
                return loss_fn(p, nnx.State({}), graphdef, b, jax.random.key(3), variant, config["step"])[0]

            results[name] = float(loss(sharded_params, device_batch))
    assert results["single"] == pytest.approx(results["sharded"], rel=1e-5)


CHILD = """
import sys, time, pickle
sys.path.insert(0, sys.argv[3])
from train_fixtures import latent_scene, micro_config
from mv2v_jax.train.loop import train
config = micro_config(steps=int(sys.argv[2]), checkpoint_every=4, eval_every=1000)
train(config, sys.argv[1], [latent_scene(i) for i in range(6)], on_step=lambda step, m: time.sleep(float(sys.argv[4])))
"""


def test_killed_run_resumes_exactly(tmp_path):
    steps = 16
    tests = str(Path(__file__).parent)
    # The three processes compile the same steps: share them through JAX's persistent cache.
    env = dict(
        os.environ,
        JAX_COMPILATION_CACHE_DIR=str(tmp_path / "jax_cache"),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
    )
    reference = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path / "reference"), str(steps), tests, "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert reference.returncode == 0, reference.stderr[-2000:]

    run = tmp_path / "killed"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(run), str(steps), tests, "0.5"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while not (run / "checkpoints" / "4").is_dir() and time.time() < deadline:
        time.sleep(0.1)
    assert (run / "checkpoints" / "4").is_dir(), "no checkpoint appeared"
    time.sleep(1.0)  # mid-way between checkpoints
    child.send_signal(signal.SIGKILL)
    child.wait()
    killed_at = max(losses(run))
    assert killed_at < steps, "the run finished before it could be killed"

    resumed = subprocess.run(
        [sys.executable, "-c", CHILD, str(run), str(steps), tests, "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from step" in resumed.stdout
    want, got = losses(tmp_path / "reference"), losses(run)
    logged = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert logged == list(range(1, steps + 1))  # the steps the killed run logged after its checkpoint, dropped
    for step in range(killed_at - 2, steps + 1):
        assert got[step] == pytest.approx(want[step], rel=1e-6, abs=1e-7), step
    assert (run / "weights" / "config.json").exists()


# A run resumed with another model width than its checkpoint's: train() in a process of its own, which
# reports the error as the CLIs do and then ends (orbax's threads and event loop must end with it).
MISMATCHED = """
import sys
sys.path.insert(0, sys.argv[2])
from train_fixtures import latent_scene, micro_config
from mv2v_jax.train.loop import train
config = micro_config(steps=4)
config["model"]["dit"]["dim"] = 48
try:
    train(config, sys.argv[1], [latent_scene(i) for i in range(4)])
except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
"""


def test_a_resumed_run_that_no_longer_fits_its_checkpoint_is_refused_in_our_words(tmp_path):
    import grain

    from mv2v_jax.train.checkpoint import Checkpointer
    from mv2v_jax.train.loop import initial_state, training_mesh
    from mv2v_jax.train.optimizer import make_optimizer, trainable_filter

    config = micro_config(steps=4)  # dim 32
    mesh = training_mesh(config)
    with use_mesh(mesh, config["mesh_rules"]):
        optimizer = make_optimizer(config["optimizer"])
        _, _, state = initial_state(config, mesh, optimizer, trainable_filter(config["trainable"]))
    checkpointer = Checkpointer(tmp_path / "run" / "checkpoints")
    checkpointer.save(2, state, iter(grain.MapDataset.range(4).to_iter_dataset()))
    checkpointer.close()
    before = {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()}

    child = [sys.executable, "-c", MISMATCHED, str(tmp_path / "run"), str(Path(__file__).parent)]
    result = subprocess.run(child, capture_output=True, text=True, timeout=600)
    assert result.returncode == 1, result.stderr[-3000:]
    assert (
        f"error: checkpoint step 2 in {tmp_path / 'run' / 'checkpoints'} does not fit this config: "
        "params/camera/cam_encoder/bias is (3, 32) there but (3, 48) here"
    ) in result.stderr
    assert "model.dit.dim (now 48) changed since it was saved" in result.stderr
    assert "Traceback" not in result.stderr and "Event loop is closed" not in result.stderr, result.stderr[-3000:]
    assert {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()} == before  # nothing written


class DamagedRecords(list):
    """Records whose reading fails, as a damaged array_record file's does (data.encode_latents.Records)."""

    def __getitem__(self, index):
        from mv2v_jax.data.encode_latents import RecordError

        raise RecordError(f"latents.array_record (record {index} of {len(self)}): damaged, cannot be read")


def test_a_new_run_that_fails_before_its_first_checkpoint_leaves_nothing(tmp_path):
    with pytest.raises(Exception, match=r"latents\.array_record \(record \d of 4\): damaged"):
        train(micro_config(steps=4), tmp_path / "outputs" / "run", DamagedRecords(latent_scene(i) for i in range(4)))
    assert list(tmp_path.iterdir()) == []  # no workdir, no staged folder, not the parent made for it
