"""Training checkpoint retention (orbax preservation policies): the last `keep` steps and the step with
the lowest validation loss survive, whatever order the losses come in; the rest are deleted. A checkpoint
a changed config no longer fits is refused naming an array, both shapes and the setting that changed."""

import grain
import jax.numpy as jnp
import numpy as np
import pytest

from mv2v_jax.train.checkpoint import Checkpointer, CheckpointMismatch, abstract_like, mismatch


def state(step: int) -> dict:
    return {"w": jnp.full((4, 3), float(step)), "step": jnp.asarray(step, jnp.int32)}


def test_retention_keeps_the_latest_and_the_best(tmp_path):
    iterator = iter(grain.MapDataset.range(100).to_iter_dataset())
    losses = {1: 5.0, 2: 1.0, 3: None, 4: 4.0, 5: 3.0, 6: None, 7: 6.0}  # None: no validation that step
    checkpointer = Checkpointer(tmp_path / "checkpoints", keep=2)
    try:
        for step, loss in losses.items():
            next(iterator)
            checkpointer.save(step, state(step), iterator, val_loss=loss)
        checkpointer.wait()
        assert checkpointer.manager.all_steps() == [2, 6, 7]
        assert (checkpointer.best, checkpointer.latest) == (2, 7)
        restored = checkpointer.restore(abstract_like(state(0)), iter(grain.MapDataset.range(100).to_iter_dataset()), 2)
        np.testing.assert_array_equal(restored["w"], state(2)["w"])
    finally:
        checkpointer.close()
    reopened = Checkpointer(tmp_path / "checkpoints", keep=2)  # the metrics are on disk with their steps
    try:
        assert (reopened.best, reopened.latest) == (2, 7)
    finally:
        reopened.close()


def train_state(layers: int, dim: int, ema: bool = False) -> dict:
    """A train state's layout: stacked block kernels, a head, the optimizer's moments (and an EMA)."""
    params = {
        "dit": {"blocks": {"q": {"kernel": jnp.zeros((layers, dim, dim))}}, "head": {"kernel": jnp.zeros((dim, 12))}}
    }
    state = {"params": params, "opt_state": {"mu": params}, "step": jnp.asarray(1, jnp.int32)}
    return state | ({"ema": params} if ema else {})


SETTINGS = {"model.dit.dim": 32, "model.dit.num_layers": 3, "model.dit.in_channels": 12, "model.dit.text_dim": 16}


def saved(tmp_path, state) -> Checkpointer:
    checkpointer = Checkpointer(tmp_path / "checkpoints")
    checkpointer.save(5, state, iter(grain.MapDataset.range(4).to_iter_dataset()))
    checkpointer.wait()
    return checkpointer


@pytest.mark.parametrize(
    "changed, settings, message",
    [
        (
            dict(layers=4, dim=32),
            SETTINGS | {"model.dit.num_layers": 4},
            r"params/dit/blocks/q/kernel is \(3, 32, 32\) there but \(4, 32, 32\) here \(and 1 more arrays\): "
            r"model\.dit\.num_layers \(now 4\) changed since it was saved",
        ),
        (
            dict(layers=3, dim=48),
            SETTINGS | {"model.dit.dim": 48},
            r"params/dit/blocks/q/kernel is \(3, 32, 32\) there but \(3, 48, 48\) here \(and 3 more arrays\): "
            r"model\.dit\.dim \(now 48\) changed since it was saved",
        ),
        (
            dict(layers=3, dim=32, ema=True),
            SETTINGS,
            r"2 arrays are in only this config, e\.g\. ema/dit/blocks/q/kernel: step\.ema_decay or trainable changed",
        ),
    ],
)
def test_a_checkpoint_the_config_no_longer_fits_is_named_before_orbax_reads_it(tmp_path, changed, settings, message):
    checkpointer = saved(tmp_path, train_state(layers=3, dim=32))
    try:
        checkpointer.check_fits(abstract_like(train_state(layers=3, dim=32)), SETTINGS)  # the same config fits
        with pytest.raises(CheckpointMismatch, match=message) as error:
            checkpointer.check_fits(abstract_like(train_state(**changed)), settings)
        assert str(error.value).startswith(
            f"checkpoint step 5 in {tmp_path / 'checkpoints'} does not fit this config: "
        )
    finally:
        checkpointer.close()


def test_every_setting_of_a_new_size_is_named_and_a_checkpoint_that_fits_passes():
    stored = {"params/a": (3, 32), "params/b": (16, 8)}
    settings = {"model.dit.num_layers": 16, "model.dit.text_dim": 16, "model.dit.dim": 32}
    message = mismatch(stored, {"params/a": (16, 32), "params/b": (16, 8)}, settings)
    assert message == (
        "params/a is (3, 32) there but (16, 32) here: model.dit.num_layers (now 16) or model.dit.text_dim (now 16) "
        "changed since it was saved"
    )
    assert mismatch(stored, {"params/a": (3, 40), "params/b": (16, 8)}, settings).endswith(
        ": a model setting changed since it was saved"  # 40 is no setting's value
    )
    assert mismatch(stored, dict(stored), settings) is None
