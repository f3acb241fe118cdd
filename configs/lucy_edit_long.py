"""Memory-V2V long video editing on LucyEdit (Wan2.2-TI2V-5B with 96 input channels): the paper's setting.

Weights, converted once into `weights_dir` (README, "The real backbones"; every path below is also its own
field, e.g. `--config.sample.embedder.weights=...`):

    python -m convert_weights.lucy_edit Lucy-Edit-Dev/transformer weights/lucy_edit
    python -m convert_weights.wan_vae Lucy-Edit-Dev/vae weights/wan2.2_vae
    python -m convert_weights.umt5 Lucy-Edit-Dev/text_encoder weights/umt5
    cp -r Lucy-Edit-Dev/tokenizer weights/umt5_tokenizer
    python -m convert_weights.dinov2 dinov2-base weights/dinov2-base

Sampling, and fine-tuning on long source/edited pairs (`data.source.manual_dir`, layout in
mv2v_jax.data.tfds.long_edit_pairs):

    python sample.py --config configs/lucy_edit_long.py --task long_edit --session outputs/edit \
        --video long.mp4 --prompt "make it winter"
    python -m mv2v_jax.data.encode_latents --config configs/lucy_edit_long.py   # once: videos -> latents
    python train.py --config configs/lucy_edit_long.py --workdir outputs/lucy_edit_long

`configs/lucy_edit_long.py:tiny` is the same experiment (the same code path) at small widths, 64 x 96
and 9-frame segments, trained on synthetic long videos whose objects the edit recolours: for tests and
CPUs, with random weights of its architecture from `python -m convert_weights.random --config
configs/lucy_edit_long.py:tiny`.

Values the paper and LucyEdit do not give are ours and say so.
"""

from pathlib import Path

import ml_collections
from ml_collections import config_dict

from mv2v_jax.config import load_config
from mv2v_jax.models.wan.dit import ARCH_FIELDS
from mv2v_jax.parallel.mesh import DEFAULT_RULES

CONFIGS = Path(__file__).parent
# `:tiny`: widths small enough for a CPU; channels, patch and every memory module as in the full model.
TINY_DIT = dict(dim=64, ffn_dim=128, num_heads=2, num_layers=4, text_dim=64, freq_dim=32)  # text_dim: tiny umT5
# LucyEdit's pipeline defaults: 81-frame segments at 480 x 832, written at 24 fps.
SIZES = {"": dict(frames=81, height=480, width=832), "tiny": dict(frames=9, height=64, width=96)}


