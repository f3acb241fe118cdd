"""Read PyTorch checkpoints tensor by tensor, without torch; or a state dict already in memory.

Why this exists: the weight converters run in the JAX environment, which has neither torch nor the
safetensors package, and Wan checkpoints are tens of GB. Loading a whole state dict would need that much
RAM, so these readers parse the two on-disk formats themselves with numpy, memory-map the file, and hand
out one tensor at a time: a converter's peak memory stays near its largest tensor.

Why not the libraries: torch (a 2 GB install, and `torch.load` builds every tensor) is a test
reference only, never a dependency of the library. `safetensors.safe_open` cannot stand in for the
safetensors reader either: its NumPy backend refuses bfloat16 and float8 tensors ("data type 'bfloat16'
not understood"; Wan's releases are bfloat16), its Flax backend copies every tensor through a JAX
device and refuses float8 too, and it exposes no data offsets through which a shim could read the raw
bytes, so a shim would have to parse the header itself, which is all this reader does.
tests/test_sources.py checks both readers against torch and safetensors.

Formats:

- ``.safetensors``: 8-byte little-endian header length, a JSON header, then raw little-endian data.
- ``.pth`` / ``.pt`` / ``.ckpt`` / ``.bin`` written by ``torch.save`` in its zip format (the default since
  torch 1.6): ``<prefix>/data.pkl`` describes the tensors and ``<prefix>/data/<key>`` holds each storage,
  uncompressed. The pickle is loaded with a restricted unpickler that only knows the handful of globals a
  state dict uses, so opening a checkpoint cannot run code. The top-level object must be a dict of tensors.
  A dict that holds no tensors itself but has exactly one of the keys ``state_dict``, ``model`` or
  ``module`` whose value is a dict (the usual training-checkpoint layout) is unwrapped to that inner dict.
  Values that are not tensors (step counters, nested dicts, ...) are skipped. Legacy pre-1.6 (non-zip)
  files are rejected with a hint to re-save them.
- a folder: sharded safetensors with a ``*.safetensors.index.json``, or every checkpoint file in it.

``read`` returns the tensor in its stored dtype (bfloat16 as ``ml_dtypes.bfloat16``), C-contiguous; when
the stored tensor is already contiguous the array is a read-only view of the mapped file (no copy).
The host is assumed to be little-endian, like the files.
"""

from __future__ import annotations

import abc
import codecs
import collections
import io
import json
import math
import mmap
import os
import pickle
import struct
import sys
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import ml_dtypes
import numpy as np


class CheckpointError(ValueError):
    """A checkpoint file or folder that cannot be read; the message names the file and the problem."""


# Torch dtype names (as they appear in pickles, e.g. ``torch bfloat16``) -> numpy dtypes.
_TORCH_DTYPES: dict[str, np.dtype] = {
    name: np.dtype(scalar)
    for name, scalar in {
        "float64": np.float64,
        "float32": np.float32,
        "float16": np.float16,
        "bfloat16": ml_dtypes.bfloat16,
        "int64": np.int64,
        "int32": np.int32,
        "int16": np.int16,
        "int8": np.int8,
        "uint64": np.uint64,
        "uint32": np.uint32,
        "uint16": np.uint16,
        "uint8": np.uint8,
        "bool": np.bool_,
        "complex128": np.complex128,
        "complex64": np.complex64,
        "float8_e4m3fn": ml_dtypes.float8_e4m3fn,
        "float8_e5m2": ml_dtypes.float8_e5m2,
        "float8_e4m3fnuz": ml_dtypes.float8_e4m3fnuz,
        "float8_e5m2fnuz": ml_dtypes.float8_e5m2fnuz,
    }.items()
}

