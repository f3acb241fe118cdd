"""Training examples as the paper samples them: a target, the user input, and 1-6 memory videos.

Novel view synthesis, from a multi-camera scene (V synchronised views of one scene, latents and
per-latent-frame cameras): a random target view, a different random source view (ReCamMaster's
condition video), and n ~ U{min..max} memory views, the n of the remaining views whose trajectories
overlap the target's most by VideoFOV (retrieval.fov), in rank order, which is how inference retrieves
them. Ground-truth renders stand in for past outputs (the memory noise of training makes up for their
being perfect). Memory is made "chronological" by a random order of turns, since views of one scene
have none. Camera inputs (geometry.relative_poses) are relative to the SOURCE view's first camera, for
the target and every memory alike: ReCamMaster's training convention, and the frame inference uses
(a session's world frame puts the source video's first camera at the identity). The target's
camera input is the example's `camera` extra.

Long video editing, from a long source/edited pair cut into segments: a random target segment s >= 1,
its source segment as the input, and as memory the previous segment (always, slot 0) then the most
similar older segments by the cosine similarity of their pooled source embeddings; memory latents are
`cat([edited, source], channels)` (memory.builders) and turns are segment indices.

Both return fixed-size numpy examples (K memory slots, empty ones zero and invalid), so batches
stack and every step has the same shapes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from mv2v_jax.config import positive, require
from mv2v_jax.geometry import Intrinsics, relative_poses
from mv2v_jax.memory.tokenizers import TokenizerConfig
from mv2v_jax.retrieval.fov import fov_bitmask, fov_bitmasks, fov_scores


@dataclasses.dataclass(frozen=True)
class MemorySampling:
    """Attributes (paper values where it gives them; ours otherwise, stated):
    slots: K, the memory budget (paper: up to 6 memory videos).
    min_memory, max_memory: memory videos per example drawn uniformly (paper: 1 to 6).
    uniform_tokenizer_prob: share of steps where every memory slot gets one tokenizer (paper: 50%);
      the rest use the rank schedule.
    merge_prob: share of steps with token merging (paper: 50%).
    merge_ratios: r for merging steps, drawn uniformly (paper: r in [0.3, 0.7]; static shapes need a
      finite set, so its ends and middle).
    fov_radius: VideoFOV sphere radius in scene units (retrieval.fov).
    """

    slots: int = 6
    min_memory: int = 1
    max_memory: int = 6
    uniform_tokenizer_prob: float = 0.5
    merge_prob: float = 0.5
    merge_ratios: tuple[float, ...] = (0.3, 0.5, 0.7)
    fov_radius: float = 1.0

    def __post_init__(self):
        require(self.slots >= 1, "slots", self.slots, "the memory budget must be at least 1 slot")
        require(self.min_memory >= 0, "min_memory", self.min_memory, "a count of memory videos must be >= 0")
        count_ok = self.min_memory <= self.max_memory <= self.slots
        require(
            count_ok,
            "max_memory",
            self.max_memory,
            f"must be in [min_memory, slots] = [{self.min_memory}, {self.slots}]",
        )
        for key in ("uniform_tokenizer_prob", "merge_prob"):
            require(0 <= getattr(self, key) <= 1, key, getattr(self, key), "a probability is in [0, 1]")
        ratios_ok = bool(self.merge_ratios) and all(0 < r <= 1 for r in self.merge_ratios)
        require(ratios_ok, "merge_ratios", self.merge_ratios, "merging keeps a share of tokens in (0, 1]")
        require(positive(self.fov_radius), "fov_radius", self.fov_radius, "the VideoFOV sphere radius must be positive")


def _slots(latents: list[np.ndarray], cameras: list[np.ndarray] | None, turns: list[int], slots: int, like):
    """Pads the chosen memories to K slots."""
    shape = like.shape
    out = {
        "memory_latents": np.zeros((slots, *shape), like.dtype),
        "memory_valid": np.zeros((slots,), bool),
        "memory_turns": np.zeros((slots,), np.int32),
    }
    if cameras is not None:
        out["memory_camera"] = np.zeros((slots, shape[0], 12), np.float32)
    for k, latent in enumerate(latents):
        out["memory_latents"][k] = latent
        out["memory_valid"][k] = True
        out["memory_turns"][k] = turns[k]
        if cameras is not None:
            out["memory_camera"][k] = cameras[k]
    return out


_SCORE_CACHE: dict[tuple[str, int, float], np.ndarray] = {}
_SCORE_CACHE_SIZE = 1 << 16  # (scene, target) pairs kept; a few MB


def view_scores(scene: Mapping[str, Any], target: int, radius: float) -> np.ndarray:
    """VideoFOV scores `[V]` of every view of `scene` against view `target` (sphere at the target's first
    camera, as the paper retrieves). They depend only on the scene's cameras, so records that carry a
    `scene` name are scored once per (scene, target) and cached: scoring is most of an example's cost."""
    name = scene.get("scene")
    key = (str(name), target, float(radius))
    if name is not None and (cached := _SCORE_CACHE.get(key)) is not None:  # .get: grain's threads share it
        return cached
    w2c = np.asarray(scene["w2c"], np.float64)
    height, width = scene["image_size"]
    intrinsics = Intrinsics.from_matrix(np.asarray(scene["K"]), height, width)
    fov_centre = w2c[target, 0]  # VideoFOV's sphere sits at the target's first camera (paper)
    target_bits = fov_bitmask(w2c[target], intrinsics, fov_centre, radius=radius)
    memory_bits = fov_bitmasks(w2c, intrinsics, fov_centre, radius=radius)
    scores = np.asarray(fov_scores(target_bits, memory_bits).score)
    if name is not None:
        if len(_SCORE_CACHE) >= _SCORE_CACHE_SIZE:
            _SCORE_CACHE.clear()
        _SCORE_CACHE[key] = scores
    return scores


