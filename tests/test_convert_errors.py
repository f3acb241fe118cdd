"""Incomplete or mismatched checkpoints are refused, naming the offending tensors, and nothing
already on disk is touched."""

import json

import pytest
import safetensors.torch
import torch
from torch_reference import tiny_wan_dit

from convert_weights.common import ConversionError
from convert_weights.wan_dit import convert_dit, main
from mv2v_jax.models.wan.dit import load_dit
from mv2v_jax.models.weights import WeightsError, read_config, write_checksums


def write_checkpoint(folder, state_dict, config):
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    safetensors.torch.save_file(state_dict, folder / "diffusion_pytorch_model.safetensors")
    return folder


@pytest.fixture
def checkpoint():
    model = tiny_wan_dit("1.3b")
    return {k: v.contiguous() for k, v in model.state_dict().items()}, dict(model.config)


def test_missing_tensor_is_named(tmp_path, checkpoint, capsys):
    state, config = checkpoint
    del state["blocks.1.attn2.norm_k.weight"]
    src = write_checkpoint(tmp_path / "src", state, config)
    assert main([str(src), str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "blocks/cross_attn/norm_k/weight layers [1]" in err and "not filled" in err
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out*"))  # no temporary left behind


def test_extra_tensor_is_named(tmp_path, checkpoint):
    state, config = checkpoint
    state["blocks.0.attn1.lora_A.weight"] = torch.zeros(4, 4)
    state["blocks.7.ffn.net.2.bias"] = torch.zeros(48)  # a layer the config does not have
    src = write_checkpoint(tmp_path / "src", state, config)
    with pytest.raises(ConversionError) as e:
        convert_dit(src, tmp_path / "out")
    assert "blocks.0.attn1.lora_A.weight" in str(e.value)
    assert "blocks.7.ffn.net.2.bias (layer 7, model has 2)" in str(e.value)


def test_wrong_shape_is_named(tmp_path, checkpoint):
    state, config = checkpoint
    state["blocks.0.ffn.net.0.proj.weight"] = torch.zeros(95, 48)
    src = write_checkpoint(tmp_path / "src", state, config)
    with pytest.raises(
        ConversionError,
        match=r"blocks\.0\.ffn\.net\.0\.proj\.weight -> blocks/ffn/fc1/kernel: "
        r"\(48, 95\) but the model needs \(48, 96\)",
    ):
        convert_dit(src, tmp_path / "out")


def test_failed_conversion_leaves_existing_output_untouched(tmp_path, checkpoint):
    state, config = checkpoint
    good = write_checkpoint(tmp_path / "good", state, config)
    out = convert_dit(good, tmp_path / "out")
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    state_bad = dict(state)
    del state_bad["proj_out.bias"]
    bad = write_checkpoint(tmp_path / "bad", state_bad, config)
    assert main([str(bad), str(out), "--overwrite"]) == 1
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    assert read_config(out)["source"]["path"] == str(good.resolve())
    with pytest.raises(FileExistsError):
        convert_dit(good, out)


def test_i2v_and_bad_config_are_refused(tmp_path, checkpoint):
    state, config = checkpoint
    src = write_checkpoint(tmp_path / "i2v", state, config | {"image_dim": 1280})
    with pytest.raises(ConversionError, match="I2V"):
        convert_dit(src, tmp_path / "out")
    src = tmp_path / "broken"
    write_checkpoint(src, state, config)
    (src / "config.json").write_text("{not json")
    with pytest.raises(ConversionError, match=r"config\.json is not valid JSON"):
        convert_dit(src, tmp_path / "out2")


def test_loading_a_mismatched_weights_directory_names_the_problem(tmp_path, checkpoint):
    state, config = checkpoint
    out = convert_dit(write_checkpoint(tmp_path / "src", state, config), tmp_path / "out")
    meta = json.loads((out / "config.json").read_text())
    meta["architecture"]["ffn_dim"] = 64
    (out / "config.json").write_text(json.dumps(meta))
    with pytest.raises(WeightsError, match=r"out: config\.json fails its checksum"):
        load_dit(out)
    write_checksums(out)  # a config.json that never fit its parameters
    with pytest.raises(
        WeightsError,
        match=r"shape mismatch.*blocks/ffn/fc1/kernel: stored \(2, 48, 96\), "
        r"model \(2, 48, 64\)",
    ):
        load_dit(out)
    with pytest.raises(ValueError, match=r"\['dim'\] are fixed by the weights"):
        load_dit(out, dim=4)
    meta["format_version"] = 99
    (out / "config.json").write_text(json.dumps(meta))
    with pytest.raises(WeightsError, match="format_version 99"):
        load_dit(out)
    with pytest.raises(WeightsError, match="is not a weights directory"):
        load_dit(tmp_path / "src")


def test_progress_bars_only_when_asked(tmp_path, checkpoint, capfd):
    """The CLI shows a progress bar; the same conversion called as a library function prints nothing."""
    state, config = checkpoint
    src = write_checkpoint(tmp_path / "src", state, config)
    convert_dit(src, tmp_path / "quiet")
    assert capfd.readouterr() == ("", "")
    assert main([str(src), str(tmp_path / "cli")]) == 0
    out, err = capfd.readouterr()
    assert "converting" in err and out.startswith("wrote ")
