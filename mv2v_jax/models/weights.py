"""The converted-weights directory: how model parameters live on disk.

A weights directory holds `config.json` (the model's architecture config plus provenance) and
`params/`, an orbax checkpoint of the parameter tree (nested dicts of arrays, the same paths as the
model's `nnx.State`). Converters write it one tensor at a time (`WeightsWriter`), so converting a
14B model needs memory for one stacked tensor, not the model; `load_module` restores it straight
into the sharded layout of the current mesh, so no device ever holds the full model unless asked.

A directory appears complete or not at all: it is written under a temporary name and renamed. A
bucket (`gs://...`) cannot rename a folder; there the directory is written in a local temporary folder
and uploaded one object at a time with `config.json`, without which `read_config` refuses a folder,
last (`_publish`).
`checksums.json` holds the sha256 of every other file of the directory (config.json, everything
under params/, a model card), written last; `load_module` checks it before restoring, so a damaged,
missing or unlisted file (one left by another conversion, say) is refused up front, named. Loading
writes nothing inside the directory. Hashing runs once per directory: what was verified is
remembered in the user cache (mv2v_jax.cache) by each file's size, mtime, ctime and inode, so later
loads only stat the files. Directories written before checksums existed load with a one-line warning
naming the command that adds them (`python -m convert_weights.checksums DIR`).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath
from flax import nnx, traverse_util

from mv2v_jax.cache import cache_root
from mv2v_jax.interrupts import deferred_interrupt
from mv2v_jax.io.atomic import fsync_path, is_uri, make_parents, new_temporary, remove_empty, upload, write_json
from mv2v_jax.models.layers import in_compute_dtype
from mv2v_jax.parallel.mesh import DEFAULT_RULES, state_shardings

CONFIG_FILE = "config.json"
PARAMS_DIR = "params"
CHECKSUMS_FILE = "checksums.json"
FORMAT_VERSION = 1  # checksums.json is optional (older directories lack it), so it needed no new version
ADD_CHECKSUMS = "python -m convert_weights.checksums"

log = logging.getLogger(__name__)

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


class WeightsWriter:
    """Writes a weights directory parameter by parameter; nothing appears at `path` until `commit`.

    `params/` is an orbax checkpoint in its plain zarr layout (one zarr array per parameter, named by
    its '.'-joined path, plus orbax's index files), its arrays written here with tensorstore so that a
    stacked parameter can be filled one layer at a time: converting needs memory for one source tensor
    (orbax's public API saves whole arrays only). Orbax writes the index itself (`_write_orbax_index`)
    and restores the directory like any checkpoint it wrote (tests/test_weights.py checks both).

    Usage::

        with WeightsWriter(out_dir) as writer:
            writer.write(("head", "proj", "kernel"), array)
            layers = writer.create(("blocks", "ffn", "fc1", "kernel"), shape, dtype, stacked=True)
            layers[3] = layer_3
            writer.commit(config)
    """

    def __init__(self, path: str | os.PathLike, overwrite: bool = False):
        self.destination = epath.Path(path) if is_uri(path) else None
        where = self.destination or Path(path)
        if where.exists() and not overwrite:
            raise FileExistsError(f"{where} exists; pass overwrite=True to replace it")
        # A bucket's directory is made in a local folder (as large as the weights), uploaded by `commit`.
        self._staging = Path(tempfile.mkdtemp(prefix="mv2v-weights-")) if self.destination else None
        self.path = self._staging / where.name if self._staging else where
        self._made = make_parents(self.path.parent)  # removed again if nothing is committed
        self._tmp = new_temporary(self.path.parent, f".{self.path.name}.", ".tmp", directory=True)
        (self._tmp / PARAMS_DIR).mkdir()
        self._arrays: dict[tuple[str, ...], Any] = {}
        self._committed = False

    def __enter__(self) -> WeightsWriter:
        return self

    def __exit__(self, *exc) -> None:
        if not self._committed:
            shutil.rmtree(self._tmp, ignore_errors=True)
            remove_empty(self._made)
        if self._staging:
            shutil.rmtree(self._staging, ignore_errors=True)

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

    def commit(self, config: Mapping[str, Any]) -> Path | epath.Path:
        """Writes orbax's index, config.json and checksums.json, then moves the directory into place (a
        bucket's: uploads it); returns where it is."""
        dtypes = {path: array.dtype.numpy_dtype for path, array in self._arrays.items()}
        _write_orbax_index(self._tmp / PARAMS_DIR, dtypes)
        write_json(self._tmp / CONFIG_FILE, {"format_version": FORMAT_VERSION, **config})
        write_checksums(self._tmp)
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
        if self.destination:
            _publish(self.path, self.destination)
            return self.destination
        _remember(self.path)  # hashed a moment ago: the first load need not hash again
        return self.path


def _publish(local: Path, destination: epath.Path) -> None:
    """Uploads the weights directory `local` to `destination` in a bucket, where a folder cannot be renamed
    into place. Each object appears whole or not at all, and `read_config` refuses a folder without
    config.json: so config.json goes first (the old directory's) and comes last (the new one's). A
    reader meanwhile finds the old weights or none, never a directory that is partly the new one and
    says it is complete; a killed upload leaves none, and the next export starts again. A reader that
    opened the old directory before the replacement began may read a mix (checksums.json catches it
    where it is checked: local directories)."""
    if destination.exists():
        (destination / CONFIG_FILE).unlink(missing_ok=True)
        destination.rmtree()
    files = [p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file()]
    later = [name for name in files if name != CONFIG_FILE]
    workers = min(8, len(later) or 1)  # parameters upload side by side: a bucket's throughput is per stream
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda name: upload(local / name, destination / name), later))
    upload(local / CONFIG_FILE, destination / CONFIG_FILE)


