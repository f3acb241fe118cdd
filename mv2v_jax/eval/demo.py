"""`make demo`: five turns of novel view synthesis with memory on a held-out synthetic scene.

    python -m mv2v_jax.eval.demo --out outputs/demo

Makes a scene the model never saw, writes its camera-0 video as the source and five camera
trajectories of other cameras (each revisiting what earlier turns saw) as turn files, runs sample.py
on them with the shipped model (configs/tiny_nvs.py, checkpoints/tiny_nvs), then puts the turns next
to the ground truth in one contact sheet and measures them. Everything goes to a new run folder under
`--out`, printed at the end: source.mp4, cameras/, turns.json, session/turns/turn_00k.{mp4,png,json},
comparison.png, summary.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from mv2v_jax.config import load_config
from mv2v_jax.data.synthetic import SceneConfig, generate_scene
from mv2v_jax.eval.consistency import HELD_OUT_SEED, cross_turn_error, session_frame, turn_cameras
from mv2v_jax.eval.metrics import psnr
from mv2v_jax.io.cameras import Trajectory, write_cameras
from mv2v_jax.io.images import write_contact_sheet
from mv2v_jax.io.video import read_video, write_video

DEMO_SCENE = HELD_OUT_SEED + 500  # not among the evaluation's scenes either
ROOT = Path(__file__).parents[2]


def prepare(run: Path, config, turns: int) -> tuple[dict, list[int]]:
    scene = generate_scene(DEMO_SCENE, SceneConfig.from_config(dict(config.data.source.scene)))
    cams = turn_cameras(scene, turns)
    write_video(run / "source.mp4", scene["video"][0], config.sample.video.fps, lossless=True)
    specs = []
    for turn, cam in enumerate(cams, 1):
        trajectory = Trajectory(session_frame(scene["w2c"][cam], scene["w2c"][0]))
        path = write_cameras(run / "cameras" / f"turn_{turn}_camera_{cam}.json", trajectory)
        specs.append({"camera": str(path), "prompt": "", "seed": turn})
    (run / "turns.json").write_text(json.dumps(specs, indent=2))
    return scene, cams


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/tiny_nvs.py")
    parser.add_argument("--out", default="outputs/demo")
    parser.add_argument("--turns", type=int, default=5)
    parser.add_argument("--steps", type=int, default=None, help="sampler steps (default: the config's)")
    parser.add_argument("--weights", default=None, help="model weights (default: the config's, the shipped model)")
    args = parser.parse_args()
    config = load_config(args.config)
    if args.weights:
        config.sample.weights = args.weights
    run = Path(args.out) / time.strftime("run-%Y%m%d-%H%M%S")
    run.mkdir(parents=True)
    print("Memory-V2V demo: a held-out synthetic scene, five camera turns that revisit each other, with memory.")
    scene, cams = prepare(run, config, args.turns)
    command = [
        sys.executable,
        str(ROOT / "sample.py"),
        "--config",
        args.config,
        "--task",
        "nvs",
        "--session",
        str(run / "session"),
        "--video",
        str(run / "source.mp4"),
        "--turns",
        str(run / "turns.json"),
    ]
    if args.steps:
        command.append(f"--config.sample.sampling.steps={args.steps}")
    if args.weights:
        command.append(f"--config.sample.weights={args.weights}")
    result = subprocess.run(command, cwd=ROOT)
    if result.returncode:
        return result.returncode

    frames = len(scene["video"][0])
    outputs = [
        read_video(run / "session" / "turns" / f"turn_{t:03d}.mp4", frames, None).frames
        for t in range(1, len(cams) + 1)
    ]
    truth = [scene["video"][c] for c in cams]
    middle = frames // 2
    write_contact_sheet(
        run / "comparison.png",
        [np.stack([t[middle] for t in truth]), np.stack([o[middle] for o in outputs])],
        labels=[f"ground truth, turns 1-{len(cams)} (middle frame)", "Memory-V2V output, same turns"],
        frame_indices=list(range(len(cams))),
    )
    summary = {
        "scene_seed": DEMO_SCENE,
        "cameras": cams,
        "weights": config.sample.weights,
        "cross_turn_error": cross_turn_error(outputs, scene, cams),
        "ground_truth_cross_turn_error": cross_turn_error(truth, scene, cams),
        "psnr_per_turn": [psnr(o, t) for o, t in zip(outputs, truth, strict=True)],
    }
    (run / "summary.json").write_text(json.dumps(summary, indent=2))
    print(
        f"\nwrote {run}: source.mp4, session/turns/ (an mp4, a contact sheet and a JSON per turn), "
        f"comparison.png, summary.json"
    )
    floor = summary["ground_truth_cross_turn_error"]
    psnrs = [round(p, 1) for p in summary["psnr_per_turn"]]
    print(f"cross-turn error {summary['cross_turn_error']:.4f} (ground truth {floor:.4f}), PSNR per turn {psnrs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
