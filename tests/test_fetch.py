"""`python -m convert_weights.fetch`: the real configs' releases, from a Hugging Face cache to weights the
pipeline loads, with everything but the network.

The cache is laid out as huggingface_hub lays it out (models--org--name/blobs, snapshots/<commit>, refs/main)
and holds the repositories the configs name, at their revisions, with their file names and layouts (native
Wan files, ReCamMaster's DiffSynth checkpoint, diffusers and transformers folders, shards with an index),
filled with tiny random PyTorch models of the `:tiny` configs' shapes. HF_HUB_OFFLINE is set throughout.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from diffsynth_layout import diffsynth_state_dict
from torch_reference import randomize
from vae_reference import native_state_dict

import convert_weights.fetch as fetch_module
from convert_weights.fetch import CARD_FILE, RELEASE_FILE, FetchError, fetch
from convert_weights.random import write_tokenizer
from convert_weights.umt5 import hf_to_native
from mv2v_jax.config import load_config
from mv2v_jax.memory.model import load_memory_dit
from mv2v_jax.models.text.tokenizer import UMT5Tokenizer
from mv2v_jax.models.text.umt5 import load_umt5
from mv2v_jax.models.vision.dinov2 import load_dinov2
from mv2v_jax.models.wan.vae import load_vae
from mv2v_jax.models.weights import CHECKSUMS_FILE

ROOT = Path(__file__).parents[1]
NVS, LONG_EDIT = "configs/recammaster_nvs.py", "configs/lucy_edit_long.py"
LFS = (".safetensors", ".pth", ".ckpt")  # stored through git LFS on the hub: the blob is named by its sha256
LUCY_COMMIT = hashlib.sha1(b"Lucy-Edit-Dev main").hexdigest()  # the fake repository's `main`


def tiny(spec: str, weights_dir: Path):
    config = load_config(f"{spec}:tiny")
    config.weights_dir = str(weights_dir)
    return config


def hub_repo(cache: Path, repo_id: str, commit: str, folder: Path) -> None:
    """`folder`'s files as the repository `repo_id` at `commit` in the Hugging Face cache `cache`: each file's
    bytes in blobs/<etag> (an LFS file's sha256, else git's blob sha1), snapshots/<commit>/<path> a relative
    symlink to it, refs/main naming the commit."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = file.read_bytes()
        etag = (
            hashlib.sha256(data).hexdigest()
            if file.suffix in LFS
            else hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        )
        blob = repo / "blobs" / etag
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = repo / "snapshots" / commit / file.relative_to(folder)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)


def wan_dit(dit):
    """A random diffusers Wan transformer of the config's `model.dit`."""
    from diffusers import WanTransformer3DModel

    torch.manual_seed(0)
    model = WanTransformer3DModel(
        num_attention_heads=dit.num_heads,
        attention_head_dim=dit.dim // dit.num_heads,
        in_channels=dit.in_channels,
        out_channels=dit.out_channels,
        text_dim=dit.text_dim,
        freq_dim=dit.freq_dim,
        ffn_dim=dit.ffn_dim,
        num_layers=dit.num_layers,
        patch_size=tuple(dit.patch_size),
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        eps=dit.eps,
        rope_max_seq_len=dit.rope_max_len,
    )
    return model


