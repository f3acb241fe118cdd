"""JAX vs diffusers Wan DiT forward, same random weights and inputs, timed side by side.

    python bench/dit_forward.py            # CPU: 1.3B widths, 2 layers, fp32, latents (5,30,52) and (21,30,52)
    python bench/dit_forward.py --full     # GPU: the full 1.3B (30 layers), bf16, latents (21,60,104), (42,60,104)

Calls alternate (diffusers, ours, diffusers, ...) after a warm-up call each (JAX compilation
excluded). Writes the "DiT forward" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse

import mv2v_jax.cli_start  # noqa: F401  (first: Ctrl-C in the imports below is one line, exit 130)

import jax
import jax.numpy as jnp
import numpy as np
import torch
from common import summary, timed, write_section  # bench/ is on sys.path when run as a script
from flax import nnx

from convert_weights.wan_dit import config_from_json, convert_state_dict
from mv2v_jax.config import ArgumentParser, int_at_least, run_app
from mv2v_jax.models.wan.dit import WanDiT, WanDiTConfig
from mv2v_jax.models.weights import module_from_params

WIDTHS_1_3B = dict(
    num_attention_heads=12,
    attention_head_dim=128,
    in_channels=16,
    out_channels=16,
    ffn_dim=8960,
    text_dim=4096,
    freq_dim=256,
    cross_attn_norm=True,
)


def reference_model(num_layers: int, dtype: torch.dtype):
    from diffusers import WanTransformer3DModel

    torch.manual_seed(0)
    return WanTransformer3DModel(num_layers=num_layers, **WIDTHS_1_3B).to(dtype).eval()


def jax_model(torch_model, **runtime) -> WanDiT:
    """Our DiT carrying the reference's weights (converted in memory, as the converter does on disk)."""
    config = WanDiTConfig.from_config(config_from_json(dict(torch_model.config), "reference") | runtime)
    params = convert_state_dict({k: v.float().numpy() for k, v in torch_model.state_dict().items()}, config)
    return module_from_params(lambda: WanDiT(config, rngs=nnx.Rngs(0)), params)


def measure(reference, ours: WanDiT, latent_shape, dtype, device, repeats: int) -> str:
    """One table row: both models on the same random inputs of `latent_shape` (F, H, W)."""
    frames, height, width = latent_shape
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 16, frames, height, width), dtype=np.float32)
    context = rng.standard_normal((1, 512, 4096), dtype=np.float32)
    t = np.array([500], np.int64)
    tx, tc, tt = torch.from_numpy(x).to(device, dtype), torch.from_numpy(context).to(device, dtype), torch.from_numpy(t)
    jx, jc, jt = jnp.asarray(x.transpose(0, 2, 3, 4, 1)), jnp.asarray(context), jnp.asarray(t)
    graphdef, state = nnx.split(ours)

    @jax.jit
    def forward(state, latents, t, context):
        model = nnx.merge(graphdef, state)
        return model.forward_video(latents, t, context)

    def run_torch():
        out = reference(tx, tt.to(device), tc, return_dict=False)[0]
        if device == "cuda":
            torch.cuda.synchronize()
        return out

    def run_jax():
        return forward(state, jx, jt, jc).block_until_ready()

    want = run_torch().float().cpu().numpy().transpose(0, 2, 3, 4, 1)
    got = np.asarray(run_jax(), np.float32)
    error = float(np.abs(got - want).max() / np.abs(want).max())
    t_torch, t_jax = timed(run_torch, run_jax, repeats=repeats)
    memory = ""
    if device == "cuda":
        jax_peak = jax.devices()[0].memory_stats()["peak_bytes_in_use"] / 2**30
        memory = f" {torch.cuda.max_memory_allocated() / 2**30:.1f} / {jax_peak:.1f} GiB |"
    tokens = frames * height * width // 4
    return (
        f"| ({frames}, {height // 2}, {width // 2}) | {tokens:,} | {summary(t_torch)} | {summary(t_jax)} "
        f"| {np.median(t_torch) / np.median(t_jax):.2f}x | {error:.1e} |{memory}"
    )


def main(argv: list[str]) -> None:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="full 1.3B in bf16 on a GPU")
    parser.add_argument("--repeats", type=int_at_least(1), default=3)
    args = parser.parse_args(argv)
    if args.full:
        layers, dtype, device, shapes = 30, torch.bfloat16, "cuda", [(21, 60, 104), (42, 60, 104)]
    else:
        layers, dtype, device, shapes = 2, torch.float32, "cpu", [(5, 30, 52), (21, 30, 52)]
    torch.set_grad_enabled(False)
    reference = reference_model(layers, dtype)
    ours = jax_model(reference, dtype="bfloat16" if args.full else "float32")
    reference = reference.to(device)
    header = "| token grid (F, H, W) | tokens | diffusers | mv2v-jax | speedup | max rel. diff |"
    rule = "|---|---|---|---|---|---|"
    if args.full:
        header, rule = header + " peak GPU memory diffusers / ours |", rule + "---|"
    rows = []
    for shape in shapes:
        rows.append(measure(reference, ours, shape, dtype, device, args.repeats))
        print(rows[-1], flush=True)
    what = "full Wan2.1-1.3B (30 layers), bf16" if args.full else "Wan2.1-1.3B widths, 2 layers, fp32"
    write_section(
        f"DiT forward ({'GPU' if args.full else 'CPU'})",
        f"{what}; batch 1, text length 512, one forward pass each; median (min) of alternating calls after "
        f"a warm-up call each (JAX compilation excluded). Attention: {ours.config.attention.resolved()}.\n\n"
        + "\n".join([header, rule, *rows]),
    )


if __name__ == "__main__":
    run_app(main, absl_flags=False)