# Typed-storage classes torch.save writes for the classic dtypes. Newer dtypes (float8, uint16, ...) are
# saved as raw bytes (UntypedStorage) plus an explicit dtype via _rebuild_tensor_v3.
_TORCH_STORAGES: dict[str, str] = {
    "DoubleStorage": "float64",
    "FloatStorage": "float32",
    "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16",
    "LongStorage": "int64",
    "IntStorage": "int32",
    "ShortStorage": "int16",
    "CharStorage": "int8",
    "ByteStorage": "uint8",
    "BoolStorage": "bool",
    "ComplexDoubleStorage": "complex128",
    "ComplexFloatStorage": "complex64",
    "UntypedStorage": "uint8",
}

_SAFETENSORS_DTYPES: dict[str, str] = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U64": "uint64",
    "U32": "uint32",
    "U16": "uint16",
    "U8": "uint8",
    "BOOL": "bool",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
}

_TORCH_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")
_INDEX_SUFFIX = ".safetensors.index.json"
_WRAPPER_KEYS = ("state_dict", "model", "module")


def _map_file(path: Path, kind: str) -> mmap.mmap:
    """Map ``path`` read-only; the mapping outlives the file descriptor, so no handle stays open."""
    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size == 0:  # mmap refuses empty files
                raise CheckpointError(f"{path}: empty file, not a {kind}")
            return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot open ({e.strerror or e})") from None


def _contiguous(arr: np.ndarray) -> np.ndarray:
    # Copies only when the view is strided or misaligned; otherwise stays a zero-copy view of the mapping.
    return np.require(arr, requirements=("C", "A"))


class Tensors(Protocol):
    """What a converter reads: named tensors with their shapes and dtypes, read one at a time."""

    def names(self) -> list[str]: ...

    def shape(self, name: str) -> tuple[int, ...]: ...

    def dtype(self, name: str) -> np.dtype: ...

    def read(self, name: str) -> np.ndarray: ...


class StateDict:
    """A state dict in memory as a tensor source: `{name: array}`, NumPy arrays or anything `np.asarray`
    turns into one without copying (CPU torch tensors in float32 / float16: `{k: v.float().numpy()}`
    for bfloat16 ones, which NumPy has no dtype for)."""

    def __init__(self, state_dict: Mapping[str, Any]) -> None:
        self._arrays = {name: np.asarray(value) for name, value in state_dict.items()}

    def names(self) -> list[str]:
        return list(self._arrays)

    def shape(self, name: str) -> tuple[int, ...]:
        return self._arrays[name].shape

    def dtype(self, name: str) -> np.dtype:
        return self._arrays[name].dtype

    def read(self, name: str) -> np.ndarray:
        return np.ascontiguousarray(self._arrays[name])


class TensorFile(abc.ABC):
    """One checkpoint file: tensor metadata is parsed up front, tensor data is read on demand."""

    path: Path
    _entries: dict[str, Any]  # name -> format-specific entry with .shape and .dtype, in file order

    def names(self) -> list[str]:
        """Tensor names in file order."""
        return list(self._entries)

    def shape(self, name: str) -> tuple[int, ...]:
        return self._entry(name).shape

    def dtype(self, name: str) -> np.dtype:
        return self._entry(name).dtype

    @abc.abstractmethod
    def read(self, name: str) -> np.ndarray:
        """Only tensor ``name``, C-contiguous, in its stored dtype (possibly a read-only view)."""

    def _entry(self, name: str) -> Any:
        try:
            return self._entries[name]
        except KeyError:
            raise CheckpointError(f"{self.path}: no tensor named {name!r}") from None


class _SafetensorsEntry(NamedTuple):
    dtype: np.dtype
    shape: tuple[int, ...]
    start: int  # absolute byte offset of the data in the file


