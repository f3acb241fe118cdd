"""Multi-turn novel view synthesis with memory: one turn = one new camera trajectory of the source video.

A turn (`NVSPipeline.run_turn`):
1. encode the user's source video (once per session; later turns reuse the stored latents);
2. take the requested trajectory's cameras at the latent frames (every 4th of the 1 + 4k frames, as
   ReCamMaster takes 21 of 81) and retrieve the top-k earlier outputs of the session by VideoFOV
   against it (retrieval.fov; the sphere centred at the target's first camera, as the paper does),
   feeding only those that overlap it (score above `retrieval.min_score`) in as many slots as there
   are of them (pipelines.slots);
3. build the task's streams (tasks.nvs): the source frame-concatenated after the target, the
   retrieved memory in rank order (dynamic tokenizers by rank), hierarchical RoPE with the newest
   memory nearest the source, each video with its own cameras relative to the source video's first
   camera (ReCamMaster's pose input; translations in the scene's units, metres for ReCamMaster,
   whose Unreal centimetres io.cameras divides by 100);
4. sample (guidance when there is a text encoder) and decode;
5. store the turn as one unit (Session.commit_turn): the output's latents, cameras and FOV bitmask in
   the bank, with the mp4, contact sheet and JSON record of the turn.

A session's camera trajectories share one world frame, in which the source video's first camera is
the identity (`SOURCE_CAMERA`): named presets (pipelines.presets) start there, and camera files are
read as given in that frame.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mv2v_jax.geometry import Intrinsics, relative_poses
from mv2v_jax.memory.builders import Conditions, MemoryBatch
from mv2v_jax.memory.model import MemoryDiT
from mv2v_jax.models.codec import TEMPORAL, LatentCodec
from mv2v_jax.pipelines.denoiser import Denoiser, SamplingConfig, TextConditioning
from mv2v_jax.pipelines.session import Session, SessionError, Stages, TurnFiles
from mv2v_jax.pipelines.slots import MemoryBudget, load_slots
from mv2v_jax.pipelines.step_cache import NO_STEP_CACHE, StepCacheConfig
from mv2v_jax.pipelines.turns import Turn
from mv2v_jax.retrieval.bank import MemoryEntry
from mv2v_jax.retrieval.fov import fov_bitmask, retrieve_by_fov
from mv2v_jax.tasks import get_task

SOURCE_CAMERA = np.eye(3, 4)  # the source video's first camera: the session's world frame


class NVSPipeline:
    """Runs turns of a novel-view-synthesis session with a `MemoryDiT` that has camera layers."""

    def __init__(
        self,
        *,
        model: MemoryDiT,
        codec: LatentCodec,
        sampling: SamplingConfig,
        intrinsics: Intrinsics,
        budget: MemoryBudget,
        fov_radius: float = 1.0,
        text: TextConditioning | None = None,
        fps: float = 16.0,
        mesh: jax.sharding.Mesh | None = None,
        cache: StepCacheConfig = NO_STEP_CACHE,
    ):
        task = get_task("nvs")
        task.check_model(model.config, codec.channels)
        self.model, self.codec, self.fps = model, codec, fps
        self.intrinsics, self.budget, self.fov_radius = intrinsics, budget, fov_radius
        text = text or TextConditioning(text_dim=model.config.dit.text_dim)
        self.denoiser = Denoiser(model, task, sampling, text, mesh, cache=cache)

    def retrieve(
        self, session: Session | None, target_cameras: np.ndarray, latent_shape
    ) -> tuple[MemoryBatch, list, list]:
        """The k most overlapping earlier outputs of `session` (None: none) whose VideoFOV score is above
        the budget's `min_score`, as a `MemoryBatch`; what was fed, with scores, and what was skipped."""
        entries = session.bank.entries() if session is not None else []
        rows, scores = [], None
        if entries and self.budget.slots:
            keys = [session.bank.load(e.entry_id, arrays=("cameras", "fov")) for e in entries]
            selection, scores = retrieve_by_fov(
                target_cameras,
                [e.cameras for e in keys],
                self.budget.slots,
                self.intrinsics,
                self.fov_radius,
                stored=[e.fov for e in keys],
            )
            rows = selection.rows()
        fed = [r for r in rows if scores.score[r] > self.budget.min_score]
        skipped = [
            {
                "entry": entries[r].entry_id,
                "turn": entries[r].turn,
                "score": float(scores.score[r]),
                "reason": f"VideoFOV score {float(scores.score[r]):.3f} <= min_score {self.budget.min_score}",
            }
            for r in rows
            if r not in fed
        ]
        bank = session.bank if session is not None else None
        ids = [entries[r].entry_id for r in fed]
        memory, loaded = load_slots(bank, ids, self.budget, latent_shape, SOURCE_CAMERA)
        picked = [
            {
                "slot": slot,
                "entry": entry.entry_id,
                "turn": entry.turn,
                "score": float(scores.score[row]),
                "overlap": float(scores.overlap[row]),
                "containment": float(scores.containment[row]),
                "tokenizer": self.model.config.tokenizers.label_for_rank(slot),
            }
            for slot, (row, entry) in enumerate(zip(fed, loaded, strict=True))
        ]
        return memory, picked, skipped

    def run_turn(self, session: Session, turn: Turn, *, use_memory: bool = True) -> dict[str, Any]:
        """One turn of `session`, stored as one unit (Session.commit_turn); returns its record. The
        session's source video is encoded on its first turn (`Session.open(..., source=...)`).

        `use_memory=False` ignores the session's memory (the evaluation's independent-turns baseline)
        with the same compiled program: every slot is empty.
        """
        stages = Stages()
        number = session.next_turn
        with stages("encode"):
            source = session.load_source()
            if source is None and session.source is not None:
                source = np.asarray(self.codec.encode(session.source.frames))
                session.save_source(source)
        if source is None:
            raise SessionError(f"session {session.path} has no source video yet: give one (--video) for its first turn")
        frames = 1 + TEMPORAL * (source.shape[0] - 1)
        if turn.cameras.shape[0] != frames:
            raise ValueError(
                f"camera trajectory {turn.camera} has {turn.cameras.shape[0]} poses but the source video "
                f"has {frames} frames"
            )
        target_cameras = np.asarray(turn.cameras[::TEMPORAL], np.float64)
        with stages("retrieve"):
            memory, picked, skipped = self.retrieve(session if use_memory else None, target_cameras, source.shape)
        camera = jnp.asarray(relative_poses(target_cameras, SOURCE_CAMERA))[None]
        conditions = Conditions(jnp.asarray(source)[None], memory, {"camera": camera})
        latents, output = self.denoiser.generate(stages, self.codec, conditions, turn.prompt, turn.seed, source.shape)
        with stages("store"):
            fov = np.asarray(fov_bitmask(target_cameras, self.intrinsics, radius=self.fov_radius))
        with stages("decode"):
            files = self.files(session, output, source=source, turn=number, camera=turn.camera)
        cost = self.denoiser.cost(conditions, source.shape)
        record = {
            "task": "nvs",
            "turn": number,
            "prompt": turn.prompt,
            "seed": turn.seed,
            "camera": turn.camera,
            "source": session.meta.get("source", {}),
            "retrieved": picked,
            "skipped": skipped,
            **self.denoiser.record(cost, stages.seconds["compile"]),
            "seconds": {k: round(v, 3) for k, v in stages.seconds.items()},
        }
        entry = MemoryEntry(
            latents=latents,
            turn=number,
            prompt=turn.prompt,
            cameras=target_cameras,
            fov=fov,
            metadata={"camera": turn.camera},
        )
        return session.commit_turn(entry, files, record)

    def prepare_next_turn(self, session: Session, prompt: str = "") -> float:
        """Compiles (or loads) the program the session's next turn runs if every earlier output overlaps
        it, so that a new process starts sampling in seconds; the seconds it took. It reads the session's
        files only, so `session` may be closed already (another process may be running that turn)."""
        source = session.load_source()
        filled = min(len(session.bank), self.budget.slots)
        if source is None:
            return 0.0
        slots, frames = self.budget.slots_for(filled), source.shape[0]
        # Empty slots made on the host and moved, as a turn's are (pipelines.slots): no program runs for them.
        zeros = lambda shape, dtype=np.float32: jnp.asarray(np.zeros(shape, dtype))
        memory = MemoryBatch(
            zeros((1, slots, *source.shape)),
            zeros((1, slots), bool),
            zeros((1, slots), np.int32),
            zeros((1, slots, frames, 12)),
        )
        camera = zeros((1, frames, 12))
        conditions = Conditions(jnp.asarray(source)[None], memory, {"camera": camera})
        return self.denoiser.prepare(conditions, prompt, source.shape)

    def files(self, session: Session, output: np.ndarray, *, source: np.ndarray, turn: int, camera: str) -> TurnFiles:
        """A turn's files from its output frames: the mp4, and a contact sheet of the source over the output."""
        name = session.meta.get("source", {}).get("video") or session.meta.get("source_video", "")
        labels = [f"source {name}".strip(), f"turn {turn} {camera}".strip()]
        return TurnFiles(video=output, fps=self.fps, sheet=[self.codec.decode(source), output], labels=labels)

    def restore_files(self, session: Session) -> list[int]:
        """Derives again, from their bank entries, the files of committed turns that went missing; returns
        those turns."""
        missing = session.missing_files()
        source = session.load_source() if missing else None
        for info, suffixes in missing:
            output = self.codec.decode(session.bank.load(info.entry_id, arrays=("latents",)).latents)
            camera = info.metadata.get("camera", "")
            session.restore_files(
                info, self.files(session, output, source=source, turn=info.turn, camera=camera), suffixes
            )
        return [info.turn for info, _ in missing]


def describe(record: Mapping[str, Any]) -> str:
    picked = ", ".join(f"turn {p['turn']} ({p['score']:.2f})" for p in record["retrieved"]) or "none"
    return f"turn {record['turn']}: memory {picked}; seconds {record['seconds']} -> {record['files']['video']}"
