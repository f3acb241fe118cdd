"""The user cache folder: JAX's compiled programs and which weights directories were verified.

Both are per user, not per session or run: a compiled program depends on the model and the shapes,
which every session of the same config shares, and a weights directory is often shared read-only.
The folder is `$MV2V_CACHE_DIR` if set, else `$XDG_CACHE_HOME/mv2v_jax` (`~/.cache/mv2v_jax`); set
`MV2V_CACHE_DIR=off` to cache nothing. Deleting it only costs time.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "MV2V_CACHE_DIR"
OFF = "off"


def cache_root() -> Path | None:
    """The cache folder (not created here), or None when caching is off."""
    configured = os.environ.get(ENV_VAR)
    if configured is not None:
        return None if configured.strip().lower() in (OFF, "") else Path(configured).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "mv2v_jax"


def enable_compilation_cache() -> Path | None:
    """Turns on JAX's persistent compilation cache in `<cache>/jax`: a second process compiling the same
    program (the next `sample.py` turn, a resumed training run) loads it instead. Returns the folder."""
    root = cache_root()
    if root is None:
        return None
    import jax

    folder = root / "jax"
    jax.config.update("jax_compilation_cache_dir", str(folder))
    # Every program, not only those that took JAX's default 1 s to compile: a sampling turn also runs
    # about 50 small ones (the sampler's arithmetic, retrieval's scores, the codec), whose compiling took
    # a next turn of configs/tiny_nvs.py about 1 s of its 6 s of CPU time on 2 cores.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    return folder