class SafetensorsFile(TensorFile):
    """A ``.safetensors`` file, memory-mapped."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._map = _map_file(self.path, "safetensors file")
        size = len(self._map)
        if size < 8:
            raise CheckpointError(f"{self.path}: truncated safetensors file ({size} bytes, no header)")
        (header_len,) = struct.unpack_from("<Q", self._map, 0)
        data_start = 8 + header_len
        if data_start > size:
            raise CheckpointError(
                f"{self.path}: header length {header_len} exceeds the file size {size} "
                "(truncated, or not a safetensors file)"
            )
        try:
            header = json.loads(self._map[8:data_start])
        except ValueError as e:  # covers JSONDecodeError and UnicodeDecodeError
            raise CheckpointError(f"{self.path}: safetensors header is not valid JSON ({e})") from None
        if not isinstance(header, dict):
            raise CheckpointError(f"{self.path}: safetensors header is not a JSON object")
        entries = [
            (name, self._parse_entry(name, info, data_start, size))
            for name, info in header.items()
            if name != "__metadata__"
        ]
        entries.sort(key=lambda item: item[1].start)  # file order = order of the data (stable for ties)
        self._entries = dict(entries)

    def _parse_entry(self, name: str, info: Any, data_start: int, size: int) -> _SafetensorsEntry:
        try:
            dtype_name, shape, (begin, end) = info["dtype"], tuple(info["shape"]), info["data_offsets"]
        except (TypeError, KeyError, ValueError):
            raise CheckpointError(f"{self.path}: malformed header entry for {name!r}: {info!r}") from None
        if not all(isinstance(v, int) and v >= 0 for v in (*shape, begin, end)):
            raise CheckpointError(f"{self.path}: malformed header entry for {name!r}: {info!r}")
        if dtype_name not in _SAFETENSORS_DTYPES:
            raise CheckpointError(f"{self.path}: tensor {name!r} has unsupported dtype {dtype_name!r}")
        dtype = _TORCH_DTYPES[_SAFETENSORS_DTYPES[dtype_name]]
        if not begin <= end <= size - data_start:
            raise CheckpointError(
                f"{self.path}: tensor {name!r} data offsets [{begin}, {end}] lie outside the "
                f"{size - data_start}-byte data section (truncated file?)"
            )
        expected = math.prod(shape) * dtype.itemsize
        if end - begin != expected:
            raise CheckpointError(
                f"{self.path}: tensor {name!r} has {end - begin} bytes of data, but shape {list(shape)} "
                f"of {dtype_name} needs {expected}"
            )
        return _SafetensorsEntry(dtype, shape, data_start + begin)

    def read(self, name: str) -> np.ndarray:
        e = self._entry(name)
        flat = np.frombuffer(self._map, e.dtype, count=math.prod(e.shape), offset=e.start)
        return _contiguous(flat.reshape(e.shape))


class _StorageRef(NamedTuple):
    """What torch.save's persistent id names: one storage record in the zip."""

    key: str
    dtype: np.dtype
    numel: int


class _LazyTensor(NamedTuple):
    """A tensor as the pickle describes it; offset and stride are in elements of ``dtype``."""

    storage: _StorageRef
    dtype: np.dtype
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


def _lazy_tensor(storage: Any, dtype: Any, offset: Any, size: Any, stride: Any) -> _LazyTensor:
    # Type errors here surface as "cannot unpickle" for the file; shapes are range-checked once the
    # storage record sizes are known (TorchZipFile._check_view).
    if not (isinstance(storage, _StorageRef) and isinstance(dtype, np.dtype)):
        raise TypeError(f"tensor rebuilt from {storage!r} with dtype {dtype!r}")
    return _LazyTensor(storage, dtype, offset, tuple(size), tuple(stride))


def _rebuild_tensor_v2(
    storage: _StorageRef, offset: int, size: tuple, stride: tuple, *_requires_grad_hooks_metadata: Any
) -> _LazyTensor:
    return _lazy_tensor(storage, getattr(storage, "dtype", None), offset, size, stride)


def _rebuild_tensor_v3(
    storage: _StorageRef,
    offset: int,
    size: tuple,
    stride: tuple,
    _requires_grad: bool,
    _backward_hooks: Any,
    dtype: np.dtype,
    *_metadata: Any,
) -> _LazyTensor:
    return _lazy_tensor(storage, dtype, offset, size, stride)


