"""Exclusive locks between processes, one mechanism for the library: `flock` on a file or a folder.

The memory bank's writer lock (retrieval.bank, its session.lock file) and a new session's hidden
folder while it is being built (pipelines.session) both take `hold`. The lock belongs to the open
file: closing the fd releases it, and so does the holder's death (a killed writer leaves nothing
locked behind, unlike a marker file). A folder's lock is its inode's, so it holds through the
folder's rename. flock is advisory and local: it does not protect folders on NFS.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

POLL_SECONDS = 0.05  # how often a waiting `hold` tries again


def hold(path: str | os.PathLike, timeout: float = 0.0, *, directory: bool = False) -> int:
    """An fd holding the exclusive lock of `path`, a file (created if missing) or, with `directory`, a
    folder; waits up to `timeout` seconds for another holder to let go, then raises `BlockingIOError`.
    Close the fd to release the lock."""
    deadline = time.monotonic() + timeout
    flags = os.O_RDONLY | os.O_DIRECTORY if directory else os.O_RDWR | os.O_CREAT
    while True:
        fd = os.open(Path(path), flags, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            os.close(fd)
            if time.monotonic() >= deadline:
                raise
        except BaseException:
            os.close(fd)
            raise
        time.sleep(POLL_SECONDS)
