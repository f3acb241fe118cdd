"""Training examples as the paper samples them: a target, the user input, and 1-6 memory videos.

Novel view synthesis, from a multi-camera scene (V synchronised views of one scene, latents and
per-latent-frame cameras): a target view, a source view (ReCamMaster's condition video: a random other
view, or always `source_view`), and memory views of the same scene in retrieval-rank order (VideoFOV,
retrieval.fov, as inference ranks them). Ground-truth renders stand in for past outputs (the memory noise
of training makes up for their being perfect). Memory is made "chronological" by a random order of
turns, since views of one scene have none. Camera inputs (geometry.relative_poses) are relative to the
SOURCE view's first camera, for the target and every memory alike: ReCamMaster's training convention,
and the frame inference uses (a session's world frame puts the source video's first camera at the
identity). The target's camera input is the example's `camera` extra.

Which memory an example gets is one of four kinds, drawn per example:
- none (`none_prob`): every slot empty, as the first turn and the independent baseline run;
- informative (`informative_prob`): memory that holds at least `informative_coverage` of the target
  that the source does not (`exclusive_coverage`, measured on VideoFOV's direction sphere), with the
  other memories of the paper's draw; a target none of whose views hold that much is drawn again;
- distractor (`distractor_prob`): one view that adds nothing beyond the source (below
  `distractor_coverage`), the lowest ranked, which the model has to learn to ignore;
- the paper's draw otherwise: n ~ U{min_memory..max_memory}, the n highest ranked.
The paper samples 1-6 memory videos and none of the other kinds (all probabilities 0): a model
trained so never sees the first turn's input (no memory), nor learns that memory is what fills what
the source does not show.

Long video editing, from a long source/edited pair cut into segments: a random target segment (the
first one included, which has nothing earlier to remember), its source segment as the input, and as
memory (none for the first segment, or with `none_prob`) the previous segment (always, slot 0) then the
most similar older segments by the cosine similarity of their pooled source embeddings; memory latents
are `cat([edited, source], channels)` (memory.builders) and turns are segment indices.

Both return fixed-size numpy examples (K memory slots, empty ones zero and invalid), so batches
stack and every step has the same shapes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from mv2v_jax.config import require
from mv2v_jax.geometry import Intrinsics, relative_poses
from mv2v_jax.memory.tokenizers import TokenizerConfig
from mv2v_jax.retrieval.fov import fov_bitmask, fov_bitmasks, fov_fraction, fov_scores


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
    none_prob, informative_prob, distractor_prob: shares of examples with no memory, with informative
      memory and with one distractor (module docstring; the paper's draw takes the rest). Paper: 0.
    informative_coverage: the share of the target's directions only memory sees that makes memory
      informative (ours: 0.3).
    distractor_coverage: below this share a view adds nothing beyond the source (ours: 0.05).
    source_view: the view every NVS example takes as its source (-1: a random one). Scenes whose views
      all start at the source's first camera (SceneConfig.camera_start "shared") use 0, the still view.
    """

    slots: int = 6
    min_memory: int = 1
    max_memory: int = 6
    uniform_tokenizer_prob: float = 0.5
    merge_prob: float = 0.5
    merge_ratios: tuple[float, ...] = (0.3, 0.5, 0.7)
    fov_radius: float = 1.0
    none_prob: float = 0.0
    informative_prob: float = 0.0
    distractor_prob: float = 0.0
    informative_coverage: float = 0.3
    distractor_coverage: float = 0.05
    source_view: int = -1

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
        for key in (
            "uniform_tokenizer_prob",
            "merge_prob",
            "none_prob",
            "informative_prob",
            "distractor_prob",
            "informative_coverage",
            "distractor_coverage",
        ):
            require(0 <= getattr(self, key) <= 1, key, getattr(self, key), "a probability or share is in [0, 1]")
        kinds = self.none_prob + self.informative_prob + self.distractor_prob
        require(kinds <= 1, "none_prob", self.none_prob, "none_prob + informative_prob + distractor_prob must be <= 1")
        require(self.source_view >= -1, "source_view", self.source_view, "a view index, or -1 for a random view")
        ratios_ok = bool(self.merge_ratios) and all(0 < r <= 1 for r in self.merge_ratios)
        require(ratios_ok, "merge_ratios", self.merge_ratios, "merging keeps a share of tokens in (0, 1]")
        require(self.fov_radius > 0, "fov_radius", self.fov_radius, "the VideoFOV sphere radius must be > 0 (or inf)")


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


_BITMASK_CACHE: dict[str, np.ndarray] = {}
MEMORY_KINDS = ("none", "informative", "distractor", "paper")


def _memory_kind(rng: np.random.Generator, sampling: MemorySampling) -> str:
    """Which memory this example gets (MEMORY_KINDS); draws nothing when only the paper's draw is on."""
    shares = [sampling.none_prob, sampling.informative_prob, sampling.distractor_prob]
    if not any(shares):
        return "paper"
    return str(rng.choice(MEMORY_KINDS, p=[*shares, 1.0 - sum(shares)]))


