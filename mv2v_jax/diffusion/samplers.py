"""Flow-matching samplers: Euler and UniPC multistep, step for step as diffusers runs them.

- `EulerSampler` is `x <- x + (sigma_next - sigma) v` on one of two sigma grids:
  `grid="diffusers"`, diffusers' `FlowMatchEulerDiscreteScheduler(shift=shift)`; `grid="diffsynth"`,
  DiffSynth-Studio's `FlowMatchScheduler(shift, sigma_min=0, extra_one_step=True)` that ReCamMaster
  samples with: `sigmas = shift(linspace(1, 0, steps + 1)[:-1])` in float32, then 0, and the DiT
  receives float timesteps `sigma * 1000`.
- `UniPCSampler` is diffusers' `UniPCMultistepScheduler(prediction_type="flow_prediction",
  use_flow_sigmas=True, solver_order=2, solver_type="bh2", predict_x0=True, lower_order_final=True)`,
  the Wan default. Its scalar coefficients are computed in float32 NumPy exactly as diffusers computes
  them with float32 torch scalars, so the latents agree to float rounding over a whole schedule.

Both are functional: `state = sampler.init(x)`, then per step `x, state = sampler.step(state, i, x, v)`
where `v` is the model's velocity at `sampler.timesteps[i]`. The DiT receives `timesteps[i]`:
UniPC's are integers (diffusers casts `sigma * 1000` to int64, as Wan's own sampler does).

Shift per model (`flow_shift`): Wan2.1 T2V 5.0 (diffusers' 480p repos ship 3.0), Wan2.2 TI2V-5B and
LucyEdit 5.0 (UniPC), ReCamMaster 5.0 with Euler on the DiffSynth grid.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from mv2v_jax.diffusion.flow import shift_sigmas

SAMPLERS = ("euler", "unipc")
GRIDS = ("diffusers", "diffsynth")


@dataclasses.dataclass(frozen=True)
class EulerSampler:
    """Euler on diffusers' `FlowMatchEulerDiscreteScheduler(shift=shift).set_timesteps(steps)` grid, or
    on DiffSynth's (ReCamMaster's) grid with `grid="diffsynth"`."""

    steps: int
    shift: float = 5.0
    num_train_timesteps: int = 1000
    grid: str = "diffusers"

    def __post_init__(self):
        if self.grid not in GRIDS:
            raise ValueError(f"unknown sigma grid {self.grid!r}; choose one of {GRIDS}")

    @property
    def sigmas(self) -> np.ndarray:
        """`[steps + 1]` float32, ending at 0."""
        if self.grid == "diffsynth":
            base = np.linspace(1, 0, self.steps + 1, dtype=np.float32)[:-1]
            shift = np.float32(self.shift)
            return np.append(shift * base / (1 + (shift - 1) * base), np.float32(0.0)).astype(np.float32)
        n = self.num_train_timesteps
        # The scheduler shifts its training grid once, then shifts the inference grid drawn between the
        # shifted extremes again; reproduced as is.
        sigma_min = np.float32(shift_sigmas(np.float32(1.0 / n), self.shift))
        grid = np.linspace(1.0 * n, float(sigma_min) * n, self.steps).astype(np.float32) / n
        shifted = (self.shift * grid / (1 + (self.shift - 1) * grid)).astype(np.float32)
        return np.append(shifted, np.float32(0.0))

    @property
    def timesteps(self) -> np.ndarray:
        return self.sigmas[:-1] * self.num_train_timesteps

    def init(self, x: jax.Array) -> Any:
        return ()

    def step(self, state: Any, i: int, x: jax.Array, velocity: jax.Array) -> tuple[jax.Array, Any]:
        sigmas = self.sigmas
        x = x.astype(jnp.float32)
        return x + (sigmas[i + 1] - sigmas[i]) * velocity.astype(jnp.float32), state


@dataclasses.dataclass(frozen=True)
class UniPCState:
    """The multistep history: converted outputs (x0 predictions) of the last `order` steps, oldest
    first, and the sample the last predictor started from."""

    outputs: tuple[jax.Array, ...]
    last_sample: jax.Array | None


def _lambda(sigma: np.float32) -> np.float32:
    """log(alpha) - log(sigma) with alpha = 1 - sigma (flow sigmas), float32."""
    with np.errstate(divide="ignore"):
        return np.log(np.float32(1) - sigma) - np.log(sigma)


@dataclasses.dataclass(frozen=True)
class UniPCSampler:
    """diffusers' UniPC multistep in its flow configuration (bh2, predicting x0)."""

    steps: int
    shift: float = 5.0
    order: int = 2
    num_train_timesteps: int = 1000

    @property
    def sigmas(self) -> np.ndarray:
        """`[steps + 1]` float32: `linspace(1, 1/n, steps + 1)[:-1]` shifted, the first nudged below 1, then 0."""
        n = self.num_train_timesteps
        sigmas = shift_sigmas(np.linspace(1, 1 / n, self.steps + 1)[:-1], self.shift)
        if abs(sigmas[0] - 1) < 1e-6:
            sigmas[0] -= 1e-6  # diffusers: avoids log(0) for alpha in the first updates
        return np.append(sigmas, 0.0).astype(np.float32)

    @property
    def timesteps(self) -> np.ndarray:
        """The integer timesteps the DiT receives."""
        return (self.sigmas[:-1].astype(np.float64) * self.num_train_timesteps).astype(np.int64)

    def init(self, x: jax.Array) -> UniPCState:
        return UniPCState(outputs=(), last_sample=None)

    def _order(self, i: int, history: int) -> int:
        """lower_order_final, and warm-up: order min(order, steps - i, history + 1)."""
        return min(self.order, self.steps - i, history + 1)

    def _coefficients(self, t: int, s0: int, previous: list[int], order: int):
        """Scalar coefficients of one UniP/UniC update from sigma index `s0` to `t` (float32)."""
        sigmas = self.sigmas
        sigma_t, sigma_s0 = sigmas[t], sigmas[s0]
        alpha_t = np.float32(1) - sigma_t
        h = _lambda(sigma_t) - _lambda(sigma_s0)
        rks = [(_lambda(sigmas[si]) - _lambda(sigma_s0)) / h for si in previous[: order - 1]]
        hh = -h
        h_phi_1 = np.expm1(hh)
        h_phi_k = h_phi_1 / hh - np.float32(1)
        b_h = np.expm1(hh)  # bh2
        factorial = 1
        r_rows, b = [], []
        rk_all = np.array([*rks, 1.0], np.float32)
        for k in range(1, order + 1):
            r_rows.append(rk_all ** (k - 1))
            b.append(h_phi_k * np.float32(factorial) / b_h)
            factorial *= k + 1
            h_phi_k = h_phi_k / hh - np.float32(1) / np.float32(factorial)
        with np.errstate(divide="ignore", invalid="ignore"):
            return dict(
                x=np.float32(sigma_t / sigma_s0),
                m0=np.float32(alpha_t * h_phi_1),
                res=np.float32(alpha_t * b_h),
                rks=np.asarray(rks, np.float32),
                R=np.stack(r_rows).astype(np.float32),
                b=np.asarray(b, np.float32),
            )

    def step(self, state: UniPCState, i: int, x: jax.Array, velocity: jax.Array) -> tuple[jax.Array, UniPCState]:
        sigmas = self.sigmas
        x = x.astype(jnp.float32)
        m_now = x - sigmas[i] * velocity.astype(jnp.float32)  # flow prediction -> x0
        history = state.outputs
        if i > 0 and state.last_sample is not None:  # UniC: correct x with the new output
            order = self._order(i - 1, len(history) - 1)
            c = self._coefficients(i, i - 1, [i - 1 - k for k in range(1, order)], order)
            m0 = history[-1]
            d1s = [(history[-1 - k] - m0) / c["rks"][k - 1] for k in range(1, order)]
            rhos = np.array([0.5], np.float32) if order == 1 else np.linalg.solve(c["R"], c["b"]).astype(np.float32)
            correction = sum((rhos[k] * d for k, d in enumerate(d1s)), start=jnp.zeros_like(x))
            correction = correction + rhos[-1] * (m_now - m0)
            x = c["x"] * state.last_sample - c["m0"] * m0 - c["res"] * correction
        history = (*history, m_now)[-self.order :]
        order = self._order(i, len(history) - 1)
        c = self._coefficients(i + 1, i, [i - k for k in range(1, order)], order)
        m0 = history[-1]
        prediction = c["x"] * x - c["m0"] * m0
        if order > 1:  # UniP
            d1s = [(history[-1 - k] - m0) / c["rks"][k - 1] for k in range(1, order)]
            rhos = np.array([0.5], np.float32) if order == 2 else np.linalg.solve(c["R"][:-1, :-1], c["b"][:-1])
            prediction = prediction - c["res"] * sum(np.float32(r) * d for r, d in zip(rhos, d1s, strict=True))
        return prediction, UniPCState(outputs=history, last_sample=x)


