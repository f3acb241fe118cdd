"""convert_weights.sources against torch and safetensors as references.

torch and safetensors are only used here, to write checkpoints and to provide the expected values; the
readers under test must not need them.
"""

import argparse
import json
import pickle
import struct
import tracemalloc
import zipfile
from collections import OrderedDict
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")

from convert_weights.sources import (  # noqa: E402
    CheckpointError,
    SafetensorsFile,
    TensorSource,
    TorchZipFile,
    open_tensor_file,
)

NUMPY_DTYPE = {
    torch.float32: np.dtype(np.float32),
    torch.float16: np.dtype(np.float16),
    torch.bfloat16: np.dtype(ml_dtypes.bfloat16),
    torch.int64: np.dtype(np.int64),
    torch.bool: np.dtype(np.bool_),
    torch.uint16: np.dtype(np.uint16),
    torch.float8_e4m3fn: np.dtype(ml_dtypes.float8_e4m3fn),
}


def reference_tensors() -> dict:
    """Every tested dtype, plus views whose storage is larger than the tensor or shared with others."""
    g = torch.Generator().manual_seed(0)
    big = torch.randn(4, 6, generator=g)
    bf = torch.randn(5, 4, generator=g).to(torch.bfloat16)
    ints = torch.randint(-(2**62), 2**62, (7,), generator=g, dtype=torch.int64)
    return {
        "f32": torch.randn(3, 5, generator=g),
        "f16": torch.randn(2, 3, generator=g).half(),
        "bf16": torch.randn(8, generator=g).to(torch.bfloat16),
        "i64": ints,
        "bool": torch.rand(3, 4, generator=g) > 0.5,
        "big": big,
        "big_slice": big[1:3, ::2],  # offset 6, strides (6, 2) into big's storage
        "big_row": big[3],  # shares big's storage
        "bf16_t": bf.t(),  # transposed: non-contiguous bf16
        "i64_tail": ints[2:],
        "bool_cols": (torch.rand(4, 5, generator=g) > 0.5)[:, 1::2],
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 3),
    }


def assert_same(arr: np.ndarray, ref) -> None:
    assert arr.shape == tuple(ref.shape)
    assert arr.dtype == NUMPY_DTYPE[ref.dtype]
    assert arr.flags.c_contiguous
    ref = ref.contiguous()
    if ref.dtype in (torch.bfloat16, torch.float16):  # compare bit patterns: exact, NaN-safe
        np.testing.assert_array_equal(arr.view(np.int16), ref.view(torch.int16).numpy())
    elif ref.dtype == torch.float8_e4m3fn:
        np.testing.assert_array_equal(arr.view(np.uint8), ref.view(torch.uint8).numpy())
    else:
        np.testing.assert_array_equal(arr, ref.numpy())


def assert_reads(source, refs: dict) -> None:
    for name, ref in refs.items():
        assert source.shape(name) == tuple(ref.shape), name
        assert source.dtype(name) == NUMPY_DTYPE[ref.dtype], name
        assert_same(source.read(name), ref)


def write_safetensors(path: Path, header: dict, data: bytes) -> Path:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


def save_safetensors(path: Path, tensors: dict, metadata: dict | None = None) -> Path:
    # safetensors refuses shared or non-contiguous tensors, so give each its own storage.
    safetensors_torch.save_file({k: v.contiguous().clone() for k, v in tensors.items()}, path, metadata)
    return path


# --- torch.save zip ------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["plain", "ordered", "state_dict", "model_with_extras"])
def test_torch_save_round_trip(tmp_path, layout):
    refs = reference_tensors()
    weights = {**refs, "param": torch.nn.Parameter(torch.randn(2, 2)), "step": 7, "nested": {"lr": 0.1}}
    obj = {
        "plain": weights,
        "ordered": OrderedDict(weights),
        "state_dict": {"state_dict": weights},
        "model_with_extras": {"model": weights, "epoch": 3, "optimizer": {"lr": 0.1}},
    }[layout]
    path = tmp_path / "ckpt.pt"
    torch.save(obj, path)

    f = open_tensor_file(path)
    assert isinstance(f, TorchZipFile)
    assert f.names() == [*refs, "param"]  # pickle order, non-tensors skipped
    assert_reads(f, refs)
    assert_same(f.read("param"), weights["param"].detach())


