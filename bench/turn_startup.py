"""Turn start-up: how long a `sample.py` turn in a new process takes to sample and to write its mp4.

    python bench/turn_startup.py [--config configs/tiny_nvs.py] [--turns 3]

Runs turn 1 of a session, then turns 2, 3, ... each as its own `sample.py` process sharing one
compilation cache folder (`MV2V_CACHE_DIR`, empty at the start), as a user continuing a session does;
then a turn with caching off; then, in a second session with a cache folder of its own, a next turn
whose program no earlier process prepared (its first turn ran with `--noprepare_next_turn`). A turn
feeds its memories in the slots of one program per memory bucket (`sample.retrieval.buckets`), so a
next turn may run a program no earlier turn ran: each process prepares it (`--prepare_next_turn`, on by
default) once its own turn is written and announced. Each process reports, through a driver that wraps
the model loader and the sampling loop (sample.py itself runs unchanged): seconds from the model being
loaded to the first denoising step being done (encode, retrieval, compiling or loading the denoiser,
one step). Measured from outside: seconds from launching the process to sample.py announcing the
turn's mp4 on stdout (the file checked to be there then), and the process's whole wall time (preparing
the next turn included). Writes the "Turn start-up" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mv2v_jax.cli_start  # noqa: F401  (first: Ctrl-C in the imports below is one line, exit 130)

sys.path.insert(0, str(Path(__file__).parents[1]))

from bench.common import write_section
from mv2v_jax.config import ArgumentParser, int_at_least, load_config, run_app
from mv2v_jax.data.synthetic import SceneConfig, generate_scene
from mv2v_jax.io.video import write_video

ROOT = Path(__file__).parents[1]
# Runs sample.py as `python sample.py ...` would, timestamping the end of the model load and of the
# first denoising step (both patched in before sample.py imports them). argv: marks file, then sample.py's.
DRIVER = """
import json, runpy, sys, time
import jax
import mv2v_jax.diffusion.samplers as samplers
import mv2v_jax.memory.model as model

marks, (load, denoise) = {}, (model.load_memory_dit, samplers.denoise)

def timed_load(*args, **kwargs):
    loaded = load(*args, **kwargs)
    marks["loaded"] = time.perf_counter()
    return loaded

def timed_denoise(velocity, noise, sampler, *args, **kwargs):
    def first(x, t):
        v = velocity(x, t)
        if "first_step" not in marks:
            marks["first_step"] = (jax.block_until_ready(v), time.perf_counter())[1]
        return v
    return denoise(first, noise, sampler, *args, **kwargs)

model.load_memory_dit, samplers.denoise = timed_load, timed_denoise
out, sys.argv = sys.argv[1], sys.argv[2:]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
finally:
    open(out, "w").write(json.dumps(marks))
"""


def run_turn(
    work: Path, config: str, turn: int, cache: str, session: str = "session", prepare: bool = True
) -> dict[str, float]:
    marks = work / f"marks_{session}_{turn}.json"
    command = [sys.executable, "-c", DRIVER, str(marks), "sample.py", "--config", config, "--task", "nvs"]
    command += ["--session", str(work / session), "--camera", ("pan_left", "orbit_right", "zoom_in")[turn % 3]]
    command += ["--seed", str(turn)] + (["--video", str(work / "source.mp4")] if turn == 1 else [])
    command += [] if prepare else ["--noprepare_next_turn"]
    environment = {**os.environ, "MV2V_CACHE_DIR": cache, "PYTHONPATH": str(ROOT)}
    written = None
    with tempfile.TemporaryFile("w+") as errors:
        start = time.perf_counter()
        with subprocess.Popen(
            command, cwd=ROOT, env=environment, stdout=subprocess.PIPE, stderr=errors, text=True
        ) as process:
            for line in process.stdout:  # "turn k: ... -> <session>/turns/turn_00k.mp4", flushed once it is in place
                if written is None and line.rstrip().endswith(".mp4"):
                    written = time.perf_counter() - start
                    video = Path(line.rsplit(" -> ", 1)[1].strip())
                    if not video.is_file():
                        raise SystemExit(f"sample.py announced {video} before writing it")
        wall = time.perf_counter() - start
        if process.returncode or written is None:
            errors.seek(0)
            raise SystemExit(f"sample.py failed or announced no mp4:\n{errors.read()[-3000:]}")
    stamps = json.loads(marks.read_text())
    record = json.loads(sorted((work / session / "turns").glob("turn_*.json"))[-1].read_text())
    after_load = stamps["first_step"] - stamps["loaded"]
    return {"after_load": after_load, "compile": record["seconds"]["compile"], "written": written, "wall": wall}


def main(argv: list[str]) -> None:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/tiny_nvs.py")
    parser.add_argument("--turns", type=int_at_least(1), default=3)
    args = parser.parse_args(argv)
    config = load_config(args.config)
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        scene = generate_scene(0, SceneConfig.from_config(dict(config.data.source.scene)))
        write_video(work / "source.mp4", scene["video"][0], config.sample.video.fps, lossless=True)
        cache = str(work / "cache")
        rows = [("new session, empty cache", run_turn(work, args.config, 1, cache))]
        for turn in range(2, args.turns + 1):
            name = f"next turn, new process, cache from turn {turn - 1}"
            rows.append((name, run_turn(work, args.config, turn, cache)))
        rows.append(("next turn, new process, caching off", run_turn(work, args.config, args.turns + 1, "off")))
        unprepared = str(work / "cache_unprepared")
        run_turn(work, args.config, 1, unprepared, session="unprepared", prepare=False)
        name = "next turn, new process, its program not prepared (the previous process ran `--noprepare_next_turn`)"
        rows.append((name, run_turn(work, args.config, 2, unprepared, session="unprepared")))
    lines = [
        "| turn (each its own `sample.py` process) | model load -> first step done (s) "
        "| of which compile or cache load (s) | process start -> mp4 written (s) | process wall time (s) |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {name} | {r['after_load']:.1f} | {r['compile']:.1f} | {r['written']:.1f} | {r['wall']:.1f} |"
        for name, r in rows
    ]
    body = (
        f"`sample.py` turns of one session with {args.config}, each in a new process, as a user runs them. "
        "JAX's persistent compilation cache (on by default, `MV2V_CACHE_DIR`) lets a turn load the denoiser "
        "that an earlier process compiled; turn k feeds k - 1 memories (up to the budget) in the slots of a "
        "program per memory bucket, which may be one no earlier turn ran, so each process also compiles the "
        "next turn's program once its own turn is written and announced (`--prepare_next_turn`): that time "
        "is in its wall time, not in its mp4's nor in the next turn's start. The last row is turn 2 of a "
        "second session, in a cache of its own, whose first turn prepared nothing. Process start -> mp4 "
        "written: from launching the process to its line "
        "naming the mp4 on stdout (the file is there then), imports and model load included. Load average "
        f"at the start: {load:.1f} (other work shared the cores).\n\n" + "\n".join(lines)
    )
    print(body)
    write_section("Turn start-up", body)


if __name__ == "__main__":
    run_app(main, absl_flags=False)
