"""The unigram baseline of `arches compare` sits beside corpus_ppl's bits/byte in the
report, so it is scored on exactly the passages that task serves (lm-eval's
bits_per_byte: total nats / ln 2 / total UTF-8 bytes), not on the whole test token
stream with its <eos> separators."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from conftest import tiny_text

from arches.config import compose
from harness.compare import unigram_baseline


@pytest.fixture(scope="module")
def short_documents(tmp_path_factory) -> list[str]:
    """Many short documents (a passage each): the <eos> after each is a large share of the stream."""
    root = tmp_path_factory.mktemp("short_documents")
    rng = random.Random(0)
    (root / "corpus").mkdir()
    for index in range(240):
        (root / "corpus" / f"doc{index:03d}.txt").write_text(tiny_text(rng, rng.randint(2, 3)), encoding="utf-8")
    return ["data=local", f"data.paths=[{root / 'corpus'}]", "data.vocab_size=512", "data.seq_len=32",
            "data.test_fraction=0.2", f"cache_dir={root / 'cache'}", "eval=quick"]  # fmt: skip


def by_hand(cfg) -> tuple[float, float, int]:
    """(bits/byte over the corpus_ppl passages lm-eval is given, the old whole-test-stream value, passages)."""
    from arches.data.cache import prepare
    from harness.tasks.build import TaskDataSpec, task_data_for_config
    from harness.tasks.loader import load_corpus_task

    prepared = prepare(cfg)
    counts = np.bincount(np.asarray(prepared.tokens("train")), minlength=prepared.vocab_size) + 1.0
    log_probs = np.log(counts / counts.sum())
    spec = TaskDataSpec(cfg.eval.corpus.max_examples, cfg.eval.corpus.fewshot_pool, cfg.eval.seed)
    served = load_corpus_task("corpus_ppl", str(task_data_for_config(cfg, spec)))["test"]
    passages = [row["text"] for row in served][: cfg.eval.limit]  # lm-eval's limit: the first N
    tokenizer = prepared.tokenizer()
    nats = sum(-log_probs[tokenizer.encode(text, add_special_tokens=False).ids].sum() for text in passages)
    size = sum(len(text.encode("utf-8")) for text in passages)
    stream = np.asarray(prepared.tokens("test"))
    old = -log_probs[stream].sum() / math.log(2) / prepared.stats["splits"]["test"]["bytes"]
    return nats / math.log(2) / size, old, len(passages)


@pytest.mark.parametrize("limit", [None, 7])
def test_unigram_bits_per_byte_is_scored_on_the_corpus_ppl_passages(short_documents, limit):
    cfg = compose([*short_documents, f"eval.limit={'null' if limit is None else limit}"])
    unigram = unigram_baseline(cfg)["unigram"]
    expected, whole_stream, passages = by_hand(cfg)
    assert passages == (limit or passages) and passages > 5
    assert unigram["bits_per_byte"] == pytest.approx(expected, rel=1e-9)
    assert unigram["passages"] == passages and f"{passages} corpus_ppl passages" in unigram["split"]
    if limit is None:
        # the old figure counted every <eos> separator's nats: on short documents it is far off
        assert abs(whole_stream / expected - 1) > 0.02, (whole_stream, expected)
