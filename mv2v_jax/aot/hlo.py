"""What a compiled (per-chip) HLO module says that its memory and cost analyses do not: the collectives
it runs and the matmul FLOPs and HBM bytes of its splash-attention kernels (XLA counts a Pallas kernel as
none)."""

from __future__ import annotations

import dataclasses
import math
import re

_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "bf16": 2, "f16": 2, "s32": 4, "u32": 4, "f32": 4}
_BYTES |= {"s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16}
_ARRAY = re.compile(r"\b([a-z]+[0-9]*(?:e\dm\d\w*)?)\[([\d,]*)\]")
_INSTRUCTION = re.compile(
    r"^\s*(?:ROOT\s+)?%?(?P<name>[\w.\-]+) = (?P<type>.*?) (?P<op>[a-z][a-z0-9\-]*)\((?P<rest>.*)$"
)
COLLECTIVES = ("all-gather", "all-reduce", "reduce-scatter", "all-to-all", "collective-permute")
# Matmuls of each splash kernel (its name starts with the key): forward q k^T and p v; dq recomputes the
# scores, dp = do v^T and dq = ds k; dk/dv recomputes the scores, dp, dv = p^T do and dk = ds^T q.
SPLASH_MATMULS = {"splash_mha_fwd": 2, "splash_mha_dq": 3, "splash_mha_dkv": 4}
_FLOATS = ("bf16", "f16", "f32")


def _arrays(text: str) -> list[tuple[str, tuple[int, ...]]]:
    return [(dtype, tuple(int(d) for d in dims.split(",") if d)) for dtype, dims in _ARRAY.findall(text)]


def _nbytes(dtype: str, shape: tuple[int, ...]) -> int:
    size = _BYTES.get(dtype, 1 if dtype.startswith("f8") else 0)
    return size * math.prod(shape)


def _group_size(rest: str) -> int:
    """Devices per replica group: `replica_groups={{0,1},{2,3}}` or the iota form `[2,2]<=[4]`."""
    if match := re.search(r"replica_groups=\{\{([\d,]*)\}", rest):
        return len(match.group(1).split(","))
    if match := re.search(r"replica_groups=\[(\d+),(\d+)\]", rest):
        return int(match.group(2))
    return 1


@dataclasses.dataclass
class Collective:
    count: int = 0
    chip_bytes: float = 0.0  # bytes each chip sends over the interconnect, ring algorithms


def collectives(hlo: str) -> dict[str, Collective]:
    """The collectives of a compiled (per-chip) HLO module, by kind, as written in the program text: an
    op inside a loop body appears once. Bytes per chip: all-gather `out (n-1)/n`, reduce-scatter
    `out (n-1)`, all-reduce `2 size (n-1)/n`, all-to-all `size (n-1)/n`, collective-permute `size`."""
    found: dict[str, Collective] = {}
    for line in hlo.splitlines():
        match = _INSTRUCTION.match(line)
        if not match:
            continue
        op = match["op"].removesuffix("-start")
        if op not in COLLECTIVES or match["op"].endswith("-done"):
            continue
        size = max((_nbytes(*a) for a in _arrays(match["type"])), default=0)  # an async op's tuple: its largest buffer
        n = _group_size(match["rest"])
        share = {
            "all-gather": size * (n - 1) / n,
            "reduce-scatter": size * (n - 1),
            "all-reduce": 2 * size * (n - 1) / n,
            "all-to-all": size * (n - 1) / n,
            "collective-permute": size,
        }[op]
        entry = found.setdefault(op, Collective())
        entry.count += 1
        entry.chip_bytes += share
    return found


@dataclasses.dataclass
class Kernels:
    """The splash-attention custom calls of a module, by formula (XLA counts a Pallas kernel as none)."""

    flops: float = 0.0  # their matmuls
    hbm_bytes: float = 0.0  # each float operand read once and each output written once: a lower bound
    uncounted: list[str] = dataclasses.field(default_factory=list)  # other custom kernels, not counted


def kernels(hlo: str) -> Kernels:
    """Matmul FLOPs and HBM bytes of the splash-attention custom calls in a compiled TPU module, from the
    operand shapes each call names, and the names of other custom kernels found."""
    found = Kernels()
    for line in hlo.splitlines():
        if 'custom_call_target="tpu_custom_call"' not in line:
            continue
        match = _INSTRUCTION.match(line)
        name = match["name"] if match else "?"
        matmuls = next((m for prefix, m in SPLASH_MATMULS.items() if name.startswith(prefix)), None)
        operands = re.search(r"operand_layout_constraints=\{((?:[^{}]*\{[^{}]*\})*)", line)
        floats = [a for a in _arrays(operands.group(1) if operands else "") if a[0] in _FLOATS]
        if matmuls is None or len(floats) < 2:
            found.uncounted.append(name)
            continue
        (_, q), (_, k) = floats[:2]
        found.flops += matmuls * 2 * math.prod(q[:-1]) * k[-2] * q[-1]
        # Results shaped like an operand (o, dq, dk, dv) go to HBM; the others are the kernel's VMEM scratch.
        shapes = {shape for _, shape in floats}
        written = [a for a in _arrays(match["type"]) if a[0] in _FLOATS and a[1] in shapes]
        found.hbm_bytes += sum(_nbytes(*a) for a in floats + written)
    return found
