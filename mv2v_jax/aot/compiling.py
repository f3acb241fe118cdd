"""A program to compile (a jitted step and its abstract, sharded arguments) and compiling it for a TPU
topology: XLA's memory plan per chip, the collectives, and the cost as the program is written."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import jax

from mv2v_jax.aot.hlo import collectives, kernels
from mv2v_jax.aot.report import Report
from mv2v_jax.aot.roofline import StepCost
from mv2v_jax.aot.topology import Topology
from mv2v_jax.parallel.mesh import use_mesh


@dataclasses.dataclass
class Program:
    """A jitted step and abstract arguments (ShapeDtypeStructs with shardings) on `mesh`.

    `at_depth(d)` builds the same program with `d` unrolled blocks, hooks placed proportionally (cost
    counting); `layers` and `segments` describe the real model's blocks and hook-separated segments, and
    `scanned` whether each segment is a `lax.scan`.
    """

    name: str
    fn: Callable
    args: tuple
    mesh: jax.sharding.Mesh
    rules: Any
    layers: int
    segments: int
    notes: list[str]
    scanned: bool = True
    at_depth: Callable[[int], Program] | None = None


def _compile(program: Program):
    with use_mesh(program.mesh, program.rules):
        return program.fn.lower(*program.args).compile()


def compile_program(program: Program, topology: Topology) -> Report:
    """Compiles `program` for `topology`: per-chip memory, collectives, and whether it fits in HBM
    (a compiler refusal, such as running out of HBM, is reported, not raised)."""
    report = Report(program.name, topology, dict(program.mesh.shape), list(program.notes))
    start = time.perf_counter()
    try:
        compiled = _compile(program)
    except jax.errors.JaxRuntimeError as e:
        if "RESOURCE_EXHAUSTED" not in str(e):
            raise
        report.error = " ".join(str(e).split())[:600]  # XLA's out-of-HBM refusal: the answer is "does not fit"
        report.compile_seconds = time.perf_counter() - start
        return report
    report.compile_seconds = time.perf_counter() - start
    memory = compiled.memory_analysis()
    report.arguments = memory.argument_size_in_bytes
    report.outputs = memory.output_size_in_bytes
    report.aliased = memory.alias_size_in_bytes
    report.temporaries = memory.temp_size_in_bytes
    report.code = memory.generated_code_size_in_bytes
    hlo = compiled.as_text()
    splash, xla = kernels(hlo), compiled.cost_analysis()
    report.uncounted = splash.uncounted
    report.written = StepCost(
        float(xla["flops"]), splash.flops, float(xla["bytes accessed"]), splash.hbm_bytes, collectives(hlo)
    )
    return report
