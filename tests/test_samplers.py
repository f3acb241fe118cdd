"""The samplers step exactly like diffusers' schedulers: same model outputs in, same latents out over a
full 50-step schedule."""

import jax.numpy as jnp
import numpy as np
import pytest
import torch

from mv2v_jax.diffusion import flow
from mv2v_jax.diffusion.samplers import EulerSampler, UniPCSampler, make_sampler


def model_output(x: np.ndarray, step: int) -> np.ndarray:
    """A fake velocity that depends on the sample (so multistep history matters) and on the step."""
    rng = np.random.default_rng(step)
    return (np.tanh(x) * 0.7 + 0.3 * rng.standard_normal(x.shape)).astype(np.float32)


def run_diffusers(scheduler, x0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = torch.from_numpy(x0)
    for i, t in enumerate(scheduler.timesteps):
        v = torch.from_numpy(model_output(x.numpy(), i))
        x = scheduler.step(v, t, x, return_dict=False)[0]
    return x.numpy(), scheduler.timesteps.numpy()


def run_ours(sampler, x0: np.ndarray) -> np.ndarray:
    x = jnp.asarray(x0)
    state = sampler.init(x)
    for i in range(len(sampler.timesteps)):
        x, state = sampler.step(state, i, x, jnp.asarray(model_output(np.asarray(x), i)))
    return np.asarray(x)


@pytest.mark.parametrize("shift", [1.0, 3.0, 5.0])
def test_unipc_matches_diffusers(shift):
    from diffusers import UniPCMultistepScheduler

    scheduler = UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, num_train_timesteps=1000, flow_shift=shift
    )
    scheduler.set_timesteps(50)
    x0 = np.random.default_rng(0).standard_normal((2, 3, 4, 5, 6)).astype(np.float32)
    want, timesteps = run_diffusers(scheduler, x0)
    sampler = UniPCSampler(50, shift)
    np.testing.assert_array_equal(sampler.timesteps, timesteps)
    np.testing.assert_array_equal(sampler.sigmas, scheduler.sigmas.numpy())
    assert np.abs(run_ours(sampler, x0) - want).max() <= 1e-5


@pytest.mark.parametrize("shift", [1.0, 5.0])
def test_euler_matches_diffusers(shift):
    from diffusers import FlowMatchEulerDiscreteScheduler

    scheduler = FlowMatchEulerDiscreteScheduler(shift=shift)
    scheduler.set_timesteps(50)
    x0 = np.random.default_rng(1).standard_normal((2, 3, 4, 5, 6)).astype(np.float32)
    want, timesteps = run_diffusers(scheduler, x0)
    sampler = EulerSampler(50, shift)
    np.testing.assert_allclose(sampler.timesteps, timesteps, rtol=1e-6)
    assert np.abs(run_ours(sampler, x0) - want).max() <= 1e-5


class DiffSynthFlowMatch:
    """DiffSynth-Studio's `FlowMatchScheduler(shift, sigma_min=0, extra_one_step=True)` as ReCamMaster
    samples with it, written out from its formula in torch float32: the reference for `grid="diffsynth"`."""

    def __init__(self, steps: int, shift: float):
        sigmas = torch.linspace(1.0, 0.0, steps + 1)[:-1]
        self.sigmas = shift * sigmas / (1 + (shift - 1) * sigmas)
        self.timesteps = self.sigmas * 1000

    def step(self, model_output, timestep, sample, return_dict=False):
        i = int(torch.argmin((self.timesteps - timestep).abs()))
        sigma_next = 0.0 if i + 1 == len(self.timesteps) else self.sigmas[i + 1]
        return (sample + model_output * (sigma_next - self.sigmas[i]),)


@pytest.mark.parametrize("steps", [5, 50])
def test_euler_on_recammasters_diffsynth_grid(steps):
    reference = DiffSynthFlowMatch(steps, 5.0)
    x0 = np.random.default_rng(steps).standard_normal((2, 3, 4, 5, 6)).astype(np.float32)
    want, timesteps = run_diffusers(reference, x0)
    sampler = make_sampler("euler", steps, 5.0, grid="diffsynth")
    np.testing.assert_allclose(sampler.timesteps, timesteps, rtol=1e-6)  # float timesteps, not rounded
    assert sampler.timesteps[0] == 1000.0 and sampler.sigmas[-1] == 0.0
    assert not np.allclose(sampler.sigmas, EulerSampler(steps, 5.0).sigmas)  # not diffusers' grid
    assert np.abs(run_ours(sampler, x0) - want).max() <= 1e-5
    with pytest.raises(ValueError, match="diffusers grid"):
        make_sampler("unipc", steps, 5.0, grid="diffsynth")


def test_few_steps_and_higher_order_unipc():
    from diffusers import UniPCMultistepScheduler

    for steps, order in ((1, 2), (2, 2), (7, 3)):
        scheduler = UniPCMultistepScheduler(
            prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0, solver_order=order
        )
        scheduler.set_timesteps(steps)
        x0 = np.random.default_rng(steps).standard_normal((1, 2, 3, 4, 2)).astype(np.float32)
        want, _ = run_diffusers(scheduler, x0)
        assert np.abs(run_ours(UniPCSampler(steps, 3.0, order=order), x0) - want).max() <= 1e-5, (steps, order)


def test_flow_noising_and_shift():
    x0, noise = jnp.ones((2, 3)), jnp.full((2, 3), -1.0)
    sigma = jnp.array([0.0, 0.25])
    np.testing.assert_allclose(flow.add_noise(x0, noise, sigma), [[1, 1, 1], [0.5, 0.5, 0.5]])
    np.testing.assert_allclose(flow.velocity_target(x0, noise), -2 * np.ones((2, 3)))
    np.testing.assert_allclose(flow.shift_sigmas(np.array([0.0, 0.5, 1.0]), 5.0), [0.0, 5 / 6, 1.0])


def test_unknown_sampler_is_named():
    with pytest.raises(ValueError, match="dpm"):
        make_sampler("dpm", 10, 5.0)


def test_training_sigmas_and_weights():
    import jax

    key = jax.random.key(0)
    uniform = np.asarray(flow.sample_sigmas(key, 20000, shift=1.0))
    assert uniform.min() > 0 and uniform.max() < 1 and abs(uniform.mean() - 0.5) < 0.01
    shifted = np.asarray(flow.sample_sigmas(key, 20000, shift=5.0))
    np.testing.assert_allclose(np.median(shifted), flow.shift_sigmas(np.median(uniform), 5.0), rtol=1e-3)
    logit = np.asarray(flow.sample_sigmas(key, 20000, shift=1.0, method="logit_normal"))
    assert abs(np.median(logit) - 0.5) < 0.01 and logit.std() < uniform.std()  # concentrated mid-noise
    grid = flow.shift_sigmas(np.linspace(1, 0, 1001)[:-1], 5.0)
    weights = np.asarray(flow.loss_weight(jnp.asarray(grid), "recammaster"))
    assert abs(weights.mean() - 1.0) < 1e-4 and weights.min() < 1e-6  # ReCamMaster: sums to 1000, min 0
    assert weights[np.argmin(np.abs(grid - 0.5))] == weights.max()  # peak at t = 500
    with pytest.raises(ValueError, match="cosine"):
        flow.sample_sigmas(key, 2, 1.0, method="cosine")
