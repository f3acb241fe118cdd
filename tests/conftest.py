"""Test setup: 8 fake CPU devices for the sharding tests, reproducible hypothesis examples, tiny random
PyTorch references, a user cache folder of the run's own."""

import atexit
import os
import shutil
import tempfile

# Must happen before JAX initialises its backends; other XLA flags given (make test's) are kept.
if "--xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=8".strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Compiled programs and verified weights (mv2v_jax.cache) of this run, the CLIs it starts included.
if "MV2V_CACHE_DIR" not in os.environ:
    os.environ["MV2V_CACHE_DIR"] = tempfile.mkdtemp(prefix="mv2v-test-cache-")
    atexit.register(shutil.rmtree, os.environ["MV2V_CACHE_DIR"], ignore_errors=True)

import numpy as np
import pytest
from hypothesis import settings

# The default suite draws the same examples on every run (a red CI run is reproducible here);
# HYPOTHESIS_PROFILE=explore draws new ones.
settings.register_profile("default", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


def relative_error(ours, reference) -> float:
    """max|ours - reference| / max|reference|, the parity metric of the issues."""
    ours, reference = np.asarray(ours, np.float64), np.asarray(reference, np.float64)
    return float(np.abs(ours - reference).max() / np.abs(reference).max())


@pytest.fixture
def rng():
    return np.random.default_rng(0)
