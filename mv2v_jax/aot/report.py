"""A compiled program's report: memory per chip against the chip's HBM, its collectives and cost, and
the text the CLIs print."""

from __future__ import annotations

import dataclasses

from mv2v_jax.aot.roofline import Roofline, StepCost, roofline
from mv2v_jax.aot.topology import GiB, Topology, libtpu_version


@dataclasses.dataclass
class Report:
    """A compiled program on a topology. Memory in bytes per chip."""

    program: str
    topology: Topology
    mesh: dict[str, int]
    notes: list[str]
    arguments: int = 0
    outputs: int = 0
    aliased: int = 0
    temporaries: int = 0
    code: int = 0
    error: str = ""  # the compiler's refusal (e.g. out of HBM)
    written: StepCost = dataclasses.field(default_factory=StepCost)  # as the program is written: a loop body once
    uncounted: list[str] = dataclasses.field(default_factory=list)  # custom kernels whose cost is unknown
    step: StepCost | None = None  # per step with every layer counted (cost.step_cost)
    compile_seconds: float = 0.0

    @property
    def total(self) -> int:
        return self.arguments + self.outputs - self.aliased + self.temporaries + self.code

    @property
    def fits(self) -> bool:
        return not self.error and self.total <= self.topology.chip.hbm_bytes

    @property
    def roofline(self) -> Roofline | None:
        return None if self.step is None else roofline(self.step, self.topology.chip)


def _gib(n: float) -> str:
    return f"{n / GiB:.2f} GiB"


def format_report(report: Report) -> str:
    """What the CLIs print: the program, the mesh, memory per chip against HBM, collectives, the verdict."""
    t = report.topology
    mesh = " ".join(f"{k}={v}" for k, v in report.mesh.items())
    lines = [
        f"{report.program} on {t.name} ({t.layout}: {t.chips} chips of {t.chip.name}, "
        f"{_gib(t.chip.hbm_bytes)} HBM each; libtpu {libtpu_version()})",
        f"mesh {mesh}",
        *report.notes,
    ]
    if report.error:
        lines += [f"the compiler refused it: {report.error}", "does not fit"]
        return "\n".join(lines)
    lines.append(
        f"per chip: arguments {_gib(report.arguments)}, outputs {_gib(report.outputs)} "
        f"({_gib(report.aliased)} of them aliased to arguments), temporaries {_gib(report.temporaries)}, "
        f"code {_gib(report.code)}; total {_gib(report.total)} of {_gib(t.chip.hbm_bytes)}"
    )
    if sent := report.written.collectives:
        parts = [f"{kind} x{c.count} ({_gib(c.chip_bytes)} per chip)" for kind, c in sorted(sent.items())]
        lines.append("collectives in the program (a scanned layer's once): " + ", ".join(parts))
    else:
        lines.append("collectives in the program: none")
    if (step := report.step) is not None:
        bound = report.roofline
        lines.append(
            f"per chip per step, every layer counted: {step.xla_flops / 1e12:.1f} TFLOP counted by XLA + "
            f"{step.kernel_flops / 1e12:.1f} by the splash kernels' formula; HBM {_gib(step.xla_bytes)} by XLA + "
            f"{_gib(step.kernel_bytes)} by the formula; {_gib(step.collective_bytes)} sent over the interconnect"
        )
        lines.append(
            f"roofline lower bound {bound.seconds:.3f} s per step, {bound.binding}-bound (compute "
            f"{bound.compute:.3f} s, HBM {bound.memory:.3f} s, interconnect {bound.interconnect:.3f} s)"
        )
    lines.append("fits" if report.fits else "does not fit")
    return "\n".join(lines)
