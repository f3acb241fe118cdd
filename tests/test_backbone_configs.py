"""The real backbones' experiment configs: what they say (the paper's and the backbones' settings), that
`:tiny` is the same config at a small size, random weights of their architecture written where they look,
and both tasks run end to end through the real CLIs (sample.py, encode_latents, train.py, a killed and
resumed training run) on those weights."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from flax import nnx

from convert_weights.random import parameter_specs, random_tensor
from mv2v_jax.config import dataclass_from_config, load_config
from mv2v_jax.data.synthetic import LONG_PRESETS, SceneConfig, generate_long_edit, generate_scene
from mv2v_jax.io.video import read_video, write_video
from mv2v_jax.memory.model import MemoryConfig, MemoryDiT, load_memory_dit
from mv2v_jax.models.weights import flatten_paths
from mv2v_jax.pipelines.denoiser import SamplingConfig
from mv2v_jax.train.optimizer import trainable_filter

ROOT = Path(__file__).parents[1]
CONFIGS = {"nvs": "configs/recammaster_nvs.py", "long_edit": "configs/lucy_edit_long.py"}
# What `:tiny` may change: sizes (widths, resolution, segment length, batch), the weights it points at, the
# presets of the frozen encoders, the compute dtype (float32 on a CPU) and the (synthetic) training data.
TINY_MAY_CHANGE = re.compile(
    r"^(model\.dit\.(dim|ffn_dim|num_heads|num_layers|text_dim|freq_dim)|weights_dir|sample\.video\.(frames|height|"
    r"width)|sample\.(codec|text|embedder)\.preset|sample\.long_edit\.segment_frames|runtime\.dtype|batch_size|data\..*)$"
)


def flat(config) -> dict[str, object]:
    return {".".join(path): value for path, value in flatten_paths(config.to_dict()).items()}


@pytest.mark.parametrize("task", CONFIGS)
def test_tiny_is_the_same_experiment_at_a_small_size(task):
    full, tiny = flat(load_config(CONFIGS[task])), flat(load_config(f"{CONFIGS[task]}:tiny"))
    data = lambda keys: {k for k in keys if k.startswith("data.")}  # real datasets vs synthetic ones
    assert full.keys() - data(full) == tiny.keys() - data(tiny)
    changed = {
        k for k in full.keys() & tiny.keys() if full[k] != tiny[k] and not k.endswith(("weights", "tokenizer", "cache"))
    }
    assert changed and all(TINY_MAY_CHANGE.match(key) for key in changed), sorted(changed)
    assert full["step.task"] == tiny["step.task"] == task


def test_the_configs_hold_the_backbones_and_their_samplers():
    nvs, edit = load_config(CONFIGS["nvs"]), load_config(CONFIGS["long_edit"])
    recammaster, lucy = MemoryConfig.from_config(nvs.model), MemoryConfig.from_config(edit.model)
    dims = lambda c: (
        c.dit.dim,
        c.dit.ffn_dim,
        c.dit.num_heads,
        c.dit.num_layers,
        c.dit.in_channels,
        c.dit.out_channels,
    )
    assert dims(recammaster) == (1536, 8960, 12, 30, 16, 16) and recammaster.adapters == ("camera",)
    assert dims(lucy) == (3072, 14336, 24, 30, 96, 48) and lucy.adapters == ()  # TI2V-5B, 48 + 48 in
    for memory in (recammaster, lucy):
        assert memory.tokenizers.ranked == ((1, 4, 4),) * 3 and memory.tokenizers.rest == (1, 8, 8)
        assert memory.merge.block_indices(30) == (10, 20)
    euler = dataclass_from_config(SamplingConfig, nvs.sample.sampling, "sampling")
    assert (euler.sampler, euler.grid, euler.steps, euler.shift, euler.guidance) == ("euler", "diffsynth", 50, 5, 5)
    assert euler.negative_prompt.startswith("色调艳丽，过曝，静态")
    unipc = dataclass_from_config(SamplingConfig, edit.sample.sampling, "sampling")
    assert (unipc.sampler, unipc.steps, unipc.shift, unipc.guidance, unipc.negative_prompt) == ("unipc", 50, 5, 5, "")
    assert dict(nvs.sample.video) == dict(frames=81, height=480, width=832, fps=30)
    assert edit.sample.long_edit.segment_frames == 81 and edit.sample.embedder.preset == "base"
    assert (nvs.step.shift, nvs.step.loss_weighting, nvs.runtime.dtype) == (5.0, "recammaster", "bfloat16")


@pytest.mark.parametrize("task", CONFIGS)
def test_trainable_parameters_are_the_ones_the_config_says(task):
    config = load_config(CONFIGS[task])
    abstract = nnx.eval_shape(lambda: MemoryDiT(MemoryConfig.from_config(config.model), rngs=nnx.Rngs(0)))
    trains = trainable_filter(list(config.trainable))
    paths = {"/".join(map(str, p)): trains(p, v) for p, v in nnx.to_flat_state(nnx.state(abstract, nnx.Param))}
    memory = [p for p in paths if p.startswith(("tokenizers/", "mergers/"))]
    assert memory and all(paths[p] for p in memory)
    assert all(paths[p] for p in paths if p.startswith("dit/blocks/self_attn/"))
    assert all(paths[p] == (task == "nvs") for p in paths if p.startswith("camera/"))  # ReCamMaster's layers
    frozen = ("dit/blocks/cross_attn/", "dit/blocks/ffn/", "dit/patch_embedding/", "dit/head/", "dit/text_")
    assert not any(paths[p] for p in paths if p.startswith(frozen))


@pytest.mark.parametrize("task", CONFIGS)
def test_weights_paths_hang_off_weights_dir_and_the_readme_makes_them(task):
    config = load_config(CONFIGS[task])
    paths = [v for k, v in flat(config).items() if k.endswith(("weights", "tokenizer"))]
    readme = (ROOT / "README.md").read_text()
    for path in paths:
        assert path.startswith("weights/") and f" {path}" in readme, path  # a converter command's output
    config.weights_dir = "/elsewhere"  # what --config.weights_dir= does
    assert all(v.startswith("/elsewhere/") for k, v in flat(config).items() if k.endswith(("weights", "cache")))


@pytest.mark.parametrize("task", CONFIGS)
def test_random_weights_plan_every_folder_of_the_full_configs(task):
    from convert_weights.random import TOKENIZER_FILE, plan

    config = load_config(CONFIGS[task])
    folders = {Path(v) for k, v in flat(config).items() if k.endswith("weights")}
    want = folders | {Path(config.sample.text.tokenizer) / TOKENIZER_FILE}
    assert set(plan(config, seed=0, spec=CONFIGS[task])) == want  # and every full-size model config is valid


def clean_env(**extra) -> dict[str, str]:
    """The CLIs as a user runs them: one CPU device (not the suite's eight fake ones)."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    return env | {"PYTHONPATH": str(ROOT)} | extra


def cli(*args, env=None, timeout=900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env or clean_env(),
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Random weights of both tiny configs, written by the CLI where the configs look for them."""
    root = tmp_path_factory.mktemp("weights")
    for task, spec in CONFIGS.items():
        result = cli("-m", "convert_weights.random", "--config", f"{spec}:tiny", "--out", root / task)
        assert result.returncode == 0, result.stderr[-3000:]
    return root


def test_random_weights_are_the_configs_architecture(weights):
    from mv2v_jax.models.text.tokenizer import UMT5Tokenizer
    from mv2v_jax.models.text.umt5 import load_umt5
    from mv2v_jax.models.vision.dinov2 import load_dinov2
    from mv2v_jax.models.wan.vae import load_vae

    for task, spec in CONFIGS.items():
        config = load_config(f"{spec}:tiny")
        config.weights_dir = str(weights / task)
        model = load_memory_dit(config.sample.weights)
        want = MemoryConfig.from_config(config.model)
        assert (model.config.dit, model.config.adapters, model.config.tokenizers) == (
            want.dit,
            want.adapters,
            want.tokenizers,
        )
        assert Path(config.init_weights) == Path(config.sample.weights)
        params = flatten_paths(nnx.to_pure_dict(nnx.state(model)))
        assert all(np.asarray(v).std() > 0 for v in params.values())  # nothing zero or constant
        stacked = np.asarray(params[("dit", "blocks", "self_attn", "q", "kernel")])
        assert not np.allclose(stacked[0], stacked[1])  # each layer its own draw
        vae = load_vae(config.sample.codec.weights)
        assert vae.config.z_dim == (16 if task == "nvs" else 48)
        encoder = load_umt5(config.sample.text.weights)
        assert encoder.config.d_model == config.model.dit.text_dim
        tokenizer = UMT5Tokenizer(config.sample.text.tokenizer, text_len=16)
        ids, mask = tokenizer("Recolour every moving object.")
        assert ids.max() < encoder.config.vocab_size and ids[0, int(mask.sum()) - 1] == tokenizer.eos_id == 1
        if task == "long_edit":
            assert load_dinov2(config.sample.embedder.weights).config.hidden_size == 32
    # What was written is the documented draw of (seed, path, layer); another seed draws other weights.
    build = lambda: MemoryDiT(MemoryConfig.from_config(config.model), rngs=nnx.Rngs(0))
    path = ("dit", "blocks", "ffn", "fc1", "kernel")
    shape, _, stacked = parameter_specs(build)[path]
    assert stacked and shape[0] == config.model.dit.num_layers
    np.testing.assert_array_equal(params[path][1], random_tensor(path, shape[1:], 0, 1).astype(np.float32))
    assert not np.allclose(random_tensor(path, shape[1:], 1, 1), random_tensor(path, shape[1:], 0, 1))


def test_random_weights_refuse_to_replace_a_folder(weights):
    before = sorted(p.stat().st_mtime_ns for p in (weights / "nvs").rglob("*"))
    result = cli("-m", "convert_weights.random", "--config", f"{CONFIGS['nvs']}:tiny", "--out", weights / "nvs")
    assert result.returncode == 1 and "exist; pass --overwrite" in result.stderr
    assert sorted(p.stat().st_mtime_ns for p in (weights / "nvs").rglob("*")) == before


def records(session: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((session / "turns").glob("turn_*.json"))]


def sample(weights, task, *args) -> subprocess.CompletedProcess:
    spec = f"{CONFIGS[task]}:tiny"
    overrides = [f"--config.weights_dir={weights / task}", "--config.sample.sampling.steps=4"]
    return cli("sample.py", "--config", spec, *overrides, "--task", task, *args)


@pytest.mark.slow
def test_sample_nvs_two_turns(weights, tmp_path):
    scene = generate_scene(3, SceneConfig(height=64, width=96, num_frames=9, num_cameras=1))
    write_video(tmp_path / "room.mp4", scene["video"][0], 8, lossless=True)
    turns = tmp_path / "turns.json"
    turns.write_text(json.dumps([{"camera": "pan_left"}, {"camera": "pan_right", "prompt": "a room"}]))
    result = sample(weights, "nvs", "--session", tmp_path / "s", "--video", tmp_path / "room.mp4", "--turns", turns)
    assert result.returncode == 0, result.stderr[-3000:]
    first, second = records(tmp_path / "s")
    assert first["retrieved"] == [] and len(second["retrieved"]) == 1 and second["retrieved"][0]["score"] > 0
    # A program per memory count (pipelines.slots): turn 2 compiles the one with a memory slot.
    assert first["compilations"] == 1 and second["compilations"] == 2 and second["compiled_this_turn"]
    assert second["sampling"]["grid"] == "diffsynth" and second["sampling"]["sampler"] == "euler"
    # Classifier-free guidance with umT5 and Wan's negative prompt: 2 passes a step, computed or (the
    # config's step cache) reused.
    assert second["forwards"] + second["cached_forwards"] == 2 * 4 and second["cache"]["kind"] == "first_block"
    assert second["tokens"]["target"] == 3 * 4 * 6  # 3 latent frames of 8 x 12 (Wan2.1 VAE), 2 x 2 patches
    assert read_video(second["files"]["video"], 9, None).frames.shape == (9, 64, 96, 3)
    assert any((weights / "nvs" / "prompt_cache").rglob("*.bin"))  # prompts are cached


@pytest.mark.slow
def test_sample_long_edit_three_segments(weights, tmp_path):
    video = generate_long_edit(0, LONG_PRESETS["tiny"])
    write_video(tmp_path / "long.mp4", video["source"][:3].reshape(27, 64, 96, 3), 8, lossless=True)
    result = sample(
        weights, "long_edit", "--session", tmp_path / "s", "--video", tmp_path / "long.mp4", "--prompt", video["prompt"]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    made = records(tmp_path / "s")
    assert [r["segment"] for r in made] == [0, 1, 2] and [len(r["retrieved"]) for r in made] == [0, 1, 2]
    assert [r["compilations"] for r in made] == [1, 2, 3]  # a program per memory count
    assert made[2]["forwards"] + made[2]["cached_forwards"] == 2 * 4
    assert made[2]["tokens"]["target"] == 3 * 2 * 3  # 3 latent frames of 4 x 6 (Wan2.2 VAE), 2 x 2 patches
    assert read_video(tmp_path / "s" / "edited.mp4", 25, None).source_frames == 27


def data_overrides(weights, task, data: Path) -> list[str]:
    return [
        f"--config.weights_dir={weights / task}",
        f"--config.data.source.data_dir={data / 'tfds'}",
        f"--config.data.latents_dir={data / 'latents'}",
    ]


def encode(weights, task, data: Path, env) -> None:
    result = cli(
        "-m",
        "mv2v_jax.data.encode_latents",
        "--config",
        f"{CONFIGS[task]}:tiny",
        *data_overrides(weights, task, data),
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "latent dataset ready" in result.stdout


def train_command(weights, task, data: Path, workdir: Path, *extra) -> list[str]:
    return [
        "train.py",
        "--config",
        f"{CONFIGS[task]}:tiny",
        *data_overrides(weights, task, data),
        "--config.steps=3",
        "--config.batch_size=2",
        "--config.log_every=1",
        "--config.eval_sampling_steps=2",
        "--workdir",
        str(workdir),
        *extra,
    ]


def losses(workdir: Path) -> dict[int, float]:
    out = {}
    for line in (workdir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "loss" in record:
            out[record["step"]] = record["loss"]
    return out


def check_training(config_spec: str, init: Path, workdir: Path) -> None:
    """Three finite losses; the exported weights moved where the config trains and nowhere else."""
    curve = losses(workdir)
    assert sorted(curve) == [1, 2, 3] and np.isfinite(list(curve.values())).all()
    trains = trainable_filter(list(load_config(config_spec).trainable))
    before, after = (nnx.state(load_memory_dit(p), nnx.Param) for p in (init, workdir / "weights"))
    changed = {
        "/".join(map(str, path)): (trains(path, variable), bool((variable[...] != after_value[...]).any()))
        for (path, variable), (_, after_value) in zip(nnx.to_flat_state(before), nnx.to_flat_state(after), strict=True)
    }
    assert all(trained == moved for trained, moved in changed.values()), sorted(
        name for name, (trained, moved) in changed.items() if trained != moved
    )


@pytest.fixture(scope="module")
def compile_cache(tmp_path_factory):
    """The training processes compile the same steps: JAX's persistent cache shares them."""
    folder = tmp_path_factory.mktemp("jax_cache")
    return clean_env(
        JAX_COMPILATION_CACHE_DIR=str(folder),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
    )


@pytest.mark.slow
def test_encode_and_train_nvs_three_steps(weights, tmp_path, compile_cache):
    encode(weights, "nvs", tmp_path, compile_cache)
    one_variant = ["--config.memory_sampling.merge_prob=0", "--config.memory_sampling.uniform_tokenizer_prob=0"]
    result = cli(*train_command(weights, "nvs", tmp_path, tmp_path / "run", *one_variant), env=compile_cache)
    assert result.returncode == 0, result.stderr[-3000:]
    check_training(f"{CONFIGS['nvs']}:tiny", weights / "nvs" / "recammaster", tmp_path / "run")


@pytest.fixture(scope="module")
def long_edit_run(weights, tmp_path_factory, compile_cache):
    """Long-edit latents and an uninterrupted three-step run (the paper's memory sampling: a new step
    variant, so a new compilation, at every step)."""
    data = tmp_path_factory.mktemp("long_edit")
    encode(weights, "long_edit", data, compile_cache)
    result = cli(*train_command(weights, "long_edit", data, data / "reference"), env=compile_cache)
    assert result.returncode == 0, result.stderr[-3000:]
    return data


@pytest.mark.slow
def test_encode_and_train_long_edit_three_steps(weights, long_edit_run):
    check_training(f"{CONFIGS['long_edit']}:tiny", weights / "long_edit" / "lucy_edit", long_edit_run / "reference")


@pytest.mark.slow
def test_a_killed_training_run_resumes_to_the_same_losses(weights, long_edit_run, compile_cache):
    workdir = long_edit_run / "killed"
    command = train_command(weights, "long_edit", long_edit_run, workdir, "--config.checkpoint_every=1")
    # Without the shared cache every step compiles its variant: the kill lands while step 2 compiles.
    child = subprocess.Popen(
        [sys.executable, *command], cwd=ROOT, env=clean_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 600
    while not (workdir / "checkpoints" / "1").is_dir() and child.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert (workdir / "checkpoints" / "1").is_dir(), "no checkpoint appeared"
    assert not (workdir / "weights").exists(), "the run finished before it could be killed"
    resumed = cli(*command, env=compile_cache)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert re.search(r"resumed from step [12]\b", resumed.stdout)
    want, got = losses(long_edit_run / "reference"), losses(workdir)
    assert sorted(got) == [1, 2, 3]
    for step in (1, 2, 3):
        assert got[step] == pytest.approx(want[step], rel=1e-6), step
    assert (workdir / "weights" / "config.json").exists()


def test_sample_names_what_a_config_lacks_for_the_other_task(weights, tmp_path):
    for task, other in (("nvs", "long_edit"), ("long_edit", "nvs")):
        result = sample(weights, task, "--session", tmp_path / task, "--camera", "pan_left", "--task", other)
        assert result.returncode == 1 and f"--task {other} needs sample." in result.stderr
        assert f"a '{task}' experiment" in result.stderr and not (tmp_path / task).exists()
