"""The cost of one step with every layer counted.

XLA's `cost_analysis()` counts a `lax.scan` body once, not once per layer, and a Pallas kernel (splash
attention) not at all. The program as compiled therefore counts one layer per segment between merge
hooks (3 for the paper's merges before blocks 10 and 20 of 30); `step_cost` compiles it once more with
two unrolled layers per segment, so the difference is the cost of one layer per segment, adds the
splash kernels' matmul FLOPs read from their custom calls (2 matmuls for the forward kernel, 3 for dq,
4 for dk/dv; `hlo.kernel_flops`) to both, and extrapolates linearly to the real depth:
cost(L) = cost(d) + (L/d - 1) (cost(2d) - cost(d)), exact when the segments are equally long (they are
for 30 layers). Time per step is that FLOP count at the chip's peak bf16 rate
(`Report.seconds_at_peak`): a lower bound that ignores communication and memory-bound phases.
"""

from __future__ import annotations

from mv2v_jax.aot.compiling import Program, compile_program
from mv2v_jax.aot.hlo import Collective
from mv2v_jax.aot.report import Report


def step_cost(program: Program, report: Report) -> tuple[float, dict[str, Collective]]:
    """FLOPs and collectives per chip of one step with every layer counted (this module's doc): `report` is
    the compiled program's, whose scan bodies count as one layer per segment; one more compile with two
    unrolled layers per segment gives the cost of a layer per segment, extrapolated to the real depth."""
    if not program.scanned:
        return report.written_flops, report.collectives
    if program.at_depth is None:
        raise ValueError(f"{program.name} cannot be rebuilt at another depth")
    d = program.segments
    low, low_collectives = report.written_flops, report.collectives
    high_program = program.at_depth(2 * d)
    high = compile_program(high_program, report.topology)
    high, high_collectives = high.written_flops, high.collectives
    scale = program.layers / d - 1
    total = {}
    for kind in set(low_collectives) | set(high_collectives):
        a, b = low_collectives.get(kind, Collective()), high_collectives.get(kind, Collective())
        total[kind] = Collective(
            round(a.count + scale * (b.count - a.count)), a.chip_bytes + scale * (b.chip_bytes - a.chip_bytes)
        )
    return low + scale * (high - low), total
