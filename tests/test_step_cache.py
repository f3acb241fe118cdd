"""Step caching in the sampling Denoiser (pipelines.step_cache): off it changes nothing, at threshold 0 it
skips nothing, above it skips steps and the turn record counts the blocks that actually ran (counted on
the device by a callback in the block runner), all in one compiled program per signature."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from train_fixtures import micro_config

from mv2v_jax.config import ConfigValueError, dataclass_from_config
from mv2v_jax.diffusion.samplers import denoise
from mv2v_jax.memory.builders import Conditions, MemoryBatch
from mv2v_jax.memory.model import MemoryConfig, MemoryDiT
from mv2v_jax.models.text.conditioning import TextConditioning
from mv2v_jax.models.wan.dit import BlockRunner
from mv2v_jax.pipelines.build import check_sample_config
from mv2v_jax.pipelines.denoiser import Denoiser, SamplingConfig
from mv2v_jax.pipelines.step_cache import StepCacheConfig, uncached_counts
from mv2v_jax.tasks import get_task

SHAPE = (3, 8, 8, 4)  # target latents [T, h, w, C]
STEPS = 8
SAMPLING = SamplingConfig(steps=STEPS, guidance=3.0, keep_ratio=0.5, negative_prompt="no")


@pytest.fixture(scope="module")
def model() -> MemoryDiT:
    """3 blocks, merging before blocks 1 and 2 (inside the blocks a reused step skips), a random head."""
    model = MemoryDiT(MemoryConfig.from_config(micro_config("nvs")["model"]), rngs=nnx.Rngs(0))
    kernel = model.dit.head.proj.kernel
    kernel[...] = jax.random.normal(jax.random.key(3), kernel.shape) * 0.1
    return model


@pytest.fixture(scope="module")
def conditions() -> Conditions:
    rng = np.random.default_rng(0)
    normal = lambda *shape: jnp.asarray(rng.standard_normal(shape), jnp.float32)
    memory = MemoryBatch(
        normal(1, 3, *SHAPE), jnp.array([[True, True, False]]), jnp.array([[1, 2, 0]]), normal(1, 3, SHAPE[0], 12)
    )
    return Conditions(normal(1, *SHAPE), memory, {"camera": normal(1, SHAPE[0], 12)})


def text() -> TextConditioning:
    """A stand-in encoder: a fixed context per prompt length, so guidance has two contexts to contrast."""
    return TextConditioning(lambda p: np.random.default_rng(len(p[0])).standard_normal((1, 3, 16)), text_dim=16)


def turn(model, conditions, cache: StepCacheConfig, sampling=SAMPLING) -> tuple[np.ndarray, Denoiser]:
    denoiser = Denoiser(model, get_task("nvs"), sampling, text(), cache=cache)
    latents, _ = denoiser.sample(conditions, "a prompt", 0, SHAPE)
    return latents, denoiser


@pytest.fixture
def block_runs(monkeypatch) -> list[tuple[int, int, int]]:
    """`(start, stop, passes)` of every block range the compiled programs actually ran (not merely traced:
    a range inside the skipped branch of a `lax.cond` reports nothing)."""
    runs, run = [], BlockRunner.__call__

    def counted(self, state, start, stop):
        passes = state.x.shape[0]
        jax.debug.callback(lambda: runs.append((start, stop, passes)))
        return run(self, state, start, stop)

    monkeypatch.setattr(BlockRunner, "__call__", counted)
    return runs


def test_off_is_the_plain_guided_velocity_bit_for_bit(model, conditions):
    latents, denoiser = turn(model, conditions, StepCacheConfig())
    graphdef, state = nnx.split(model)

    @jax.jit
    def velocity(state, x, t, context):  # classifier-free guidance written out (the weights an argument, as there)
        pair = lambda a: jnp.repeat(a, 2, axis=0)
        dit = nnx.merge(graphdef, state)
        streams = get_task("nvs").streams(pair(x), jax.tree.map(pair, conditions), dit.config.tokenizers)
        v = dit(streams, pair(t[:1]), context, keep_ratio=SAMPLING.keep_ratio)
        return v[1:] + SAMPLING.guidance * (v[:1] - v[1:])

    context = denoiser.context("a prompt")
    noise = jax.random.normal(jax.random.key(0), (1, *SHAPE))
    expected = denoise(lambda x, t: velocity(state, x, t, context), noise, SAMPLING.make_sampler())
    np.testing.assert_array_equal(latents, np.asarray(expected[0]))
    record = denoiser.record(denoiser.cost(conditions, SHAPE), 0.0)
    assert (record["forwards"], record["cached_forwards"], record["steps_skipped"]) == (2 * STEPS, 0, 0)
    assert record["flops"] == 2 * STEPS * record["flops_per_forward"]


@pytest.mark.parametrize("kind", ["first_block", "timestep"])
def test_threshold_zero_skips_nothing(model, conditions, kind):
    plain, _ = turn(model, conditions, StepCacheConfig())
    cached, denoiser = turn(model, conditions, StepCacheConfig(kind, threshold=0.0, warmup=0))
    assert denoiser.last_counts == uncached_counts(STEPS, passes=2)
    # The same blocks in two programs split differently: equal to float32 rounding (2.3e-7 measured).
    np.testing.assert_allclose(cached, plain, rtol=0, atol=1e-6 * np.abs(plain).max())


@pytest.mark.parametrize(
    ("cache", "tolerance"),
    [
        (StepCacheConfig("first_block", threshold=0.1, warmup=1), 0.02),  # measured 0.007, 4 of 8 steps skipped
        (StepCacheConfig("timestep", threshold=0.3, warmup=1), 0.1),  # measured 0.064, 6 of 8
        (StepCacheConfig("first_block", threshold=0.2, warmup=2, uncond_every=2), 0.04),  # measured 0.013
    ],
)
def test_skipped_steps_are_counted_as_they_ran(model, conditions, block_runs, cache, tolerance):
    plain, _ = turn(model, conditions, StepCacheConfig())
    block_runs.clear()
    cached, denoiser = turn(model, conditions, cache)
    counts, layers = denoiser.last_counts, model.config.dit.num_layers
    remainder = (1, layers) if cache.kind == "first_block" else (0, layers)
    full = sum(p for start, stop, p in block_runs if (start, stop) == remainder)
    assert counts["skipped_steps"] > 0 and counts["full_passes"] == full
    if cache.kind == "first_block":  # block 0 runs for every pass of every step
        assert counts["full_passes"] + counts["cached_passes"] == sum(p for s, _, p in block_runs if s == 0)
    reused = sum(1 for s, _, p in block_runs if s == 0 and p == 1)  # steps that ran the conditional pass alone
    assert counts["uncond_reused"] == reused == (3 if cache.uncond_every == 2 else 0)  # steps 3, 5, 7 of 8
    assert counts["full_passes"] + counts["cached_passes"] == 2 * STEPS - counts["uncond_reused"]
    record = denoiser.record(cost := denoiser.cost(conditions, SHAPE), 0.0)
    cached_flops = cost.first_block_flops if cache.kind == "first_block" else 0
    assert record["flops"] == counts["full_passes"] * cost.flops + counts["cached_passes"] * cached_flops
    assert record["flops"] < 2 * STEPS * cost.flops
    error = np.abs(cached - plain).max() / np.abs(plain).max()
    assert error < tolerance
    assert denoiser.compilations == 1  # one program for every step, the skip decided inside it


def test_one_program_per_signature_with_caching(model, conditions):
    denoiser = Denoiser(model, get_task("nvs"), SAMPLING, text(), cache=StepCacheConfig("first_block", 0.1, 1, 2))
    first, _ = denoiser.sample(conditions, "a prompt", 0, SHAPE)
    second, _ = denoiser.sample(conditions, "a prompt", 0, SHAPE)
    assert denoiser.compilations == 1
    np.testing.assert_array_equal(first, second)  # the cache starts empty every turn


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"kind": "fbcache"}, r"sample\.cache\.kind='fbcache': choose one of \['none', 'first_block', 'timestep'\]"),
        ({"threshold": -0.1}, r"sample\.cache\.threshold=-0\.1: a relative change >= 0"),
        ({"threshold": float("nan")}, r"sample\.cache\.threshold=nan"),
        ({"warmup": -1}, r"sample\.cache\.warmup=-1: a number of steps >= 0"),
        ({"uncond_every": 0}, r"sample\.cache\.uncond_every=0: a number of steps >= 1"),
        ({"uncond_every": 1.5}, r"sample\.cache config key 'uncond_every' must be int"),
        ({"treshold": 0.1}, r"unknown sample\.cache config keys \['treshold'\]"),
    ],
)
def test_bad_cache_values_name_the_key(section, message):
    with pytest.raises(ValueError, match=message):
        dataclass_from_config(StepCacheConfig, section, "sample.cache")


def test_check_sample_config_checks_the_cache_section():
    from mv2v_jax.config import load_config

    sample = load_config("configs/tiny_nvs.py").sample.to_dict()
    check_sample_config(sample, "nvs")  # absent or "none": off
    with pytest.raises(ConfigValueError, match=r"sample\.cache\.kind='teacache'"):
        check_sample_config(sample | {"cache": {"kind": "teacache"}}, "nvs")


@pytest.mark.slow  # 4 programs and 200 steps of the shipped model: about a minute on 2 quiet cores
def test_real_configs_cache_on_a_shipped_memory_turn(block_runs, tmp_path):
    """The real configs' `sample.cache` on the shipped NVS model at their 50 steps: two turns of a held-out
    scene (the second retrieving the first), cached against uncached, agree to 30 dB PSNR
    (bench/step_cache.py measures more), and each record's forward count is what ran."""
    from mv2v_jax.config import load_config
    from mv2v_jax.data.synthetic import SceneConfig
    from mv2v_jax.eval.consistency import held_out_scene, run_setting
    from mv2v_jax.eval.metrics import psnr
    from mv2v_jax.pipelines.build import build_pipeline

    config = load_config("configs/tiny_nvs.py")
    sample = config.sample
    sample.sampling.steps = 50
    sample.cache = load_config("configs/recammaster_nvs.py").sample.cache
    assert sample.cache.kind != "none"
    scene, cams = held_out_scene(0, SceneConfig.from_config(dict(config.data.source.scene)), 2, "covisible")
    outputs, forwards = {}, {}
    for name, kind in (("cached", sample.cache.kind), ("uncached", "none")):
        sample.cache.kind = kind
        block_runs.clear()
        outputs[name] = run_setting(build_pipeline(sample, "nvs"), sample, "memory", scene, cams, tmp_path / name)
        records = [json.loads(p.read_text()) for p in sorted((tmp_path / name / "memory" / "turns").glob("*.json"))]
        assert records[1]["retrieved"]
        layers = config.model.dit.num_layers
        remainder = (1, layers) if kind == "first_block" else (0, layers)
        assert sum(r["forwards"] for r in records) == sum(p for s, e, p in block_runs if (s, e) == remainder)
        forwards[name] = sum(r["forwards"] for r in records)
    assert forwards["uncached"] == 2 * 50 and forwards["cached"] <= forwards["uncached"] / 1.6
    for cached, plain in zip(outputs["cached"], outputs["uncached"], strict=True):
        assert psnr(cached, plain) >= 30.0
