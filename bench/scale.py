"""Scale, compiled ahead of time: does each real-size step fit a TPU chip, and a lower bound on its time.

    python bench/scale.py                          # every row (about an hour on 2 busy cores), writes
                                                   # BENCHMARKS.md and bench/scale.png
    python bench/scale.py --rows wan14b-forward    # some rows, the table printed, nothing written

Each row is the real program (mv2v_jax/aot/: `train.step.jit_train_step`, the sampling pipelines'
`Denoiser` velocity, or the plain Wan DiT), compiled with libtpu on this CPU for a TPU v5p slice:
XLA's memory per chip against the chip's HBM, and the cost per chip per step with every layer counted
(`aot.step_cost`: one more compile with two unrolled blocks per segment), in parts: XLA's FLOPs and
HBM bytes, the splash kernels' by formula, and the bytes each chip sends in collectives; their roofline
(`aot.roofline`) is a lower bound on the step's time, never a measured speed. The sampling rows compile
the serving layout sample.py runs (bf16 weights whole on every chip) and, for comparison, the training
layout (float32 weights split over fsdp x sequence). Only a run of every row writes, so the section
comes from one command at one commit.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Callable
from pathlib import Path

import mv2v_jax.cli_start  # noqa: F401  (first: Ctrl-C in the imports below is one line, exit 130)

import matplotlib
from common import write_section  # bench/ is on sys.path when run as a script

from mv2v_jax import aot
from mv2v_jax.config import ArgumentParser, load_config, run_app
from mv2v_jax.memory.budget import turn_cost
from mv2v_jax.parallel.mesh import default_sampling_mesh

matplotlib.use("Agg")
import matplotlib.pyplot as plt

HERE = Path(__file__).parent
NVS, EDIT = "configs/recammaster_nvs.py", "configs/lucy_edit_long.py"


def experiment(name: str, **overrides) -> dict:
    """An experiment config as a dict, with top-level keys replaced."""
    return load_config(name).to_dict() | overrides


@dataclasses.dataclass(frozen=True)
class Row:
    key: str
    what: str
    topology: str
    chips: int  # the first `chips` chips of the topology
    build: Callable[[tuple], aot.Program]


LAYOUTS = {True: "", False: "-training-layout"}  # serving (what sample.py runs) or the training layout


def layout_name(serving: bool) -> str:
    return "serving layout (bf16 weights on every chip)" if serving else "training layout (f32 weights split)"


def nvs_sampling(mesh: dict[str, int], serving: bool = True) -> Row:
    """`mesh` e.g. {"sequence": 4} (key nvs-s4), or {"data": 2, "sequence": 2} (nvs-d2s2: sample.py's
    default on 4 chips, guidance's batch over data)."""
    return Row(
        f"nvs-{''.join(f'{axis[0]}{n}' for axis, n in mesh.items())}{LAYOUTS[serving]}",
        "ReCamMaster-1.3B NVS sampling step, all 6 memory slots filled (turn 7 on), CFG batch 2, "
        + layout_name(serving),
        "v5p:2x2x2",
        math.prod(mesh.values()),
        lambda devices: aot.sampling_step_program(experiment(NVS), "nvs", devices, mesh, serving=serving),
    )


def training(name: str, what: str, topology: str, chips: int) -> Row:
    """The config's training step with one example per chip (its mesh: fsdp over every chip)."""
    return Row(
        f"{'nvs' if name == NVS else 'edit'}-train-{chips}",
        what,
        topology,
        chips,
        lambda devices: aot.train_step_program(experiment(name, batch_size=chips), devices),
    )


def edit_sampling(serving: bool) -> Row:
    return Row(
        f"edit-sample{LAYOUTS[serving]}",
        f"LucyEdit-5B long-edit sampling step (6 memory slots), CFG batch 2, {layout_name(serving)}",
        "v5p-8",
        4,
        lambda devices: aot.sampling_step_program(
            experiment(EDIT), "long_edit", devices, {"data": 2, "sequence": 2}, serving=serving
        ),
    )


def wan14b_forward() -> Row:
    dit = load_config("configs/wan_dit.py:wan2.1-t2v-14b").to_dict()
    return Row(
        "wan14b-forward",
        "Wan2.1-14B forward, 81x480x832 (32,760 tokens), CFG batch 2",
        "v5p-64",
        32,
        lambda devices: aot.dit_forward_program(dit, devices, {"data": 2, "sequence": 16}, (21, 30, 52)),
    )


NVS_TRAIN = "ReCamMaster-1.3B NVS training step, 6 memory slots, one example per chip"
ROWS = [
    *(nvs_sampling({"sequence": s}) for s in (1, 2, 4, 8)),
    *(nvs_sampling(default_sampling_mesh(chips, guided=True)) for chips in (2, 4, 8)),
    *(nvs_sampling({"sequence": s}, serving=False) for s in (2, 4)),
    training(NVS, NVS_TRAIN, "v5p-8", 4),
    training(NVS, NVS_TRAIN, "v5p-64", 32),
    edit_sampling(serving=True),
    edit_sampling(serving=False),
    training(EDIT, "LucyEdit-5B long-edit training step, 6 memory slots, one example per chip", "v5p-64", 32),
    wan14b_forward(),
]


def run_row(row: Row) -> aot.Report:
    """The row's program compiled: memory per chip, and its cost per step unless the compiler refused it."""
    topology = aot.tpu_topology(row.topology)
    topology = dataclasses.replace(topology, devices=topology.devices[: row.chips])
    program = row.build(topology.devices)
    report = aot.compile_program(program, topology)
    if not report.error:
        report.step = aot.step_cost(program, report)
    print(aot.format_report(report), flush=True)
    return report


def analytic_nvs_turn_flops() -> float:
    """memory/budget.py's analytic FLOPs of the NVS sampling step (both guidance passes), for comparison."""
    from mv2v_jax.memory.model import MemoryConfig
    from mv2v_jax.tasks import get_task

    config = experiment(NVS)
    model = MemoryConfig.from_config(config["model"])
    clip = aot.clip_of(config)
    layout = aot.turn_layout(model, get_task("nvs"), clip, config["sample"]["retrieval"]["slots"], model.tokenizers)
    keep_ratio = config["sample"]["sampling"]["keep_ratio"]
    return 2 * turn_cost(layout, model.dit, clip.text_len, model.merge, keep_ratio).flops


def gib(n: float) -> str:
    return f"{n / aot.GiB:,.1f}"


def table(reports: dict[str, aot.Report]) -> str:
    lines = [
        "| step | slice (chips) | mesh | per chip: arguments / outputs / temporaries (GiB) | total of HBM (GiB) "
        "| fits | TFLOP per chip: XLA + kernels' formula | HBM GiB per chip: XLA + kernels' formula "
        "| GiB sent per chip | roofline s per step (binding) | compile (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in ROWS:
        if (r := reports.get(row.key)) is None:
            continue
        mesh = " ".join(f"{k}={v}" for k, v in r.mesh.items() if v > 1) or "1 chip"
        hbm = r.topology.chip.hbm_bytes
        if r.error:
            memory, cost = f"refused: {r.error[:120]}", ["", "", "", ""]
        else:
            memory = f"{gib(r.arguments)} / {gib(r.outputs)} / {gib(r.temporaries)}"
            step, bound = r.step, r.roofline
            cost = [
                f"{step.xla_flops / 1e12:,.1f} + {step.kernel_flops / 1e12:,.1f}",
                f"{gib(step.xla_bytes)} + {gib(step.kernel_bytes)}",
                gib(step.collective_bytes),
                f"{bound.seconds:.3f} ({bound.binding})",
            ]
        lines.append(
            f"| {row.what} | {row.topology} ({row.chips}) | {mesh} | {memory} | {gib(r.total)} of {gib(hbm)} | "
            f"{'yes' if r.fits else '**no**'} | {' | '.join(cost)} | {r.compile_seconds:.0f} |"
        )
    return "\n".join(lines)


def scaling(reports: dict[str, aot.Report]) -> str:
    """Strong scaling of the serving-layout NVS sampling step over the sequence axis, by roofline seconds."""
    rows = [reports[f"nvs-s{s}"] for s in (1, 2, 4, 8)]
    chips = [len(r.topology.devices) for r in rows]
    seconds = [r.roofline.seconds for r in rows]
    lines = [
        "| chips (sequence axis) | roofline s per step (binding) | speed-up | efficiency | HBM per chip (GiB) "
        "| GiB sent per chip per step |",
        "|---|---|---|---|---|---|",
    ]
    for r, n, t in zip(rows, chips, seconds, strict=True):
        lines.append(
            f"| {n} | {t:.3f} ({r.roofline.binding}) | {seconds[0] / t:.2f}x | {seconds[0] / (t * n):.0%} | "
            f"{gib(r.total)} | {gib(r.step.collective_bytes)} |"
        )
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    axes[0].plot(chips, seconds, "o-", label="roofline lower bound")
    axes[0].plot(chips, [seconds[0] / n for n in chips], "--", color="gray", label="ideal")
    axes[0].set(xscale="log", yscale="log", xlabel="v5p chips (sequence axis)", ylabel="s per sampling step")
    axes[0].set_xticks(chips, [str(n) for n in chips])
    axes[0].legend()
    axes[1].plot(chips, [r.total / aot.GiB for r in rows], "o-")
    axes[1].set(xscale="log", xlabel="v5p chips (sequence axis)", ylabel="HBM per chip (GiB)")
    axes[1].set_xticks(chips, [str(n) for n in chips])
    fig.suptitle("ReCamMaster-1.3B NVS turn, one sampling step, serving layout (compiled for v5p)")
    fig.tight_layout()
    fig.savefig(HERE / "scale.png", dpi=110)
    return "\n".join(lines)


def section(reports: dict[str, aot.Report]) -> str:
    chip = aot.CHIPS["v5p"]
    notes = "\n".join(f"- {key}: " + "; ".join(r.notes) for key, r in reports.items())
    return (
        f"libtpu {aot.libtpu_version()}, compiled on this CPU for TPU v5p ({gib(chip.hbm_bytes)} GiB HBM as the "
        f"compiler allows it, {chip.peak_flops / 1e12:.0f} TFLOP/s bf16, {chip.hbm_bandwidth / 1e9:,.0f} GB/s HBM, "
        f"{chip.ici_bandwidth / 1e9:.0f} GB/s sent over the interconnect per chip: aot/topology.py). Experiment "
        f"configs {NVS} and {EDIT} as they are (81-frame 480x832 clips, umT5's 512 text tokens, guidance 5 as a "
        "batch of 2, 6 memory slots, merging at r=0.5 when sampling, bfloat16 compute, splash attention, full "
        "remat in training), with `batch_size` one example per chip for training; the 14B row is the plain "
        "Wan2.1-14B DiT of configs/wan_dit.py. Sampling rows: the serving layout sample.py runs (weights in "
        "bf16, whole on every chip), and rows marked training layout (float32 weights split over fsdp x "
        "sequence, as before) for comparison. Training compiles its largest step variant (every memory slot "
        "at 1x4x4, no merging): the one that must fit. Sampling compiles one program per memory count "
        "(pipelines.slots); the rows compile the largest, all 6 slots filled, which every later turn runs. v5p "
        "slice names count TensorCores, two per chip: v5p-8 is 4 chips, v5p-64 is 32; the NVS sampling rows "
        "use the first 1, 2, 4 and 8 chips of v5p:2x2x2 (v5p-16): over the sequence axis alone, and in the "
        "mesh sample.py picks by default (guidance's batch over data, the rest over sequence: "
        "parallel.mesh.default_sampling_mesh; on v5p-8 that is data=2 x sequence=2).\n\n"
        "Every number is from the compiled programs, a bound, never a measured speed. Memory: XLA's plan per "
        "chip, total = arguments + outputs - aliased + temporaries + code. Cost per chip per step with every "
        "layer counted (the scan bodies count once in XLA's analysis; one more compile with 2 unrolled layers "
        "per segment, extrapolated): XLA's FLOPs and HBM bytes accessed (`cost_analysis()`), and apart from "
        "them the splash kernels', which XLA does not count, by formula (their matmuls; q, k, v read and the "
        "output written once: a lower bound); GiB each chip sends in collectives (ring algorithms). Roofline: "
        "max(FLOPs / peak, HBM bytes / HBM bandwidth, bytes sent / ICI bandwidth), a lower bound on the step's "
        "time, the binding term named.\n\n"
        + table(reports)
        + "\n\nWhat each row compiled:\n\n"
        + notes
        + "\n\n### Strong scaling of one NVS sampling step over the sequence axis (serving layout)\n\n"
        f"By the roofline bounds above, not by FLOPs alone. The analytic FLOPs of the step (memory/budget.py, "
        f"both guidance passes): {analytic_nvs_turn_flops() / 1e12:,.0f} TFLOP in all.\n\n"
        + scaling(reports)
        + "\n\n![strong scaling](bench/scale.png)"
    )


def main(argv: list[str]) -> None:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    # Checking a few rows prints their table and writes nothing: the section comes from one full run.
    parser.add_argument("--rows", nargs="+", choices=[r.key for r in ROWS], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    reports = {}
    for row in ROWS:
        if args.rows and row.key not in args.rows:
            continue
        print(f"== {row.key}: {row.what} on {row.topology} ({row.chips} chips)", flush=True)
        reports[row.key] = run_row(row)
    if args.rows:
        print(table(reports))
        return
    write_section("Scale (compiled ahead of time)", section(reports))


if __name__ == "__main__":
    run_app(main, absl_flags=False)
