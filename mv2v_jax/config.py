"""Loading ml_collections config files the way the CLIs name them: `configs/file.py[:arg]`."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import ml_collections

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