class _Slots:
    """`slots[i] = layer` / `slots[...] = whole` writes into a tensorstore array, synchronously."""

    def __init__(self, array):
        self._array = array

    def __setitem__(self, index, value: np.ndarray) -> None:
        self._array[index].write(np.asarray(value, self._array.dtype.numpy_dtype)).result()


def _write_orbax_index(params: Path, dtypes: Mapping[tuple[str, ...], np.dtype]) -> None:
    """Orbax's index files (`_METADATA`, `_CHECKPOINT_METADATA`, ...) for the arrays streamed into `params`.

    The index does not depend on the arrays' shapes or values, so orbax writes it through its public
    API for a stand-in tree of the same paths (0-d numpy arrays), and it is moved beside our arrays:
    no orbax file format or class name is spelled out here. What orbax does not promise is that it
    stores each leaf, without OCDBT, as a zarr v2 array in the folder named by its '.'-joined path
    (the layout the arrays were streamed in): that is checked on every commit, so an orbax that
    stores trees differently fails the conversion, loudly, instead of writing unreadable weights.
    """
    import orbax.checkpoint as ocp

    scratch = params.parent / ".orbax-index"
    stand_in = nest_paths({path: np.zeros((), dtype) for path, dtype in dtypes.items()})
    checkpointer = ocp.Checkpointer(
        ocp.PyTreeCheckpointHandler(use_ocdbt=False, use_zarr3=False),
        # This process alone writes the directory (a converter, or the exporting process).
        multiprocessing_options=ocp.options.MultiprocessingOptions(
            primary_host=None, active_processes={jax.process_index()}
        ),
    )
    # _quiet: orbax warns that it found no OCDBT files to merge (none were asked for).
    with _quiet("absl"), deferred_interrupt("the weights' index is written"):
        try:
            checkpointer.save(scratch.absolute(), args=ocp.args.PyTreeSave(stand_in))
        finally:  # on an error too (a full disk): orbax's threads end before the interpreter does
            checkpointer.close()
    folders = {p.name for p in scratch.iterdir() if (p / ".zarray").is_file()}  # zarr v2 arrays
    expected = {".".join(path) for path in dtypes}
    if folders != expected:
        raise WeightsError(
            f"orbax-checkpoint {ocp.__version__} lays out a parameter tree differently from the arrays "
            f"WeightsWriter streams (it made {sorted(folders - expected)[:3]}, not {sorted(expected - folders)[:3]}); "
            "use orbax-checkpoint 0.12 (what tests/test_weights.py checks) or update WeightsWriter"
        )
    for file in scratch.iterdir():
        if file.is_file():
            os.replace(file, params / file.name)
    shutil.rmtree(scratch)


@contextlib.contextmanager
def _quiet(logger: str) -> Iterator[None]:
    """Only errors from `logger` meanwhile."""
    target = logging.getLogger(logger)
    level = target.level
    target.setLevel(logging.ERROR)
    try:
        yield
    finally:
        target.setLevel(level)


def _checksummed_files(path: Path) -> list[str]:
    """Every file of the weights directory but checksums.json, relative to it."""
    files = (p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file())
    return sorted(name for name in files if name != CHECKSUMS_FILE)


