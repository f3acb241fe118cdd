"""The converted-weights directory: how model parameters live on disk.

A weights directory holds `config.json` (the model's architecture config plus provenance) and
`params/`, an orbax checkpoint of the parameter tree (nested dicts of arrays, the same paths as the
model's `nnx.State`). Converters write it one tensor at a time (`WeightsWriter`), so converting a
14B model needs memory for one stacked tensor, not the model; `load_module` restores it straight
into the sharded layout of the current mesh, so no device ever holds the full model unless asked.

A directory appears complete or not at all: it is written under a temporary name and renamed.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import jax
import numpy as np
from etils import epath
from flax import nnx, traverse_util

from mv2v_jax.io.atomic import atomic_output, fsync_path
from mv2v_jax.parallel.mesh import DEFAULT_RULES, state_shardings

CONFIG_FILE = "config.json"
PARAMS_DIR = "params"
FORMAT_VERSION = 1

M = TypeVar("M", bound=nnx.Module)


class WeightsError(ValueError):
    """A weights directory that does not match the model it should fill."""


def nest_paths(flat: Mapping[tuple[str, ...], Any]) -> dict:
    """`{path: leaf}` -> nested dicts (flax's `unflatten_dict`)."""
    return traverse_util.unflatten_dict(flat)


def flatten_paths(tree: dict) -> dict[tuple[str, ...], Any]:
    """Nested dicts -> `{path: leaf}` (flax's `flatten_dict`) with every key as text: list indices in a
    pure dict (`nnx.to_pure_dict` of the VAE's blocks) are ints, names on disk and in converter rules are not."""
    return {tuple(map(str, path)): leaf for path, leaf in traverse_util.flatten_dict(tree).items()}


def write_json_atomic(path: Path, data: Any) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True))


