"""Prompt -> the DiT's text context, with or without a text encoder."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np


class TextConditioning:
    """Prompt -> `[1, L, text_dim]` context. Without a text encoder every prompt is the zero context
    (a model trained without text), and guidance has nothing to contrast."""

    def __init__(self, encoder: Callable[[list[str]], np.ndarray] | None = None, text_dim: int = 4096):
        self.encoder = encoder
        self.zeros = jnp.zeros((1, 1, text_dim))

    def __call__(self, prompt: str) -> jax.Array:
        return self.zeros if self.encoder is None else jnp.asarray(self.encoder([prompt]))