def test_torch_save_shared_storage_is_one_record(tmp_path):
    refs = reference_tensors()
    path = tmp_path / "shared.pth"
    torch.save({"big": refs["big"], "big_slice": refs["big_slice"], "big_row": refs["big_row"]}, path)
    records = [n for n in zipfile.ZipFile(path).namelist() if "/data/" in n]
    assert len(records) == 1  # all three views read from the same 4x6 storage
    f = TorchZipFile(path)
    assert_reads(f, {k: refs[k] for k in ("big", "big_slice", "big_row")})


def test_torch_save_newer_dtypes(tmp_path):
    # float8 and uint16 are written as untyped byte storage plus an explicit dtype (_rebuild_tensor_v3).
    g = torch.Generator().manual_seed(1)
    refs = {
        "f8": torch.randn(4, 3, generator=g).to(torch.float8_e4m3fn),
        "u16": torch.randint(0, 2**16, (6,), generator=g, dtype=torch.int32).to(torch.uint16),
    }
    refs["f8_cols"] = refs["f8"][:, 1:]
    torch.save(refs, tmp_path / "new.bin")
    assert_reads(open_tensor_file(tmp_path / "new.bin"), refs)


def test_contiguous_reads_are_zero_copy(tmp_path):
    refs = reference_tensors()
    torch.save(refs, tmp_path / "a.pt")
    torch_file = TorchZipFile(tmp_path / "a.pt")
    st_file = SafetensorsFile(save_safetensors(tmp_path / "a.safetensors", refs))
    for f in (torch_file, st_file):
        assert not f.read("f32").flags.writeable  # a view of the mapped file, not a copy
    assert torch_file.read("big_slice").flags.writeable  # strided view: gathered into a fresh array


# --- safetensors ---------------------------------------------------------------------------------------


def test_safetensors_round_trip(tmp_path):
    refs = reference_tensors()
    path = save_safetensors(tmp_path / "model.safetensors", refs, metadata={"format": "pt"})
    f = open_tensor_file(path)
    assert isinstance(f, SafetensorsFile)
    assert sorted(f.names()) == sorted(refs)  # "__metadata__" is not a tensor
    assert_reads(f, refs)


def test_safetensors_float8(tmp_path):
    refs = {"f8": torch.randn(3, 4).to(torch.float8_e4m3fn)}
    assert_reads(SafetensorsFile(save_safetensors(tmp_path / "f8.safetensors", refs)), refs)


# --- folders -------------------------------------------------------------------------------------------


def write_sharded(folder: Path, refs: dict) -> dict:
    folder.mkdir()
    names = sorted(refs)
    shards = {"diffusion_pytorch_model-00001-of-00002.safetensors": names[::2]}
    shards["diffusion_pytorch_model-00002-of-00002.safetensors"] = names[1::2]
    weight_map = {}
    for shard, shard_names in shards.items():
        save_safetensors(folder / shard, {n: refs[n] for n in shard_names})
        weight_map.update(dict.fromkeys(shard_names, shard))
    index = {"metadata": {"total_size": 0}, "weight_map": weight_map}
    (folder / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(index))
    return weight_map


def test_sharded_folder_with_index(tmp_path):
    refs = reference_tensors()
    folder = tmp_path / "transformer"
    weight_map = write_sharded(folder, refs)
    (folder / "config.json").write_text("{}")
    for source in (
        TensorSource(folder),
        TensorSource(folder / "diffusion_pytorch_model.safetensors.index.json"),
    ):
        assert len(source.files) == 2
        assert sorted(source.names()) == sorted(refs)
        assert_reads(source, refs)
        for name, shard in weight_map.items():
            assert source.file_of(name) == folder / shard


