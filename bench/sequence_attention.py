"""Ulysses, hybrid or gathered keys/values: what each costs per chip, from the compiled TPU program.

    python bench/sequence_attention.py

Self-attention of one DiT block (splash, bfloat16, head dim 128) split over a sequence axis of 2, 4 or 8
v5p chips, compiled ahead of time for v5p:2x2x2 on this CPU (mv2v_jax/aot/): the bytes each chip
sends in the program's collectives and XLA's temporary buffers per chip, for the forward pass
(sampling, guidance's batch of 2) and the forward and backward passes (training, batch 1). Token
counts are one turn of ReCamMaster at 81x480x832 with 6 memory slots (96,642 tokens, padded to the
split) and one LucyEdit segment at the same size with 4 (Wan2.2's VAE compresses 16x: 15,330 tokens).
The hybrid (Ulysses within groups of gcd(heads, s) chips, keys and values gathered across the groups)
is compiled where it is neither of the others: the 1.3B's 12 heads over 8 chips.
Writes the "Sequence-parallel attention (compiled ahead of time)" section of BENCHMARKS.md.
"""

from __future__ import annotations

import math

import mv2v_jax.cli_start  # noqa: F401  (first: Ctrl-C in the imports below is one line, exit 130)

import jax
import jax.numpy as jnp
from common import write_section  # bench/ is on sys.path when run as a script
from jax.sharding import NamedSharding

from mv2v_jax import aot
from mv2v_jax.config import ArgumentParser, run_app
from mv2v_jax.models.wan.attention import AttentionConfig, attention
from mv2v_jax.parallel.mesh import logical_to_spec, make_mesh, use_mesh

CASES = (  # (backbone, heads, tokens)
    ("ReCamMaster-1.3B NVS turn", 12, 96_642),
    ("LucyEdit-5B segment", 24, 15_330),
)


def compiled(heads: int, tokens: int, sequence: int, scheme: str, backward: bool, devices):
    batch = 1 if backward else 2
    tokens += -tokens % sequence
    mesh = make_mesh({"sequence": sequence}, devices[:sequence])
    config = AttentionConfig(impl="splash", sequence_parallel=scheme)
    with use_mesh(mesh):
        qkv = NamedSharding(mesh, logical_to_spec(("act_batch", "act_length", "act_heads", None)))
        seg = NamedSharding(mesh, logical_to_spec(("act_batch", "act_length")))
        x = jax.ShapeDtypeStruct((batch, tokens, heads, 128), jnp.bfloat16, sharding=qkv)
        segments = jax.ShapeDtypeStruct((batch, tokens), jnp.int32, sharding=seg)

        def forward(q, k, v, s):
            return attention(q, k, v, s, s, config)

        def train(q, k, v, s):
            loss = lambda q, k, v: attention(q, k, v, s, s, config).astype(jnp.float32).sum()
            return jax.grad(loss, argnums=(0, 1, 2))(q, k, v)

        return jax.jit(train if backward else forward).lower(x, x, x, segments).compile()


def main(argv: list[str]) -> None:
    ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
    topology = aot.tpu_topology("v5p:2x2x2")
    rows = []
    for name, heads, tokens in CASES:
        for backward in (False, True):
            for sequence in (2, 4, 8):
                for scheme in ("ulysses", "hybrid", "all_gather"):
                    if scheme == "hybrid" and not 1 < math.gcd(heads, sequence) < sequence:
                        continue  # it would be Ulysses (s divides the heads) or the gather (no common factor)
                    if scheme == "ulysses" and heads % sequence:
                        rows.append(
                            f"| {name} | {heads} | {'fwd+bwd' if backward else 'fwd'} | {sequence} | "
                            f"ulysses | heads not divisible | | |"
                        )
                        continue
                    program = compiled(heads, tokens, sequence, scheme, backward, topology.devices)
                    found = aot.collectives(program.as_text())
                    moved = sum(c.chip_bytes for c in found.values())
                    kinds = ", ".join(f"{k} x{c.count}" for k, c in sorted(found.items()))
                    memory = program.memory_analysis()
                    rows.append(
                        f"| {name} | {heads} | {'fwd+bwd' if backward else 'fwd'} | {sequence} | {scheme} | "
                        f"{moved / aot.GiB:.3f} | {memory.temp_size_in_bytes / aot.GiB:.2f} | {kinds} |"
                    )
                    print(rows[-1], flush=True)
    body = (
        f"libtpu {aot.libtpu_version()}; one block's self-attention (splash, bf16, head dim 128, segment ids) on a "
        "v5p mesh `{sequence: s}` (the first s chips of v5p:2x2x2), compiled on this CPU; forward: guidance's "
        "batch of 2; forward+backward: batch 1. Bytes: what each chip sends per call, ring algorithms "
        "(all-to-all `size (n-1)/n`, all-gather `out (n-1)/n`, reduce-scatter `out (n-1)`, n chips in the "
        "collective's group); temporaries: "
        "XLA's temporary buffers per chip. Segment ids are gathered in every scheme (int32, small). hybrid: "
        "Ulysses all-to-alls within groups of u = gcd(heads, s) neighbouring chips, keys and values gathered "
        "across the s/u groups.\n\n"
        "| backbone | heads | pass | s | scheme | GiB sent per chip | temporaries (GiB) | collectives |\n"
        "|---|---|---|---|---|---|---|---|\n" + "\n".join(rows)
    )
    write_section("Sequence-parallel attention (compiled ahead of time)", body)


if __name__ == "__main__":
    run_app(main, absl_flags=False)
