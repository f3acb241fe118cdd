"""Weights directories: orbax reads what the writer streams and wrote its index, writes are atomic,
converting a checkpoint holds one tensor at a time in memory, and a damaged file is refused, named."""

import json
import logging
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import ml_dtypes
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx

from convert_weights import checksums
from mv2v_jax.models import weights
from mv2v_jax.models.weights import (
    CHECKSUMS_FILE,
    PARAMS_DIR,
    WeightsError,
    WeightsWriter,
    flatten_paths,
    load_module,
    read_config,
    verify_checksums,
)

REPO = Path(__file__).parents[1]


def test_orbax_restores_streamed_parameters(tmp_path, rng):
    stacked = rng.standard_normal((3, 4, 5)).astype(np.float32)
    half = rng.standard_normal((6,)).astype(ml_dtypes.bfloat16)
    with WeightsWriter(tmp_path / "w") as writer:
        layers = writer.create(("blocks", "q", "kernel"), stacked.shape, stacked.dtype, stacked=True)
        for i in (2, 0, 1):  # any order
            layers[i] = stacked[i]
        writer.write(("head", "bias"), half)
        writer.commit({"model": "test"})
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract = {
        "blocks": {"q": {"kernel": jax.ShapeDtypeStruct(stacked.shape, stacked.dtype, sharding=device)}},
        "head": {"bias": jax.ShapeDtypeStruct(half.shape, half.dtype, sharding=device)},
    }
    restored = ocp.StandardCheckpointer().restore(tmp_path / "w" / PARAMS_DIR, abstract)
    np.testing.assert_array_equal(restored["blocks"]["q"]["kernel"], stacked)
    assert restored["head"]["bias"].dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(np.asarray(restored["head"]["bias"], np.float32), half.astype(np.float32))
    assert read_config(tmp_path / "w")["model"] == "test"


def test_nothing_appears_until_commit(tmp_path):
    with pytest.raises(RuntimeError), WeightsWriter(tmp_path / "w") as writer:
        writer.write(("a",), np.zeros(3, np.float32))
        raise RuntimeError("killed mid-way")
    assert list(tmp_path.iterdir()) == []
    with WeightsWriter(tmp_path / "w") as writer:
        writer.write(("a",), np.zeros(3, np.float32))
        with pytest.raises(ValueError, match="written twice"):
            writer.write(("a",), np.zeros(3, np.float32))
        writer.commit({"n": 1})
    with WeightsWriter(tmp_path / "w", overwrite=True) as writer:
        writer.write(("a",), np.ones(3, np.float32))
        writer.commit({"n": 2})
    assert json.loads((tmp_path / "w" / "config.json").read_text())["n"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w"]


MEMORY_PROBE = textwrap.dedent(
    """
    import json, sys, threading, time
    import numpy as np, safetensors.numpy, torch
    from diffusers import WanTransformer3DModel
    from convert_weights.wan_dit import convert_dit

    src, out = sys.argv[1], sys.argv[2]
    # Many mid-sized tensors: 24 layers of 512 x 512 matrices, 263 MB in all, the largest 6.3 MB.
    with torch.device("meta"):
        model = WanTransformer3DModel(num_attention_heads=4, attention_head_dim=128, ffn_dim=512,
                                      num_layers=24, text_dim=512, freq_dim=256)
    rng = np.random.default_rng(0)
    tensors = {k: rng.standard_normal(tuple(v.shape), dtype=np.float32) for k, v in model.state_dict().items()}
    safetensors.numpy.save_file(tensors, f"{src}/diffusion_pytorch_model.safetensors")
    open(f"{src}/config.json", "w").write(json.dumps(dict(model.config)))
    total, largest = sum(t.nbytes for t in tensors.values()), max(t.nbytes for t in tensors.values())
    del tensors

    def anon():
        return int(next(l for l in open("/proc/self/status") if l.startswith("RssAnon")).split()[1]) * 1024

    base, peak, done = anon(), [0], threading.Event()
    def poll():
        while not done.is_set():
            peak[0] = max(peak[0], anon()); time.sleep(0.001)
    thread = threading.Thread(target=poll); thread.start()
    convert_dit(src, out)
    done.set(); thread.join()
    print(json.dumps({"total": total, "largest": largest, "growth": peak[0] - base}))
    """
)


def test_conversion_streams_one_tensor_at_a_time(tmp_path):
    (tmp_path / "src").mkdir()
    result = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, str(tmp_path / "src"), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        check=True,
    )
    stats = json.loads(result.stdout.strip().splitlines()[-1])
    # Anonymous memory (not the memory-mapped source) grows by a few tensors and tensorstore's fixed
    # cost, far below the 263 MB a load-everything converter would need.
    assert stats["growth"] < 8 * stats["largest"] + 24 * 2**20, stats
    assert stats["growth"] < stats["total"] / 4, stats


