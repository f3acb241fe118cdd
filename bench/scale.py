"""Scale, compiled ahead of time: does each real-size step fit a TPU chip, and how long would it take.

    python bench/scale.py                  # every row (hours on 2 busy cores: run it with nohup)
    python bench/scale.py --rows nvs-s4    # some rows; results of earlier rows are kept in --results

Each row is the real program (parallel/aot.py: `train.step.jit_train_step`, the sampling pipelines'
`Denoiser` velocity, or the plain Wan DiT), compiled with libtpu on this CPU for a TPU v5p slice:
XLA's memory per chip against the chip's HBM, and FLOPs per chip per step counted with every layer and
the splash kernels (`aot.step_cost`: two more compiles with the blocks unrolled), turned into seconds at
the chip's peak bf16 rate, a lower bound. Until the experiment configs of the real backbones are in
configs/, the rows are built from configs/tiny_nvs.py's sections with the model presets of
configs/wan_dit.py and the paper's sizes (81x480x832 videos, umT5 text, guidance 5). Writes the
"Scale (compiled ahead of time)" section of BENCHMARKS.md and bench/scale.png.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import jax.numpy as jnp
import matplotlib
from common import write_section  # bench/ is on sys.path when run as a script

from mv2v_jax.config import load_config
from mv2v_jax.memory.budget import turn_cost
from mv2v_jax.parallel import aot

matplotlib.use("Agg")
import matplotlib.pyplot as plt

HERE = Path(__file__).parent
VIDEO = dict(frames=81, height=480, width=832, fps=16)


def experiment(preset: str, task: str, slots: int, batch: int, mesh: dict, trainable: list[str]) -> dict:
    """An experiment config at the paper's sizes on a Wan preset (the sections of configs/tiny_nvs.py)."""
    config = load_config("configs/tiny_nvs.py").to_dict()
    dit = load_config(f"configs/wan_dit.py:{preset}").to_dict()
    dit |= dict(remat="full")  # attention and compute dtype "auto": splash and bfloat16 on TPU
    config["model"] = dict(
        dit=dit,
        camera=task == "nvs",
        tokenizers=dict(ranked=((1, 4, 4),) * 3, rest=(1, 8, 8)),  # paper
        merge=dict(blocks=(10, 20), fraction=0.5, keep_ratio=0.5),  # paper
    )
    config["memory_sampling"] |= dict(slots=slots, max_memory=slots)
    config["step"] |= dict(task=task, shift=5.0)
    config["trainable"] = trainable
    config["batch_size"], config["mesh"] = batch, mesh
    config["sample"] |= dict(
        video=VIDEO,
        codec=dict(kind="wan_vae", weights=""),
        text=dict(kind="umt5", weights="", tokenizer=""),
        sampling=dict(sampler="unipc", steps=50, shift=5.0, guidance=5.0, keep_ratio=0.5, negative_prompt=""),
        retrieval=dict(slots=slots, hfov_degrees=60.0, fov_radius=1.0),
    )
    return config


# ReCamMaster fine-tunes its camera layers and self-attention; the memory modules are new.
NVS_TRAINABLE = ["^camera/", "self_attn", "^tokenizers/", "^mergers/"]
EDIT_TRAINABLE = ["self_attn", "^tokenizers/", "^mergers/"]


@dataclasses.dataclass(frozen=True)
class Row:
    key: str
    what: str
    topology: str
    chips: int  # the first `chips` chips of the topology
    build: Callable[[tuple], aot.Program]


def nvs_sampling(sequence: int) -> Row:
    config = experiment("wan2.1-t2v-1.3b", "nvs", 4, 1, {}, NVS_TRAINABLE)
    return Row(
        f"nvs-s{sequence}",
        "ReCamMaster-1.3B NVS sampling step, turn 5 (4 memory videos), CFG batch 2",
        "v5p:2x2x2",
        sequence,
        lambda devices: aot.sampling_step_program(config, "nvs", devices, {"sequence": sequence}),
    )


def nvs_training(chips: int, topology: str) -> Row:
    config = experiment("wan2.1-t2v-1.3b", "nvs", 6, chips, {"fsdp": chips}, NVS_TRAINABLE)
    return Row(
        f"nvs-train-{chips}",
        "ReCamMaster-1.3B NVS training step, 6 memory slots, per-chip batch 1",
        topology,
        chips,
        lambda devices: aot.train_step_program(config, devices),
    )


