"""What memory costs per turn, at the paper's shapes (analytic) and on a small DiT (measured), turns 1..10.

    python bench/memory_cost.py              # both parts
    python bench/memory_cost.py --skip-cpu   # the analytic part only (seconds)

Turn t has t - 1 earlier outputs. Four ways to feed them (inference: a turn feeds exactly the memories
it has, pipelines.slots; no padding):
  (a) every earlier output at the base 1x2x2 patch, no retrieval (the paper's "tokenize every memory
      video at 1x2x2" baseline);
  (b) retrieval of the top k = 6 with dynamic tokenization (top 3 at 1x4x4, the rest 1x8x8);
  (c) (b) + adaptive token merging, the paper's schedule (half of the memory frames, r = 0.5, before
      blocks 10 and 20 of 30);
  (d) (b) + the "early" schedule (memory.merging.MERGE_SCHEDULES), which reaches the paper's reported
      merging savings at these shapes.
Part 1: analytic FLOPs (memory.budget.turn_cost) of one forward of ReCamMaster-1.3B (81 x 480 x 832,
configs/recammaster_nvs.py) and LucyEdit-5B (81-frame 480 x 832 segments, configs/lucy_edit_long.py),
the layouts read from the tasks' own stream builders (`Task.layout`, shapes only). Part 2: merge
schedules at the real NVS shapes. Part 3: measured CPU forward time of a small DiT, (a)-(c), one
compiled program per memory count. Writes the "Memory cost" section of BENCHMARKS.md and
bench/memory_cost.png.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
from pathlib import Path

import mv2v_jax.cli_start  # noqa: F401  (first: Ctrl-C in the imports below is one line, exit 130)

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
from common import summary, timed, write_section  # bench/ is on sys.path when run as a script
from flax import nnx

from mv2v_jax.config import ArgumentParser, int_at_least, load_config, run_app
from mv2v_jax.memory.budget import turn_cost
from mv2v_jax.memory.builders import Conditions, MemoryBatch
from mv2v_jax.memory.merging import MERGE_SCHEDULES, MergeConfig
from mv2v_jax.memory.model import MemoryConfig, MemoryDiT
from mv2v_jax.memory.tokenizers import TokenizerConfig
from mv2v_jax.models.wan.attention import AttentionConfig
from mv2v_jax.models.wan.dit import WanDiTConfig
from mv2v_jax.tasks import Task, get_task

matplotlib.use("Agg")
import matplotlib.pyplot as plt

SLOTS = 6
TEXT_LEN = 512  # umT5 context, as Wan pads it
ALL_FINE = TokenizerConfig(ranked=(), rest=(1, 2, 2))
# The backbones at their shapes: latents (F, H, W, C) of one video / segment (VAE strides 4 x 8 x 8 for
# Wan2.1, 4 x 16 x 16 for Wan2.2).
BACKBONES = {
    "ReCamMaster-1.3B (NVS)": ("configs/recammaster_nvs.py", "nvs", (21, 60, 104, 16)),
    "LucyEdit-5B (long edit)": ("configs/lucy_edit_long.py", "long_edit", (21, 30, 52, 48)),
}
# Paper's Table 4 (time of turn 5): dynamic tokenization + retrieval 965.95 s, + merging 661.31 s.
PAPER_MERGE_SAVING = 1 - 661.31 / 965.95


def abstract_conditions(task: Task, latent: tuple[int, ...], slots: int) -> tuple:
    """Shapes of a turn's noisy target and `Conditions` with `slots` filled memory slots."""
    f, h, w, c = latent
    sds = jax.ShapeDtypeStruct
    memory = MemoryBatch(
        sds((1, slots, f, h, w, task.memory_factor * c), jnp.float32),
        sds((1, slots), jnp.bool_),
        sds((1, slots), jnp.int32),
        sds((1, slots, f, 12), jnp.float32) if task.adapters else None,
    )
    extras = {"camera": sds((1, f, 12), jnp.float32)} if task.adapters else {}
    return sds((1, f, h, w, c), jnp.float32), Conditions(sds((1, f, h, w, c), jnp.float32), memory, extras)


