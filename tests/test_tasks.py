"""Tasks: each is one object the train step, loader, pipelines and bank ask; a new conditioning scheme is
one new Task (shown with a third one defined here); the conventions both tasks share with their backbones."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from train_fixtures import latent_scene, long_edit_pair, micro_config

from mv2v_jax.data.loader import to_train_batch, training_dataset
from mv2v_jax.data.memory_sampling import MemorySampling
from mv2v_jax.geometry import relative_poses
from mv2v_jax.memory.builders import Conditions, MemoryBatch, recammaster_streams
from mv2v_jax.memory.model import MemoryConfig, MemoryDiT
from mv2v_jax.memory.streams import Stream, pack_streams
from mv2v_jax.models.text.conditioning import TextConditioning
from mv2v_jax.pipelines.denoiser import Denoiser, SamplingConfig
from mv2v_jax.retrieval.bank import MemoryBank, MemoryEntry
from mv2v_jax.tasks import TASKS, Task, get_task
from mv2v_jax.tasks.nvs import NovelViewSynthesis
from mv2v_jax.train.step import StepVariant, loss_fn

SAMPLING = MemorySampling(slots=3, min_memory=1, max_memory=3)


class CameraFreeViews(NovelViewSynthesis):
    """A third conditioning scheme, defined only here: novel views without camera layers or camera inputs
    (the source frame-concatenated, memory as NVS). Registering it is all the library needs."""

    name = "views_without_cameras"
    adapters = ()

    def streams(self, noisy, conditions, tokenizers, *, input_rope_keep=None):
        memory = dataclasses.replace(conditions.memory, camera=None)
        return recammaster_streams(noisy, conditions.inputs, None, memory, tokenizers=tokenizers)

    def example(self, record, rng, sampling):
        example = super().example(record, rng, sampling)
        return {k: v for k, v in example.items() if k not in ("camera", "memory_camera")}


def test_unknown_task_is_named():
    with pytest.raises(ValueError, match=r"unknown task 'nsv'; choose one of \['long_edit', 'nvs'\]"):
        get_task("nsv")


def test_check_model_names_what_does_not_fit():
    nvs, long_edit = get_task("nvs"), get_task("long_edit")
    config = MemoryConfig.from_config(micro_config("nvs")["model"])
    nvs.check_model(config, 4)
    with pytest.raises(ValueError, match=r"long_edit needs a model with block adapters \[\]"):
        long_edit.check_model(config, 4)
    with pytest.raises(ValueError, match="needs a DiT with 6 input channels; these weights take 4"):
        nvs.check_model(config, 6)
    long_edit.check_model(MemoryConfig.from_config(micro_config("long_edit")["model"]), 4)  # 8 = noisy + condition


@pytest.mark.slow
def test_a_third_task_trains_and_samples_without_touching_the_library(tmp_path, monkeypatch):
    task = CameraFreeViews()
    monkeypatch.setitem(TASKS, task.name, task)
    config = micro_config("nvs")
    config["model"]["adapters"] = task.adapters
    config["step"]["task"] = task.name
    model = MemoryDiT(MemoryConfig.from_config(config["model"]), rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model)
    data = training_dataset([latent_scene(i) for i in range(3)], task.example, SAMPLING, 2, seed=0)
    batch = to_train_batch(next(iter(data)))
    assert batch.conditions.extras == {} and batch.conditions.memory.camera is None
    variant = StepVariant(model.config.tokenizers, 0.5)
    loss = loss_fn(params, nnx.State({}), graphdef, batch, jax.random.key(0), variant, config["step"])[0]
    assert np.isfinite(float(loss))
    # Inference: the Denoiser and the bank take the task as they are.
    denoiser = Denoiser(model, task, SamplingConfig(steps=2, guidance=1.0), TextConditioning(text_dim=16))
    conditions = jax.tree.map(lambda a: a[:1], batch.conditions)
    latents, _ = denoiser.sample(conditions, "", 0, batch.target.shape[1:])
    assert latents.shape == batch.target.shape[1:] and np.isfinite(latents).all()
    with MemoryBank.create(tmp_path / "bank", task.name, "h", key=task.retrieval_key) as bank:
        bank.add(MemoryEntry(latents, turn=1, cameras=np.zeros((latents.shape[0], 3, 4))))
        assert bank.task == task.name and bank.key == "cameras"


def test_nvs_cameras_are_relative_to_the_source_first_camera():
    scene = latent_scene(0, views=4)
    rng = np.random.default_rng(3)
    example = get_task("nvs").example(scene, rng, SAMPLING)
    views = scene["latents"]
    target = next(v for v in range(len(views)) if np.array_equal(views[v], example["target"]))
    source = next(v for v in range(len(views)) if np.array_equal(views[v], example["inputs"]))
    w2c = scene["w2c"].astype(np.float64)
    np.testing.assert_allclose(example["camera"], relative_poses(w2c[target], w2c[source, 0]), atol=1e-6)
    # The target starts somewhere else than the source, and its camera input says where.
    assert np.abs(example["camera"][0] - np.eye(3, 4).ravel()).max() > 0.1
    for slot in np.flatnonzero(example["memory_valid"]):
        view = next(v for v in range(len(views)) if np.array_equal(views[v], example["memory_latents"][slot]))
        np.testing.assert_allclose(example["memory_camera"][slot], relative_poses(w2c[view], w2c[source, 0]), atol=1e-6)


def rope_times(streams: list[Stream]) -> list[float]:
    """Each memory stream's first temporal RoPE index."""
    memory = [s for s in streams if s.role == "memory"]
    return [float(np.asarray(s.frame_times).reshape(-1, s.latents.shape[1])[0, 0]) for s in memory]


