"""What both pipelines share: guidance, one compiled velocity, the sampling loop.

`Denoiser` wraps a `MemoryDiT` and its task (whose stream builder arranges the target, the user input
and the memory: `Task.streams`). Its velocity, classifier-free guidance included (conditional and
unconditional contexts as a batch of 2), is compiled ahead of time once per input signature: a turn
feeds only the memories it has (pipelines.slots), so a session compiles one program per number of
memory slots, at most k + 1, and reuses each (across processes through JAX's persistent compilation
cache). The compilation time is kept apart from the sampling time. With step caching on
(pipelines.step_cache), the cache the steps share is an argument and a result of that one program.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mv2v_jax.config import positive, require
from mv2v_jax.diffusion.samplers import denoise, make_sampler
from mv2v_jax.memory.budget import TurnCost, turn_cost
from mv2v_jax.memory.builders import Conditions
from mv2v_jax.memory.model import MemoryDiT
from mv2v_jax.models.codec import LatentCodec
from mv2v_jax.models.layers import in_compute_dtype
from mv2v_jax.models.text.conditioning import TextConditioning
from mv2v_jax.parallel.mesh import SERVING_RULES, state_shardings, use_mesh
from mv2v_jax.pipelines.session import Stages
from mv2v_jax.pipelines.step_cache import NO_STEP_CACHE, CachedBlocks, StepCacheConfig, StepCacheState, uncached_counts
from mv2v_jax.tasks import Task

MAX_STEPS = 1000


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    """Attributes: sampler ("unipc" or "euler"), steps, shift, guidance (CFG scale; 1 = one pass),
    keep_ratio (token merging's r at inference, None: off), negative_prompt, grid (Euler's sigma grid:
    "diffusers", or "diffsynth" as ReCamMaster samples; diffusion.samplers)."""

    sampler: str = "unipc"
    steps: int = 50
    shift: float = 5.0
    guidance: float = 5.0
    keep_ratio: float | None = 0.5
    negative_prompt: str = ""
    grid: str = "diffusers"

    def __post_init__(self):
        # More steps than the schedules' 1000 training timesteps repeat UniPC's integer timesteps.
        require(0 < self.steps <= MAX_STEPS, "steps", self.steps, f"sampler steps must be 1 to {MAX_STEPS}")
        require(positive(self.shift), "shift", self.shift, "the timestep shift must be a positive number")
        guidance_ok = math.isfinite(self.guidance) and self.guidance >= 0
        require(guidance_ok, "guidance", self.guidance, "the guidance scale must be a number >= 0 (1: none)")
        merge_ok = self.keep_ratio is None or 0 < self.keep_ratio <= 1
        require(merge_ok, "keep_ratio", self.keep_ratio, "merging keeps a share of tokens in (0, 1] (None: off)")

    def make_sampler(self):
        return make_sampler(self.sampler, self.steps, self.shift, self.grid)

    def guides(self, has_text: bool) -> bool:
        """Whether a turn runs guidance (conditional and unconditional as a batch of 2): a scale other than
        1, and a text encoder to make the two contexts."""
        return self.guidance != 1.0 and has_text


class Denoiser:
    """Samples a turn's target latents from `MemoryDiT` on the streams `task` builds from the turn's `Conditions`.

    The weights are held in the dtype they compute in (`models.layers.in_compute_dtype`). With a `mesh`,
    they are laid out on it by `rules` (by default the serving layout: whole on every chip but for a
    tensor split) and every velocity runs there: the turn's inputs replicated, the activations split as
    the rules say (guidance's batch over data, the tokens over sequence).
    """

    def __init__(
        self,
        model: MemoryDiT,
        task: Task,
        sampling: SamplingConfig,
        text: TextConditioning,
        mesh: jax.sharding.Mesh | None = None,
        rules=SERVING_RULES,
        cache: StepCacheConfig = NO_STEP_CACHE,
    ):
        self.model, self.task, self.sampling, self.text, self.cache = model, task, sampling, text, cache
        self.mesh, self.rules = mesh, rules
        self.graphdef, self.state = nnx.split(in_compute_dtype(model))
        if mesh is not None:
            self.state = jax.device_put(self.state, state_shardings(self.state, mesh, rules))
        self.guided = sampling.guides(text.encoder is not None)
        self.passes = 2 if self.guided else 1  # DiT passes per step: conditional (and unconditional)
        self._compiled: dict[Any, Any] = {}  # input signature -> compiled velocity
        self._pending_compile = 0.0  # seconds of compilation not yet reported
        self.last_counts: dict[str, int] = {}  # what the last sampled turn ran (`StepCacheState.counts`)

    def _streams(self, model: MemoryDiT, x: jax.Array, conditions: Conditions):
        return self.task.streams(x, conditions, model.config.tokenizers)

    def _passes(self, model: MemoryDiT, x, t, conditions, context, through_blocks=None) -> jax.Array:
        """The velocity `[P, ...]` of each of `context`'s P passes."""
        b = context.shape[0]
        repeat = lambda a: jnp.repeat(a, b, axis=0)
        streams = self._streams(model, repeat(x), jax.tree.map(repeat, conditions))
        keep_ratio = self.sampling.keep_ratio
        return model(streams, jnp.repeat(t, b), context, keep_ratio=keep_ratio, through_blocks=through_blocks)

    def _guide(self, conditional: jax.Array, unconditional: jax.Array) -> jax.Array:
        return unconditional + self.sampling.guidance * (conditional - unconditional)

    def _velocity(self, state, x, t, conditions, context, cache: StepCacheState | None = None):
        """The guided velocity; with a step cache (`self.cache.active`), `(velocity, the new cache)`."""
        model = nnx.merge(self.graphdef, state)
        if cache is None:
            v = self._passes(model, x, t, conditions, context)  # 2 with guidance: conditional, unconditional
            return v if v.shape[0] == 1 else self._guide(v[:1], v[1:])

        def run(context, cache):
            if self.cache.kind == "none":
                v = self._passes(model, x, t, conditions, context)
                return v, cache.replace(full_passes=cache.full_passes + context.shape[0])
            blocks = CachedBlocks(self.cache, cache, context.shape[0])
            return self._passes(model, x, t, conditions, context, blocks), blocks.state

        def both(cache):
            v, cache = run(context, cache)
            return self._guide(v[:1], v[1:]), cache.replace(guidance=v[1:] - v[:1])

        def conditional_only(cache):  # the unconditional velocity from the last step that ran it
            v, cache = run(context[:1], cache)
            return self._guide(v, v + cache.guidance), cache.replace(uncond_reused=cache.uncond_reused + 1)

        if not self.guided:
            v, cache = run(context, cache)
        elif self.cache.uncond_every == 1:
            v, cache = both(cache)
        else:
            after_warmup = cache.step - self.cache.warmup
            unconditional = (after_warmup < 0) | (after_warmup % self.cache.uncond_every == 0)
            v, cache = jax.lax.cond(unconditional, both, conditional_only, cache)
        return v, cache.replace(step=cache.step + 1)

    @property
    def compilations(self) -> int:
        """Programs compiled by this process (one per input signature)."""
        return len(self._compiled)

    def _program(self, *args, what: str = "the denoiser"):
        """The compiled velocity for `args`' signature: compiled (or loaded from the persistent cache) once."""
        leaves, treedef = jax.tree.flatten(args)
        signature = (treedef, tuple((leaf.shape, str(leaf.dtype)) for leaf in leaves))
        if signature not in self._compiled:
            start = time.perf_counter()
            print(f"compiling {what} (or loading it from the cache)...", end=" ", file=sys.stderr, flush=True)
            with self._on_mesh():
                self._compiled[signature] = jax.jit(self._velocity).lower(self.state, *args).compile()
            seconds = time.perf_counter() - start
            print(f"{seconds:.1f} s", file=sys.stderr, flush=True)
            self._pending_compile += seconds
        return self._compiled[signature]

    def _on_mesh(self):
        return contextlib.nullcontext() if self.mesh is None else use_mesh(self.mesh, self.rules)

    def _place(self, args: tuple) -> tuple:
        """The turn's inputs, whole on every device of the mesh (as they are without one)."""
        if self.mesh is None:
            return args
        return jax.device_put(args, jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec()))

    def _call(self, *args) -> jax.Array:
        args = self._place(args)
        return self._program(*args)(self.state, *args)

    def _cache_state(self, conditions: Conditions, shape: tuple[int, ...]) -> tuple[StepCacheState, ...]:
        """The empty step cache the turn's velocity carries, as a trailing argument (none when inactive)."""
        if not self.cache.active(self.guided):
            return ()
        x = jax.ShapeDtypeStruct((1, *shape), jnp.float32)
        target = self.task.layout(x, conditions, self.model.config.tokenizers)[0]
        return (StepCacheState.init(self.passes, target.stop - target.start, self.model.config.dit.dim, (1, *shape)),)

    def prepare(self, conditions: Conditions, prompt: str, shape: tuple[int, ...]) -> float:
        """Compiles the program `sample` runs for these conditions without sampling (a later process then
        loads it from the persistent compilation cache); the seconds it took."""
        x, t = jnp.zeros((1, *shape), jnp.float32), jnp.zeros((1,), jnp.float32)
        args = self._place((x, t, conditions, self.context(prompt), *self._cache_state(conditions, shape)))
        self._program(*args, what="the next turn's denoiser")
        compiled, self._pending_compile = self._pending_compile, 0.0
        return compiled

    def context(self, prompt: str) -> jax.Array:
        context = self.text(prompt)
        if self.guided:
            context = jnp.concatenate([context, self.text(self.sampling.negative_prompt)], axis=0)
        return context

    def sample(
        self, conditions: Conditions, prompt: str, seed: int, shape: tuple[int, ...]
    ) -> tuple[np.ndarray, float]:
        """`[T, h, w, C]` sampled latents and the seconds spent compiling during this call."""
        context = self.context(prompt)
        noise = jax.random.normal(jax.random.key(seed), (1, *shape))
        sampler = self.sampling.make_sampler()
        cache = self._cache_state(conditions, shape)
        if cache:

            def velocity(x, t):
                nonlocal cache
                v, *cache = self._call(x, t[:1], conditions, context, *cache)
                return v

        else:
            velocity = lambda x, t: self._call(x, t[:1], conditions, context)
        latents = denoise(velocity, noise, sampler)
        self.last_counts = cache[0].counts() if cache else uncached_counts(len(sampler.timesteps), self.passes)
        compiled, self._pending_compile = self._pending_compile, 0.0
        return np.asarray(latents[0]), compiled

    def generate(
        self,
        stages: Stages,
        codec: LatentCodec,
        conditions: Conditions,
        prompt: str,
        seed: int,
        shape: tuple[int, ...],
    ) -> tuple[np.ndarray, np.ndarray]:
        """Samples and decodes, timing "sample", "compile" (apart) and "decode" in `stages`: (latents, frames)."""
        with stages("sample"):
            latents, compiled = self.sample(conditions, prompt, seed, shape)
        stages.seconds["sample"] -= compiled
        stages.seconds["compile"] = compiled
        with stages("decode"):
            frames = codec.decode(latents)
        return latents, frames

    def cost(self, conditions: Conditions, target_shape: tuple[int, ...]) -> TurnCost:
        """Tokens per block and analytic FLOPs of one forward of this turn (`Task.layout`: from shapes alone)."""
        x = jax.ShapeDtypeStruct((1, *target_shape), jnp.float32)
        layout = self.task.layout(x, conditions, self.model.config.tokenizers)
        text_len = int(self.context("").shape[1])
        filled = int(np.asarray(conditions.memory.valid).sum())
        merge, keep_ratio = self.model.config.merge, self.sampling.keep_ratio
        return turn_cost(layout, self.model.config.dit, text_len, merge, keep_ratio, filled_memory=filled)

    def record(self, cost: TurnCost, compiled_seconds: float) -> dict:
        """The turn record's cost fields: tokens by kind (memory that is real, padding apart), the FLOPs
        of one forward as computed (padding included), what the last sampled turn ran (passes computed
        in full, passes that reused the step cache, steps skipped, steps whose unconditional pass was
        reused) and the FLOPs it spent, this process's compilations, and the mesh axes the denoiser was
        split over."""
        counts = self.last_counts
        # A reused step still runs block 0 with "first_block"; with "timestep" only the head (left out).
        cached_flops = cost.first_block_flops if self.cache.kind == "first_block" else 0
        return {
            "tokens": {
                "target": cost.target_tokens,
                "memory": cost.memory_tokens,
                "padding": cost.padding_tokens,
                "per_block": list(cost.tokens_per_block),
            },
            "flops_per_forward": cost.flops,
            "forwards": counts["full_passes"],
            "cached_forwards": counts["cached_passes"],
            "steps_skipped": counts["skipped_steps"],
            "uncond_reused": counts["uncond_reused"],
            "flops": counts["full_passes"] * cost.flops + counts["cached_passes"] * cached_flops,
            "sampling": dataclasses.asdict(self.sampling),
            "cache": dataclasses.asdict(self.cache),
            "compilations": self.compilations,
            "compiled_this_turn": compiled_seconds > 0,
            "mesh": {} if self.mesh is None else {axis: n for axis, n in self.mesh.shape.items() if n > 1},
        }