def _sha256(file: Path) -> str:
    with open(file, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _hash_files(path: Path, names: list[str]) -> dict[str, str]:
    """sha256 of each file, several at a time (hashlib hashes outside the GIL)."""
    workers = min(8, os.cpu_count() or 1)
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        return dict(zip(names, pool.map(lambda name: _sha256(path / name), names), strict=True))


def write_checksums(path: str | os.PathLike) -> Path:
    """Writes `checksums.json`: the sha256 of every other file of the directory, as the files are now."""
    path = Path(path)
    return _write_checksums(path, _hash_files(path, _checksummed_files(path)))


def add_to_checksums(path: str | os.PathLike, names: Iterable[str]) -> Path:
    """Lists the files `names` (relative to the directory `path`) in its checksums.json, hashing only them:
    files written beside converted weights (a model card). A directory without checksums.json gets one
    listing just them."""
    path = Path(path)
    recorded = _read_checksums(path)
    return _write_checksums(path, (recorded[0] if recorded else {}) | _hash_files(path, sorted(names)))


def _write_checksums(path: Path, files: Mapping[str, str]) -> Path:
    write_json(path / CHECKSUMS_FILE, {"algorithm": "sha256", "files": dict(files)})
    return path / CHECKSUMS_FILE


def _describe(names: list[str]) -> tuple[str, int]:
    """Checksummed files in words, grouped by the parameter they belong to (or the index, or the config),
    and how many groups that made."""
    groups: dict[str, list[str]] = {}
    for name in names:
        parts = name.split("/")
        if parts[0] == PARAMS_DIR:
            what = f"parameter {parts[1].replace('.', '/')}" if len(parts) == 3 else "the parameter index"
        else:
            what = name
        groups.setdefault(what, []).append(name)
    text = ", ".join(what if files == [what] else f"{what} ({', '.join(files)})" for what, files in groups.items())
    return text, len(groups)


def _read_checksums(path: Path) -> tuple[dict[str, str], bytes] | None:
    """`{file: sha256}` and the raw checksums.json, or None for a directory written before checksums."""
    file = path / CHECKSUMS_FILE
    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        return None
    try:
        files = json.loads(raw)["files"]
        if not (isinstance(files, dict) and all(isinstance(v, str) for v in files.values())):
            raise ValueError("'files' is not a mapping of file names to digests")
    except (ValueError, KeyError, TypeError) as e:
        raise WeightsError(f"{file} is damaged ({e}); convert or export the weights again") from e
    return files, raw


def _signature(path: Path, names: list[str]) -> dict[str, list[int]]:
    """What a file's rewrite changes, without reading it: size, mtime, ctime (no tool sets it back) and inode."""
    signature = {}
    for name in names:
        stat = os.stat(path / name)
        signature[name] = [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino]
    return signature


def _cache_file(path: Path) -> Path | None:
    root = cache_root()
    key = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:24]
    return None if root is None else root / "verified_weights" / f"{key}.json"


def _cache_entry(path: Path, raw_checksums: bytes, names: list[str]) -> dict[str, Any]:
    return {
        "path": str(path.resolve()),
        "checksums": hashlib.sha256(raw_checksums).hexdigest(),
        "files": _signature(path, names),
    }


def _store(cache: Path | None, entry: dict[str, Any]) -> None:
    """Writes a verification record (best effort: it is a cache)."""
    if cache is not None:
        with contextlib.suppress(OSError):
            cache.parent.mkdir(parents=True, exist_ok=True)
            write_json(cache, entry)


def _remember(path: Path) -> None:
    """Records that `path`'s files match its checksums as they are now (right after writing them)."""
    files, raw = _read_checksums(path)
    _store(_cache_file(path), _cache_entry(path, raw, sorted(files)))


def verify_checksums(path: str | os.PathLike) -> None:
    """Refuses a weights directory whose files differ from its checksums.json, naming each parameter:
    changed, missing, or there and not listed.

    Hashes every file once; while no file's size, mtime, ctime or inode changes (and checksums.json
    is the same), later calls only stat them. A directory without checksums.json loads unchecked,
    with a warning naming the command that adds them. So does one in a bucket (`gs://...`): hashing it
    would read the weights twice, and there is no inode to remember a check by.
    """
    if is_uri(path):
        log.warning("%s is in a bucket: its files are not checked against its %s", path, CHECKSUMS_FILE)
        return
    path = Path(path)
    recorded = _read_checksums(path)
    if recorded is None:
        log.warning(
            "%s has no %s (written before weights carried checksums): damaged files go unnoticed; `%s %s` adds them",
            path,
            CHECKSUMS_FILE,
            ADD_CHECKSUMS,
            path,
        )
        return
    expected, raw = recorded
    names = sorted(expected)
    present = set(_checksummed_files(path))
    missing = [name for name in names if name not in present]
    unlisted = sorted(present - expected.keys())
    if missing or unlisted:
        problems = [f"files are missing: {_describe(missing)[0]} (convert or export the weights again)"] * bool(missing)
        if unlisted:  # not written with the weights (left by another conversion, copied in by hand)
            problems.append(
                f"files not in {CHECKSUMS_FILE}: {_describe(unlisted)[0]} (remove them; or, for a directory known "
                f"to be good, delete {CHECKSUMS_FILE} and run `{ADD_CHECKSUMS} {path}`)"
            )
        raise WeightsError(f"{path}: {'; '.join(problems)}")
    cache = _cache_file(path)
    entry = _cache_entry(path, raw, names)  # before hashing: a file changed meanwhile is hashed again next time
    with contextlib.suppress(OSError, ValueError):
        if cache is not None and json.loads(cache.read_text()) == entry:
            return
    actual = _hash_files(path, names)
    damaged = [name for name in names if actual[name] != expected[name]]
    if damaged:
        what, count = _describe(damaged)
        raise WeightsError(
            f"{path}: {what} {'fails its checksum' if count == 1 else 'fail their checksums'}: changed after the "
            "weights were written (damaged or overwritten); convert or export the weights again"
        )
    _store(cache, entry)


