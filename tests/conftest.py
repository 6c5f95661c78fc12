"""Shared fixtures and helpers: a small local corpus and its prepared cache entry (nothing is
downloaded); the special-token ids, token windows and composed presets the model tests share.
Test modules import the helpers (`from conftest import SPECIALS, windows, composed`), as pytest
puts this folder on sys.path; the `preset` fixture runs a test once per preset in sweeps/arch."""

from __future__ import annotations

import copy
import functools
import os
import random
from collections.abc import Sequence
from typing import NamedTuple

import pytest

from arches.config import compose, group_choices
from arches.data.tokenizer import Specials

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

TINY_VOCAB = 512
TINY_SEQ_LEN = 32

_SUBJECTS = ["the old king", "a young sailor", "my gentle friend", "the queen", "a weary traveller",
             "the lord of the castle", "her brother", "the fool", "our good captain", "the shepherd"]
_VERBS = ["walked through", "spoke of", "remembered", "longed for", "looked upon", "sang about",
          "dreamed of", "returned to", "wrote about", "forgot"]
_OBJECTS = ["the silent harbour", "a field of barley", "the winter sea", "the burning city", "a letter",
            "the forest at night", "his father's house", "the market square", "a distant mountain", "the river"]
_TAILS = ["and wept", "before the dawn", "with a heavy heart", "as the bells rang", "in the rain",
          "while the others slept", "without a word", "for many years", "under the stars", "at last"]


def tiny_text(rng: random.Random, sentences: int) -> str:
    lines = []
    for _ in range(sentences):
        sentence = f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)} {rng.choice(_TAILS)}."
        lines.append(sentence[0].upper() + sentence[1:])
    return "\n".join(" ".join(lines[i : i + 3]) for i in range(0, len(lines), 3)) + "\n"


def write_tiny_corpus(folder, documents: int = 30, seed: int = 0) -> None:
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(documents):
        (folder / f"doc{index:02d}.txt").write_text(tiny_text(rng, rng.randint(12, 24)), encoding="utf-8")


@pytest.fixture
def tiny_corpus_dir(tmp_path):
    """A folder of 30 small English .txt documents (enough for a vocab-512 tokenizer)."""
    folder = tmp_path / "corpus"
    write_tiny_corpus(folder)
    return folder


def tiny_cfg(cache_dir, paths, **data):
    """A root config for the local source: the real `sweeps/data/local.yaml` with these overrides."""
    from omegaconf import OmegaConf

    from arches.config import sweeps_dir

    data_cfg = OmegaConf.load(sweeps_dir() / "data" / "local.yaml")
    data_cfg.merge_with({"paths": [str(p) for p in paths], "vocab_size": TINY_VOCAB, "seq_len": TINY_SEQ_LEN, **data})
    return OmegaConf.create({"seed": 0, "cache_dir": str(cache_dir), "data": data_cfg})


def local_corpus(root) -> list[str]:
    """The tiny corpus under `root`, its cache prepared once: the `data` and `cache_dir`
    overrides that point a command at it (idempotent: a second call reuses both)."""
    from arches.data.cache import prepare

    corpus, cache = root / "corpus", root / "cache"
    if not corpus.exists():
        write_tiny_corpus(corpus)
        prepare(tiny_cfg(cache, [corpus]))
    return ["data=local", f"data.paths=[{corpus}]", f"data.vocab_size={TINY_VOCAB}",
            f"data.seq_len={TINY_SEQ_LEN}", f"cache_dir={cache}"]  # fmt: skip


@pytest.fixture(scope="session")
def prepared_tiny(tmp_path_factory):
    """`prepare()` of the tiny local corpus (vocab 512, seq_len 32) in a session-wide temp cache."""
    from arches.data.cache import prepare

    root = tmp_path_factory.mktemp("prepared_tiny")
    write_tiny_corpus(root / "corpus")
    return prepare(tiny_cfg(root / "cache", [root / "corpus"]))


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models: intra-op threads cost more than they give (a lot, on a busy 2-core
    machine). Subprocess tests set OMP_NUM_THREADS themselves where it matters."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# A tiny multiple-choice task's rows: (question, choices, index of the answer).
