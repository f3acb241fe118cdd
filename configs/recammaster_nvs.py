"""Memory-V2V novel view synthesis on ReCamMaster (Wan2.1-T2V-1.3B + camera layers): the paper's setting.

Weights, converted once into `weights_dir` (README, "The real backbones"; every path below is also its own
field, e.g. `--config.sample.codec.weights=...`):

    python -m convert_weights.recammaster step20000.ckpt weights/recammaster
    python -m convert_weights.wan_vae Wan2.1-T2V-1.3B/Wan2.1_VAE.pth weights/wan2.1_vae
    python -m convert_weights.umt5 Wan2.1-T2V-1.3B/models_t5_umt5-xxl-enc-bf16.pth weights/umt5
    cp -r Wan2.1-T2V-1.3B/google/umt5-xxl weights/umt5_tokenizer

Sampling, and fine-tuning as the paper does (MultiCamVideo from `data.source.manual_dir`):

    python sample.py --config configs/recammaster_nvs.py --task nvs --session outputs/room --video room.mp4 \
        --camera pan_left
    python -m mv2v_jax.data.encode_latents --config configs/recammaster_nvs.py   # once: videos -> latents
    python train.py --config configs/recammaster_nvs.py --workdir outputs/recammaster_nvs

`configs/recammaster_nvs.py:tiny` is the same experiment (the same code path) at small widths and a
64 x 96 resolution, trained on synthetic multi-camera scenes: for tests and CPUs, with random weights of
its architecture from `python -m convert_weights.random --config configs/recammaster_nvs.py:tiny`.

Cameras enter the model relative to the source video's first camera, the reference ReCamMaster's camera
encoder was trained with (memory.camera); memory videos' cameras are relative to the same frame.
Values the paper and ReCamMaster do not give are ours and say so.
"""

from pathlib import Path

import ml_collections
from ml_collections import config_dict

from mv2v_jax.config import load_config
from mv2v_jax.models.wan.dit import ARCH_FIELDS
from mv2v_jax.parallel.mesh import DEFAULT_RULES

CONFIGS = Path(__file__).parent
# Wan's default negative prompt (Wan2.1 shared_config.py), which ReCamMaster's inference passes.
WAN_NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，"
    "JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，"
    "手指融合，静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)
# `:tiny`: widths small enough for a CPU; channels, patch and every memory module as in the full model.
TINY_DIT = dict(dim=64, ffn_dim=128, num_heads=2, num_layers=4, text_dim=64, freq_dim=32)  # text_dim: tiny umT5
SIZES = {"": dict(frames=81, height=480, width=832), "tiny": dict(frames=9, height=64, width=96)}


