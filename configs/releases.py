"""Where the real backbones' weights are published: the `release` section of configs/recammaster_nvs.py and
configs/lucy_edit_long.py, which `python -m convert_weights.fetch --config ...` downloads and converts.

    get_config("recammaster_nvs")
    get_config("lucy_edit_long")

`repos`: Hugging Face model repositories, each at a commit (`revision`) and under its licence
(`non_commercial`: fetch asks for `--accept_license`). `outputs`: every weights folder of the config, named
by the config field that holds its path (`field`), converted by `convert` (convert_weights.fetch.CONVERTERS)
from the files `files` lists per repository (exact names, or hub patterns such as `vae/*.safetensors`).
The two configs share the umT5 encoder and tokenizer folders, converted from the same files (one
definition below), so fetching the second config finds them in place.
"""

import ml_collections

REPOS = {
    # Wan2.1's native release: ReCamMaster's base, and the umT5-XXL encoder and tokenizer Wan2.1 and
    # Wan2.2 (LucyEdit's base) encode prompts with.
    "wan": dict(
        id="Wan-AI/Wan2.1-T2V-1.3B",
        revision="37ec512624d61f7aa208f7ea8140a131f93afc9a",
        license="Apache-2.0",
        non_commercial=False,
    ),
    # ReCamMaster's released DiT (DiffSynth's WanModel with camera layers), trained on Wan2.1-T2V-1.3B.
    "recammaster": dict(
        id="KwaiVGI/ReCamMaster-Wan2.1",
        revision="4f3f7391743dfd25067ab27e0f1eb8928d11b91d",
        license="Apache-2.0",
        non_commercial=False,
    ),
    # LucyEdit, a diffusers pipeline folder. Not pinned: no commit of this repository was at hand when this
    # was written; pin one (its "Files and versions" history) here or with
    # --config.release.repos.lucy_edit.revision=<commit> before relying on the result.
    "lucy_edit": dict(
        id="decart-ai/Lucy-Edit-Dev",
        revision="main",
        license="Decart's licence on its model card: non-commercial use only",
        non_commercial=True,
    ),
    # DINOv2 ViT-B/14 (transformers layout): long editing's retrieval embedder.
    "dinov2": dict(
        id="facebook/dinov2-base",
        revision="f9e44c814b77203eaa57a6bdbbd535f21ede1415",
        license="Apache-2.0",
        non_commercial=False,
    ),
}
# Wan's native umT5 file (the encoder alone, bfloat16) and the tokenizer file the library reads
# (models/text/tokenizer.py: tokenizer.json first).
TEXT = dict(
    text=dict(field="sample.text.weights", convert="umt5", files=dict(wan=("models_t5_umt5-xxl-enc-bf16.pth",))),
    tokenizer=dict(field="sample.text.tokenizer", convert="copy", files=dict(wan=("google/umt5-xxl/tokenizer.json",))),
)
OUTPUTS = {
    "recammaster_nvs": dict(
        # The checkpoint has no config: Wan2.1-T2V-1.3B's config.json beside it gives the architecture.
        model=dict(
            field="sample.weights",
            convert="memory_dit",
            files=dict(recammaster=("step20000.ckpt",), wan=("config.json",)),
        ),
        codec=dict(field="sample.codec.weights", convert="wan_vae", files=dict(wan=("Wan2.1_VAE.pth",))),
        **TEXT,
    ),
    "lucy_edit_long": dict(
        # One safetensors file or shards with their index: the pattern takes whichever the repository has.
        model=dict(
            field="sample.weights",
            convert="memory_dit",
            files=dict(lucy_edit=("transformer/config.json", "transformer/diffusion_pytorch_model*.safetensors*")),
        ),
        codec=dict(
            field="sample.codec.weights",
            convert="wan_vae",
            files=dict(lucy_edit=("vae/config.json", "vae/diffusion_pytorch_model*.safetensors*")),
        ),
        **TEXT,
        embedder=dict(
            field="sample.embedder.weights",
            convert="dinov2",
            files=dict(dinov2=("config.json", "model.safetensors")),
        ),
    ),
}


def get_config(arg: str = "recammaster_nvs") -> ml_collections.ConfigDict:
    if arg not in OUTPUTS:
        raise ValueError(f"unknown release {arg!r}; choose one of {sorted(OUTPUTS)}")
    outputs = OUTPUTS[arg]
    used = {repo for output in outputs.values() for repo in output["files"]}
    return ml_collections.ConfigDict(dict(repos={k: v for k, v in REPOS.items() if k in used}, outputs=outputs))
