"""What every model file shares: dtypes by name, parameters with logical axis names, float32 LayerNorm,
and the weights held in the dtype they compute in (for serving)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def check_dtypes(config, names: tuple[str, ...] = ("param_dtype", "dtype"), auto: tuple[str, ...] = ("dtype",)):
    """Raises a ValueError naming the field whose dtype name is unknown ("auto" allowed for `auto`)."""
    for name in names:
        value = getattr(config, name)
        if value not in DTYPES and not (name in auto and value == "auto"):
            raise ValueError(f"{name}={value!r} is not one of {sorted(DTYPES)}")


def compute_dtype(name: str):
    """A dtype by name; "auto" is float32 on CPU and bfloat16 (with float32 parameters) on accelerators."""
    if name == "auto":
        return jnp.float32 if jax.default_backend() == "cpu" else jnp.bfloat16
    return DTYPES[name]


def partitioned(initializer, axes: tuple[str | None, ...]):
    """`initializer` whose variables carry logical axis names (mapped to the mesh by parallel.mesh)."""
    return nnx.with_partitioning(initializer, axes, eager_sharding=False)


def param(rngs: nnx.Rngs, initializer, shape, axes: tuple[str | None, ...], dtype) -> nnx.Param:
    return nnx.Param(partitioned(initializer, axes)(rngs.params(), shape, dtype))


def in_compute_dtype(module: nnx.Module) -> nnx.Module:
    """A copy of `module` whose `nnx.Linear` kernels and biases are held in the dtype each computes in
    (bfloat16 on accelerators), `module` itself unchanged. Exact: a Linear casts its weights to that dtype
    on every call anyway, so inference keeps only the cast copy (half the HBM, half the bytes read).
    Layers that compute in float32 (Wan's time embedding and head) and non-Linear weights (norms,
    modulation: a few MB) stay as they are."""
    graphdef, state = nnx.split(module)
    copy = nnx.merge(graphdef, jax.tree.map(lambda value: value, state))  # new variables, the same arrays
    for _, layer in nnx.iter_modules(copy):
        if isinstance(layer, nnx.Linear) and layer.dtype is not None:
            for weight in (layer.kernel, layer.bias):
                if weight is not None and weight.value.dtype != layer.dtype:
                    weight.value = _cast(weight.value, layer.dtype)
    return copy


def _cast(value, dtype):
    """`value.astype(dtype)`, for an abstract array (ahead-of-time programs) too."""
    if isinstance(value, jax.ShapeDtypeStruct):
        return jax.ShapeDtypeStruct(value.shape, dtype, sharding=value.sharding)
    return value.astype(dtype)


def layer_norm(x: jax.Array, eps: float, scale: jax.Array | None = None, bias: jax.Array | None = None) -> jax.Array:
    """LayerNorm over the last axis in float32 (the references' FP32LayerNorm)."""
    x = x.astype(jnp.float32)
    mean = x.mean(-1, keepdims=True)
    var = jnp.square(x - mean).mean(-1, keepdims=True)
    y = (x - mean) * jax.lax.rsqrt(var + eps)
    if scale is not None:
        y = y * scale.astype(jnp.float32) + bias.astype(jnp.float32)
    return y
