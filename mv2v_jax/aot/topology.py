"""TPU slices to compile for without the hardware: chip figures, Cloud TPU slice names, and libtpu's
topology descriptions (`jax.experimental.topologies`)."""

from __future__ import annotations

import dataclasses
import math
import os
import re
from typing import Any

GiB = 2**30


@dataclasses.dataclass(frozen=True)
class Chip:
    """Per-chip figures: HBM in bytes, the peak dense bf16 rate in FLOP/s, and HBM and interconnect
    bandwidth in bytes/s (ICI: what one chip can send, all its links together)."""

    name: str
    hbm_bytes: int
    peak_flops: float
    hbm_bandwidth: float
    ici_bandwidth: float


# HBM: what libtpu 0.0.42.1's compiler lets a program use, from its out-of-HBM refusal ("exceeds available
# HBM (95.74G)", G meaning GiB); Cloud TPU documentation gives 95 GiB (v5p), 16 GB (v5e), 32 GB (v6e).
# Rates: Cloud TPU documentation (cloud.google.com/tpu/docs/v5p, v5e, v6e): bf16 459 / 197 / 918 TFLOP/s;
# HBM 2,765 / 819 / 1,638 GB/s; ICI 4,800 / 1,600 / 3,584 Gbps per chip, i.e. 600 / 200 / 448 GB/s out
# (half the documentation's bidirectional 1,200 / 400 / 800 GB/s; for v6e the larger figure, keeping the
# roofline a lower bound).
CHIPS = {
    "v5p": Chip("v5p", int(95.74 * GiB), 459e12, 2765e9, 600e9),
    "v5e": Chip("v5e", int(15.75 * GiB), 197e12, 819e9, 200e9),
    "v6e": Chip("v6e", int(31.25 * GiB), 918e12, 1638e9, 448e9),
}
# Cloud TPU names count TensorCores for v5p (two per chip: v5p-8 is 4 chips) and chips for v5e / v6e.
CORES_PER_CHIP = {"v5p": 2, "v5e": 1, "v6e": 1}
NOT_INSTALLED = "not installed"  # what libtpu_version says without libtpu


@dataclasses.dataclass(frozen=True)
class Topology:
    name: str  # as asked for, e.g. "v5p-64"
    layout: str  # libtpu's, e.g. "v5p:2x4x4"
    chip: Chip
    devices: tuple[Any, ...]

    @property
    def chips(self) -> int:
        return len(self.devices)


def _layout(kind: str, chips: int) -> str:
    """The physical layout of a slice of `chips` chips: v5p a 3D torus from 2x2x1 up, doubling its
    shortest side; v5e / v6e a 2D one from 1x1, doubling its shortest side."""
    if chips < 1 or chips & (chips - 1):
        raise ValueError(f"{chips} chips: slices of a power-of-two chip count are supported")
    dims = [2, 2, 1] if kind == "v5p" else [1, 1]
    if chips < math.prod(dims):
        raise ValueError(f"the smallest {kind} slice has {math.prod(dims)} chips, asked for {chips}")
    while math.prod(dims) < chips:
        dims.sort()
        dims[0] *= 2
    return f"{kind}:{'x'.join(map(str, sorted(dims, reverse=1 in dims and kind == 'v5p')))}"  # v5p:2x2x1


def parse_topology(name: str) -> tuple[str, str]:
    """`"v5p-64"` (a Cloud TPU slice name) or `"v5p:2x4x4"` (a layout) -> (chip kind, layout)."""
    match = re.fullmatch(r"(v5p|v5e|v6e)(?:-(\d+)|:(\d+(?:x\d+){1,2}))", name)
    if not match:
        raise ValueError(f"TPU topology {name!r}: expected e.g. v5p-64, v5e-16, v6e-8 or v5p:2x2x2 ({sorted(CHIPS)})")
    kind, count, layout = match.groups()
    if layout:
        return kind, f"{kind}:{layout}"
    cores = int(count)
    if cores % CORES_PER_CHIP[kind]:
        raise ValueError(f"{name}: {kind} slices count {CORES_PER_CHIP[kind]} TensorCores per chip")
    return kind, _layout(kind, cores // CORES_PER_CHIP[kind])


def tpu_topology(name: str) -> Topology:
    """The devices of a TPU topology to compile for (libtpu must be installed: the `tpu` extra)."""
    kind, layout = parse_topology(name)
    # Compiling for a topology needs no TPU: let several such processes share libtpu on one host, and
    # give libtpu the worker list it would otherwise look up in a TPU VM's metadata.
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
    from jax.experimental import topologies

    dims = [int(d) for d in layout.partition(":")[2].split("x")]
    # A slice smaller than one host (4 chips) is a host of its own size.
    bounds = {"chips_per_host_bounds": [*dims, 1, 1][:3]} if math.prod(dims) < 4 else {}
    try:
        description = topologies.get_topology_desc(platform="tpu", topology_name=layout, **bounds)
    except Exception as e:  # libtpu missing or refusing the layout
        if (version := libtpu_version()) == NOT_INSTALLED:
            why = 'libtpu is not installed: install the tpu extra (pip install "jax[tpu]")'
        else:
            why = f"libtpu {version} refused it"
        raise RuntimeError(f"cannot describe TPU topology {layout} ({why}): {e}") from e
    return Topology(name, layout, CHIPS[kind], tuple(description.devices))


def libtpu_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("libtpu")
    except PackageNotFoundError:
        return NOT_INSTALLED
