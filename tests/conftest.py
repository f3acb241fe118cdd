"""Test setup: 8 fake CPU devices for the sharding tests, reproducible hypothesis examples, tiny random
PyTorch references."""

import os

# Must happen before JAX initialises its backends.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

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
