"""Long video editing (LucyEdit + memory): a long video edited segment by segment, consistently.

- Model: the Wan DiT taking `cat([noisy, condition], channels)` (twice the codec's channels), no
  block adapters.
- Streams (memory.builders.lucy_edit_streams): the channel-concatenated target (RoPE frames 0..T-1),
  the previous edited segment (T..2T-1), older edited segments on the band from 2T; memory slots hold
  `cat([edited, source], channels)`, so they fill the same input channels (`memory_factor = 2`). The
  source is channel-concatenated, so it has no RoPE of its own to drop in training.
- Training examples: data.memory_sampling.long_edit_example (segments of a long source/edited pair,
  the memory drawn from segments before the target, as inference retrieves it).
- Retrieval: cosine similarity of the source segments' pooled DINOv2 embeddings
  (retrieval.similarity), so the bank indexes the memory by `embedding`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from mv2v_jax.data.memory_sampling import MemorySampling, long_edit_example
from mv2v_jax.memory.builders import Conditions, lucy_edit_streams
from mv2v_jax.memory.streams import Stream
from mv2v_jax.memory.tokenizers import TokenizerConfig
from mv2v_jax.tasks.base import Task


class LongVideoEditing(Task):
    name = "long_edit"
    adapters = ()
    retrieval_key = "embedding"
    memory_factor = 2

    def input_channels(self, latent_channels: int) -> int:
        return 2 * latent_channels  # noisy + condition

    def streams(
        self,
        noisy: jax.Array,
        conditions: Conditions,
        tokenizers: TokenizerConfig,
        *,
        input_rope_keep: jax.Array | None = None,
    ) -> list[Stream]:
        del input_rope_keep  # the condition shares the target's tokens
        return lucy_edit_streams(noisy, conditions.inputs, conditions.memory, tokenizers=tokenizers)

    def example(
        self, record: Mapping[str, Any], rng: np.random.Generator, sampling: MemorySampling
    ) -> dict[str, np.ndarray]:
        return long_edit_example(record, rng, sampling)
