"""Ahead-of-time compilation for TPU pods from any machine: does a step fit, and what does it cost.

    topology = tpu_topology("v5p-64")
    program = train_step_program(config, topology.devices)
    report = compile_program(program, topology)      # memory per chip, collectives, fits or not
    print(format_report(report))

libtpu (`pip install "jax[tpu]"`, the `tpu` extra) compiles for a TPU topology without the hardware
(`jax.experimental.topologies`), as MaxText's `train_compile.py` does, so a pod configuration is
checked on a laptop before time is bought: XLA's compiled memory plan per chip (arguments,
temporaries, outputs) against the chip's HBM, and the collectives in the per-chip program. The
programs are the real ones: `train.step.jit_train_step` on the config's mesh and the sampling
pipelines' own `Denoiser` velocity (classifier-free guidance as a batch of 2). On a TPU host "auto"
dtypes and attention resolve to bfloat16 and splash; compiling from a CPU host they are set so here.

Cost. XLA's `cost_analysis()` counts a `lax.scan` body once, not once per layer, and a Pallas kernel
(splash attention) not at all. The program as compiled therefore counts one layer per segment between
merge hooks (3 for the paper's merges before blocks 10 and 20 of 30); `step_cost` compiles it once more
with two unrolled layers per segment, so the difference is the cost of one layer per segment, adds the
splash kernels' matmul FLOPs read from their custom calls (2 matmuls for the forward kernel, 3 for dq,
4 for dk/dv) to both, and extrapolates linearly to the real depth: cost(L) = cost(d) + (L/d - 1)
(cost(2d) - cost(d)), exact when the segments are equally long (they are for 30 layers). Time per step
is that FLOP count at the chip's peak bf16 rate: a lower bound that ignores communication and
memory-bound phases.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from mv2v_jax.parallel.mesh import DEFAULT_RULES, batch_sharding, make_mesh, state_shardings, use_mesh

GiB = 2**30


@dataclasses.dataclass(frozen=True)
class Chip:
    """Per-chip figures: HBM in bytes and the peak dense bf16 rate in FLOP/s (Cloud TPU documentation)."""

    name: str
    hbm_bytes: int
    peak_flops: float


CHIPS = {
    "v5p": Chip("v5p", 95 * GiB, 459e12),
    "v5e": Chip("v5e", 16 * GiB, 197e12),
    "v6e": Chip("v6e", 32 * GiB, 918e12),
}
# Cloud TPU names count TensorCores for v5p (two per chip: v5p-8 is 4 chips) and chips for v5e / v6e.
CORES_PER_CHIP = {"v5p": 2, "v5e": 1, "v6e": 1}


@dataclasses.dataclass(frozen=True)
class Topology:
    name: str  # as asked for, e.g. "v5p-64"
    layout: str  # libtpu's, e.g. "v5p:2x4x4"
    chip: Chip
    devices: tuple[Any, ...]

    @property
    def chips(self) -> int:
        return len(self.devices)


def _layout(kind: str, chips: int) -> str:
    """The physical layout of a slice of `chips` chips: v5p a 3D torus from 2x2x1 up, doubling its
    shortest side; v5e / v6e a 2D one from 1x1, doubling its shortest side."""
    if chips < 1 or chips & (chips - 1):
        raise ValueError(f"{chips} chips: slices of a power-of-two chip count are supported")
    dims = [2, 2, 1] if kind == "v5p" else [1, 1]
    if chips < math.prod(dims):
        raise ValueError(f"the smallest {kind} slice has {math.prod(dims)} chips, asked for {chips}")
    while math.prod(dims) < chips:
        dims.sort()
        dims[0] *= 2
    return f"{kind}:{'x'.join(map(str, sorted(dims, reverse=1 in dims and kind == 'v5p')))}"  # v5p:2x2x1


def parse_topology(name: str) -> tuple[str, str]:
    """`"v5p-64"` (a Cloud TPU slice name) or `"v5p:2x4x4"` (a layout) -> (chip kind, layout)."""
    match = re.fullmatch(r"(v5p|v5e|v6e)(?:-(\d+)|:(\d+(?:x\d+){1,2}))", name)
    if not match:
        raise ValueError(f"TPU topology {name!r}: expected e.g. v5p-64, v5e-16, v6e-8 or v5p:2x2x2 ({sorted(CHIPS)})")
    kind, count, layout = match.groups()
    if layout:
        return kind, f"{kind}:{layout}"
    cores = int(count)
    if cores % CORES_PER_CHIP[kind]:
        raise ValueError(f"{name}: {kind} slices count {CORES_PER_CHIP[kind]} TensorCores per chip")
    return kind, _layout(kind, cores // CORES_PER_CHIP[kind])


def tpu_topology(name: str) -> Topology:
    """The devices of a TPU topology to compile for (libtpu must be installed: the `tpu` extra)."""
    kind, layout = parse_topology(name)
    # Compiling for a topology needs no TPU: let several such processes share libtpu on one host, and
    # give libtpu the worker list it would otherwise look up in a TPU VM's metadata.
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
    from jax.experimental import topologies

    dims = [int(d) for d in layout.partition(":")[2].split("x")]
    # A slice smaller than one host (4 chips) is a host of its own size.
    bounds = {"chips_per_host_bounds": [*dims, 1, 1][:3]} if math.prod(dims) < 4 else {}
    try:
        description = topologies.get_topology_desc(platform="tpu", topology_name=layout, **bounds)
    except Exception as e:  # libtpu missing or refusing the layout
        raise RuntimeError(f"cannot describe TPU topology {layout} (is libtpu installed? the tpu extra): {e}") from e
    return Topology(name, layout, CHIPS[kind], tuple(description.devices))


def libtpu_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("libtpu")
    except PackageNotFoundError:
        return "not installed"


# -- what the compiled program says -----------------------------------------------------------------

_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "bf16": 2, "f16": 2, "s32": 4, "u32": 4, "f32": 4}
_BYTES |= {"s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16}
_ARRAY = re.compile(r"\b([a-z]+[0-9]*(?:e\dm\d\w*)?)\[([\d,]*)\]")
_INSTRUCTION = re.compile(
    r"^\s*(?:ROOT\s+)?%?(?P<name>[\w.\-]+) = (?P<type>.*?) (?P<op>[a-z][a-z0-9\-]*)\((?P<rest>.*)$"
)
COLLECTIVES = ("all-gather", "all-reduce", "reduce-scatter", "all-to-all", "collective-permute")
# Matmuls of each splash kernel (its name starts with the key): forward q k^T and p v; dq recomputes the
# scores, dp = do v^T and dq = ds k; dk/dv recomputes the scores, dp, dv = p^T do and dk = ds^T q.
SPLASH_MATMULS = {"splash_mha_fwd": 2, "splash_mha_dq": 3, "splash_mha_dkv": 4}


def _arrays(text: str) -> list[tuple[str, tuple[int, ...]]]:
    return [(dtype, tuple(int(d) for d in dims.split(",") if d)) for dtype, dims in _ARRAY.findall(text)]


def _nbytes(dtype: str, shape: tuple[int, ...]) -> int:
    size = _BYTES.get(dtype, 1 if dtype.startswith("f8") else 0)
    return size * math.prod(shape)


def _group_size(rest: str) -> int:
    """Devices per replica group: `replica_groups={{0,1},{2,3}}` or the iota form `[2,2]<=[4]`."""
    if match := re.search(r"replica_groups=\{\{([\d,]*)\}", rest):
        return len(match.group(1).split(","))
    if match := re.search(r"replica_groups=\[(\d+),(\d+)\]", rest):
        return int(match.group(2))
    return 1


@dataclasses.dataclass
class Collective:
    count: int = 0
    chip_bytes: float = 0.0  # bytes each chip sends over the interconnect, ring algorithms


def collectives(hlo: str) -> dict[str, Collective]:
    """The collectives of a compiled (per-chip) HLO module, by kind, as written in the program text: an
    op inside a loop body appears once. Bytes per chip: all-gather `out (n-1)/n`, reduce-scatter
    `out (n-1)`, all-reduce `2 size (n-1)/n`, all-to-all `size (n-1)/n`, collective-permute `size`."""
    found: dict[str, Collective] = {}
    for line in hlo.splitlines():
        match = _INSTRUCTION.match(line)
        if not match:
            continue
        op = match["op"].removesuffix("-start")
        if op not in COLLECTIVES or match["op"].endswith("-done"):
            continue
        size = max((_nbytes(*a) for a in _arrays(match["type"])), default=0)  # an async op's tuple: its largest buffer
        n = _group_size(match["rest"])
        share = {
            "all-gather": size * (n - 1) / n,
            "reduce-scatter": size * (n - 1),
            "all-reduce": 2 * size * (n - 1) / n,
            "all-to-all": size * (n - 1) / n,
            "collective-permute": size,
        }[op]
        entry = found.setdefault(op, Collective())
        entry.count += 1
        entry.chip_bytes += share
    return found


def kernel_flops(hlo: str) -> tuple[float, list[str]]:
    """Matmul FLOPs of the splash-attention custom calls in a compiled TPU module (XLA counts none), and
    the names of other custom kernels found, whose FLOPs are not counted."""
    flops, uncounted = 0.0, []
    for line in hlo.splitlines():
        if 'custom_call_target="tpu_custom_call"' not in line:
            continue
        match = _INSTRUCTION.match(line)
        name = match["name"] if match else "?"
        matmuls = next((m for prefix, m in SPLASH_MATMULS.items() if name.startswith(prefix)), None)
        operands = re.search(r"operand_layout_constraints=\{((?:[^{}]*\{[^{}]*\})*)", line)
        floats = [a for a in _arrays(operands.group(1) if operands else "") if a[0] in ("bf16", "f16", "f32")]
        if matmuls is None or len(floats) < 2:
            uncounted.append(name)
            continue
        (_, q), (_, k) = floats[:2]
        flops += matmuls * 2 * math.prod(q[:-1]) * k[-2] * q[-1]
    return flops, uncounted


@dataclasses.dataclass
class Report:
    """A compiled program on a topology. Memory in bytes per chip."""

    program: str
    topology: Topology
    mesh: dict[str, int]
    notes: list[str]
    arguments: int = 0
    outputs: int = 0
    aliased: int = 0
    temporaries: int = 0
    code: int = 0
    collectives: dict[str, Collective] = dataclasses.field(default_factory=dict)
    error: str = ""  # the compiler's refusal (e.g. out of HBM)
    written_flops: float = 0.0  # per chip, as the program is written (a loop body once), splash included
    uncounted: list[str] = dataclasses.field(default_factory=list)  # custom kernels whose FLOPs are unknown
    flops: float | None = None  # per chip per step with every layer counted (step_cost)
    compile_seconds: float = 0.0

    @property
    def total(self) -> int:
        return self.arguments + self.outputs - self.aliased + self.temporaries + self.code

    @property
    def fits(self) -> bool:
        return not self.error and self.total <= self.topology.chip.hbm_bytes

    @property
    def seconds_at_peak(self) -> float | None:
        return None if self.flops is None else self.flops / self.topology.chip.peak_flops


# -- the programs -----------------------------------------------------------------------------------


@dataclasses.dataclass
class Program:
    """A jitted step and abstract arguments (ShapeDtypeStructs with shardings) on `mesh`.

    `at_depth(d)` builds the same program with `d` unrolled blocks, hooks placed proportionally (cost
    counting); `layers` and `segments` describe the real model's blocks and hook-separated segments, and
    `scanned` whether each segment is a `lax.scan`.
    """

    name: str
    fn: Callable
    args: tuple
    mesh: jax.sharding.Mesh
    rules: Any
    layers: int
    segments: int
    notes: list[str]
    scanned: bool = True
    at_depth: Callable[[int], Program] | None = None


# What "auto" resolves to on an accelerator (models.layers.compute_dtype, AttentionConfig.resolved); a
# program compiled here for another platform must say so itself.
AUTO = {"tpu": ("splash", "bfloat16"), "gpu": ("cudnn", "bfloat16")}


def resolve_auto(dit: Mapping[str, Any], platform: str | None = "tpu") -> dict[str, Any]:
    """DiT execution fields with "auto" attention and dtype as `platform` resolves them (None: leave
    "auto" to the backend that runs the program)."""
    dit = dict(dit)
    if platform is None:
        return dit
    impl, dtype = AUTO[platform]
    attention = dict(dit.get("attention", {}))
    if attention.get("impl", "auto") == "auto":
        attention["impl"] = impl
    dit["attention"] = attention
    if dit.get("dtype", "auto") == "auto":
        dit["dtype"] = dtype
    return dit


def _plain(config: Any) -> Any:
    return config.to_dict() if hasattr(config, "to_dict") else config


def _memory_config(model: Mapping[str, Any], runtime: Mapping[str, Any], depth: int | None, platform: str | None):
    """The MemoryConfig of an experiment's `model` section for `platform`; with `depth`, that many
    unrolled blocks and the merge hooks at the same fractions of the depth."""
    from mv2v_jax.memory.model import MemoryConfig

    model = dict(_plain(model))
    dit = resolve_auto(dict(_plain(model["dit"])) | dict(_plain(runtime)), platform)
    config = MemoryConfig.from_config(model | {"dit": dit})
    if depth is None:
        return config
    merges = config.merge.block_indices(config.dit.num_layers)
    blocks = tuple(30 * i / config.dit.num_layers for i in merges)  # MergeConfig places `blocks` on 30 layers
    return dataclasses.replace(
        config,
        dit=dataclasses.replace(config.dit, num_layers=depth, scan_layers=False),
        merge=dataclasses.replace(config.merge, blocks=blocks),
    )


def _mesh_size(mesh, entry) -> int:
    """Devices along a PartitionSpec entry (None, an axis name, or a tuple of them)."""
    axes = () if entry is None else (entry,) if isinstance(entry, str) else entry
    return math.prod(mesh.shape[a] for a in axes)


def _segments(layers: int, hooks: Sequence[int]) -> int:
    bounds = sorted({0, layers, *hooks})
    return len(bounds) - 1


def _abstract(tree: Any, shardings: Any) -> Any:
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), tree, shardings)


def _abstract_model(config, mesh, rules):
    from mv2v_jax.memory.model import MemoryDiT

    graphdef, state = nnx.split(nnx.eval_shape(lambda: MemoryDiT(config, rngs=nnx.Rngs(0))))
    return graphdef, _abstract(state, state_shardings(state, mesh, rules))


def _replicated(mesh, value: Any) -> jax.ShapeDtypeStruct:
    spec = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    return jax.ShapeDtypeStruct(value.shape, value.dtype, sharding=spec)


@dataclasses.dataclass(frozen=True)
class Clip:
    """One video's latent geometry `[frames, height, width, channels]` and the text length."""

    frames: int
    height: int
    width: int
    channels: int
    text_len: int

    @property
    def latents(self) -> tuple[int, int, int, int]:
        return (self.frames, self.height, self.width, self.channels)


