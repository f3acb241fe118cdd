"""Loading ml_collections config files the way the CLIs name them: `configs/file.py[:arg]`."""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import numbers
import re
import sys
import types
import typing
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


class ConfigValueError(ValueError):
    """A config value of the right type that makes no sense (`steps=0`, `keep_ratio=2.0`, a NaN shift).

    Config dataclasses raise it from `__post_init__` through `require`, naming the field;
    `dataclass_from_config` puts the section in front, so the message names the key as a user writes
    it: `sample.sampling.steps=0: ...` for `--config.sample.sampling.steps=0`.
    """

    def __init__(self, key: str, value: Any, why: str):
        super().__init__(f"{key}={value!r}: {why}")
        self.key, self.value, self.why = key, value, why


def require(ok: bool, key: str, value: Any, why: str) -> None:
    """A config dataclass's check: raises `ConfigValueError(key, value, why)` unless `ok`."""
    if not ok:
        raise ConfigValueError(key, value, why)


def positive(value: float) -> bool:
    """Finite and > 0 (NaN and inf are not)."""
    return math.isfinite(value) and value > 0


def _tuples(value: Any) -> Any:
    """ml_collections gives lists where configs mean tuples (hashable, comparable)."""
    if isinstance(value, list | tuple):
        return tuple(_tuples(v) for v in value)
    return value


def _matches(value: Any, hint: Any) -> bool:
    """Whether `value` is of the annotated type (ints pass for floats, bools pass only for bools)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in args)
    if origin is typing.Literal:
        return value in args
    if origin is tuple:
        if not isinstance(value, tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_matches(v, args[0]) for v in value)
        return len(value) == len(args) and all(_matches(v, a) for v, a in zip(value, args, strict=True))
    if hint is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if hint is type(None):
        return value is None
    return not isinstance(hint, type) or isinstance(value, hint)  # other annotations are not checked


def _type_name(hint: Any) -> str:
    return hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")


def dataclass_from_config(cls: type[T], config: Mapping[str, Any], label: str, nested: Mapping[str, type] = {}) -> T:
    """`cls(**config)` for a frozen config dataclass, with nested sections built the same way.

    A key `cls` does not have, a required key missing, or a value not of its field's annotated type
    is a ValueError naming the key (a config typo must not pass silently); lists become tuples. A value
    `cls.__post_init__` refuses (`ConfigValueError`) is named as `label.key`.
    """
    if not hasattr(config, "items"):
        raise ValueError(f"{label} config must be a mapping of keys to values, got {config!r}")
    values = dict(config.items())
    fields = dataclasses.fields(cls)
    known = {f.name for f in fields}
    unknown = sorted(set(values) - known, key=str)
    if unknown:
        raise ValueError(f"unknown {label} config keys {unknown}; known keys: {sorted(known)}")
    required = [f.name for f in fields if f.default is f.default_factory is dataclasses.MISSING]
    if missing := [name for name in required if name not in values]:
        raise ValueError(f"{label} config lacks required keys {missing}")
    for name, section in nested.items():
        if name in values and not isinstance(values[name], section):
            values[name] = dataclass_from_config(section, values[name], f"{label}.{name}")
    values = {k: v if dataclasses.is_dataclass(v) else _tuples(v) for k, v in values.items()}
    hints = typing.get_type_hints(cls)
    for name, value in values.items():
        if not _matches(value, hints[name]):
            raise ValueError(f"{label} config key {name!r} must be {_type_name(hints[name])}, got {value!r}")
    try:
        return cls(**values)
    except ConfigValueError as e:
        raise ConfigValueError(f"{label}.{e.key}", e.value, e.why) from None


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing for the CLIs (`app.run(main, flags_parser=parse_flags)`), where an override of
    a key the config does not have (`--config.sample.sampling.stepz=2`) is a usage error naming the
    flag: ml_collections raises it from inside the parser as a bare AttributeError / KeyError."""
    from absl import app

    try:
        return app.parse_flags_with_usage(argv)
    except (AttributeError, KeyError) as error:
        cause = error.args[0] if error.args else ""
        text = str(cause.args[0] if isinstance(cause, BaseException) and cause.args else cause)
        key = re.search(r"'([^']+)'", text)
        flag = key and next((a for a in argv[1:] if key[1] in a.partition("=")[0].split(".")[1:]), None)
        if not flag:
            raise
        hint = text.partition("\n")[2]  # ml_collections' "Did you mean ...?"
        print(f"FATAL Flags parsing error: {flag}: the config has no key {key[1]!r}. {hint}".strip(), file=sys.stderr)
        sys.exit(1)
