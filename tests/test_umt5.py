"""The JAX umT5 encoder is transformers' `UMT5EncoderModel`: tiny random models converted by the CLI from
the transformers folder and from Wan's native layout match in float32, padded prompts included;
the converter refuses incomplete checkpoints, naming the tensors."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from conftest import relative_error
from flax import nnx
from jax.sharding import PartitionSpec as P
from test_tokenizer import tiny_sentencepiece
from torch_reference import randomize
from transformers import UMT5Config, UMT5EncoderModel, UMT5Model

from convert_weights.common import ConversionError
from convert_weights.umt5 import config_from_json, convert_state_dict, convert_umt5, hf_to_native, main, native_to_hf
from mv2v_jax.config import load_config
from mv2v_jax.models.text.tokenizer import UMT5Tokenizer
from mv2v_jax.models.text.umt5 import UMT5Config as OurConfig
from mv2v_jax.models.text.umt5 import (
    UMT5Encoder,
    encode_prompts,
    encode_tokens,
    load_umt5,
    relative_position_buckets,
)
from mv2v_jax.models.weights import module_from_params, read_config
from mv2v_jax.parallel.mesh import batch_sharding, make_mesh, use_mesh

TINY = dict(vocab_size=180, d_model=48, d_kv=16, d_ff=80, num_heads=4, num_layers=3)
LENGTH = 150  # > max_distance 128: exact, log-spaced and capped buckets all occur


def tiny_umt5(seed: int = 0, **overrides) -> UMT5EncoderModel:
    torch.manual_seed(seed)
    model = UMT5EncoderModel(UMT5Config(**(TINY | overrides), dropout_rate=0.0))
    return randomize(model, seed, scale=0.5)


def padded_batch(vocab_size: int, seed: int = 0):
    """Three prompts of lengths 150, 61 and 1 (the EOS alone), right-padded with id 0."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab_size, (3, LENGTH), generator=g)
    mask = torch.zeros(3, LENGTH, dtype=torch.long)
    for row, length in enumerate((LENGTH, 61, 1)):
        mask[row, :length] = 1
    return ids * mask, mask


def assert_parity(torch_model, weights_dir_or_encoder):
    ids, mask = padded_batch(torch_model.config.vocab_size)
    with torch.no_grad():
        want = torch_model(input_ids=ids, attention_mask=mask).last_hidden_state.numpy()
    encoder = weights_dir_or_encoder
    if not isinstance(encoder, UMT5Encoder):
        encoder = load_umt5(encoder)
    got = encoder(jnp.asarray(ids.numpy()), jnp.asarray(mask.numpy()))
    assert got.shape == want.shape and got.dtype == jnp.float32
    assert relative_error(got, want) <= 1e-4
    # Wan's use: the real rows as they are, zero past each prompt's length.
    zeroed = np.asarray(encode_tokens(encoder, ids.numpy(), mask.numpy()))
    real = mask.numpy().astype(bool)
    assert relative_error(zeroed[real], want[real]) <= 1e-4
    assert not zeroed[~real].any()


def test_relative_buckets_match_transformers():
    for buckets, distance in ((32, 128), (64, 256), (16, 40)):
        attention = tiny_umt5(relative_attention_num_buckets=buckets, relative_attention_max_distance=distance)
        attention = attention.encoder.block[0].layer[0].SelfAttention
        length = 1500
        want = attention._relative_position_bucket(torch.arange(length)[None, :] - torch.arange(length)[:, None])
        np.testing.assert_array_equal(relative_position_buckets(length, buckets, distance), want.numpy())


def test_transformers_folder_converts_and_matches(tmp_path):
    torch_model = tiny_umt5()
    torch_model.save_pretrained(tmp_path / "hf", max_shard_size="100KB")  # sharded, with an index
    assert (tmp_path / "hf" / "model.safetensors.index.json").exists()
    assert main([str(tmp_path / "hf"), str(tmp_path / "jax")]) == 0
    assert read_config(tmp_path / "jax")["architecture"]["param_dtype"] == "float32"
    assert_parity(torch_model, tmp_path / "jax")


