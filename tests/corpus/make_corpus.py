"""The bad-input corpus: broken videos, pose files, checkpoints, configs and sessions, generated, never committed.

    python tests/corpus/make_corpus.py OUT    # writes the inputs under OUT and prints the case table

`make_corpus(root)` writes every input below `root` (the good ones the bad ones are made from too: a
tiny MemoryDiT weights directory, tiny random diffusers / transformers checkpoints saved and then
damaged, sessions made by the real `Session` class and then edited) and `CASES` says, for each, which
tool gets it, with which command line, and what its error must say. tests/test_corpus.py runs them.

Command lines are run with the repository as the working directory; `{root}` stands for the corpus
folder. `root/config.py` is configs/tiny_nvs.py shrunk to the corpus (its arguments add the config
typos); sessions made here carry that config's hash, so the tools open them as their own.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
TINY_DIT = dict(dim=32, ffn_dim=64, num_heads=2, num_layers=3, text_dim=16, freq_dim=16)
FRAMES, HEIGHT, WIDTH = 9, 32, 48  # the corpus experiment's video: 3 latent frames of 8 x 12 x 48
# What an output folder that cannot be made says: its parent is a file (root ignores chmod) or read-only.
# TFDS records a builder's default config beside its datasets before it builds one.
TFDS_CONFIG = ("out/tfds/*/.config/metadata.json",)
UNWRITABLE = r"(Not a directory|Permission denied|File exists)\S*:? '\S*unwritable"


@dataclasses.dataclass(frozen=True)
class Case:
    """One bad input and what the tool must say about it.

    Attributes:
      input: the bad input (a path under the corpus, or a flag).
      tool: the command that gets it.
      problem: what is wrong with it.
      argv: the command line after `python`; `{root}` is the corpus folder.
      expect: a regex the tool's stderr must match: it names the input and the problem.
      lock: a memory bank (under the corpus) that another process holds open for writing meanwhile.
      file_size_limit: RLIMIT_FSIZE of the run in bytes, a disk that fills up during the write.
      leaves: files (globs under the corpus) the failed run may create: TFDS's own bookkeeping.
      interrupt: a regex of the tool's stderr; once it shows, the run gets SIGINT (a Ctrl-C).
      exit_code: the exit status the tool must give, where one is promised (130 for a Ctrl-C).
      warns: a regex the tool's stderr must also match: a `warning:` line it gives before the error.
      env: environment variables of the run (name, value).
    """

    input: str
    tool: str
    problem: str
    argv: tuple[str, ...]
    expect: str
    lock: str | None = None
    file_size_limit: int | None = None
    leaves: tuple[str, ...] = ()
    interrupt: str | None = None
    exit_code: int | None = None
    warns: str | None = None
    env: tuple[tuple[str, str], ...] = ()


def sample(*args: str, task: str = "nvs", config: str = "") -> tuple[str, ...]:
    return ("sample.py", "--config", f"{{root}}/config.py{config}", "--task", task, *args)


def new_session(*args: str) -> tuple[str, ...]:
    """An NVS turn in a session folder that does not exist yet: a failure must not create it."""
    return sample("--session", "{root}/out/session", *args)


def with_video(video: str, *flags: str) -> tuple[str, ...]:
    return new_session("--video", f"{{root}}/{video}", "--camera", "pan_left", *flags)


def with_camera(camera: str, *flags: str) -> tuple[str, ...]:
    return new_session("--video", "{root}/videos/good.mp4", "--camera", f"{{root}}/{camera}", *flags)


def with_turns(name: str, *flags: str) -> tuple[str, ...]:
    """A new session's turns from the turns file `turns/{name}`."""
    return new_session("--video", "{root}/videos/good.mp4", "--turns", f"{{root}}/turns/{name}", *flags)


def turn(session: str) -> tuple[str, ...]:
    """The next NVS turn of an existing session."""
    return sample("--session", f"{{root}}/sessions/{session}", "--camera", "pan_right")


def convert(converter: str, src: str, out: str = "{root}/out/weights", *flags: str) -> tuple[str, ...]:
    return ("-m", f"convert_weights.{converter}", f"{{root}}/{src}", out, *flags)


def train(*args: str, config: str = "") -> tuple[str, ...]:
    return ("train.py", "--config", f"{{root}}/config.py{config}", "--workdir", "{root}/out/train", *args)


def encode(*args: str, config: str = "") -> tuple[str, ...]:
    return ("-m", "mv2v_jax.data.encode_latents", "--config", f"{{root}}/config.py{config}", *args)


def prepare(builder: str, module: str, config: str, manual: str) -> tuple[str, ...]:
    """`prepare(...)` of a TFDS builder, the library entry point, in a fresh interpreter."""
    code = (
        "from mv2v_jax.data.tfds.common import prepare\n"
        f"from mv2v_jax.data.tfds.{module} import {builder}, {builder}Config\n"
        f"prepare({builder}, {builder}Config(name='corpus', {config}), '{{root}}/out/tfds', '{{root}}/{manual}')\n"
    )
    return ("-c", code)


# The real backbones' small configs, run on random weights of their architecture (`backbones/`, shared).
BACKBONES = {"nvs": "configs/recammaster_nvs.py:tiny", "long_edit": "configs/lucy_edit_long.py:tiny"}
LONG_PROMPT = " ".join(["a"] * 700)  # 700 tokens of the random tokenizer (convert_weights.random), umT5 reads 512


def backbone(task: str, *args: str) -> tuple[str, ...]:
    """sample.py on a real backbone's `:tiny` config (its weights under the corpus), a new session."""
    config = ("--config", BACKBONES[task], "--config.weights_dir={root}/backbones", "--task", task)
    return ("sample.py", *config, "--session", "{root}/out/session", *args)


def random_weights(*args: str) -> tuple[str, ...]:
    """convert_weights.random for recammaster_nvs.py:tiny into a new folder."""
    return ("-m", "convert_weights.random", "--config", BACKBONES["nvs"], "--out", "{root}/out/random", *args)


def evaluate(module: str, *args: str) -> tuple[str, ...]:
    return ("-m", f"mv2v_jax.eval.{module}", *args)


