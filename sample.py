"""Sample from a Wan DiT: `python sample.py --out outputs/demo`.

What exists so far is the text-to-video DiT (issue A); the VAE, text encoder, memory and the
multi-turn pipelines arrive with later issues. Until a trained checkpoint ships, this runs the tiny
preset with RANDOM weights and says so: it exercises the real model and sampler end to end and
writes the sampled latents (`latents.npy`) and a contact sheet of their first three channels per
frame (`latents.png`).

    python sample.py --config configs/wan_dit.py:tiny --out outputs/demo
    python sample.py --weights converted/wan2.1-t2v-1.3b --out outputs/t2v --latent_shape 21,60,104
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from flax import nnx
from ml_collections import config_flags

from mv2v_jax.diffusion.samplers import denoise, make_sampler
from mv2v_jax.io.images import contact_sheet, to_uint8, write_png
from mv2v_jax.memory.streams import Stream, pack_streams
from mv2v_jax.models.wan.dit import WanDiT, WanDiTConfig, load_dit

config_flags.DEFINE_config_file("config", "configs/wan_dit.py:tiny", "DiT preset used when --weights is not given.")
flags.DEFINE_string("weights", None, "converted weights directory (convert_weights.wan_dit); default: random")
flags.DEFINE_string("out", "outputs/demo", "output folder")
flags.DEFINE_list("latent_shape", ["5", "16", "24"], "latent frames, height, width")
flags.DEFINE_integer("steps", 10, "UniPC steps")
flags.DEFINE_float("shift", 5.0, "sigma shift (Wan T2V: 5.0)")
flags.DEFINE_integer("seed", 0, "noise seed")
FLAGS = flags.FLAGS


def main(argv: list[str]) -> int:
    del argv
    if FLAGS.weights:
        model = load_dit(FLAGS.weights)
        source = FLAGS.weights
    else:
        model = WanDiT(WanDiTConfig.from_config(FLAGS.config), rngs=nnx.Rngs(FLAGS.seed))
        source = "RANDOM WEIGHTS"
        print("NOTE: no trained checkpoint is shipped yet: this DiT has RANDOM weights, so the output is noise-like.")
    cfg = model.config
    frames, height, width = (int(v) for v in FLAGS.latent_shape)
    key = jax.random.key(FLAGS.seed)
    noise = jax.random.normal(key, (1, frames, height, width, cfg.out_channels))
    # No text encoder yet: an all-zero prompt embedding, as Wan pads unused text positions.
    context = jnp.zeros((1, 8, cfg.text_dim))
    graphdef, state = nnx.split(model)

    @jax.jit
    def velocity(state, x, t):
        dit = nnx.merge(graphdef, state)
        return dit(pack_streams([Stream(x)], {cfg.patch_size: dit.patch_embedding}), t, context)

    latents = denoise(lambda x, t: velocity(state, x, t), noise, make_sampler("unipc", FLAGS.steps, FLAGS.shift))
    latents = np.asarray(latents[0])

    out = Path(FLAGS.out)
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "latents.npy", latents)
    write_png(out / "latents.png", contact_sheet([to_uint8(latents[..., :3])]))
    (out / "run.json").write_text(
        json.dumps(
            {
                "weights": source,
                "latent_shape": list(latents.shape),
                "steps": FLAGS.steps,
                "shift": FLAGS.shift,
                "seed": FLAGS.seed,
            }
        )
    )
    print(f"wrote {out}/latents.npy, {out}/latents.png, {out}/run.json ({source})")
    return 0


if __name__ == "__main__":
    sys.exit(app.run(main))
