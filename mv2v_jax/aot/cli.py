"""`train.py / sample.py --compile_topology`: compile the step for a TPU slice on this host, print the
report, and exit 0 when it fits in the chips' HBM, 1 when it does not or the input is bad."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import Any

from mv2v_jax.aot.compiling import Program, compile_program
from mv2v_jax.aot.experiment import plain
from mv2v_jax.aot.programs import sampling_step_program, train_step_program
from mv2v_jax.aot.report import format_report
from mv2v_jax.aot.topology import Topology, parse_topology, tpu_topology
from mv2v_jax.config import dataclass_from_config
from mv2v_jax.parallel.mesh import check_mesh_shape, parse_mesh, sampling_mesh
from mv2v_jax.pipelines.denoiser import SamplingConfig


def _refused(flag: str, value: str, check: Callable[[str], Any]) -> bool:
    """Whether `check(value)` refuses the flag's value, said in an error line naming the flag (before libtpu loads)."""
    try:
        check(value)
    except ValueError as e:
        print(f"error: {flag} {value}: {e}", file=sys.stderr)
        return True
    return False


def _print_compiled(build: Callable[[Topology], Program], topology_name: str) -> int:
    """The CLIs' `--compile_topology`: prints the report; 0 if the program fits, 1 if not or on bad input."""
    if _refused("--compile_topology", topology_name, parse_topology):
        return 1
    try:
        topology = tpu_topology(topology_name)
        report = compile_program(build(topology), topology)
    except (ValueError, RuntimeError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(format_report(report))
    return 0 if report.fits else 1


def compile_train_step(config: Mapping[str, Any], topology_name: str) -> int:
    """`train.py --compile_topology`: the experiment's train step on its mesh over the whole slice."""
    return _print_compiled(lambda t: train_step_program(config, t.devices), topology_name)


def compile_sampling_step(config: Mapping[str, Any], task: str, topology_name: str, mesh: str | None) -> int:
    """`sample.py --compile_topology`: one sampling step of `task` on the mesh sample.py would make on
    that slice (`mesh`, default the config's `sample.mesh`: parallel.mesh.sampling_mesh)."""

    if mesh is not None and _refused("--compile_mesh", mesh, lambda text: check_mesh_shape(parse_mesh(text))):
        return 1

    def build(topology: Topology) -> Program:
        sample = config["sample"]
        sampling = dataclass_from_config(SamplingConfig, plain(sample["sampling"]), "sample.sampling")
        guided = sampling.guides(sample["text"]["kind"] != "none")
        chosen = sampling_mesh(mesh or sample.get("mesh", "auto"), guided, topology.devices)
        return sampling_step_program(config, task, list(chosen.devices.flat), dict(chosen.shape))

    return _print_compiled(build, topology_name)
