"""The tasks Memory-V2V runs, by name (`get_task("nvs")`); each is one object (tasks.base.Task)."""

from __future__ import annotations

from mv2v_jax.tasks.base import Task
from mv2v_jax.tasks.long_edit import LongVideoEditing
from mv2v_jax.tasks.nvs import NovelViewSynthesis

TASKS: dict[str, Task] = {task.name: task for task in (NovelViewSynthesis(), LongVideoEditing())}


def get_task(name: str) -> Task:
    """The task called `name`; a clear error naming the choices otherwise."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of {sorted(TASKS)}")
    return TASKS[name]


__all__ = ["TASKS", "Task", "get_task"]
