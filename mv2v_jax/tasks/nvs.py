"""Novel view synthesis (ReCamMaster + memory): the same scene seen along a new camera trajectory.

- Model: the Wan DiT with ReCamMaster's per-block camera layers (`adapters = ("camera",)`).
- Streams (memory.builders.recammaster_streams): the noisy target (RoPE frames 0..T-1), the source
  video frame-concatenated after it (T..2T-1), the retrieved memory videos on the band from 2T, each
  with its own cameras; the target trajectory's camera input is `Conditions.extras["camera"]`.
- Cameras: every camera input (target, memory) is relative to the source video's first camera
  (memory.camera explains why); at inference a session's world frame puts that camera at the identity.
- Training examples: data.memory_sampling.nvs_example (views of a multi-camera scene).
- Retrieval: VideoFOV of the stored camera trajectories (retrieval.fov), so the bank indexes the
  memory by `cameras`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from mv2v_jax.data.memory_sampling import MemorySampling, nvs_example
from mv2v_jax.memory.builders import Conditions, recammaster_streams
from mv2v_jax.memory.streams import Stream
from mv2v_jax.memory.tokenizers import TokenizerConfig
from mv2v_jax.tasks.base import Task


class NovelViewSynthesis(Task):
    name = "nvs"
    adapters = ("camera",)
    retrieval_key = "cameras"
    memory_factor = 1

    def input_channels(self, latent_channels: int) -> int:
        return latent_channels

    def streams(
        self,
        noisy: jax.Array,
        conditions: Conditions,
        tokenizers: TokenizerConfig,
        *,
        input_rope_keep: jax.Array | None = None,
    ) -> list[Stream]:
        return recammaster_streams(
            noisy,
            conditions.inputs,
            conditions.extras["camera"],
            conditions.memory,
            tokenizers=tokenizers,
            source_rope_keep=input_rope_keep,
        )

    def example(
        self, record: Mapping[str, Any], rng: np.random.Generator, sampling: MemorySampling
    ) -> dict[str, np.ndarray]:
        return nvs_example(record, rng, sampling)
