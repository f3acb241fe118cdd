r"""Multi-turn video editing with memory, from the command line; the session persists between runs.

    # novel view synthesis: each turn a new camera trajectory of the same source video
    python sample.py --config configs/tiny_nvs.py --task nvs --session outputs/room \
        --video room.mp4 --camera pan_left
    python sample.py --config configs/tiny_nvs.py --task nvs --session outputs/room --camera orbit_right
    python sample.py --config configs/tiny_nvs.py --task nvs --session outputs/room --turns turns.json

    # long video editing: the whole video, segment by segment
    python sample.py --config configs/lucy_edit_long.py --task long_edit --session outputs/edit --video long.mp4 \
        --prompt "make it winter"

`--camera` is a preset name (pipelines.presets: pan_left, pan_right, tilt_up, tilt_down, zoom_in,
zoom_out, translate_*, arc_*, orbit_*) or a camera file (io.cameras: ReCamMaster JSON with
`--camera_index`, our trajectory JSON, or .npy/.json matrices with `--camera_convention`).
`--turns` is a JSON list of {"camera": ..., "prompt": ..., "seed": ...} run in order. Each turn
writes an mp4, a contact sheet and a JSON record under `<session>/turns/`. Configuration lives in the
config file's `sample` section (pipelines.build); override fields with --config.sample.x=y.
Compiled programs are cached in ~/.cache/mv2v_jax (MV2V_CACHE_DIR=/elsewhere moves it, =off disables
it), so the next turn in a new process starts sampling in seconds.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from absl import flags, logging
from ml_collections import config_flags
from tqdm import tqdm

from mv2v_jax.cache import enable_compilation_cache
from mv2v_jax.config import run_app
from mv2v_jax.io.video import VideoError, read_all_frames, read_video
from mv2v_jax.retrieval.bank import BankError

# What imports JAX (the pipelines, sessions, camera files) is imported where it is used, so that
# `--help` answers at once.
# The tasks this CLI runs, and what only that task reads from the `sample` section.
TASK_KEYS = {"nvs": ("retrieval.hfov_degrees", "retrieval.fov_radius"), "long_edit": ("long_edit", "embedder")}

config_flags.DEFINE_config_file("config", None, "experiment config file with a `sample` section", lock_config=True)
flags.DEFINE_enum("task", "nvs", sorted(TASK_KEYS), "nvs (novel view synthesis) or long_edit")
flags.DEFINE_string("session", None, "session folder, created or resumed")
flags.DEFINE_string("video", None, "source video (NVS: first turn of a session; long_edit: the long video)")
flags.DEFINE_string("camera", None, "NVS: a preset trajectory name or a camera file")
flags.DEFINE_string("camera_index", None, "which camera of a ReCamMaster camera_extrinsics.json (e.g. 3)")
flags.DEFINE_enum("camera_convention", None, ["w2c", "c2w"], "matrices in a plain .npy/.json camera file")
flags.DEFINE_enum("camera_axes", "opencv", ["opencv", "opengl"], "camera axes of a plain .npy/.json camera file")
flags.DEFINE_string("prompt", "", "text prompt")
flags.DEFINE_string("turns", None, "JSON list of turns: [{camera, prompt, seed}]")
flags.DEFINE_integer("seed", 0, "noise seed (turn i of --turns without its own seed: seed + i)")
flags.DEFINE_string(
    "compile_topology",
    None,
    "only compile one sampling step of --task for a TPU slice (v5p-8, v5p:2x2x2) here "
    "and print its memory per chip and collectives; exit 1 if it does not fit",
)
flags.DEFINE_string(
    "compile_mesh",
    None,
    "with --compile_topology: the mesh, e.g. data=2,sequence=4 (default: "
    "guidance's batch over data, the rest of the chips over sequence)",
)
FLAGS = flags.FLAGS


def load_camera(spec: str, frames: int):
    """A preset name or a camera file -> w2c `[frames, 3, 4]`."""
    from mv2v_jax.io.cameras import CameraError, read_cameras
    from mv2v_jax.pipelines.presets import AMOUNTS, preset_trajectory

    if spec in AMOUNTS:
        return preset_trajectory(spec, frames)
    if not Path(spec).exists():
        raise CameraError(f"{spec}: neither a camera preset ({', '.join(sorted(AMOUNTS))}) nor an existing file")
    convention = FLAGS.camera_convention if spec.endswith((".npy", ".json")) and FLAGS.camera_convention else None
    index = FLAGS.camera_index
    trajectory = read_cameras(
        spec,
        camera=int(index) if index and index.isdigit() else index,  # `3` means cam03
        convention=convention,
        axes=FLAGS.camera_axes if convention else None,
        num_frames=frames,
    )
    return trajectory.w2c


def turn_specs() -> list[dict]:
    if FLAGS.turns:
        try:
            turns = json.loads(Path(FLAGS.turns).read_text())
        except json.JSONDecodeError as e:
            message = f"malformed JSON at line {e.lineno}: {e.msg}"
            raise ValueError(f"{FLAGS.turns}: not a JSON list of turns ({message})") from e
        except UnicodeDecodeError as e:
            raise ValueError(f"{FLAGS.turns}: not UTF-8 text ({e.reason} at byte {e.start}): save it as UTF-8") from e
        if not isinstance(turns, list) or not all(isinstance(t, dict) for t in turns):
            raise ValueError(f"{FLAGS.turns}: expected a JSON list of objects with camera / prompt / seed")
        return [{"prompt": FLAGS.prompt, "seed": FLAGS.seed + i} | t for i, t in enumerate(turns)]
    return [{"camera": FLAGS.camera, "prompt": FLAGS.prompt, "seed": FLAGS.seed}]


def run_nvs(sample, session_path: Path) -> None:
    from mv2v_jax.io.cameras import CameraError
    from mv2v_jax.pipelines.build import build_pipeline, session_config
    from mv2v_jax.pipelines.nvs import describe
    from mv2v_jax.pipelines.session import Session, SessionError

    video = sample["video"]
    frames = video["frames"]
    turns = turn_specs()
    for turn in turns:  # every camera is checked before anything is loaded or written
        if not turn.get("camera"):
            raise CameraError("each NVS turn needs a camera (--camera, or 'camera' in --turns)")
        turn["w2c"] = load_camera(turn["camera"], frames)
    source = None
    if FLAGS.video:
        source = read_video(FLAGS.video, frames, (video["height"], video["width"])).frames
    pipeline = build_pipeline(sample, "nvs")
    session = Session(session_path, "nvs", session_config(sample, "nvs"))
    try:
        if source is not None and session.meta.get("source_video") not in (None, FLAGS.video):
            raise SessionError(f"session {session_path} edits {session.meta['source_video']}, not {FLAGS.video}")
        for turn in tqdm(turns, desc="turns", unit="turn", disable=len(turns) == 1):
            record = pipeline.run_turn(
                session,
                turn["w2c"],
                turn["prompt"],
                turn["seed"],
                source,
                FLAGS.video or "",
                video["fps"],
                str(turn["camera"]),
            )
            print(describe(record))
    finally:
        session.close()


def run_long_edit(sample, session_path: Path) -> None:
    from mv2v_jax.pipelines.build import build_pipeline, session_config
    from mv2v_jax.pipelines.long_edit import segment_starts
    from mv2v_jax.pipelines.session import Session

    if not FLAGS.video:
        raise VideoError("long_edit needs --video, the long video to edit")
    video = sample["video"]
    clip = read_all_frames(FLAGS.video, (video["height"], video["width"]))
    try:  # before anything is loaded or written
        segment_starts(len(clip.frames), sample["long_edit"]["segment_frames"], sample["long_edit"]["overlap"])
    except ValueError as e:
        raise VideoError(f"{FLAGS.video}: {e}") from e
    pipeline = build_pipeline(sample, "long_edit")
    session = Session(session_path, "long_edit", session_config(sample, "long_edit"))
    try:
        for record in pipeline.run(session, clip.frames, FLAGS.prompt, FLAGS.seed, video["fps"], FLAGS.video):
            print(
                f"segment {record['segment']}: memory {[p['segment'] for p in record['retrieved']]} -> "
                f"{record['files']['video']}"
            )
        if (session.path / "edited.mp4").exists():
            print(f"wrote {session.path / 'edited.mp4'}")
    finally:
        session.close()


def _has(section, dotted: str) -> bool:
    head, _, rest = dotted.partition(".")
    return head in section and (not rest or _has(section[head], rest))


def main(argv: list[str]) -> int:
    from mv2v_jax.pipelines.build import check_sample_config

    del argv
    logging.set_verbosity(logging.WARNING)  # orbax logs every restore at INFO
    enable_compilation_cache()  # the next process with the same shapes loads the program (mv2v_jax.cache)
    if FLAGS.config is None or "sample" not in FLAGS.config:
        print("error: --config must name an experiment config with a `sample` section", file=sys.stderr)
        return 1
    if FLAGS.compile_topology:
        from mv2v_jax.parallel.aot import compile_sampling_step

        return compile_sampling_step(FLAGS.config, FLAGS.task, FLAGS.compile_topology, FLAGS.compile_mesh)
    sample = FLAGS.config.sample
    if missing := [key for key in TASK_KEYS[FLAGS.task] if not _has(sample, key)]:
        task = FLAGS.config.get("step", {}).get("task", "?")
        print(
            f"error: --task {FLAGS.task} needs sample.{' and sample.'.join(missing)}, which this config (a "
            f"{task!r} experiment) does not have",
            file=sys.stderr,
        )
        return 1
    if not FLAGS.session:
        print("error: --session is required", file=sys.stderr)
        return 1
    try:
        check_sample_config(FLAGS.config.sample)
        (run_nvs if FLAGS.task == "nvs" else run_long_edit)(FLAGS.config.sample, Path(FLAGS.session))
    except (ValueError, OSError, BankError) as e:  # VideoError, CameraError, SessionError, a full disk, ...
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    run_app(main)
