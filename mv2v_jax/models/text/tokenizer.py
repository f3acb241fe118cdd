"""The umT5 tokenizer as Wan uses it, from a local file (no hub access at run time).

Wan's `HuggingfaceTokenizer(name, seq_len=512, clean="whitespace")` (Wan2.1 wan/modules/tokenizers.py,
docs/models.md, "umT5 text encoder") does, per prompt:

1. clean: `ftfy.fix_text`, `html.unescape` twice, strip, collapse every run of whitespace to one space,
   strip (`clean_prompt` below; Python's `re` stands in for the `regex` package: after ftfy has dropped
   the C0 control characters the two `\\s` classes match the same characters);
2. `AutoTokenizer("google/umt5-xxl")(..., padding="max_length", max_length=512, truncation=True,
   add_special_tokens=True)`: the pieces, cut to `max_length - 1`, then EOS `</s>`, then `<pad>`
   (id 0) up to `max_length`; the attention mask is 1 on the pieces and the EOS.

Two backends give the pieces: `tokenizer.json` through the `tokenizers` library (the file and the
library AutoTokenizer itself runs, so special tokens such as `<extra_id_0>` in a prompt are matched as
one token, as there), or `spiece.model` through `sentencepiece` (the same unigram model; a special
token written in a prompt is split into ordinary pieces). A folder holding both uses tokenizer.json.
"""

from __future__ import annotations

import hashlib
import html
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

TOKENIZER_FILES = ("tokenizer.json", "spiece.model")
WHERE_PUBLISHED = (
    "the umT5 tokenizer is published as tokenizer.json and spiece.model in google/umt5-xxl on the Hugging Face "
    "hub, and in the Wan release folder google/umt5-xxl/ (e.g. Wan2.1-T2V-14B/google/umt5-xxl/)"
)
# Part of the tokenizer identity: bump when `clean_prompt` changes what reaches the tokenizer.
CLEANING_VERSION = "wan-whitespace-1"
_WHITESPACE = re.compile(r"\s+")


class TokenizerError(ValueError):
    """A tokenizer file that is missing or unusable; the message names the file and where it is published."""


def clean_prompt(text: str) -> str:
    """Wan's `whitespace_clean(basic_clean(text))`: ftfy, html.unescape twice, whitespace collapsed, stripped."""
    import ftfy

    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return _WHITESPACE.sub(" ", text).strip()


def find_tokenizer_file(path: str | os.PathLike) -> Path:
    """`path` itself if it is a tokenizer file, else the tokenizer.json or spiece.model in the folder `path`."""
    path = Path(path)
    if path.is_file():
        if path.suffix not in (".json", ".model"):
            raise TokenizerError(f"{path}: not a tokenizer file (expected {' or '.join(TOKENIZER_FILES)})")
        return path
    if path.is_dir():
        for name in TOKENIZER_FILES:
            if (path / name).is_file():
                return path / name
        raise TokenizerError(f"{path}: no {' or '.join(TOKENIZER_FILES)} in this folder; {WHERE_PUBLISHED}")
    raise TokenizerError(f"{path}: no such file or folder; {WHERE_PUBLISHED}")


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


class UMT5Tokenizer:
    """Prompts -> `(ids, mask)`, both int32 `[B, text_len]`, as Wan's tokenizer call returns them."""

    def __init__(self, path: str | os.PathLike, text_len: int = 512):
        if text_len < 1:
            raise ValueError(f"text_len={text_len} must be at least 1 (room for the EOS token)")
        self.file = find_tokenizer_file(path)
        self.text_len = text_len
        if self.file.suffix == ".json":
            self._encode, self.eos_id, self.pad_id = _tokenizers_backend(self.file)
        else:
            self._encode, self.eos_id, self.pad_id = _sentencepiece_backend(self.file)
        self.identity = hashlib.sha256(f"{file_sha256(self.file)}:{CLEANING_VERSION}".encode()).hexdigest()

    def count(self, prompt: str) -> int:
        """How many tokens `prompt` is, the end-of-text token included: more than `text_len` are cut."""
        (pieces,) = self._encode([clean_prompt(prompt)])
        return len(pieces) + 1

    def cut_note(self, prompt: str) -> str | None:
        """What a user is told when `prompt` is longer than the encoder reads (it is cut), else None."""
        if (tokens := self.count(prompt)) <= self.text_len:
            return None
        return (
            f"{tokens} tokens, more than the text encoder's {self.text_len}: cut at {self.text_len - 1} tokens "
            "(and the end-of-text token)"
        )

    def __call__(self, prompts: str | Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        ids = np.full((len(prompts), self.text_len), self.pad_id, np.int32)
        mask = np.zeros((len(prompts), self.text_len), np.int32)
        for row, pieces in enumerate(self._encode([clean_prompt(p) for p in prompts])):
            tokens = [*pieces[: self.text_len - 1], self.eos_id]
            ids[row, : len(tokens)] = tokens
            mask[row, : len(tokens)] = 1
        return ids, mask


def _special_id(lookup, token: str, file: Path) -> int:
    token_id = lookup(token)
    if token_id is None:
        raise TokenizerError(f"{file}: has no {token} token, so it is not a T5 tokenizer; {WHERE_PUBLISHED}")
    return token_id


def _tokenizers_backend(file: Path):
    from tokenizers import Tokenizer

    try:
        tokenizer = Tokenizer.from_file(str(file))
    except Exception as e:  # the Rust library raises a bare Exception on a malformed file
        raise TokenizerError(f"{file}: not a readable tokenizer.json ({e}); {WHERE_PUBLISHED}") from None
    tokenizer.no_truncation()  # truncation and padding are ours, whatever the file says
    tokenizer.no_padding()

    def encode(texts: list[str]) -> list[list[int]]:
        return [e.ids for e in tokenizer.encode_batch(texts, add_special_tokens=False)]

    return encode, _special_id(tokenizer.token_to_id, "</s>", file), _special_id(tokenizer.token_to_id, "<pad>", file)


def _sentencepiece_backend(file: Path):
    import sentencepiece

    try:
        processor = sentencepiece.SentencePieceProcessor(model_file=str(file))
    except (RuntimeError, OSError) as e:
        raise TokenizerError(f"{file}: not a readable sentencepiece model ({e}); {WHERE_PUBLISHED}") from None

    def lookup(piece: str) -> int | None:
        piece_id = processor.piece_to_id(piece)
        return None if piece_id == processor.unk_id() else piece_id

    def encode(texts: list[str]) -> list[list[int]]:
        return processor.encode(texts)

    return encode, _special_id(lookup, "</s>", file), _special_id(lookup, "<pad>", file)
