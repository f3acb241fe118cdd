"""Training checkpoint retention (orbax preservation policies): the last `keep` steps and the step with
the lowest validation loss survive, whatever order the losses come in; the rest are deleted."""

import grain
import jax.numpy as jnp
import numpy as np

from mv2v_jax.train.checkpoint import Checkpointer, abstract_like


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
