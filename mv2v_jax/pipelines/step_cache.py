"""Training-free step caching for sampling (`sample.cache`): steps whose DiT forward would change
little reuse what the last computed step's blocks added (docs/step_caching.md).

- "first_block" (FBCache): block 0 always runs; when the relative L1 change of its residual (its output
  minus its input) since the last fully computed step is below `threshold`, blocks 1 to the last are
  skipped and their residual from that step is added to block 0's output.
- "timestep" (TeaCache without its fitted rescaling, model-free): the relative L1 change of block 0's
  modulated input (the noisy tokens modulated by the timestep embedding) between consecutive steps is
  accumulated; while the sum is below `threshold` every block is skipped and the whole stack's residual
  from the last computed step is reused (the sum restarts at 0 when a step is computed).
- `uncond_every` (guidance): the unconditional pass runs on every `uncond_every`-th step only; between,
  the unconditional velocity is the conditional one plus the difference (unconditional minus
  conditional) of the last step that ran both.

Residuals are cached on the target tokens only (the first `num_target`, which merging leaves in place
and which alone feed the head): token merging inside the skipped blocks changes the memory tokens'
layout, never the target's, so a cached residual `[passes, num_target, D]` adds back onto the target's
states after block 0 (or entering it) whatever the layout in between. Decisions are taken on the
conditional pass (row 0), which every step computes, for all passes of the step at once.

Everything runs inside the one compiled velocity per input signature: the cache state is an argument
and a result of the program, and `jax.lax.cond` picks the computed or the cached remainder.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import struct

from mv2v_jax.config import require
from mv2v_jax.models.wan.dit import BlockRunner
from mv2v_jax.models.wan.sequence import BlockState

KINDS = ("none", "first_block", "timestep")


@dataclasses.dataclass(frozen=True)
class StepCacheConfig:
    """Attributes: kind (KINDS), threshold (relative L1 change below which a step reuses the cache),
    warmup (the first steps always computed, both passes), uncond_every (guidance: the unconditional
    pass every this many steps after the warm-up; 1: every step).

    Paper-silent (the paper samples every step): off unless a config turns it on. The real configs use
    first_block at 0.10 with warmup 2, measured on the shipped models at 50 steps (bench/step_cache.py,
    docs/step_caching.md).
    """

    kind: str = "none"
    threshold: float = 0.05
    warmup: int = 2
    uncond_every: int = 1

    def __post_init__(self):
        require(self.kind in KINDS, "kind", self.kind, f"choose one of {list(KINDS)}")
        threshold_ok = math.isfinite(self.threshold) and self.threshold >= 0
        require(threshold_ok, "threshold", self.threshold, "a relative change >= 0 (0: never reuse)")
        require(self.warmup >= 0, "warmup", self.warmup, "a number of steps >= 0")
        require(self.uncond_every >= 1, "uncond_every", self.uncond_every, "a number of steps >= 1 (1: every step)")

    def active(self, guided: bool) -> bool:
        """Whether sampling carries a cache at all (else the plain velocity runs)."""
        return self.kind != "none" or (guided and self.uncond_every > 1)


NO_STEP_CACHE = StepCacheConfig()


@struct.dataclass
class StepCacheState:
    """What the denoising loop carries from step to step (static shapes: P passes, n target tokens).

    Attributes:
      step: `[]` int32, steps taken.
      indicator: `[1, n, D]` float32, the decision's reference on the conditional pass: block 0's
        residual at the last computed step ("first_block") or block 0's modulated input at the
        previous step ("timestep").
      distance: `[]` float32, the accumulated change since the last computed step ("timestep").
      residual: `[P, n, D]` float32, what the skipped blocks added to the target tokens at the last
        step that computed them, per pass.
      guidance: velocity-shaped `[1, F, H, W, C]`, unconditional minus conditional velocity at the last
        step that ran both.
      full_passes, cached_passes: `[]` int32, passes that ran every block / reused the residual.
      skipped_steps: `[]` int32, steps that reused the residual.
      uncond_reused: `[]` int32, steps whose unconditional pass was not run.
    """

    step: jax.Array
    indicator: jax.Array
    distance: jax.Array
    residual: jax.Array
    guidance: jax.Array
    full_passes: jax.Array
    cached_passes: jax.Array
    skipped_steps: jax.Array
    uncond_reused: jax.Array

    @classmethod
    def init(cls, passes: int, target_tokens: int, dim: int, velocity_shape: tuple[int, ...]) -> StepCacheState:
        """Nothing cached: the zero indicator makes the first change infinite (or NaN), so step 0 computes."""
        count = jnp.zeros((), jnp.int32)
        return cls(
            step=count,
            indicator=jnp.zeros((1, target_tokens, dim), jnp.float32),
            distance=jnp.zeros((), jnp.float32),
            residual=jnp.zeros((passes, target_tokens, dim), jnp.float32),
            guidance=jnp.zeros(velocity_shape, jnp.float32),
            full_passes=count,
            cached_passes=count,
            skipped_steps=count,
            uncond_reused=count,
        )

    def counts(self) -> dict[str, int]:
        """The turn record's counts of what ran."""
        return {name: int(getattr(self, name)) for name in COUNTS}


