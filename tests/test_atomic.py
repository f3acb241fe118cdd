"""Atomic outputs are readable like any other new file, and an output folder is checked before a job starts."""

import os
import signal
import stat
import subprocess
import sys

import numpy as np
import pytest

from mv2v_jax.io.atomic import atomic_output, check_can_create, new_staging, new_temporary, staged_folder
from mv2v_jax.models.weights import WeightsWriter


@pytest.fixture
def umask():
    """Sets the process umask for the test, then restores it."""
    previous = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(previous)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask, file_mode, folder_mode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_outputs_get_the_permissions_of_any_new_file(tmp_path, umask, mask, file_mode, folder_mode):
    umask(mask)
    with atomic_output(tmp_path / "result.json") as tmp:
        assert mode(tmp) == file_mode
        tmp.write_text("{}")
    assert mode(tmp_path / "result.json") == file_mode  # not mkstemp's 0600
    with WeightsWriter(tmp_path / "weights") as writer:
        writer.write(("a",), np.zeros(3, np.float32))
        writer.commit({})
    assert mode(tmp_path / "weights") == folder_mode  # not mkdtemp's 0700
    assert mode(tmp_path / "weights" / "checksums.json") == file_mode


def test_temporaries_never_collide(tmp_path):
    made = {new_temporary(tmp_path, ".tmp-x.", ".json") for _ in range(50)}
    made |= {new_temporary(tmp_path, ".x.", ".tmp", directory=True) for _ in range(50)}
    assert len(made) == 100 and sorted(made) == sorted(tmp_path.iterdir())


def test_an_output_folder_that_cannot_be_made_is_refused_before_anything_is_made(tmp_path):
    check_can_create(tmp_path / "new" / "deeper")  # nothing in the way
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "file").write_text("a file where a folder would go")
    with pytest.raises(NotADirectoryError, match=rf"Not a directory: '{tmp_path / 'file' / 'run'}'"):
        check_can_create(tmp_path / "file" / "run")
    with pytest.raises(NotADirectoryError):
        check_can_create(tmp_path / "file")
    if os.geteuid() != 0:  # root writes into read-only folders
        (tmp_path / "locked").mkdir(mode=0o555)
        with pytest.raises(PermissionError, match="Permission denied"):
            check_can_create(tmp_path / "locked" / "run")


# Makes a staging folder for the path argv[1], says so, and waits to be killed with its lock held.
STAGE_AND_WAIT = """
import sys, time
from mv2v_jax.io.atomic import new_staging
staging, _ = new_staging(sys.argv[1])
print(staging, flush=True)
time.sleep(600)
"""


def staging_of_a_process(path) -> tuple[subprocess.Popen, str]:
    child = subprocess.Popen([sys.executable, "-c", STAGE_AND_WAIT, str(path)], stdout=subprocess.PIPE, text=True)
    return child, child.stdout.readline().strip()


def test_the_staging_of_a_killed_writer_is_removed_by_the_next_and_a_live_ones_is_left(tmp_path):
    from mv2v_jax.train.checkpoint import RunFolder

    workdir = tmp_path / "run"
    killed, killed_staging = staging_of_a_process(workdir)
    live, live_staging = staging_of_a_process(workdir)
    try:
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
            os.path.basename(p) for p in (killed_staging, live_staging)
        )
        with RunFolder(workdir, keep=1) as run:  # a new training run of the same workdir
            assert os.path.exists(run.path) and str(run.path) not in (killed_staging, live_staging)
            assert not os.path.exists(killed_staging) and os.path.exists(live_staging)
        with staged_folder(tmp_path / "other") as stage:  # another name's staging is none of its business
            assert os.path.exists(live_staging)
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["other", os.path.basename(live_staging)])
        assert not os.path.exists(stage)
    finally:
        live.kill()
        live.wait()
    staging, lock_fd = new_staging(workdir)  # the live one is dead now: removed
    os.close(lock_fd)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["other", staging.name])
