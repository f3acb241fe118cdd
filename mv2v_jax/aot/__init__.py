"""Ahead-of-time compilation for TPU pods from any machine: does a step fit, and what does it cost.

    from mv2v_jax import aot

    topology = aot.tpu_topology("v5p-64")
    program = aot.train_step_program(config, topology.devices)
    report = aot.compile_program(program, topology)      # memory per chip, collectives, fits or not
    report.step = aot.step_cost(program, report)         # every layer counted: FLOPs, HBM bytes
    print(aot.format_report(report))

libtpu (`pip install "jax[tpu]"`, the `tpu` extra) compiles for a TPU topology without the hardware
(`jax.experimental.topologies`), as MaxText's `train_compile.py` does, so a pod configuration is
checked on a laptop before time is bought: XLA's compiled memory plan per chip (arguments,
temporaries, outputs) against the chip's HBM, and the collectives in the per-chip program. The
programs are the real ones: `train.step.jit_train_step` on the config's mesh and the sampling
pipelines' own `Denoiser` velocity (classifier-free guidance as a batch of 2). On a TPU host "auto"
dtypes and attention resolve to bfloat16 and splash; compiling from a CPU host they are set so here.

The package builds on the training step and the pipelines, so it sits above them in the layer order.
Its modules, lowest first:

    topology.py    chips (HBM, peak FLOP/s, bandwidths), Cloud TPU slice names, libtpu's topologies
    hlo.py         what the compiled HLO text says: collectives, splash kernels' FLOPs and HBM bytes
    roofline.py    StepCost (XLA's part and the kernels' apart) and its roofline lower bound in seconds
    report.py      Report (memory per chip, fits or not) and the text the CLIs print
    compiling.py   Program (a jitted step and abstract sharded arguments) and compile_program
    cost.py        step_cost: the cost with every scanned layer and splash kernel counted
    abstract.py    abstract sharded arguments: model state, batches, a turn's conditions
    experiment.py  what an experiment config says: "auto" resolved, the clip, the token layout
    programs.py    the train step, the sampling step, a plain DiT forward
    cli.py         train.py / sample.py --compile_topology
"""

from mv2v_jax.aot.cli import compile_sampling_step, compile_train_step
from mv2v_jax.aot.compiling import Program, compile_program
from mv2v_jax.aot.cost import step_cost
from mv2v_jax.aot.experiment import Clip, clip_of, largest_variant, resolve_auto, turn_layout
from mv2v_jax.aot.hlo import Collective, Kernels, collectives, kernels
from mv2v_jax.aot.programs import dit_forward_program, init_program, sampling_step_program, train_step_program
from mv2v_jax.aot.report import Report, format_report
from mv2v_jax.aot.roofline import Roofline, StepCost, roofline
from mv2v_jax.aot.topology import CHIPS, Chip, GiB, Topology, libtpu_version, parse_topology, tpu_topology

__all__ = [
    "CHIPS",
    "Chip",
    "Clip",
    "Collective",
    "GiB",
    "Kernels",
    "Program",
    "Report",
    "Roofline",
    "StepCost",
    "Topology",
    "clip_of",
    "collectives",
    "compile_program",
    "compile_sampling_step",
    "compile_train_step",
    "dit_forward_program",
    "format_report",
    "init_program",
    "kernels",
    "largest_variant",
    "libtpu_version",
    "parse_topology",
    "resolve_auto",
    "roofline",
    "sampling_step_program",
    "step_cost",
    "tpu_topology",
    "train_step_program",
    "turn_layout",
]