def wan_vae(preset: str):
    """A random diffusers Wan VAE of a configs/wan_vae.py preset."""
    from diffusers import AutoencoderKLWan

    p = load_config(f"configs/wan_vae.py:{preset}")
    torch.manual_seed(0)
    model = AutoencoderKLWan(
        base_dim=p.base_dim,
        decoder_base_dim=p.decoder_base_dim,
        z_dim=p.z_dim,
        dim_mult=list(p.dim_mult),
        num_res_blocks=p.num_res_blocks,
        temperal_downsample=list(p.temporal_downsample),
        is_residual=p.is_residual,
        in_channels=p.in_channels,
        out_channels=p.out_channels,
        patch_size=p.patch_size if p.patch_size > 1 else None,
        scale_factor_spatial=8 * p.patch_size,
        latents_mean=list(p.latents_mean),
        latents_std=list(p.latents_std),
    )
    return randomize(model, 1)


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """The Hugging Face cache, and a few source tensors to find again in the converted weights."""
    from transformers import Dinov2Config, Dinov2Model, UMT5Config, UMT5EncoderModel

    tmp = tmp_path_factory.mktemp("releases")
    cache = tmp / "hub"
    nvs, long_edit = load_config(f"{NVS}:tiny"), load_config(f"{LONG_EDIT}:tiny")
    repos = {**nvs.release.repos, **long_edit.release.repos}
    folders = {key: tmp / key for key in repos}

    # Wan2.1-T2V-1.3B's native release: config.json, the DiT, the VAE, umT5 and its tokenizer folder.
    dit = nvs.model.dit
    native_config = dict(
        _class_name="WanModel",
        dim=dit.dim,
        eps=dit.eps,
        ffn_dim=dit.ffn_dim,
        freq_dim=dit.freq_dim,
        in_dim=dit.in_channels,
        model_type="t2v",
        num_heads=dit.num_heads,
        num_layers=dit.num_layers,
        out_dim=dit.out_channels,
        text_len=512,
        text_dim=dit.text_dim,  # absent from the real file (Wan's 4096 default); the tiny model's is 64
    )
    wan = folders["wan"]
    (wan / "google" / "umt5-xxl").mkdir(parents=True)
    (wan / "config.json").write_text(json.dumps(native_config))
    recam = randomize(wan_dit(dit), 2)
    for block in recam.blocks:  # ReCamMaster's per-block camera layers
        block.cam_encoder, block.projector = torch.nn.Linear(12, dit.dim), torch.nn.Linear(dit.dim, dit.dim)
    recam = randomize(recam, 3)
    checkpoint = diffsynth_state_dict(recam)
    import safetensors.torch

    plain = {k: v for k, v in checkpoint.items() if "cam_encoder" not in k and "projector" not in k}
    safetensors.torch.save_file(plain, wan / "diffusion_pytorch_model.safetensors")  # not read: a decoy
    vae21 = wan_vae(nvs.sample.codec.preset)
    torch.save(native_state_dict(vae21), wan / "Wan2.1_VAE.pth")
    t5 = load_config(f"configs/umt5.py:{nvs.sample.text.preset}")
    torch.manual_seed(0)
    umt5 = randomize(
        UMT5EncoderModel(
            UMT5Config(
                vocab_size=t5.vocab_size,
                d_model=t5.d_model,
                d_kv=t5.d_kv,
                d_ff=t5.d_ff,
                num_heads=t5.num_heads,
                num_layers=t5.num_layers,
                dropout_rate=0.0,
            )
        ),
        4,
    )
    native = {hf_to_native(k): v.to(torch.bfloat16) for k, v in umt5.state_dict().items()}
    del native[hf_to_native("encoder.embed_tokens.weight")]  # Wan's T5Encoder has token_embedding only
    torch.save(native, wan / "models_t5_umt5-xxl-enc-bf16.pth")
    write_tokenizer(wan / "google" / "umt5-xxl")
    (wan / "google" / "umt5-xxl" / "special_tokens_map.json").write_text("{}")  # not read by the library

    # ReCamMaster: the DiffSynth checkpoint alone.
    folders["recammaster"].mkdir()
    torch.save(checkpoint, folders["recammaster"] / "step20000.ckpt")

    # Lucy-Edit-Dev: a diffusers pipeline folder, the transformer in shards with an index.
    lucy = folders["lucy_edit"]
    (lucy / "model_index.json").parent.mkdir()
    (lucy / "model_index.json").write_text(json.dumps({"_class_name": "LucyEditPipeline"}))
    lucy_dit = randomize(wan_dit(long_edit.model.dit), 5)
    lucy_dit.save_pretrained(lucy / "transformer", max_shard_size="200KB")
    vae22 = wan_vae(long_edit.sample.codec.preset)
    vae22.save_pretrained(lucy / "vae")

    # facebook/dinov2-base: a transformers folder.
    d = load_config(f"configs/dinov2.py:{long_edit.sample.embedder.preset}")
    torch.manual_seed(0)
    dino = randomize(
        Dinov2Model(
            Dinov2Config(
                hidden_size=d.hidden_size,
                num_hidden_layers=d.num_layers,
                num_attention_heads=d.num_heads,
                image_size=d.image_size,
                patch_size=d.patch_size,
                layer_norm_eps=d.layer_norm_eps,
            )
        ),
        6,
    )
    dino.save_pretrained(folders["dinov2"])

    for key, repo in repos.items():
        hub_repo(cache, repo.id, repo.revision if len(repo.revision) == 40 else LUCY_COMMIT, folders[key])
    shards = sorted(p.name for p in (lucy / "transformer").iterdir())
    assert len(shards) > 3 and "diffusion_pytorch_model.safetensors.index.json" in shards  # sharded, as asked
    references = {
        "projector": checkpoint["blocks.1.projector.weight"].numpy(),
        "lucy_patch_bias": lucy_dit.patch_embedding.bias.detach().numpy(),
        "vae21_conv_in": vae21.encoder.conv_in.bias.detach().numpy(),
        "vae22_conv_in": vae22.encoder.conv_in.bias.detach().numpy(),
        "umt5_embedding": native["token_embedding.weight"].float().numpy(),
        "dino_cls": dino.embeddings.cls_token.detach().numpy(),
    }
    return cache, references


