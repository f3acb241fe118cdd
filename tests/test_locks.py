"""io.locks: the one lock of the library (the bank's writer lock, a new session's hidden folder)."""

import os
import threading

import pytest

from mv2v_jax.io import locks


def test_a_held_lock_refuses_until_released(tmp_path):
    path = tmp_path / "session.lock"
    fd = locks.hold(path)
    with pytest.raises(BlockingIOError):
        locks.hold(path)  # flock is per open file: a second open conflicts even in the same process
    os.close(fd)
    os.close(locks.hold(path))
    assert path.exists()  # the file stays for the next holder


def test_a_waiting_hold_gets_the_lock_when_it_is_let_go(tmp_path):
    path = tmp_path / "session.lock"
    fd = locks.hold(path)
    released = threading.Event()

    def release() -> None:
        released.set()
        os.close(fd)

    timer = threading.Timer(0.3, release)
    timer.start()
    try:
        second = locks.hold(path, timeout=60)
        got_it_after_release = released.is_set()
    finally:
        timer.join()
    assert got_it_after_release  # it waited for the first holder to let go
    os.close(second)


def test_a_folder_lock_holds_through_its_rename(tmp_path):
    folder, moved = tmp_path / ".tmp-session-0123abcd", tmp_path / "session"
    folder.mkdir()
    fd = locks.hold(folder, directory=True)
    folder.rename(moved)
    with pytest.raises(BlockingIOError):
        locks.hold(moved, directory=True)
    os.close(fd)
    os.close(locks.hold(moved, directory=True))
    assert not list(moved.iterdir())  # locking a folder puts nothing in it
