"""Rectified flow as Wan trains and samples it (docs/models.md, "Rectified flow and sampling").

Noising `x_sigma = (1 - sigma) x0 + sigma eps`; the model predicts the velocity `eps - x0` at DiT
timestep `sigma * 1000`; schedules are shifted by `sigma' = s sigma / (1 + (s - 1) sigma)`, which puts
more of them at high noise for s > 1.

Training sigmas (`sample_sigmas`): "uniform" (sigma ~ U(0, 1), then shifted; the default, the
continuous form of ReCamMaster's uniform draw over its shifted 1000-step grid) or "logit_normal"
(sigma = sigmoid(N(mean, std)), then shifted; SD3's choice). `loss_weight` offers ReCamMaster's
bell-shaped weight over timesteps, or none.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

TIMESTEP_SAMPLING = ("uniform", "logit_normal")
LOSS_WEIGHTING = ("none", "recammaster")


def shift_sigmas(sigmas, shift: float):
    """`s sigma / (1 + (s - 1) sigma)` (NumPy or JAX arrays)."""
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def add_noise(x0: jax.Array, noise: jax.Array, sigma: jax.Array) -> jax.Array:
    """`(1 - sigma) x0 + sigma noise`, `sigma` `[B]` broadcast over the rest."""
    sigma = sigma.reshape(sigma.shape + (1,) * (x0.ndim - sigma.ndim))
    return (1 - sigma) * x0 + sigma * noise


def velocity_target(x0: jax.Array, noise: jax.Array) -> jax.Array:
    return noise - x0


def sample_sigmas(
    key: jax.Array, batch: int, shift: float, method: str = "uniform", mean: float = 0.0, std: float = 1.0
) -> jax.Array:
    """`[B]` training noise levels in (0, 1), shifted."""
    if method == "uniform":
        u = jax.random.uniform(key, (batch,))
    elif method == "logit_normal":
        u = jax.nn.sigmoid(mean + std * jax.random.normal(key, (batch,)))
    else:
        raise ValueError(f"unknown timestep sampling {method!r}; choose one of {TIMESTEP_SAMPLING}")
    return shift_sigmas(u, shift)


def loss_weight(sigma: jax.Array, kind: str = "none") -> jax.Array:
    """Per-example loss weight. "recammaster": `y = exp(-2 ((1000 sigma - 500) / 1000)^2)` normalised
    as ReCamMaster does over its 1000-step shifted grid (mean weight 1 over that grid)."""
    if kind == "none":
        return jnp.ones_like(sigma)
    if kind == "recammaster":
        grid = shift_sigmas(np.linspace(1, 0, 1001)[:-1], 5.0) * 1000
        y = np.exp(-2 * ((grid - 500) / 1000) ** 2)
        low, total = y.min(), (y - y.min()).sum()
        t = sigma * 1000
        return (jnp.exp(-2 * ((t - 500) / 1000) ** 2) - low) * (1000 / total)
    raise ValueError(f"unknown loss weighting {kind!r}; choose one of {LOSS_WEIGHTING}")
