"""Test setup: 8 fake CPU devices for the sharding tests, and tiny random PyTorch references."""

import os

# Must happen before JAX initialises its backends.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np
import pytest


def relative_error(ours, reference) -> float:
    """max|ours - reference| / max|reference|, the parity metric of the issues."""
    ours, reference = np.asarray(ours, np.float64), np.asarray(reference, np.float64)
    return float(np.abs(ours - reference).max() / np.abs(reference).max())


@pytest.fixture
def rng():
    return np.random.default_rng(0)
