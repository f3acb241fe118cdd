"""JAX vs diffusers Wan VAE encode and decode: time and peak memory, same random weights and inputs.

    python bench/vae.py                              # CPU: Wan2.1 VAE (base_dim 96), fp32, 9 frames at 128x128
    python bench/vae.py --frames 17 --size 256 256   # a larger video (minutes per call on 2 cores)

Both models carry the same weights: a randomly initialised diffusers `AutoencoderKLWan` is saved and
converted by convert_weights/wan_vae.py. Both run their chunked causal passes (first frame, then 4 frames
per encoder step; one latent frame per decoder step).

Time: calls alternate (diffusers, ours, ...) in this process after a warm-up call each (JAX compilation
excluded). Memory: each framework and operation runs in a subprocess of its own that loads the weights,
makes one warm-up call, resets its RSS high-water mark (/proc/self/clear_refs) and makes one more; the
table gives that call's peak RSS above the RSS before it (activations, cache and outputs of one call), and
the RSS before it (weights, runtime, compiled code). Writes the "VAE encode / decode (CPU)" section of
BENCHMARKS.md.

A second table gives XLA's memory plan of one later-chunk step of the real Wan2.1 and Wan2.2 VAEs at
480x832 (compiled for the shapes only, nothing run): what a video of any length (81 frames and more) needs
at a time, since the steps run one after another with only the cache carried.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mv2v_jax.cli_start  # noqa: F401  (first: Ctrl-C in the imports below is one line, exit 130)

import numpy as np
from common import summary, timed, write_section  # bench/ is on sys.path when run as a script

from mv2v_jax.config import ArgumentParser, int_at_least, run_app


def reference_model(path: Path):
    from diffusers import AutoencoderKLWan

    return AutoencoderKLWan.from_pretrained(path, low_cpu_mem_usage=False).eval()


def video(frames: int, height: int, width: int) -> np.ndarray:
    """`[1, F, H, W, 3]` in [-1, 1]."""
    return np.tanh(np.random.default_rng(0).standard_normal((1, frames, height, width, 3))).astype(np.float32)


def runners(framework: str, weights: Path, frames: int, height: int, width: int):
    """(encode, decode) closures of one framework on the benchmark inputs; each blocks until done and
    returns channels-last numpy: un-normalised latent means, and pixels decoded from them."""
    x = video(frames, height, width)
    if framework == "torch":
        import torch

        torch.set_grad_enabled(False)
        model = reference_model(weights / "diffusers")
        tx = torch.from_numpy(x.transpose(0, 4, 1, 2, 3).copy())
        mu = model.encode(tx).latent_dist.mode()
        return (
            lambda: model.encode(tx).latent_dist.mode().numpy().transpose(0, 2, 3, 4, 1),
            lambda: model.decode(mu).sample.numpy().transpose(0, 2, 3, 4, 1),
        )
    from mv2v_jax.models.wan.vae import load_vae

    vae = load_vae(weights / "jax")
    mu = vae.encode_moments(x)[0]
    latents = vae.normalize(mu)
    return (
        lambda: np.asarray(vae.encode_moments(x)[0]),
        lambda: np.asarray(vae.decode(latents)),
    )


def _status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def measure_memory(framework: str, operation: str, weights: Path, frames: int, height: int, width: int) -> dict:
    """Subprocess side: RSS before one call and its peak during the call, in MiB; warm-up time in s."""
    start = time.perf_counter()
    encode, decode = runners(framework, weights, frames, height, width)
    fn = encode if operation == "encode" else decode
    fn()  # warm-up: JAX compiles its chunk steps here
    warmup = time.perf_counter() - start
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand the warm-up's freed memory back, or the call reuses it unseen
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    before = _status_mib("VmRSS")
    fn()
    return {"before_mib": before, "peak_mib": _status_mib("VmHWM"), "load_and_warmup_s": warmup}


def memory_in_subprocess(framework: str, operation: str, weights: Path, args) -> dict:
    command = [sys.executable, __file__, "--memory", framework, operation, "--weights", str(weights)]
    command += ["--frames", str(args.frames), "--size", *map(str, args.size)]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def memory_plan(preset: str, height: int, width: int, conv_impl: str) -> str:
    """One table row: parameters, carried cache and XLA's temporaries of the later-chunk steps, in GiB."""
    import dataclasses

    import jax
    import jax.numpy as jnp
    from flax import nnx

    from mv2v_jax.config import load_config
    from mv2v_jax.models.wan.vae import WanVAE, WanVAEConfig, _decode_step, _encode_step

    config = WanVAEConfig.from_config(load_config(f"configs/wan_vae.py:{preset}"))
    config = dataclasses.replace(config, conv_impl=conv_impl)
    graphdef, state = nnx.split(nnx.eval_shape(lambda: WanVAE(config, rngs=nnx.Rngs(0))))
    s = config.spatial_compression
    pixels = lambda t: jax.ShapeDtypeStruct((1, t, height, width, 3), jnp.float32)
    latents = jax.ShapeDtypeStruct((1, 1, height // s, width // s, config.z_dim), jnp.float32)
    gib = lambda tree: sum(a.size * a.dtype.itemsize for a in jax.tree.leaves(tree)) / 2**30
    cells = [f"{gib(state):.2f}"]
    for step, first, later in ((_encode_step, pixels(1), pixels(4)), (_decode_step, latents, latents)):
        _, cache = jax.eval_shape(lambda st, x, step=step: step(graphdef, st, None, x), state, first)
        temp = step.lower(graphdef, state, cache, later).compile().memory_analysis().temp_size_in_bytes / 2**30
        cells += [f"{gib(cache):.2f}", f"{temp:.2f}"]
    return f"| {preset} | {height}x{width} | {conv_impl} | " + " | ".join(cells) + " |"


def prepare_weights(folder: Path) -> None:
    """A random Wan2.1 VAE (real widths), saved by diffusers and converted by our converter."""
    import torch
    from diffusers import AutoencoderKLWan

    from convert_weights.wan_vae import convert_vae

    torch.manual_seed(0)
    AutoencoderKLWan().save_pretrained(folder / "diffusers")
    convert_vae(folder / "diffusers", folder / "jax")


def main(argv: list[str]) -> None:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int_at_least(1), default=9)
    parser.add_argument("--size", type=int_at_least(1), nargs=2, default=(128, 128), metavar=("H", "W"))
    parser.add_argument("--repeats", type=int_at_least(1), default=3)
    parser.add_argument("--memory", nargs=2, metavar=("FRAMEWORK", "OPERATION"), help=argparse.SUPPRESS)
    parser.add_argument("--weights", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.weights and not args.memory:
        parser.error("--weights: only with --memory (the measuring subprocess); the benchmark makes its own")
    height, width = args.size
    if args.memory:
        print(json.dumps(measure_memory(*args.memory, args.weights, args.frames, height, width)))
        return

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp)
        prepare_weights(weights)
        torch_fns, jax_fns = (runners(f, weights, args.frames, height, width) for f in ("torch", "jax"))
        rows = []
        for i, operation in enumerate(("encode", "decode")):
            want, got = torch_fns[i](), jax_fns[i]()
            error = float(np.abs(got - want).max() / np.abs(want).max())
            t_torch, t_jax = timed(torch_fns[i], jax_fns[i], repeats=args.repeats)
            memory = {f: memory_in_subprocess(f, operation, weights, args) for f in ("torch", "jax")}
            peak = " / ".join(f"{memory[f]['peak_mib'] - memory[f]['before_mib']:,.0f}" for f in ("torch", "jax"))
            before = " / ".join(f"{memory[f]['before_mib']:,.0f}" for f in ("torch", "jax"))
            rows.append(
                f"| {operation} | {summary(t_torch)} | {summary(t_jax)} | {np.median(t_torch) / np.median(t_jax):.2f}x "
                f"| {error:.1e} | {peak} | {before} | {memory['jax']['load_and_warmup_s']:.0f} s |"
            )
            print(rows[-1], flush=True)
    load_after = os.getloadavg()[0]
    plan = [memory_plan(p, 480, 832, impl) for p in ("wan2.1", "wan2.2") for impl in ("taps", "xla3d")]
    latent = (1 + (args.frames - 1) // 4, height // 8, width // 8)
    write_section(
        "VAE encode / decode (CPU)",
        f"Wan2.1 VAE (base_dim 96, z 16; random weights), fp32, batch 1: video {args.frames} frames at "
        f"{height}x{width} <-> latents (F, H, W) = {latent}. Chunked causal passes on both sides. Time: median "
        "(min) of alternating calls after a warm-up call each (JAX compilation excluded). Memory: RSS above the "
        "RSS before the call, at its peak, in MiB (one subprocess per framework and operation, same method for "
        "both; freed memory handed back with malloc_trim before the call); before-call RSS holds the weights, the "
        "runtime and (JAX) the compiled chunk steps. The 2 cores are shared with other work: 1-minute load average "
        f"{load_before:.1f} before the run, {load_after:.1f} after (the minimum is the better guide).\n\n"
        "| operation | diffusers | mv2v-jax | speedup | max rel. diff | peak RSS of the call, diffusers / ours "
        "(MiB) | RSS before, diffusers / ours (MiB) | ours: load + compile + first call |\n"
        "|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n\n"
        "Memory plan of one later-chunk step (XLA `memory_analysis` of the compiled step; GiB, fp32): the "
        "carried cache (every causal conv's last 2 input frames, as in the reference) is donated, so each step "
        "updates it in place; the temporaries live during the step only. A video of any length needs "
        "parameters + cache + temporaries + its own latents and pixels.\n\n"
        "| VAE | frame size | Conv3d | parameters | encode cache | encode temporaries | decode cache "
        "| decode temporaries |\n|---|---|---|---|---|---|---|---|\n" + "\n".join(plan),
    )


if __name__ == "__main__":
    run_app(main, absl_flags=False)
