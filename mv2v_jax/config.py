"""Loading ml_collections config files the way the CLIs name them: `configs/file.py[:arg]`."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import math
import numbers
import re
import sys
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import ml_collections

T = TypeVar("T")

# The project's configs: configs/ beside the package in a checkout, mv2v_jax/configs in a wheel (setup.py).
REPO_CONFIGS = Path(__file__).parent / "configs"
if not REPO_CONFIGS.is_dir():
    REPO_CONFIGS = Path(__file__).parents[1] / "configs"


def load_config(spec: str) -> ml_collections.ConfigDict:
    """`get_config(arg)` of the file `spec` names (`path.py` or `path.py:arg`).

    A file that is not there is looked up by name in the project's configs (`REPO_CONFIGS`), so
    `configs/tiny_nvs.py` loads from any folder, and from an installed wheel.
    """
    path, _, arg = spec.partition(":")
    file = Path(path)
    if not file.exists() and (REPO_CONFIGS / file.name).exists():
        file = REPO_CONFIGS / file.name
    if not file.is_file():
        raise FileNotFoundError(f"config file {path} not found")
    module = load_module(file)
    if not hasattr(module, "get_config"):
        raise ValueError(f"config file {file} has no get_config()")
    return module.get_config(arg) if arg else module.get_config()


def load_module(file: str | Path) -> types.ModuleType:
    """The Python file `file` run as a module: configs are files, not a package, and share values this way."""
    module_spec = importlib.util.spec_from_file_location(f"_config_{Path(file).stem}", file)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


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


class FlagError(ValueError):
    """Command-line flags that contradict each other, or one that would be ignored: the message names them."""


def given_flags(*names: str) -> list[str]:
    """`--name` for each of the absl flags `names` the command line set (a flag left at its default is not
    given, whatever its value)."""
    from absl import flags

    return [f"--{name}" for name in names if flags.FLAGS[name].present]


def refuse_flags(given: list[str], why: str) -> None:
    """A FlagError naming the flags `given` (from `given_flags`) and `why` they cannot be used, if any are."""
    if given:
        raise FlagError(f"{', '.join(given)}: {why}")


def check_text(text: str, where: str) -> str:
    """`text` if it is Unicode that can be written as UTF-8, else a ValueError naming `where`: bytes that
    were not UTF-8 reach Python as lone surrogates (a command-line argument, `surrogateescape`), and so
    does a JSON escape such as `"\\ud800"`; a tokenizer or a JSON record would fail on them much later."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        code = ord(text[e.start])
        what = f"the byte 0x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"a lone surrogate U+{code:04X}"
        raise ValueError(f"{where}: not valid UTF-8 text ({what} at character {e.start}); give it as UTF-8") from None
    return text


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