def view_bitmasks(scene: Mapping[str, Any], reference: int) -> np.ndarray:
    """VideoFOV sets `[V, words]` of every view at infinite radius in view `reference`'s first camera's
    frame (translations ignored: what each view sees of the directions round a shared centre), cached
    per scene name as `view_scores`."""
    name = scene.get("scene")
    key = f"{name}/{reference}"
    if name is not None and (cached := _BITMASK_CACHE.get(key)) is not None:
        return cached
    w2c = np.asarray(scene["w2c"], np.float64)
    height, width = scene["image_size"]
    intrinsics = Intrinsics.from_matrix(np.asarray(scene["K"]), height, width)
    bits = np.asarray(fov_bitmasks(w2c, intrinsics, w2c[reference, 0], radius=float("inf")))
    if name is not None:
        if len(_BITMASK_CACHE) >= _SCORE_CACHE_SIZE // 16:
            _BITMASK_CACHE.clear()
        _BITMASK_CACHE[key] = bits
    return bits


def exclusive_coverage(bits: np.ndarray, target: int, source: int) -> np.ndarray:
    """`[V]`: the share of view `target`'s directions that each view sees and view `source` does not
    (`bits` from `view_bitmasks`): what a memory adds to the user input."""
    target_area = float(fov_fraction(bits[target]))
    if target_area <= 0:
        return np.zeros(len(bits))
    only_memory = bits & bits[target] & ~bits[source]
    return np.asarray(fov_fraction(only_memory)) / target_area


def _target_and_source(rng: np.random.Generator, views: int, source_view: int) -> tuple[int, int]:
    """A random target view and a different source view (`source_view` when it is >= 0)."""
    if source_view >= 0:
        return int(rng.choice([v for v in range(views) if v != source_view])), source_view
    target = int(rng.integers(views))
    return target, int(rng.choice([v for v in range(views) if v != target]))


def nvs_example(scene: Mapping[str, Any], rng: np.random.Generator, sampling: MemorySampling) -> dict[str, np.ndarray]:
    """One example from a multi-camera latent scene.

    Args:
      scene: `latents` `[V, T, h, w, C]`, `w2c` `[V, T, 3, 4]` (at the latent frames), `K` `[3, 3]`,
        `image_size` `(H, W)` of the frames the intrinsics refer to, `context` `[L, D]`.
    """
    latents, w2c = np.asarray(scene["latents"]), np.asarray(scene["w2c"], np.float64)
    views = latents.shape[0]
    if views < 2 or sampling.source_view >= views:
        raise ValueError(
            f"scene {scene.get('scene', '?')!r} has {views} view(s); NVS needs a target and a source"
            + (f" (source_view {sampling.source_view})" if sampling.source_view >= 0 else "")
        )
    kind = _memory_kind(rng, sampling)
    target, source = _target_and_source(rng, views, sampling.source_view)
    if kind in ("informative", "distractor"):
        for _ in range(views):  # a target that some other view adds enough to (informative)
            coverage = exclusive_coverage(view_bitmasks(scene, source), target, source)
            coverage[[target, source]] = -1.0  # neither is a candidate
            if kind == "distractor" or coverage.max() >= sampling.informative_coverage:
                break
            target, source = _target_and_source(rng, views, sampling.source_view)
        else:
            kind = "paper"  # no view of this scene holds that much: the paper's draw
    candidates = [v for v in range(views) if v not in (target, source)]
    count = min(int(rng.integers(sampling.min_memory, sampling.max_memory + 1)), len(candidates), sampling.slots)
    chosen: list[int] = []
    if kind != "none" and candidates:
        scores = view_scores(scene, target, sampling.fov_radius)
        ranked = [candidates[i] for i in np.argsort(-scores[candidates], kind="stable")]
        if kind == "distractor":
            useless = [v for v in ranked if coverage[v] < sampling.distractor_coverage]
            chosen = [(useless or ranked)[-1]]
        elif kind == "informative":
            informative = max(candidates, key=lambda v: (coverage[v], scores[v]))
            chosen = sorted([informative, *[v for v in ranked if v != informative][: count - 1]], key=ranked.index)
        else:
            chosen = ranked[:count]
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
    s = int(rng.integers(0, segments))
    example = {"target": edited[s], "inputs": source[s], "context": np.asarray(pair["context"])}
    empty = np.zeros((*source.shape[1:-1], 2 * source.shape[-1]), source.dtype)
    if s == 0 or _memory_kind(rng, sampling) == "none":
        return example | _slots([], None, [], sampling.slots, empty)
    older = list(range(s - 1))
    count = min(int(rng.integers(max(sampling.min_memory, 1), sampling.max_memory + 1)), s, sampling.slots)
    embeddings = np.asarray(pair["embeddings"], np.float64)
    unit = embeddings / np.maximum(np.linalg.norm(embeddings, axis=-1, keepdims=True), 1e-12)
    similarity = unit[older] @ unit[s] if older else np.zeros(0)
    ranked = [older[i] for i in np.argsort(-similarity, kind="stable")]
    chosen = [s - 1, *ranked[: count - 1]]
    memory = [np.concatenate([edited[m], source[m]], axis=-1) for m in chosen]
    return example | _slots(memory, None, chosen, sampling.slots, empty)


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