class WeightsWriter:
    """Writes a weights directory parameter by parameter; nothing appears at `path` until `commit`.

    `params/` is an orbax checkpoint in its plain zarr layout (one zarr array per parameter, named by
    its '.'-joined path, plus orbax's `_METADATA`), written here with tensorstore so that a stacked
    parameter can be filled one layer at a time: converting needs memory for one source tensor.
    Orbax restores it like any checkpoint it wrote itself (tests/test_weights.py checks that).

    Usage::

        with WeightsWriter(out_dir) as writer:
            writer.write(("head", "proj", "kernel"), array)
            layers = writer.create(("blocks", "ffn", "fc1", "kernel"), shape, dtype, stacked=True)
            layers[3] = layer_3
            writer.commit(config)
    """

    def __init__(self, path: str | os.PathLike, overwrite: bool = False):
        self.path = Path(path)
        if self.path.exists() and not overwrite:
            raise FileExistsError(f"{self.path} exists; pass overwrite=True (--overwrite) to replace it")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = Path(tempfile.mkdtemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp"))
        (self._tmp / PARAMS_DIR).mkdir()
        self._arrays: dict[tuple[str, ...], Any] = {}
        self._committed = False

    def __enter__(self) -> WeightsWriter:
        return self

    def __exit__(self, *exc) -> None:
        if not self._committed:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def create(self, path: tuple[str, ...], shape: tuple[int, ...], dtype, stacked: bool = False):
        """A writable tensorstore array for one parameter; `stacked` chunks it one layer per chunk."""
        import tensorstore as ts

        if path in self._arrays:
            raise ValueError(f"parameter {'/'.join(path)} written twice")
        dtype = np.dtype(dtype)
        chunks = [1, *shape[1:]] if stacked and shape else list(shape)
        array = ts.open(
            {
                "driver": "zarr",
                "kvstore": {"driver": "file", "path": str(self._tmp / PARAMS_DIR / ".".join(path))},
                # Uncompressed: weights do not compress, and plain chunks read back fastest.
                "metadata": {
                    "shape": list(shape),
                    "chunks": chunks,
                    "dtype": dtype.str if dtype.kind != "V" else "bfloat16",
                    "compressor": None,
                    "dimension_separator": ".",
                },
            },
            create=True,
        ).result()
        self._arrays[path] = array
        return _Slots(array)

    def write(self, path: tuple[str, ...], array: np.ndarray) -> None:
        """Writes a whole parameter."""
        self.create(path, array.shape, array.dtype)[...] = array

    def commit(self, config: Mapping[str, Any]) -> Path:
        params = self._tmp / PARAMS_DIR
        tree = {
            str(path): {
                "key_metadata": [{"key": key, "key_type": 2} for key in path],
                "value_metadata": {"value_type": "jax.Array", "skip_deserialize": False},
            }
            for path in self._arrays
        }
        write_json_atomic(
            params / "_METADATA",
            {
                "tree_metadata": tree,
                "use_ocdbt": False,
                "use_zarr3": False,
                "store_array_data_equal_to_fill_value": True,
                "custom_metadata": None,
            },
        )
        write_json_atomic(
            params / "_CHECKPOINT_METADATA",
            {
                "item_handlers": "orbax.checkpoint._src.handlers.pytree_checkpoint_handler.PyTreeCheckpointHandler",
                "metrics": {},
                "performance_metrics": {},
                "custom_metadata": {},
            },
        )
        write_json_atomic(self._tmp / CONFIG_FILE, {"format_version": FORMAT_VERSION, **config})
        for root, _, files in os.walk(self._tmp):
            for name in files:
                with open(Path(root) / name, "rb+") as f:
                    os.fsync(f.fileno())
        if self.path.exists():
            old = self.path.with_name(f".{self.path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(self.path, old)
            os.replace(self._tmp, self.path)
            shutil.rmtree(old)
        else:
            os.replace(self._tmp, self.path)
        fsync_path(self.path.parent)
        self._committed = True
        return self.path


class _Slots:
    """`slots[i] = layer` / `slots[...] = whole` writes into a tensorstore array, synchronously."""

    def __init__(self, array):
        self._array = array

    def __setitem__(self, index, value: np.ndarray) -> None:
        self._array[index].write(np.asarray(value, self._array.dtype.numpy_dtype)).result()


def read_config(path: str | os.PathLike) -> dict[str, Any]:
    """The `config.json` of a weights directory (local or `gs://`), with a clear error if it is not one."""
    path = epath.Path(path)
    config_file = path / CONFIG_FILE
    if not (config_file.is_file() and (path / PARAMS_DIR).is_dir()):
        raise WeightsError(f"{path} is not a weights directory (needs {CONFIG_FILE} and {PARAMS_DIR}/)")
    try:
        config = json.loads(config_file.read_text())
    except json.JSONDecodeError as e:
        raise WeightsError(f"{config_file} is not valid JSON: {e}") from e
    if config.get("format_version") != FORMAT_VERSION:
        raise WeightsError(
            f"{config_file} has format_version {config.get('format_version')!r}; this version reads "
            f"{FORMAT_VERSION}. Convert the weights again with this version's convert_weights."
        )
    return config


def _check_tree(path: epath.Path, expected: Mapping[tuple[str, ...], jax.ShapeDtypeStruct]) -> None:
    import orbax.checkpoint as ocp

    try:
        metadata = ocp.StandardCheckpointer().metadata(path / PARAMS_DIR).item_metadata
    except Exception as e:  # orbax's errors for an unreadable checkpoint share no type
        raise WeightsError(f"{path / PARAMS_DIR}: unreadable parameter index ({e}); convert the weights again") from e
    if metadata is None:  # orbax read the index and every array's header: something is missing or damaged
        absent = sorted("/".join(p) for p in expected if not (path / PARAMS_DIR / ".".join(p)).is_dir())
        raise WeightsError(
            f"{path / PARAMS_DIR}: the parameter index or a parameter's files are missing or damaged"
            + (f" (no files for {absent})" if absent else "")
            + "; convert the weights again"
        )
    stored = flatten_paths(metadata.tree)
    missing = sorted("/".join(p) for p in expected.keys() - stored.keys())
    extra = sorted("/".join(p) for p in stored.keys() - expected.keys())
    shapes = sorted(
        f"{'/'.join(p)}: stored {tuple(stored[p].shape)}, model {tuple(expected[p].shape)}"
        for p in expected.keys() & stored.keys()
        if tuple(stored[p].shape) != tuple(expected[p].shape)
    )
    problems = [
        f"missing {missing}" if missing else "",
        f"unexpected {extra}" if extra else "",
        f"shape mismatch {shapes}" if shapes else "",
    ]
    if any(problems):
        raise WeightsError(f"{path} does not fit the model: " + "; ".join(p for p in problems if p))


def load_module(
    path: str | os.PathLike,
    build: Callable[[], M],
    mesh: jax.sharding.Mesh | None = None,
    rules=DEFAULT_RULES,
) -> M:
    """Restores a weights directory into the module `build()` would create.

    The module is never initialised for real: `build` runs under `nnx.eval_shape`, and every
    parameter is read straight into its sharding on `mesh` (replicated on the default device if
    `mesh` is None). Missing, unexpected or mis-shaped parameters raise `WeightsError` naming them.
    """
    import orbax.checkpoint as ocp

    path = epath.Path(path)
    read_config(path)
    graphdef, abstract = nnx.split(nnx.eval_shape(build))
    if mesh is None:
        device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        shardings = jax.tree.map(lambda _: device, abstract)
    else:
        shardings = state_shardings(abstract, mesh, rules)
    targets = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)
    pure = nnx.to_pure_dict(targets)
    _check_tree(path, flatten_paths(pure))
    try:
        restored = ocp.StandardCheckpointer().restore(path / PARAMS_DIR, pure)
    except Exception as e:
        cause = e.__cause__ or e.__context__ or e  # tensorstore's message, which names the file
        raise WeightsError(f"{path}: reading the parameters failed, a file is damaged or truncated: {cause}") from e
    nnx.replace_by_pure_dict(abstract, restored)
    return nnx.merge(graphdef, abstract)
