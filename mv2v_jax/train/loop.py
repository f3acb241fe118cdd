"""The training loop: model and mesh set-up, resumable steps, logging, validation, checkpoints, export.

    state = train(config, workdir, records, validation_records)

Everything a step needs to be reproduced is a function of (config seed, step): the per-step PRNG key
is `fold_in(seed, step)`, the step's static variant comes from a NumPy generator seeded the same way,
and the data iterator is restored with the checkpoint. So a run killed at any point and resumed gives
the same losses as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath
from flax import nnx
from tqdm import tqdm

from mv2v_jax.config import dataclass_from_config
from mv2v_jax.data.loader import TrainBatch, to_train_batch, training_dataset
from mv2v_jax.data.memory_sampling import MemorySampling, step_variant
from mv2v_jax.io.atomic import atomic_output, is_uri, upload
from mv2v_jax.io.images import contact_sheet, to_uint8, write_png
from mv2v_jax.memory.model import MemoryConfig, MemoryDiT, load_memory_dit
from mv2v_jax.memory.tokenizers import TokenizerConfig
from mv2v_jax.models.weights import WeightsWriter, flatten_paths
from mv2v_jax.parallel.mesh import (
    batch_sharding,
    init_on_mesh,
    make_mesh,
    process_batch_rows,
    to_host,
    use_mesh,
)
from mv2v_jax.tasks import Task, get_task
from mv2v_jax.train.checkpoint import Checkpointer, RunFolder, abstract_like, as_path
from mv2v_jax.train.optimizer import make_optimizer, trainable_filter
from mv2v_jax.train.step import StepVariant, TrainState, jit_train_step, loss_fn


def training_mesh(config: Mapping[str, Any]) -> jax.sharding.Mesh:
    """The config's mesh (`mesh`, across slices `mesh_dcn`) over its first `mesh_devices` devices (0: all)."""
    devices = jax.devices()[: config["mesh_devices"] or None]
    return make_mesh(dict(config["mesh"]), devices, dict(config.get("mesh_dcn", {})))


def build_model(config: Mapping[str, Any], mesh: jax.sharding.Mesh) -> MemoryDiT:
    """From converted weights (`config.init_weights`) straight into the mesh, or initialised at random on
    it (each device makes its own shard: parallel.mesh.init_on_mesh)."""
    if config.get("init_weights"):
        return load_memory_dit(config["init_weights"], mesh, **dict(config.get("runtime", {})))
    model_config = MemoryConfig.from_config(config["model"])
    return init_on_mesh(lambda: MemoryDiT(model_config, rngs=nnx.Rngs(config["seed"])), mesh, config["mesh_rules"])


def initial_state(config: Mapping[str, Any], mesh, optimizer, trainable) -> tuple[MemoryDiT, Any, TrainState]:
    """The model, its graphdef and step 0's `TrainState` (laid out on `mesh`)."""
    model = build_model(config, mesh)
    graphdef, params = nnx.split(model)
    trainable_params, _ = nnx.split_state(params, trainable, ...)
    if not jax.tree.leaves(trainable_params):
        raise ValueError(f"no parameter matches the trainable patterns {list(config['trainable'])}")
    opt_state = jax.jit(optimizer.init)(trainable_params)
    ema = trainable_params if config["step"].get("ema_decay") else None
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=opt_state, ema=ema)
    # Donation needs one buffer per leaf; initialisation can share them (tied init values, the EMA
    # starting as the parameters, identical optimizer zeros), so every leaf gets its own copy.
    return model, graphdef, jax.tree.map(lambda x: x.copy(), state)


def final_params(state: TrainState, trainable, ema: bool = True) -> nnx.State:
    """The parameters to sample with: the EMA of the trained ones where there is an EMA (and `ema`)."""
    if state.ema is None or not ema:
        return state.params
    return nnx.merge_state(state.ema, nnx.split_state(state.params, trainable, ...)[1])


def model_settings(config: Mapping[str, Any]) -> dict[str, int]:
    """The integer settings of the `model` section by key (`{"model.dit.dim": 1536, ...}`): the sizes a
    checkpoint's shapes may point at (train.checkpoint.mismatch)."""
    model = config["model"]
    flat = flatten_paths(model.to_dict() if hasattr(model, "to_dict") else dict(model))
    return {
        ".".join(("model", *path)): value
        for path, value in flat.items()
        if isinstance(value, int) and not isinstance(value, bool)
    }


