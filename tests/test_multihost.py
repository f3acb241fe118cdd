"""Multi-host training with 2 real processes (`jax.distributed` on localhost, gloo collectives over CPU,
4 fake devices each): each process feeds the rows of the batch its devices hold
(`make_array_from_process_local_data`), whether the processes split the batch (the data axis) or each
example's tokens (the sequence axis: both load the same rows), the losses are those of 1 process with 8
devices, and checkpoints save and restore across the processes.
Workdirs reach orbax as `etils.epath` paths, so `gs://` is not turned into a local folder."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import pytest
from multihost_run import RECORDS, STEPS, config, train_steps
from train_fixtures import latent_scene

HERE = Path(__file__).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def two_processes(tmp_path: Path, mode: str, split: str) -> list[dict]:
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    env["PYTHONPATH"] = os.pathsep.join([str(HERE.parent), env.get("PYTHONPATH", "")])
    port, workdir, script = free_port(), tmp_path / "run", str(HERE / "multihost_run.py")
    outs = [tmp_path / f"process{i}.json" for i in range(2)]
    procs = [
        subprocess.Popen(
            [sys.executable, script, str(i), str(port), str(outs[i]), str(workdir), mode, split],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    logs = [p.communicate(timeout=600)[0] for p in procs]  # about 150 s each under load
    for p, log in zip(procs, logs, strict=True):
        assert p.returncode == 0, log[-4000:]
    return [json.loads(out.read_text()) for out in outs]


# Per process: the rows of the batch of 4 it loads, and its (shard, shards) of the records.
ROWS = {"data": [[0, 1], [2, 3]], "sequence": [[0, 1, 2, 3], [0, 1, 2, 3]]}
SHARDS = {"data": [(0, 2), (1, 2)], "sequence": [(0, 1), (0, 1)]}


@pytest.mark.slow
@pytest.mark.parametrize("split", ["data", "sequence"])
def test_two_processes_train_like_one_and_share_checkpoints(tmp_path, split):
    processes = two_processes(tmp_path, "steps", split)
    assert [result["rows"] for result in processes] == ROWS[split]
    assert [(result["shard"], result["shards"]) for result in processes] == SHARDS[split]
    assert jax.device_count() == 8
    single = train_steps(tmp_path / "single")  # this process: 8 devices, the whole batch
    for result in processes:
        assert result["losses"] == pytest.approx(single["losses"], rel=1e-5)
        assert result["restored_equal"] and result["iterator_restored"]
        assert result["resumed_loss"] == result["continued_loss"]
    assert len(single["losses"]) == STEPS and single["resumed_loss"] == single["continued_loss"]


@pytest.mark.slow
@pytest.mark.parametrize("split", ["data", "sequence"])
def test_two_processes_run_the_training_loop_and_resume(tmp_path, split):
    processes = two_processes(tmp_path, "loop", split)
    workdir = tmp_path / "run"
    lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines if "loss" in line] == [1, 2, 3, 4]  # process 0 logs; 4 resumed from 3
    assert (workdir / "weights" / "config.json").is_file()
    assert processes[0]["second"]["loss"] == processes[1]["second"]["loss"]
    if split == "sequence":
        # One shard of records: both processes load the examples one process with 8 devices loads, in
        # its order, so the losses are its (a split by process would put different examples in a row).
        from mv2v_jax.train.loop import train

        single = tmp_path / "single"
        train(config(steps=STEPS, eval_every=1000), single, [latent_scene(i) for i in range(RECORDS)])
        want = [json.loads(line)["loss"] for line in (single / "metrics.jsonl").read_text().splitlines()]
        got = [line["loss"] for line in lines if "loss" in line][:STEPS]
        assert got == pytest.approx(want, rel=1e-5)


def test_gs_workdir_reaches_orbax_unmangled(monkeypatch):
    """`--workdir gs://bucket/run` is handed to orbax as that URI (pathlib made it `./gs:/bucket/run`)."""
    import orbax.checkpoint as ocp

    from mv2v_jax.train.checkpoint import Checkpointer, as_path

    seen = {}
    monkeypatch.setattr(ocp, "CheckpointManager", lambda directory, **_: seen.setdefault("directory", directory))
    checkpointer = Checkpointer(as_path("gs://bucket/run") / "checkpoints")
    assert str(seen["directory"]) == "gs://bucket/run/checkpoints"
    assert str(checkpointer.directory) == "gs://bucket/run/checkpoints"
    assert str(as_path("relative/run")) == str(Path("relative/run").absolute())