def test_folder_without_index(tmp_path):
    refs = reference_tensors()
    names = list(refs)
    st = tmp_path / "st"
    st.mkdir()
    save_safetensors(st / "b.safetensors", {n: refs[n] for n in names[:5]})
    save_safetensors(st / "a.safetensors", {n: refs[n] for n in names[5:]})
    torch.save({"ignored": torch.zeros(1)}, st / "ignored.pt")  # safetensors files take precedence
    source = TensorSource(st)
    assert [f.path.name for f in source.files] == ["a.safetensors", "b.safetensors"]
    assert sorted(source.names()) == sorted(refs)
    assert_reads(source, refs)

    pt = tmp_path / "pt"
    pt.mkdir()
    torch.save({n: refs[n] for n in names[:5]}, pt / "part1.pth")
    torch.save({"state_dict": {n: refs[n] for n in names[5:]}}, pt / "part2.bin")
    source = TensorSource(pt)
    assert source.names() == names
    assert source.file_of(names[0]) == pt / "part1.pth"
    assert_reads(source, refs)


def test_single_file_source(tmp_path):
    refs = reference_tensors()
    torch.save(refs, tmp_path / "one.ckpt")
    source = TensorSource(tmp_path / "one.ckpt")
    assert source.names() == list(refs)
    assert source.file_of("f32") == tmp_path / "one.ckpt"
    assert_reads(source, refs)


# --- memory --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["safetensors", "pt"])
def test_read_one_tensor_does_not_load_the_others(tmp_path, fmt):
    tensors = {f"w{i}": torch.full((1024, 1024), float(i)) for i in range(16)}  # 16 x 4 MB = 64 MB
    path = tmp_path / f"big.{fmt}"
    if fmt == "pt":
        torch.save(tensors, path)
    else:
        save_safetensors(path, tensors)
    assert path.stat().st_size > 64e6

    tracemalloc.start()
    try:
        arr = np.array(open_tensor_file(path).read("w5"))  # force a private copy: counts the 4 MB once
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 12e6, f"peak {peak / 1e6:.1f} MB reading a 4 MB tensor from a 64 MB file"
    assert arr.shape == (1024, 1024) and np.all(arr == 5.0)


# --- errors --------------------------------------------------------------------------------------------


def assert_error(fn, *needles: str) -> None:
    with pytest.raises(CheckpointError) as info:
        fn()
    for needle in needles:
        assert needle in str(info.value), (needle, str(info.value))


def test_missing_path(tmp_path):
    assert_error(lambda: TensorSource(tmp_path / "nope.safetensors"), "nope.safetensors")
    assert_error(lambda: open_tensor_file(tmp_path / "nope.safetensors"), "nope.safetensors")
    assert_error(lambda: open_tensor_file(tmp_path / "nope.pt"), "nope.pt")


def test_unknown_suffix_and_empty_folder(tmp_path):
    (tmp_path / "weights.npz").write_bytes(b"x")
    assert_error(lambda: open_tensor_file(tmp_path / "weights.npz"), "weights.npz", "suffix")
    assert_error(lambda: TensorSource(tmp_path), str(tmp_path), "*.safetensors", "*.pth")