@pytest.fixture
def offline(hub, monkeypatch):
    """huggingface_hub reading `hub` only, as HF_HUB_CACHE=... HF_HUB_OFFLINE=1 make it (both are read at import)."""
    from huggingface_hub import constants

    cache, _ = hub
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return hub


@pytest.fixture(scope="module")
def fetched(hub, tmp_path_factory):
    """Both configs fetched into one weights folder (the shared umT5 folders converted once), and what was printed."""
    from huggingface_hub import constants

    cache, _ = hub
    root = tmp_path_factory.mktemp("weights")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(constants, "HF_HUB_CACHE", str(cache))
        patch.setattr(constants, "HF_HUB_OFFLINE", True)
        nvs = fetch(tiny(NVS, root), NVS)
        with pytest.raises(FetchError, match=r"decart-ai/Lucy-Edit-Dev is released for non-commercial use only.*"):
            fetch(tiny(LONG_EDIT, root), LONG_EDIT)  # without --accept_license
        refused = sorted(p.name for p in root.iterdir())
        long_edit = fetch(tiny(LONG_EDIT, root), LONG_EDIT, accept_license=True)
    return root, nvs, refused, long_edit


def test_fetch_writes_every_folder_the_configs_read_and_the_pipeline_loads_them(fetched, hub):
    root, nvs, refused, long_edit = fetched
    _, ref = hub
    names = ["recammaster", "wan2.1_vae", "umt5", "umt5_tokenizer"]
    assert sorted(nvs) == [root / name for name in sorted(names)]
    assert refused == sorted(names)  # the licence refusal wrote nothing
    assert sorted(long_edit) == [root / name for name in ("dinov2-base", "lucy_edit", "wan2.2_vae")]  # umT5: in place
    for spec in (NVS, LONG_EDIT):
        config = tiny(spec, root)
        assert config.init_weights == config.sample.weights  # training starts from the fetched model too

    model = load_memory_dit(root / "recammaster")
    assert model.config.record() == load_memory_dit(root / "recammaster").config.record()
    projector = np.asarray(model.camera.projector.kernel[...])[1]  # block 1, [in, out]
    np.testing.assert_array_equal(projector, ref["projector"].T)
    lucy = load_memory_dit(root / "lucy_edit")
    np.testing.assert_array_equal(np.asarray(lucy.dit.patch_embedding.bias[...]), ref["lucy_patch_bias"])
    assert not lucy.config.adapters and model.config.adapters == ("camera",)
    vae21, vae22 = load_vae(root / "wan2.1_vae"), load_vae(root / "wan2.2_vae")
    np.testing.assert_array_equal(np.asarray(vae21.encoder.conv_in.bias[...]), ref["vae21_conv_in"])
    np.testing.assert_array_equal(np.asarray(vae22.encoder.conv_in.bias[...]), ref["vae22_conv_in"])
    umt5 = load_umt5(root / "umt5")
    np.testing.assert_array_equal(np.asarray(umt5.token_embedding[...], np.float32), ref["umt5_embedding"])
    dino = load_dinov2(root / "dinov2-base")
    np.testing.assert_array_equal(np.asarray(dino.embeddings.cls_token[...]), ref["dino_cls"])
    ids, mask = UMT5Tokenizer(root / "umt5_tokenizer", text_len=8)(["a cat"])
    assert ids[0, int(mask.sum()) - 1] == 1  # the prompt's pieces, then </s>
    assert sorted(p.name for p in (root / "umt5_tokenizer").iterdir()) == [
        CARD_FILE,
        CHECKSUMS_FILE,
        RELEASE_FILE,
        "tokenizer.json",  # exactly the file the config reads
    ]
    assert not list(root.glob(".*"))  # no staging folder left