COUNTS = ("full_passes", "cached_passes", "skipped_steps", "uncond_reused")


def uncached_counts(steps: int, passes: int) -> dict[str, int]:
    """`StepCacheState.counts` of a turn sampled without a cache: every pass of every step in full."""
    return {"full_passes": steps * passes} | dict.fromkeys(COUNTS[1:], 0)


def relative_l1(now: jax.Array, before: jax.Array) -> jax.Array:
    """`mean |now - before| / mean |before|` (inf or NaN when `before` is 0: never below a threshold)."""
    return jnp.abs(now - before).mean() / jnp.abs(before).mean()


class CachedBlocks:
    """A `WanDiT` `through_blocks` for one step of `passes` passes (rows 0 to passes - 1 of the cache):
    computes or reuses the blocks' residual as the config decides; the new cache state is `self.state`
    once the forward has been traced."""

    def __init__(self, config: StepCacheConfig, state: StepCacheState, passes: int):
        self.config, self.state, self.passes = config, state, passes

    def __call__(self, entering: BlockState, run: BlockRunner) -> jax.Array:
        """The target tokens' states after the last block `[passes, n, D]`."""
        cfg, cache, n = self.config, self.state, entering.num_target
        if cfg.kind == "first_block":
            after_first = run(entering, 0, 1)
            base = after_first.x[:, :n]
            indicator = (base - entering.x[:, :n])[:1]
            change = relative_l1(indicator, cache.indicator)
            rest = lambda: run(after_first, 1, run.num_layers).x[:, :n]
        else:  # "timestep"
            base = entering.x[:, :n]
            indicator = run.modulated_input(entering)[:1, :n].astype(jnp.float32)
            change = cache.distance + relative_l1(indicator, cache.indicator)
            rest = lambda: run(entering, 0, run.num_layers).x[:, :n]
        cached = cache.residual[: self.passes]
        skip = (cache.step >= cfg.warmup) & (change < cfg.threshold)
        x = jax.lax.cond(skip, lambda: base + cached, rest)
        computed = jnp.logical_not(skip)
        if cfg.kind == "first_block":  # the reference moves only when the blocks are computed
            indicator = jnp.where(skip, cache.indicator, indicator)
        self.state = cache.replace(
            indicator=indicator,
            distance=jnp.where(skip, change, 0.0) if cfg.kind == "timestep" else cache.distance,
            residual=cache.residual.at[: self.passes].set(jnp.where(skip, cached, x - base)),
            full_passes=cache.full_passes + self.passes * computed,
            cached_passes=cache.cached_passes + self.passes * skip,
            skipped_steps=cache.skipped_steps + skip,
        )
        return x