def test_native_wan_pth_converts_and_matches(tmp_path):
    """Wan's models_t5_umt5-xxl-enc-bf16.pth layout: native names, bfloat16, no config.json."""
    torch_model = tiny_umt5(seed=1)
    native = {hf_to_native(k): v.to(torch.bfloat16) for k, v in torch_model.state_dict().items()}
    del native[hf_to_native("encoder.embed_tokens.weight")]  # Wan's T5Encoder has token_embedding only
    assert {"token_embedding.weight", "blocks.2.ffn.gate.0.weight", "blocks.0.pos_embedding.embedding.weight"} <= set(
        native
    )
    torch.save(native, tmp_path / "models_t5_umt5-xxl-enc-bf16.pth")
    assert main([str(tmp_path / "models_t5_umt5-xxl-enc-bf16.pth"), str(tmp_path / "jax")]) == 0
    config = read_config(tmp_path / "jax")
    assert config["source"]["format"] == "native"
    architecture = dataclasses.asdict(OurConfig(**TINY, param_dtype="bfloat16"))
    assert config["architecture"] == {k: v for k, v in architecture.items() if k != "dtype"}
    # The reference, with the same bfloat16-rounded weights, in float32.
    torch_model.load_state_dict({k: v.to(torch.bfloat16).float() for k, v in torch_model.state_dict().items()})
    assert_parity(torch_model, tmp_path / "jax")


def test_full_model_state_dict_converts_in_memory_and_matches():
    """The encoder of a whole UMT5Model's state dict (decoder and the tied embedding copy skipped)."""
    torch.manual_seed(3)
    full = randomize(UMT5Model(UMT5Config(**TINY, dropout_rate=0.0)), 3, scale=0.5)
    config = OurConfig.from_config(config_from_json(full.config.to_dict(), "reference"))
    params = convert_state_dict({k: v.numpy() for k, v in full.state_dict().items()}, config)
    encoder_only = UMT5EncoderModel(full.config).eval()
    encoder_only.load_state_dict(
        {k: v for k, v in full.state_dict().items() if not k.startswith("decoder.")}, strict=False
    )
    assert_parity(encoder_only, module_from_params(lambda: UMT5Encoder(config, rngs=nnx.Rngs(0)), params))


def test_restore_into_mesh_and_sharded_encode_matches(tmp_path):
    """umT5-XXL is 5.7B parameters: it must load straight into an FSDP x tensor-parallel layout."""
    tiny_umt5(seed=5).save_pretrained(tmp_path / "hf")
    assert main([str(tmp_path / "hf"), str(tmp_path / "jax")]) == 0
    mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    sharded = load_umt5(tmp_path / "jax", mesh=mesh)
    assert sharded.blocks.attn.q.kernel[...].sharding.spec == P(None, "fsdp", "tensor")  # (layers, embed, heads)
    assert sharded.token_embedding[...].sharding.spec == P(None, "fsdp")
    ids, mask = (np.concatenate([a.numpy(), a.numpy()[:1]]) for a in padded_batch(TINY["vocab_size"]))
    want = np.asarray(encode_tokens(load_umt5(tmp_path / "jax"), ids, mask))
    with use_mesh(mesh):
        got = encode_tokens(sharded, *(jax.device_put(a, batch_sharding(mesh, 2)) for a in (ids, mask)))
    assert relative_error(got, want) <= 1e-4  # sharded sums round differently


def test_name_mapping_round_trips():
    names = [n for n in tiny_umt5().state_dict() if n != "encoder.embed_tokens.weight"]
    native = [hf_to_native(n) for n in names]
    assert native[0] == "token_embedding.weight" and "blocks.1.ffn.fc1.weight" in native and "norm.weight" in native
    assert [native_to_hf(n) for n in native] == names


def test_full_seq2seq_checkpoint_uses_the_encoder_only(tmp_path):
    """google/umt5-xxl on the hub is the whole UMT5 model: its decoder is skipped."""
    torch.manual_seed(2)
    full = randomize(UMT5Model(UMT5Config(**TINY, dropout_rate=0.0)), 2, scale=0.5)
    full.save_pretrained(tmp_path / "hf")
    assert main([str(tmp_path / "hf"), str(tmp_path / "jax")]) == 0
    encoder_only = UMT5EncoderModel(full.config).eval()
    encoder_only.load_state_dict(
        {k: v for k, v in full.state_dict().items() if not k.startswith("decoder.")}, strict=False
    )
    assert_parity(encoder_only, tmp_path / "jax")


