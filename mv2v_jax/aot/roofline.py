"""A step's cost per chip, XLA's count and the splash kernels' formula kept apart, and its roofline: the
least time the chip could take, bound by compute, HBM traffic or the interconnect, whichever is largest."""

from __future__ import annotations

import dataclasses

from mv2v_jax.aot.hlo import Collective
from mv2v_jax.aot.topology import Chip


@dataclasses.dataclass
class StepCost:
    """Per chip. XLA's `cost_analysis()` ("flops", "bytes accessed": every op's operands and outputs, a
    fusion's insides not) counts none of a Pallas kernel; the splash kernels' part is `hlo.kernels`'
    formula. Collectives are what each chip sends (`hlo.collectives`)."""

    xla_flops: float = 0.0
    kernel_flops: float = 0.0
    xla_bytes: float = 0.0
    kernel_bytes: float = 0.0
    collectives: dict[str, Collective] = dataclasses.field(default_factory=dict)

    @property
    def flops(self) -> float:
        return self.xla_flops + self.kernel_flops

    @property
    def hbm_bytes(self) -> float:
        return self.xla_bytes + self.kernel_bytes

    @property
    def collective_bytes(self) -> float:
        return sum(c.chip_bytes for c in self.collectives.values())

    def extrapolated(self, other: StepCost, scale: float) -> StepCost:
        """`self + scale (other - self)`, every part alike (cost.step_cost: the cost at another depth)."""

        def line(a: float, b: float) -> float:
            return a + scale * (b - a)

        sent = {}
        for kind in set(self.collectives) | set(other.collectives):
            a, b = self.collectives.get(kind, Collective()), other.collectives.get(kind, Collective())
            sent[kind] = Collective(round(line(a.count, b.count)), line(a.chip_bytes, b.chip_bytes))
        parts = ("xla_flops", "kernel_flops", "xla_bytes", "kernel_bytes")
        return StepCost(**{p: line(getattr(self, p), getattr(other, p)) for p in parts}, collectives=sent)


@dataclasses.dataclass(frozen=True)
class Roofline:
    """Seconds per step each resource needs at its peak; the step takes at least the largest."""

    compute: float  # FLOPs / peak FLOP/s
    memory: float  # HBM bytes / HBM bandwidth
    interconnect: float  # collective bytes sent per chip / ICI bandwidth out of the chip

    @property
    def seconds(self) -> float:
        return max(self.compute, self.memory, self.interconnect)

    @property
    def binding(self) -> str:
        terms = {"compute": self.compute, "memory": self.memory, "interconnect": self.interconnect}
        return max(terms, key=terms.__getitem__)


def roofline(cost: StepCost, chip: Chip) -> Roofline:
    """A lower bound on the step's time: each term at the chip's peak rate, the three overlapping perfectly."""
    return Roofline(
        cost.flops / chip.peak_flops, cost.hbm_bytes / chip.hbm_bandwidth, cost.collective_bytes / chip.ici_bandwidth
    )
