"""Atomic file writes: a file appears complete or not at all, and survives a crash once written.

Every writer in the library (videos, PNGs, camera files, weights configs, the memory bank) goes
through `atomic_output`: write a temporary file beside the destination, fsync it, rename it over the
destination, fsync the folder. JSON documents (session records, the bank's manifest, weights configs
and checksums, camera files) go through `write_json`, one format for all.

A destination in a bucket (`gs://...`, any URI `etils.epath` opens) has no rename: the file is written
in a local temporary and uploaded as one object (`upload`), which appears whole or not at all.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from etils import epath

from mv2v_jax.io import locks

# Every temporary starts with this, so a store can recognise (and remove) leftovers of a killed write.
TEMPORARY_PREFIX = ".tmp-"


def new_temporary(folder: str | os.PathLike, prefix: str, suffix: str = "", directory: bool = False) -> Path:
    """Creates an empty file (or folder) `{prefix}{random}{suffix}` in `folder` that no one else has.

    Unlike `tempfile.mkstemp` / `mkdtemp` (0600 / 0700), it gets the permissions any new file gets,
    0666 (0777) less the umask, so what is renamed into place is readable like every other output
    (0644 under the usual umask).
    """
    while True:
        path = Path(folder) / f"{prefix}{secrets.token_hex(4)}{suffix}"
        try:
            if directory:
                os.mkdir(path, 0o777)
            else:
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return path


def is_uri(path: str | os.PathLike) -> bool:
    """A bucket's address (`gs://bucket/run`, as a string or an `etils.epath.Path`), not a local path.
    (`pathlib.Path` turns one into a local path, `gs:/bucket/run` or `/gs/bucket/run`: such paths stay
    strings or `etils.epath.Path`s.)"""
    return "://" in os.fspath(path)


def check_can_create(path: str | os.PathLike) -> None:
    """Raises the OSError that making the folder `path` and files in it would meet (a file where a
    folder should be, a read-only folder), without creating anything: a long job checks its output
    folder before it starts. For a URI, its bucket must exist (a store may otherwise create a bucket
    for a mistyped name); what may be written there the store checks at the first write."""
    if is_uri(path):
        scheme, _, rest = os.fspath(path).partition("://")
        bucket = epath.Path(f"{scheme}://{rest.split('/')[0]}")
        if not bucket.exists():
            raise FileNotFoundError(errno.ENOENT, "no such bucket (create it first)", str(bucket))
        return
    path = Path(path).absolute()
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(path))
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))


def make_parents(folder: str | os.PathLike) -> list[Path]:
    """Makes the folder `folder` and its missing parents; returns the ones it made, for
    `remove_empty` to take away again when the write they were made for fails."""
    folder = Path(folder).absolute()
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for made in reversed(missing):
        made.mkdir(exist_ok=True)
    return missing


def remove_empty(folders: list[Path]) -> None:
    """Removes each of `folders` that is still empty, deepest first: what a failed write made for itself."""
    for folder in sorted(folders, key=lambda folder: len(folder.parts), reverse=True):
        try:
            folder.rmdir()
        except OSError:  # not empty (another writer's files), or already gone
            continue


def remove_stale_stagings(path: str | os.PathLike) -> None:
    """Removes the hidden folders beside `path` that `new_staging` made for it in processes since killed
    (a live writer holds its folder's lock)."""
    path = Path(path)
    if not path.parent.is_dir():
        return
    pattern = re.compile(rf"{re.escape(TEMPORARY_PREFIX + path.name)}-[0-9a-f]{{8}}")  # new_temporary's names
    for staging in path.parent.iterdir():
        if not (pattern.fullmatch(staging.name) and staging.is_dir()):
            continue
        try:
            fd = locks.hold(staging, directory=True)
        except BlockingIOError:
            continue  # another process is filling it
        try:
            shutil.rmtree(staging)
        finally:
            os.close(fd)


def new_staging(path: str | os.PathLike) -> tuple[Path, int]:
    """A new hidden folder beside `path` (whose parent must exist) to fill and then rename to `path`, and
    the fd holding its lock: keep it open until the folder is renamed (the lock goes with the folder) or
    removed. Leftovers of writers of `path` that were killed are removed first."""
    path = Path(path)
    remove_stale_stagings(path)
    staging = new_temporary(path.parent, f"{TEMPORARY_PREFIX}{path.name}-", directory=True)
    try:
        return staging, locks.hold(staging, directory=True)
    except BaseException:
        staging.rmdir()
        raise


@contextlib.contextmanager
def staged_folder(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a new hidden folder beside `path` to fill (`new_staging`); renames it to `path` once the
    block ends, so the folder appears whole or not at all. On an exception it is removed, with the
    parents made for it."""
    path = Path(path)
    made = make_parents(path.parent)
    stage, lock_fd = new_staging(path)
    try:
        yield stage
        os.rename(stage, path)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        remove_empty(made)
        raise
    finally:
        os.close(lock_fd)
    fsync_path(path.parent)


def fsync_path(path: str | os.PathLike) -> None:
    """fsync a file or a folder (a folder's fsync makes a rename inside it durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def upload(source: str | os.PathLike, destination: str | os.PathLike) -> None:
    """Copies the local file `source` to the URI `destination` as one object: an object store makes an
    object visible only once its upload completes, so a reader sees the old object or the new one. An
    upload that fails or is interrupted leaves the old one."""
    target = epath.Path(destination).open("wb")
    try:
        with open(source, "rb") as src:
            shutil.copyfileobj(src, target, 16 << 20)
    except BaseException:
        # fsspec's files complete the upload of what they hold when closed, an exception's exit included:
        # cancel it (a multi-part upload under way) and mark the file closed, so that nothing is published.
        if hasattr(target, "discard"):
            target.discard()
            target.closed = True
        raise
    target.close()


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path beside `path` (same suffix) to write to; renames it over `path` on success.

    The temporary file is fsynced before the rename and the folder after it, so a crash or an
    exception at any point leaves either the old file or the complete new one at `path`, never a
    half-written one; on an exception the temporary file is removed. A process killed outright may
    leave the hidden temporary `.tmp-{name}.*{suffix}` beside `path`, never a partial `path`. An OSError
    of the write that names no file (a full disk) is raised naming `path`. The file gets the usual
    permissions (0644 under the usual umask). A URI `path` gets a local temporary, uploaded on success.
    """
    if is_uri(path):
        with tempfile.TemporaryDirectory(prefix="mv2v-upload-") as folder:
            tmp = Path(folder) / f"{TEMPORARY_PREFIX}{epath.Path(path).name}"
            tmp.touch(0o666)
            yield tmp
            upload(tmp, path)
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = new_temporary(path.parent, f"{TEMPORARY_PREFIX}{path.name}.", path.suffix)
    try:
        yield tmp
        fsync_path(tmp)
        os.replace(tmp, path)
    except BaseException as error:
        tmp.unlink(missing_ok=True)
        if isinstance(error, OSError) and error.errno is not None and error.filename is None:
            raise type(error)(error.errno, error.strerror, str(path)) from error  # a failed write names no file
        raise
    fsync_path(path.parent)


def write_json(
    path: str | os.PathLike, data: Any, *, sort_keys: bool = True, default: Callable[[Any], Any] | None = None
) -> None:
    """Writes `data` as JSON to `path` atomically (`atomic_output`): indented by 2, keys sorted unless
    `sort_keys=False` (a document whose order is meant for reading), `default` for values JSON lacks."""
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=sort_keys, default=default) + "\n")