def test_the_index_is_the_one_orbax_writes(tmp_path, rng):
    """Fails on an orbax upgrade that changes its non-OCDBT layout: orbax saves the same tree itself
    (public API), and its index files, folder names and array formats must be ours."""
    tree = {
        "blocks": {"q": {"kernel": rng.standard_normal((3, 4, 5)).astype(np.float32)}},
        "head": {"bias": rng.standard_normal((6,)).astype(ml_dtypes.bfloat16)},
    }
    with WeightsWriter(tmp_path / "ours") as writer:
        for path, array in flatten_paths(tree).items():
            writer.write(path, array)
        writer.commit({})
    checkpointer = ocp.Checkpointer(ocp.PyTreeCheckpointHandler(use_ocdbt=False, use_zarr3=False))
    checkpointer.save(tmp_path / "orbax", args=ocp.args.PyTreeSave(tree))
    checkpointer.close()
    ours, theirs = tmp_path / "ours" / PARAMS_DIR, tmp_path / "orbax"
    assert sorted(p.name for p in ours.iterdir()) == sorted(p.name for p in theirs.iterdir())
    assert json.loads((ours / "_METADATA").read_text()) == json.loads((theirs / "_METADATA").read_text())
    timestamps = lambda d: {k: v for k, v in d.items() if not k.endswith("timestamp_nsecs")}
    metadata = [timestamps(json.loads((d / "_CHECKPOINT_METADATA").read_text())) for d in (ours, theirs)]
    assert metadata[0] == metadata[1]
    for name in ("blocks.q.kernel", "head.bias"):
        zarray = [json.loads((d / name / ".zarray").read_text()) for d in (ours, theirs)]
        same = ("zarr_format", "shape", "dtype", "order", "dimension_separator", "fill_value")
        assert {k: zarray[0][k] for k in same} == {k: zarray[1][k] for k in same}