# absl's help flags (absl prints the usage and exits 1; ours exit 0) -> whether the short help is meant.
HELP_FLAGS = {"--help": True, "-help": True, "-h": True, "-?": True, "--helpshort": True, "--helpfull": False}


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing for the CLIs (`run_app(main)`), with usage errors naming the flag where absl or
    ml_collections would give a traceback: an override of a key the config does not have
    (`--config.sample.sampling.stepz=2`), a `--config` file that is missing, is not valid Python or
    whose `get_config()` fails. `--help` prints the usage and exits 0."""
    from absl import app

    options = argv[1 : argv.index("--")] if "--" in argv else argv[1:]
    if asked := next((a for a in options if a in HELP_FLAGS), None):
        app.usage(shorthelp=HELP_FLAGS[asked], writeto_stdout=True)
        sys.exit(0)
    config = _config_spec(options)
    if config is not None and (problem := _config_file_problem(config)):
        _usage_error(f"--config={config}: {problem}")
    try:
        return app.parse_flags_with_usage(argv)
    except Exception as error:
        message = _unknown_key(error, argv) if isinstance(error, AttributeError | KeyError) else None
        if message is None and config is None:
            raise
        # Otherwise the config file itself failed (its get_config() raising NameError, ImportError, ...).
        _usage_error(message or f"--config={config}: get_config() failed: {type(error).__name__}: {error}")


def _unknown_key(error: AttributeError | KeyError, argv: list[str]) -> str | None:
    """ml_collections' bare AttributeError / KeyError for an override of a missing key, as a message
    naming the flag (None if no flag names the key)."""
    cause = error.args[0] if error.args else ""
    text = str(cause.args[0] if isinstance(cause, BaseException) and cause.args else cause)
    key = re.search(r"'([^']+)'", text)
    flag = key and next((a for a in argv[1:] if key[1] in a.partition("=")[0].split(".")[1:]), None)
    if not flag:
        return None
    hint = text.partition("\n")[2]  # ml_collections' "Did you mean ...?"
    return f"{flag}: the config has no key {key[1]!r}. {hint}".strip()


def _config_spec(options: list[str]) -> str | None:
    """The value of `--config` (`--config=X` or `--config X`) as typed, if given."""
    for i, option in enumerate(options):
        name, equals, value = option.partition("=")
        if name in ("--config", "-config"):
            return value if equals else (options[i + 1] if i + 1 < len(options) else None)
    return None


def _config_file_problem(spec: str) -> str | None:
    """Why the config file `spec` (`path.py[:arg]`) cannot be loaded, before ml_collections tries (it
    defers a missing file to a traceback at first use and lets a SyntaxError through), or None."""
    path = Path(spec.partition(":")[0])
    if not path.is_file():
        return "no such config file" if not path.exists() else "not a file"
    try:
        compile(path.read_bytes(), str(path), "exec")
    except SyntaxError as e:  # a file that is not UTF-8 included
        return f"not valid Python: {e.msg} (line {e.lineno})"
    except ValueError as e:  # null bytes
        return f"not valid Python: {e}"
    return None


def _usage_error(message: str) -> NoReturn:
    print(f"FATAL Flags parsing error: {message}", file=sys.stderr)
    sys.exit(1)


TRACEBACK_VAR = "MV2V_TRACEBACK"  # set to 1 to see the traceback of an unexpected error


def unexpected_error(error: Exception) -> str:
    """The one line a CLI prints for an exception its own checks did not foresee (a bug, or an input no
    check covers yet): the error itself, and how to see where it came from."""
    return (
        f"error: {type(error).__name__}: {error} (unexpected: please report it; {TRACEBACK_VAR}=1 shows the traceback)"
    )


def close_progress_bars() -> None:
    """Closes the tqdm bars an exception left open (a Ctrl-C during denoising), so that the error line that
    follows starts a line of its own."""
    tqdm = sys.modules.get("tqdm")
    for bar in list(getattr(getattr(tqdm, "tqdm", None), "_instances", ())):
        bar.close()


class ArgumentParser(argparse.ArgumentParser):
    """argparse for the CLIs that do not use absl flags (`run_app(main, absl_flags=False)`): a usage error
    is one `error:` line naming the argument, exit 2, instead of argparse's usage block and `prog: error:`."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (--help shows the usage)\n")


def int_at_least(least: int) -> Callable[[str], int]:
    """An argparse `type`: an integer >= `least` (a count of scenes, turns, repeats); anything else is
    the parser's one line naming the argument (`argument --scenes: '0' is not an integer >= 1`)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < least:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer >= {least}")
        return value

    return parse


def run_app(main: Callable[[list[str]], int | None], *, absl_flags: bool = True) -> None:
    """`absl.app.run(main)` with `parse_flags`, and Ctrl-C answered with one line and exit 130 instead of
    a traceback (`main`'s `finally` blocks, closing sessions and files, run on the way out). An exception
    `main` does not answer itself is one `unexpected_error` line and exit 1 (`MV2V_TRACEBACK=1`: the
    traceback). `absl_flags=False`: `main` parses its arguments itself (`ArgumentParser`) and gets them
    without the program name; its return value is the exit status.

    A SIGINT the launcher ignored (a background job of a script, `nohup`-style launchers) stays ignored:
    that is how a shell keeps the terminal's Ctrl-C away from its background jobs, so the guard does not
    restore it. Ctrl-C never crashes (mv2v_jax.interrupts): imports finish first, one a gc callback
    swallowed is raised again, and an interrupted tool exits without the interpreter's shutdown, which
    native threads still at work can crash."""
    import os
    import signal

    from absl import app

    from mv2v_jax.interrupts import end_start_guard, exit_interrupted, redeliver_lost_interrupts, whole_imports

    end_start_guard()
    sys.unraisablehook = redeliver_lost_interrupts(sys.unraisablehook)
    try:
        with whole_imports():
            if absl_flags:
                app.run(main, flags_parser=parse_flags)
            else:
                sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C does not cut the line below short
        close_progress_bars()
        exit_interrupted()
    except Exception as error:
        close_progress_bars()
        if os.environ.get(TRACEBACK_VAR):
            raise
        print(unexpected_error(error), file=sys.stderr)
        sys.exit(1)
