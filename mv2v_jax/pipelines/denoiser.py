"""What both pipelines share: guidance, one compiled velocity, the sampling loop.

`Denoiser` wraps a `MemoryDiT` and its task (whose stream builder arranges the target, the user input
and the memory: `Task.streams`). Its velocity, classifier-free guidance included (conditional and
unconditional contexts as a batch of 2), is compiled ahead of time once per input signature: a turn
feeds only the memories it has (pipelines.slots), so a session compiles one program per number of
memory slots, at most k + 1, and reuses each (across processes through JAX's persistent compilation
cache). The compilation time is kept apart from the sampling time.
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
    ):
        self.model, self.task, self.sampling, self.text = model, task, sampling, text
        self.mesh, self.rules = mesh, rules
        self.graphdef, self.state = nnx.split(in_compute_dtype(model))
        if mesh is not None:
            self.state = jax.device_put(self.state, state_shardings(self.state, mesh, rules))
        self.guided = sampling.guides(text.encoder is not None)
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

    def prepare(self, conditions: Conditions, prompt: str, shape: tuple[int, ...]) -> float:
        """Compiles the program `sample` runs for these conditions without sampling (a later process then
        loads it from the persistent compilation cache); the seconds it took."""
        self._program(
            *self._place(
                (jnp.zeros((1, *shape), jnp.float32), jnp.zeros((1,), jnp.float32), conditions, self.context(prompt))
            )
        )
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
        of one forward as computed (padding included), this process's compilations, and the mesh axes
        the denoiser was split over."""
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
            "mesh": {} if self.mesh is None else {axis: n for axis, n in self.mesh.shape.items() if n > 1},
        }