def _rebuild_parameter(data: _LazyTensor, *_requires_grad_hooks_state: Any) -> _LazyTensor:
    return data  # an nn.Parameter is just its data here


# Every callable a state-dict pickle may reference; anything else is refused by _Unpickler.find_class.
_PICKLE_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch.storage", "UntypedStorage"): _TORCH_DTYPES["uint8"],
    ("torch", "Size"): tuple,
    ("_codecs", "encode"): codecs.encode,  # protocol-2 pickles spell bytes as _codecs.encode(str, "latin1")
}


class _Unpickler(pickle.Unpickler):
    """Unpickles data.pkl into _LazyTensor descriptors without importing torch or running foreign code."""

    def __init__(self, data: bytes, path: Path) -> None:
        super().__init__(io.BytesIO(data))
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _PICKLE_GLOBALS:
            return _PICKLE_GLOBALS[(module, name)]
        if module == "torch" and name in _TORCH_STORAGES:
            return _TORCH_DTYPES[_TORCH_STORAGES[name]]  # a storage class only conveys its element dtype
        if module == "torch" and name in _TORCH_DTYPES:
            return _TORCH_DTYPES[name]
        raise CheckpointError(
            f"{self._path}: data.pkl references {module}.{name}, which is not allowed in a weights file "
            "(only state-dict contents are supported)"
        )

    def persistent_load(self, pid: Any) -> _StorageRef:
        match pid:
            case ("storage", np.dtype() as dtype, str(key), str(_location), int(numel)):
                return _StorageRef(key, dtype, numel)
        raise CheckpointError(f"{self._path}: unsupported storage reference {pid!r} in data.pkl")


class _Record(NamedTuple):
    """A storage record in the zip; ``start`` is its data offset in the file, None if compressed."""

    name: str
    start: int | None
    nbytes: int


class _TorchEntry(NamedTuple):
    dtype: np.dtype
    shape: tuple[int, ...]
    offset: int  # in elements of dtype, like stride
    stride: tuple[int, ...]
    record: _Record