CASES: tuple[Case, ...] = (
    # Videos: sample.py reads them before anything is loaded or written.
    Case(
        "videos/empty.mp4",
        "sample.py",
        "zero-length file",
        with_video("videos/empty.mp4"),
        r"empty\.mp4: the file is empty \(0 bytes\)",
    ),
    Case(
        "videos/truncated.mp4",
        "sample.py",
        "cut at 60%",
        with_video("videos/truncated.mp4"),
        r"truncated\.mp4: truncated: the container lists 9 frames but holds data for \d+",
    ),
    Case(
        "videos/garbled.mp4",
        "sample.py",
        "frame data overwritten with noise",
        with_video("videos/garbled.mp4"),
        r"garbled\.mp4: decoding failed at frame \d+ of 9 .*corrupt",
    ),
    Case(
        "videos/notes.mp4",
        "sample.py",
        "a text file named .mp4",
        with_video("videos/notes.mp4"),
        r"notes\.mp4: not a readable video",
    ),
    Case(
        "videos/still.png",
        "sample.py",
        "a still image",
        with_video("videos/still.png"),
        r"still\.png: is a still image \(png_pipe\), not a video",
    ),
    Case(
        "videos/sound.wav",
        "sample.py",
        "audio only",
        with_video("videos/sound.wav"),
        r"sound\.wav: has no video stream \(streams: audio\)",
    ),
    Case(
        "videos/short.mp4",
        "sample.py",
        "5 frames, 9 needed",
        with_video("videos/short.mp4"),
        r"short\.mp4: the video is too short: it has 5 frames, but 9 frames",
    ),
    Case(
        "videos/mixed_sizes/",
        "sample.py",
        "a frame folder with one frame of another size",
        with_video("videos/mixed_sizes"),
        r"4\.png: frame is \(32, 40\), earlier frames in the folder are \(32, 48\)",
    ),
    Case(
        "videos/broken_frame/",
        "sample.py",
        "a frame folder with a truncated PNG",
        with_video("videos/broken_frame"),
        r"2\.png: not a readable image",
    ),
    Case(
        "videos/bomb_frame/",
        "sample.py",
        "a frame folder with a PNG whose header claims 20000 x 20000 pixels",
        with_video("videos/bomb_frame"),
        r"bomb_frame/0\.png: refused, too large to decode as a frame \(Image size \(400000000 pixels\)",
    ),
    Case(
        "videos/short.mp4 (long_edit)",
        "sample.py --task long_edit",
        "shorter than one 9-frame segment",
        sample("--session", "{root}/out/session", "--video", "{root}/videos/short.mp4", task="long_edit"),
        r"short\.mp4: the video has 5 frames, fewer than one segment of 9",
    ),
    # Camera files.
    Case(
        "cameras/wrong_shape.npy",
        "sample.py",
        "[9, 3, 3] matrices",
        with_camera("cameras/wrong_shape.npy", "--camera_convention", "w2c"),
        r"wrong_shape\.npy: expected extrinsics \[F, 3, 4\] or \[F, 4, 4\] .*got shape \(9, 3, 3\)",
    ),
    Case(
        "cameras/nan.json",
        "sample.py",
        "NaN in frame 4",
        with_camera("cameras/nan.json", "--camera_convention", "w2c"),
        r"nan\.json: NaN or inf in 1 frame\(s\), first \[4\]",
    ),
    Case(
        "cameras/inf_trajectory.json",
        "sample.py",
        "inf in a trajectory file",
        with_camera("cameras/inf_trajectory.json"),
        r"inf_trajectory\.json: NaN or inf in 1 frame\(s\), first \[2\]",
    ),
    Case(
        "cameras/not_rotation.npy",
        "sample.py",
        "rotations scaled by 1.1",
        with_camera("cameras/not_rotation.npy", "--camera_convention", "c2w"),
        r"not_rotation\.npy: not a rotation: frame \d has max \|R\^T R - I\| = 0\.21 .*9 frame\(s\) fail",
    ),
    Case(
        "cameras/reflection.npy",
        "sample.py",
        "det R = -1",
        with_camera("cameras/reflection.npy", "--camera_convention", "w2c"),
        r"reflection\.npy: frame 0 has det R = -1: a reflection",
    ),
    Case(
        "cameras/bottom_row.npy",
        "sample.py",
        "4x4 with last row [0 0 1 1]",
        with_camera("cameras/bottom_row.npy", "--camera_convention", "w2c"),
        r"bottom_row\.npy: frame 0: last row \[0\.0, 0\.0, 1\.0, 1\.0\] is not \[0, 0, 0, 1\]",
    ),
    Case(
        "cameras/five_frames.npy",
        "sample.py",
        "5 poses for a 9-frame video",
        with_camera("cameras/five_frames.npy", "--camera_convention", "w2c"),
        r"five_frames\.npy: holds 5 frames but 9 were asked for",
    ),
    Case(
        "cameras/plain.npy",
        "sample.py",
        "a plain array without --camera_convention",
        with_camera("cameras/plain.npy"),
        r"plain\.npy: a plain array of extrinsics does not say its convention",
    ),
    Case(
        "cameras/truncated.json",
        "sample.py",
        "JSON cut short",
        with_camera("cameras/truncated.json"),
        r"truncated\.json: malformed JSON at line \d+ column \d+",
    ),
    Case(
        "cameras/camera_extrinsics.json",
        "sample.py",
        "a ReCamMaster camera that is not in the file",
        with_camera("cameras/camera_extrinsics.json", "--camera_index", "7"),
        r"camera_extrinsics\.json: unknown camera 'cam07' in frame0 \(it has cam01, cam02\)",
    ),
    Case(
        "cameras/turns_broken.json",
        "sample.py --turns",
        "a turns file that is not JSON",
        new_session("--video", "{root}/videos/good.mp4", "--turns", "{root}/cameras/turns_broken.json"),
        r"turns_broken\.json: not a JSON list of turns \(malformed JSON at line 1",
    ),
    Case(
        "cameras/turns_latin1.json",
        "sample.py --turns",
        "a turns file saved as Latin-1",
        new_session("--video", "{root}/videos/good.mp4", "--turns", "{root}/cameras/turns_latin1.json"),
        r"turns_latin1\.json: not UTF-8 text \(invalid (start|continuation) byte at byte \d+\): save it as UTF-8",
    ),
    # Turn requests: every turn of a command is checked before anything is loaded or created.
    Case(
        "turns/misspelt_prompt.json",
        "sample.py --turns",
        '"promt" for "prompt"',
        with_turns("misspelt_prompt.json"),
        r"misspelt_prompt\.json: turn 1 has unknown key\(s\) 'promt' \(did you mean 'prompt'\?\); a turn's keys are "
        r"camera, prompt, seed",
    ),
    Case(
        "turns/misspelt_seed.json",
        "sample.py --turns",
        '"sed" for "seed" in the second turn',
        with_turns("misspelt_seed.json"),
        r"misspelt_seed\.json: turn 2 has unknown key\(s\) 'sed' \(did you mean 'seed'\?\)",
    ),
    Case(
        "turns/camera_number.json",
        "sample.py --turns",
        '"camera": 5',
        with_turns("camera_number.json"),
        r"camera_number\.json: turn 1 'camera' must be a preset name or a camera file, got 5",
    ),
    Case(
        "turns/seed_string.json",
        "sample.py --turns",
        '"seed": "7"',
        with_turns("seed_string.json"),
        r"seed_string\.json: turn 1 'seed': '7' is not a seed; seeds are integers in 0\.\.4294967295",
    ),
    Case(
        "turns/seed_huge.json",
        "sample.py --turns",
        '"seed": 2**80, which JAX would silently cut to 32 bits',
        with_turns("seed_huge.json"),
        r"seed_huge\.json: turn 1 'seed': 1208925819614629174706176 is not a seed",
    ),
    Case(
        "turns/seed_negative.json",
        "sample.py --turns",
        '"seed": -3',
        with_turns("seed_negative.json"),
        r"seed_negative\.json: turn 1 'seed': -3 is not a seed",
    ),
    Case(
        "turns/seed_float.json",
        "sample.py --turns",
        '"seed": 1.5',
        with_turns("seed_float.json"),
        r"seed_float\.json: turn 1 'seed': 1\.5 is not a seed",
    ),
    Case(
        "turns/empty.json",
        "sample.py --turns",
        "an empty list, which would make an empty session",
        with_turns("empty.json"),
        r"empty\.json: the list of turns is empty: nothing to do",
    ),
    Case(
        "turns/object.json",
        "sample.py --turns",
        "one object, not a list",
        with_turns("object.json"),
        r"object\.json: expected a JSON list of objects with camera, prompt, seed",
    ),
    Case(
        "turns/no_camera.json",
        "sample.py --turns",
        "a turn without a camera",
        with_turns("no_camera.json"),
        r"no_camera\.json: turn 1 has no 'camera'",
    ),
    Case(
        "turns/prompt_list.json",
        "sample.py --turns",
        "a prompt that is a list",
        with_turns("prompt_list.json"),
        r"prompt_list\.json: turn 1 'prompt' must be a string, got \['a', 'room'\]",
    ),
    Case(
        "turns/bad_convention.json",
        "sample.py --turns",
        '"camera_convention": "world"',
        with_turns("bad_convention.json"),
        r"bad_convention\.json: turn 1 'camera_convention' must be one of \['w2c', 'c2w'\], got 'world'",
    ),
    Case(
        "turns/missing_camera_file.json",
        "sample.py --turns",
        "turn 2 names a camera file that does not exist",
        with_turns("missing_camera_file.json"),
        r"missing_camera_file\.json: turn 2: orbit\.json: neither a camera preset \(.*\) nor an existing file",
    ),
    Case(
        "turns/second_nan.json",
        "sample.py --turns",
        "turn 2's camera file (next to the turns file) holds NaN",
        with_turns("second_nan.json"),
        r"second_nan\.json: turn 2: \S*turns/nan\.json: NaN or inf in 1 frame\(s\), first \[4\]",
    ),
    Case(
        "--seed=-1",
        "sample.py",
        "a negative seed",
        with_video("videos/good.mp4", "--seed=-1"),
        r"^error: --seed: -1 is not a seed; seeds are integers in 0\.\.4294967295",
    ),
    Case(
        "--seed=4294967296",
        "sample.py",
        "a seed of 2**32, which JAX would take as 0",
        with_video("videos/good.mp4", "--seed=4294967296"),
        r"^error: --seed: 4294967296 is not a seed",
    ),
    Case(
        "--camera and --turns",
        "sample.py",
        "both given (one would be ignored)",
        with_video("videos/good.mp4", "--turns", "{root}/turns/good.json"),
        r"^error: --camera and --turns both given",
    ),
    Case(
        "no --camera",
        "sample.py",
        "an NVS turn without a camera",
        new_session("--video", "{root}/videos/good.mp4"),
        r"^error: an NVS turn needs a camera: --camera \(a preset or a camera file\) or --turns$",
    ),
    Case(
        "no --video",
        "sample.py",
        "the first turn of a new session without its source video",
        new_session("--camera", "pan_left"),
        r"^error: \S*out/session holds no session yet: its first turn needs the source video \(--video\)$",
    ),
    Case(
        "--session gs://bucket/session",
        "sample.py",
        "a session in a bucket (its bank's lock, fsyncs and video encoder need local files)",
        sample("--session", "gs://bucket/session", "--video", "{root}/videos/good.mp4", "--camera", "pan_left"),
        r"^error: --session gs://bucket/session: a session is a local folder \(not a bucket\)$",
    ),
    Case(
        "--camera_index 3 with a preset",
        "sample.py",
        "a camera file option for a preset trajectory",
        with_video("videos/good.mp4", "--camera_index", "3"),
        r"^error: pan_left is a preset trajectory: camera_index='3' only apply to camera files$",
    ),
    Case(
        "--camera with --task long_edit",
        "sample.py --task long_edit",
        "an NVS flag for long editing",
        sample(
            "--session",
            "{root}/out/session",
            "--video",
            "{root}/videos/good.mp4",
            "--camera",
            "pan_left",
            task="long_edit",
        ),
        r"^error: --camera: for --task nvs; long_edit edits the whole --video with --prompt$",
    ),
    # Camera files with finite but absurd translations, named before the model loads.
    Case(
        "cameras/far.json",
        "sample.py",
        "a w2c translation of 1e200 (finite)",
        with_camera("cameras/far.json", "--camera_convention", "w2c"),
        r"far\.json: frame 3 has a translation of 1e\+200, beyond 100000 \(1 frame\(s\)\)",
    ),
    Case(
        "cameras/far_trajectory.json",
        "sample.py",
        "a trajectory file drifting to 1e30",
        with_camera("cameras/far_trajectory.json"),
        r"far_trajectory\.json: frame 7 has a translation of 1e\+30, beyond 100000 \(2 frame\(s\)\)",
    ),
    Case(
        "cameras/far_recammaster.json",
        "sample.py",
        "a ReCamMaster camera 1e12 cm away",
        with_camera("cameras/far_recammaster.json", "--camera_index", "1"),
        r"far_recammaster\.json \(cam01\): frame 0 has a translation of 1e\+12",
    ),
    # Config values of the sample section that make no sense.
    Case(
        "--config.sample.retrieval.hfov_degrees=180.0",
        "sample.py",
        "a field of view of 180 degrees",
        with_video("videos/good.mp4", "--config.sample.retrieval.hfov_degrees=180.0"),
        r"sample\.retrieval\.hfov_degrees=180\.0: a field of view in \(0, 180\) degrees",
    ),
    Case(
        "--config.sample.retrieval.fov_radius=0.0",
        "sample.py",
        "a VideoFOV sphere of radius 0",
        with_video("videos/good.mp4", "--config.sample.retrieval.fov_radius=0.0"),
        r"sample\.retrieval\.fov_radius=0\.0: VideoFOV's sphere radius must be > 0 \(or inf",
    ),
    Case(
        "--config.sample.retrieval.slots=-1",
        "sample.py",
        "a negative memory budget",
        with_video("videos/good.mp4", "--config.sample.retrieval.slots=-1"),
        r"retrieval\.slots=-1 must be >= 0",
    ),
    Case(
        "--config.sample.codec.kind=vae",
        "sample.py",
        "an unknown codec",
        with_video("videos/good.mp4", "--config.sample.codec.kind=vae"),
        r"sample\.codec\.kind='vae': choose one of \['space_to_depth', 'wan_vae'\]",
    ),
    Case(
        "--config.sample.long_edit.segment_frames=10",
        "sample.py --task long_edit",
        "segments of 10 frames, not 4k + 1",
        sample(
            "--session",
            "{root}/out/session",
            "--video",
            "{root}/videos/good.mp4",
            "--config.sample.long_edit.segment_frames=10",
            task="long_edit",
        ),
        r"sample\.long_edit\.segment_frames=10: segments have 4k \+ 1 frames",
    ),
    Case(
        "--config.sample.long_edit.overlap=9",
        "sample.py --task long_edit",
        "segments overlapping by a whole segment",
        sample(
            "--session",
            "{root}/out/session",
            "--video",
            "{root}/videos/good.mp4",
            "--config.sample.long_edit.overlap=9",
            task="long_edit",
        ),
        r"sample\.long_edit\.overlap=9: segments overlap by 0 to segment_frames - 1 = 8 frames",
    ),
    Case(
        "--config.sample.video.width=44",
        "sample.py",
        "a width the codec and the DiT's patches do not divide (known once the model loaded)",
        with_video("videos/good.mp4", "--config.sample.video.width=44"),
        r"sample\.video\.width=44: must be a multiple of 8 \(the codec's downsampling x the DiT's patch\)",
    ),
    # Sessions and failures during a new session's first turn.
    Case(
        "sessions/other_video/ + videos/other.mp4",
        "sample.py",
        "turn 2 of a session with another source video",
        sample(
            "--session", "{root}/sessions/other_video", "--video", "{root}/videos/other.mp4", "--camera", "pan_right"
        ),
        r"session \S*other_video edits the video \S*good\.mp4 \(sha256 \w+\), not \S*other\.mp4 \(sha256 \w+\): its "
        r"frames differ",
    ),
    Case(
        "sessions/other_video/ + --config.sample.video.height=16",
        "sample.py",
        "turn 2 at another video size",
        (*turn("other_video"), "--config.sample.video.height=16"),
        r"session \S*other_video was made with another configuration \(hash \w+, this run \w+\): "
        r"sample\.video\.height was 32, now 16",
    ),
    Case(
        "--session videos/notes.mp4",
        "sample.py",
        "a session path that is a file",
        sample("--session", "{root}/videos/notes.mp4", "--video", "{root}/videos/good.mp4", "--camera", "pan_left"),
        r"notes\.mp4 is a file, not a session folder",
    ),
    Case(
        "out/session (Ctrl-C in the first turn)",
        "sample.py",
        "Ctrl-C while a new session's first turn is denoised",
        with_video("videos/good.mp4", "--config.sample.sampling.steps=1000"),
        r"^error: interrupted \(Ctrl-C\)$",
        interrupt=r"denoising",
        exit_code=130,
    ),
    Case(
        "out/session (disk full in the first turn)",
        "sample.py",
        "the disk fills up while a new session's first turn is written (RLIMIT_FSIZE 20 KB, under its contact sheet)",
        with_video("videos/good.mp4"),
        r"turn_001\.png.*File too large|File too large.*turn_001\.png",
        file_size_limit=20_000,
    ),
    # Sessions: made by the real Session class, then edited.
    Case(
        "sessions/version/",
        "sample.py",
        "bank manifest of format version 2",
        turn("version"),
        r"memory bank \S*sessions/version/bank has format version 2 .*reads version 1",
    ),
    Case(
        "sessions/long_edit/",
        "sample.py --task nvs",
        "a long-edit session",
        turn("long_edit"),
        r"session \S*sessions/long_edit is a 'long_edit' session, not 'nvs'",
    ),
    Case(
        "sessions/other_config/",
        "sample.py",
        "made with another retrieval FOV",
        turn("other_config"),
        r"session \S*sessions/other_config was made with another configuration",
    ),
    Case(
        "sessions/broken_json/",
        "sample.py",
        "session.json cut short",
        turn("broken_json"),
        r"session \S*sessions/broken_json: session\.json is not valid JSON",
    ),
    Case(
        "sessions/busy/",
        "sample.py",
        "another process has the session open (two processes)",
        turn("busy"),
        r"memory bank \S*sessions/busy/bank is open for writing by another process \(pid \d+",
        lock="sessions/busy/bank",
    ),
    Case(
        "sessions/flipped_bit/",
        "sample.py",
        "a stored latent with one flipped bit",
        turn("flipped_bit"),
        r"entry 000000 array 'latents' \(\S*latents\.npy\) fails its checksum",
    ),
    Case(
        "sessions/disk_full/",
        "sample.py",
        "the disk fills up while the turn is stored (RLIMIT_FSIZE 8 KiB, under its contact sheet)",
        turn("disk_full"),
        r"turn_002\.png.*File too large|File too large.*turn_002\.png",
        file_size_limit=8 << 10,
    ),
    Case(
        "sessions/not_a_session/",
        "sample.py",
        "a folder holding other files",
        sample(
            "--session", "{root}/sessions/not_a_session", "--video", "{root}/videos/good.mp4", "--camera", "pan_left"
        ),
        r"not_a_session is not empty and holds no session",
    ),
    Case(
        "sessions/interrupted/ (Ctrl-C)",
        "sample.py",
        "Ctrl-C while a turn is denoised",
        (*turn("interrupted"), "--config.sample.sampling.steps=1000"),
        r"^error: interrupted \(Ctrl-C\)$",
        interrupt=r"denoising",
        exit_code=130,
    ),
    Case(
        "unwritable/session",
        "sample.py",
        "a session folder that cannot be created",
        sample("--session", "{root}/unwritable/session", "--video", "{root}/videos/good.mp4", "--camera", "pan_left"),
        UNWRITABLE,
    ),
    # Configs.
    Case(
        "weights_missing/ (no checksums)",
        "sample.py",
        "a parameter's folder deleted in a directory written before weights carried checksums",
        with_video("videos/good.mp4", "--config.sample.weights={root}/weights_missing"),
        r"weights_missing/params: the parameter index or a parameter's files are missing or damaged "
        r"\(no files for \['dit/head/proj/kernel'\]\)",
    ),
    Case(
        "weights_deleted/",
        "sample.py",
        "a parameter's folder deleted",
        with_video("videos/good.mp4", "--config.sample.weights={root}/weights_deleted"),
        r"weights_deleted: files are missing: parameter dit/head/proj/kernel \(params/dit\.head\.proj\.kernel/",
    ),
    Case(
        "weights_unlisted/",
        "sample.py",
        "a parameter folder from another conversion left in the directory, not in its checksums",
        with_video("videos/good.mp4", "--config.sample.weights={root}/weights_unlisted"),
        r"weights_unlisted: files not in checksums\.json: parameter dit/old/kernel \(params/dit\.old\.kernel/\.zarray, "
        r"params/dit\.old\.kernel/0\.0\)",
    ),
    Case(
        "weights_truncated/",
        "sample.py",
        "a parameter file cut short",
        with_video("videos/good.mp4", "--config.sample.weights={root}/weights_truncated"),
        r"weights_truncated: parameter dit/head/proj/kernel \(params/dit\.head\.proj\.kernel/0\.0\) fails its "
        r"checksum",
    ),
    Case(
        "weights_random_floats/",
        "sample.py",
        "a parameter file overwritten with finite random floats of the same size",
        with_video("videos/good.mp4", "--config.sample.weights={root}/weights_random_floats"),
        r"weights_random_floats: parameter dit/blocks/ffn/fc1/kernel \(params/dit\.blocks\.ffn\.fc1\.kernel/0\.0\.0\) "
        r"fails its checksum",
    ),
    Case(
        "weights_random_bytes/",
        "sample.py",
        "a parameter file overwritten with random bytes of the same size",
        with_video("videos/good.mp4", "--config.sample.weights={root}/weights_random_bytes"),
        r"weights_random_bytes: parameter dit/patch_embedding/kernel \(params/dit\.patch_embedding\.kernel/\S+\) "
        r"fails its checksum",
    ),
    Case(
        "weights_bad_checksums/",
        "sample.py",
        "checksums.json cut short",
        with_video("videos/good.mp4", "--config.sample.weights={root}/weights_bad_checksums"),
        r"weights_bad_checksums/checksums\.json is damaged",
    ),
    Case(
        "--config nope.py",
        "sample.py",
        "a config file that does not exist",
        ("sample.py", "--config", "{root}/nope.py", "--session", "{root}/out/session", "--camera", "pan_left"),
        r"^FATAL Flags parsing error: --config=\S*nope\.py: no such config file$",
    ),
    Case(
        "broken_config.py",
        "train.py",
        "a config file that is not valid Python",
        ("train.py", "--config", "{root}/broken_config.py", "--workdir", "{root}/out/train"),
        r"^FATAL Flags parsing error: --config=\S*broken_config\.py: not valid Python: .* \(line 3\)$",
    ),
    Case(
        "failing_config.py",
        "train.py",
        "a config file whose get_config() raises NameError",
        ("train.py", "--config", "{root}/failing_config.py", "--workdir", "{root}/out/train"),
        r"^FATAL Flags parsing error: --config=\S*failing_config\.py: get_config\(\) failed: NameError: "
        r"name 'load_confg' is not defined$",
    ),
    Case(
        "--config.sample.video.frames=ten",
        "sample.py",
        "not an int",
        new_session("--camera", "pan_left", "--config.sample.video.frames=ten"),
        r"--config\.sample\.video\.frames=ten: invalid literal for int",
    ),
    Case(
        "--config.sample.sampling.foo=1",
        "sample.py",
        "a key the config does not have",
        new_session("--camera", "pan_left", "--config.sample.sampling.foo=1"),
        r"--config\.sample\.sampling\.foo=1: the config has no key 'foo'",
    ),
    Case(
        "--config.sample.sampling.sampler=ddim",
        "sample.py",
        "an unknown sampler",
        with_video("videos/good.mp4", "--config.sample.sampling.sampler=ddim"),
        r"unknown sampler 'ddim'; choose one of",
    ),
    Case(
        "--config.sample.video.frames=10",
        "sample.py",
        "not 4k + 1 frames",
        with_video("videos/good.mp4", "--config.sample.video.frames=10"),
        r"sample\.video\.frames=10: not of the form 4k \+ 1",
    ),
    Case(
        "--config.sample.sampling.steps=0",
        "sample.py",
        "no sampler steps",
        with_video("videos/good.mp4", "--config.sample.sampling.steps=0"),
        r"sample\.sampling\.steps=0: sampler steps must be 1 to 1000",
    ),
    Case(
        "--config.sample.sampling.steps=100000",
        "sample.py",
        "absurdly many sampler steps",
        with_video("videos/good.mp4", "--config.sample.sampling.steps=100000"),
        r"sample\.sampling\.steps=100000: sampler steps must be 1 to 1000",
    ),
    Case(
        "--config.sample.sampling.keep_ratio=2.0",
        "sample.py",
        "token merging that would grow the memory",
        with_video("videos/good.mp4", "--config.sample.sampling.keep_ratio=2.0"),
        r"sample\.sampling\.keep_ratio=2\.0: merging keeps a share of tokens in \(0, 1\]",
    ),
    Case(
        "--config.sample.sampling.shift=nan",
        "sample.py",
        "a NaN timestep shift",
        with_video("videos/good.mp4", "--config.sample.sampling.shift=nan"),
        r"sample\.sampling\.shift=nan: the timestep shift must be a positive number",
    ),
    Case(
        "--config.sample.video.fps=0",
        "sample.py",
        "a frame rate of 0",
        with_video("videos/good.mp4", "--config.sample.video.fps=0"),
        r"sample\.video\.fps=0: the frame rate of the written videos must be positive",
    ),
    Case(
        "--config.sample.video.height=0",
        "sample.py",
        "a video height of 0",
        with_video("videos/good.mp4", "--config.sample.video.height=0"),
        r"sample\.video\.height=0: a video's height in pixels must be positive",
    ),
    Case(
        "--config.model.merge.keep_ratio=2.0",
        "train.py",
        "token merging that would grow the memory",
        train("--config.model.merge.keep_ratio=2.0"),
        r"model\.merge\.keep_ratio=2\.0: a merged frame keeps a share in \(0, 1\]",
    ),
    Case(
        "--config.memory_sampling.merge_prob=1.5",
        "train.py",
        "a probability above 1",
        train("--config.memory_sampling.merge_prob=1.5"),
        r"memory_sampling\.merge_prob=1\.5: a probability or share is in \[0, 1\]",
    ),
    Case(
        "config.py:sampling_type",
        "sample.py",
        "sample.sampling.steps = 'ten' in the config file",
        sample(
            "--session",
            "{root}/out/session",
            "--video",
            "{root}/videos/good.mp4",
            "--camera",
            "pan_left",
            config=":sampling_type",
        ),
        r"sample\.sampling config key 'steps' must be int, got 'ten'",
    ),
    Case(
        "config.py:dit_typo",
        "train.py",
        "model.dit.dimm, a DiT config typo",
        train(config=":dit_typo"),
        r"unknown DiT config keys \['dimm'\]",
    ),
    Case(
        "--config.steps=ten",
        "train.py",
        "not an int",
        train("--config.steps=ten"),
        r"--config\.steps=ten: invalid literal for int",
    ),
    Case(
        "--config.optimizer.lrr=0.1",
        "train.py",
        "a key the config does not have",
        train("--config.optimizer.lrr=0.1"),
        r"--config\.optimizer\.lrr=0\.1: the config has no key 'lrr'",
    ),
    Case(
        "data/latents (missing)",
        "train.py",
        "the latent dataset was never made",
        train(),
        r"no latent dataset '\S+' in \S*data/latents: run .*encode_latents",
    ),
    Case(
        "out/train (--export, no checkpoint)",
        "train.py --export",
        "a workdir without checkpoints",
        train("--export"),
        r"^error: no checkpoint in \S*out/train/checkpoints: not a training run's workdir$",
    ),
    Case(
        "unwritable/train",
        "train.py",
        "a workdir that cannot be created",
        ("train.py", "--config", "{root}/config.py", "--workdir", "{root}/unwritable/train"),
        UNWRITABLE,
    ),
    Case(
        "--config.steps=0",
        "train.py",
        "no training steps (it would export untrained weights)",
        train("--config.steps=0"),
        r"^error: steps=0: must be an integer >= 1$",
    ),
    Case(
        "--config.batch_size=0",
        "train.py",
        "an empty batch",
        train("--config.batch_size=0"),
        r"^error: batch_size=0: must be an integer >= 1$",
    ),
    Case(
        "--config.optimizer.lr=nan",
        "train.py",
        "a NaN learning rate",
        train("--config.optimizer.lr=nan"),
        r"^error: optimizer\.lr=nan: must be a learning rate > 0$",
    ),
    Case(
        "--config.seed=-1",
        "train.py",
        "a negative seed",
        train("--config.seed=-1"),
        r"^error: seed=-1: must be an integer in 0\.\.4294967295$",
    ),
    Case(
        "--config.mesh_devices=4096",
        "train.py",
        "more devices than the machine has",
        train("--config.mesh_devices=4096"),
        r"^error: mesh_devices=4096: this machine has \d+ device\(s\)$",
    ),
    Case(
        "--workdir videos/notes.mp4",
        "train.py",
        "a workdir that is a file",
        ("train.py", "--config", "{root}/config.py", "--workdir", "{root}/videos/notes.mp4"),
        r"Not a directory: '\S*videos/notes\.mp4'",
    ),
    Case(
        "config.py:scene_typo",
        "encode_latents",
        "data.source.scene.heigth",
        encode(config=":scene_typo"),
        r"unknown SceneConfig config keys \['heigth'\]",
    ),
    Case(
        "--config.data.source.builder=nope",
        "encode_latents",
        "an unknown source dataset",
        encode("--config.data.source.builder=nope"),
        r"unknown source dataset 'nope'; choose one of",
    ),
    Case(
        "--config.data.source.num_train=0",
        "encode_latents",
        "a dataset without training scenes",
        encode("--config.data.source.num_train=0"),
        r"^error: data\.source\.num_train=0: must be an integer >= 1$",
    ),
    Case(
        "--config.data.latents_dir=videos/notes.mp4/latents",
        "encode_latents",
        "a latents folder under a file (refused before the source dataset is generated)",
        encode("--config.data.latents_dir={root}/videos/notes.mp4/latents"),
        r"Not a directory: '\S*videos/notes\.mp4/latents'",
    ),
    # Converter checkpoints: tiny random models saved, then damaged.
    Case(
        "checkpoints/dit_missing/",
        "convert_weights.wan_dit",
        "proj_out.bias deleted",
        convert("wan_dit", "checkpoints/dit_missing"),
        r"1 model parameters not filled: head/proj/bias",
    ),
    Case(
        "checkpoints/dit_typo/",
        "convert_weights.wan_dit",
        "config.json says num_layerz",
        convert("wan_dit", "checkpoints/dit_typo"),
        r"dit_typo/config\.json: config\.json lacks 'num_layers'",
    ),
    Case(
        "checkpoints/dit_truncated.safetensors",
        "convert_weights.wan_dit",
        "cut 10 bytes short",
        convert("wan_dit", "checkpoints/dit_truncated.safetensors"),
        r"dit_truncated\.safetensors: .*outside",
    ),
    Case(
        "checkpoints/empty.safetensors",
        "convert_weights.wan_dit",
        "zero-length file",
        convert("wan_dit", "checkpoints/empty.safetensors"),
        r"empty\.safetensors: empty file",
    ),
    Case(
        "checkpoints/dit/ (no camera layers)",
        "convert_weights.recammaster",
        "a plain Wan DiT, not ReCamMaster",
        convert("recammaster", "checkpoints/dit"),
        r"model parameters not filled: .*camera/cam_encoder/kernel",
    ),
    Case(
        "checkpoints/lucy_missing_shard/",
        "convert_weights.lucy_edit",
        "the index names a deleted shard",
        convert("lucy_edit", "checkpoints/lucy_missing_shard"),
        r"index\.json: shard diffusion_pytorch_model-00002-of-00002\.safetensors named in the index is missing",
    ),
    Case(
        "checkpoints/vae_extra/",
        "convert_weights.wan_vae",
        "an extra tensor",
        convert("wan_vae", "checkpoints/vae_extra"),
        r"^error: 1 checkpoint tensors not used: encoder\.down_blocks\.0\.lora\.weight$",
    ),
    Case(
        "checkpoints/umt5_misshaped/",
        "convert_weights.umt5",
        "wo.weight of shape (48, 79)",
        convert("umt5", "checkpoints/umt5_misshaped"),
        r"; 1 shape or dtype mismatches: encoder\.block\.0\.layer\.1\.DenseReluDense\.wo\.weight -> "
        r"blocks/ffn/fc2/kernel: \(79, 48\) but the model needs \(80, 48\)$",
    ),
    Case(
        "checkpoints/dinov2_int/",
        "convert_weights.dinov2",
        "layernorm.weight stored as int64",
        convert("dinov2", "checkpoints/dinov2_int"),
        r"; 1 shape or dtype mismatches: layernorm\.weight -> layernorm/scale: dtype int64 but the model "
        r"needs float32$",
    ),
    Case(
        "converted/dit (--overwrite, disk full)",
        "convert_weights.wan_dit",
        "the disk fills up (RLIMIT_FSIZE 20 KB)",
        convert("wan_dit", "checkpoints/dit", "{root}/converted/dit", "--overwrite"),
        r"File too large",
        file_size_limit=20_000,
    ),
    Case(
        "converted/dit (no --overwrite)",
        "convert_weights.wan_dit",
        "an output folder that exists",
        convert("wan_dit", "checkpoints/dit", "{root}/converted/dit"),
        r"^error: \S*converted/dit exists; pass --overwrite to replace it$",
    ),
    Case(
        "checkpoints/dit/ -> checkpoints/dit (--overwrite)",
        "convert_weights.wan_dit",
        "the output folder is the checkpoint being read (it would be replaced)",
        convert("wan_dit", "checkpoints/dit", "{root}/checkpoints/dit", "--overwrite"),
        r"^error: OUT \S*checkpoints/dit is SRC or holds it; write the weights to another folder$",
    ),
    Case(
        "videos/mixed_sizes/ (as a checkpoint)",
        "convert_weights.wan_dit",
        "a folder without any checkpoint file",
        convert("wan_dit", "videos/mixed_sizes"),
        r"^error: \S*videos/mixed_sizes: no checkpoint found; looked for \*\.safetensors\.index\.json",
    ),
    Case(
        "unwritable/weights",
        "convert_weights.wan_dit",
        "an output folder that cannot be created",
        convert("wan_dit", "checkpoints/dit", "{root}/unwritable/weights"),
        UNWRITABLE,
    ),
    # Dataset folders, through the TFDS builders' `prepare`.
    Case(
        "datasets/multicam/",
        "prepare(MulticamVideo)",
        "a camera video of zero bytes",
        prepare(
            "MulticamVideo", "multicam_video", "height=16, width=24, num_frames=5, cameras=(1, 2)", "datasets/multicam"
        ),
        r"scene \S*/scene1: \S*cam02\.mp4: the file is empty \(0 bytes\)",
        leaves=TFDS_CONFIG,
    ),
    Case(
        "datasets/pairs/",
        "prepare(LongEditPairs)",
        "edited.mp4 has fewer frames than source.mp4",
        prepare("LongEditPairs", "long_edit_pairs", "height=16, width=24, segment_frames=5", "datasets/pairs"),
        r"pair \S*/pair1: source\.mp4 has 13 frames but edited\.mp4 has 9",
        leaves=TFDS_CONFIG,
    ),
    # Flags that only mean something with another, or for the other task: refused by name, not ignored.
    Case(
        "--compile_mesh without --compile_topology",
        "sample.py",
        "a --compile_topology option alone (it would be ignored)",
        with_video("videos/good.mp4", "--compile_mesh", "data=1"),
        r"^error: --compile_mesh: only with --compile_topology \(the TPU slice to compile for\)$",
    ),
    Case(
        "--compile_topology with --session, --video",
        "sample.py (recammaster_nvs.py:tiny)",
        "sampling flags for a run that only compiles",
        backbone("nvs", "--video", "{root}/videos/good.mp4", "--compile_topology", "v5p-8"),
        r"^error: --session, --video: not used with --compile_topology, which only compiles a sampling step",
    ),
    Case(
        "--noprepare_next_turn with --task long_edit",
        "sample.py --task long_edit (lucy_edit_long.py:tiny)",
        "an NVS-only flag for long editing",
        backbone("long_edit", "--video", "{root}/videos/good.mp4", "--noprepare_next_turn"),
        r"^error: --prepare_next_turn: for --task nvs; long_edit edits the whole --video with --prompt$",
    ),
    Case(
        "--prepare_next_turn with MV2V_CACHE_DIR=off",
        "sample.py",
        "preparing a program for the next turn with no cache to keep it",
        with_video("videos/good.mp4", "--prepare_next_turn"),
        r"^error: --prepare_next_turn: the compilation cache is off \(MV2V_CACHE_DIR=off\), so no later process",
        env=(("MV2V_CACHE_DIR", "off"),),
    ),
    Case(
        "--config.sample.long_edit.overlap=2 with --task nvs",
        "sample.py",
        "a long-edit setting on an NVS turn",
        with_video("videos/good.mp4", "--config.sample.long_edit.overlap=2"),
        r"^error: --config\.sample\.long_edit\.overlap: only --task long_edit reads it; this is --task nvs$",
    ),
    Case(
        "--config.sample.retrieval.hfov_degrees=50.0 with --task long_edit",
        "sample.py --task long_edit",
        "an NVS setting on a long edit",
        sample(
            "--session",
            "{root}/out/session",
            "--video",
            "{root}/videos/good.mp4",
            "--config.sample.retrieval.hfov_degrees=50.0",
            task="long_edit",
        ),
        r"^error: --config\.sample\.retrieval\.hfov_degrees: only --task nvs reads it; this is --task long_edit$",
    ),
    Case(
        "--compile_mesh data=x",
        "sample.py --compile_topology",
        "a mesh that is not axis=size pairs (named before libtpu loads)",
        ("sample.py", "--config", "{root}/config.py", "--compile_topology", "v5p-8", "--compile_mesh", "data=x"),
        r"^error: --compile_mesh data=x: mesh 'data=x': expected axis=size pairs such as data=2,sequence=4$",
    ),
    Case(
        "--camera_axes opengl with a preset",
        "sample.py",
        "a camera file option for a preset trajectory (it would be ignored)",
        with_video("videos/good.mp4", "--camera_axes", "opengl"),
        r"^error: pan_left is a preset trajectory: camera_axes='opengl' only apply to camera files$",
    ),
    Case(
        "cameras/far_trajectory.json + --camera_axes opengl",
        "sample.py",
        "axes for a trajectory file, which fixes its own (it would be ignored)",
        with_camera("cameras/far_trajectory.json", "--camera_axes", "opengl"),
        r"far_trajectory\.json: this trajectory file fixes its own convention; a convention and axes "
        r"\(--camera_convention, --camera_axes\) apply to plain arrays",
    ),
    Case(
        "--noexport_ema without --export",
        "train.py",
        "an --export option for a training run",
        train("--noexport_ema"),
        r"^error: --export_ema: only with --export",
    ),
    Case(
        "--compile_topology with --workdir",
        "train.py",
        "a workdir for a run that only compiles",
        ("train.py", "--config", "{root}/config.py", "--compile_topology", "v5p-8", "--workdir", "{root}/out/train"),
        r"^error: --workdir: not used with --compile_topology, which only compiles the train step",
    ),
    Case(
        "--head-dim 64 with a config.json",
        "convert_weights.wan_dit",
        "a head width the checkpoint's config.json overrides",
        convert("wan_dit", "checkpoints/dit", "{root}/out/weights", "--head-dim", "64"),
        r"^error: --head-dim 64: \S*checkpoints/dit/config\.json gives the architecture; --head-dim is only for a "
        r"checkpoint without config\.json$",
    ),
    Case(
        "--seed=-1 (convert_weights.random)",
        "convert_weights.random",
        "a negative seed (numpy's words otherwise)",
        random_weights("--seed=-1"),
        r"^FATAL Flags parsing error: flag --seed=-1: -1 is not a non-negative integer$",
    ),
    Case(
        "--scenes 0 (eval.consistency)",
        "python -m mv2v_jax.eval.consistency",
        "an evaluation over no scenes",
        evaluate("consistency", "--scenes", "0", "--out", "{root}/out/eval"),
        r"^error: argument --scenes: '0' is not an integer >= 1 \(--help shows the usage\)$",
    ),
    # Text that is not valid Unicode: refused before anything loads, naming the flag or the file.
    Case(
        "--prompt of Latin-1 bytes",
        "sample.py (recammaster_nvs.py:tiny)",
        "a prompt whose bytes are not UTF-8 (Python sees a lone surrogate)",
        backbone("nvs", "--video", "{root}/videos/good.mp4", "--camera", "pan_left", "--prompt", "caf\udce9 au lait"),
        r"^error: --prompt: not valid UTF-8 text \(the byte 0xe9 at character 3\); give it as UTF-8$",
    ),
    Case(
        "turns/surrogate.json",
        "sample.py --turns",
        'a prompt holding the JSON escape "\\ud800", no character',
        with_turns("surrogate.json"),
        r"surrogate\.json: turn 1 'prompt': not valid UTF-8 text \(a lone surrogate U\+D800 at character 4\)",
    ),
    Case(
        "sessions/long_edit/ + --prompt of a 0xff byte",
        "sample.py --task long_edit",
        "a long edit's next run with a prompt that is not UTF-8",
        sample(
            "--session",
            "{root}/sessions/long_edit",
            "--video",
            "{root}/videos/good.mp4",
            "--prompt",
            "\udcff",
            task="long_edit",
        ),
        r"^error: --prompt: not valid UTF-8 text \(the byte 0xff at character 0\); give it as UTF-8$",
    ),
    Case(
        "datasets/pairs_latin1/",
        "prepare(LongEditPairs)",
        "prompt.txt saved as Latin-1",
        prepare("LongEditPairs", "long_edit_pairs", "height=16, width=24, segment_frames=5", "datasets/pairs_latin1"),
        r"pair \S*/pair1: prompt\.txt is not UTF-8 text \(invalid continuation byte at byte 23\): save it as UTF-8",
        leaves=TFDS_CONFIG,
    ),
    # Over-long prompts: a warning says where umT5 cuts them (then the command fails on its video).
    Case(
        "--prompt of 700 tokens",
        "sample.py (recammaster_nvs.py:tiny)",
        "a prompt longer than the text encoder's 512 tokens, then a video too short",
        backbone("nvs", "--video", "{root}/videos/short.mp4", "--camera", "pan_left", "--prompt", LONG_PROMPT),
        r"short\.mp4: the video is too short: it has 5 frames, but 9 frames",
        warns=r"^warning: --prompt: 701 tokens, more than the text encoder's 512: cut at 511 tokens",
    ),
    Case(
        "turns/long_prompt.json",
        "sample.py --turns (recammaster_nvs.py:tiny)",
        "a turn's prompt of 700 tokens, then a video too short",
        backbone("nvs", "--video", "{root}/videos/short.mp4", "--turns", "{root}/turns/long_prompt.json"),
        r"short\.mp4: the video is too short",
        warns=r"^warning: \S*long_prompt\.json: turn 2 'prompt': 701 tokens, more than the text encoder's 512",
    ),
    Case(
        "--prompt of 700 tokens (long_edit)",
        "sample.py --task long_edit (lucy_edit_long.py:tiny)",
        "an edit prompt longer than the text encoder's 512 tokens, then a video too short",
        backbone("long_edit", "--video", "{root}/videos/short.mp4", "--prompt", LONG_PROMPT),
        r"short\.mp4: the video has 5 frames, fewer than one segment of 9",
        warns=r"^warning: --prompt: 701 tokens, more than the text encoder's 512: cut at 511 tokens",
    ),
    # Every path a command writes and every input it reads is checked before it writes anything.
    Case(
        "unwritable/tokenizer (convert_weights.random's last output)",
        "convert_weights.random",
        "the tokenizer folder, written after the models, cannot be made",
        random_weights("--config.sample.text.tokenizer={root}/unwritable/tokenizer"),
        UNWRITABLE,
    ),
    Case(
        "unwritable/cache (the prompt cache)",
        "sample.py (recammaster_nvs.py:tiny)",
        "a prompt cache folder that cannot be made",
        backbone(
            "nvs",
            "--video",
            "{root}/videos/good.mp4",
            "--camera",
            "pan_left",
            "--config.sample.text.cache={root}/unwritable/cache",
        ),
        UNWRITABLE,
    ),
    Case(
        "unwritable/eval (eval.consistency --out)",
        "python -m mv2v_jax.eval.consistency",
        "an output folder that cannot be made, refused before the first scene",
        evaluate("consistency", "--config", "{root}/config.py", "--scenes", "1", "--out", "{root}/unwritable/eval"),
        UNWRITABLE,
    ),
    Case(
        "videos/notes.mp4/demo (eval.demo --out)",
        "python -m mv2v_jax.eval.demo",
        "an output folder under a file, refused before either demo runs",
        evaluate("demo", "--out", "{root}/videos/notes.mp4/demo"),
        r"^error: \[Errno 20\] Not a directory: '\S*notes\.mp4/demo/run-\d+-\d+'$",
    ),
    Case(
        "data/damaged_latents/",
        "train.py",
        "a latent dataset file cut at 60% (a new workdir must not appear)",
        train(config=":damaged_latents"),
        r"^error: \S*damaged_latents/\S+/latent_scenes-train\.array_record-00000-of-00001 \(record 0 of 2\): "
        r"damaged, cannot be read",
    ),
    # A training run resumed with a config that no longer fits its checkpoint: refused in our words.
    Case(
        "runs/nvs/ (--export, model.dit.dim changed)",
        "train.py --export",
        "a checkpoint of a 32-wide model exported with dim=48",
        (
            "train.py",
            "--config",
            "{root}/config.py",
            "--workdir",
            "{root}/runs/nvs",
            "--export",
            "--config.model.dit.dim=48",
        ),
        r"^error: checkpoint step 1 in \S*runs/nvs/checkpoints does not fit this config: \S+ is \(\d+(, \d+)*\) "
        r"there but \(\d+(, \d+)*\) here \(and \d+ more arrays\): model\.dit\.dim \(now 48\) changed since it was "
        r"saved; resume with the config the run was started with",
    ),
    Case(
        "runs/nvs/ (model.dit.num_layers changed)",
        "train.py",
        "a 3-layer run resumed with 4 layers",
        (
            "train.py",
            "--config",
            "{root}/config.py:good_latents",
            "--workdir",
            "{root}/runs/nvs",
            "--config.model.dit.num_layers=4",
        ),
        r"^error: checkpoint step 1 in \S*runs/nvs/checkpoints does not fit this config: \S+ is \(3, [\d, ]+\) "
        r"there but \(4, [\d, ]+\) here .*: model\.dit\.num_layers \(now 4\) changed since it was saved",
    ),
    # Messages that are true: where the weights come from, what libtpu did, no "unexpected" for bad input.
    Case(
        "backbones/nope_vae (a missing VAE)",
        "sample.py (recammaster_nvs.py:tiny)",
        "a VAE weights folder that does not exist",
        backbone(
            "nvs",
            "--video",
            "{root}/videos/good.mp4",
            "--camera",
            "pan_left",
            "--config.sample.codec.weights={root}/backbones/nope_vae",
        ),
        r"^error: VAE weights not found at '\S*nope_vae': convert them with `python -m convert_weights\.wan_vae`, or "
        r"write random ones of the config's architecture with `python -m convert_weights\.random --config \.\.\.`",
    ),
    Case(
        "--config nope.py (eval.consistency)",
        "python -m mv2v_jax.eval.consistency",
        "a config file that does not exist",
        evaluate("consistency", "--config", "{root}/nope.py", "--out", "{root}/out/eval"),
        r"^error: config file \S*nope\.py not found$",
    ),
    Case(
        "weights_truncated/ (eval.denoising --weights)",
        "python -m mv2v_jax.eval.denoising",
        "damaged weights for an evaluation",
        evaluate("denoising", "--config", "{root}/config.py", "--weights", "{root}/weights_truncated"),
        r"^error: \S*weights_truncated: parameter dit/head/proj/kernel \(params/dit\.head\.proj\.kernel/0\.0\) fails "
        r"its checksum",
    ),
    Case(
        "--compile_topology v5p:3x3x5",
        "sample.py --compile_topology",
        "a TPU layout libtpu refuses (installed or not, the message says which)",
        ("sample.py", "--config", "{root}/config.py", "--compile_topology", "v5p:3x3x5"),
        r"^error: cannot describe TPU topology v5p:3x3x5 \((libtpu \S+ refused it|libtpu is not installed: install "
        r"the tpu extra)",
    ),
)


