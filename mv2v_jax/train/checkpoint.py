"""Training checkpoints with orbax: the whole `TrainState` plus the data iterator, async, atomic.

A checkpoint step directory holds `state` (parameters, optimizer state, EMA, step: restored straight
into the current mesh's shardings) and `data` (the grain iterator's position), committed together
by orbax's rename-on-finish, so a run killed at any moment resumes from the last complete step.
Retention is orbax's preservation policies: the last `keep` steps, and the one with the lowest
validation loss (saved with its step as orbax metrics, `{"val_loss": ...}`); orbax deletes the rest
once a save is committed.
"""

from __future__ import annotations

import os
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp
from etils import epath
from orbax.checkpoint import checkpoint_managers

from mv2v_jax.interrupts import deferred_interrupt

METRIC = "val_loss"  # lower is better


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
        lowest_loss = checkpoint_managers.BestN(
            get_metric_fn=lambda metrics: metrics[METRIC], reverse=True, n=1, keep_checkpoints_without_metrics=False
        )
        with deferred_interrupt("the checkpoints are listed"):  # it reads their metadata
            self.manager = ocp.CheckpointManager(
                self.directory,
                options=ocp.CheckpointManagerOptions(
                    create=True,
                    enable_async_checkpointing=True,
                    preservation_policy=checkpoint_managers.AnyPreservationPolicy(
                        [checkpoint_managers.LatestN(n=keep), lowest_loss]
                    ),
                    best_fn=lambda metrics: metrics[METRIC],
                    best_mode="min",
                ),
            )

    @property
    def latest(self) -> int | None:
        return self.manager.latest_step()

    @property
    def best(self) -> int | None:
        """The committed step with the lowest validation loss (the latest if none has one)."""
        return self.manager.best_step()

    # Ctrl-C during orbax's calls takes effect when they return (mv2v_jax.interrupts): cut in their
    # middle, they leave tensorstore's threads calling into a closed event loop.

    def save(self, step: int, state: Any, iterator: grain.DatasetIterator, val_loss: float | None = None) -> None:
        """Starts an async save of `step` (with its validation loss, when there is one); steps the
        retention policy drops are deleted once it is committed."""
        with deferred_interrupt("the checkpoint is saved"):
            self.manager.wait_until_finished()  # one save in flight at a time
            self.manager.save(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(state), data=grain.checkpoint.CheckpointSave(iterator)
                ),
                metrics=None if val_loss is None else {METRIC: float(val_loss)},
            )

    def restore(
        self, abstract_state: Any, iterator: grain.DatasetIterator | None = None, step: int | None = None
    ) -> Any:
        """The state at `step` (default: the latest) laid out like `abstract_state` (ShapeDtypeStructs
        with shardings); `iterator`, when given, is moved to where that step's data stopped."""
        step = self.latest if step is None else step
        args = {"state": ocp.args.StandardRestore(abstract_state)}
        if iterator is not None:
            args["data"] = grain.checkpoint.CheckpointRestore(iterator)
        with deferred_interrupt("the checkpoint is read"):
            return self.manager.restore(step, args=ocp.args.Composite(**args)).state

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        """Waits for the save in flight to be committed (a run stopped by Ctrl-C keeps its last save)."""
        with deferred_interrupt("the checkpoint is saved"):
            self.manager.close()


def abstract_like(state: Any) -> Any:
    """ShapeDtypeStructs carrying each array's sharding: what `restore` fills."""
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding), state)
