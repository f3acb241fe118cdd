"""A workdir in a bucket, against a Google Cloud Storage emulator (gcp-storage-emulator) on 127.0.0.1:
train.py with `--workdir gs://bucket/run` killed after a checkpoint and resumed to the end (checkpoints,
metrics.jsonl, TensorBoard events, the validation image and the weights export, all in the bucket), and
the bucket's writes alone (an object appears whole or not at all; a weights directory is published
with config.json last; a missing bucket is refused).

Orbax writes its checkpoints through tensorstore's `gcs` driver (TENSORSTORE_GCS_HTTP_URL) and
etils.epath (gcsfs, STORAGE_EMULATOR_HOST); everything else goes through etils.epath. Two things of
the emulator's differ from Google Cloud Storage: it ignores object generations, which tensorstore needs
(tests/gcs_emulator.py adds them), and it serves no gRPC, which gcsfs uses to ask a bucket's type
(GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false: plain JSON-API buckets).
"""

import gc
import json
import logging
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import gcsfs
import numpy as np
import pytest
from PIL import Image
from tensorboardX.proto import event_pb2

from mv2v_jax.io import atomic
from mv2v_jax.io.atomic import atomic_output, check_can_create, write_json
from mv2v_jax.memory.model import load_memory_dit
from mv2v_jax.models import weights
from mv2v_jax.models.weights import WeightsWriter, read_config, verify_checksums

REPO = Path(__file__).parents[1]
TESTS = Path(__file__).parent
BUCKET = "bucket"


def emulator_env(url: str) -> dict[str, str]:
    return {
        "STORAGE_EMULATOR_HOST": url,  # gcsfs (etils.epath's gs://)
        "TENSORSTORE_GCS_HTTP_URL": url,  # tensorstore (orbax's arrays)
        "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",  # a gRPC bucket-type lookup the emulator does not serve
    }


