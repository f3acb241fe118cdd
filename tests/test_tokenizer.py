"""Our umT5 tokenizer gives transformers' T5Tokenizer ids and mask (padding, truncation, EOS) on a tiny
sentencepiece model trained here, from spiece.model and from tokenizer.json; Wan's cleaning; clear
errors for missing or broken files."""

import io
import random
import shutil

import numpy as np
import pytest
import sentencepiece
from transformers import AutoTokenizer, T5Tokenizer

from mv2v_jax.models.text.tokenizer import TokenizerError, UMT5Tokenizer, clean_prompt

SYLLABLES = [
    "ka",
    "to",
    "ri",
    "mu",
    "se",
    "na",
    "po",
    "li",
    "ve",
    "da",
    "sho",
    "qua",
    "ne",
    "ti",
    "zu",
    "ré",
    "ñi",
    "東",
    "京",
    "夜",
]


def tiny_sentencepiece(folder, seed: int = 0, vocab_size: int = 150):
    """Trains a unigram sentencepiece model with T5's special ids (pad 0, eos 1, unk 2) on generated text;
    writes `folder/spiece.model` and returns the folder."""
    rng = random.Random(seed)
    words = ["".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 3))) for _ in range(60)]
    sentences = [
        " ".join(rng.choice(words) for _ in range(rng.randint(3, 15))) + rng.choice(".!?,") for _ in range(400)
    ]
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_writer=model,
        vocab_size=vocab_size,
        hard_vocab_limit=False,
        model_type="unigram",
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        character_coverage=1.0,
        minloglevel=2,
    )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "spiece.model").write_bytes(model.getvalue())
    return folder


PROMPTS = [
    "kato rimu sena, poli vedasho!",
    "  Zuré   ñi\n\tkaka &amp;amp; toto  ",  # whitespace runs and doubly escaped html
    "东京 夜 kato quati unseen words xyz",  # characters outside the training set -> <unk>
    " ".join(["kato rimu sena poli"] * 20),  # longer than text_len: truncated, EOS kept
    "",
]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    spm_folder = tiny_sentencepiece(tmp_path_factory.mktemp("spm"))
    reference = T5Tokenizer.from_pretrained(spm_folder)  # converts spiece.model, adds <extra_id_*>
    json_folder = tmp_path_factory.mktemp("json")
    reference.save_pretrained(json_folder)
    return spm_folder, json_folder, reference


def reference_call(tokenizer, prompts, text_len):
    out = tokenizer(
        [clean_prompt(p) for p in prompts],
        padding="max_length",
        max_length=text_len,
        truncation=True,
        add_special_tokens=True,
        return_tensors="np",
    )
    return out["input_ids"], out["attention_mask"]


@pytest.mark.parametrize("backend", ["spiece.model", "tokenizer.json"])
@pytest.mark.parametrize("text_len", [16, 64])
def test_ids_and_mask_match_transformers(files, backend, text_len):
    spm_folder, json_folder, reference = files
    ours = UMT5Tokenizer((spm_folder if backend == "spiece.model" else json_folder) / backend, text_len=text_len)
    ids, mask = ours(PROMPTS)
    want_ids, want_mask = reference_call(reference, PROMPTS, text_len)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_array_equal(mask, want_mask)
    assert ids.dtype == mask.dtype == np.int32 and ids.shape == (len(PROMPTS), text_len)
    # Wan's conventions, visible in the reference's output: EOS (1) ends every prompt, pad id 0 after it.
    lengths = mask.sum(1)
    assert (ids[np.arange(len(PROMPTS)), lengths - 1] == 1).all() and lengths[3] == text_len
    assert (ids[mask == 0] == 0).all()


