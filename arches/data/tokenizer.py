"""One byte-level BPE tokenizer shared by every family.

It carries every family's special tokens from the start, so a single
`tokenizer.json` (and its hash) serves decoders, encoders, T5-style
encoder-decoders and GLM alike, and a comparison can prove that all its
architectures saw the same tokens.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from arches.errors import UserError, first_line

# Ids 0..106, in this order, in every tokenizer the harness trains.
# [MASK]: BERT's masked LM; <extra_id_i>: T5's span-corruption sentinels
# (Raffel et al. 2020, sec. 3.1.4); [sop]/[eop]/[gMASK]: GLM's start/end of a
# Part B span and its generation mask (Du et al. 2022, sec. 2.1-2.3).
SENTINEL_COUNT = 100
SPECIAL_TOKENS: list[str] = [
    "<pad>",
    "<bos>",
    "<eos>",
    "[MASK]",
    "[sop]",
    "[eop]",
    "[gMASK]",
    *(f"<extra_id_{i}>" for i in range(SENTINEL_COUNT)),
]
BYTE_ALPHABET_SIZE = 256
MIN_VOCAB_SIZE = len(SPECIAL_TOKENS) + BYTE_ALPHABET_SIZE


SPECIAL_ROLES = ("pad", "bos", "eos", "mask", "sop", "eop", "gmask")


@dataclass(frozen=True)
class Specials:
    """The ids of the special tokens, looked up by their strings.

    A tokenizer trained by arches has every role. A model imported from transformers
    (`arches import-hf`) keeps its own tokenizer, whose tokens for these roles its
    checkpoint records (`arch.special_tokens`, e.g. GPT-2's `<|endoftext|>` as pad, bos
    and eos; T5's `<pad>` as bos, the decoder's start); the roles it lacks are None."""

    pad: int
    bos: int
    eos: int
    mask: int | None
    sop: int | None
    eop: int | None
    gmask: int | None
    sentinels: tuple[int, ...]

    @classmethod
    def from_tokenizer(cls, tokenizer: Tokenizer, names: dict | None = None) -> Specials:
        """The ids of arches' own special tokens, or, with `names` (role -> token string,
        `sentinels` -> list of strings), of the tokens an imported model names."""

        def lookup(token: str) -> int:
            token_id = tokenizer.token_to_id(token)
            if token_id is None:
                hint = (
                    "the run's tokenizer.json does not match its checkpoint: import the model again"
                    if names is not None
                    else "use a tokenizer trained by arches (leave data.tokenizer_path=null)"
                )
                raise UserError(f"the tokenizer has no special token '{token}'; {hint}")
            return token_id

        if names is not None:
            roles = {role: lookup(names[role]) if names.get(role) is not None else None for role in SPECIAL_ROLES}
            for role in ("pad", "bos", "eos"):
                if roles[role] is None:
                    raise UserError(f"arch.special_tokens names no '{role}' token; every model needs one")
            return cls(**roles, sentinels=tuple(lookup(token) for token in names.get("sentinels") or ()))
        return cls(
            pad=lookup("<pad>"),
            bos=lookup("<bos>"),
            eos=lookup("<eos>"),
            mask=lookup("[MASK]"),
            sop=lookup("[sop]"),
            eop=lookup("[eop]"),
            gmask=lookup("[gMASK]"),
            sentinels=tuple(lookup(f"<extra_id_{i}>") for i in range(SENTINEL_COUNT)),
        )


def text_only(tokenizer: Tokenizer) -> Tokenizer:
    """Text is always text: a literal "<eos>" or "[MASK]" in a document is encoded as
    characters, never as the special token; specials enter a sequence only by id
    (see `Specials`). Not stored in tokenizer.json, so set on every load."""
    tokenizer.encode_special_tokens = True
    return tokenizer


def new_tokenizer() -> Tokenizer:
    """An untrained byte-level BPE: no normalizer, so decode(encode(x)) == x."""
    tokenizer = Tokenizer(models.BPE())
    # add_prefix_space=False: a leading space would not survive the round trip.
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    return text_only(tokenizer)


def train_tokenizer(texts: Iterable[str], vocab_size: int, length: int | None = None) -> Tokenizer:
    """Train the byte-level BPE on `texts` (the training split only); `length` is a hint for the trainer."""
    if vocab_size < MIN_VOCAB_SIZE:
        raise UserError(
            f"data.vocab_size={vocab_size} is smaller than the {len(SPECIAL_TOKENS)} special tokens "
            f"plus {BYTE_ALPHABET_SIZE} bytes; use data.vocab_size={MIN_VOCAB_SIZE} or more"
        )
    tokenizer = new_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        # every byte is in the vocabulary, so no text is ever out of vocabulary
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2,
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer, length=length)
    return text_only(tokenizer)


def load_tokenizer(path: str | Path) -> Tokenizer:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"tokenizer file {path} does not exist; fix data.tokenizer_path or set it to null to train one")
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as error:  # tokenizers raises a bare Exception on bad JSON
        raise UserError(f"{path} is not a tokenizer.json ({first_line(error)}); fix data.tokenizer_path") from error
    return text_only(tokenizer)


def canonical_json(tokenizer: Tokenizer) -> str:
    return json.dumps(json.loads(tokenizer.to_str()), sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def tokenizer_hash(tokenizer_or_path: Tokenizer | str | Path) -> str:
    """sha256 of the canonical tokenizer JSON: equal for equal tokenizers, whatever the file's formatting."""
    tokenizer = tokenizer_or_path if isinstance(tokenizer_or_path, Tokenizer) else load_tokenizer(tokenizer_or_path)
    return hashlib.sha256(canonical_json(tokenizer).encode("utf-8")).hexdigest()