@pytest.fixture(scope="module")
def emulator():
    """The emulator's URL: a server on a free port of 127.0.0.1, in memory, with the bucket `bucket`;
    this process talks to it too (its environment points there while the module runs)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, str(TESTS / "gcs_emulator.py"), "start", "--in-memory", "--quiet"]
    server = subprocess.Popen(
        [*command, "--host", "127.0.0.1", "--port", str(port), "--default-bucket", BUCKET],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        try:
            urllib.request.urlopen(url + "/", timeout=5).read()
            break
        except OSError:
            assert server.poll() is None and time.time() < deadline, "the emulator did not start"
            time.sleep(0.2)
    with pytest.MonkeyPatch.context() as env:
        for name, value in emulator_env(url).items():
            env.setenv(name, value)
        yield url
    server.terminate()
    server.wait()


def store(url: str) -> gcsfs.GCSFileSystem:
    """A client of its own (no listing cache) to look into the bucket."""
    return gcsfs.core.GCSFileSystem(endpoint_url=url, token="anon", skip_instance_cache=True, use_listings_cache=False)


def objects(url: str, prefix: str) -> list[str]:
    return sorted(name.removeprefix(f"{prefix}/") for name in store(url).find(prefix))


def test_bucket_objects_appear_whole(emulator, monkeypatch):
    write_json(f"gs://{BUCKET}/whole/a.json", {"turn": 1})
    with atomic_output(f"gs://{BUCKET}/whole/b.bin") as tmp:
        assert tmp.suffix == ".bin"  # writers that pick a format by the suffix still can
        tmp.write_bytes(b"x" * 1000)
    assert store(emulator).cat(f"{BUCKET}/whole/b.bin") == b"x" * 1000
    assert objects(emulator, f"{BUCKET}/whole") == ["a.json", "b.bin"]  # no temporaries in the bucket

    def half_then_fail(source, target, length):
        target.write(source.read(10))
        raise KeyboardInterrupt  # Ctrl-C in the middle of the upload

    monkeypatch.setattr(atomic.shutil, "copyfileobj", half_then_fail)
    for name in ("a.json", "c.json"):
        with pytest.raises(KeyboardInterrupt):
            write_json(f"gs://{BUCKET}/whole/{name}", {"turn": 2})
    gc.collect()  # an abandoned upload's file object, once collected, must not publish what it held
    assert json.loads(store(emulator).cat(f"{BUCKET}/whole/a.json")) == {"turn": 1}  # the old object
    assert objects(emulator, f"{BUCKET}/whole") == ["a.json", "b.bin"]  # no half object


def test_bucket_weights_are_published_config_last(emulator, monkeypatch, tmp_path):
    destination, config = f"gs://{BUCKET}/published/weights", f"{BUCKET}/published/weights/config.json"
    uploads = []  # (object, whether config.json was in the bucket as it began)
    real_upload = weights.upload
    monkeypatch.setattr(
        weights,
        "upload",
        lambda src, dst: uploads.append((str(dst), store(emulator).exists(config))) or real_upload(src, dst),
    )
    for value in (1.0, 2.0):  # the second export replaces the first
        uploads.clear()
        with WeightsWriter(destination, overwrite=True) as writer:
            writer.write(("a",), np.full(3, value, np.float32))
            writer.write(("b", "c"), np.arange(4, dtype=np.float32))
            if value == 2.0:  # the first export's weights stay usable while the new ones are made
                assert read_config(destination)["value"] == 1.0
            assert str(writer.commit({"value": value})) == destination
        # No config.json while the other files go up (the old one went first); the new one comes last.
        assert uploads[-1][0] == f"{destination}/config.json" and len(uploads) > 5
        assert not any(present for _, present in uploads)
    local = tmp_path / "weights"
    store(emulator).get(f"{BUCKET}/published/weights", str(local), recursive=True)
    verify_checksums(local)  # every file listed, none missing, none left from the first export
    assert read_config(local)["value"] == 2.0
    with pytest.raises(FileExistsError, match=f"{destination} exists"):
        WeightsWriter(destination)


def test_bucket_that_does_not_exist_is_refused(emulator):
    check_can_create(f"gs://{BUCKET}/new/run")  # a new prefix of a bucket that exists
    with pytest.raises(FileNotFoundError, match=r"no such bucket .*: 'gs://no-such-bucket'"):
        check_can_create("gs://no-such-bucket/run")


# Runs train.py on the micro config (tests/train_fixtures.py) with fabricated latents. argv: the
# step after whose log line the process SIGKILLs itself (0: none), then train.py's arguments.
DRIVER = """
import os, runpy, signal, sys
sys.path.insert(0, {tests!r})
from train_fixtures import latent_scene
import mv2v_jax.data.encode_latents
from mv2v_jax.train import checkpoint, loop

mv2v_jax.data.encode_latents.latent_records = lambda config: {{
    "train": [latent_scene(i) for i in range(6)], "validation": [latent_scene(100)]
}}
loop.SYNC_SECONDS = 0  # the logs reach the bucket after every line
kill_after = int(sys.argv[1])
if kill_after:
    save, write = checkpoint.Checkpointer.save, loop._Log.write

    def save_and_wait(self, *args, **kwargs):  # the checkpoint is committed before the kill
        save(self, *args, **kwargs)
        self.wait()

    def write_then_die(self, step, metrics):
        write(self, step, metrics)
        if step == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)

    checkpoint.Checkpointer.save, loop._Log.write = save_and_wait, write_then_die
sys.argv = ["train.py", *sys.argv[2:]]
runpy.run_path("train.py", run_name="__main__")
"""

CONFIG = """
import sys
sys.path.insert(0, {tests!r})
import ml_collections
from train_fixtures import micro_config

def get_config():
    return ml_collections.ConfigDict(micro_config(steps=8, checkpoint_every=4, eval_every=1000))
