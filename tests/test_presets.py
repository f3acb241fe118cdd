"""The preset configs describe the released models: a full-size diffusers model built on the meta
device (no memory) fills every parameter of our preset with the right shape."""

import pytest
import torch
from flax import nnx

from convert_weights.common import expected_params, plan
from convert_weights.wan_dit import RULES, config_from_json
from mv2v_jax.config import load_config
from mv2v_jax.models.wan.dit import WanDiT, WanDiTConfig

# The released diffusers transformer configs (Wan-AI/*-Diffusers transformer/config.json; decart-ai/Lucy-Edit-Dev).
RELEASED = {
    "wan2.1-t2v-1.3b": dict(
        num_attention_heads=12, attention_head_dim=128, in_channels=16, out_channels=16, ffn_dim=8960, num_layers=30
    ),
    "wan2.1-t2v-14b": dict(
        num_attention_heads=40, attention_head_dim=128, in_channels=16, out_channels=16, ffn_dim=13824, num_layers=40
    ),
    "wan2.2-ti2v-5b": dict(
        num_attention_heads=24, attention_head_dim=128, in_channels=48, out_channels=48, ffn_dim=14336, num_layers=30
    ),
    "lucy-edit": dict(
        num_attention_heads=24, attention_head_dim=128, in_channels=96, out_channels=48, ffn_dim=14336, num_layers=30
    ),
}
PARAM_COUNTS = {"wan2.1-t2v-1.3b": 1_418_996_800}  # Wan2.1-T2V-1.3B, as diffusers counts it


@pytest.mark.parametrize("name", RELEASED)
def test_preset_matches_released_architecture(name):
    from diffusers import WanTransformer3DModel

    with torch.device("meta"):
        reference = WanTransformer3DModel(text_dim=4096, freq_dim=256, cross_attn_norm=True, **RELEASED[name])
    shapes = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    config = WanDiTConfig.from_config(load_config(f"configs/wan_dit.py:{name}"))
    assert config_from_json(dict(reference.config), name) == {
        k: getattr(config, k) for k in config_from_json(dict(reference.config), name)
    }
    expected = expected_params(lambda: WanDiT(config, rngs=nnx.Rngs(0)))
    pieces = plan(shapes, shapes.__getitem__, RULES, expected)  # raises on any gap or mismatch
    assert len(pieces) == len(expected)
    ours = sum(int(torch.tensor(s.shape).prod()) for s in expected.values())
    assert ours == sum(int(torch.tensor(s).prod()) for s in shapes.values())
    if name in PARAM_COUNTS:
        assert ours == PARAM_COUNTS[name]


def test_unknown_preset_is_named():
    with pytest.raises(ValueError, match="wan9"):
        load_config("configs/wan_dit.py:wan9")