def clip_of(config: Mapping[str, Any]) -> Clip:
    """The latent clip an experiment samples and trains at: `sample.video` through `sample.codec`
    (Wan's 4x temporal compression; the space-to-depth codec's or the Wan VAE preset's spatial one), and
    the text length (umT5: Wan's 512 tokens; no text encoder: one zero token)."""
    from mv2v_jax.models.codec import TEMPORAL

    sample = config["sample"]
    video, codec = sample["video"], sample["codec"]
    if codec["kind"] == "space_to_depth":
        spatial = codec["spatial"]
        channels = 3 * (codec.get("frequencies") or spatial) ** 2
    elif codec["kind"] == "wan_vae":
        from mv2v_jax.config import load_config
        from mv2v_jax.models.wan.vae import WanVAEConfig

        vae = WanVAEConfig.from_config(load_config(f"configs/wan_vae.py:{codec.get('preset', 'wan2.1')}"))
        spatial, channels = vae.spatial_compression, vae.z_dim
    else:
        raise ValueError(f"unknown codec kind {codec['kind']!r}")
    frames = 1 + (video["frames"] - 1) // TEMPORAL
    text_len = 512 if sample["text"]["kind"] == "umt5" else 1
    return Clip(frames, -(-video["height"] // spatial), -(-video["width"] // spatial), channels, text_len)


def _conditions(task, batch: int, slots: int, clip: Clip, sds: Callable[..., jax.ShapeDtypeStruct]):
    """A turn's abstract `Conditions` for `task`: the input video, `slots` memory slots of the task's
    channels, and the cameras a camera adapter reads (the target's per frame, and each memory video's)."""
    from mv2v_jax.memory.builders import Conditions, MemoryBatch

    f, h, w, c = clip.latents
    camera = "camera" in task.adapters
    memory = MemoryBatch(
        latents=sds(batch, slots, f, h, w, task.memory_factor * c),
        valid=sds(batch, slots, dtype=jnp.bool_),
        turns=sds(batch, slots, dtype=jnp.int32),
        camera=sds(batch, slots, f, 12) if camera else None,
    )
    return Conditions(sds(batch, f, h, w, c), memory, {"camera": sds(batch, f, 12)} if camera else {})


def _batch_sds(mesh, rules) -> Callable[..., jax.ShapeDtypeStruct]:
    """Abstract batch-major arrays, split over the batch axes when they divide the batch and on every
    device otherwise (a turn's batch of 1; guidance's batch of 2 splits over a data axis of 2)."""

    def sds(*shape, dtype=jnp.float32):
        sharding = batch_sharding(mesh, len(shape), rules)
        if sharding.spec and shape[0] % _mesh_size(mesh, sharding.spec[0]):
            sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
        return jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)

    return sds


def largest_variant(config, sampling: Mapping[str, Any]):
    """The training step variant with the most tokens (no merging; every memory slot at the finest
    tokenizer a step can draw): the one that must fit."""
    from mv2v_jax.memory.tokenizers import TokenizerConfig
    from mv2v_jax.train.step import StepVariant

    paper = config.tokenizers
    finest = min(paper.patches, key=math.prod)
    uniform = TokenizerConfig(ranked=(), rest=finest)
    pick = uniform if sampling["uniform_tokenizer_prob"] > 0 else paper
    return StepVariant(pick, None)


def turn_layout(model_config, task, clip: Clip, slots: int, tokenizers) -> tuple:
    """The packed token layout of one example (`memory.streams.StreamSlice`s), from the task's own
    streams, computed abstractly."""
    from mv2v_jax.memory.model import MemoryDiT
    from mv2v_jax.memory.streams import pack_streams

    def pack():
        model = MemoryDiT(model_config, rngs=nnx.Rngs(0))
        conditions = _conditions(task, 1, slots, clip, lambda *shape, dtype=jnp.float32: jnp.zeros(shape, dtype))
        streams = task.streams(jnp.zeros((1, *clip.latents)), conditions, tokenizers)
        return pack_streams(streams, model.tokenizers.mapping(model.dit.patch_embedding))

    return nnx.eval_shape(pack).layout


def _tokens(model_config, clip: Clip, slots: int, tokenizers, task) -> int:
    return turn_layout(model_config, task, clip, slots, tokenizers)[-1].stop


def train_step_program(
    config: Mapping[str, Any],
    devices: Sequence[Any],
    *,
    clip: Clip | None = None,
    variant=None,
    depth: int | None = None,
    platform: str | None = "tpu",
) -> Program:
    """The experiment's training step (`train.step.jit_train_step`) on its mesh over `devices`, for its
    global `batch_size` and memory `slots`; `variant` defaults to the largest one training draws."""
    from mv2v_jax.data.loader import TrainBatch
    from mv2v_jax.tasks import get_task
    from mv2v_jax.train.optimizer import make_optimizer, trainable_filter
    from mv2v_jax.train.step import TrainState, jit_train_step

    clip = clip or clip_of(config)
    rules = _plain(config.get("mesh_rules", DEFAULT_RULES))
    mesh = make_mesh(dict(_plain(config["mesh"])), list(devices))
    model_config = _memory_config(config["model"], config.get("runtime", {}), depth, platform)
    sampling = _plain(config["memory_sampling"])
    variant = variant or largest_variant(model_config, sampling)
    step_config = dict(_plain(config["step"]))
    task = get_task(step_config["task"])
    optimizer = make_optimizer(dict(_plain(config["optimizer"])))
    trainable = trainable_filter(list(config["trainable"]))
    batch, slots = config["batch_size"], sampling["slots"]

    with use_mesh(mesh, rules):
        graphdef, params = _abstract_model(model_config, mesh, rules)
    trainable_params, _ = nnx.split_state(params, trainable, ...)
    # The optimizer's moments are laid out like their parameters, its counters replicated (optax finds
    # which is which by running `init` on placeholders: here, not on the TPU mesh this host cannot run).
    opt_state = optax.tree_map_params(
        optimizer,
        lambda moment, param: jax.ShapeDtypeStruct(moment.shape, moment.dtype, sharding=param.sharding),
        jax.eval_shape(optimizer.init, trainable_params),
        trainable_params,
        transform_non_params=lambda leaf: _replicated(mesh, leaf),
    )
    with use_mesh(mesh, rules):
        ema = trainable_params if step_config.get("ema_decay") else None
        state = TrainState(
            step=_replicated(mesh, jax.ShapeDtypeStruct((), jnp.int32)), params=params, opt_state=opt_state, ema=ema
        )
        sds = _batch_sds(mesh, rules)
        train_batch = TrainBatch(
            target=sds(batch, *clip.latents),
            context=sds(batch, clip.text_len, model_config.dit.text_dim),
            conditions=_conditions(task, batch, slots, clip, sds),
        )
        key = _replicated(mesh, jax.eval_shape(lambda: jax.random.key(0)))
        step = jit_train_step(graphdef, trainable, optimizer, variant, step_config)

    hooks = model_config.merge.block_indices(model_config.dit.num_layers) if variant.keep_ratio is not None else ()
    tokenizers = variant.tokenizers
    notes = [
        f"{task.name}: global batch {batch}, {slots} memory slots, clip {clip.latents} latents, text "
        f"{clip.text_len} tokens",
        "memory tokenizers "
        + (
            f"{'x'.join(map(str, tokenizers.rest))} for every slot"
            if tokenizers.ranked == ()
            else f"{tokenizers.ranked} then {tokenizers.rest}"
        )
        + (f", merging r={variant.keep_ratio}" if variant.keep_ratio is not None else ", no merging")
        + f"; {_tokens(model_config, clip, slots, tokenizers, task):,} tokens per example",
        f"remat {model_config.dit.remat}, compute {model_config.dit.dtype}, "
        f"attention {model_config.dit.attention.impl}",
    ]
    return Program(
        "train step",
        step,
        (state, train_batch, key),
        mesh,
        rules,
        model_config.dit.num_layers,
        _segments(model_config.dit.num_layers, hooks),
        notes,
        model_config.dit.scan_layers,
        at_depth=lambda d: train_step_program(config, devices, clip=clip, variant=variant, depth=d, platform=platform),
    )


def sampling_step_program(
    config: Mapping[str, Any],
    task_name: str,
    devices: Sequence[Any],
    mesh_shape: Mapping[str, int],
    *,
    clip: Clip | None = None,
    slots: int | None = None,
    depth: int | None = None,
    platform: str | None = "tpu",
) -> Program:
    """One denoising step of a turn (`task_name` "nvs" or "long_edit") as sample.py runs it: the
    pipelines' `Denoiser` velocity with guidance (conditional and unconditional as a batch of 2 when the
    config guides) and token merging at the config's r, on `mesh_shape` over `devices`."""
    from mv2v_jax.config import dataclass_from_config
    from mv2v_jax.pipelines.denoiser import Denoiser, SamplingConfig, TextConditioning
    from mv2v_jax.tasks import get_task

    task = get_task(task_name)
    sample = config["sample"]
    clip = clip or clip_of(config)
    slots = slots or sample["retrieval"]["slots"]
    rules = _plain(config.get("mesh_rules", DEFAULT_RULES))
    mesh = make_mesh(dict(mesh_shape), list(devices))
    model_config = _memory_config(config["model"], sample.get("runtime", {}), depth, platform)
    sampling = dataclass_from_config(SamplingConfig, _plain(sample["sampling"]), "sample.sampling")
    guided = sampling.guidance != 1.0 and sample["text"]["kind"] != "none"

    text = TextConditioning(text_dim=model_config.dit.text_dim)  # unused: the context is an argument
    with use_mesh(mesh, rules):
        graphdef, params = _abstract_model(model_config, mesh, rules)
        denoiser = Denoiser(nnx.merge(graphdef, params), task, sampling, text)
        sds = _batch_sds(mesh, rules)
        args = (
            params,
            sds(1, *clip.latents),  # x
            sds(1),  # t
            _conditions(task, 1, slots, clip, sds),
            sds(2 if guided else 1, clip.text_len, model_config.dit.text_dim),
        )
    hooks = model_config.merge.block_indices(model_config.dit.num_layers) if sampling.keep_ratio is not None else ()
    notes = [
        f"{'CFG batch 2' if guided else 'batch 1'}, {slots} memory slots, clip {clip.latents} latents, "
        f"text {clip.text_len} tokens; {_tokens(model_config, clip, slots, model_config.tokenizers, task):,} "
        f"tokens before merging (r={sampling.keep_ratio})",
        f"compute {model_config.dit.dtype}, attention {model_config.dit.attention.impl}",
    ]
    return Program(
        f"{task_name} sampling step",
        jax.jit(denoiser._velocity),
        args,
        mesh,
        rules,
        model_config.dit.num_layers,
        _segments(model_config.dit.num_layers, hooks),
        notes,
        model_config.dit.scan_layers,
        at_depth=lambda d: sampling_step_program(
            config, task_name, devices, mesh_shape, clip=clip, slots=slots, depth=d, platform=platform
        ),
    )


def dit_forward_program(
    dit: Mapping[str, Any],
    devices: Sequence[Any],
    mesh_shape: Mapping[str, int],
    grid: tuple[int, int, int],
    *,
    batch: int = 2,
    text_len: int = 512,
    rules=DEFAULT_RULES,
    depth: int | None = None,
) -> Program:
    """A plain Wan DiT forward (no memory) over a `grid` of latents `(F, H, W)` at the patch size."""
    from mv2v_jax.memory.streams import Stream, pack_streams
    from mv2v_jax.models.wan.dit import WanDiT, WanDiTConfig

    config = WanDiTConfig.from_config(resolve_auto(_plain(dit)))
    if depth is not None:
        config = dataclasses.replace(config, num_layers=depth, scan_layers=False)
    mesh = make_mesh(dict(mesh_shape), list(devices))
    rules = _plain(rules)
    with use_mesh(mesh, rules):
        graphdef, state = nnx.split(nnx.eval_shape(lambda: WanDiT(config, rngs=nnx.Rngs(0))))
        state = _abstract(state, state_shardings(state, mesh, rules))
        shape = tuple(g * p for g, p in zip(grid, config.patch_size, strict=True))

        def sds(*shape):
            return jax.ShapeDtypeStruct(shape, jnp.float32, sharding=batch_sharding(mesh, len(shape), rules))

        args = (state, sds(batch, *shape, config.in_channels), sds(batch), sds(batch, text_len, config.text_dim))

    def forward(state, latents, timestep, context):
        model = nnx.merge(graphdef, state)
        return model(pack_streams([Stream(latents)], {config.patch_size: model.patch_embedding}), timestep, context)

    return Program(
        "DiT forward",
        jax.jit(forward),
        args,
        mesh,
        rules,
        config.num_layers,
        1,
        [
            f"batch {batch}, {math.prod(grid):,} tokens, text {text_len}; compute {config.dtype}, attention "
            f"{config.attention.impl}"
        ],
        config.scan_layers,
        at_depth=lambda d: dit_forward_program(
            dit, devices, mesh_shape, grid, batch=batch, text_len=text_len, rules=rules, depth=d
        ),
    )


# -- compiling ----------------------------------------------------------------------------------------


def _compile(program: Program):
    with use_mesh(program.mesh, program.rules):
        return program.fn.lower(*program.args).compile()


def compile_program(program: Program, topology: Topology) -> Report:
    """Compiles `program` for `topology`: per-chip memory, collectives, and whether it fits in HBM
    (a compiler refusal, such as running out of HBM, is reported, not raised)."""
    import time

    report = Report(program.name, topology, dict(program.mesh.shape), list(program.notes))
    start = time.perf_counter()
    try:
        compiled = _compile(program)
    except jax.errors.JaxRuntimeError as e:
        if "RESOURCE_EXHAUSTED" not in str(e):
            raise
        report.error = " ".join(str(e).split())[:600]  # XLA's out-of-HBM refusal: the answer is "does not fit"
        report.compile_seconds = time.perf_counter() - start
        return report
    report.compile_seconds = time.perf_counter() - start
    memory = compiled.memory_analysis()
    report.arguments = memory.argument_size_in_bytes
    report.outputs = memory.output_size_in_bytes
    report.aliased = memory.alias_size_in_bytes
    report.temporaries = memory.temp_size_in_bytes
    report.code = memory.generated_code_size_in_bytes
    hlo = compiled.as_text()
    report.collectives = collectives(hlo)
    kernels, report.uncounted = kernel_flops(hlo)
    report.written_flops = float(compiled.cost_analysis()["flops"]) + kernels
    return report


def step_cost(program: Program, report: Report) -> tuple[float, dict[str, Collective]]:
    """FLOPs and collectives per chip of one step with every layer counted (module doc): `report` is
    the compiled program's, whose scan bodies count as one layer per segment; one more compile with two
    unrolled layers per segment gives the cost of a layer per segment, extrapolated to the real depth."""
    if not program.scanned:
        return report.written_flops, report.collectives
    if program.at_depth is None:
        raise ValueError(f"{program.name} cannot be rebuilt at another depth")
    d = program.segments
    low, low_collectives = report.written_flops, report.collectives
    high_program = program.at_depth(2 * d)
    high = compile_program(high_program, report.topology)
    high, high_collectives = high.written_flops, high.collectives
    scale = program.layers / d - 1
    total = {}
    for kind in set(low_collectives) | set(high_collectives):
        a, b = low_collectives.get(kind, Collective()), high_collectives.get(kind, Collective())
        total[kind] = Collective(
            round(a.count + scale * (b.count - a.count)), a.chip_bytes + scale * (b.chip_bytes - a.chip_bytes)
        )
    return low + scale * (high - low), total


# -- printing ---------------------------------------------------------------------------------------


def _gib(n: float) -> str:
    return f"{n / GiB:.2f} GiB"


def format_report(report: Report) -> str:
    """What the CLIs print: the program, the mesh, memory per chip against HBM, collectives, the verdict."""
    t = report.topology
    mesh = " ".join(f"{k}={v}" for k, v in report.mesh.items())
    lines = [
        f"{report.program} on {t.name} ({t.layout}: {t.chips} chips of {t.chip.name}, "
        f"{_gib(t.chip.hbm_bytes)} HBM each; libtpu {libtpu_version()})",
        f"mesh {mesh}",
        *report.notes,
    ]
    if report.error:
        lines += [f"the compiler refused it: {report.error}", "does not fit"]
        return "\n".join(lines)
    lines.append(
        f"per chip: arguments {_gib(report.arguments)}, outputs {_gib(report.outputs)} "
        f"({_gib(report.aliased)} of them aliased to arguments), temporaries {_gib(report.temporaries)}, "
        f"code {_gib(report.code)}; total {_gib(report.total)} of {_gib(t.chip.hbm_bytes)}"
    )
    if report.collectives:
        parts = [f"{kind} x{c.count} ({_gib(c.chip_bytes)} per chip)" for kind, c in sorted(report.collectives.items())]
        lines.append("collectives in the program (a scanned layer's once): " + ", ".join(parts))
    else:
        lines.append("collectives in the program: none")
    if report.flops is not None:
        lines.append(f"{report.flops / 1e12:.1f} TFLOP per chip per step: {report.seconds_at_peak:.3f} s at peak")
    lines.append("fits" if report.fits else "does not fit")
    return "\n".join(lines)


def parse_mesh(text: str) -> dict[str, int]:
    """`"data=2,sequence=4"` -> `{"data": 2, "sequence": 4}`."""
    mesh = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, size = part.partition("=")
        if not size.lstrip("-").isdigit():
            raise ValueError(f"mesh {text!r}: expected axis=size pairs such as data=2,sequence=4")
        mesh[name.strip()] = int(size)
    return mesh


def default_sampling_mesh(chips: int, guided: bool) -> dict[str, int]:
    """Guidance's batch of 2 over data (no communication), the rest of the chips over the sequence."""
    data = 2 if guided and chips % 2 == 0 else 1
    return {"data": data, "sequence": chips // data}


def _print_compiled(build: Callable[[Topology], Program], topology_name: str) -> int:
    """The CLIs' `--compile_topology`: prints the report; 0 if the program fits, 1 if not or on bad input."""
    import sys

    try:
        topology = tpu_topology(topology_name)
        report = compile_program(build(topology), topology)
    except (ValueError, RuntimeError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(format_report(report))
    return 0 if report.fits else 1


def compile_train_step(config: Mapping[str, Any], topology_name: str) -> int:
    """`train.py --compile_topology`: the experiment's train step on its mesh over the whole slice."""
    return _print_compiled(lambda t: train_step_program(config, t.devices), topology_name)


def compile_sampling_step(config: Mapping[str, Any], task: str, topology_name: str, mesh: str | None) -> int:
    """`sample.py --compile_topology`: one sampling step of `task` on `mesh` (default
    `default_sampling_mesh`) over the whole slice."""

    def build(topology: Topology) -> Program:
        sample = config["sample"]
        guided = sample["sampling"]["guidance"] != 1.0 and sample["text"]["kind"] != "none"
        shape = parse_mesh(mesh) if mesh else default_sampling_mesh(topology.chips, guided)
        return sampling_step_program(config, task, topology.devices, shape)

    return _print_compiled(build, topology_name)