def export_checkpoint(
    config: Mapping[str, Any], workdir: str | os.PathLike, step: int | None = None, ema: bool = True
) -> os.PathLike:
    """Writes `<workdir>/weights` from a checkpoint (default the latest): sample from a run mid-way."""
    workdir = as_path(workdir)
    if not (workdir / "checkpoints").is_dir():  # before building the model, and creating the folder
        raise FileNotFoundError(f"no checkpoint in {workdir / 'checkpoints'}: not a training run's workdir")
    mesh = training_mesh(config)
    trainable = trainable_filter(list(config["trainable"]))
    with use_mesh(mesh, config["mesh_rules"]):
        model, _, state = initial_state(config, mesh, make_optimizer(dict(config["optimizer"])), trainable)
        checkpointer = Checkpointer(workdir / "checkpoints", keep=config["keep_checkpoints"])
        try:
            if checkpointer.latest is None:
                raise FileNotFoundError(f"no checkpoint in {checkpointer.directory}")
            step = checkpointer.latest if step is None else step
            checkpointer.check_fits(state, model_settings(config), step)
            restored = checkpointer.restore(abstract_like(state), step=step)
        finally:  # also on an error: orbax's threads and event loop end before the interpreter does
            checkpointer.close()
        return export_weights(
            final_params(restored, trainable, ema),
            model.config,
            workdir / "weights",
            {"trained": {"steps": int(restored.step), "ema": ema and restored.ema is not None}},
        )


def export_weights(
    model_state: nnx.State, config: MemoryConfig, path: os.PathLike, record: Mapping[str, Any]
) -> os.PathLike:
    """Writes a weights directory `load_memory_dit` reads (parameters gathered to the host one by one;
    with several processes, every one gathers and the first writes)."""
    primary = jax.process_index() == 0
    with WeightsWriter(path, overwrite=True) if primary else contextlib.nullcontext() as writer:
        for name, value in flatten_paths(nnx.to_pure_dict(model_state)).items():
            array = to_host(value)
            if primary:
                writer.write(name, array)
        return writer.commit(config.record() | dict(record)) if primary else path


METRICS = "metrics.jsonl"
SYNC_SECONDS = 60  # a bucket's logs are uploaded at least this often while training