def add_checksums(path: str | os.PathLike) -> Path:
    """Writes checksums.json for a directory made before weights carried checksums, from its files as
    they are now: run it on weights known to be good. A directory orbax cannot read (a missing index
    or parameter) is refused rather than recorded."""
    path = Path(path)
    read_config(path)
    if (path / CHECKSUMS_FILE).exists():
        raise WeightsError(f"{path} already has {CHECKSUMS_FILE}")
    _stored_tree(path)
    written = write_checksums(path)
    _remember(path)
    return written


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


def _stored_tree(path: epath.Path, expected: Iterable[tuple[str, ...]] = ()) -> dict[tuple[str, ...], Any]:
    """Parameter path -> orbax's metadata (shape, dtype) as stored, read from the index and every array's
    header; an error names the `expected` parameters that have no files."""
    import orbax.checkpoint as ocp

    # Named before orbax reads anything: its reads of an array without files fail while tensorstore's
    # threads still answer into its closed event loop ("Event loop is closed" tracebacks).
    absent = sorted("/".join(p) for p in expected if not (path / PARAMS_DIR / ".".join(p)).is_dir())
    missing = f"{path / PARAMS_DIR}: the parameter index or a parameter's files are missing or damaged"
    if absent:
        raise WeightsError(f"{missing} (no files for {absent}); convert the weights again")
    try:
        with deferred_interrupt("the weights are read"), ocp.StandardCheckpointer() as checkpointer:
            metadata = checkpointer.metadata(path / PARAMS_DIR).item_metadata
    except Exception as e:  # orbax's errors for an unreadable checkpoint share no type
        raise WeightsError(f"{path / PARAMS_DIR}: unreadable parameter index ({e}); convert the weights again") from e
    if metadata is None:  # orbax read the index and every array's header: something is missing or damaged
        raise WeightsError(f"{missing}; convert the weights again")
    return flatten_paths(metadata.tree)


def _check_tree(path: epath.Path, expected: Mapping[tuple[str, ...], jax.ShapeDtypeStruct]) -> None:
    stored = _stored_tree(path, expected)
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
    serving: bool = False,
) -> M:
    """Restores a weights directory into the module `build()` would create.

    The module is never initialised for real: `build` runs under `nnx.eval_shape`, and every
    parameter is read straight into its sharding on `mesh` (replicated on the default device if
    `mesh` is None) and, with `serving`, straight into the dtype it computes in (`in_compute_dtype`:
    sampling's copy, the float32 file never whole in memory). Missing, unexpected or mis-shaped
    parameters raise `WeightsError` naming them.
    """
    import orbax.checkpoint as ocp

    path = epath.Path(path)
    read_config(path)
    verify_checksums(path)
    graphdef, abstract = nnx.split(nnx.eval_shape(lambda: in_compute_dtype(build()) if serving else build()))
    if mesh is None:
        device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        shardings = jax.tree.map(lambda _: device, abstract)
    else:
        shardings = state_shardings(abstract, mesh, rules)
    targets = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)
    pure = nnx.to_pure_dict(targets)
    _check_tree(path, flatten_paths(pure))
    try:
        with deferred_interrupt("the weights are read"), ocp.StandardCheckpointer() as checkpointer:
            restored = checkpointer.restore(path / PARAMS_DIR, pure)
    except Exception as e:
        cause = e.__cause__ or e.__context__ or e  # tensorstore's message, which names the file
        raise WeightsError(f"{path}: reading the parameters failed, a file is damaged or truncated: {cause}") from e
    nnx.replace_by_pure_dict(abstract, restored)
    return nnx.merge(graphdef, abstract)


def module_from_params(build: Callable[[], M], params: Mapping[str, Any]) -> M:
    """The module `build()` would create, carrying `params` (nested, as `nnx.to_pure_dict` gives them:
    e.g. a converter's `convert_state_dict`); it is never initialised for real."""
    graphdef, abstract = nnx.split(nnx.eval_shape(build))
    nnx.replace_by_pure_dict(abstract, jax.tree.map(jnp.asarray, dict(params)))
    return nnx.merge(graphdef, abstract)
