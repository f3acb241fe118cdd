"""The prompt-embedding cache: hits, misses, corrupt files recomputed rather than used, keys that follow
the tokenizer and the weights, and a cache hit that never loads the encoder."""

import logging

import ml_dtypes
import numpy as np
import pytest
from conftest import relative_error
from test_tokenizer import tiny_sentencepiece
from test_umt5 import tiny_umt5

from convert_weights.umt5 import main
from mv2v_jax.models.text import umt5
from mv2v_jax.models.text.prompt_cache import PromptCache
from mv2v_jax.models.text.tokenizer import UMT5Tokenizer
from mv2v_jax.models.text.umt5 import TextEncoder, encode_prompts, encoder_identity, load_umt5

KEY_FIELDS = dict(tokenizer_id="t" * 64, encoder_id="e" * 64, text_len=512)


def test_put_get_round_trip_and_miss(tmp_path, rng):
    cache = PromptCache(tmp_path)
    key = PromptCache.key("a red car", **KEY_FIELDS)
    assert cache.get(key) is None
    for dtype in (np.float32, ml_dtypes.bfloat16):
        embedding = rng.standard_normal((7, 4096)).astype(dtype)
        cache.put(key, embedding)
        got = cache.get(key)
        assert got.dtype == dtype
        np.testing.assert_array_equal(got.astype(np.float32), embedding.astype(np.float32))
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == [f"{key}.bin"]  # no temporaries left
    with pytest.raises(ValueError, match=r"\[len, d_model\] float32 or bfloat16"):
        cache.put(key, np.zeros((2, 3, 4), np.float32))


def test_key_follows_every_input():
    base = PromptCache.key("a red car", **KEY_FIELDS)
    assert base == PromptCache.key("a red car", **KEY_FIELDS)
    changed = [
        PromptCache.key("a red car.", **KEY_FIELDS),
        PromptCache.key("a red car", **KEY_FIELDS | {"tokenizer_id": "u" * 64}),
        PromptCache.key("a red car", **KEY_FIELDS | {"encoder_id": "f" * 64}),
        PromptCache.key("a red car", **KEY_FIELDS | {"text_len": 226}),
    ]
    assert len({base, *changed}) == 5


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[:-5],  # truncated
        lambda data: data[:-1] + bytes([data[-1] ^ 1]),  # one bit of the array flipped
        lambda data: b"junk" + data[4:],  # not a cache file
        lambda data: data.replace(b'"dtype": "float32"', b'"dtype": "float64"'),  # header damaged
    ],
)
def test_corrupt_file_is_a_miss_and_removed(tmp_path, rng, caplog, damage):
    cache = PromptCache(tmp_path)
    key = PromptCache.key("a red car", **KEY_FIELDS)
    path = cache.put(key, rng.standard_normal((3, 8)).astype(np.float32))
    path.write_bytes(damage(path.read_bytes()))
    with caplog.at_level(logging.WARNING):
        assert cache.get(key) is None
    assert str(path) in caplog.text and "recomputed" in caplog.text
    assert not path.exists()


def test_file_under_another_key_is_refused(tmp_path, rng):
    cache = PromptCache(tmp_path)
    key, other = (PromptCache.key(p, **KEY_FIELDS) for p in ("a", "b"))
    cache.path(other).parent.mkdir(parents=True, exist_ok=True)
    cache.path(other).write_bytes(cache.put(key, rng.standard_normal((3, 8)).astype(np.float32)).read_bytes())
    assert cache.get(other) is None


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny umT5 converted into a weights directory, and a tokenizer over its vocabulary."""
    root = tmp_path_factory.mktemp("text")
    tokenizer = UMT5Tokenizer(tiny_sentencepiece(root / "tok"), text_len=24)
    tiny_umt5(seed=4).save_pretrained(root / "hf")
    assert main([str(root / "hf"), str(root / "weights")]) == 0
    return root, tokenizer


PROMPTS = ["kato rimu sena", "poli vedasho zuré ñi", "kato rimu sena"]


def test_text_encoder_hit_does_not_load_the_encoder(setup, tmp_path, monkeypatch):
    root, tokenizer = setup
    loads = []
    monkeypatch.setattr(umt5, "load_umt5", lambda *a, **k: loads.append(a) or load_umt5(*a, **k))
    first = TextEncoder(root / "weights", tokenizer, tmp_path / "cache")
    got = first(PROMPTS)
    assert len(loads) == 1 and first.loaded
    want = np.asarray(encode_prompts(load_umt5(root / "weights"), tokenizer, PROMPTS))
    assert got.shape == (3, 24, 48) and relative_error(got, want) <= 1e-5
    assert len(list((tmp_path / "cache").rglob("*.bin"))) == 2  # real rows only, one file per distinct prompt

    second = TextEncoder(root / "weights", tokenizer, tmp_path / "cache")
    np.testing.assert_array_equal(second(PROMPTS), got)
    assert len(loads) == 1 and not second.loaded

    # A corrupt entry is recomputed (loading the encoder), not used.
    path = PromptCache(tmp_path / "cache").path(second.cache_keys(PROMPTS[1:2])[0])
    path.write_bytes(path.read_bytes()[:-3])
    third = TextEncoder(root / "weights", tokenizer, tmp_path / "cache")
    assert relative_error(third(PROMPTS), got) <= 1e-5  # recomputed alone: XLA's batch-1 rounding differs
    assert len(loads) == 2 and path.exists()


def test_keys_change_with_the_weights_and_the_tokenizer(setup, tmp_path):
    root, tokenizer = setup
    before = TextEncoder(root / "weights", tokenizer, tmp_path / "cache").cache_keys(PROMPTS)
    other_tokenizer = UMT5Tokenizer(tiny_sentencepiece(tmp_path / "tok2", seed=1), text_len=24)
    assert TextEncoder(root / "weights", other_tokenizer).cache_keys(PROMPTS)[0] != before[0]
    assert encoder_identity(root / "weights", dtype="bfloat16") != encoder_identity(root / "weights")
    # Other weights converted into the same folder: the fingerprint in config.json changes.
    tiny_umt5(seed=5).save_pretrained(tmp_path / "hf")
    assert main([str(tmp_path / "hf"), str(tmp_path / "weights")]) == 0
    first = encoder_identity(tmp_path / "weights")
    tiny_umt5(seed=6).save_pretrained(tmp_path / "hf")
    assert main([str(tmp_path / "hf"), str(tmp_path / "weights"), "--overwrite"]) == 0
    assert encoder_identity(tmp_path / "weights") != first
