"""Long video editing with memory: a video too long for the base model, edited segment by segment.

The video is cut into segments of `segment_frames` frames (1 + 4k: 81 for LucyEdit) that overlap by
`overlap` frames (default 0, independent windows: memory is what keeps them consistent). The last
segment is aligned with the end of the video so no frame is dropped. Each segment is one turn:
1. encode the source segment (the condition latents) and embed its frames with DINOv2, mean-pooled
   (retrieval.similarity);
2. retrieve the previous segment (always) and the most similar older segments by the cosine
   similarity of their source embeddings (those above `retrieval.min_score`; pipelines.slots);
3. build the task's streams (tasks.long_edit): `cat([noisy, condition])`, the previous segment at
   RoPE frames T..2T-1, older ones on the band from 2T with the newest nearest (the order training
   uses too); memory latents are `cat([edited, source])` so they fill the same input channels;
4. sample (with guidance when there is a text encoder), decode, and store the segment as one unit
   (Session.commit_turn): its bank entry with its mp4, contact sheet and record.
The edited segments are stitched into one video, cross-fading overlaps linearly. Segments are numbered
from 0 in records and messages; segment i is the session's turn i + 1.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mv2v_jax.io.video import write_video
from mv2v_jax.memory.builders import Conditions, MemoryBatch
from mv2v_jax.memory.model import MemoryDiT
from mv2v_jax.models.codec import LatentCodec
from mv2v_jax.pipelines.denoiser import Denoiser, SamplingConfig, TextConditioning
from mv2v_jax.pipelines.session import EDITED, Session, SessionError, Stages, TurnFiles
from mv2v_jax.pipelines.slots import MemoryBudget, load_slots
from mv2v_jax.pipelines.step_cache import NO_STEP_CACHE, StepCacheConfig
from mv2v_jax.retrieval.bank import MemoryEntry
from mv2v_jax.retrieval.similarity import segment_embedding, select_segments
from mv2v_jax.tasks import get_task


def segment_starts(num_frames: int, segment_frames: int, overlap: int = 0) -> list[int]:
    """First frame of each segment; the last one ends at the video's end."""
    if num_frames < segment_frames:
        raise ValueError(f"the video has {num_frames} frames, fewer than one segment of {segment_frames}")
    if not 0 <= overlap < segment_frames:
        raise ValueError(f"segment overlap {overlap} must be in [0, {segment_frames})")
    starts = list(range(0, num_frames - segment_frames + 1, segment_frames - overlap))
    if starts[-1] + segment_frames < num_frames:
        starts.append(num_frames - segment_frames)
    return starts


def stitch(segments: list[np.ndarray], starts: list[int], num_frames: int) -> np.ndarray:
    """Places uint8 segments `[L, H, W, 3]` at their starts, cross-fading linearly where neighbours overlap."""
    total = np.zeros((num_frames, *segments[0].shape[1:]), np.float64)
    weight = np.zeros(num_frames, np.float64)
    ends = [start + len(frames) for frames, start in zip(segments, starts, strict=True)]
    for i, (frames, start) in enumerate(zip(segments, starts, strict=True)):
        w = np.ones(len(frames))
        if i > 0 and (n := ends[i - 1] - start) > 0:  # fade in over the previous segment's tail
            w[:n] = np.linspace(0, 1, n + 2)[1:-1]
        if i + 1 < len(segments) and (n := ends[i] - starts[i + 1]) > 0:  # fade out over the next one's head
            w[-n:] = np.linspace(1, 0, n + 2)[1:-1]
        total[start : ends[i]] += w[:, None, None, None] * frames
        weight[start : ends[i]] += w
    return np.clip(np.round(total / weight[:, None, None, None]), 0, 255).astype(np.uint8)


