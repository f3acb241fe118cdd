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
from flax import nnx

from mv2v_jax.parallel.mesh import DEFAULT_RULES, state_shardings

CONFIG_FILE = "config.json"
PARAMS_DIR = "params"
FORMAT_VERSION = 1

M = TypeVar("M", bound=nnx.Module)


class WeightsError(ValueError):
    """A weights directory that does not match the model it should fill."""


def nest_paths(flat: Mapping[tuple[str, ...], Any]) -> dict:
    tree: dict = {}
    for path, value in flat.items():
        node = tree
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return tree


def flatten_paths(tree: Mapping, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    flat = {}
    for key, value in tree.items():
        path = (*prefix, str(key))
        if isinstance(value, Mapping):
            flat.update(flatten_paths(value, path))
        else:
            flat[path] = value
    return flat


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomic(path: Path, data: Any) -> None:
    """Writes JSON to a temporary file beside `path`, fsyncs it, renames it over `path`."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


class WeightsWriter:
    """Writes a weights directory tensor by tensor; nothing appears at `path` until `commit`.

    Usage::

        with WeightsWriter(out_dir) as writer:
            for path, array in ...:
                writer.write(path, array)
            writer.commit(config)
    """

    def __init__(self, path: str | os.PathLike, overwrite: bool = False):
        self.path = Path(path)
        if self.path.exists() and not overwrite:
            raise FileExistsError(f"{self.path} exists; pass overwrite=True (--overwrite) to replace it")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = Path(tempfile.mkdtemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp"))
        self._written: set[tuple[str, ...]] = set()
        self._committed = False

    def __enter__(self) -> WeightsWriter:
        return self

    def __exit__(self, *exc) -> None:
        if not self._committed:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def write(self, path: tuple[str, ...], array: np.ndarray) -> None:
        """Adds one parameter; orbax writes it at once, so only this array is held in memory."""
        from orbax.checkpoint.experimental.v1 import partial

        if path in self._written:
            raise ValueError(f"parameter {'/'.join(path)} written twice")
        partial.save(self._tmp / PARAMS_DIR, nest_paths({path: np.ascontiguousarray(array)}))
        self._written.add(path)

    def commit(self, config: Mapping[str, Any]) -> Path:
        from orbax.checkpoint.experimental.v1 import partial

        partial.finalize(self._tmp / PARAMS_DIR)
        write_json_atomic(self._tmp / CONFIG_FILE, {"format_version": FORMAT_VERSION, **config})
        if self.path.exists():
            old = self.path.with_name(f".{self.path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(self.path, old)
            os.replace(self._tmp, self.path)
            shutil.rmtree(old)
        else:
            os.replace(self._tmp, self.path)
        _fsync_dir(self.path.parent)
        self._committed = True
        return self.path


def read_config(path: str | os.PathLike) -> dict[str, Any]:
    """The `config.json` of a weights directory, with a clear error if it is not one."""
    path = Path(path)
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


def _check_tree(path: Path, expected: Mapping[tuple[str, ...], jax.ShapeDtypeStruct]) -> None:
    from orbax.checkpoint import v1 as ocp

    stored = flatten_paths(ocp.pytree_metadata(path / PARAMS_DIR).metadata)
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
    from orbax.checkpoint import v1 as ocp

    path = Path(path)
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
    restored = ocp.load_pytree(path / PARAMS_DIR, pure)
    nnx.replace_by_pure_dict(abstract, restored)
    return nnx.merge(graphdef, abstract)