def test_fetch_records_sources_and_licences(fetched):
    root = fetched[0]
    release = json.loads((root / "recammaster" / RELEASE_FILE).read_text())
    assert release["downloaded"] == {
        "KwaiVGI/ReCamMaster-Wan2.1": ["step20000.ckpt"],
        "Wan-AI/Wan2.1-T2V-1.3B": ["config.json"],  # not the Wan DiT beside it
    }
    assert release["commits"]["KwaiVGI/ReCamMaster-Wan2.1"] == "4f3f7391743dfd25067ab27e0f1eb8928d11b91d"
    lucy = json.loads((root / "lucy_edit" / RELEASE_FILE).read_text())
    assert lucy["commits"]["decart-ai/Lucy-Edit-Dev"] == LUCY_COMMIT  # `main`, resolved: what was used
    assert len(lucy["downloaded"]["decart-ai/Lucy-Edit-Dev"]) > 3  # every shard and the index
    card = (root / "lucy_edit" / CARD_FILE).read_text()
    assert "non-commercial" in card and "decart-ai/Lucy-Edit-Dev" in card
    card = (root / "recammaster" / CARD_FILE).read_text()
    assert "Apache-2.0" in card and "4f3f7391743dfd25067ab27e0f1eb8928d11b91d" in card
    assert "non-commercial" not in card
    checksums = json.loads((root / "recammaster" / CHECKSUMS_FILE).read_text())["files"]
    assert {CARD_FILE, RELEASE_FILE, "config.json"} <= set(checksums)


def test_fetch_a_second_time_checks_and_does_nothing(fetched, offline, capsys):
    root = fetched[0]
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    assert fetch(tiny(NVS, root), NVS) == []
    assert fetch(tiny(LONG_EDIT, root), LONG_EDIT) == []  # no licence asked: nothing of LucyEdit is fetched
    out = capsys.readouterr().out
    assert out.count("nothing to do") == 2 and out.count("checksums match") == 9 and "wrote" not in out
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == before


def test_fetch_refuses_a_damaged_folder_and_overwrite_converts_it_again(fetched, offline, tmp_path):
    root = tmp_path / "weights"
    shutil.copytree(fetched[0], root)
    param = next(p for p in sorted((root / "wan2.1_vae" / "params").iterdir()) if p.is_dir())
    chunk = next(p for p in param.iterdir() if not p.name.startswith("."))
    chunk.write_bytes(chunk.read_bytes()[::-1])
    with pytest.raises(FetchError, match=r"wan2\.1_vae: parameter .* fails its checksum.*--overwrite"):
        fetch(tiny(NVS, root), NVS)
    fetch(tiny(NVS, root), NVS, overwrite=True)
    assert fetch(tiny(NVS, root), NVS) == []


def test_fetch_refuses_a_folder_made_elsewhere_before_downloading(offline, tmp_path, monkeypatch):
    root = tmp_path / "weights"
    write_tokenizer(root / "umt5_tokenizer")  # convert_weights.random's tokenizer, say
    monkeypatch.setattr(fetch_module, "download", lambda *a: pytest.fail("downloaded"))
    with pytest.raises(
        FetchError,
        match=r"sample\.text\.tokenizer \(.*umt5_tokenizer\) exists and was not made by copy from "
        r"Wan-AI/Wan2\.1-T2V-1\.3B@37ec512624d61f7aa208f7ea8140a131f93afc9a \(it has no release\.json",
    ):
        fetch(tiny(NVS, root), NVS)
    assert sorted(p.name for p in root.iterdir()) == ["umt5_tokenizer"]