"""


def train_py(emulator: str, config: Path, kill_after: int) -> subprocess.CompletedProcess:
    driver = [sys.executable, "-c", DRIVER.format(tests=str(TESTS)), str(kill_after)]
    return subprocess.run(
        [*driver, "--config", str(config), "--workdir", f"gs://{BUCKET}/run"],
        cwd=REPO,
        env=dict(os.environ, **emulator_env(emulator)),
        capture_output=True,
        text=True,
        timeout=600,
    )


def metrics(url: str) -> list[dict]:
    return [json.loads(line) for line in store(url).cat(f"{BUCKET}/run/metrics.jsonl").decode().splitlines()]


def events(data: bytes) -> list[event_pb2.Event]:
    """The records of a TensorBoard event file (TFRecord: length, its CRC, the Event, its CRC)."""
    out, at = [], 0
    while at < len(data):
        (length,) = struct.unpack("<Q", data[at : at + 8])
        out.append(event_pb2.Event.FromString(data[at + 12 : at + 12 + length]))
        at += 12 + length + 4
    return out


# Two train.py processes on the shared 2-core machine: 1-6 minutes.
@pytest.mark.slow
def test_bucket_workdir_training_is_killed_and_resumes(emulator, tmp_path, caplog):
    config = tmp_path / "micro.py"
    config.write_text(CONFIG.format(tests=str(TESTS)))
    killed = train_py(emulator, config, kill_after=6)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    run = f"{BUCKET}/run"
    in_bucket = objects(emulator, run)
    assert "checkpoints/4/commit_success.txt" in in_bucket  # orbax's commit marker on GCS
    assert not any(name.startswith("checkpoints/8") for name in in_bucket)
    before = {line["step"]: line["loss"] for line in metrics(emulator)}
    assert sorted(before) == [1, 2, 3, 4, 5, 6]  # logged after the checkpoint at 4, then killed

    resumed = train_py(emulator, config, kill_after=0)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed from step 4 in gs://{run}/checkpoints" in resumed.stdout
    lines = metrics(emulator)
    assert [line["step"] for line in lines if "loss" in line] == list(range(1, 9))  # each step once
    assert [line["step"] for line in lines if "val_loss" in line] == [8]
    after = {line["step"]: line["loss"] for line in lines if "loss" in line}
    for step in (5, 6):  # the same batches and parameters as the killed run: it resumed from step 4's state
        assert after[step] == pytest.approx(before[step], rel=1e-6, abs=1e-7), step
    assert {after[step] for step in range(1, 5)} == {before[step] for step in range(1, 5)}  # kept as logged

    in_bucket = objects(emulator, run)
    assert {"checkpoints/4/commit_success.txt", "checkpoints/8/commit_success.txt"} <= set(in_bucket)
    event_files = [name for name in in_bucket if name.startswith("tensorboard/events.out.tfevents.")]
    seen = []  # per event file: the step TensorBoard purges from (a resumed run's), the loss steps
    for name in event_files:
        records = events(store(emulator).cat(f"{run}/{name}"))
        purge = [e.step for e in records if e.HasField("session_log") and e.session_log.status == 1]
        seen.append((purge, [e.step for e in records for v in e.summary.value if v.tag == "loss"]))
    assert sorted(seen) == [([], [1, 2, 3, 4, 5, 6]), ([5], [5, 6, 7, 8])]  # the killed run's 5 and 6 hidden

    with Image.open(store(emulator).open(f"{run}/validation_8.png")) as image:
        assert np.asarray(image).std() > 0  # a whole PNG with a picture in it
    weights_files = [name for name in in_bucket if name.startswith("weights/")]
    assert {"weights/config.json", "weights/checksums.json"} <= set(weights_files)
    local = tmp_path / "weights"
    store(emulator).get(f"{run}/weights", str(local), recursive=True)
    model = load_memory_dit(local)  # checks every file against checksums.json
    assert read_config(local)["trained"] == {"steps": 8, "ema": False} and model.config.dit.num_layers == 3
    with caplog.at_level(logging.WARNING):
        from_bucket = load_memory_dit(f"gs://{run}/weights")  # what sample.py does with a gs:// weights dir
    assert "is in a bucket: its files are not checked against its checksums.json" in caplog.text
    kernel = model.dit.blocks.ffn.fc1.kernel[...]
    np.testing.assert_array_equal(from_bucket.dit.blocks.ffn.fc1.kernel[...], kernel)
    assert not [name for name in in_bucket if ".tmp" in name], in_bucket  # no temporaries left
    shutil.rmtree(local)