class LongEditPipeline:
    """Edits a long video segment by segment with a LucyEdit-style `MemoryDiT` (no camera layers)."""

    def __init__(
        self,
        *,
        model: MemoryDiT,
        codec: LatentCodec,
        sampling: SamplingConfig,
        embed_frames: Callable[[np.ndarray], np.ndarray],
        budget: MemoryBudget,
        segment_frames: int,
        overlap: int = 0,
        text: TextConditioning | None = None,
        fps: float = 16.0,
        mesh: jax.sharding.Mesh | None = None,
        cache: StepCacheConfig = NO_STEP_CACHE,
    ):
        self.task = get_task("long_edit")
        self.task.check_model(model.config, codec.channels)
        self.model, self.codec, self.embed_frames, self.fps = model, codec, embed_frames, fps
        self.budget, self.segment_frames, self.overlap = budget, segment_frames, overlap
        text = text or TextConditioning(text_dim=model.config.dit.text_dim)
        self.denoiser = Denoiser(model, self.task, sampling, text, mesh, cache=cache)

    def retrieve(self, session: Session, query: np.ndarray, latent_shape) -> tuple[MemoryBatch, list, list]:
        """The previous segment (always) and the most similar older ones whose sources' embeddings are
        more similar than the budget's `min_score`, as a `MemoryBatch`; what was fed, with similarity,
        and what was skipped."""
        entries = session.bank.entries()
        rows, scores = [], []
        if entries and self.budget.slots:
            keys = np.stack([session.bank.load(e.entry_id, arrays=("embedding",)).embedding for e in entries])
            selection = select_segments(jnp.asarray(query), jnp.asarray(keys), self.budget.slots)
            rows, scores = selection.rows(), [float(s) for s in selection.scores]
        fed = [i for i, _ in enumerate(rows) if i == 0 or scores[i] > self.budget.min_score]
        skipped = [
            {
                "entry": entries[rows[i]].entry_id,
                "segment": entries[rows[i]].turn - 1,
                "similarity": scores[i],
                "reason": f"similarity {scores[i]:.3f} <= min_score {self.budget.min_score}",
            }
            for i in range(len(rows))
            if i not in fed
        ]
        slot_shape = (*latent_shape[:-1], self.task.memory_factor * latent_shape[-1])
        ids = [entries[rows[i]].entry_id for i in fed]
        memory, loaded = load_slots(session.bank, ids, self.budget, slot_shape)
        picked = [
            {
                "slot": slot,
                "entry": entry.entry_id,
                "segment": entry.turn - 1,
                "similarity": scores[i],
                "tokenizer": self.model.config.tokenizers.label_for_rank(slot),
            }
            for slot, (i, entry) in enumerate(zip(fed, loaded, strict=True))
        ]
        return memory, picked, skipped

    def run(self, session: Session, *, prompt: str = "", seed: int = 0) -> list[dict[str, Any]]:
        """Edits every segment of the session's source video (`Session.open(..., source=...)`) that it
        has not done yet, each stored as one unit; returns their records. Segment i has seed `seed + i`.
        Writes `<session>/edited.mp4` once all are done (again if it went missing)."""
        if session.source is None:
            raise SessionError(f"session {session.path}: long video editing needs the video (--video)")
        video = session.source.frames
        starts = segment_starts(video.shape[0], self.segment_frames, self.overlap)
        records = []
        for index in range(session.next_turn - 1, len(starts)):
            records.append(
                self._segment(session, video=video, starts=starts, index=index, prompt=prompt, seed=seed + index)
            )
        edited = session.path / EDITED
        if session.next_turn - 1 == len(starts) and (records or not edited.exists()):
            segments = [
                self.codec.decode(session.bank.load(e.entry_id).latents[..., : self.codec.channels])
                for e in sorted(session.bank.entries(), key=lambda e: e.turn)
            ]
            write_video(edited, stitch(segments, starts, video.shape[0]), self.fps)
            session.write_report()  # with the edited video
        return records

    def _segment(self, session: Session, *, video, starts, index, prompt, seed) -> dict[str, Any]:
        stages = Stages()
        turn = index + 1
        frames = video[starts[index] : starts[index] + self.segment_frames]
        with stages("encode"):
            source = np.asarray(self.codec.encode(frames))
            query = segment_embedding(frames, self.embed_frames)
        with stages("retrieve"):
            memory, picked, skipped = self.retrieve(session, query, source.shape)
        conditions = Conditions(jnp.asarray(source)[None], memory)
        latents, output = self.denoiser.generate(stages, self.codec, conditions, prompt, seed, source.shape)
        cost = self.denoiser.cost(conditions, source.shape)
        record = {
            "task": "long_edit",
            "turn": turn,
            "segment": index,
            "start_frame": starts[index],
            "prompt": prompt,
            "seed": seed,
            "source": session.meta.get("source", {}),
            "retrieved": picked,
            "skipped": skipped,
            **self.denoiser.record(cost, stages.seconds["compile"]),
            "seconds": {k: round(v, 3) for k, v in stages.seconds.items()},
        }
        entry = MemoryEntry(
            latents=np.concatenate([latents, source], -1),
            turn=turn,
            prompt=prompt,
            embedding=query,
            metadata={"start": starts[index]},
        )
        return session.commit_turn(entry, self.files(frames, output, start=starts[index], index=index), record)

    def files(
        self, frames: np.ndarray, output: np.ndarray, *, start: int, index: int, decoded: bool = False
    ) -> TurnFiles:
        """A segment's files: its edited mp4, and a contact sheet of the source frames over the edit."""
        label = f"source frames {start}+" + (" (decoded)" if decoded else "")
        return TurnFiles(video=output, fps=self.fps, sheet=[frames, output], labels=[label, f"edited segment {index}"])

    def restore_files(self, session: Session) -> list[int]:
        """Derives again, from their bank entries, the files of committed segments that went missing (the
        sheet's source row from the stored source latents); returns those turns."""
        missing = session.missing_files()
        for info, suffixes in missing:
            latents = session.bank.load(info.entry_id, arrays=("latents",)).latents
            channels = self.codec.channels
            output, frames = self.codec.decode(latents[..., :channels]), self.codec.decode(latents[..., channels:])
            files = self.files(frames, output, start=info.metadata.get("start", 0), index=info.turn - 1, decoded=True)
            session.restore_files(info, files, suffixes)
        return [info.turn for info, _ in missing]
