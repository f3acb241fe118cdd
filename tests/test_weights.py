"""Weights directories: orbax reads what the writer streams, writes are atomic, and converting a
checkpoint holds one tensor at a time in memory."""

import json
import subprocess
import sys
import textwrap

import jax
import ml_dtypes
import numpy as np
import orbax.checkpoint as ocp
import pytest

from mv2v_jax.models.weights import PARAMS_DIR, WeightsWriter, read_config


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
