"""Ctrl-C at random moments of whole sessions and training runs, each continued afterwards.

    python bench/interrupts.py [--interrupts 60] [--seed 0] [--jobs 2] [--work DIR] [--no-write]

Three chains of processes, each on one folder: `sample.py --task long_edit` sessions (configs/
tiny_long_edit.py and its shipped weights, a 5-segment video), `sample.py --task nvs` sessions (configs/
tiny_nvs.py, 3 turns each) and `train.py` runs (configs/tiny_nvs.py shrunk to a micro model on 6 scenes'
latents, checkpoints every 5 of 40 steps). Every process gets one real SIGINT, as Ctrl-C in a terminal
sends, at a random moment (seeded) of its work: a driver starts a timer thread when the tool enters
`run_app`, so the moment is drawn over the tool's own code, uniform over the time an uninterrupted
process of that tool takes (measured first; those processes also fill the compilation cache, so that
every later one starts in seconds). Python's start-up and the tool's module imports come before that
and are not drawn.

A process is clean when it exited 130 with exactly one `error:` line, `error: interrupted (Ctrl-C)`, or,
reached after its work was done, exited 0 without one; and its stderr has no "Traceback", "Exception
ignored", "Fatal Python error" or "Segmentation fault". Anything else is a crash, and so is a Ctrl-C
sent well before the end of a run that still exited 0 (a Ctrl-C lost). After each interrupt the memory
bank must load with every checksum; the next process continues the same session or workdir, and the
chain ends with a process that finishes the work: then every segment or turn must have its record,
files and memory entry (no leftover temporaries), and the training run every step logged, its weights
written and its losses after each resume equal to an uninterrupted run's. A chain that reaches the
interrupt budget unfinished is finished by an uninterrupted process, checked the same way.

Writes the "Interrupts" section of BENCHMARKS.md (unless --no-write) and exits 1 when anything failed.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import json
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import mv2v_jax.cli_start  # noqa: F401  (first: Ctrl-C in the imports below is one line, exit 130)

sys.path.insert(0, str(Path(__file__).parents[1]))

import numpy as np

from bench.common import write_section
from mv2v_jax.cache import cache_root
from mv2v_jax.config import ArgumentParser, load_config, run_app

ROOT = Path(__file__).parents[1]
# argv: the delay (s; negative: no Ctrl-C), the marks file, then the tool's command line. The timer
# starts when the tool enters run_app; on a normal exit the marks say how long run_app ran and when the
# Ctrl-C was sent (an interrupted tool leaves by os._exit, with no marks).
DRIVER = """
import json, os, runpy, signal, sys, threading, time
# The Ctrl-C must raise KeyboardInterrupt even where this script was started with SIGINT ignored.
signal.signal(signal.SIGINT, signal.default_int_handler)
import mv2v_jax.config as config
delay, marks, sys.argv = float(sys.argv[1]), sys.argv[2], sys.argv[3:]
run_app, sent = config.run_app, []

def ctrl_c():
    sent.append(time.perf_counter())
    os.kill(os.getpid(), signal.SIGINT)

def timed(*args, **kwargs):
    start = time.perf_counter()
    timer = threading.Timer(delay, ctrl_c)
    timer.daemon = True
    if delay >= 0:
        timer.start()
    try:
        run_app(*args, **kwargs)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C still on its way lands nowhere now
        timer.cancel()
        end = time.perf_counter()
        with open(marks, "w") as f:
            json.dump({"main_s": end - start, "sent_before_end_s": end - sent[0] if sent else None}, f)