CONFIG = '''"""The corpus experiment: configs/tiny_nvs.py with the corpus's tiny model, video size, data and folders."""

from mv2v_jax.config import load_config

ROOT = {root!r}


def get_config(arg: str = ""):
    config = load_config("tiny_nvs.py")
    config.sample.weights = f"{{ROOT}}/weights"
    config.sample.video.update(frames={frames}, height={height}, width={width})
    config.sample.sampling.steps = 2
    config.sample.retrieval.slots = 1
    config.sample.long_edit.segment_frames = {frames}
    config.data.source.update(data_dir=f"{{ROOT}}/data/tfds", num_train=2, num_validation=1)
    config.data.latents_dir = f"{{ROOT}}/data/latents"  # missing: the latent datasets are in the variants below
    config.model.dit.update({tiny_dit})
    config.mesh_devices = 1
    if arg in ("good_latents", "damaged_latents"):
        config.data.latents_dir = f"{{ROOT}}/data/{{arg}}"
    elif arg == "dit_typo":
        config.model.dit.dimm = 32
    elif arg == "scene_typo":
        config.data.source.scene.heigth = 32
    elif arg == "sampling_type":
        config.sample.sampling = dict(config.sample.sampling.to_dict(), steps="ten")  # a section written anew
    elif arg == "other_fov":
        config.sample.retrieval.hfov_degrees = 90.0
    return config
'''


