"""A compiled program's report: memory per chip against the chip's HBM, its collectives and FLOPs, and
the text the CLIs print."""

from __future__ import annotations

import dataclasses

from mv2v_jax.aot.hlo import Collective
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
    collectives: dict[str, Collective] = dataclasses.field(default_factory=dict)
    error: str = ""  # the compiler's refusal (e.g. out of HBM)
    written_flops: float = 0.0  # per chip, as the program is written (a loop body once), splash included
    uncounted: list[str] = dataclasses.field(default_factory=list)  # custom kernels whose FLOPs are unknown
    flops: float | None = None  # per chip per step with every layer counted (step_cost)
    compile_seconds: float = 0.0

    @property
    def total(self) -> int:
        return self.arguments + self.outputs - self.aliased + self.temporaries + self.code

    @property
    def fits(self) -> bool:
        return not self.error and self.total <= self.topology.chip.hbm_bytes

    @property
    def seconds_at_peak(self) -> float | None:
        return None if self.flops is None else self.flops / self.topology.chip.peak_flops


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
    if report.collectives:
        parts = [f"{kind} x{c.count} ({_gib(c.chip_bytes)} per chip)" for kind, c in sorted(report.collectives.items())]
        lines.append("collectives in the program (a scanned layer's once): " + ", ".join(parts))
    else:
        lines.append("collectives in the program: none")
    if report.flops is not None:
        lines.append(f"{report.flops / 1e12:.1f} TFLOP per chip per step: {report.seconds_at_peak:.3f} s at peak")
    lines.append("fits" if report.fits else "does not fit")
    return "\n".join(lines)