def nvs_example(scene: Mapping[str, Any], rng: np.random.Generator, sampling: MemorySampling) -> dict[str, np.ndarray]:
    """One example from a multi-camera latent scene.

    Args:
      scene: `latents` `[V, T, h, w, C]`, `w2c` `[V, T, 3, 4]` (at the latent frames), `K` `[3, 3]`,
        `image_size` `(H, W)` of the frames the intrinsics refer to, `context` `[L, D]`.
    """
    latents, w2c = np.asarray(scene["latents"]), np.asarray(scene["w2c"], np.float64)
    views = latents.shape[0]
    if views < 2:
        raise ValueError(f"scene {scene.get('scene', '?')!r} has {views} view(s); NVS needs a target and a source")
    target = int(rng.integers(views))
    source = int(rng.choice([v for v in range(views) if v != target]))
    candidates = [v for v in range(views) if v not in (target, source)]
    count = min(int(rng.integers(sampling.min_memory, sampling.max_memory + 1)), len(candidates), sampling.slots)
    chosen: list[int] = []
    if count:
        scores = view_scores(scene, target, sampling.fov_radius)[candidates]
        chosen = [candidates[i] for i in np.argsort(-scores, kind="stable")[:count]]
    reference = w2c[source, 0]
    example = {
        "target": latents[target],
        "inputs": latents[source],
        "context": np.asarray(scene["context"]),
        "camera": relative_poses(w2c[target], reference),
    }
    turns = list(rng.permutation(len(chosen)))
    cameras = [relative_poses(w2c[v], reference) for v in chosen]
    return example | _slots([latents[v] for v in chosen], cameras, turns, sampling.slots, latents[0])


def long_edit_example(
    pair: Mapping[str, Any], rng: np.random.Generator, sampling: MemorySampling
) -> dict[str, np.ndarray]:
    """One example from a long source/edited pair.

    Args:
      pair: `source_latents`, `edited_latents` `[S, T, h, w, C]`, `embeddings` `[S, D]` pooled source
        embeddings per segment, `context` `[L, D]`.
    """
    source, edited = np.asarray(pair["source_latents"]), np.asarray(pair["edited_latents"])
    segments = source.shape[0]
    if segments < 2:
        raise ValueError(f"pair {pair.get('pair', '?')!r} has {segments} segment(s); memory needs two")
    s = int(rng.integers(1, segments))
    older = list(range(s - 1))
    count = min(int(rng.integers(sampling.min_memory, sampling.max_memory + 1)), s, sampling.slots)
    embeddings = np.asarray(pair["embeddings"], np.float64)
    unit = embeddings / np.maximum(np.linalg.norm(embeddings, axis=-1, keepdims=True), 1e-12)
    similarity = unit[older] @ unit[s] if older else np.zeros(0)
    ranked = [older[i] for i in np.argsort(-similarity, kind="stable")]
    chosen = [s - 1, *ranked[: count - 1]]
    memory = [np.concatenate([edited[m], source[m]], axis=-1) for m in chosen]
    example = {"target": edited[s], "inputs": source[s], "context": np.asarray(pair["context"])}
    return example | _slots(memory, None, chosen, sampling.slots, memory[0])


def step_variant(rng: np.random.Generator, sampling: MemorySampling, paper: TokenizerConfig):
    """This step's static choices: the tokenizer schedule and the merge ratio (None: no merging)."""
    if rng.random() < sampling.uniform_tokenizer_prob:
        patch = paper.patches[int(rng.integers(len(paper.patches)))]
        tokenizers = TokenizerConfig(ranked=(), rest=patch)
    else:
        tokenizers = paper
    keep_ratio = None
    if rng.random() < sampling.merge_prob:
        keep_ratio = float(sampling.merge_ratios[int(rng.integers(len(sampling.merge_ratios)))])
    return tokenizers, keep_ratio