def write_config(root: Path) -> None:
    text = CONFIG.format(root=str(root), frames=FRAMES, height=HEIGHT, width=WIDTH, tiny_dit=TINY_DIT)
    (root / "config.py").write_text(text)
    (root / "broken_config.py").write_text("import ml_collections\n\ndef get_config(:\n    return None\n")
    (root / "failing_config.py").write_text("def get_config():\n    return load_confg('tiny_nvs.py')\n")


def write_videos(root: Path) -> None:
    import av
    from PIL import Image

    from mv2v_jax.data.synthetic import PRESETS, generate_scene
    from mv2v_jax.io.video import write_video

    videos = root / "videos"
    frames = generate_scene(3, PRESETS["tiny"])["video"][0]  # [9, 32, 48, 3]
    write_video(videos / "good.mp4", frames, 8, lossless=True)
    write_video(videos / "short.mp4", frames[:5], 8, lossless=True)
    write_video(videos / "other.mp4", frames[::-1], 8, lossless=True)  # the same frames, backwards
    (videos / "empty.mp4").write_bytes(b"")
    data = write_video(videos / "whole.mp4", frames, 8).read_bytes()  # x264, index first
    (videos / "whole.mp4").unlink()
    (videos / "truncated.mp4").write_bytes(data[: len(data) * 6 // 10])
    payload = data.index(b"mdat") + 4  # the header and index stay valid, every frame's data is noise
    noise = np.random.default_rng(0).integers(0, 256, len(data) - payload, dtype=np.uint8).tobytes()
    (videos / "garbled.mp4").write_bytes(data[:payload] + noise)
    (videos / "notes.mp4").write_text("these are meeting notes, not a video\n" * 20)
    Image.fromarray(frames[0]).save(videos / "still.png")
    with av.open(str(videos / "sound.wav"), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        samples = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        samples.sample_rate = 8000
        container.mux(stream.encode(samples))
        container.mux(stream.encode())
    for folder, damage in (("mixed_sizes", 4), ("broken_frame", 2)):
        (videos / folder).mkdir()
        for i, frame in enumerate(frames):
            image = Image.fromarray(frame[:, :40] if folder == "mixed_sizes" and i == damage else frame)
            image.save(videos / folder / f"{i}.png")
    broken = videos / "broken_frame" / "2.png"
    broken.write_bytes(broken.read_bytes()[:60])
    (videos / "bomb_frame").mkdir()
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(videos / "bomb_frame" / f"{i}.png")
    (videos / "bomb_frame" / "0.png").write_bytes(png_claiming(20000, 20000))


def png_claiming(width: int, height: int) -> bytes:
    """A small, valid PNG file whose header says it is `width` x `height` RGB pixels."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\0" * (1 + 3 * width))  # one row; the rest is missing
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def write_cameras(root: Path) -> None:
    from mv2v_jax.geometry import invert_pose, to_4x4
    from mv2v_jax.io.cameras import Trajectory, write_cameras
    from mv2v_jax.pipelines.presets import preset_trajectory

    cameras = root / "cameras"
    cameras.mkdir()
    w2c = preset_trajectory("pan_left", FRAMES)  # [9, 3, 4]
    np.save(cameras / "plain.npy", w2c)
    np.save(cameras / "wrong_shape.npy", w2c[:, :, :3])
    nan = w2c.copy()
    nan[4, 1, 2] = np.nan
    (cameras / "nan.json").write_text(json.dumps(nan.tolist()))  # json writes NaN, as numpy users do
    write_cameras(cameras / "inf_trajectory.json", Trajectory(w2c))
    document = json.loads((cameras / "inf_trajectory.json").read_text())
    document["w2c"][2][0][3] = float("inf")
    (cameras / "inf_trajectory.json").write_text(json.dumps(document))
    scaled = invert_pose(w2c)
    scaled[:, :, :3] *= 1.1
    np.save(cameras / "not_rotation.npy", scaled)
    mirrored = w2c.copy()
    mirrored[:, 0, :] *= -1
    np.save(cameras / "reflection.npy", mirrored)
    bottom = to_4x4(w2c)
    bottom[:, 3] = [0, 0, 1, 1]
    np.save(cameras / "bottom_row.npy", bottom)
    np.save(cameras / "five_frames.npy", w2c[:5])
    text = json.dumps(w2c.tolist())
    (cameras / "truncated.json").write_text(text[: len(text) // 2])
    rows = "[1 0 0 0] [0 1 0 0] [0 0 1 0] [{} 0 150 1] "
    recammaster = {f"frame{i}": {f"cam{c:02d}": rows.format(10 * i) for c in (1, 2)} for i in range(FRAMES)}
    (cameras / "camera_extrinsics.json").write_text(json.dumps(recammaster))
    (cameras / "turns_broken.json").write_text('[{"camera": "pan_left"},')
    (cameras / "turns_latin1.json").write_bytes('[{"camera": "pan_left", "prompt": "café"}]'.encode("latin-1"))
    far = w2c.copy()
    far[3, 0, 3] = 1e200
    (cameras / "far.json").write_text(json.dumps(far.tolist()))
    write_cameras(cameras / "far_trajectory.json", Trajectory(w2c))
    document = json.loads((cameras / "far_trajectory.json").read_text())
    document["w2c"][7][2][3] = document["w2c"][8][2][3] = 1e30
    (cameras / "far_trajectory.json").write_text(json.dumps(document))
    far_away = {f"frame{i}": {"cam01": rows.format(1e12)} for i in range(FRAMES)}
    (cameras / "far_recammaster.json").write_text(json.dumps(far_away))


def write_turns(root: Path) -> None:
    """Turns files (sample.py --turns), each with one fault; camera files beside them."""
    turns = root / "turns"
    turns.mkdir()
    shutil.copy(root / "cameras" / "nan.json", turns / "nan.json")
    documents = {
        "good.json": [{"camera": "pan_left"}],
        "misspelt_prompt.json": [{"camera": "pan_left", "promt": "a room"}],
        "misspelt_seed.json": [{"camera": "pan_left"}, {"camera": "pan_right", "sed": 3}],
        "camera_number.json": [{"camera": 5}],
        "seed_string.json": [{"camera": "pan_left", "seed": "7"}],
        "seed_huge.json": [{"camera": "pan_left", "seed": 2**80}],
        "seed_negative.json": [{"camera": "pan_left", "seed": -3}],
        "seed_float.json": [{"camera": "pan_left", "seed": 1.5}],
        "empty.json": [],
        "object.json": {"camera": "pan_left"},
        "no_camera.json": [{"prompt": "a room"}],
        "prompt_list.json": [{"camera": "pan_left", "prompt": ["a", "room"]}],
        "bad_convention.json": [{"camera": "nan.json", "camera_convention": "world"}],
        "missing_camera_file.json": [{"camera": "pan_left"}, {"camera": "orbit.json"}],
        "second_nan.json": [{"camera": "pan_left"}, {"camera": "nan.json", "camera_convention": "w2c"}],
    }
    for name, document in documents.items():
        (turns / name).write_text(json.dumps(document))
    (turns / "surrogate.json").write_text('[{"camera": "pan_left", "prompt": "cafe\\ud800"}]')  # the escape, as typed
    long_prompt = [{"camera": "pan_left"}, {"camera": "pan_right", "prompt": LONG_PROMPT}]
    (turns / "long_prompt.json").write_text(json.dumps(long_prompt))


def write_weights(root: Path) -> None:
    from flax import nnx

    from mv2v_jax.config import load_config
    from mv2v_jax.memory.model import MemoryConfig, MemoryDiT
    from mv2v_jax.models.build import build_codec
    from mv2v_jax.train.loop import export_weights

    c = build_codec(load_config(f"{root}/config.py").sample.codec).channels
    config = MemoryConfig.from_config(dict(dit=TINY_DIT | dict(in_channels=c, out_channels=c), adapters=("camera",)))
    export_weights(nnx.state(MemoryDiT(config, rngs=nnx.Rngs(0))), config, root / "weights", {})
    kernel = Path("params") / "dit.head.proj.kernel"
    for name in ("weights_missing", "weights_deleted"):
        shutil.copytree(root / "weights", root / name)
        shutil.rmtree(root / name / kernel)
    (root / "weights_missing" / "checksums.json").unlink()  # as written before weights carried checksums
    shutil.copytree(root / "weights", root / "weights_unlisted")
    shutil.copytree(root / "weights_unlisted" / kernel, root / "weights_unlisted" / "params" / "dit.old.kernel")
    shutil.copytree(root / "weights", root / "weights_truncated")
    (chunk,) = (root / "weights_truncated" / kernel).glob("0.*")
    chunk.write_bytes(chunk.read_bytes()[:100])
    noise = np.random.default_rng(0)
    shutil.copytree(root / "weights", root / "weights_random_floats")
    chunk = root / "weights_random_floats" / "params" / "dit.blocks.ffn.fc1.kernel" / "0.0.0"  # layer 0 of a stack
    chunk.write_bytes(noise.standard_normal(chunk.stat().st_size // 4).astype("<f4").tobytes())
    shutil.copytree(root / "weights", root / "weights_random_bytes")
    (chunk,) = (root / "weights_random_bytes" / "params" / "dit.patch_embedding.kernel").glob("0.*")
    chunk.write_bytes(noise.integers(0, 256, chunk.stat().st_size, dtype=np.uint8).tobytes())
    shutil.copytree(root / "weights", root / "weights_bad_checksums")
    checksums = root / "weights_bad_checksums" / "checksums.json"
    checksums.write_text(checksums.read_text()[:50])


def write_sessions(root: Path) -> None:
    """Sessions as sample.py leaves them, made by the real classes with the corpus config, then edited."""
    from mv2v_jax.config import load_config
    from mv2v_jax.geometry import Intrinsics
    from mv2v_jax.io.video import read_video
    from mv2v_jax.models.build import build_codec
    from mv2v_jax.pipelines.build import session_config
    from mv2v_jax.pipelines.presets import preset_trajectory
    from mv2v_jax.pipelines.session import Session, SourceVideo, TurnFiles
    from mv2v_jax.retrieval.bank import MemoryEntry
    from mv2v_jax.retrieval.fov import fov_bitmask

    sessions = root / "sessions"
    sample = load_config(f"{root}/config.py").sample
    codec = build_codec(sample.codec)
    video = SourceVideo.from_clip(read_video(root / "videos" / "good.mp4", FRAMES, (HEIGHT, WIDTH)), "good.mp4")
    source = np.asarray(codec.encode(video.frames))
    cameras = preset_trajectory("pan_left", FRAMES)[::4]
    intrinsics = Intrinsics.from_hfov(sample.retrieval.hfov_degrees, HEIGHT, WIDTH)
    fov = np.asarray(fov_bitmask(cameras, intrinsics, radius=sample.retrieval.fov_radius))

    def session(name: str, task: str = "nvs", config=sample) -> Session:
        """A session with one turn (the session appears with its first turn), stored as sample.py does."""
        made = Session.open(sessions / name, task=task, config=session_config(config, task), source=video)
        if task == "nvs":
            made.save_source(source)
            entry = MemoryEntry(latents=source + 0.5, turn=1, cameras=cameras, fov=fov)
        else:
            entry = MemoryEntry(latents=np.concatenate([source, source], -1), turn=1, embedding=np.ones(4))
        files = TurnFiles(video=video.frames, fps=8, sheet=[video.frames], labels=["turn 1"])
        made.commit_turn(entry, files, {"turn": 1})
        return made

    for name in ("version", "broken_json", "busy", "disk_full", "interrupted", "other_video"):
        session(name).close()
    session("long_edit", "long_edit").close()
    session("other_config", config=load_config(f"{root}/config.py:other_fov").sample).close()
    session("flipped_bit").close()
    latents = sessions / "flipped_bit" / "bank" / "entries" / "000000" / "latents.npy"
    data = bytearray(latents.read_bytes())
    data[-5] ^= 0x10
    latents.write_bytes(bytes(data))
    manifest = sessions / "version" / "bank" / "manifest.json"
    manifest.write_text(json.dumps(json.loads(manifest.read_text()) | {"version": 2}))
    meta = sessions / "broken_json" / "session.json"
    meta.write_text(meta.read_text()[:20])
    (sessions / "not_a_session").mkdir()
    (sessions / "not_a_session" / "notes.txt").write_text("my notes, not a session\n")


def write_checkpoints(root: Path) -> None:
    """Tiny random diffusers / transformers checkpoints (tests/torch_reference.py), saved, then damaged."""
    sys.path.insert(0, str(REPO / "tests"))
    import safetensors.torch
    import torch
    from torch_reference import randomize, tiny_wan_dit
    from transformers import Dinov2Config, Dinov2Model, UMT5Config, UMT5EncoderModel
    from vae_reference import tiny_wan_vae

    from convert_weights.wan_dit import convert_dit

    checkpoints = root / "checkpoints"

    def folder(name: str, state: dict, config: dict, file: str = "diffusion_pytorch_model.safetensors") -> Path:
        (checkpoints / name).mkdir(parents=True)
        (checkpoints / name / "config.json").write_text(json.dumps(config))
        safetensors.torch.save_file({k: v.clone() for k, v in state.items()}, checkpoints / name / file)
        return checkpoints / name

    dit = tiny_wan_dit("1.3b")
    state, config = dict(dit.state_dict()), dict(dit.config)
    good = folder("dit", state, config)
    convert_dit(good, root / "converted" / "dit")  # what a later --overwrite must not lose
    folder("dit_missing", {k: v for k, v in state.items() if k != "proj_out.bias"}, config)
    typo = dict(config)
    typo["num_layerz"] = typo.pop("num_layers")
    folder("dit_typo", state, typo)
    data = (good / "diffusion_pytorch_model.safetensors").read_bytes()
    (checkpoints / "dit_truncated.safetensors").write_bytes(data[:-10])
    (checkpoints / "empty.safetensors").write_bytes(b"")

    lucy = tiny_wan_dit("ti2v-5b")
    shards = folder("lucy_missing_shard", {}, dict(lucy.config), file="unused.safetensors")
    (shards / "unused.safetensors").unlink()
    names = sorted(lucy.state_dict())
    weight_map = {}
    for i, part in enumerate((names[: len(names) // 2], names[len(names) // 2 :]), start=1):
        file = f"diffusion_pytorch_model-0000{i}-of-00002.safetensors"
        safetensors.torch.save_file({k: lucy.state_dict()[k].contiguous() for k in part}, shards / file)
        weight_map |= dict.fromkeys(part, file)
    (shards / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (shards / "diffusion_pytorch_model-00002-of-00002.safetensors").unlink()

    vae = tiny_wan_vae("wan2.1")
    folder(
        "vae_extra", dict(vae.state_dict()) | {"encoder.down_blocks.0.lora.weight": torch.zeros(2, 2)}, dict(vae.config)
    )

    torch.manual_seed(0)

    def saved_then_changed(name: str, model, change) -> None:
        """`save_pretrained` (transformers' checkpoint names), then one tensor changed in the file."""
        model.save_pretrained(checkpoints / name)
        file = checkpoints / name / "model.safetensors"
        state = safetensors.torch.load_file(file)
        change(state)
        safetensors.torch.save_file(state, file)

    torch.manual_seed(0)
    umt5_config = UMT5Config(vocab_size=180, d_model=48, d_kv=16, d_ff=80, num_heads=4, num_layers=2, dropout_rate=0)
    saved_then_changed(
        "umt5_misshaped",
        randomize(UMT5EncoderModel(umt5_config), 0),
        lambda state: state.update({"encoder.block.0.layer.1.DenseReluDense.wo.weight": torch.zeros(48, 79)}),
    )
    dinov2_config = Dinov2Config(
        hidden_size=48, num_hidden_layers=2, num_attention_heads=4, image_size=70, patch_size=14
    )
    saved_then_changed(
        "dinov2_int",
        randomize(Dinov2Model(dinov2_config), 0),
        lambda state: state.update({"layernorm.weight": torch.ones(48, dtype=torch.int64)}),
    )


def write_datasets(root: Path) -> None:
    """Dataset folders in the published layouts (tests/test_dataset_builders.py), each with one fault."""
    from mv2v_jax.io.video import write_video

    def video(path: Path, count: int) -> None:
        levels = np.linspace(20, 200, count).astype(np.uint8)
        write_video(path, np.broadcast_to(levels[:, None, None, None], (count, 40, 40, 3)), 15, lossless=True)

    scene = root / "datasets" / "multicam" / "train" / "f24_aperture5" / "scene1"
    (scene / "videos").mkdir(parents=True)
    (scene / "cameras").mkdir()
    video(scene / "videos" / "cam01.mp4", 9)
    (scene / "videos" / "cam02.mp4").write_bytes(b"")
    rows = "[1 0 0 0] [0 1 0 0] [0 0 1 0] [{} 0 150 1] "
    document = {f"frame{i}": {f"cam{c:02d}": rows.format(100 * i) for c in (1, 2)} for i in range(9)}
    (scene / "cameras" / "camera_extrinsics.json").write_text(json.dumps(document))
    pair = root / "datasets" / "pairs" / "train" / "pair1"
    pair.mkdir(parents=True)
    video(pair / "source.mp4", 13)
    video(pair / "edited.mp4", 9)
    (pair / "prompt.txt").write_text("make it snowy\n")
    latin1 = root / "datasets" / "pairs_latin1" / "train" / "pair1"
    shutil.copytree(pair, latin1)
    (latin1 / "prompt.txt").write_bytes("make it look like a café\n".encode("latin-1"))


def write_backbones(root: Path) -> None:
    """Random weights of both real backbones' `:tiny` configs (convert_weights.random) in `backbones/`, which
    they share (the same umT5 and tokenizer)."""
    from convert_weights.random import plan
    from mv2v_jax.config import load_config

    writers = {}
    for spec in BACKBONES.values():
        config = load_config(str(REPO / spec))
        config.weights_dir = str(root / "backbones")
        writers |= plan(config, 0, spec)
    for write in writers.values():
        write(False)


def write_runs(root: Path) -> None:
    """The corpus config's latent dataset (`data/good_latents`, via `:good_latents`), a copy with its train file cut at
    60% (`data/damaged_latents`), and a training run's workdir with one checkpoint (`runs/nvs`)."""
    from mv2v_jax.config import dataclass_from_config, load_config
    from mv2v_jax.data.encode_latents import latent_records, open_latents
    from mv2v_jax.data.loader import training_dataset
    from mv2v_jax.data.memory_sampling import MemorySampling
    from mv2v_jax.parallel.mesh import use_mesh
    from mv2v_jax.tasks import get_task
    from mv2v_jax.train.checkpoint import Checkpointer
    from mv2v_jax.train.loop import initial_state, training_mesh
    from mv2v_jax.train.optimizer import make_optimizer, trainable_filter

    config = load_config(f"{root}/config.py:good_latents")
    open_latents(config, build=True)
    shutil.copytree(root / "data" / "good_latents", root / "data" / "damaged_latents")
    (train,) = (root / "data" / "damaged_latents").rglob("*-train.array_record-*")
    train.write_bytes(train.read_bytes()[: train.stat().st_size * 6 // 10])
    mesh = training_mesh(config)
    with use_mesh(mesh, config.mesh_rules):
        trainable = trainable_filter(list(config.trainable))
        _, _, state = initial_state(config, mesh, make_optimizer(dict(config.optimizer)), trainable)
        sampling = dataclass_from_config(MemorySampling, config.memory_sampling, "memory_sampling")
        records = latent_records(config)["train"]
        iterator = iter(training_dataset(records, get_task("nvs").example, sampling, batch_size=1, seed=0))
        checkpointer = Checkpointer(root / "runs" / "nvs" / "checkpoints")
        checkpointer.save(1, state, iterator)
        checkpointer.close()


def write_unwritable(root: Path) -> None:
    """`unwritable`: a read-only folder, or where chmod does not stop this user (root), a regular file."""
    folder = root / "unwritable"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        (folder / "probe").touch()
    except PermissionError:
        return
    (folder / "probe").unlink()
    folder.chmod(0o755)
    folder.rmdir()
    folder.write_text("a file where a folder would go\n")


def make_corpus(root: str | os.PathLike) -> tuple[Case, ...]:
    """Writes every input of `CASES` under `root` (which must not exist yet) and returns `CASES`."""
    root = Path(root).absolute()
    root.mkdir(parents=True)
    write_config(root)
    write_videos(root)
    write_cameras(root)
    write_turns(root)
    write_weights(root)
    write_sessions(root)
    write_checkpoints(root)
    write_datasets(root)
    write_backbones(root)
    write_runs(root)
    write_unwritable(root)
    return CASES


def table(cases: tuple[Case, ...] = CASES) -> str:
    """The case table in Markdown: input, tool, problem, expected message."""
    lines = ["| # | input | tool | problem | expected message (regex) |", "|---|---|---|---|---|"]
    for i, case in enumerate(cases, 1):
        expect = case.expect.replace("|", "\\|")
        lines.append(f"| {i} | `{case.input}` | {case.tool} | {case.problem} | `{expect}` |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    make_corpus(sys.argv[1])
    print(table())
