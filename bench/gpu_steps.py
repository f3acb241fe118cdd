"""One NVS sampling step (turn 1: no memory yet; turn 5: 4 memory videos) and one training step of
configs/recammaster_nvs.py (ReCamMaster-1.3B with memory) on the local accelerator, timed.

    python bench/gpu_steps.py           # GPU: the experiment as configured, bf16, cuDNN attention
    python bench/gpu_steps.py --small   # any machine: configs/recammaster_nvs.py:tiny (a dry run; prints only)

The programs are those `bench/scale.py` compiles for TPU (mv2v_jax/aot/: the pipelines' `Denoiser`
velocity with guidance as a batch of 2, and `train.step.jit_train_step` on the largest step variant with
one example), compiled for the local device with random values (timing does not depend on them). Turn 1
and turn 5 run the same compiled program (a fixed budget of 6 memory slots); they differ in how many
slots are filled, which cuDNN sees as shorter key sequences. Time: median (min) of 5 calls after a
warm-up call. On a GPU, writes the "Sampling and training steps (GPU)" section of BENCHMARKS.md.
"""

from __future__ import annotations

import dataclasses
import time

import mv2v_jax.cli_start  # noqa: F401  (first: Ctrl-C in the imports below is one line, exit 130)

import jax
import jax.numpy as jnp
from common import summary, write_section  # bench/ is on sys.path when run as a script
from scale import NVS, experiment

from mv2v_jax import aot
from mv2v_jax.config import ArgumentParser, run_app
from mv2v_jax.parallel.mesh import use_mesh

FILLED = {1: 0, 5: 4}  # memory videos retrieved at turn 1 and at turn 5


def materialize(tree, key: jax.Array):
    """Arrays for abstract arguments, on their shardings: small random floats, zero integers, true masks."""
    leaves, treedef = jax.tree.flatten(tree)
    out = []
    for sds, k in zip(leaves, jax.random.split(key, len(leaves)), strict=True):
        if jax.dtypes.issubdtype(sds.dtype, jax.dtypes.prng_key):
            value = jax.random.key(0)
        elif jnp.issubdtype(sds.dtype, jnp.floating):
            value = 0.02 * jax.random.normal(k, sds.shape, sds.dtype)
        else:
            value = jnp.ones(sds.shape, sds.dtype) if sds.dtype == jnp.bool_ else jnp.zeros(sds.shape, sds.dtype)
        out.append(jax.device_put(value, sds.sharding))
    return jax.tree.unflatten(treedef, out)


def compiled(program: aot.Program):
    start = time.perf_counter()
    with use_mesh(program.mesh, program.rules):
        result = program.fn.lower(*program.args).compile()
    return result, time.perf_counter() - start


def timed_calls(call, repeats: int = 5) -> list[float]:
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times


def peak_gib() -> str:
    stats = jax.devices()[0].memory_stats() or {}
    return f"{stats['peak_bytes_in_use'] / 2**30:.1f}" if "peak_bytes_in_use" in stats else "n/a"


def main(argv: list[str]) -> None:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="tiny widths and video: a dry run on any machine")
    args = parser.parse_args(argv)
    config = experiment(f"{NVS}:tiny" if args.small else NVS, batch_size=1)
    devices = jax.devices()[:1]
    platform = None if jax.default_backend() == "cpu" else jax.default_backend()  # "gpu": cuDNN, bfloat16
    rows = []

    sampling = aot.sampling_step_program(config, "nvs", devices, {}, platform=platform)
    step, seconds = compiled(sampling)
    values = materialize(sampling.args, jax.random.key(0))
    params, x, t, conditions, context = values
    for turn, filled in FILLED.items():
        memory = conditions.memory
        valid = jnp.broadcast_to(jnp.arange(memory.slots) < filled, memory.valid.shape)
        turn_conditions = dataclasses.replace(conditions, memory=dataclasses.replace(memory, valid=valid))
        turn_args = (params, x, t, turn_conditions, context)
        times = timed_calls(lambda turn_args=turn_args: step(*turn_args).block_until_ready())
        rows.append(f"| sampling step, turn {turn} ({filled} memory videos) | {summary(times)} | {seconds:.0f} s |")
        print(rows[-1], flush=True)

    training = aot.train_step_program(config, devices, platform=platform)
    train, seconds = compiled(training)
    state, batch, key = materialize(training.args, jax.random.key(1))

    def train_call():
        nonlocal state
        state, metrics = train(state, batch, key)
        float(metrics["loss"])

    times = timed_calls(train_call)
    rows.append(f"| training step (one example, 6 memory slots) | {summary(times)} | {seconds:.0f} s |")
    print(rows[-1], flush=True)

    device = jax.devices()[0].device_kind
    notes = "\n".join(f"- {n}" for n in [*sampling.notes, *training.notes])
    body = (
        f"Device: {device}; peak device memory of the run {peak_gib()} GiB. {NVS} with random weights:\n\n"
        + notes
        + "\n\n| step | time | compile |\n|---|---|---|\n"
        + "\n".join(rows)
    )
    if args.small or jax.default_backend() != "gpu":
        print(body)
        return
    write_section("Sampling and training steps (GPU)", body)


if __name__ == "__main__":
    run_app(main, absl_flags=False)