class Tiny(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.proj = nnx.Linear(8, 16, rngs=rngs)
        self.head = nnx.Linear(16, 4, rngs=rngs)


def write_tiny(path: Path) -> nnx.State:
    state = nnx.state(Tiny(nnx.Rngs(0)))
    with WeightsWriter(path) as writer:
        for name, value in flatten_paths(nnx.to_pure_dict(state)).items():
            writer.write(name, np.asarray(value))
        writer.commit({"model": "Tiny"})
    return state


def load_tiny(path: Path) -> Tiny:
    return load_module(path, lambda: Tiny(nnx.Rngs(1)))


def test_a_written_directory_loads_and_its_files_are_checksummed(tmp_path):
    state = write_tiny(tmp_path / "w")
    recorded = json.loads((tmp_path / "w" / CHECKSUMS_FILE).read_text())["files"]
    on_disk = [p.relative_to(tmp_path / "w").as_posix() for p in (tmp_path / "w").rglob("*") if p.is_file()]
    assert sorted(recorded) == sorted(set(on_disk) - {CHECKSUMS_FILE})
    loaded = load_tiny(tmp_path / "w")
    np.testing.assert_array_equal(loaded.head.kernel[...], state["head"]["kernel"][...])


@pytest.mark.parametrize("damage", ["random_floats", "random_bytes", "truncated", "deleted"])
def test_a_damaged_parameter_file_is_refused_naming_it(tmp_path, damage):
    write_tiny(tmp_path / "w")
    load_tiny(tmp_path / "w")  # verified once, remembered in the cache...
    chunk = tmp_path / "w" / PARAMS_DIR / "head.kernel" / "0.0"
    size = chunk.stat().st_size
    noise = np.random.default_rng(1)
    if damage == "random_floats":  # finite, same size: only a checksum tells
        chunk.write_bytes(noise.standard_normal(size // 4).astype(np.float32).tobytes())
    elif damage == "random_bytes":
        chunk.write_bytes(noise.integers(0, 256, size, dtype=np.uint8).tobytes())
    elif damage == "truncated":
        chunk.write_bytes(chunk.read_bytes()[: size // 2])
    else:
        chunk.unlink()
    # ... and the cache does not vouch for a file that changed since.
    expect = "files are missing: parameter head/kernel" if damage == "deleted" else "parameter head/kernel"
    with pytest.raises(WeightsError, match=rf"{tmp_path / 'w'}: {expect} \(params/head\.kernel/0\.0\)"):
        load_tiny(tmp_path / "w")


@pytest.mark.parametrize(
    "stray, named",
    [
        ("notes.txt", "notes.txt"),  # copied in by hand
        (f"{PARAMS_DIR}/head.kernel/1.0", "parameter head/kernel (params/head.kernel/1.0)"),  # another conversion's
        (f"{PARAMS_DIR}/old.kernel/0.0", "parameter old/kernel (params/old.kernel/0.0)"),
    ],
)
def test_a_file_checksums_json_does_not_list_is_refused_naming_it(tmp_path, stray, named):
    write_tiny(tmp_path / "w")
    load_tiny(tmp_path / "w")  # verified once: the cache does not vouch for a file added since
    (tmp_path / "w" / stray).parent.mkdir(exist_ok=True)
    (tmp_path / "w" / stray).write_bytes(b"\0" * 64)
    with pytest.raises(WeightsError, match=rf"{tmp_path / 'w'}: files not in checksums\.json: {re.escape(named)} "):
        load_tiny(tmp_path / "w")
    (tmp_path / "w" / "config.json").unlink()  # a listed file missing as well: both named, in one error
    with pytest.raises(WeightsError, match=rf"files are missing: config\.json .*; files not in .*{re.escape(named)}"):
        verify_checksums(tmp_path / "w")


def files_and_times(path: Path) -> dict[str, int]:
    return {p.relative_to(path).as_posix(): p.stat().st_mtime_ns for p in path.rglob("*")}


@pytest.mark.parametrize("outcome", ["loads", "fails_its_checksums", "does_not_fit", "fails_in_orbax"])
def test_loading_writes_nothing_inside_the_weights_directory(tmp_path, outcome):
    write_tiny(tmp_path / "w")
    chunk = tmp_path / "w" / PARAMS_DIR / "head.kernel" / "0.0"
    build = lambda: Tiny(nnx.Rngs(1))
    if outcome == "fails_its_checksums":
        chunk.write_bytes(chunk.read_bytes()[:-4])
    elif outcome == "does_not_fit":
        build = lambda: nnx.Linear(8, 16, rngs=nnx.Rngs(1))
    elif outcome == "fails_in_orbax":  # no checksums to catch it: orbax and tensorstore read the damaged file
        (tmp_path / "w" / CHECKSUMS_FILE).unlink()
        chunk.write_bytes(chunk.read_bytes()[:-4])
    before = files_and_times(tmp_path / "w")
    if outcome == "loads":
        load_module(tmp_path / "w", build)
    else:
        with pytest.raises(WeightsError):
            load_module(tmp_path / "w", build)
    assert files_and_times(tmp_path / "w") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w"]  # no side folder beside it either


def test_verification_hashes_once_per_directory(tmp_path, monkeypatch):
    write_tiny(tmp_path / "w")
    (tmp_path / "w" / "params" / "_METADATA").touch()  # not what the writer left: hash it again
    hashed = []
    original = weights._hash_files
    monkeypatch.setattr(weights, "_hash_files", lambda path, names: hashed.append(len(names)) or original(path, names))
    verify_checksums(tmp_path / "w")
    verify_checksums(tmp_path / "w")
    assert len(hashed) == 1 and hashed[0] > 4
    monkeypatch.setenv("MV2V_CACHE_DIR", "off")  # no cache: every call hashes
    verify_checksums(tmp_path / "w")
    assert len(hashed) == 2


def test_a_directory_without_checksums_loads_with_a_warning_until_they_are_added(tmp_path, caplog, capsys):
    write_tiny(tmp_path / "w")
    (tmp_path / "w" / CHECKSUMS_FILE).unlink()  # as written before weights carried checksums
    with caplog.at_level(logging.WARNING, logger="mv2v_jax.models.weights"):
        load_tiny(tmp_path / "w")
    (warning,) = caplog.messages
    assert f"{tmp_path / 'w'} has no checksums.json" in warning
    assert f"`python -m convert_weights.checksums {tmp_path / 'w'}` adds them" in warning
    params_before = {p: p.read_bytes() for p in (tmp_path / "w").rglob("*") if p.is_file()}
    assert checksums.main([str(tmp_path / "w")]) == 0
    assert all(p.read_bytes() == data for p, data in params_before.items())  # nothing rewritten
    assert checksums.main([str(tmp_path / "w")]) == 0  # a second run checks them
    assert "every file matches checksums.json" in capsys.readouterr().out
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mv2v_jax.models.weights"):
        load_tiny(tmp_path / "w")
    assert caplog.messages == []
    (tmp_path / "w" / PARAMS_DIR / "proj.bias" / "0").write_bytes(np.ones(16, np.float32).tobytes())
    assert checksums.main([str(tmp_path / "w")]) == 1
    assert "parameter proj/bias (params/proj.bias/0) fails its checksum" in capsys.readouterr().err


def test_checksums_are_not_added_to_a_directory_orbax_cannot_read(tmp_path, capsys):
    write_tiny(tmp_path / "w")
    (tmp_path / "w" / CHECKSUMS_FILE).unlink()
    (tmp_path / "w" / PARAMS_DIR / "head.bias" / ".zarray").unlink()
    assert checksums.main([str(tmp_path / "w")]) == 1
    assert "missing or damaged" in capsys.readouterr().err
    assert not (tmp_path / "w" / CHECKSUMS_FILE).exists()


def test_the_shipped_weights_match_their_checksums(monkeypatch):
    monkeypatch.setenv("MV2V_CACHE_DIR", "off")
    verify_checksums(REPO / "checkpoints" / "tiny_nvs")
    assert os.path.getsize(REPO / "checkpoints" / "tiny_nvs" / CHECKSUMS_FILE) > 0