class _Log:
    """metrics.jsonl and TensorBoard event files (process 0 only), opened at the first write in the run's
    folder as it is then (`folder()`): a run that fails before it logs anything writes nothing.

    A resumed run runs again the steps after its checkpoint: what the killed run logged for them is
    dropped from metrics.jsonl (each step is there once) and purged from TensorBoard's view (the new
    event file starts with TensorBoard's purge marker). A bucket's object cannot be appended to: in a
    `gs://` workdir both are written in a local folder and uploaded whole, one object per file, by
    `sync` (at every checkpoint, at most `SYNC_SECONDS` apart in between, and at the end).
    """

    def __init__(self, folder: Callable[[], epath.Path], resumed: int):
        self.run_folder, self.resumed = folder, resumed
        self.enabled = jax.process_index() == 0
        self.jsonl = self.tensorboard = self.bucket = None

    def _open(self) -> None:
        # tensorboardX's own writer: SummaryWriter hands events to a thread and its flush does not wait
        # for them, so an upload after it could miss the latest steps; this one writes as it is called.
        from tensorboardX.event_file_writer import EventsWriter
        from tensorboardX.proto.event_pb2 import SessionLog

        workdir = self.run_folder()
        self.bucket = workdir if is_uri(workdir) else None
        self.folder = Path(tempfile.mkdtemp(prefix="mv2v-logs-")) if self.bucket else Path(workdir)
        kept, dropped = _logged_until(workdir / METRICS, self.resumed)
        if dropped or (self.bucket and kept):
            with atomic_output(self.folder / METRICS) as tmp:
                tmp.write_text("".join(line + "\n" for line in kept))
        self.jsonl = (self.folder / METRICS).open("a")
        (self.folder / "tensorboard").mkdir(exist_ok=True)
        self.tensorboard = EventsWriter(str(self.folder / "tensorboard" / "events"))
        if self.resumed:  # TensorBoard hides the earlier files' events from this step on
            self._event(self.resumed + 1, session_log=SessionLog(status=SessionLog.START))
        self.synced = time.monotonic()

    def _event(self, step: int, **fields) -> None:
        from tensorboardX.proto.event_pb2 import Event

        self.tensorboard.write_event(Event(wall_time=time.time(), step=step, **fields))

    def write(self, step: int, metrics: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        from tensorboardX.summary import scalar

        if self.jsonl is None:
            self._open()
        self.jsonl.write(json.dumps({"step": step, **metrics}) + "\n")
        self.jsonl.flush()
        for name, value in metrics.items():
            self._event(step, summary=scalar(name, value))
        self.tensorboard.flush()
        if time.monotonic() - self.synced > SYNC_SECONDS:
            self.sync()

    def sync(self) -> None:
        """Uploads the files to the bucket (a local workdir's are in place already)."""
        if self.enabled and self.bucket:
            self._upload()

    def _upload(self) -> None:
        for file in self.folder.rglob("*"):
            if file.is_file():
                upload(file, self.bucket / file.relative_to(self.folder).as_posix())
        self.synced = time.monotonic()

    def close(self) -> None:
        if self.jsonl is not None:
            self.jsonl.close()
            self.tensorboard.close()
            if self.bucket:
                self._upload()
                shutil.rmtree(self.folder)


def _logged_until(path: epath.Path, step: int) -> tuple[list[str], bool]:
    """The lines of the metrics log `path` for steps up to `step`, and whether it had others (later steps,
    or a line a killed run left half-written)."""
    if not path.exists():
        return [], False
    lines = path.read_text().splitlines()
    kept = []
    for line in lines:
        with contextlib.suppress(ValueError):
            if json.loads(line)["step"] <= step:
                kept.append(line)
    return kept, len(kept) < len(lines)


def train(
    config: Mapping[str, Any],
    workdir: str | os.PathLike,
    records: Sequence[Mapping[str, Any]],
    validation_records: Sequence[Mapping[str, Any]] | None = None,
    on_step: Callable[[int, dict[str, jax.Array]], None] | None = None,
) -> dict[str, float]:
    """Trains for `config.steps` steps (resuming from `workdir` if it has checkpoints).

    `on_step(step, metrics)` runs after every step (custom monitoring). Returns the last logged metrics.
    """
    sampling = dataclass_from_config(MemorySampling, config["memory_sampling"], "memory_sampling")
    mesh = training_mesh(config)
    rules = config["mesh_rules"]
    optimizer = make_optimizer(dict(config["optimizer"]))
    trainable = trainable_filter(list(config["trainable"]))
    step_config = dict(config["step"])
    task = get_task(step_config["task"])
    # This process loads the rows of the global batch its devices hold, from its shard of the records.
    rows = process_batch_rows(mesh, config["batch_size"], rules)
    load = functools.partial(training_dataset, batch_size=len(rows.rows), shard=rows.shard, shards=rows.shards)

    with use_mesh(mesh, rules):
        model, graphdef, state = initial_state(config, mesh, optimizer, trainable)
        paper_tokenizers = model.config.tokenizers
        dataset = load(records, task.example, sampling, seed=config["seed"])
        iterator = iter(dataset)
        # Nothing is written before this point; a new workdir appears with its first checkpoint (RunFolder).
        run = RunFolder(workdir, keep=config["keep_checkpoints"])
        # `run` closes the checkpointer (its save in flight committed) and `closing` the logs however the loop
        # ends, Ctrl-C included, so that the run resumes from its last save with its metrics written.
        with run, contextlib.ExitStack() as closing:
            checkpointer = run.checkpointer
            if checkpointer is not None and checkpointer.latest is not None:
                checkpointer.check_fits(state, model_settings(config))
                state = checkpointer.restore(abstract_like(state), iterator)
                print(f"resumed from step {int(state.step)} in {checkpointer.directory}")
            shard = functools.partial(batch_sharding, mesh, rules=rules)
            steps_fns: dict[StepVariant, Any] = {}

            def step_fn(variant: StepVariant):
                if variant not in steps_fns:
                    steps_fns[variant] = jit_train_step(graphdef, trainable, optimizer, variant, step_config)
                return steps_fns[variant]

            validation = None
            if validation_records:
                val_data = load(validation_records, task.example, sampling, seed=config["seed"] + 1)
                validation = to_train_batch(next(iter(val_data)), lambda a: shard(a.ndim))
                val_variant = StepVariant(paper_tokenizers, None)

                @jax.jit
                def validation_loss(params, batch):
                    trainable_part, frozen = nnx.split_state(params, trainable, ...)
                    return loss_fn(
                        trainable_part,
                        frozen,
                        graphdef,
                        batch,
                        jax.random.key(config["seed"]),
                        val_variant,
                        step_config,
                    )[0]

            key = jax.random.key(config["seed"])
            start, total = int(state.step), config["steps"]
            log = _Log(lambda: run.path, start)
            closing.callback(log.close)
            metrics: dict[str, float] = {}
            progress = tqdm(
                range(start, total),
                initial=start,
                total=total,
                desc="training",
                unit="step",
                disable=jax.process_index() != 0,
            )
            tick = time.perf_counter()
            tokens_seen = 0
            postfix: dict[str, str] = {}
            most = variant_count(sampling, paper_tokenizers)
            for step in progress:
                rng = np.random.default_rng([config["seed"], step])
                variant = StepVariant(*step_variant(rng, sampling, paper_tokenizers))
                batch = to_train_batch(next(iterator), lambda a: shard(a.ndim))
                new_variant, began = variant not in steps_fns, time.perf_counter()
                state, step_metrics = step_fn(variant)(state, batch, jax.random.fold_in(key, step))
                if new_variant:  # its first step compiles it (or loads it from the persistent compilation cache)
                    jax.block_until_ready(step_metrics)
                    postfix["compiled"] = f"{len(steps_fns)}/{most}"
                    progress.set_postfix(postfix)
                    progress.write(
                        f"step {step + 1}: compiled train step variant {len(steps_fns)} of at most {most} "
                        f"({describe_variant(variant)}) in {time.perf_counter() - began:.1f} s; later steps reuse it"
                    )
                tokens_seen += int(np.prod(batch.target.shape[:-1])) // 4  # target tokens of the global batch
                done = step + 1
                if on_step is not None:
                    on_step(done, step_metrics)
                if done % config["log_every"] == 0 or done == total:
                    metrics = {k: float(v) for k, v in step_metrics.items()}
                    elapsed = time.perf_counter() - tick
                    metrics |= {
                        "steps_per_s": config["log_every"] / elapsed,
                        "target_tokens_per_s": tokens_seen / elapsed,
                    }
                    tick, tokens_seen = time.perf_counter(), 0
                    log.write(done, metrics)
                    postfix |= {"loss": f"{metrics['loss']:.4f}", "tok_s": f"{metrics['target_tokens_per_s']:.0f}"}
                    progress.set_postfix(postfix)
                val_loss = None
                if validation is not None and (done % config["eval_every"] == 0 or done == total):
                    val_loss = float(validation_loss(state.params, validation))
                    log.write(done, {"val_loss": val_loss})
                if done % config["checkpoint_every"] == 0 or done == total:
                    run.save(done, state, iterator, val_loss)
                    log.sync()  # a bucket's logs up to the checkpoint
            if run.checkpointer is not None:
                run.checkpointer.wait()
            if int(state.step) == total:
                final = final_params(state, trainable)
                export_weights(
                    final,
                    model.config,
                    run.path / "weights",
                    {"trained": {"steps": total, "ema": state.ema is not None}},
                )
                if validation is not None:
                    samples = sample_validation(
                        graphdef, final, validation, task, step_config["shift"], config["eval_sampling_steps"]
                    )
                    target = to_host(validation.target)
                    if jax.process_index() == 0:
                        write_png(
                            run.path / f"validation_{total}.png",
                            contact_sheet(
                                [to_uint8(target[0, ..., :3]), to_uint8(samples[0, ..., :3])],
                                labels=["ground truth latents", "sampled latents"],
                            ),
                        )
    return metrics


def variant_count(sampling: MemorySampling, paper: TokenizerConfig) -> int:
    """How many train step variants `step_variant` can draw (each compiles once): tokenizer schedules
    times merge ratios."""
    uniform = sampling.uniform_tokenizer_prob
    tokenizers = (uniform < 1) + (len(paper.patches) if uniform > 0 else 0)
    merges = (sampling.merge_prob < 1) + (len(sampling.merge_ratios) if sampling.merge_prob > 0 else 0)
    return tokenizers * merges


def describe_variant(variant: StepVariant) -> str:
    """`tokenizers 1x4x4,1x4x4,1x4x4 then 1x8x8, merge r=0.5` (what a train step variant fixes)."""
    patch = lambda p: "x".join(map(str, p))
    ranked = ",".join(map(patch, variant.tokenizers.ranked))
    tokenizers = (
        f"{ranked} then {patch(variant.tokenizers.rest)}" if ranked else f"all {patch(variant.tokenizers.rest)}"
    )
    merge = "no merging" if variant.keep_ratio is None else f"merge r={variant.keep_ratio:g}"
    return f"tokenizers {tokenizers}, {merge}"


def sample_validation(graphdef, params, batch: TrainBatch, task: Task, shift: float, steps: int) -> np.ndarray:
    """Samples the validation batch's targets with memory (UniPC, `steps` steps): `[B, T, H, W, C]` latents."""
    from mv2v_jax.diffusion.samplers import UniPCSampler, denoise

    @jax.jit
    def velocity(x, t):
        model = nnx.merge(graphdef, params)
        return model(task.streams(x, batch.conditions, model.config.tokenizers), t, batch.context)

    noise = jax.random.normal(jax.random.key(0), batch.target.shape)
    return to_host(denoise(velocity, noise, UniPCSampler(steps, shift), progress=False))
