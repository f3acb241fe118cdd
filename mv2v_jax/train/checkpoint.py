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
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp
from etils import epath
from orbax.checkpoint import checkpoint_managers

from mv2v_jax.interrupts import deferred_interrupt
from mv2v_jax.io.atomic import is_uri, make_parents, new_staging, remove_empty

METRIC = "val_loss"  # lower is better


def as_path(path: str | os.PathLike) -> epath.Path:
    """A local path (made absolute, as orbax wants) or a URI such as `gs://bucket/run`, kept as it is
    (`pathlib` would turn it into the local folder `gs:/bucket/run`)."""
    path = epath.Path(path)
    return path if is_uri(path) else path.absolute()


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

    def check_fits(self, abstract_state: Any, settings: Mapping[str, Any], step: int | None = None) -> None:
        """Refuses, before orbax restores anything, a checkpoint whose arrays do not fit `abstract_state`
        (the config changed since the run saved it): a CheckpointMismatch naming the first array that
        differs, both shapes, and the keys of `settings` (config key -> its value now, e.g.
        `{"model.dit.dim": 48}`) whose value is a size that changed."""
        step = self.latest if step is None else step
        reader = ocp.StandardCheckpointHandler()
        try:
            with deferred_interrupt("the checkpoint is read"):
                stored = array_shapes(reader.metadata(self.directory / str(step) / "state"))
        finally:
            reader.close()
        if problem := mismatch(stored, array_shapes(abstract_state), settings):
            raise CheckpointMismatch(
                f"checkpoint step {step} in {self.directory} does not fit this config: {problem}; resume with the "
                "config the run was started with, or start a new run in another workdir"
            )

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        """Waits for the save in flight to be committed (a run stopped by Ctrl-C keeps its last save)."""
        with deferred_interrupt("the checkpoint is saved"):
            self.manager.close()


class RunFolder:
    """A training run's workdir, and the checkpointer in it. A new local workdir (missing or empty) is
    staged: the run writes its logs into a hidden folder beside it, renamed to `workdir` just before the
    first checkpoint is saved, so a run that fails before saving anything leaves nothing behind (the
    folder and the parents made for it are removed; the hidden folder of a run killed outright is removed
    by the next run of that workdir).
    A workdir that holds anything already, a URI and a run of several processes (which share one folder)
    are used in place.

    Usage::

        with RunFolder(workdir, keep=3) as run:
            if run.checkpointer is not None and run.checkpointer.latest is not None: ...  # resume
            log into run.path; run.save(step, state, iterator)
    """

    def __init__(self, workdir: str | os.PathLike, keep: int):
        self.workdir, self.keep = as_path(workdir), keep
        self.checkpointer: Checkpointer | None = None
        self._made: list[Path] = []
        self._lock_fd: int | None = None  # a staged folder's lock, held until it is renamed or removed
        local = not is_uri(self.workdir) and jax.process_count() == 1  # a bucket has no renames
        if local and not (self.workdir.is_dir() and any(self.workdir.iterdir())):
            folder = Path(str(self.workdir))
            self._made = make_parents(folder.parent)
            staging, self._lock_fd = new_staging(folder)
            self.path = epath.Path(staging)
        else:
            self.workdir.mkdir(parents=True, exist_ok=True)
            self.path = self.workdir
            self.checkpointer = Checkpointer(self.workdir / "checkpoints", keep)

    def save(self, step: int, state: Any, iterator: grain.DatasetIterator, val_loss: float | None = None) -> None:
        """`Checkpointer.save`; the first one renames a staged run's folder to its workdir first."""
        with deferred_interrupt("the checkpoint is saved"):  # the folder renamed and its checkpoint started
            if self.checkpointer is None:
                os.rename(self.path, self.workdir)  # onto an empty workdir too; one another run filled meanwhile fails
                self.path = self.workdir
                self.checkpointer = Checkpointer(self.workdir / "checkpoints", self.keep)
            self.checkpointer.save(step, state, iterator, val_loss)

    def __enter__(self) -> RunFolder:
        return self

    def __exit__(self, *exc) -> None:
        # Closed on every way out, an error included: orbax's threads and event loop end before the
        # interpreter does (else its shutdown prints tracebacks).
        if self.checkpointer is not None:
            self.checkpointer.close()
        if self.path != self.workdir:
            shutil.rmtree(self.path, ignore_errors=True)
            remove_empty(self._made)
        if self._lock_fd is not None:
            os.close(self._lock_fd)


class CheckpointMismatch(ValueError):
    """A checkpoint saved with another model or optimizer than the config now makes."""


def _key_name(key: Any) -> str:
    for field in ("key", "name", "idx"):  # DictKey, GetAttrKey, SequenceKey
        if hasattr(key, field):
            return str(getattr(key, field))
    return str(key)


def array_shapes(tree: Any) -> dict[str, tuple[int, ...]]:
    """`"params/dit/head/proj/kernel"` -> shape for every array of a train state, abstract or stored (orbax's
    metadata tree); a variable's `value` level is left out of the name."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {
        "/".join(_key_name(k) for k in path).removesuffix("/value"): tuple(leaf.shape)
        for path, leaf in leaves
        if hasattr(leaf, "shape")
    }


# Which config keys hold what a state's top-level part depends on.
PART_KEYS = {"params": "model", "opt_state": "trainable or optimizer", "ema": "step.ema_decay or trainable"}


def _changed_sizes(old: tuple[int, ...], new: tuple[int, ...]) -> set[int]:
    """The sizes of `new` where it differs from `old`."""
    if len(old) != len(new):
        return set(new) - set(old)
    return {n for o, n in zip(old, new, strict=True) if o != n}


def mismatch(
    stored: Mapping[str, tuple[int, ...]], wanted: Mapping[str, tuple[int, ...]], settings: Mapping[str, Any]
) -> str | None:
    """What differs between a checkpoint's array shapes and the ones a config makes, in words, or None."""
    if changed := [name for name in wanted if name in stored and stored[name] != wanted[name]]:
        name = min(changed, key=lambda n: not n.startswith("params/"))  # a parameter, not its optimizer moment
        sizes = set().union(*(_changed_sizes(stored[n], wanted[n]) for n in changed))
        likely = [key for key, value in settings.items() if value in sizes]  # a size that is new is one of these
        because = " or ".join(f"{key} (now {settings[key]})" for key in likely) or "a model setting"
        more = f" (and {len(changed) - 1} more arrays)" if len(changed) > 1 else ""
        return f"{name} is {stored[name]} there but {wanted[name]} here{more}: {because} changed since it was saved"
    extra, missing = sorted(stored.keys() - wanted.keys()), sorted(wanted.keys() - stored.keys())
    if extra or missing:
        names = extra or missing
        part = names[0].partition("/")[0]
        where = "only the checkpoint" if extra else "only this config"
        return (
            f"{len(names)} arrays are in {where}, e.g. {names[0]}: {PART_KEYS.get(part, 'the config')} changed since "
            "it was saved"
        )
    return None


def abstract_like(state: Any) -> Any:
    """ShapeDtypeStructs carrying each array's sharding: what `restore` fills."""
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding), state)