class TorchZipFile(TensorFile):
    """A ``torch.save`` zip checkpoint; storages are read lazily from the memory-mapped archive."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._map = _map_file(self.path, "torch checkpoint")
        if self._map[:2] != b"PK":
            if self._map[:1] == b"\x80":  # the legacy format is a bare sequence of pickles
                raise CheckpointError(
                    f"{self.path}: legacy (pre-1.6, non-zip) torch checkpoint format is not supported; "
                    "re-save it with a recent torch.save"
                )
            raise CheckpointError(f"{self.path}: not a zip archive, so not a torch.save checkpoint")
        try:
            with zipfile.ZipFile(self.path) as zf:
                infos = {info.filename: info for info in zf.infolist()}
                pkl = self._find_pickle(infos)
                prefix = pkl.removesuffix("data.pkl")
                byteorder = zf.read(prefix + "byteorder").decode() if prefix + "byteorder" in infos else None
                data = zf.read(pkl)
        except (zipfile.BadZipFile, OSError, EOFError, struct.error) as e:
            raise CheckpointError(f"{self.path}: corrupt or truncated zip archive ({e})") from None
        if byteorder not in (None, sys.byteorder):
            raise CheckpointError(f"{self.path}: saved on a {byteorder}-endian machine, which is unsupported")
        try:
            obj = _Unpickler(data, self.path).load()
        except CheckpointError:
            raise
        except Exception as e:  # a broken pickle can fail in many ways; all mean the same to the caller
            raise CheckpointError(f"{self.path}: cannot unpickle {pkl} ({type(e).__name__}: {e})") from None
        self._entries = {}
        for name, t in self._state_dict(obj).items():
            record = self._record(infos, prefix, t.storage)
            self._check_view(name, t, record)
            self._entries[name] = _TorchEntry(t.dtype, t.shape, t.offset, t.stride, record)

    def _find_pickle(self, infos: dict[str, zipfile.ZipInfo]) -> str:
        found = [n for n in infos if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(found) != 1:
            raise CheckpointError(f"{self.path}: expected one <prefix>/data.pkl in the zip, found {found}")
        return found[0]

    def _state_dict(self, obj: Any) -> dict[str, _LazyTensor]:
        if not isinstance(obj, dict):
            raise CheckpointError(f"{self.path}: top-level object is a {type(obj).__name__}, not a dict")
        if not any(isinstance(v, _LazyTensor) for v in obj.values()):
            wrapped = [k for k in _WRAPPER_KEYS if isinstance(obj.get(k), dict)]
            if len(wrapped) > 1:
                raise CheckpointError(f"{self.path}: ambiguous checkpoint, several state dicts under {wrapped}")
            if wrapped:
                obj = obj[wrapped[0]]
        tensors = {}
        for name, value in obj.items():
            if isinstance(value, _LazyTensor):
                if not isinstance(name, str):
                    raise CheckpointError(f"{self.path}: tensor under non-string key {name!r}")
                tensors[name] = value
        return tensors

    def _record(self, infos: dict[str, zipfile.ZipInfo], prefix: str, storage: _StorageRef) -> _Record:
        name = f"{prefix}data/{storage.key}"
        info = infos.get(name)
        if info is None:
            raise CheckpointError(f"{self.path}: storage record {name} is missing from the zip")
        nbytes = storage.numel * storage.dtype.itemsize
        if info.file_size < nbytes:
            raise CheckpointError(
                f"{self.path}: storage record {name} holds {info.file_size} bytes, data.pkl expects {nbytes}"
            )
        if info.compress_type != zipfile.ZIP_STORED:
            return _Record(name, None, nbytes)  # torch never compresses, but a re-zipped file might
        # The data follows the local header, whose extra field (torch pads it for alignment) can differ
        # from the central directory's copy, so read the lengths from the local header itself.
        header_end = info.header_offset + 30
        if header_end > len(self._map):
            raise CheckpointError(f"{self.path}: zip local header of {name} lies past the end of the file")
        signature, name_len, extra_len = struct.unpack_from("<4s22xHH", self._map, info.header_offset)
        start = header_end + name_len + extra_len
        if signature != b"PK\x03\x04" or start + nbytes > len(self._map):
            raise CheckpointError(f"{self.path}: corrupt or truncated zip entry {name}")
        return _Record(name, start, nbytes)

    def _check_view(self, name: str, t: _LazyTensor, record: _Record) -> None:
        """Reject descriptors that would read outside their storage, before as_strided can."""
        ints = (t.offset, *t.shape, *t.stride)
        if len(t.shape) != len(t.stride) or not all(isinstance(v, int) and v >= 0 for v in ints):
            raise CheckpointError(f"{self.path}: malformed tensor {name!r} in data.pkl")
        numel = record.nbytes // t.dtype.itemsize
        last = t.offset + sum((n - 1) * s for n, s in zip(t.shape, t.stride, strict=True))
        if t.offset > numel or (math.prod(t.shape) > 0 and last >= numel):
            raise CheckpointError(
                f"{self.path}: tensor {name!r} (offset {t.offset}, shape {t.shape}, stride {t.stride}) "
                f"reaches past its {numel}-element storage {record.name}"
            )

    def read(self, name: str) -> np.ndarray:
        t = self._entry(name)
        record = t.record
        count = record.nbytes // t.dtype.itemsize
        if record.start is None:
            try:
                with zipfile.ZipFile(self.path) as zf:
                    storage = np.frombuffer(zf.read(record.name), t.dtype, count=count)
            except (zipfile.BadZipFile, OSError, EOFError) as e:
                raise CheckpointError(f"{self.path}: cannot read {record.name} ({e})") from None
        else:
            storage = np.frombuffer(self._map, t.dtype, count=count, offset=record.start)
        strides = tuple(s * t.dtype.itemsize for s in t.stride)
        view = np.lib.stride_tricks.as_strided(storage[t.offset :], t.shape, strides, writeable=False)
        return _contiguous(view)


def open_tensor_file(path: str | os.PathLike[str]) -> TensorFile:
    """Open one checkpoint file, choosing the reader by suffix."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        return SafetensorsFile(path)
    if suffix in _TORCH_SUFFIXES:
        return TorchZipFile(path)
    raise CheckpointError(
        f"{path}: unknown checkpoint suffix {suffix!r}; expected .safetensors, {', '.join(_TORCH_SUFFIXES)}"
    )


