"""Training checkpoints with orbax: the whole `TrainState` plus the data iterator, async, atomic.

A checkpoint step directory holds `state` (parameters, optimizer state, EMA, step: restored straight
into the current mesh's shardings) and `data` (the grain iterator's position), committed together
by orbax's rename-on-finish, so a run killed at any moment resumes from the last complete step.
Retention: the last `keep` steps plus the one with the best validation loss.
"""

from __future__ import annotations

import json
import os
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp
from etils import epath

from mv2v_jax.io.atomic import atomic_output

BEST_FILE = "best.json"


def as_path(path: str | os.PathLike) -> epath.Path:
    """A local path (made absolute, as orbax wants) or a URI such as `gs://bucket/run`, kept as it is
    (`pathlib` would turn it into the local folder `gs:/bucket/run`)."""
    path = epath.Path(path)
    return path if "://" in str(path) else path.absolute()


class Checkpointer:
    """Saves and restores (TrainState, data iterator) under `directory` (local or `gs://`); every process
    of a multi-host run takes part in each save and restore."""

    def __init__(self, directory: str | os.PathLike, keep: int = 3):
        self.directory = as_path(directory)
        self.keep = keep
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=None, create=True, enable_async_checkpointing=True),
        )

    @property
    def latest(self) -> int | None:
        return self.manager.latest_step()

    def _best(self) -> dict[str, Any]:
        path = self.directory / BEST_FILE
        return json.loads(path.read_text()) if path.exists() else {}

    def save(self, step: int, state: Any, iterator: grain.DatasetIterator, val_loss: float | None = None) -> None:
        """Starts an async save of `step`; older steps beyond the retention policy are deleted."""
        self.manager.wait_until_finished()  # one save in flight at a time; retention sees committed steps
        self.manager.save(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardSave(state), data=grain.checkpoint.CheckpointSave(iterator)),
        )
        best = self._best()
        if val_loss is not None and val_loss < best.get("val_loss", float("inf")):
            best = {"step": step, "val_loss": val_loss}
            if jax.process_index() == 0:
                self._write_best(best)
        keep = set(sorted(self.manager.all_steps())[-self.keep :]) | {step} | {best.get("step")}
        for old in self.manager.all_steps():
            if old not in keep:
                self.manager.delete(old)

    def _write_best(self, best: dict[str, Any]) -> None:
        path = self.directory / BEST_FILE
        if "://" in str(path):  # an object store replaces an object whole
            path.write_text(json.dumps(best))
            return
        with atomic_output(path) as tmp:
            tmp.write_text(json.dumps(best))

    def restore(self, abstract_state: Any, iterator: grain.DatasetIterator, step: int | None = None) -> Any:
        """The state at `step` (default: the latest) laid out like `abstract_state` (ShapeDtypeStructs
        with shardings); `iterator` is moved to where that step's data stopped."""
        step = self.latest if step is None else step
        restored = self.manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state), data=grain.checkpoint.CheckpointRestore(iterator)
            ),
        )
        return restored.state

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()


def abstract_like(state: Any) -> Any:
    """ShapeDtypeStructs carrying each array's sharding: what `restore` fills."""
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding), state)