def model_config(tiny: bool) -> dict:
    base = load_config(f"{CONFIGS / 'wan_dit.py'}:lucy-edit")  # configs/wan_dit.py: 48 noisy + 48 condition in
    dit = {k: v for k, v in base.items() if k in ARCH_FIELDS}
    return dict(
        dit=dit | (TINY_DIT if tiny else {}),
        adapters=(),  # LucyEdit: no camera layers (tasks.long_edit)
        tokenizers=dict(ranked=((1, 4, 4),) * 3, rest=(1, 8, 8)),  # paper: top 3 at 1x4x4, the rest 1x8x8
        merge=dict(blocks=(10, 20), fraction=0.5, keep_ratio=0.5, kernel=3),  # paper: blocks 10, 20; bottom 50%
    )


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    if arg not in SIZES:
        raise ValueError(f"unknown lucy_edit_long variant {arg!r}; choose '' (the paper's) or 'tiny'")
    tiny = arg == "tiny"
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.weights_dir = "weights/tiny-lucy_edit" if tiny else "weights"
    weights = config.get_ref("weights_dir")
    config.model = model_config(tiny)
    config.init_weights = weights + "/lucy_edit"  # convert_weights.lucy_edit (fine-tuning starts here)
    config.sample = dict(
        weights=weights + "/lucy_edit",  # or a run's <workdir>/weights after training
        codec=dict(kind="wan_vae", weights=weights + "/wan2.2_vae", preset="tiny-wan2.2" if tiny else "wan2.2"),
        text=dict(
            kind="umt5",
            weights=weights + "/umt5",
            tokenizer=weights + "/umt5_tokenizer",
            cache=weights + "/prompt_cache",  # embeddings keyed by tokenizer, weights and prompt
            preset="tiny" if tiny else "umt5-xxl",
        ),
        # Retrieval's index: DINOv2-B CLS embeddings of each source segment's frames, mean-pooled (paper).
        embedder=dict(kind="dinov2", weights=weights + "/dinov2-base", preset="tiny" if tiny else "base"),
        video=SIZES[arg] | dict(fps=24),
        # LucyEdit's diffusers pipeline: UniPC with flow shift 5, 50 steps, guidance 5, empty negative
        # prompt; merging at r = 0.5, the middle of the paper's training range.
        sampling=dict(
            sampler="unipc",
            grid="diffusers",
            steps=50,
            shift=5.0,
            guidance=5.0,
            keep_ratio=0.5,
            negative_prompt="",
        ),
        # Ours: older segments fed only when their sources are similar at all (cosine > min_score).
        retrieval=dict(
            slots=6,
            min_score=0.0,
            buckets=config_dict.placeholder(tuple),
        ),  # ours: k = 6 as for NVS; slot 0 is always the previous segment (paper)
        long_edit=dict(segment_frames=SIZES[arg]["frames"], overlap=0),  # paper: independent 81-frame segments
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
    # Ours (the paper does not say what trains for long editing): self-attention and the memory modules,
    # as ReCamMaster fine-tunes for its new condition. Memory reaches the target only through
    # self-attention, so that is where the model must learn to read it; the frozen cross-attention, FFN,
    # patch embedding and head keep LucyEdit's text-guided editing; and a 5B model fine-tunes with a
    # fraction of its parameters in the optimizer.
    config.trainable = [r"^dit/blocks/self_attn/", r"^tokenizers/", r"^mergers/"]
    config.runtime = dict(dtype="auto" if tiny else "bfloat16", remat="full")  # bfloat16, gradient checkpointing
    config.memory_sampling = dict(
        slots=6,  # paper: 1 to 6 memory segments (the previous one always, then the most similar older ones)
        min_memory=1,
        max_memory=6,
        uniform_tokenizer_prob=0.5,  # paper: 50% of steps one tokenizer for all memory videos
        merge_prob=0.5,  # paper: merging on 50% of steps
        merge_ratios=(0.3, 0.5, 0.7),  # paper: r in [0.3, 0.7]
        fov_radius=1.0,  # not used by long editing
    )
    config.step = dict(
        task="long_edit",
        # Ours: LucyEdit's (and Wan2.2's) training recipe is unpublished; we fine-tune as DiffSynth (ReCamMaster's
        # code base) fine-tunes Wan models: sigma uniform, shifted by 5 (LucyEdit's sampling shift), and the
        # bell-shaped loss weight over timesteps.
        shift=5.0,
        timestep_sampling="uniform",
        loss_weighting="recammaster",
        memory_noise=0.1,  # ours: the paper perturbs memory with Gaussian noise of unstated scale
        rope_dropout=0.1,  # not used by long editing (the condition is channel-concatenated, without RoPE of its own)
        ema_decay=0.0,
    )
    config.optimizer = dict(
        lr=1e-4,  # ours, as configs/recammaster_nvs.py
        schedule="constant",
        warmup_steps=50,
        steps=2000,
        final_ratio=1.0,
        b1=0.9,
        b2=0.999,
        weight_decay=0.01,
        clip_norm=1.0,
        accumulate=1,
    )
    config.mesh = dict(data=1, fsdp=-1)  # ours: a 5B model's parameters and optimizer state over every chip
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
        source=data_source(tiny), latents_name=f"{arg or 'full'}_lucy_edit_long", latents_dir="data/latents"
    )
    return config


def data_source(tiny: bool) -> dict:
    """Long source/edited pairs from their manual folder (the paper's: Señorita-2M clips extended to 233
    frames); `:tiny` renders synthetic long videos and their object-recolouring edit."""
    if tiny:
        return dict(
            builder="synthetic_long_edit",
            name="tiny_lucy_edit",
            preset="tiny",  # mv2v_jax.data.synthetic.LONG_PRESETS: 3-4 segments of 9 frames at 64 x 96
            num_train=8,
            num_validation=2,
            base_seed=0,
            data_dir="data/tfds",
        )
    return dict(builder="long_edit_pairs", name="full", data_dir="data/tfds", manual_dir="data/long_edit_pairs")
