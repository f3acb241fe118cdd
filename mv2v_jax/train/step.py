"""One training step: rectified flow on the target tokens of a memory-conditioned turn.

A batch (data.loader.TrainBatch) holds, per example, the clean target latents, the text embedding and
the turn's conditions: the user-input latents (the source video for novel view synthesis, the source
segment for long editing), K memory slots sampled as the paper trains (data.memory_sampling) and the
task's extras. The step draws the noise level, noises the target, perturbs the memory latents, drops
the input's RoPE for some examples, runs MemoryDiT on the task's streams (`Task.streams`, the memory
in the same order as inference), and regresses the velocity `noise - target` on the target tokens
only (the DiT returns only those).

What varies between steps and changes shapes (which tokenizer the memory slots get; whether and how
much to merge) is a static `StepVariant` drawn on the host, so each variant compiles once.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx, struct

from mv2v_jax.data.loader import TrainBatch
from mv2v_jax.diffusion import flow
from mv2v_jax.memory.hierarchical_rope import perturb_memory, rope_keep_mask
from mv2v_jax.memory.tokenizers import TokenizerConfig
from mv2v_jax.tasks import get_task


@dataclasses.dataclass(frozen=True)
class StepVariant:
    """The static choices of a step: the memory slots' tokenizers and the merge ratio (None: no merging)."""

    tokenizers: TokenizerConfig
    keep_ratio: float | None


@struct.dataclass
class TrainState:
    """Everything a step changes; checkpointed whole."""

    step: jax.Array
    params: nnx.State  # the whole model
    opt_state: Any  # over the trainable parameters only
    ema: nnx.State | None  # of the trainable parameters


def loss_fn(
    trainable: nnx.State,
    frozen: nnx.State,
    graphdef: nnx.GraphDef,
    batch: TrainBatch,
    key: jax.Array,
    variant: StepVariant,
    config: Mapping[str, Any],
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """`config`: task, shift, timestep_sampling, loss_weighting, memory_noise, rope_dropout."""
    model = nnx.merge(graphdef, trainable, frozen)
    k_sigma, k_noise, k_memory, k_rope = jax.random.split(key, 4)
    b = batch.target.shape[0]
    sigma = flow.sample_sigmas(k_sigma, b, config["shift"], config["timestep_sampling"])
    noise = jax.random.normal(k_noise, batch.target.shape, batch.target.dtype)
    noisy = flow.add_noise(batch.target, noise, sigma)
    memory = batch.conditions.memory
    memory = dataclasses.replace(memory, latents=perturb_memory(memory.latents, k_memory, config["memory_noise"]))
    streams = get_task(config["task"]).streams(
        noisy,
        dataclasses.replace(batch.conditions, memory=memory),
        variant.tokenizers,
        input_rope_keep=rope_keep_mask(k_rope, b, config["rope_dropout"]),
    )
    velocity = model(streams, sigma * 1000.0, batch.context, keep_ratio=variant.keep_ratio)
    error = jnp.mean(
        jnp.square(velocity.astype(jnp.float32) - flow.velocity_target(batch.target, noise)),
        axis=tuple(range(1, velocity.ndim)),
    )
    loss = jnp.mean(error * flow.loss_weight(sigma, config["loss_weighting"]))
    return loss, {"loss": loss, "mse": jnp.mean(error), "sigma": jnp.mean(sigma)}


def train_step(
    state: TrainState,
    batch: TrainBatch,
    key: jax.Array,
    *,
    graphdef: nnx.GraphDef,
    trainable: Any,
    optimizer: optax.GradientTransformation,
    variant: StepVariant,
    config: Mapping[str, Any],
) -> tuple[TrainState, dict[str, jax.Array]]:
    """Gradients of the trainable parameters, an optimizer update, the EMA; `key` is this step's."""
    params, frozen = nnx.split_state(state.params, trainable, ...)
    grads, metrics = jax.grad(loss_fn, has_aux=True)(params, frozen, graphdef, batch, key, variant, config)
    updates, opt_state = optimizer.update(grads, state.opt_state, params)
    params = optax.apply_updates(params, updates)
    ema = state.ema
    if ema is not None:
        # Warm-up (1 + n) / (10 + n) keeps an early EMA from clinging to the initialisation.
        n = state.step.astype(jnp.float32)
        decay = jnp.minimum(config["ema_decay"], (1 + n) / (10 + n))
        ema = jax.tree.map(lambda e, p: decay * e + (1 - decay) * p, ema, params)
    metrics["grad_norm"] = optax.global_norm(grads)
    return state.replace(
        step=state.step + 1, params=nnx.merge_state(params, frozen), opt_state=opt_state, ema=ema
    ), metrics


def jit_train_step(
    graphdef: nnx.GraphDef,
    trainable: Any,
    optimizer: optax.GradientTransformation,
    variant: StepVariant,
    config: Mapping[str, Any],
    donate: bool = True,
) -> Callable[[TrainState, TrainBatch, jax.Array], tuple[TrainState, dict[str, jax.Array]]]:
    """`train_step` for one variant, jitted: `(state, batch, key) -> (state, metrics)`. `donate` hands the
    old state's buffers to the new one (training); a benchmark that reuses its state passes False."""
    step = functools.partial(
        train_step, graphdef=graphdef, trainable=trainable, optimizer=optimizer, variant=variant, config=config
    )
    return jax.jit(step, donate_argnums=0 if donate else ())