def test_fetch_failing_midway_leaves_no_half_written_folder(offline, tmp_path, monkeypatch):
    def disk_full(src, out, config):
        out.mkdir()
        (out / "config.json").write_text("{")
        raise OSError(28, "No space left on device")

    name, convert = fetch_module.CONVERTERS["umt5"]
    monkeypatch.setitem(fetch_module.CONVERTERS, "umt5", (name, disk_full))
    root = tmp_path / "weights"
    with pytest.raises(OSError, match="No space left"):
        fetch(tiny(NVS, root), NVS)
    assert sorted(p.name for p in root.iterdir()) == ["recammaster", "wan2.1_vae"]  # the ones before, whole; no staging
    monkeypatch.setitem(fetch_module.CONVERTERS, "umt5", (name, convert))
    assert sorted(fetch(tiny(NVS, root), NVS)) == [root / "umt5", root / "umt5_tokenizer"]


def test_fetch_from_a_local_dir(offline, tmp_path):
    """`--local_dir`: each repository as plain files under DIR/<org>/<name>, as the hub's local_dir mode writes them."""
    cache, _ = offline
    local = tmp_path / "downloads"
    for repo in ("KwaiVGI/ReCamMaster-Wan2.1", "Wan-AI/Wan2.1-T2V-1.3B"):
        (snapshot,) = (cache / f"models--{repo.replace('/', '--')}" / "snapshots").iterdir()
        shutil.copytree(snapshot, local / repo)  # the files the links point at
    root = tmp_path / "weights"
    assert len(fetch(tiny(NVS, root), NVS, local_dir=local)) == 4
    release = json.loads((root / "recammaster" / RELEASE_FILE).read_text())
    assert release["commits"] == {}  # a plain folder does not say which commit it holds
    assert release["downloaded"]["KwaiVGI/ReCamMaster-Wan2.1"] == ["step20000.ckpt"]
    assert fetch(tiny(NVS, root), NVS, local_dir=local) == []


def test_fetch_refuses_a_config_without_release(tmp_path):
    config = load_config("configs/tiny_nvs.py")
    with pytest.raises(FetchError, match=r"configs/tiny_nvs\.py has no `release` section"):
        fetch(config, "configs/tiny_nvs.py")


def test_fetch_refuses_a_model_other_than_the_config_says(offline, tmp_path):
    config = tiny(NVS, tmp_path / "weights")
    config.model.dit.ffn_dim = 96  # the checkpoint's is 128
    with pytest.raises(
        FetchError, match=r"sample\.weights .*not the config's `model`: architecture\.ffn_dim=128 \(model: 96\)"
    ):
        fetch(config, NVS)
    assert sorted(p.name for p in (tmp_path / "weights").iterdir()) == ["wan2.1_vae"]  # the one before it; no staging


def test_fetch_cli_offline_names_the_file_missing_from_the_cache(hub, tmp_path):
    """The CLI as a user runs it, HF_HUB_OFFLINE in its environment, against a cache that lacks one file."""
    cache, _ = hub
    partial = tmp_path / "hub"
    for repo in cache.iterdir():  # the same cache without Wan2.1's VAE
        for path in repo.rglob("*"):
            target = partial / repo.name / path.relative_to(repo)
            if path.is_symlink():
                if path.name != "Wan2.1_VAE.pth":
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.symlink_to(os.readlink(path))
            elif path.is_file():
                target.parent.mkdir(parents=True, exist_ok=True)
                target.hardlink_to(path)
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env |= {"PYTHONPATH": str(ROOT), "HF_HUB_CACHE": str(partial), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "convert_weights.fetch",
            f"--config={NVS}:tiny",
            f"--config.weights_dir={tmp_path / 'w'}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 1, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "Wan-AI/Wan2.1-T2V-1.3B@37ec512624d61f7aa208f7ea8140a131f93afc9a: Wan2.1_VAE.pth" in errors[0]
    assert "HF_HUB_OFFLINE" in errors[0] and str(partial) in errors[0]
    assert not (tmp_path / "w").exists() or not any((tmp_path / "w").iterdir())
