"""Camera conditioning: ReCamMaster's per-block camera encoder and projector, per video.

ReCamMaster (KwaiVGI/ReCamMaster, diffsynth/models/wan_video_dit.py `DiTBlock.forward`) adds to every
Wan block a camera encoder `Linear(12, dim)` (zero-initialised) whose output is added to the modulated
self-attention input, and a projector `Linear(dim, dim)` (identity-initialised) on the self-attention
output. It embeds only the target trajectory and tiles it over the source frames. Memory-V2V gives
every video its own trajectory instead: each token gets the embedding of its own video's camera at its
own frame (`Stream.camera`, carried per token as `features["camera"]`). With zero-initialised encoders
and identity projectors the adapter is the identity, so the model is plain Wan.

Camera inputs are ReCamMaster's: frame i's camera-to-world pose expressed in the reference camera's
frame, `W2C_ref @ C2W_i`, top three rows flattened row-major (12 numbers), in OpenCV axes (x right,
y down, z forward: ReCamMaster's column permutation `[1, 2, 0, 3]` with the y flip turns its Unreal
Engine matrices into exactly that) with translations in metres (its `/ 100`); `geometry.relative_poses`
computes them. The reference camera is the SOURCE video's first camera, for the target and for every
memory video, in training and at inference alike. That is what ReCamMaster's camera encoder was
trained with (its training code takes poses relative to the condition video's first camera; only
its inference script re-bases on the target, which is the same frame when the target starts at the
source camera, as its preset trajectories do). It also makes the first turn well posed: the target's
first pose says where the new camera starts relative to the video the model sees.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from mv2v_jax.geometry import CAMERA_DIM
from mv2v_jax.models.wan.dit import WanDiTConfig, dense
from mv2v_jax.models.wan.sequence import BlockState


class CameraLayer(nnx.Module):
    """One block's camera encoder and projector (the `BlockAdapter` the DiT scans with its blocks)."""

    def __init__(self, config: WanDiTConfig, rngs: nnx.Rngs):
        dim = config.dim
        self.cam_encoder = dense(CAMERA_DIM, dim, ("in", "embed"), config, rngs, nnx.initializers.zeros_init())
        self.projector = dense(dim, dim, ("mlp", "embed"), config, rngs, lambda k, s, d: jnp.eye(s[0], s[1], dtype=d))

    def modulated_input(self, h: jax.Array, state: BlockState) -> jax.Array:
        """`h + cam_encoder(camera)` per token."""
        camera = state.features["camera"].astype(h.dtype)
        return h + self.cam_encoder(camera).astype(h.dtype)

    def attention_output(self, y: jax.Array, state: BlockState) -> jax.Array:
        return self.projector(y)


def camera_adapter(config: WanDiTConfig, rngs: nnx.Rngs) -> CameraLayer:
    """`num_layers` camera layers stacked on a leading axis, like `WanDiT.blocks`."""

    @nnx.split_rngs(splits=config.num_layers)
    @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
    def make(rngs: nnx.Rngs) -> CameraLayer:
        return CameraLayer(config, rngs)

    return make(rngs)
