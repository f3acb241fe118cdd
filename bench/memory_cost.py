"""What memory costs per turn: tokens, analytic FLOPs and measured CPU forward time, turns 1..10.

    python bench/memory_cost.py

Three ways to feed turn k's k-1 earlier outputs to the DiT (novel view synthesis streams):
  (a) every memory video at the base 1x2x2 patch (the DiT's own tokenizer), no budget;
  (b) dynamic tokenization with the paper's budget: the 6 most relevant, top 3 at 1x4x4, the rest 1x8x8,
      empty slots padded (one compiled program for every turn);
  (c) (b) + adaptive token merging (paper defaults: 50% of frames, r = 0.5, at 1/3 and 2/3 depth).
Turn 1 (no memory) of plain ReCamMaster streams is the reference for the time ratio.
Writes the "Memory cost" section of BENCHMARKS.md and bench/memory_cost.png.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
from common import summary, timed, write_section  # bench/ is on sys.path when run as a script
from flax import nnx

from mv2v_jax.memory.budget import turn_cost
from mv2v_jax.memory.builders import MemoryBatch, recammaster_streams
from mv2v_jax.memory.model import MemoryConfig, MemoryDiT
from mv2v_jax.memory.streams import pack_streams
from mv2v_jax.memory.tokenizers import TokenizerConfig
from mv2v_jax.models.wan.attention import AttentionConfig
from mv2v_jax.models.wan.dit import WanDiTConfig

matplotlib.use("Agg")
import matplotlib.pyplot as plt

# A CPU-sized DiT: 9 blocks (merging before blocks 3 and 6); a 5 x 24 x 40 latent target (5 x 12 x 20 = 1,200 tokens).
DIT = WanDiTConfig(
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
FRAMES, HEIGHT, WIDTH, TEXT = 5, 24, 40, 32
SLOTS = 6
ALL_FINE = TokenizerConfig(ranked=(), rest=(1, 2, 2))


def memory_for_turn(turn: int, slots: int, key) -> MemoryBatch:
    """Turn `turn` remembers its `turn - 1` predecessors; at most `slots` of them fit."""
    count = min(turn - 1, slots)
    latents = jax.random.normal(key, (1, slots, FRAMES, HEIGHT, WIDTH, DIT.in_channels))
    return MemoryBatch(
        latents=latents,
        valid=jnp.arange(slots)[None] < count,
        turns=jnp.arange(slots)[None] + max(0, turn - 1 - slots),
        camera=jnp.zeros((1, slots, FRAMES, 12)),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--turns", type=int, default=10)
    args = parser.parse_args()
    if args.turns < 5:
        parser.error("--turns must be at least 5 (the summary compares turn 5)")
    model = MemoryDiT(MemoryConfig(dit=DIT), rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(model)
    key = jax.random.key(0)
    noisy = jax.random.normal(key, (1, FRAMES, HEIGHT, WIDTH, DIT.in_channels))
    camera = jnp.zeros((1, FRAMES, 12))
    t, context = jnp.array([500.0]), jax.random.normal(key, (1, TEXT, DIT.text_dim))

    def forward_fn(tokenizers: TokenizerConfig, keep_ratio):
        @jax.jit
        def forward(state, memory):
            m = nnx.merge(graphdef, state)
            return m(
                recammaster_streams(noisy, noisy, camera, memory, tokenizers=tokenizers),
                t,
                context,
                keep_ratio=keep_ratio,
            )

        return forward

    def layout(memory, tokenizers):
        streams = recammaster_streams(noisy, noisy, camera, memory, tokenizers=tokenizers)
        return pack_streams(streams, model.tokenizers.mapping(model.dit.patch_embedding)).layout

    settings = {
        "a": (ALL_FINE, None),
        "b": (model.config.tokenizers, None),
        "c": (model.config.tokenizers, model.config.merge.keep_ratio),
    }
    forwards = {name: forward_fn(*setting) for name, setting in settings.items()}
    baseline = forward_fn(model.config.tokenizers, None)
    turn1 = timed(lambda: baseline(state, None).block_until_ready(), repeats=args.repeats)[0]
    rows, series = [], {name: {"tokens": [], "flops": [], "time": []} for name in settings}
    for turn in range(1, args.turns + 1):
        cells = []
        for name, (tokenizers, keep_ratio) in settings.items():
            slots = max(turn - 1, 1) if name == "a" else SLOTS  # (a) has no budget: every memory, no padding
            memory = memory_for_turn(turn, slots, jax.random.fold_in(key, turn))
            if name == "a" and turn == 1:
                memory = None
            cost = turn_cost(layout(memory, tokenizers), DIT, TEXT, model.config.merge, keep_ratio)
            times = timed(lambda f=forwards[name], m=memory: f(state, m).block_until_ready(), repeats=args.repeats)[0]
            valid_memory = 0 if memory is None else int(cost.memory_tokens * memory.valid.sum() / memory.slots)
            series[name]["tokens"].append(valid_memory)
            series[name]["flops"].append(cost.flops)
            series[name]["time"].append(float(np.median(times)))
            cells.append(f"{valid_memory:,} / {cost.flops / 1e9:.1f} / {np.median(times):.3f}")
        rows.append(f"| {turn} | " + " | ".join(cells) + " |")
        print(rows[-1], flush=True)

    plot = Path(__file__).with_suffix(".png")
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    labels = {"a": "(a) all 1x2x2", "b": "(b) dynamic tokenization", "c": "(c) dynamic + merging"}
    turns = np.arange(1, args.turns + 1)
    for name, data in series.items():
        for ax, metric in zip(axes, ("tokens", "flops", "time"), strict=True):
            ax.plot(turns, data[metric], marker="o", label=labels[name])
    for ax, title in zip(
        axes, ("memory tokens (valid)", "analytic FLOPs / forward", "CPU forward time (s)"), strict=True
    ):
        ax.set_title(title)
        ax.set_xlabel("turn")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(plot, dpi=110)

    a, b, c = (series[k] for k in "abc")
    t5 = 4  # turn 5
    summary_lines = [
        f"- memory tokens at turn 5, (b) vs (a): {100 * (1 - b['tokens'][t5] / a['tokens'][t5]):.0f}% fewer "
        "(paper: > 90% fewer FLOPs / latency than all at 1x2x2)",
        f"- FLOPs at turn 5, (b) vs (a): {100 * (1 - b['flops'][t5] / a['flops'][t5]):.0f}% fewer; at turn 10: "
        f"{100 * (1 - b['flops'][-1] / a['flops'][-1]):.0f}% fewer",
        f"- FLOPs, (c) vs (b), with memory full (turn 10): {100 * (1 - c['flops'][-1] / b['flops'][-1]):.0f}% fewer "
        "(paper: about 30% fewer)",
        f"- time at turn 10 of (c) / turn 1 without memory slots: {c['time'][-1] / float(np.median(turn1)):.2f} "
        f"(turn 1 without memory: {summary(turn1)}); (c) turn 10 / (c) turn 1 (same padded program): "
        f"{c['time'][-1] / c['time'][0]:.2f}",
    ]
    header = "| turn | (a) all 1x2x2 | (b) dynamic tokenization | (c) dynamic + merging |\n|---|---|---|---|"
    write_section(
        "Memory cost",
        f"DiT: dim {DIT.dim}, {DIT.num_layers} blocks, ffn {DIT.ffn_dim}; target latent {FRAMES}x{HEIGHT}x{WIDTH} "
        f"(1,200 tokens), source the same, text {TEXT}; memory videos like the target. Each cell: valid memory tokens "
        f"/ analytic GFLOPs per forward / median CPU forward seconds ({args.repeats} runs). (b) and (c) run the "
        f"fixed 6-slot budget (padding counted in FLOPs and time). Plot: `bench/memory_cost.png`.\n\n"
        + header
        + "\n"
        + "\n".join(rows)
        + "\n\n"
        + "\n".join(summary_lines),
    )
    print("\n".join(summary_lines))


if __name__ == "__main__":
    main()
