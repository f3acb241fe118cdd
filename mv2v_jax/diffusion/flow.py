"""Rectified flow as Wan trains and samples it (../shared/wan_spec.md §5).

Noising `x_sigma = (1 - sigma) x0 + sigma eps`; the model predicts the velocity `eps - x0` at
DiT timestep `sigma * 1000`; sampling schedules are shifted by `sigma' = s sigma / (1 + (s - 1) sigma)`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm


def shift_sigmas(sigmas: np.ndarray, shift: float) -> np.ndarray:
    """`s sigma / (1 + (s - 1) sigma)`: more steps at high noise for s > 1."""
    sigmas = np.asarray(sigmas, np.float64)
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def add_noise(x0: jax.Array, noise: jax.Array, sigma: jax.Array) -> jax.Array:
    """`(1 - sigma) x0 + sigma noise`, `sigma` broadcast from the batch axis."""
    sigma = sigma.reshape(sigma.shape + (1,) * (x0.ndim - sigma.ndim))
    return (1 - sigma) * x0 + sigma * noise


def velocity_target(x0: jax.Array, noise: jax.Array) -> jax.Array:
    return noise - x0


def euler_schedule(steps: int, shift: float) -> np.ndarray:
    """`steps + 1` sigmas from 1 to 0, shifted (DiffSynth / ReCamMaster's FlowMatchScheduler grid)."""
    return np.append(shift_sigmas(np.linspace(1.0, 0.0, steps + 1)[:-1], shift), 0.0)


def euler_sample(
    velocity: Callable[[jax.Array, jax.Array], jax.Array],
    noise: jax.Array,
    sigmas: np.ndarray,
    progress: bool = True,
) -> jax.Array:
    """Integrates `dx/dsigma = v(x, sigma * 1000)` from `sigmas[0]` to `sigmas[-1]` with Euler steps.

    `velocity(x, timestep)` gets `timestep` of shape `[B]`; each step is one call.
    """
    x = noise
    batch = noise.shape[0]
    steps = list(itertools.pairwise(sigmas))
    for sigma, sigma_next in tqdm(steps, desc="sampling", unit="step", disable=not progress):
        v = velocity(x, jnp.full((batch,), sigma * 1000.0, jnp.float32))
        x = x + (sigma_next - sigma) * v
    return x