def test_folder_prefers_tokenizer_json_like_autotokenizer(tmp_path, files):
    _, json_folder, _ = files
    prompt = ["kato <extra_id_3> rimu"]  # a special token in the text is one token, as in AutoTokenizer
    want_ids, _ = reference_call(AutoTokenizer.from_pretrained(json_folder), prompt, 12)
    both = shutil.copytree(json_folder, tmp_path / "both")
    (both / "spiece.model").write_bytes(b"not read")
    ours = UMT5Tokenizer(both, text_len=12)
    assert ours.file.name == "tokenizer.json"
    np.testing.assert_array_equal(ours(prompt)[0], want_ids)


def test_wan_cleaning():
    assert clean_prompt("  a&amp;amp;b \n\t c  ") == "a&b c"
    assert clean_prompt("“curly” â€” mojibake") == '"curly" — mojibake'  # ftfy: quotes, mis-decoded UTF-8


def test_identity_follows_the_file(tmp_path, files):
    spm_folder, _, _ = files
    other = tiny_sentencepiece(tmp_path / "other", seed=1)
    assert UMT5Tokenizer(spm_folder).identity == UMT5Tokenizer(spm_folder / "spiece.model").identity
    assert UMT5Tokenizer(spm_folder).identity != UMT5Tokenizer(other).identity


def test_missing_or_broken_files_say_what_is_needed(tmp_path):
    with pytest.raises(TokenizerError, match=r"no tokenizer\.json or spiece\.model.*google/umt5-xxl"):
        UMT5Tokenizer(tmp_path)
    with pytest.raises(TokenizerError, match=r"no such file or folder.*Hugging Face hub"):
        UMT5Tokenizer(tmp_path / "absent")
    (tmp_path / "spiece.model").write_bytes(b"garbage")
    with pytest.raises(TokenizerError, match=r"spiece\.model: not a readable sentencepiece model"):
        UMT5Tokenizer(tmp_path / "spiece.model")
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(TokenizerError, match=r"tokenizer\.json: not a readable tokenizer\.json"):
        UMT5Tokenizer(tmp_path / "tokenizer.json")


@pytest.mark.parametrize("backend", ["spiece.model", "tokenizer.json"])
def test_count_is_the_untruncated_length_that_says_a_prompt_is_cut(files, backend):
    spm_folder, json_folder, reference = files
    ours = UMT5Tokenizer((spm_folder if backend == "spiece.model" else json_folder) / backend, text_len=64)
    counts = [ours.count(p) for p in PROMPTS]
    want = [len(reference(clean_prompt(p), add_special_tokens=True)["input_ids"]) for p in PROMPTS]
    assert counts == want  # the pieces and the EOS, nothing cut
    _, mask = ours(PROMPTS)
    cut = [count > ours.text_len for count in counts]
    assert cut == [False, False, False, True, False]  # only the long prompt, which fills every row
    assert [int(m) for m in mask.sum(1)] == [min(count, ours.text_len) for count in counts]


def test_a_dataset_record_whose_prompt_is_cut_is_named(files, capsys):
    from types import SimpleNamespace

    from mv2v_jax.data.encode_latents import warn_if_cut
    from mv2v_jax.models.text.conditioning import TextConditioning

    tokenizer = UMT5Tokenizer(files[0] / "spiece.model", text_len=64)
    counts = [tokenizer.count(p) for p in PROMPTS]
    text = TextConditioning(SimpleNamespace(tokenizer=tokenizer), text_dim=8)  # what build_text makes for umT5
    for index, prompt in enumerate(PROMPTS):
        warn_if_cut(text, prompt, f"scene {index}")
    want = [
        f"warning: scene {i}: prompt of {count} tokens, more than the text encoder's 64: cut at 63 tokens "
        "(and the end-of-text token)"
        for i, count in enumerate(counts)
        if count > 64
    ]
    assert len(want) == 1 and capsys.readouterr().err.splitlines() == want
    warn_if_cut(TextConditioning(text_dim=8), PROMPTS[3], "scene 3")  # no text encoder: nothing is cut
    assert capsys.readouterr().err == ""