def edit_sampling() -> Row:
    config = experiment("lucy-edit", "long_edit", 4, 1, {}, EDIT_TRAINABLE)
    return Row(
        "edit-sample",
        "LucyEdit-5B long-edit sampling step, 4 memory segments, CFG batch 2",
        "v5p-8",
        4,
        lambda devices: aot.sampling_step_program(config, "long_edit", devices, {"data": 2, "sequence": 2}),
    )


def edit_training() -> Row:
    config = experiment("lucy-edit", "long_edit", 4, 4, {"fsdp": 4}, EDIT_TRAINABLE)
    return Row(
        "edit-train",
        "LucyEdit-5B long-edit training step, 4 memory slots, per-chip batch 1",
        "v5p-8",
        4,
        lambda devices: aot.train_step_program(config, devices),
    )


def wan14b_forward() -> Row:
    dit = load_config("configs/wan_dit.py:wan2.1-t2v-14b").to_dict() | dict(attention=dict(impl="splash"))
    return Row(
        "wan14b-forward",
        "Wan2.1-14B forward, 81x480x832 (32,760 tokens), CFG batch 2",
        "v5p-64",
        32,
        lambda devices: aot.dit_forward_program(dit, devices, {"data": 2, "sequence": 16}, (21, 30, 52)),
    )


ROWS = [
    *(nvs_sampling(s) for s in (1, 2, 4, 8)),
    nvs_training(4, "v5p-8"),
    nvs_training(32, "v5p-64"),
    edit_sampling(),
    edit_training(),
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
        flops, collectives, uncounted = aot.step_cost(program)
        result |= dict(
            flops=flops,
            seconds_at_peak=flops / topology.chip.peak_flops,
            step_collectives={k: dataclasses.asdict(v) for k, v in collectives.items()},
            uncounted_kernels=sorted(set(uncounted)),
        )
        print(f"{row.key}: {flops / 1e12:.1f} TFLOP per chip, {result['seconds_at_peak']:.3f} s at peak", flush=True)
    result["seconds"] = round(time.perf_counter() - start)
    return result


def analytic_nvs_turn_flops() -> float:
    """memory/budget.py's analytic FLOPs of the NVS sampling step (both guidance passes), for comparison."""
    from flax import nnx

    from mv2v_jax.memory.builders import MemoryBatch
    from mv2v_jax.memory.model import MemoryConfig, MemoryDiT
    from mv2v_jax.memory.streams import pack_streams
    from mv2v_jax.pipelines.nvs import nvs_streams

    config = experiment("wan2.1-t2v-1.3b", "nvs", 4, 1, {}, NVS_TRAINABLE)
    model_config = MemoryConfig.from_config(config["model"])
    clip = aot.clip_of(config)

    def pack():
        model = MemoryDiT(model_config, rngs=nnx.Rngs(0))
        x = jnp.zeros((1, *clip.latents))
        memory = MemoryBatch.empty(1, 4, *clip.latents, camera=True)
        streams = nvs_streams(model_config.tokenizers)(x, x, jnp.zeros((1, clip.frames, 12)), memory)
        return pack_streams(streams, model.tokenizers.mapping(model.dit.patch_embedding))

    layout = nnx.eval_shape(pack).layout
    return 2 * turn_cost(layout, model_config.dit, clip.text_len, model_config.merge, 0.5).flops


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
        "Model presets of configs/wan_dit.py with every memory module (camera layers for NVS, the paper's "
        "tokenizers, mergers before blocks 10 and 20), bfloat16 compute, splash attention, full remat for "
        "training; the experiment configs of the real backbones were not in configs/ yet, so sizes are the "
        "paper's: 81x480x832 videos (Wan2.1 VAE 21x60x104 latents; Wan2.2 VAE 21x30x52), umT5's 512 text "
        "tokens, guidance 5 (batch 2). Training compiles its largest step variant (every memory slot at "
        "1x4x4, no merging). v5p slice names count TensorCores, two per chip: v5p-8 is 4 chips, v5p-64 is 32; "
        "the sampling rows use the first 1, 2, 4 and 8 chips of v5p:2x2x2 (v5p-16). Total = arguments + "
        "outputs - aliased + temporaries + code. FLOPs: XLA's count of the compiled program with every layer "
        "counted (two more compiles with 1 and 2 unrolled layers per segment, extrapolated) plus the splash "
        "kernels' matmuls, which XLA does not count; seconds at peak = FLOPs / 459e12, a lower bound "
        "(communication and memory-bound phases not included).\n\n"
        + table(results)
        + "\n\nWhat each row compiled:\n\n"
        + details
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
