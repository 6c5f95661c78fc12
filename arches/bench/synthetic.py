"""Seeded synthetic inputs: words and sentences, the byte-level BPE trained on them (the
scorers' and lm-eval's tokenizer), the multiple-choice set, and random training windows."""

from __future__ import annotations

import functools
import random

import torch

from arches.bench.settings import Settings, Shape
from arches.data.tokenizer import SPECIAL_TOKENS, train_tokenizer

FIRST_ORDINARY_ID = len(SPECIAL_TOKENS)  # random batches draw ids after the special tokens
TOKENIZER_VOCAB = 2048  # the synthetic text's tokenizer: enough merges for its words
SYLLABLES = ("ka", "lo", "mi", "ne", "ru", "ta", "shi", "ve", "do", "pa", "ri", "so", "ga", "le", "mo", "fu", "zan", "ter")


def synthetic_words(seed: int, count: int = 600) -> list[str]:
    rng = random.Random(seed)
    words: set[str] = set()
    while len(words) < count:
        words.add("".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 3))))
    return sorted(words)


def synthetic_sentence(rng: random.Random, words: list[str], length: int) -> str:
    return " ".join(rng.choice(words) for _ in range(length)).capitalize() + "."


def synthetic_tokenizer(settings: Settings):
    """A byte-level BPE (arches.data.tokenizer) on seeded synthetic text: the scorers' and
    lm-eval's tokenizer. Its vocabulary fits inside the benchmarked models'."""
    return _tokenizer(settings.seed, min(settings.vocab_size, TOKENIZER_VOCAB))


@functools.lru_cache(maxsize=2)
def _tokenizer(seed: int, vocab_size: int):
    rng, words = random.Random(seed), synthetic_words(seed)
    texts = [synthetic_sentence(rng, words, rng.randint(5, 30)) for _ in range(2000)]
    return train_tokenizer(texts, vocab_size=vocab_size, length=len(texts))


def multiple_choice_set(settings: Settings) -> list[dict]:
    """`questions` examples of {query, choices, gold}: a context of random words and
    `choices` two-word continuations (each with its leading space), BIG-bench's layout."""
    evaluation = settings.eval
    rng, words = random.Random(settings.seed + 1), synthetic_words(settings.seed)
    examples = []
    for index in range(evaluation.questions):
        choices = [" " + " ".join(rng.choice(words) for _ in range(2)) for _ in range(evaluation.choices)]
        examples.append({
            "idx": index,
            "query": synthetic_sentence(rng, words, evaluation.context_words) + " Then",
            "choices": choices,
            "gold": rng.randrange(evaluation.choices),
        })  # fmt: skip
    return examples


def random_windows(shape: Shape, vocab_size: int, seed: int) -> list[dict]:
    """`batch_size` windows of seeded random ordinary token ids, one document each."""
    generator = torch.Generator().manual_seed(seed)
    return [
        {
            "tokens": torch.randint(FIRST_ORDINARY_ID, vocab_size, (shape.seq_len,), generator=generator),
            "doc_ids": torch.zeros(shape.seq_len, dtype=torch.long),
            "index": index,
        }
        for index in range(shape.batch_size)
    ]


def to_device(batch: dict[str, torch.Tensor], device: str) -> dict[str, torch.Tensor]:
    return {key: value.to(device) for key, value in batch.items()}
