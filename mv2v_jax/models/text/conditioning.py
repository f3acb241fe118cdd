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

    def cut_note(self, prompt: str) -> str | None:
        """The tokenizer's `cut_note` for a prompt the text encoder cuts, else None (and without one)."""
        tokenizer = getattr(self.encoder, "tokenizer", None)
        return None if tokenizer is None else tokenizer.cut_note(prompt)

    def __call__(self, prompt: str) -> jax.Array:
        return self.zeros if self.encoder is None else jnp.asarray(self.encoder([prompt]))
