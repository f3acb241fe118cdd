"""The programs compiled ahead of time, as the CLIs run them: the experiment's training step, one
denoising step of a turn, and a plain Wan DiT forward. Each is a `Program` that can be rebuilt at
another depth (unrolled blocks, merge hooks at the same fractions) for `cost.step_cost`."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from mv2v_jax.aot.abstract import abstract, abstract_model, batch_sds, replicated, turn_conditions
from mv2v_jax.aot.compiling import Program
from mv2v_jax.aot.experiment import Clip, clip_of, largest_variant, memory_config, plain, resolve_auto, token_count
from mv2v_jax.config import dataclass_from_config
from mv2v_jax.data.loader import TrainBatch
from mv2v_jax.memory.streams import Stream, pack_streams
from mv2v_jax.models.wan.dit import WanDiT, WanDiTConfig
from mv2v_jax.parallel.mesh import (
    DEFAULT_RULES,
    SERVING_RULES,
    batch_sharding,
    make_mesh,
    sharded_init,
    state_shardings,
    use_mesh,
)
from mv2v_jax.pipelines.denoiser import Denoiser, SamplingConfig, TextConditioning
from mv2v_jax.tasks import get_task
from mv2v_jax.train.optimizer import make_optimizer, trainable_filter
from mv2v_jax.train.step import StepVariant, TrainState, jit_train_step


def segment_count(layers: int, hooks: Sequence[int]) -> int:
    """Segments of `layers` blocks between the hooks at block indices `hooks`."""
    bounds = sorted({0, layers, *hooks})
    return len(bounds) - 1


def train_step_program(
    config: Mapping[str, Any],
    devices: Sequence[Any],
    *,
    clip: Clip | None = None,
    variant: StepVariant | None = None,
    depth: int | None = None,
    platform: str | None = "tpu",
) -> Program:
    """The experiment's training step (`train.step.jit_train_step`) on its mesh over `devices`, for its
    global `batch_size` and memory `slots`; `variant` defaults to the largest one training draws."""
    clip = clip or clip_of(config)
    rules = plain(config.get("mesh_rules", DEFAULT_RULES))
    mesh = make_mesh(dict(plain(config["mesh"])), list(devices), dict(plain(config.get("mesh_dcn", {}))))
    model_config = memory_config(config["model"], config.get("runtime", {}), depth, platform)
    sampling = plain(config["memory_sampling"])
    variant = variant or largest_variant(model_config, sampling)
    step_config = dict(plain(config["step"]))
    task = get_task(step_config["task"])
    optimizer = make_optimizer(dict(plain(config["optimizer"])))
    trainable = trainable_filter(list(config["trainable"]))
    batch, slots = config["batch_size"], sampling["slots"]

    with use_mesh(mesh, rules):
        graphdef, params = abstract_model(model_config, mesh, rules)
    trainable_params, _ = nnx.split_state(params, trainable, ...)
    # The optimizer's moments are laid out like their parameters, its counters replicated (optax finds
    # which is which by running `init` on placeholders: here, not on the TPU mesh this host cannot run).
    opt_state = optax.tree_map_params(
        optimizer,
        lambda moment, param: jax.ShapeDtypeStruct(moment.shape, moment.dtype, sharding=param.sharding),
        jax.eval_shape(optimizer.init, trainable_params),
        trainable_params,
        transform_non_params=lambda leaf: replicated(mesh, leaf),
    )
    with use_mesh(mesh, rules):
        ema = trainable_params if step_config.get("ema_decay") else None
        state = TrainState(
            step=replicated(mesh, jax.ShapeDtypeStruct((), jnp.int32)), params=params, opt_state=opt_state, ema=ema
        )
        sds = batch_sds(mesh, rules)
        train_batch = TrainBatch(
            target=sds(batch, *clip.latents),
            context=sds(batch, clip.text_len, model_config.dit.text_dim),
            conditions=turn_conditions(task, batch, slots, clip.latents, sds),
        )
        key = replicated(mesh, jax.eval_shape(lambda: jax.random.key(0)))
        step = jit_train_step(graphdef, trainable, optimizer, variant, step_config)

    hooks = model_config.merge.block_indices(model_config.dit.num_layers) if variant.keep_ratio is not None else ()
    tokenizers = variant.tokenizers
    notes = [
        f"{task.name}: global batch {batch}, {slots} memory slots, clip {clip.latents} latents, text "
        f"{clip.text_len} tokens",
        "memory tokenizers "
        + (
            f"{'x'.join(map(str, tokenizers.rest))} for every slot"
            if tokenizers.ranked == ()
            else f"{tokenizers.ranked} then {tokenizers.rest}"
        )
        + (f", merging r={variant.keep_ratio}" if variant.keep_ratio is not None else ", no merging")
        + f"; {token_count(model_config, clip, slots, tokenizers, task):,} tokens per example",
        f"remat {model_config.dit.remat}, compute {model_config.dit.dtype}, "
        f"attention {model_config.dit.attention.impl}",
    ]
    return Program(
        "train step",
        step,
        (state, train_batch, key),
        mesh,
        rules,
        model_config.dit.num_layers,
        segment_count(model_config.dit.num_layers, hooks),
        notes,
        model_config.dit.scan_layers,
        at_depth=lambda d: train_step_program(config, devices, clip=clip, variant=variant, depth=d, platform=platform),
    )


def sampling_step_program(
    config: Mapping[str, Any],
    task_name: str,
    devices: Sequence[Any],
    mesh_shape: Mapping[str, int],
    *,
    clip: Clip | None = None,
    slots: int | None = None,
    depth: int | None = None,
    platform: str | None = "tpu",
    serving: bool = True,
) -> Program:
    """One denoising step of a turn (`task_name` "nvs" or "long_edit") as sample.py runs it: the
    pipelines' `Denoiser` velocity with guidance (conditional and unconditional as a batch of 2 when the
    config guides) and token merging at the config's r, on `mesh_shape` over `devices`. `serving`: the
    weights in sample.py's serving layout (`SERVING_RULES`, held in the compute dtype); False: as training
    lays them out (float32, split over fsdp and sequence), for comparison."""
    rules = SERVING_RULES if serving else DEFAULT_RULES
    task = get_task(task_name)
    sample = config["sample"]
    clip = clip or clip_of(config)
    slots = slots or sample["retrieval"]["slots"]
    mesh = make_mesh(dict(mesh_shape), list(devices))
    model_config = memory_config(config["model"], sample.get("runtime", {}), depth, platform)
    sampling = dataclass_from_config(SamplingConfig, plain(sample["sampling"]), "sample.sampling")
    guided = sampling.guides(sample["text"]["kind"] != "none")

    text = TextConditioning(text_dim=model_config.dit.text_dim)  # unused: the context is an argument
    with use_mesh(mesh, rules):
        graphdef, params = abstract_model(model_config, mesh, rules, serving)
        denoiser = Denoiser(nnx.merge(graphdef, params), task, sampling, text)
        sds = batch_sds(mesh, rules)
        args = (
            params,
            sds(1, *clip.latents),  # x
            sds(1),  # t
            turn_conditions(task, 1, slots, clip.latents, sds),
            sds(2 if guided else 1, clip.text_len, model_config.dit.text_dim),
        )
    hooks = model_config.merge.block_indices(model_config.dit.num_layers) if sampling.keep_ratio is not None else ()
    notes = [
        f"{'CFG batch 2' if guided else 'batch 1'}, {slots} memory slots, clip {clip.latents} latents, "
        f"text {clip.text_len} tokens; {token_count(model_config, clip, slots, model_config.tokenizers, task):,} "
        f"tokens before merging (r={sampling.keep_ratio})",
        f"compute {model_config.dit.dtype}, attention {model_config.dit.attention.impl}",
    ]
    return Program(
        f"{task_name} sampling step",
        jax.jit(denoiser._velocity),
        args,
        mesh,
        rules,
        model_config.dit.num_layers,
        segment_count(model_config.dit.num_layers, hooks),
        notes,
        model_config.dit.scan_layers,
        at_depth=lambda d: sampling_step_program(
            config, task_name, devices, mesh_shape, clip=clip, slots=slots, depth=d, platform=platform, serving=serving
        ),
    )


def dit_forward_program(
    dit: Mapping[str, Any],
    devices: Sequence[Any],
    mesh_shape: Mapping[str, int],
    grid: tuple[int, int, int],
    *,
    batch: int = 2,
    text_len: int = 512,
    rules=DEFAULT_RULES,
    depth: int | None = None,
) -> Program:
    """A plain Wan DiT forward (no memory) over a `grid` of latents `(F, H, W)` at the patch size."""
    config = WanDiTConfig.from_config(resolve_auto(plain(dit)))
    if depth is not None:
        config = dataclasses.replace(config, num_layers=depth, scan_layers=False)
    mesh = make_mesh(dict(mesh_shape), list(devices))
    rules = plain(rules)
    with use_mesh(mesh, rules):
        graphdef, state = nnx.split(nnx.eval_shape(lambda: WanDiT(config, rngs=nnx.Rngs(0))))
        state = abstract(state, state_shardings(state, mesh, rules))
        shape = tuple(g * p for g, p in zip(grid, config.patch_size, strict=True))

        def sds(*shape):
            return jax.ShapeDtypeStruct(shape, jnp.float32, sharding=batch_sharding(mesh, len(shape), rules))

        args = (state, sds(batch, *shape, config.in_channels), sds(batch), sds(batch, text_len, config.text_dim))

    def forward(state, latents, timestep, context):
        model = nnx.merge(graphdef, state)
        return model(pack_streams([Stream(latents)], {config.patch_size: model.patch_embedding}), timestep, context)

    return Program(
        "DiT forward",
        jax.jit(forward),
        args,
        mesh,
        rules,
        config.num_layers,
        1,
        [
            f"batch {batch}, {math.prod(grid):,} tokens, text {text_len}; compute {config.dtype}, attention "
            f"{config.attention.impl}"
        ],
        config.scan_layers,
        at_depth=lambda d: dit_forward_program(
            dit, devices, mesh_shape, grid, batch=batch, text_len=text_len, rules=rules, depth=d
        ),
    )


def init_program(dit: Mapping[str, Any], devices: Sequence[Any], mesh_shape: Mapping[str, int], rules=DEFAULT_RULES):
    """A plain Wan DiT's random initialisation on `mesh_shape` over `devices` (`parallel.mesh.sharded_init`,
    as train.py makes a model without converted weights): its outputs per chip are the chip's shards."""
    config = WanDiTConfig.from_config(resolve_auto(plain(dit)))
    mesh = make_mesh(dict(mesh_shape), list(devices))
    rules = plain(rules)
    _, make = sharded_init(lambda: WanDiT(config, rngs=nnx.Rngs(0)), mesh, rules)
    notes = [f"{config.num_layers} blocks of dim {config.dim}, parameters {config.param_dtype}"]
    return Program("random initialisation", make, (), mesh, rules, config.num_layers, 1, notes, config.scan_layers)