def model_config(tiny: bool) -> dict:
    base = load_config(f"{CONFIGS / 'wan_dit.py'}:wan2.1-t2v-1.3b")  # configs/wan_dit.py
    dit = {k: v for k, v in base.items() if k in ARCH_FIELDS}
    return dict(
        dit=dit | (TINY_DIT if tiny else {}),
        adapters=("camera",),  # ReCamMaster's per-block camera encoder and projector (tasks.nvs)
        tokenizers=dict(ranked=((1, 4, 4),) * 3, rest=(1, 8, 8)),  # paper: top 3 at 1x4x4, the rest 1x8x8
        merge=dict(blocks=(10, 20), fraction=0.5, keep_ratio=0.5, kernel=3),  # paper: blocks 10, 20; bottom 50%
    )


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    if arg not in SIZES:
        raise ValueError(f"unknown recammaster_nvs variant {arg!r}; choose '' (the paper's) or 'tiny'")
    tiny = arg == "tiny"
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.weights_dir = "weights/tiny-recammaster" if tiny else "weights"
    weights = config.get_ref("weights_dir")
    config.model = model_config(tiny)
    config.init_weights = weights + "/recammaster"  # convert_weights.recammaster (fine-tuning starts here)
    config.sample = dict(
        weights=weights + "/recammaster",  # or a run's <workdir>/weights after training
        codec=dict(kind="wan_vae", weights=weights + "/wan2.1_vae", preset="tiny" if tiny else "wan2.1"),
        text=dict(
            kind="umt5",
            weights=weights + "/umt5",
            tokenizer=weights + "/umt5_tokenizer",
            cache=weights + "/prompt_cache",  # embeddings keyed by tokenizer, weights and prompt
            preset="tiny" if tiny else "umt5-xxl",
        ),
        video=SIZES[arg] | dict(fps=30),  # ReCamMaster: 81 frames at 480 x 832, written at 30 fps
        # ReCamMaster's inference: Euler on DiffSynth's grid shifted by 5, 50 steps, CFG 5 with Wan's
        # negative prompt; merging at r = 0.5, the middle of the paper's training range.
        sampling=dict(
            sampler="euler",
            grid="diffsynth",
            steps=50,
            shift=5.0,
            guidance=5.0,
            keep_ratio=0.5,
            negative_prompt=WAN_NEGATIVE_PROMPT,
        ),
        # k = 6 memory videos (paper: up to 6). Ours: the paper fixes the intrinsics at inference without
        # stating them (60 degrees, configs/retrieval.py); the sphere has radius 1 m (ReCamMaster's units).
        # Ours: only memories that overlap the target at all are fed (min_score), one program per count.
        retrieval=dict(
            slots=6,
            min_score=0.0,
            buckets=config_dict.placeholder(tuple),
            hfov_degrees=60.0,
            fov_radius=1.0,
        ),
        merge_schedule="",  # the weights' own; or a name in memory.merging.MERGE_SCHEDULES
        # Step caching (pipelines.step_cache; docs/step_caching.md): off until measured, e.g.
        # --config.sample.cache.kind=first_block.
        cache=dict(kind="none", threshold=0.05, warmup=2, uncond_every=1),
        # Every device of the process: guidance's batch of 2 over data, the rest over the sequence
        # (parallel.mesh.sampling_mesh); or axis sizes, e.g. --config.sample.mesh=data=2,sequence=4.
        mesh="auto",
        # DiT execution overrides; dtype "auto" is bfloat16 compute on accelerators. ffn_chunk: ours, the FFN
        # in steps of 8,192 tokens per chip, for the same result with 1.3 GiB less HBM per chip at s=2.
        runtime=dict(ffn_chunk=8192),
    )
    # Training as ReCamMaster fine-tunes, plus the memory modules (paper).
    config.trainable = [r"^camera/", r"^dit/blocks/self_attn/", r"^tokenizers/", r"^mergers/"]
    config.runtime = dict(dtype="auto" if tiny else "bfloat16", remat="full")  # bfloat16, gradient checkpointing
    config.memory_sampling = dict(
        slots=6,  # paper: 1 to 6 memory videos
        min_memory=1,
        max_memory=6,
        uniform_tokenizer_prob=0.5,  # paper: 50% of steps one tokenizer for all memory videos
        merge_prob=0.5,  # paper: merging on 50% of steps
        merge_ratios=(0.3, 0.5, 0.7),  # paper: r in [0.3, 0.7]
        fov_radius=1.0,
    )
    config.step = dict(
        task="nvs",
        # ReCamMaster's training: sigma uniform over its 1000-step grid shifted by 5 (here its continuous
        # form, diffusion.flow) and its bell-shaped loss weight over timesteps.
        shift=5.0,
        timestep_sampling="uniform",
        loss_weighting="recammaster",
        memory_noise=0.1,  # ours: the paper perturbs memory with Gaussian noise of unstated scale
        rope_dropout=0.1,  # ours: the paper drops the input's RoPE with unstated probability
        ema_decay=0.0,  # ReCamMaster keeps no EMA
    )
    config.optimizer = dict(
        lr=1e-4,  # ReCamMaster's README command
        schedule="constant",
        warmup_steps=50,  # ours: the new memory modules start from their initialisation
        steps=2000,
        final_ratio=1.0,
        b1=0.9,  # torch AdamW's defaults, as ReCamMaster
        b2=0.999,
        weight_decay=0.01,
        clip_norm=1.0,  # ours
        accumulate=1,
    )
    config.mesh = dict(data=1, fsdp=-1)  # ours: parameters, optimizer state and batch over every chip
    # Axes split across TPU slices (processes where there is one slice), e.g. dict(data=2): then `mesh` is
    # each slice's mesh. Default: one slice.
    config.mesh_dcn = {}
    config.mesh_devices = 0  # every device
    config.mesh_rules = [list(r) for r in DEFAULT_RULES]
    config.batch_size = 4 if tiny else 32  # paper: 32 on 32 A100s, one example a chip; ours: 4 on a CPU
    config.steps = 2000  # paper: converges in 1-2K steps
    config.log_every = 10
    config.eval_every = 250
    config.checkpoint_every = 250
    config.keep_checkpoints = 3
    config.eval_sampling_steps = 20
    config.data = dict(
        source=data_source(tiny), latents_name=f"{arg or 'full'}_recammaster_nvs", latents_dir="data/latents"
    )
    return config


def data_source(tiny: bool) -> dict:
    """MultiCamVideo (ReCamMaster's training set) as the paper trains; `:tiny` renders synthetic scenes."""
    if tiny:
        scene = dict(height=64, width=96, num_frames=9, num_cameras=4)
        return dict(
            builder="synthetic_multicam",
            name="tiny_recammaster",
            scene=scene,
            num_train=8,
            num_validation=2,
            base_seed=0,
            data_dir="data/tfds",
        )
    return dict(builder="multicam_video", name="full", data_dir="data/tfds", manual_dir="data/MultiCamVideo-Dataset")
