"""The cost of one step with every layer counted.

XLA's `cost_analysis()` counts a `lax.scan` body once, not once per layer, and a Pallas kernel (splash
attention) not at all. The program as compiled therefore counts one layer per segment between merge
hooks (3 for the paper's merges before blocks 10 and 20 of 30); `step_cost` compiles it once more with
two unrolled layers per segment, so the difference is the cost of one layer per segment, and
extrapolates every part of the cost linearly to the real depth:
cost(L) = cost(d) + (L/d - 1) (cost(2d) - cost(d)), exact when the segments are equally long (they are
for 30 layers). The parts stay apart (`roofline.StepCost`): XLA's FLOPs and HBM bytes, the splash
kernels' by formula (`hlo.kernels`: 2 matmuls for the forward kernel, 3 for dq, 4 for dk/dv; each float
operand read and each output written once), and the bytes each chip sends in collectives.
"""

from __future__ import annotations

from mv2v_jax.aot.compiling import Program, compile_program
from mv2v_jax.aot.report import Report
from mv2v_jax.aot.roofline import StepCost


def step_cost(program: Program, report: Report) -> StepCost:
    """The cost per chip of one step with every layer counted (this module's doc): `report` is the
    compiled program's, whose scan bodies count as one layer per segment; one more compile with two
    unrolled layers per segment gives the cost of a layer per segment, extrapolated to the real depth."""
    if not program.scanned:
        return report.written
    if program.at_depth is None:
        raise ValueError(f"{program.name} cannot be rebuilt at another depth")
    d = program.segments
    high = compile_program(program.at_depth(2 * d), report.topology)
    return report.written.extrapolated(high.written, program.layers / d - 1)