def flops(task, model: MemoryConfig, latent, slots: int, tokenizers, merge: MergeConfig | None) -> int:
    layout = task.layout(*abstract_conditions(task, latent, slots), tokenizers)
    keep = None if merge is None else merge.keep_ratio
    return turn_cost(layout, model.dit, TEXT_LEN, merge, keep).flops


def settings(model: MemoryConfig) -> dict[str, tuple]:
    """(tokenizers, merge, all earlier outputs?) per setting."""
    paper = dataclasses.replace(model.merge, keep_ratio=0.5)
    return {
        "a": (ALL_FINE, None, True),
        "b": (model.tokenizers, None, False),
        "c": (model.tokenizers, paper, False),
        "d": (model.tokenizers, MERGE_SCHEDULES["early"], False),
    }


def analytic(turns: int) -> tuple[str, dict]:
    lines, series = [], {}
    for name, (config_path, task_name, latent) in BACKBONES.items():
        task, model = get_task(task_name), MemoryConfig.from_config(load_config(config_path).model)
        per_setting = {
            key: [
                flops(task, model, latent, (t - 1) if every else min(t - 1, SLOTS), tokenizers, merge)
                for t in range(1, turns + 1)
            ]
            for key, (tokenizers, merge, every) in settings(model).items()
        }
        series[name] = per_setting
        a, b, c, d = (np.asarray(per_setting[k], float) for k in "abcd")
        lines += [
            f"**{name}**, latents {latent} per video, text {TEXT_LEN}: PFLOP per forward, and ratios.",
            "",
            "| turn | (a) all 1x2x2 | (b) dynamic | (c) + merging (paper) | (d) + merging (early) | (b) vs (a) | "
            "(c) vs (b) | (d) vs (b) | (c) / turn 1 | (d) / turn 1 |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for t in range(turns):
            lines.append(
                f"| {t + 1} | {a[t] / 1e15:.3f} | {b[t] / 1e15:.3f} | {c[t] / 1e15:.3f} | {d[t] / 1e15:.3f} | "
                f"{100 * (1 - b[t] / a[t]):.0f}% fewer | {100 * (1 - c[t] / b[t]):.1f}% fewer | "
                f"{100 * (1 - d[t] / b[t]):.1f}% fewer | {c[t] / c[0]:.2f} | {d[t] / d[0]:.2f} |"
            )
        lines.append("")
    return "\n".join(lines), series


def schedules(turns: int) -> str:
    """Merge schedules at the real NVS shapes: saving at turn 5 and turn-10 cost relative to turn 1."""
    config_path, task_name, latent = BACKBONES["ReCamMaster-1.3B (NVS)"]
    task, model = get_task(task_name), MemoryConfig.from_config(load_config(config_path).model)
    cost = lambda slots, merge: flops(task, model, latent, slots, model.tokenizers, merge)
    plain, turn5, last = cost(0, None), cost(4, None), cost(min(turns - 1, SLOTS), None)
    rows = []
    for blocks, fraction, keep in itertools.product(
        ((10, 20), (5, 10, 20), (1, 10, 20), (1, 10), (1,)), (0.5, 0.75, 1.0), (0.3, 0.5, 0.7)
    ):
        merge = MergeConfig(blocks=blocks, fraction=fraction, keep_ratio=keep)
        saving = 1 - cost(4, merge) / turn5
        ratio = cost(min(turns - 1, SLOTS), merge) / plain
        marks = ("**" if saving >= 0.30 and ratio <= 1.5 else "", "")
        rows.append(
            f"| {marks[0]}{blocks}{marks[0]} | {fraction} | {keep} | {100 * saving:.1f}% | {ratio:.2f} | "
            f"{'yes' if saving >= 0.30 else 'no'} | {'yes' if ratio <= 1.5 else 'no'} |"
        )
    return (
        f"Merge schedules at ReCamMaster-1.3B's shapes (turn 5: 4 memory videos; turn {turns}: "
        f"{min(turns - 1, SLOTS)}); without merging turn {turns} costs {last / plain:.2f}x turn 1. Blocks are "
        "given for 30 blocks; **bold**: both targets met.\n\n"
        "| merge before blocks | fraction of frames | r | FLOPs saved at turn 5 vs (b) | "
        f"turn {turns} / turn 1 | >= 30% at turn 5 | <= 1.5x at turn {turns} |\n|---|---|---|---|---|---|---|\n"
        + "\n".join(rows)
    )


# A CPU-sized DiT for the measured part: 9 blocks; a 5 x 24 x 40 latent target (1,200 tokens).
CPU_DIT = WanDiTConfig(
    dim=256,
    ffn_dim=1024,
    num_heads=2,
    num_layers=9,
    in_channels=16,
    out_channels=16,
    text_dim=64,
    freq_dim=64,
    attention=AttentionConfig(impl="chunked"),
)
CPU_LATENT, CPU_TEXT = (5, 24, 40, 16), 32


def measured(turns: int, repeats: int) -> tuple[str, dict]:
    task = get_task("nvs")
    model = MemoryDiT(MemoryConfig(dit=CPU_DIT), rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(model)
    key = jax.random.key(0)
    f, h, w, c = CPU_LATENT
    noisy = jax.random.normal(key, (1, f, h, w, c))
    t, context = jnp.array([500.0]), jax.random.normal(key, (1, CPU_TEXT, CPU_DIT.text_dim))

    def forward_fn(tokenizers, keep_ratio):
        @jax.jit
        def forward(state, conditions):
            m = nnx.merge(graphdef, state)
            return m(task.streams(noisy, conditions, tokenizers), t, context, keep_ratio=keep_ratio)

        return forward

    def conditions(count: int) -> Conditions:
        memory = MemoryBatch(
            jax.random.normal(jax.random.fold_in(key, count), (1, count, f, h, w, c)),
            jnp.ones((1, count), bool),
            jnp.arange(count)[None],
            jnp.zeros((1, count, f, 12)),
        )
        return Conditions(noisy, memory, {"camera": jnp.zeros((1, f, 12))})

    runs = {k: v for k, v in settings(model.config).items() if k != "d"}
    forwards = {
        k: forward_fn(tokenizers, None if merge is None else merge.keep_ratio)
        for k, (tokenizers, merge, _) in runs.items()
    }
    rows, series = [], {k: [] for k in runs}
    for turn in range(1, turns + 1):
        cells = []
        for k, (tokenizers, merge, every) in runs.items():
            count = turn - 1 if every else min(turn - 1, SLOTS)
            cond = conditions(count)
            seconds = timed(lambda fn=forwards[k], c=cond: fn(state, c).block_until_ready(), repeats=repeats)[0]
            layout = task.layout(noisy, cond, tokenizers)
            cost = turn_cost(layout, CPU_DIT, CPU_TEXT, merge, None if merge is None else merge.keep_ratio)
            series[k].append(float(np.median(seconds)))
            cells.append(f"{cost.memory_tokens:,} / {cost.flops / 1e9:.1f} / {summary(seconds)}")
        rows.append(f"| {turn} | " + " | ".join(cells) + " |")
        print(rows[-1], flush=True)
    b, c = series["b"], series["c"]
    text = (
        f"Measured on this CPU: DiT dim {CPU_DIT.dim}, {CPU_DIT.num_layers} blocks, target latent "
        f"{CPU_LATENT[:3]} (1,200 tokens), source the same, text {CPU_TEXT}; one program per memory count. "
        "Each cell: memory tokens / analytic GFLOPs / CPU forward time.\n\n"
        "| turn | (a) all 1x2x2 | (b) dynamic | (c) + merging (paper) |\n|---|---|---|---|\n"
        + "\n".join(rows)
        + f"\n\nTurn {turns} / turn 1 on this CPU: (b) {b[-1] / b[0]:.2f}x, (c) {c[-1] / c[0]:.2f}x."
    )
    return text, series


def plot(series: dict, cpu: dict | None, path: Path) -> None:
    panels = len(series) + (cpu is not None)
    fig, axes = plt.subplots(1, panels, figsize=(4.6 * panels, 3.6))
    labels = {"a": "(a) all 1x2x2", "b": "(b) dynamic", "c": "(c) + merging (paper)", "d": "(d) + merging (early)"}
    for ax, (name, per_setting) in zip(axes, series.items(), strict=False):
        for k, values in per_setting.items():
            ax.plot(range(1, len(values) + 1), np.asarray(values) / values[0], marker="o", label=labels[k])
        ax.set_title(f"{name}: FLOPs / turn 1")
        ax.set_yscale("log")
    if cpu is not None:
        for k, values in cpu.items():
            axes[-1].plot(range(1, len(values) + 1), values, marker="o", label=labels[k])
        axes[-1].set_title("small DiT: CPU seconds / forward")
    for ax in axes:
        ax.set_xlabel("turn")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str]) -> None:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int_at_least(1), default=10)
    parser.add_argument("--repeats", type=int_at_least(1), default=3)
    parser.add_argument("--skip-cpu", action="store_true", help="the analytic parts only")
    args = parser.parse_args(argv)
    if args.turns < 7:
        parser.error("--turns must be at least 7 (the tables compare turn 5 and a full memory)")
    table, series = analytic(args.turns)
    print(table)
    cpu_text, cpu = ("", None) if args.skip_cpu else measured(args.turns, args.repeats)
    plot(series, cpu, Path(__file__).with_suffix(".png"))
    nvs = series["ReCamMaster-1.3B (NVS)"]
    a, b, c = (np.asarray(nvs[k], float) for k in "abc")
    over90 = next((t + 1 for t in range(args.turns) if b[t] <= 0.1 * a[t]), None)
    definitions = (
        "Where the paper's numbers come from, and ours on the same definition:\n"
        '- "> 90% fewer FLOPs / latency" (dynamic tokenization vs tokenizing every memory video at 1x2x2): '
        "the paper does not say at which turn. On our reading, (b) vs (a) above, ReCamMaster-1.3B saves "
        f"{100 * (1 - b[4] / a[4]):.0f}% at turn 5 and {100 * (1 - b[-1] / a[-1]):.0f}% at turn {args.turns}; "
        + (f"it passes 90% from turn {over90} on." if over90 else f"it stays under 90% up to turn {args.turns}.")
        + '\n- "about 30% fewer" (merging): Table 4, time of turn 5, dynamic tokenization + retrieval '
        f"965.95 s -> + merging 661.31 s ({100 * PAPER_MERGE_SAVING:.1f}% less). Ours, (c) vs (b) FLOPs at turn "
        f"5: {100 * (1 - c[4] / b[4]):.1f}%. With the paper's schedule only the merged memory frames get cheaper, "
        "from block 10 on: at 81 x 480 x 832 the 4 memory videos of turn 5 are 26,754 of 92,274 tokens, so "
        "merging half of their frames to r = 0.5 cannot save 30% of a forward. The paper's 30% needs memory to "
        "be most of the sequence or a more aggressive schedule; (d) is the mildest one in Part 2 that meets both "
        "30% at turn 5 and 1.5x turn 1 at the last turn (`sample.merge_schedule=early`). What it costs in "
        "consistency is measured on the small model (Consistency sections)."
    )
    write_section(
        "Memory cost",
        "Part 1, analytic, at the backbones' shapes (one forward; (a) has no retrieval, (b)-(d) feed at most "
        "k = 6 retrieved memories and no padding):\n\n"
        + table
        + "\n"
        + definitions
        + "\n\nPart 2, merge schedules:\n\n"
        + schedules(args.turns)
        + ("\n\nPart 3, " + cpu_text if cpu_text else "")
        + "\n\nPlot: `bench/memory_cost.png`.",
    )


if __name__ == "__main__":
    run_app(main, absl_flags=False)
