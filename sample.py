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
`--turns` is a UTF-8 JSON list of turns run in order, e.g.
`[{"camera": "pan_left", "prompt": "...", "seed": 3}, {"camera": "cams.json", "camera_index": 2}]`;
keys: camera (required), prompt, seed (0..2**32-1), camera_index, camera_convention, camera_axes
(pipelines.turns); any other key is an error. Everything a command asks for (config values, the video,
every turn's cameras, the session) is checked before anything is loaded or created, and a new session
appears with its first complete turn. Each turn writes an mp4, a contact sheet and a JSON record under
`<session>/turns/`, together with its memory entry. Configuration lives in the config file's `sample`
section (pipelines.build); override fields with --config.sample.x=y. Compiled programs are cached in
~/.cache/mv2v_jax (MV2V_CACHE_DIR=/elsewhere moves it, =off disables it). Once its turns are written and
announced and the session is released, the command also prepares the program the next turn runs, so the
next turn in a new process starts sampling in seconds (--noprepare_next_turn skips it).
"""

from __future__ import annotations

import sys
from pathlib import Path

import mv2v_jax.cli_start  # noqa: F401  (first: Ctrl-C in the imports below is one line, exit 130)

from absl import flags, logging
from ml_collections import config_flags
from tqdm import tqdm

from mv2v_jax.cache import cache_root, enable_compilation_cache
from mv2v_jax.config import run_app

# What imports JAX (the pipelines, sessions, camera files) is imported where it is used, so that
# `--help` answers at once.
# What every task reads from the `sample` section, and what only one task reads.
SAMPLE_KEYS = ("weights", "codec", "text", "video", "sampling", "retrieval")
TASK_KEYS = {"nvs": ("retrieval.hfov_degrees", "retrieval.fov_radius"), "long_edit": ("long_edit", "embedder")}
# Flags only an NVS turn reads (long editing would ignore them).
NVS_FLAGS = ("camera", "turns", "camera_index", "camera_convention", "camera_axes", "prepare_next_turn")
# Flags of a sampling run, which --compile_topology (it only compiles a step) would ignore.
RUN_FLAGS = ("session", "video", "prompt", "seed", *NVS_FLAGS)

config_flags.DEFINE_config_file("config", None, "experiment config file with a `sample` section", lock_config=True)
flags.DEFINE_enum("task", "nvs", sorted(TASK_KEYS), "nvs (novel view synthesis) or long_edit")
flags.DEFINE_string("session", None, "session folder, created (with its first turn) or resumed")
flags.DEFINE_string("video", None, "source video (NVS: required for a session's first turn; long_edit: the long video)")
flags.DEFINE_string("camera", None, "NVS: a preset trajectory name or a camera file")
flags.DEFINE_string("camera_index", None, "which camera of a ReCamMaster camera_extrinsics.json (e.g. 3)")
flags.DEFINE_enum("camera_convention", None, ["w2c", "c2w"], "matrices in a plain .npy/.json camera file")
flags.DEFINE_enum("camera_axes", None, ["opencv", "opengl"], "camera axes of a plain .npy/.json file (default opencv)")
flags.DEFINE_string("prompt", "", "text prompt (the default of --turns entries without their own)")
flags.DEFINE_string(
    "turns", None, 'NVS: a JSON list of turns, [{"camera": ..., "prompt": ..., "seed": ...}, ...] (see above)'
)
flags.DEFINE_integer("seed", 0, "noise seed, 0..2**32-1 (turn i of --turns without its own seed: seed + i)")
flags.DEFINE_bool(
    "prepare_next_turn", True, "NVS: after the last turn, compile the program the next turn will run (cached)"
)
flags.DEFINE_string(
    "compile_topology",
    None,
    "only compile one sampling step of --task for a TPU slice (v5p-8, v5p:2x2x2) here "
    "and print its memory per chip and collectives; exit 1 if it does not fit",
)
flags.DEFINE_string(
    "compile_mesh",
    None,
    "with --compile_topology: the mesh, e.g. data=2,sequence=4 (default: the config's sample.mesh, "
    "as sampling on that slice would make it)",
)
FLAGS = flags.FLAGS


def note(message: str | None) -> None:
    if message:
        print(f"note: {message}", file=sys.stderr)


def check_flags() -> None:
    """Refuses a flag this command would ignore, naming it and the flag or task it belongs with: a
    --compile_topology option without it, a sampling flag with it, a flag or a `sample` key of the other
    task, and --prepare_next_turn with the compilation cache off."""
    from mv2v_jax.cache import ENV_VAR
    from mv2v_jax.config import check_text, given_flags, refuse_flags

    if FLAGS.compile_topology:
        refuse_flags(
            given_flags(*RUN_FLAGS),
            "not used with --compile_topology, which only compiles a sampling step (nothing is sampled or written)",
        )
        return
    refuse_flags(given_flags("compile_mesh"), "only with --compile_topology (the TPU slice to compile for)")
    other = "long_edit" if FLAGS.task == "nvs" else "nvs"
    overrides = [name for name in FLAGS if name.startswith("config.sample.") and FLAGS[name].present]
    keys = [f"config.sample.{key}" for key in TASK_KEYS[other]]
    refuse_flags(
        [f"--{name}" for name in overrides if any(name == key or name.startswith(f"{key}.") for key in keys)],
        f"only --task {other} reads it; this is --task {FLAGS.task}",
    )
    if FLAGS.task == "long_edit":
        refuse_flags(given_flags(*NVS_FLAGS), "for --task nvs; long_edit edits the whole --video with --prompt")
    if FLAGS.prepare_next_turn and cache_root() is None:
        refuse_flags(
            given_flags("prepare_next_turn"),
            f"the compilation cache is off ({ENV_VAR}=off), so no later process could use the prepared program",
        )
    check_text(FLAGS.prompt, "--prompt")


def prompt_sources(sample) -> dict[str, str]:
    """The prompts every turn of the command reads, by where they come from."""
    return {"--prompt": FLAGS.prompt, "sample.sampling.negative_prompt": sample["sampling"].get("negative_prompt", "")}


def warn_long_prompts(sample, prompts: dict[str, str]) -> None:
    """A `warning:` line for each prompt (`where` -> text) longer than the text encoder reads, which it cuts;
    said before anything is loaded (the tokenizer alone is read)."""
    if sample["text"]["kind"] != "umt5":
        return
    from mv2v_jax.models.text.tokenizer import UMT5Tokenizer

    tokenizer = UMT5Tokenizer(sample["text"]["tokenizer"])
    for where, prompt in prompts.items():
        if note := tokenizer.cut_note(prompt):
            print(f"warning: {where}: {note}", file=sys.stderr)


def read_source(sample, all_frames: bool):
    """`--video` as the session's `SourceVideo` (every frame for long editing), saying what reading changed."""
    from mv2v_jax.io.video import read_all_frames, read_video
    from mv2v_jax.pipelines.session import SourceVideo

    video = sample["video"]
    size = (video["height"], video["width"])
    clip = read_all_frames(FLAGS.video, size) if all_frames else read_video(FLAGS.video, video["frames"], size)
    note(clip.describe(video["fps"]))
    return SourceVideo.from_clip(clip, FLAGS.video)


def nvs_turns(sample) -> list:
    """The command's turns, every camera read and checked."""
    from mv2v_jax.io.cameras import CameraError
    from mv2v_jax.pipelines.turns import CameraRequest, Turn, TurnError, check_seed, load_cameras, read_turns

    if FLAGS.turns and FLAGS.camera:
        raise TurnError("--camera and --turns both given: give one camera with --camera, or a list with --turns")
    if not FLAGS.turns and not FLAGS.camera:
        raise CameraError("an NVS turn needs a camera: --camera (a preset or a camera file) or --turns")
    seed = check_seed(FLAGS.seed, "--seed")
    flag_camera = CameraRequest(
        camera=FLAGS.camera or "",
        index=FLAGS.camera_index,
        convention=FLAGS.camera_convention,
        axes=FLAGS.camera_axes,
    )
    if FLAGS.turns:
        requests = read_turns(FLAGS.turns, prompt=FLAGS.prompt, seed=seed, camera=flag_camera)
    else:
        requests = [(flag_camera, FLAGS.prompt, seed)]
    turns = []
    for i, (request, prompt, turn_seed) in enumerate(requests):
        try:
            cameras = load_cameras(request, sample["video"]["frames"])
        except CameraError as e:
            raise CameraError(f"{FLAGS.turns}: turn {i + 1}: {e}" if FLAGS.turns else str(e)) from e
        turns.append(Turn(cameras=cameras, camera=request.camera, prompt=prompt, seed=turn_seed))
    return turns


def run_nvs(sample, session_path: Path) -> None:
    from mv2v_jax.pipelines.build import build_pipeline, session_config
    from mv2v_jax.pipelines.nvs import describe
    from mv2v_jax.pipelines.session import Session, SessionError, check_session

    turns = nvs_turns(sample)
    own = {f"{FLAGS.turns}: turn {i + 1} 'prompt'": t.prompt for i, t in enumerate(turns) if t.prompt != FLAGS.prompt}
    warn_long_prompts(sample, prompt_sources(sample) | own)
    source = read_source(sample, all_frames=False) if FLAGS.video else None
    config = session_config(sample, "nvs")
    if check_session(session_path, task="nvs", config=config, source=source) is None and source is None:
        raise SessionError(f"{session_path} holds no session yet: its first turn needs the source video (--video)")
    session = Session.open(session_path, task="nvs", config=config, source=source)
    try:
        pipeline = build_pipeline(sample, "nvs")
        if restored := pipeline.restore_files(session):
            note(f"session {session_path}: wrote the missing files of turn(s) {restored} again from the memory bank")
        for turn in tqdm(turns, desc="turns", unit="turn", disable=len(turns) == 1):
            # Flushed: through a pipe, stdout would otherwise hold the result back until the process ends.
            print(describe(pipeline.run_turn(session, turn)), flush=True)
    finally:
        session.close()
    # After the turns are written, announced and the session released: the user has the result, and can
    # start the next turn, while this compiles its program (one that outlives this process).
    if FLAGS.prepare_next_turn and cache_root() is not None:
        pipeline.prepare_next_turn(session)


def run_long_edit(sample, session_path: Path) -> None:
    from mv2v_jax.io.video import VideoError
    from mv2v_jax.pipelines.build import build_pipeline, session_config
    from mv2v_jax.pipelines.long_edit import segment_starts
    from mv2v_jax.pipelines.session import EDITED, Session
    from mv2v_jax.pipelines.turns import check_seed

    if not FLAGS.video:
        raise VideoError("long_edit needs --video, the long video to edit")
    check_seed(FLAGS.seed, "--seed")
    warn_long_prompts(sample, prompt_sources(sample))
    source = read_source(sample, all_frames=True)
    try:
        edit = sample["long_edit"]
        starts = segment_starts(len(source.frames), edit["segment_frames"], edit["overlap"])
    except ValueError as e:
        raise VideoError(f"{FLAGS.video}: {e}") from e
    check_seed(FLAGS.seed + len(starts) - 1, f"--seed {FLAGS.seed} + the last segment's index {len(starts) - 1}")
    config, meta = session_config(sample, "long_edit"), {"segments": starts}
    session = Session.open(session_path, task="long_edit", config=config, source=source, meta=meta)
    try:
        pipeline = build_pipeline(sample, "long_edit")
        if restored := pipeline.restore_files(session):
            note(f"session {session_path}: wrote the missing files of turn(s) {restored} again from the memory bank")
        for record in pipeline.run(session, prompt=FLAGS.prompt, seed=FLAGS.seed):
            print(
                f"segment {record['segment']}: memory {[p['segment'] for p in record['retrieved']]} -> "
                f"{record['files']['video']}",
                flush=True,
            )
        if (session.path / EDITED).exists():
            print(f"wrote {session.path / EDITED}")
    finally:
        session.close()


def _has(section, dotted: str) -> bool:
    head, _, rest = dotted.partition(".")
    return hasattr(section, "keys") and head in section and (not rest or _has(section[head], rest))


def main(argv: list[str]) -> int:
    from mv2v_jax.io.atomic import check_can_create
    from mv2v_jax.pipelines.build import check_sample_config, check_weights_exist
    from mv2v_jax.pipelines.report import REPORT
    from mv2v_jax.retrieval.bank import BankError

    del argv
    logging.set_verbosity(logging.WARNING)  # orbax logs every restore at INFO
    enable_compilation_cache()  # the next process with the same shapes loads the program (mv2v_jax.cache)
    if FLAGS.config is None or "sample" not in FLAGS.config:
        print("error: --config must name an experiment config with a `sample` section", file=sys.stderr)
        return 1
    sample = FLAGS.config.sample
    if missing := [key for key in (*SAMPLE_KEYS, *TASK_KEYS[FLAGS.task]) if not _has(sample, key)]:
        task = FLAGS.config.get("step", {}).get("task", "?")
        print(
            f"error: --task {FLAGS.task} needs sample.{' and sample.'.join(missing)}, which this config (a "
            f"{task!r} experiment) does not have",
            file=sys.stderr,
        )
        return 1
    try:
        check_flags()
        if FLAGS.compile_topology:
            from mv2v_jax.aot import compile_sampling_step

            return compile_sampling_step(FLAGS.config, FLAGS.task, FLAGS.compile_topology, FLAGS.compile_mesh)
        if not FLAGS.session:
            raise ValueError("--session is required")
        if "://" in FLAGS.session:  # its memory bank is locked and fsynced, its videos encoded, as local files
            raise ValueError(f"--session {FLAGS.session}: a session is a local folder (not a bucket)")
        check_sample_config(sample, FLAGS.task)
        check_weights_exist(sample, FLAGS.task)
        if sample["text"]["kind"] == "umt5" and sample["text"].get("cache"):  # written once the turn encodes
            check_can_create(sample["text"]["cache"])
        (run_nvs if FLAGS.task == "nvs" else run_long_edit)(sample, Path(FLAGS.session))
        if (report := Path(FLAGS.session) / REPORT).exists():  # pipelines.report: the session on one page
            print(f"report: {report.resolve().as_uri()}")
    except (ValueError, OSError, BankError) as e:  # VideoError, CameraError, SessionError, a full disk, ...
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    run_app(main)