def make_sampler(name: str, steps: int, shift: float, grid: str = "diffusers") -> EulerSampler | UniPCSampler:
    """A sampler by name; `grid` picks Euler's sigma grid (UniPC runs on diffusers' flow grid only)."""
    if name == "euler":
        return EulerSampler(steps, shift, grid=grid)
    if name == "unipc":
        if grid != "diffusers":
            raise ValueError(f"the unipc sampler runs on the diffusers grid, not {grid!r}; use euler for {grid!r}")
        return UniPCSampler(steps, shift)
    raise ValueError(f"unknown sampler {name!r}; choose one of {SAMPLERS}")


def denoise(
    velocity: Callable[[jax.Array, jax.Array], jax.Array],
    noise: jax.Array,
    sampler: EulerSampler | UniPCSampler,
    progress: bool = True,
) -> jax.Array:
    """Runs `sampler` from `noise`: `velocity(x, timestep [B])` is called once per step."""
    x, state = noise, sampler.init(noise)
    timesteps = sampler.timesteps
    for i in tqdm(range(len(timesteps)), desc="denoising", unit="step", disable=not progress, leave=False):
        v = velocity(x, jnp.full((noise.shape[0],), timesteps[i], jnp.float32))
        x, state = sampler.step(state, i, x, v)
    return x
