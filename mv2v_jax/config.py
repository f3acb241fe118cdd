"""Loading ml_collections config files the way the CLIs name them: `configs/file.py[:arg]`."""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import ml_collections

T = TypeVar("T")

REPO_CONFIGS = Path(__file__).parents[1] / "configs"


def load_config(spec: str) -> ml_collections.ConfigDict:
    """`get_config(arg)` of the file `spec` names (`path.py` or `path.py:arg`).

    A bare file name is also looked up in the repository's `configs/` folder.
    """
    path, _, arg = spec.partition(":")
    file = Path(path)
    if not file.exists() and (REPO_CONFIGS / file.name).exists():
        file = REPO_CONFIGS / file.name
    if not file.is_file():
        raise FileNotFoundError(f"config file {path} not found")
    module_spec = importlib.util.spec_from_file_location(f"_config_{file.stem}", file)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ValueError(f"config file {file} has no get_config()")
    return module.get_config(arg) if arg else module.get_config()


def _tuples(value: Any) -> Any:
    """ml_collections gives lists where configs mean tuples (hashable, comparable)."""
    if isinstance(value, list | tuple):
        return tuple(_tuples(v) for v in value)
    return value


def dataclass_from_config(cls: type[T], config: Mapping[str, Any], label: str, nested: Mapping[str, type] = {}) -> T:
    """`cls(**config)` for a frozen config dataclass, with nested sections built the same way.

    A key `cls` does not have is an error naming it and the known keys (a config typo must not pass
    silently); lists become tuples.
    """
    values = dict(config.items())
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown {label} config keys {unknown}; known keys: {sorted(known)}")
    for name, section in nested.items():
        if name in values and not isinstance(values[name], section):
            values[name] = dataclass_from_config(section, values[name], f"{label}.{name}")
    return cls(**{k: v if dataclasses.is_dataclass(v) else _tuples(v) for k, v in values.items()})
