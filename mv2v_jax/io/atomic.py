"""Atomic file writes: a file appears complete or not at all, and survives a crash once written.

Every writer in the library (videos, PNGs, camera files, weights configs, the memory bank) goes
through `atomic_output`: write a temporary file beside the destination, fsync it, rename it over the
destination, fsync the folder.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

# Every temporary starts with this, so a store can recognise (and remove) leftovers of a killed write.
TEMPORARY_PREFIX = ".tmp-"


def fsync_path(path: str | os.PathLike) -> None:
    """fsync a file or a folder (a folder's fsync makes a rename inside it durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path beside `path` (same suffix) to write to; renames it over `path` on success.

    The temporary file is fsynced before the rename and the folder after it, so a crash or an
    exception at any point leaves either the old file or the complete new one at `path`, never a
    half-written one; on an exception the temporary file is removed. A process killed outright may
    leave the hidden temporary `.tmp-{name}.*{suffix}` beside `path`, never a partial `path`. An OSError
    of the write that names no file (a full disk) is raised naming `path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{TEMPORARY_PREFIX}{path.name}.", suffix=path.suffix)
    os.close(fd)
    tmp = Path(tmp)
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