@pytest.mark.parametrize("name", ["nvs", "long_edit"])
def test_memory_order_is_the_same_in_training_and_inference(name):
    """Training (the train step) and inference (the Denoiser) build streams through the one `Task.streams`;
    the newest memory sits nearest the input band in both (hierarchical_rope's reasoning)."""
    task = get_task(name)
    t, size, c = 3, 8, 4
    slots = 3
    latents = jnp.ones((1, slots, t, size, size, task.memory_factor * c))
    cameras = jnp.zeros((1, slots, t, 12)) if name == "nvs" else None
    memory = MemoryBatch(latents, jnp.ones((1, slots), bool), jnp.array([[5, 2, 3]]), cameras)
    extras = {"camera": jnp.zeros((1, t, 12))} if name == "nvs" else {}
    conditions = Conditions(jnp.ones((1, t, size, size, c)), memory, extras)
    tokenizers = MemoryConfig.from_config(micro_config(name)["model"]).tokenizers
    streams = task.streams(jnp.zeros((1, t, size, size, c)), conditions, tokenizers)
    times = rope_times(streams)
    if name == "nvs":  # the band from 2T: newest (turn 5) first, then turn 3, then turn 2
        assert times[0] < times[2] < times[1]
    else:  # slot 0 is the previous segment at T; older ones on the band from 2T, newest (3) first
        assert times[0] == t and times[2] < times[1]


def test_long_edit_examples_remember_segments_before_the_target():
    pair = long_edit_pair(1, segments=5)
    targets = []
    for seed in range(40):
        example = get_task("long_edit").example(pair, np.random.default_rng(seed), SAMPLING)
        segment = next(s for s in range(5) if np.array_equal(pair["edited_latents"][s], example["target"]))
        turns = example["memory_turns"][example["memory_valid"]]
        targets.append(segment)
        if segment == 0:  # the first segment: nothing earlier to remember
            assert not example["memory_valid"].any() and not example["memory_latents"].any()
        else:
            assert turns[0] == segment - 1 and (turns < segment).all()
    assert 0 in targets and len(set(targets)) == 5  # every segment, the first included, is a target


def test_task_subclass_must_implement_the_protocol():
    with pytest.raises(TypeError, match="abstract"):
        Task()


@pytest.mark.parametrize("name", ["nvs", "long_edit"])
def test_layout_from_shapes_is_the_packed_layout(name):
    """Cost accounting reads the layout from shapes alone; it is exactly what packing the streams gives."""
    task = get_task(name)
    model = MemoryDiT(MemoryConfig.from_config(micro_config(name)["model"]), rngs=nnx.Rngs(0))
    t, size, c, slots = 3, 8, 4, 2
    memory = MemoryBatch(
        jnp.ones((1, slots, t, size, size, task.memory_factor * c)),
        jnp.array([[True, False]]),
        jnp.array([[1, 0]]),
        jnp.zeros((1, slots, t, 12)) if name == "nvs" else None,
    )
    extras = {"camera": jnp.zeros((1, t, 12))} if name == "nvs" else {}
    conditions = Conditions(jnp.ones((1, t, size, size, c)), memory, extras)
    noisy = jnp.zeros((1, t, size, size, c))
    packed = pack_streams(
        task.streams(noisy, conditions, model.config.tokenizers), model.tokenizers.mapping(model.dit.patch_embedding)
    )
    abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), (noisy, conditions))
    assert task.layout(*abstract, model.config.tokenizers) == packed.layout
