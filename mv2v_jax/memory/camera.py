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

Two camera inputs (`MemoryConfig.camera_input`):
- "pose" (ReCamMaster's): the 12 numbers of the token's frame's pose, the same for every token of a
  frame. A token's own viewing direction then depends on that pose and on where the token is in the
  frame, which a Wan DiT only knows through RoPE inside attention: to find the memory tokens that
  show what a target token shows, a model must learn the projective geometry itself. The pretrained
  ReCamMaster has; a small model trained from scratch on two CPU cores does not (docs/paper.md).
- "rays" (ours, for the small models): each token's own ray in the reference frame, as Plucker
  coordinates `(d, c x d)` (unit direction d through the token's centre, camera centre c) followed
  by Fourier features `sin(w d), cos(w d)` at `RAY_FREQUENCIES` (as NeRF encodes directions), so that
  "the same direction" is a sharp match a dot product in attention can make. Intrinsics are fixed, as
  the paper fixes them at inference (`camera_hfov_degrees`, square pixels, centred principal point).
  The user input's tokens take the reference camera itself (the identity: a session's source video's
  first camera; training's source videos stand still), not ReCamMaster's tiling of the target's
  trajectory over them, which says nothing about where the input's pixels look.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import einops
import jax
import jax.numpy as jnp
from flax import nnx

from mv2v_jax.geometry import CAMERA_DIM
from mv2v_jax.models.wan.dit import WanDiTConfig, dense
from mv2v_jax.models.wan.sequence import BlockState

if TYPE_CHECKING:
    from mv2v_jax.memory.streams import Stream

RAY_FREQUENCIES = (1.0, 2.0, 4.0, 8.0)  # radians^-1; a base token of the small models spans ~0.12 rad
CAMERA_INPUTS = {"pose": CAMERA_DIM, "rays": 6 + 6 * len(RAY_FREQUENCIES)}  # numbers per token


class CameraLayer(nnx.Module):
    """One block's camera encoder and projector (the `BlockAdapter` the DiT scans with its blocks)."""

    def __init__(self, config: WanDiTConfig, rngs: nnx.Rngs, inputs: int = CAMERA_DIM):
        dim = config.dim
        self.cam_encoder = dense(inputs, dim, ("in", "embed"), config, rngs, nnx.initializers.zeros_init())
        self.projector = dense(dim, dim, ("mlp", "embed"), config, rngs, lambda k, s, d: jnp.eye(s[0], s[1], dtype=d))

    def modulated_input(self, h: jax.Array, state: BlockState) -> jax.Array:
        """`h + cam_encoder(camera)` per token."""
        camera = state.features["camera"].astype(h.dtype)
        return h + self.cam_encoder(camera).astype(h.dtype)

    def attention_output(self, y: jax.Array, state: BlockState) -> jax.Array:
        return self.projector(y)


def camera_adapter(config: WanDiTConfig, rngs: nnx.Rngs, camera_input: str = "pose") -> CameraLayer:
    """`num_layers` camera layers stacked on a leading axis, like `WanDiT.blocks`, for a camera input
    of CAMERA_INPUTS."""

    @nnx.split_rngs(splits=config.num_layers)
    @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
    def make(rngs: nnx.Rngs) -> CameraLayer:
        return CameraLayer(config, rngs, CAMERA_INPUTS[camera_input])

    return make(rngs)


def token_rays(streams: Sequence[Stream], hfov_degrees: float) -> jax.Array:
    """The "rays" camera input `[B, N, CAMERA_INPUTS["rays"]]` of every token of `streams` (packed order).

    A token's pixel is the centre of the base tokens it covers (memory.streams.stream_positions, before
    any RoPE dropout); its frame's pose is the stream's `camera` (the reference-relative camera-to-world
    `[R | c]`, geometry.relative_poses), the identity for the user input.
    """
    from mv2v_jax.memory.streams import stream_positions  # streams imports nothing from here; avoid a cycle

    _, rows, cols = streams[0].grid  # the target's base token grid: the image
    focal = cols / 2 / math.tan(math.radians(hfov_degrees) / 2)
    rays = []
    for stream in streams:
        b = stream.latents.shape[0]
        f, h, w = stream.grid
        positions = stream_positions(stream.replace(rope_keep=None))  # [B, N, 3]
        x = (positions[..., 2] + 0.5 - cols / 2) / focal
        y = (positions[..., 1] + 0.5 - rows / 2) / focal
        local = jnp.stack([x, y, jnp.ones_like(x)], -1)  # [B, N, 3], camera axes
        if stream.role == "input":
            pose = jnp.broadcast_to(jnp.eye(3, 4), (b, f * h * w, 3, 4))
        else:
            per_frame = stream.camera[:, :: stream.patch[0]].reshape(b, f, 3, 4)
            pose = einops.repeat(per_frame, "b f r c -> b (f h w) r c", h=h, w=w)
        d = jnp.einsum("bnij,bnj->bni", pose[..., :3], local)
        d = d / jnp.maximum(jnp.linalg.norm(d, axis=-1, keepdims=True), 1e-6)  # empty slots: all-zero poses
        moment = jnp.cross(pose[..., 3], d)
        angles = jnp.concatenate([w_ * d for w_ in RAY_FREQUENCIES], -1)
        rays.append(jnp.concatenate([d, moment, jnp.sin(angles), jnp.cos(angles)], -1))
    return jnp.concatenate(rays, 1).astype(jnp.float32)