def test_encode_prompts_with_the_tokenizer(tmp_path):
    tokenizer = UMT5Tokenizer(tiny_sentencepiece(tmp_path / "tok"), text_len=40)
    torch_model = tiny_umt5(seed=3)
    torch_model.save_pretrained(tmp_path / "hf")
    assert main([str(tmp_path / "hf"), str(tmp_path / "jax")]) == 0
    prompts = ["kato rimu sena", "poli vedasho zuré ñi kaka toto " * 3]
    got = np.asarray(encode_prompts(load_umt5(tmp_path / "jax"), tokenizer, prompts))
    ids, mask = tokenizer(prompts)
    with torch.no_grad():
        want = torch_model(input_ids=torch.from_numpy(ids).long(), attention_mask=torch.from_numpy(mask).long())
    want = want.last_hidden_state.numpy() * mask[..., None]
    assert got.shape == (2, 40, TINY["d_model"])
    assert relative_error(got, want) <= 1e-4
    assert mask.sum(1).tolist() == [int(np.abs(g).sum(-1).astype(bool).sum()) for g in got]


def test_presets():
    xxl = OurConfig.from_config(load_config("configs/umt5.py:umt5-xxl"))
    assert (xxl.d_model, xxl.num_heads * xxl.d_kv, xxl.d_ff, xxl.num_layers, xxl.vocab_size) == (
        4096,
        4096,
        10240,
        24,
        256384,
    )
    OurConfig.from_config(load_config("configs/umt5.py:tiny"))
    with pytest.raises(ValueError, match=r"unknown umT5 config keys \['d_modle'\]"):
        OurConfig.from_config(dict(load_config("configs/umt5.py:tiny")) | {"d_modle": 4})


# -- converter errors ------------------------------------------------------------------------------


@pytest.fixture
def checkpoint():
    model = tiny_umt5()
    # Both tied embedding names, as older transformers wrote them: the converter uses shared.weight.
    return {k: v.clone() for k, v in model.state_dict().items()}, model.config.to_dict()


def write_checkpoint(folder, state_dict, config):
    import safetensors.torch

    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    safetensors.torch.save_file(state_dict, folder / "model.safetensors")
    return folder


def test_missing_extra_and_misshaped_tensors_are_named(tmp_path, checkpoint, capsys):
    state, config = checkpoint
    del state["encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight"]
    state["encoder.block.0.layer.0.SelfAttention.lora_A.weight"] = torch.zeros(4, 4)
    state["encoder.block.0.layer.1.DenseReluDense.wo.weight"] = torch.zeros(48, 79)
    src = write_checkpoint(tmp_path / "src", state, config)
    assert main([str(src), str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "blocks/attn/relative_bias layers [1]" in err
    assert "encoder.block.0.layer.0.SelfAttention.lora_A.weight" in err
    assert "encoder.block.0.layer.1.DenseReluDense.wo.weight -> blocks/ffn/fc2/kernel: (79, 48) but the model" in err
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))


def test_non_gated_t5_and_bad_config_are_refused(tmp_path, checkpoint):
    state, config = checkpoint
    src = write_checkpoint(tmp_path / "relu", state, config | {"feed_forward_proj": "relu"})
    with pytest.raises(ConversionError, match="feed_forward_proj='relu'"):
        convert_umt5(src, tmp_path / "out")
    src = write_checkpoint(tmp_path / "t5", state, config | {"model_type": "t5"})
    with pytest.raises(ConversionError, match="model_type 't5', not 'umt5'"):
        convert_umt5(src, tmp_path / "out")
    src = write_checkpoint(tmp_path / "broken", state, config)
    (src / "config.json").write_text("{not json")
    with pytest.raises(ConversionError, match=r"config\.json is not valid JSON"):
        convert_umt5(src, tmp_path / "out")
    out = convert_umt5(write_checkpoint(tmp_path / "good", state, config), tmp_path / "out")
    with pytest.raises(ValueError, match=r"\['d_model'\] are fixed by the weights"):
        load_umt5(out, d_model=8)
