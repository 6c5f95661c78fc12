"""The shared byte-level BPE: special tokens, lossless round trip, stable hash."""

from __future__ import annotations

import json
import random

import pytest
from conftest import tiny_text

from arches.data.splits import text_pieces
from arches.data.tokenizer import (
    MIN_VOCAB_SIZE,
    SPECIAL_TOKENS,
    Specials,
    load_tokenizer,
    new_tokenizer,
    tokenizer_hash,
    train_tokenizer,
)
from arches.errors import UserError


def english(seed: int = 0, documents: int = 20) -> list[str]:
    rng = random.Random(seed)
    return [tiny_text(rng, 15) for _ in range(documents)]


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(iter(english()), 400)


def test_special_tokens_have_fixed_ids(tokenizer):
    assert SPECIAL_TOKENS[:7] == ["<pad>", "<bos>", "<eos>", "[MASK]", "[sop]", "[eop]", "[gMASK]"]
    assert SPECIAL_TOKENS[7:] == [f"<extra_id_{i}>" for i in range(100)]
    for expected_id, token in enumerate(SPECIAL_TOKENS):
        assert tokenizer.token_to_id(token) == expected_id
    specials = Specials.from_tokenizer(tokenizer)
    assert (specials.pad, specials.bos, specials.eos, specials.mask) == (0, 1, 2, 3)
    assert (specials.sop, specials.eop, specials.gmask) == (4, 5, 6)
    assert specials.sentinels == tuple(range(7, 107))
    assert tokenizer.get_vocab_size() <= 400


def test_specials_missing_is_a_user_error():
    with pytest.raises(UserError, match="<pad>"):
        Specials.from_tokenizer(new_tokenizer())


ARBITRARY = [
    "",
    " leading space and trailing  ",
    "Hello, world! It's 3.14 o'clock.",
    "emoji 🦜👩🏽‍🚀🇫🇷 and ZWJ sequences",
    "中文字符和日本語のテキスト、한국어",
    "combining: e\u0301 a\u0308 \u1e9b\u0323 Z\u0351\u0367\u0334",
    "controls \x00\x01\x1b[31m\x7f \t\r\n\x0c\u2028\u2029",
    "right-to-left: مرحبا שלום",
    "literal specials stay text: <eos> [MASK] <extra_id_3> [gMASK]",
    "\ufeffBOM and \ufffd replacement char and a lone high plane 𝔘𝔫𝔦",
]


@pytest.mark.parametrize("text", ARBITRARY)
def test_round_trip_fixed(tokenizer, text):
    ids = tokenizer.encode(text).ids
    assert tokenizer.decode(ids) == text
    assert all(i >= len(SPECIAL_TOKENS) for i in ids)  # text never yields a special token


def test_round_trip_random_unicode(tokenizer):
    rng = random.Random(1234)
    ranges = [(0x00, 0x7F), (0x80, 0x7FF), (0x800, 0xD7FF), (0xE000, 0xFFFF), (0x10000, 0x10FFFF)]
    for _ in range(200):
        chars = []
        for _ in range(rng.randint(0, 40)):
            low, high = rng.choice(ranges)
            chars.append(chr(rng.randint(low, high)))
        text = "".join(chars)
        assert tokenizer.decode(tokenizer.encode(text).ids) == text


def test_pieces_tokenize_like_the_whole_text(tokenizer):
    # arches.data.splits encodes long documents in pieces for parallelism: it must not change a single token
    rng = random.Random(7)
    text = "".join(tiny_text(rng, 40) + rng.choice(["  \n", "\n\n  x", " \t", "🦜 ", "中 文\n"]) for _ in range(30))
    pieces = text_pieces(text, size=200)
    assert len(pieces) > 10 and "".join(pieces) == text
    joined = [i for piece in pieces for i in tokenizer.encode(piece).ids]
    assert joined == tokenizer.encode(text).ids


def test_vocab_smaller_than_specials_is_a_user_error():
    with pytest.raises(UserError) as error:
        train_tokenizer(iter(english()), MIN_VOCAB_SIZE - 1)
    message = str(error.value)
    assert "\n" not in message and str(MIN_VOCAB_SIZE) in message
    assert MIN_VOCAB_SIZE == len(SPECIAL_TOKENS) + 256


def test_hash_is_stable(tokenizer, tmp_path):
    path = tmp_path / "tokenizer.json"
    tokenizer.save(str(path))
    digest = tokenizer_hash(tokenizer)
    assert len(digest) == 64
    assert tokenizer_hash(path) == digest == tokenizer_hash(str(path))
    # the same tokenizer written with other formatting hashes the same
    reformatted = tmp_path / "reformatted.json"
    reformatted.write_text(json.dumps(json.loads(path.read_text()), indent=4))
    assert tokenizer_hash(reformatted) == digest
    assert tokenizer_hash(load_tokenizer(path)) == digest
    # training is deterministic; a different vocabulary hashes differently
    assert tokenizer_hash(train_tokenizer(iter(english()), 400)) == digest
    assert tokenizer_hash(train_tokenizer(iter(english()), 380)) != digest


def test_load_missing_or_bad_file(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_tokenizer(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(UserError, match="not a tokenizer.json") as error:
        load_tokenizer(bad)
    assert "\n" not in str(error.value)