class TensorSource:
    """All tensors of a checkpoint: a folder or a single file.

    A folder is read through its ``*.safetensors.index.json`` if it has one (the path of an index file
    works too), else as all its ``*.safetensors`` files, else as all its torch files. Every tensor name
    must live in exactly one file.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise CheckpointError(f"{self.path}: no such file or folder")
        index = self._find_index()
        shard_of = self._read_index(index) if index is not None else {}  # tensor name -> its shard
        if index is not None:
            self.files: list[TensorFile] = [open_tensor_file(p) for p in sorted(set(shard_of.values()))]
        elif self.path.is_dir():
            self.files = [open_tensor_file(p) for p in self._folder_files()]
        else:
            self.files = [open_tensor_file(self.path)]

        self._file_of: dict[str, TensorFile] = {}
        for f in self.files:
            for name in f.names():
                other = self._file_of.setdefault(name, f)
                if other is not f:
                    raise CheckpointError(f"{self.path}: tensor {name!r} is in both {other.path} and {f.path}")
        for name, shard in shard_of.items():
            f = self._file_of.get(name)
            if f is None or f.path != shard:
                raise CheckpointError(f"{index}: lists {name!r} in {shard.name}, but that shard lacks it")

    def _find_index(self) -> Path | None:
        if not self.path.is_dir():
            return self.path if self.path.name.endswith(_INDEX_SUFFIX) else None
        indexes = sorted(self.path.glob("*" + _INDEX_SUFFIX))
        if len(indexes) > 1:
            names = ", ".join(p.name for p in indexes)
            raise CheckpointError(f"{self.path}: several index files ({names}); pass the path of one")
        return indexes[0] if indexes else None

    @staticmethod
    def _read_index(index: Path) -> dict[str, Path]:
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise CheckpointError(f"{index}: unreadable index file ({type(e).__name__}: {e})") from None
        if not (isinstance(weight_map, dict) and all(isinstance(v, str) for v in weight_map.values())):
            raise CheckpointError(f"{index}: weight_map is not a mapping of tensor name to shard file")
        shard_of = {name: index.parent / shard for name, shard in weight_map.items()}
        for shard in set(shard_of.values()):
            if not shard.is_file():
                raise CheckpointError(f"{index}: shard {shard.name} named in the index is missing ({shard})")
        return shard_of

    def _folder_files(self) -> list[Path]:
        for suffixes in ((".safetensors",), _TORCH_SUFFIXES):
            found = sorted(p for p in self.path.iterdir() if p.is_file() and p.suffix.lower() in suffixes)
            if found:
                return found
        raise CheckpointError(
            f"{self.path}: no checkpoint found; looked for *{_INDEX_SUFFIX}, *.safetensors, "
            + ", ".join("*" + s for s in _TORCH_SUFFIXES)
        )

    def names(self) -> list[str]:
        """Tensor names, file by file in file order."""
        return list(self._file_of)

    def shape(self, name: str) -> tuple[int, ...]:
        return self._file(name).shape(name)

    def dtype(self, name: str) -> np.dtype:
        return self._file(name).dtype(name)

    def read(self, name: str) -> np.ndarray:
        return self._file(name).read(name)

    def file_of(self, name: str) -> Path:
        return self._file(name).path

    def _file(self, name: str) -> TensorFile:
        try:
            return self._file_of[name]
        except KeyError:
            raise CheckpointError(
                f"{self.path}: no tensor named {name!r} in {len(self.files)} checkpoint file(s)"
            ) from None