CHOICE_QUESTIONS = [
    ("Who walked through the silent harbour?", ["the old king", "a letter", "the river"], 0),
    ("What did the sailor long for?", ["the burning city", "the winter sea", "a weary traveller"], 1),
    ("Where did the shepherd return?", ["his father's house", "at last", "the fool"], 0),
    ("What did the queen forget?", ["under the stars", "her brother", "a letter"], 2),
    ("Who sang about the market square?", ["my gentle friend", "in the rain", "before the dawn"], 0),
    ("What did the fool dream of?", ["without a word", "a distant mountain", "and wept"], 1),
    ("When did the captain weep?", ["the river", "the forest", "as the bells rang"], 2),
    ("Who wrote about a field of barley?", ["her brother", "for many years", "a letter"], 0),
]


# ---------------------------------------------------------------- special tokens, windows, presets

# The ids a tokenizer trained by arches gives its special tokens (arches.data.tokenizer.SPECIAL_TOKENS:
# 7 roles, then 100 sentinels), so a test builds batches without training one.
SPECIALS = Specials(pad=0, bos=1, eos=2, mask=3, sop=4, eop=5, gmask=6, sentinels=tuple(range(7, 107)))
FIRST_ORDINARY = SPECIALS.sentinels[-1] + 1  # 107: the first id that is no special token
VOCAB = 300  # the model tests' vocabulary: ordinary tokens 107..299
SEQ_LEN = 32


def windows(count: int | Sequence[int], seq_len: int = SEQ_LEN, seed: int = 0, *, vocab: int = VOCAB,
            first: int = FIRST_ORDINARY, documents: int | Sequence[int] = 1, index: bool = True) -> list[dict]:
    """Token windows as arches.data.WindowDataset yields them: `count` windows (or one per
    index in a list) of `seq_len` tokens drawn uniformly from [first, vocab) by a generator
    seeded with `seed` (so the same seed gives the same tokens whatever the indices).
    `documents`: how many equal documents each window packs, or each token's document id.
    `index`: each window's index, which seeds its corruption; without one (hand-built
    windows) a collator draws from one stream across batches."""
    import torch

    indices = range(count) if isinstance(count, int) else count
    if isinstance(documents, int):  # document k starts at token k * seq_len // documents
        starts = torch.tensor([k * seq_len // documents for k in range(1, documents)], dtype=torch.long)
        doc_ids = torch.bucketize(torch.arange(seq_len), starts, right=True)
    else:
        doc_ids = torch.tensor(documents, dtype=torch.long)
    generator = torch.Generator().manual_seed(seed)
    made = []
    for i in indices:
        window = {"tokens": torch.randint(first, vocab, (seq_len,), generator=generator), "doc_ids": doc_ids.clone()}
        made.append({**window, "index": i} if index else window)
    return made


PRESETS = group_choices("arch")  # every preset in sweeps/arch


@functools.lru_cache(maxsize=None)
def _sections(overrides: tuple[str, ...]) -> tuple[dict, dict]:
    from omegaconf import OmegaConf

    cfg = compose(list(overrides))
    return OmegaConf.to_container(cfg.arch, resolve=True), OmegaConf.to_container(cfg.size, resolve=True)


def sections(*overrides: str) -> tuple[dict, dict]:
    """The `arch` and `size` sections these overrides give, composed through Hydra as
    `arches train` composes them, as plain dicts (fresh copies: a test may change them)."""
    return copy.deepcopy(_sections(overrides))


def composed(preset: str, size: str = "debug") -> tuple[dict, dict]:
    """`arch=<preset> size=<size>`: the preset's `arch` section and the size's (see `sections`)."""
    return sections(f"arch={preset}", f"size={size}")


class Preset(NamedTuple):
    name: str
    arch: dict
    size: dict  # the debug size


@pytest.fixture(params=PRESETS)
def preset(request) -> Preset:
    """Each preset in sweeps/arch in turn, composed at the debug size: a new preset file is tested
    by every test that takes this fixture, with no edit to the tests."""
    return Preset(request.param, *composed(request.param))
