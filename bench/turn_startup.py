"""Turn start-up: how long a `sample.py` turn in a new process takes from model load to sampling.

    python bench/turn_startup.py [--config configs/tiny_nvs.py] [--turns 3]

Runs turn 1 of a session, then turns 2, 3, ... each as its own `sample.py` process sharing one
compilation cache folder (`MV2V_CACHE_DIR`, empty at the start), as a user continuing a session does;
then a turn with caching off, and a turn whose program no earlier process prepared (the caching-off
process could not leave it). A turn feeds as many memory slots as it has memories, so turn k runs a
program no earlier turn ran; each process prepares the next turn's program after its own turn
(`--prepare_next_turn`, on by default). Each process reports, through a driver that wraps the model
loader and the sampling loop (sample.py itself runs unchanged): seconds from the model being loaded to
the first denoising step being done (encode, retrieval, compiling or loading the denoiser, one step),
and the process's whole wall time (preparing the next turn included). Writes the "Turn start-up"
section of BENCHMARKS.md.
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


def run_turn(work: Path, config: str, turn: int, cache: str) -> dict[str, float]:
    marks = work / f"marks_{turn}.json"
    command = [sys.executable, "-c", DRIVER, str(marks), "sample.py", "--config", config, "--task", "nvs"]
    command += ["--session", str(work / "session"), "--camera", ("pan_left", "orbit_right", "zoom_in")[turn % 3]]
    command += ["--seed", str(turn)] + (["--video", str(work / "source.mp4")] if turn == 1 else [])
    environment = {**os.environ, "MV2V_CACHE_DIR": cache, "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode:
        raise SystemExit(f"sample.py failed:\n{result.stderr[-3000:]}")
    stamps = json.loads(marks.read_text())
    record = json.loads(sorted((work / "session" / "turns").glob("turn_*.json"))[-1].read_text())
    after_load = stamps["first_step"] - stamps["loaded"]
    return {"after_load": after_load, "compile": record["seconds"]["compile"], "wall": wall}


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
        name = "next turn, new process, its program not prepared (the previous process cached nothing)"
        rows.append((name, run_turn(work, args.config, args.turns + 2, cache)))
    lines = [
        "| turn (each its own `sample.py` process) | model load -> first step done (s) "
        "| of which compile or cache load (s) | process wall time (s) |",
        "|---|---|---|---|",
    ]
    lines += [f"| {name} | {r['after_load']:.1f} | {r['compile']:.1f} | {r['wall']:.1f} |" for name, r in rows]
    body = (
        f"`sample.py` turns of one session with {args.config}, each in a new process, as a user runs them. "
        "JAX's persistent compilation cache (on by default, `MV2V_CACHE_DIR`) lets a turn load the denoiser "
        "that an earlier process compiled; turn k feeds k - 1 memories (up to the budget), a program no "
        "earlier turn ran, so each process also compiles the next turn's program after its own turn "
        "(`--prepare_next_turn`): that time is in its wall time, not in the next turn's start. Load average "
        f"at the start: {load:.1f} (other work shared the cores).\n\n" + "\n".join(lines)
    )
    print(body)
    write_section("Turn start-up", body)


if __name__ == "__main__":
    run_app(main, absl_flags=False)