config.run_app = timed
sys.path.insert(0, os.path.dirname(os.path.abspath(sys.argv[0])))
runpy.run_path(sys.argv[0], run_name="__main__")
"""
CRASH_SIGNS = ("Traceback", "Exception ignored", "Fatal Python error", "Segmentation fault")
INTERRUPTED = "error: interrupted (Ctrl-C)"
LOST_AFTER_S = 1.0  # a Ctrl-C sent this long before a run ended that still exited 0 was lost
MAX_FAILURES = 10  # a tool stops after this many (a broken session would fail every process after it)
NVS_TURNS = 3
CAMERAS = ("pan_left", "orbit_right", "zoom_in")
TRAIN_STEPS = 40
TRAIN_FLAGS = (
    "--config.data.source.num_train=6",
    "--config.data.source.num_validation=2",
    "--config.model.dit.dim=32",
    "--config.model.dit.ffn_dim=64",
    "--config.model.dit.num_heads=2",
    "--config.model.dit.num_layers=2",
    "--config.batch_size=1",
    "--config.mesh_devices=1",  # a batch of 1 on one device, however many the machine has
    f"--config.steps={TRAIN_STEPS}",
    f"--config.optimizer.steps={TRAIN_STEPS}",
    "--config.optimizer.warmup_steps=2",
    "--config.log_every=1",
    "--config.checkpoint_every=5",
    "--config.eval_every=20",
    "--config.eval_sampling_steps=2",
    "--config.memory_sampling.merge_prob=0",  # one train step program (a variant each compiles)
    "--config.memory_sampling.uniform_tokenizer_prob=0",
)


@dataclasses.dataclass
class Run:
    delay: float | None  # when the Ctrl-C was sent after run_app began; None: not sent
    returncode: int
    stderr: str
    marks: dict | None  # the driver's, on a normal exit

    def problem(self) -> str | None:
        """What went wrong, or None for a clean interrupt or a clean finish."""
        errors = [line for line in self.stderr.splitlines() if line.startswith("error:")]
        if signs := [sign for sign in CRASH_SIGNS if sign in self.stderr]:
            return f"exit {self.returncode}, {' and '.join(signs)} on stderr"
        if self.returncode == 130 and self.delay is not None and errors == [INTERRUPTED]:
            return None
        if self.returncode == 0 and not errors:
            lost = self.marks and self.marks["sent_before_end_s"]
            return (
                f"Ctrl-C sent {lost:.1f} s before the end was lost (exit 0)" if lost and lost > LOST_AFTER_S else None
            )
        return f"exit {self.returncode}, error lines {errors}"


@dataclasses.dataclass
class Tally:
    interrupts: int = 0
    finished: int = 0  # processes that did their work to the end (the Ctrl-C came too late, or none)
    continued: int = 0  # processes that went on with a session or workdir an interrupted one left
    chains: int = 0  # sessions or training runs completed and checked
    failures: list[str] = dataclasses.field(default_factory=list)
    main_s: list[float] = dataclasses.field(default_factory=list)


def run(command: list[str], delay: float | None, marks: Path, cache: Path) -> Run:
    marks.unlink(missing_ok=True)
    environment = {**os.environ, "MV2V_CACHE_DIR": str(cache), "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", DRIVER, str(-1 if delay is None else delay), str(marks), *command],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=900,
    )
    stamps = json.loads(marks.read_text()) if marks.exists() else None
    return Run(delay, result.returncode, result.stderr, stamps)


class Tool:
    """One chain: `command` continues the work in `folder`; `complete` says it is done; `check` lists
    what is wrong with a finished (or interrupted) folder."""

    name = ""  # the command, in the table
    slug = ""  # its folders' names

    def __init__(self, work: Path):
        self.work = work

    def command(self, folder: Path) -> list[str]:
        raise NotImplementedError

    def complete(self, folder: Path) -> bool:
        raise NotImplementedError

    def check(self, folder: Path, finished: bool) -> list[str]:
        raise NotImplementedError


class Session(Tool):
    """sample.py sessions: what every check of a session shares."""

    def bank_problems(self, folder: Path) -> list[str]:
        from mv2v_jax.pipelines.session import BANK
        from mv2v_jax.retrieval.bank import BankError, MemoryBank

        if not (folder / BANK).exists():  # a new session appears with its first complete turn
            return []
        try:
            with MemoryBank.open(folder / BANK, readonly=True) as bank:
                for entry in bank.entries():
                    bank.load(entry.entry_id)  # every array against its checksum
        except (BankError, OSError, ValueError) as e:
            return [f"{folder.name}: memory bank: {e}"]
        return []

    def records(self, folder: Path) -> list[dict]:
        return [json.loads(p.read_text()) for p in sorted((folder / "turns").glob("turn_*.json"))]

    def check(self, folder: Path, finished: bool) -> list[str]:
        from mv2v_jax.io.atomic import TEMPORARY_PREFIX
        from mv2v_jax.pipelines.session import BANK, FILE_SUFFIXES
        from mv2v_jax.retrieval.bank import MemoryBank

        problems = self.bank_problems(folder)
        if not finished or problems:
            return problems
        with MemoryBank.open(folder / BANK, readonly=True) as bank:
            turns = [entry.turn for entry in bank.entries()]
        if turns != list(range(1, len(turns) + 1)):
            problems.append(f"{folder.name}: memory entries of turns {turns}")
        for turn in turns:
            missing = [s for s in FILE_SUFFIXES if not (folder / "turns" / f"turn_{turn:03d}{s}").is_file()]
            if missing:
                problems.append(f"{folder.name}: turn {turn} lacks its {missing} files")
        leftovers = [p.name for p in folder.parent.rglob(f"{TEMPORARY_PREFIX}*")]
        return problems + ([f"{folder.name}: temporaries left: {leftovers}"] if leftovers else [])


class LongEdit(Session):
    name, slug = "sample.py --task long_edit", "long_edit"

    def __init__(self, work: Path):
        super().__init__(work)
        from mv2v_jax.data.synthetic.long_video import LongVideoConfig, generate_long_edit
        from mv2v_jax.io.video import write_video

        config = load_config("configs/tiny_long_edit.py")
        video = generate_long_edit(0, LongVideoConfig.from_config(config.data.source.video))
        self.prompt = video["prompt"]
        fps = config.sample.video.fps
        write_video(work / "long.mp4", np.concatenate(list(video["source"])), fps, lossless=True)

    def command(self, folder: Path) -> list[str]:
        return [
            *("sample.py", "--config", "configs/tiny_long_edit.py", "--task", "long_edit"),
            *("--session", str(folder), "--video", str(self.work / "long.mp4"), "--prompt", self.prompt),
        ]

    def complete(self, folder: Path) -> bool:
        return (folder / "edited.mp4").is_file()

    def check(self, folder: Path, finished: bool) -> list[str]:
        problems = super().check(folder, finished)
        if finished and not problems:
            segments = json.loads((folder / "session.json").read_text())["segments"]
            if [r["segment"] for r in self.records(folder)] != list(range(len(segments))):
                problems.append(f"{folder.name}: segments {[r['segment'] for r in self.records(folder)]}")
        return problems


class NVS(Session):
    name, slug = "sample.py --task nvs", "nvs"

    def __init__(self, work: Path):
        super().__init__(work)
        from mv2v_jax.data.synthetic import SceneConfig, generate_scene
        from mv2v_jax.io.video import write_video

        config = load_config("configs/tiny_nvs.py")
        scene = generate_scene(0, SceneConfig.from_config(dict(config.data.source.scene)))
        write_video(work / "source.mp4", scene["video"][0], config.sample.video.fps, lossless=True)

    def command(self, folder: Path) -> list[str]:
        turn = len(self.records(folder))
        return [
            *("sample.py", "--config", "configs/tiny_nvs.py", "--task", "nvs", "--session", str(folder)),
            *("--video", str(self.work / "source.mp4"), "--camera", CAMERAS[turn % len(CAMERAS)], "--seed", str(turn)),
        ]

    def complete(self, folder: Path) -> bool:
        return len(self.records(folder)) >= NVS_TURNS


class Train(Tool):
    name, slug = "train.py", "train"

    def __init__(self, work: Path):
        super().__init__(work)
        self.data = (
            f"--config.data.source.data_dir={work / 'tfds'}",
            f"--config.data.latents_dir={work / 'latents'}",
        )
        self.reference: dict[int, float] = {}

    def prepare(self, cache: Path) -> None:
        command = ["-m", "mv2v_jax.data.encode_latents", "--config", "configs/tiny_nvs.py", *TRAIN_FLAGS, *self.data]
        result = subprocess.run(
            [sys.executable, *command],
            cwd=ROOT,
            env={**os.environ, "MV2V_CACHE_DIR": str(cache), "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
        )
        if result.returncode:
            raise SystemExit(f"encode_latents failed:\n{result.stderr[-3000:]}")

    def command(self, folder: Path) -> list[str]:
        return ["train.py", "--config", "configs/tiny_nvs.py", *TRAIN_FLAGS, *self.data, "--workdir", str(folder)]

    def complete(self, folder: Path) -> bool:
        return (folder / "weights" / "config.json").is_file()

    def losses(self, folder: Path) -> dict[int, float]:
        """The loss logged for each step, the last one where a resumed run logged a step again."""
        lines = (folder / "metrics.jsonl").read_text().splitlines() if (folder / "metrics.jsonl").exists() else []
        return {r["step"]: r["loss"] for r in map(json.loads, lines) if "loss" in r}

    def check(self, folder: Path, finished: bool) -> list[str]:
        if not finished:
            return []
        if not self.reference:  # the uninterrupted run every other is compared with
            self.reference = self.losses(folder)
        losses = self.losses(folder)
        if sorted(losses) != list(range(1, TRAIN_STEPS + 1)):
            return [f"{folder.name}: steps logged {sorted(losses)}"]
        differ = [s for s in losses if not math.isclose(losses[s], self.reference[s], rel_tol=1e-5, abs_tol=1e-6)]
        return [f"{folder.name}: losses of steps {differ} differ from an uninterrupted run's"] if differ else []


def chain(tool: Tool, interrupts: int, seed: int, cache: Path, log: Callable[[str], None]) -> Tally:
    """Calibrates `tool` with uninterrupted processes, then interrupts processes at random moments until
    `interrupts` Ctrl-Cs landed, each chain of processes continued to its end."""
    tally, rng = Tally(), random.Random(f"{seed}-{tool.name}")
    marks = tool.work / "marks.json"
    folders = (tool.work / f"{tool.slug}-{i:03d}" for i in range(10_000))

    def step(folder: Path, delay: float | None, after_interrupt: bool) -> Run:
        result = run(tool.command(folder), delay, marks, cache)
        problem = result.problem() or next(iter(tool.check(folder, finished=False)), None)
        if result.marks and result.returncode == 0:
            tally.main_s.append(result.marks["main_s"])
        tally.interrupts += result.returncode == 130
        tally.finished += result.returncode == 0
        tally.continued += after_interrupt
        if problem:
            stderr = tool.work / f"{folder.name}-failure-{len(tally.failures) + 1}.stderr"
            stderr.write_text(result.stderr)
            tally.failures.append(f"{folder.name} (Ctrl-C at {delay} s): {problem}; its stderr: {stderr}")
        log(f"{tool.name}: {folder.name} Ctrl-C at {delay} s -> exit {result.returncode} {problem or ''}")
        return result

    def finish(folder: Path) -> None:
        problems = tool.check(folder, finished=True)
        tally.failures += problems
        tally.chains += not problems

    # Uninterrupted first: a whole chain fills the compilation cache, so that each later process loads
    # its programs; then one warm process, whose time the Ctrl-C moments are drawn over (NVS: a turn;
    # the others: the whole work). It starts the first chain that gets Ctrl-Cs.
    warm_up = next(folders)
    while not tool.complete(warm_up) and not tally.failures:
        step(warm_up, None, False)
    if tally.failures:
        return tally
    finish(warm_up)
    folder = next(folders)
    timing = step(folder, None, False)
    if timing.marks is None:  # it failed
        return tally
    duration, interrupted = timing.marks["main_s"], False
    while tally.interrupts < interrupts and len(tally.failures) < MAX_FAILURES:
        if tool.complete(folder):
            finish(folder)
            folder, interrupted = next(folders), False
        interrupted = step(folder, rng.uniform(0, duration), interrupted).returncode == 130
    # The budget is spent: uninterrupted processes finish the last chain.
    while not tool.complete(folder) and len(tally.failures) < MAX_FAILURES:
        step(folder, None, interrupted)
        interrupted = False
    finish(folder)
    return tally


def main(argv: list[str]) -> int:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--interrupts", type=int, default=60, help="Ctrl-Cs in all, shared by the 3 tools")
    parser.add_argument("--seed", type=int, default=0, help="draws the moments")
    parser.add_argument("--jobs", type=int, default=2, help="tools run side by side")
    parser.add_argument("--work", help="folder for the sessions and runs (default: a temporary one)")
    parser.add_argument("--no-write", action="store_true", help="print the table, leave BENCHMARKS.md")
    args = parser.parse_args(argv)
    if args.interrupts < 3 or args.jobs < 1:
        parser.error("--interrupts must be >= 3 (one per tool at least) and --jobs >= 1")
    # Compiled programs outlive this run in the user's cache, so that a second run starts warm.
    cache = cache_root() or Path(tempfile.mkdtemp(prefix="mv2v-interrupts-cache-"))
    load, began = os.getloadavg()[0], time.perf_counter()
    if args.work:
        Path(args.work).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() if args.work is None else contextlib.nullcontext(args.work) as work:
        tools = [LongEdit, NVS, Train]
        folders = [Path(work) / tool.__name__.lower() for tool in tools]
        for folder in folders:
            folder.mkdir(parents=True, exist_ok=True)
        made = [tool(folder) for tool, folder in zip(tools, folders, strict=True)]
        made[-1].prepare(cache)
        shares = [args.interrupts // 3 + (i < args.interrupts % 3) for i in range(3)]
        with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
            tallies = list(pool.map(lambda t, n: chain(t, n, args.seed, cache, print), made, shares))
    minutes = (time.perf_counter() - began) / 60
    lines = [
        "| tool | Ctrl-Cs (exit 130) | crashes | processes that finished | runs continuing an interrupted one "
        "| sessions / runs completed and checked | uninterrupted process (s, median) |",
        "|---|---|---|---|---|---|---|",
    ]
    for tool, t in zip(made, tallies, strict=True):
        lines.append(
            f"| `{tool.name}` | {t.interrupts} | {len(t.failures)} | {t.finished} | {t.continued} | {t.chains} "
            f"| {f'{statistics.median(t.main_s):.1f}' if t.main_s else '-'} |"
        )
    failures = [f for t in tallies for f in t.failures]
    body = (
        f"Ctrl-C (a real SIGINT) at random moments (seed {args.seed}) of `sample.py` long-edit and NVS sessions "
        "and `train.py` runs, each session or run continued by the next process until it completes "
        "(bench/interrupts.py says what is checked). A crash: an exit other than 130 with the one line "
        "`error: interrupted (Ctrl-C)` (or 0 when the Ctrl-C came after the work), a traceback, an ignored "
        "exception, a fatal Python error, a lost Ctrl-C, a memory bank that fails its checksums, or a session or "
        "run its continuation could not complete. "
        f"{sum(t.interrupts for t in tallies)} interrupts, {len(failures)} crashes, in {minutes:.1f} minutes "
        f"({args.jobs} tools at a time; load average {load:.1f} at the start).\n\n" + "\n".join(lines)
    )
    print(body)
    for failure in failures:
        print(f"\nFAILED: {failure}", file=sys.stderr)
    if not args.no_write:
        write_section("Interrupts", body)
    return 1 if failures else 0


if __name__ == "__main__":
    run_app(main, absl_flags=False)
