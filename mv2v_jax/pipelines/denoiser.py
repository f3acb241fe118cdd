"""What both pipelines share: text conditioning, guidance, one compiled velocity, the sampling loop.

`Denoiser` wraps a `MemoryDiT` and its task (whose stream builder arranges the target, the user input
and the memory: `Task.streams`). Its velocity, classifier-free guidance included (conditional and
unconditional contexts as a batch of 2), is compiled ahead of time once per input signature: a turn
feeds only the memories it has (pipelines.slots), so a session compiles one program per number of
memory slots, at most k + 1, and reuses each (across processes through JAX's persistent compilation
cache). The compilation time is kept apart from the sampling time.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mv2v_jax.diffusion.samplers import denoise, make_sampler
from mv2v_jax.memory.budget import TurnCost, turn_cost
from mv2v_jax.memory.builders import Conditions
from mv2v_jax.memory.model import MemoryDiT
from mv2v_jax.models.codec import LatentCodec
from mv2v_jax.pipelines.session import Stages
from mv2v_jax.tasks import Task


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

    def make_sampler(self):
        return make_sampler(self.sampler, self.steps, self.shift, self.grid)


class TextConditioning:
    """Prompt -> `[1, L, text_dim]` context. Without a text encoder every prompt is the zero context
    (a model trained without text), and guidance has nothing to contrast."""

    def __init__(self, encoder: Callable[[list[str]], np.ndarray] | None = None, text_dim: int = 4096):
        self.encoder = encoder
        self.zeros = jnp.zeros((1, 1, text_dim))

    def __call__(self, prompt: str) -> jax.Array:
        return self.zeros if self.encoder is None else jnp.asarray(self.encoder([prompt]))


class Denoiser:
    """Samples a turn's target latents from `MemoryDiT` on the streams `task` builds from the turn's `Conditions`."""

    def __init__(self, model: MemoryDiT, task: Task, sampling: SamplingConfig, text: TextConditioning):
        self.model, self.task, self.sampling, self.text = model, task, sampling, text
        self.graphdef, self.state = nnx.split(model)
        self.guided = sampling.guidance != 1.0 and text.encoder is not None
        self._compiled: dict[Any, Any] = {}  # input signature -> compiled velocity
        self._pending_compile = 0.0  # seconds of compilation not yet reported

    def _streams(self, model: MemoryDiT, x: jax.Array, conditions: Conditions):
        return self.task.streams(x, conditions, model.config.tokenizers)

    def _velocity(self, state, x, t, conditions, context):
        model = nnx.merge(self.graphdef, state)
        b = context.shape[0]  # 2 with guidance: conditional, then unconditional
        repeat = lambda a: jnp.repeat(a, b, axis=0)
        streams = self._streams(model, repeat(x), jax.tree.map(repeat, conditions))
        v = model(streams, jnp.repeat(t, b), context, keep_ratio=self.sampling.keep_ratio)
        return v if b == 1 else v[1:] + self.sampling.guidance * (v[:1] - v[1:])

    @property
    def compilations(self) -> int:
        """Programs compiled by this process (one per input signature)."""
        return len(self._compiled)

    def _call(self, *args) -> jax.Array:
        leaves, treedef = jax.tree.flatten(args)
        signature = (treedef, tuple((leaf.shape, str(leaf.dtype)) for leaf in leaves))
        if signature not in self._compiled:
            start = time.perf_counter()
            self._compiled[signature] = jax.jit(self._velocity).lower(self.state, *args).compile()
            self._pending_compile += time.perf_counter() - start
        return self._compiled[signature](self.state, *args)

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
        latents = denoise(lambda x, t: self._call(x, t[:1], conditions, context), noise, sampler)
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
        of one forward as computed (padding included), and this process's compilations."""
        return {
            "tokens": {
                "target": cost.target_tokens,
                "memory": cost.memory_tokens,
                "padding": cost.padding_tokens,
                "per_block": list(cost.tokens_per_block),
            },
            "flops_per_forward": cost.flops,
            "forwards": self.sampling.steps * (2 if self.guided else 1),
            "sampling": dataclasses.asdict(self.sampling),
            "compilations": self.compilations,
            "compiled_this_turn": compiled_seconds > 0,
        }