def test_corrupt_safetensors(tmp_path):
    good = save_safetensors(tmp_path / "good.safetensors", {"w": torch.ones(4, 4)}).read_bytes()
    cases = {
        "empty.safetensors": (b"", "empty"),
        "short.safetensors": (b"\x01\x02", "truncated"),
        "huge_header.safetensors": (struct.pack("<Q", 1 << 40) + b"{}", "header length"),
        "bad_json.safetensors": (struct.pack("<Q", 5) + b"{oops", "JSON"),
        "truncated.safetensors": (good[:-10], "outside"),
    }
    for name, (data, problem) in cases.items():
        (tmp_path / name).write_bytes(data)
        assert_error(lambda name=name: SafetensorsFile(tmp_path / name), name, problem)

    wrong_size = {"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 12]}}
    write_safetensors(tmp_path / "wrong_size.safetensors", wrong_size, bytes(16))
    assert_error(lambda: SafetensorsFile(tmp_path / "wrong_size.safetensors"), "wrong_size.safetensors", "12")
    bad_dtype = {"w": {"dtype": "F8_E8M0", "shape": [4], "data_offsets": [0, 4]}}
    write_safetensors(tmp_path / "bad_dtype.safetensors", bad_dtype, bytes(4))
    assert_error(lambda: SafetensorsFile(tmp_path / "bad_dtype.safetensors"), "bad_dtype", "unsupported dtype")
    malformed = {"w": {"dtype": "F32", "shape": [1]}}
    write_safetensors(tmp_path / "malformed.safetensors", malformed, bytes(4))
    assert_error(lambda: SafetensorsFile(tmp_path / "malformed.safetensors"), "malformed.safetensors")


def test_corrupt_torch_zip(tmp_path):
    path = tmp_path / "good.pt"
    torch.save({"w": torch.ones(256)}, path)
    data = path.read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    assert_error(lambda: TorchZipFile(tmp_path / "truncated.pt"), "truncated.pt", "zip")
    (tmp_path / "garbage.pt").write_bytes(b"PK" + bytes(100))
    assert_error(lambda: TorchZipFile(tmp_path / "garbage.pt"), "garbage.pt", "zip")
    (tmp_path / "text.pt").write_bytes(b"hello")
    assert_error(lambda: TorchZipFile(tmp_path / "text.pt"), "text.pt", "not a zip")


def test_truncated_storage_record(tmp_path):
    # A zip whose data.pkl promises more elements than its record holds.
    path = tmp_path / "short_record.pt"
    torch.save({"w": torch.ones(8)}, path)
    with zipfile.ZipFile(path) as zf:
        entries = {n: zf.read(n) for n in zf.namelist()}
    record = next(n for n in entries if n.endswith("/data/0"))
    entries[record] = entries[record][:16]
    with zipfile.ZipFile(path, "w") as zf:
        for n, d in entries.items():
            zf.writestr(n, d)
    assert_error(lambda: TorchZipFile(path), "short_record.pt", "bytes")


def test_legacy_torch_format(tmp_path):
    path = tmp_path / "legacy.pth"
    torch.save({"w": torch.ones(2)}, path, _use_new_zipfile_serialization=False)
    assert_error(lambda: open_tensor_file(path), "legacy.pth", "legacy", "re-save")


def test_disallowed_pickle_class(tmp_path):
    path = tmp_path / "with_args.pt"
    torch.save({"w": torch.ones(2), "args": argparse.Namespace(lr=0.1)}, path)
    assert_error(lambda: open_tensor_file(path), "with_args.pt", "argparse.Namespace")


class _Exploit:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickle_cannot_run_code(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("evil/data.pkl", pickle.dumps({"w": _Exploit()}, protocol=2))
    assert_error(lambda: open_tensor_file(path), "evil.pt", "print")  # protocol 2 spells it __builtin__
    assert "must never run" not in capsys.readouterr().out


def test_unknown_tensor_name(tmp_path):
    refs = {"w": torch.ones(2)}
    torch.save(refs, tmp_path / "a.pt")
    save_safetensors(tmp_path / "a.safetensors", refs)
    for f in (open_tensor_file(tmp_path / "a.pt"), open_tensor_file(tmp_path / "a.safetensors")):
        for method in (f.read, f.shape, f.dtype):
            assert_error(lambda method=method: method("missing"), "missing", f.path.name)
    source = TensorSource(tmp_path / "a.safetensors")
    for method in (source.read, source.shape, source.dtype, source.file_of):
        assert_error(lambda method=method: method("missing"), "missing", "a.safetensors")


def test_duplicate_tensor_across_files(tmp_path):
    save_safetensors(tmp_path / "one.safetensors", {"w": torch.ones(2)})
    save_safetensors(tmp_path / "two.safetensors", {"w": torch.zeros(2)})
    assert_error(lambda: TensorSource(tmp_path), "'w'", "one.safetensors", "two.safetensors")


def test_index_errors(tmp_path):
    refs = reference_tensors()
    folder = tmp_path / "missing_shard"
    weight_map = write_sharded(folder, refs)
    shard = weight_map["f32"]
    (folder / shard).unlink()
    assert_error(lambda: TensorSource(folder), shard, "missing")

    folder = tmp_path / "absent_tensor"
    weight_map = write_sharded(folder, refs)
    weight_map["ghost"] = weight_map["f32"]
    index = folder / "diffusion_pytorch_model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    assert_error(lambda: TensorSource(folder), "'ghost'", weight_map["f32"])

    index.write_text("{not json")
    assert_error(lambda: TensorSource(folder), index.name)
