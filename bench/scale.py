"""Scale, compiled ahead of time: does each real-size step fit a TPU chip, and how long would it take.

    python bench/scale.py                  # every row (hours on 2 busy cores: run it with nohup)
    python bench/scale.py --rows nvs-s4    # some rows; results of earlier rows are kept in --results

Each row is the real program (mv2v_jax/aot/: `train.step.jit_train_step`, the sampling pipelines'
`Denoiser` velocity, or the plain Wan DiT), compiled with libtpu on this CPU for a TPU v5p slice:
XLA's memory per chip against the chip's HBM, and FLOPs per chip per step counted with every layer and
the splash kernels (`aot.step_cost`: one more compile with two unrolled blocks per segment), turned into seconds at
the chip's peak bf16 rate, a lower bound. The rows are the experiment configs of the real backbones
(configs/recammaster_nvs.py, configs/lucy_edit_long.py; the training rows with one example per chip)
and the Wan2.1-14B preset of configs/wan_dit.py. Writes the "Scale (compiled ahead of time)" section of
BENCHMARKS.md and bench/scale.png.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import matplotlib
from common import write_section  # bench/ is on sys.path when run as a script

from mv2v_jax import aot
from mv2v_jax.config import load_config
from mv2v_jax.memory.budget import turn_cost

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


def nvs_sampling(sequence: int) -> Row:
    return Row(
        f"nvs-s{sequence}",
        "ReCamMaster-1.3B NVS sampling step, all 6 memory slots filled (turn 7 on), CFG batch 2",
        "v5p:2x2x2",
        sequence,
        lambda devices: aot.sampling_step_program(experiment(NVS), "nvs", devices, {"sequence": sequence}),
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


def edit_sampling() -> Row:
    return Row(
        "edit-sample",
        "LucyEdit-5B long-edit sampling step (6 memory slots), CFG batch 2",
        "v5p-8",
        4,
        lambda devices: aot.sampling_step_program(experiment(EDIT), "long_edit", devices, {"data": 2, "sequence": 2}),
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
    *(nvs_sampling(s) for s in (1, 2, 4, 8)),
    training(NVS, NVS_TRAIN, "v5p-8", 4),
    training(NVS, NVS_TRAIN, "v5p-64", 32),
    edit_sampling(),
    training(EDIT, "LucyEdit-5B long-edit training step, 6 memory slots, one example per chip", "v5p-64", 32),
    wan14b_forward(),
]


def run_row(row: Row, cost: bool) -> dict:
    topology = aot.tpu_topology(row.topology)
    topology = dataclasses.replace(topology, devices=topology.devices[: row.chips])
    start = time.perf_counter()
    program = row.build(topology.devices)
    report = aot.compile_program(program, topology)
    print(aot.format_report(report), flush=True)
    result = dict(
        key=row.key,
        what=row.what,
        topology=row.topology,
        layout=topology.layout,
        chips=row.chips,
        mesh=report.mesh,
        notes=report.notes,
        error=report.error,
        arguments=report.arguments,
        outputs=report.outputs,
        aliased=report.aliased,
        temporaries=report.temporaries,
        code=report.code,
        total=report.total,
        hbm=topology.chip.hbm_bytes,
        fits=report.fits,
        compile_seconds=round(report.compile_seconds),
        collectives={k: dataclasses.asdict(v) for k, v in report.collectives.items()},
    )
    if cost and not report.error:
        flops, collectives = aot.step_cost(program, report)
        result |= dict(
            flops=flops,
            seconds_at_peak=flops / topology.chip.peak_flops,
            step_collectives={k: dataclasses.asdict(v) for k, v in collectives.items()},
            uncounted_kernels=sorted(set(report.uncounted)),
        )
        print(f"{row.key}: {flops / 1e12:.1f} TFLOP per chip, {result['seconds_at_peak']:.3f} s at peak", flush=True)
    result["seconds"] = round(time.perf_counter() - start)
    return result


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
    return f"{n / aot.GiB:.1f}"


def table(results: dict[str, dict]) -> str:
    lines = [
        "| step | slice (chips) | mesh | per chip: arguments / outputs / temporaries (GiB) | total of HBM "
        "(GiB) | fits | TFLOP per chip per step | s per step at peak | compile (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in ROWS:
        r = results.get(row.key)
        if r is None:
            continue
        mesh = " ".join(f"{k}={v}" for k, v in r["mesh"].items() if v > 1) or "1 chip"
        memory = (
            f"refused: {r['error'][:120]}"
            if r["error"]
            else f"{gib(r['arguments'])} / {gib(r['outputs'])} / {gib(r['temporaries'])}"
        )
        flops = f"{r['flops'] / 1e12:,.1f}" if "flops" in r else ""
        seconds = f"{r['seconds_at_peak']:.3f}" if "seconds_at_peak" in r else ""
        lines.append(
            f"| {r['what']} | {r['topology']} ({r['chips']}) | {mesh} | {memory} | "
            f"{gib(r['total'])} of {gib(r['hbm'])} | {'yes' if r['fits'] else '**no**'} | {flops} | {seconds} | "
            f"{r['compile_seconds']} |"
        )
    return "\n".join(lines)


def scaling(results: dict[str, dict]) -> str:
    rows = [
        results[f"nvs-s{s}"]
        for s in (1, 2, 4, 8)
        if f"nvs-s{s}" in results and "seconds_at_peak" in results[f"nvs-s{s}"]
    ]
    if not rows:
        return ""
    base = rows[0]["seconds_at_peak"] * rows[0]["chips"]
    lines = [
        "| chips (sequence axis) | s per step at peak | speed-up | efficiency | HBM per chip (GiB) "
        "| GiB sent per chip per step |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        sent = sum(c["chip_bytes"] for c in r.get("step_collectives", {}).values())
        speedup = rows[0]["seconds_at_peak"] / r["seconds_at_peak"]
        lines.append(
            f"| {r['chips']} | {r['seconds_at_peak']:.3f} | {speedup:.2f}x | "
            f"{base / (r['seconds_at_peak'] * r['chips']):.0%} | {gib(r['total'])} | {gib(sent)} |"
        )
    chips = [r["chips"] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    axes[0].plot(chips, [r["seconds_at_peak"] for r in rows], "o-", label="compiled FLOPs at peak")
    axes[0].plot(chips, [rows[0]["seconds_at_peak"] / c for c in chips], "--", color="gray", label="ideal")
    axes[0].set(xscale="log", yscale="log", xlabel="v5p chips (sequence axis)", ylabel="s per sampling step")
    axes[0].set_xticks(chips, [str(c) for c in chips])
    axes[0].legend()
    axes[1].plot(chips, [r["total"] / aot.GiB for r in rows], "o-")
    axes[1].set(xscale="log", xlabel="v5p chips (sequence axis)", ylabel="HBM per chip (GiB)")
    axes[1].set_xticks(chips, [str(c) for c in chips])
    fig.suptitle("ReCamMaster-1.3B NVS turn, one sampling step (compiled for v5p)")
    fig.tight_layout()
    fig.savefig(HERE / "scale.png", dpi=110)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", nargs="*", default=[r.key for r in ROWS], choices=[r.key for r in ROWS])
    parser.add_argument("--results", default="outputs/scale.json", help="per-row results, kept between runs")
    parser.add_argument("--no-cost", action="store_true", help="memory only: skip the unrolled cost compiles")
    args = parser.parse_args()
    store = Path(args.results)
    results = json.loads(store.read_text()) if store.exists() else {}
    for row in ROWS:
        if row.key not in args.rows:
            continue
        print(f"== {row.key}: {row.what} on {row.topology} ({row.chips} chips)", flush=True)
        try:
            results[row.key] = run_row(row, cost=not args.no_cost)
        except Exception:  # one row's failure is printed and the others still run
            traceback.print_exc()
            continue
        store.parent.mkdir(parents=True, exist_ok=True)
        store.write_text(json.dumps(results, indent=1))
    notes = {r.key: results[r.key]["notes"] for r in ROWS if r.key in results}
    details = "\n".join(f"- {key}: " + "; ".join(n) for key, n in notes.items())
    body = (
        f"libtpu {aot.libtpu_version()}, compiled on this CPU for TPU v5p (95 GiB HBM, 459 TFLOP/s bf16 per chip). "
        f"Experiment configs {NVS} and {EDIT} as they are (81-frame 480x832 clips, umT5's 512 text tokens, "
        "guidance 5 as a batch of 2, 6 memory slots, merging at r=0.5 when sampling, bfloat16 compute, splash "
        "attention, full remat in training), with `batch_size` one example per chip for training; the 14B row "
        "is the plain Wan2.1-14B DiT of configs/wan_dit.py. Training compiles its largest step variant (every "
        "memory slot at 1x4x4, no merging): the one that must fit. Sampling compiles one program per memory "
        "count (pipelines.slots); the rows compile the largest, all 6 slots filled, which every later turn "
        "runs. v5p slice names count TensorCores, two "
        "per chip: v5p-8 is 4 chips, v5p-64 is 32; the sampling rows use the first 1, 2, 4 and 8 chips of "
        "v5p:2x2x2 (v5p-16). Total = arguments + outputs - aliased + temporaries + code. FLOPs: XLA's count of "
        "the compiled program with every layer counted (its scan bodies count one layer per segment; one more "
        "compile with 2 unrolled layers per segment; extrapolated) plus the splash kernels' matmuls, which XLA "
        "does not count; seconds at peak = FLOPs / 459e12, a lower bound (communication and memory-bound phases "
        "not included).\n\n" + table(results) + "\n\nWhat each row compiled:\n\n" + details
    )
    if strong := scaling(results):
        analytic = analytic_nvs_turn_flops()
        body += (
            "\n\n### Strong scaling of one NVS sampling step over the sequence axis\n\n"
            f"The analytic FLOPs of the step (memory/budget.py, both guidance passes): {analytic / 1e12:,.0f} "
            "TFLOP in all.\n\n" + strong + "\n\n![strong scaling](bench/scale.png)"
        )
    write_section("Scale (compiled ahead of time)", body)


if __name__ == "__main__":
    main()
