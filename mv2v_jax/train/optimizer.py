"""The optimizer and which parameters it trains.

AdamW with linear warm-up then cosine decay (or constant), global-norm clipping, and optional
gradient accumulation (optax.MultiSteps). Which parameters train is a list of regular expressions
over parameter paths (`dit/blocks/self_attn/q/kernel`): ReCamMaster trains its camera layers and
self-attention and freezes the rest; Memory-V2V adds the new memory modules.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import optax
from flax import nnx

SCHEDULES = ("cosine", "constant")


def trainable_filter(patterns: Sequence[str]):
    """An nnx filter: parameters whose '/'-joined path matches any of `patterns` (re.search)."""
    compiled = [re.compile(p) for p in patterns]

    def matches(path, value) -> bool:
        if not isinstance(value, nnx.Param):
            return False
        name = "/".join(str(p) for p in path)
        return any(c.search(name) for c in compiled)

    return matches


def learning_rate(config: Mapping[str, Any]) -> optax.Schedule:
    """Linear warm-up to `lr` over `warmup_steps`, then cosine decay to `lr * final_ratio` at `steps`, or constant."""
    if config["schedule"] not in SCHEDULES:
        raise ValueError(f"unknown learning-rate schedule {config['schedule']!r}; choose one of {SCHEDULES}")
    lr, warmup = config["lr"], config["warmup_steps"]
    if config["schedule"] == "constant":
        return optax.join_schedules(
            [optax.linear_schedule(0.0, lr, max(warmup, 1)), optax.constant_schedule(lr)], [max(warmup, 1)]
        )
    return optax.warmup_cosine_decay_schedule(
        0.0, lr, max(warmup, 1), max(config["steps"], warmup + 1), end_value=lr * config["final_ratio"]
    )


def make_optimizer(config: Mapping[str, Any]) -> optax.GradientTransformation:
    """`config`: lr, schedule, warmup_steps, steps, final_ratio, b1, b2, weight_decay, clip_norm, accumulate."""
    tx = optax.chain(
        optax.clip_by_global_norm(config["clip_norm"]),
        optax.adamw(learning_rate(config), b1=config["b1"], b2=config["b2"], weight_decay=config["weight_decay"]),
    )
    if config["accumulate"] > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=config["accumulate"])
    return tx
