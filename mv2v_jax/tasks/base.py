"""What a task is: one way of conditioning Memory-V2V, described by one object.

A task (novel view synthesis, long video editing, a third scheme later) decides
- which block adapters its model carries (`adapters`, names in `memory.model.ADAPTERS`) and how many
  input channels the DiT takes per latent channel of the codec (`input_channels`);
- how a turn's videos become the DiT's token streams (`streams`);
- how a training example is drawn from a dataset record (`example`), with the task-specific arrays
  it adds to `Conditions.extras`;
- by which stored array its memory is found again (`retrieval_key`, an array name of the bank).

The train step, the loader, the pipelines and the bank ask the task; none of them branches on its name.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Any, ClassVar

import jax
import numpy as np

from mv2v_jax.data.memory_sampling import MemorySampling
from mv2v_jax.memory.builders import Conditions
from mv2v_jax.memory.model import MemoryConfig
from mv2v_jax.memory.streams import Stream, StreamSlice, stream_layout
from mv2v_jax.memory.tokenizers import TokenizerConfig


class Task(abc.ABC):
    """One conditioning scheme. Subclasses set the class attributes and implement the methods."""

    name: ClassVar[str]
    adapters: ClassVar[tuple[str, ...]]  # block adapters its model carries, in order
    retrieval_key: ClassVar[str]  # the bank array that indexes its memory ("cameras", "embedding")
    memory_factor: ClassVar[int]  # channels of a memory slot per codec latent channel

    @abc.abstractmethod
    def input_channels(self, latent_channels: int) -> int:
        """The DiT's input channels for a codec with `latent_channels` channels."""

    @abc.abstractmethod
    def streams(
        self,
        noisy: jax.Array,
        conditions: Conditions,
        tokenizers: TokenizerConfig,
        *,
        input_rope_keep: jax.Array | None = None,
    ) -> list[Stream]:
        """The DiT's streams for noisy target latents `[B, T, H, W, C]`, target first.

        `input_rope_keep` `[B]` is the training-time RoPE dropout mask of the user input (False: no
        rotation); tasks whose input has no tokens of its own ignore it.
        """

    @abc.abstractmethod
    def example(
        self, record: Mapping[str, Any], rng: np.random.Generator, sampling: MemorySampling
    ) -> dict[str, np.ndarray]:
        """One fixed-size training example: `target`, `inputs`, `context`, `memory_*` and the task's
        extras by name (data.memory_sampling)."""

    def layout(
        self, noisy: jax.ShapeDtypeStruct, conditions: Conditions, tokenizers: TokenizerConfig
    ) -> tuple[StreamSlice, ...]:
        """The packed layout of `streams` for inputs of these shapes (arrays or `ShapeDtypeStruct`s):
        traced abstractly, so nothing is computed and no model is needed (cost accounting at any size)."""
        layouts = []
        jax.eval_shape(lambda x, c: layouts.append(stream_layout(self.streams(x, c, tokenizers))), noisy, conditions)
        return layouts[0]

    def check_model(self, config: MemoryConfig, latent_channels: int) -> None:
        """Raises ValueError when a model cannot run this task with a codec of `latent_channels`."""
        if tuple(config.adapters) != self.adapters:
            raise ValueError(
                f"{self.name} needs a model with block adapters {list(self.adapters)}; these weights have "
                f"{list(config.adapters)} (convert them with the task's converter, see README)"
            )
        want = self.input_channels(latent_channels)
        if config.dit.in_channels != want:
            raise ValueError(
                f"{self.name} with a codec of {latent_channels} latent channels needs a DiT with {want} input "
                f"channels; these weights take {config.dit.in_channels}"
            )
