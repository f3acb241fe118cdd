"""The user cache folder: where it is, how it is moved or turned off, and that a second process loads a
program the first one compiled, a tiny one too."""

import json
import os
import subprocess
import sys
from pathlib import Path

from mv2v_jax.cache import cache_root

REPO = Path(__file__).parents[1]
# Compiles one program after enable_compilation_cache(); prints whether JAX found it in the cache.
PROGRAM = """
import json, jax, jax.numpy as jnp
from jax import monitoring
from mv2v_jax.cache import enable_compilation_cache

hits = []
monitoring.register_event_listener(lambda event, **kw: hits.append(event) if "cache_hits" in event else None)
folder = enable_compilation_cache()  # keeps every program, however quickly it compiled (this one is tiny)
jax.jit(lambda x: jnp.sin(x) @ x.T).lower(jnp.ones((8, 8))).compile()
print(json.dumps({"folder": str(folder), "hit": bool(hits)}))
"""


def test_the_cache_folder_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("MV2V_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "mv2v_jax"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_root() == Path.home() / ".cache" / "mv2v_jax"
    monkeypatch.setenv("MV2V_CACHE_DIR", str(tmp_path / "moved"))
    assert cache_root() == tmp_path / "moved"
    for off in ("off", "OFF", ""):
        monkeypatch.setenv("MV2V_CACHE_DIR", off)
        assert cache_root() is None


def compile_once(cache: str) -> dict:
    environment = {**os.environ, "MV2V_CACHE_DIR": cache, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-c", PROGRAM], env=environment, capture_output=True, text=True, timeout=300, check=True
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_a_second_process_loads_the_compiled_program(tmp_path):
    first = compile_once(str(tmp_path / "cache"))
    assert first == {"folder": str(tmp_path / "cache" / "jax"), "hit": False}
    assert any((tmp_path / "cache" / "jax").iterdir())
    assert compile_once(str(tmp_path / "cache"))["hit"]
    assert compile_once("off") == {"folder": "None", "hit": False}
