#!/usr/bin/env bash
# The GPU benchmarks, on one GPU in under 8 minutes (an H100 or H200):
#   1. installs the CUDA extra (jax[cuda12]) into the environment unless JAX already sees a GPU;
#   2. bench/dit_forward.py --full: the full Wan2.1-1.3B forward (bf16, cuDNN attention) against diffusers
#      on the token grids (21, 30, 52) and (42, 30, 52): the "DiT forward (GPU)" section of BENCHMARKS.md;
#   3. bench/gpu_steps.py: one NVS sampling step at turn 1 and at turn 5 and one training step of the
#      1.3B memory model: the "Sampling and training steps (GPU)" section.
# Usage: bench/gpu.sh            (PYTHON=path/to/python to use another interpreter than .venv's)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-.venv/bin/python}
if [[ ! -x "$PYTHON" ]]; then
    python3 -m venv .venv
    PYTHON=.venv/bin/python
fi

has_gpu() {
    "$PYTHON" -c 'import jax, sys; sys.exit(0 if jax.default_backend() == "gpu" else 1)' 2>/dev/null
}
if ! has_gpu; then
    # The CUDA plugins of the JAX already installed (a newer jax would not match the rest of the environment).
    jax_pin=$("$PYTHON" -c 'import jax; print(f"jax[cuda12]=={jax.__version__}")' 2>/dev/null || echo "jax[cuda12]")
    "$PYTHON" -m pip install --quiet -e '.[test,cuda]' "$jax_pin"
fi
if ! has_gpu; then
    echo "error: JAX sees no GPU after installing the cuda extra: $("$PYTHON" -c 'import jax; print(jax.devices())')" >&2
    exit 1
fi
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

# PyTorch and JAX share the GPU in dit_forward.py: JAX allocates as it goes instead of taking 75% up front.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
# Compiled programs are kept, so a second run skips compilation.
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-$HOME/.cache/mv2v-jax/xla}

start=$SECONDS
timeout 210 "$PYTHON" bench/dit_forward.py --full --repeats 3
timeout 240 "$PYTHON" bench/gpu_steps.py
echo "bench/gpu.sh: $((SECONDS - start)) s of benchmarks; BENCHMARKS.md updated"
