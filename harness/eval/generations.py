"""Greedy continuations of a few held-out prompts, written into a run folder after its evaluation.

    arches eval run=<run folder> eval.generations=3    (0: none; sweeps/eval/default.yaml says 3)

A reader's first look at a model is what it writes. After the lm-eval passes, `write_generations`
continues `eval.generations` prompts greedily, at most MAX_NEW_TOKENS new tokens each, through the
family's own scorer (`Scorer.generate`): a decoder left to right, T5 filling a sentinel after the
prompt (`t5_sentinel`, Raffel et al. 2020 §3.1.4), GLM filling a [MASK] after it in Part B (Du et al.
2022 §2.1). A masked LM does not generate; its file says so instead.

The prompts are the same for every run of a comparison: the first PROMPT_WORDS words of lines of the
corpus's *test* documents (the text the bundled corpus tasks are built from, harness/tasks/build.py,
which no run trained on), chosen by a seeded hash (eval.seed), at most one per document while there
are documents enough. They depend on the corpus and the seed only, never on the model.

`<run>/eval/generations.json` is written atomically and reused while the checkpoint and the settings
that chose the prompts are unchanged (`arches compare` evaluates once per shot count).
"""

from __future__ import annotations

import itertools
import json
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from harness.eval.records import EVAL_DIR

GENERATIONS_FILE = "generations.json"
PROMPT_WORDS = 12  # about one line of verse or half a sentence of prose
PROMPT_MAX_CHARS = 400  # twelve words further apart are not prose (a table, a list of numbers)
MAX_NEW_TOKENS = 32
SPLIT = "test"
# Bump when a change here changes the prompts or how they are continued (part of the reuse key).
VERSION = 1

WORD = re.compile(r"\S+")
LETTERS = re.compile(r"[^\W\d_]")


def generations_count(cfg: DictConfig) -> int:
    """eval.generations (checked by arches.settings: an integer >= 0); 0 where the key is absent,
    as in a config older than it."""
    return int((cfg.get("eval") or {}).get("generations", 0) or 0)


def _line_prompt(text: str, start: int) -> tuple[int, int] | None:
    """(start, end) of the first PROMPT_WORDS words from `start` (a line's first word) within its
    paragraph, or None: a prompt opens like a sentence or a line of verse (a capital, not a heading
    in capitals such as a speaker's name) and its words are mostly words, not numbers or marks."""
    reach = min(len(text), start + PROMPT_MAX_CHARS)
    paragraph_end = text.find("\n\n", start, reach)
    words = WORD.finditer(text, start, reach if paragraph_end < 0 else paragraph_end)
    words = list(itertools.islice(words, PROMPT_WORDS))
    if len(words) < PROMPT_WORDS:
        return None
    first = words[0].group()
    if not first[0].isupper() or (len(first) > 1 and first.isupper()):
        return None
    if sum(bool(LETTERS.search(w.group())) for w in words) < PROMPT_WORDS - 2:
        return None
    return words[0].start(), words[-1].end()


def choose_prompts(documents: Sequence[tuple[str, str]], count: int, seed: int) -> list[dict]:
    """`count` prompts [{"document", "prompt"}] from (name, text) documents: candidates open at a
    line's first word that starts with a letter (past a verse number such as KJV's `1:3`), ranked by
    a seeded sha256 as the corpus tasks' examples are (harness.tasks.build._order), one per document
    first."""
    from harness.tasks.corpus import _order, line_spans

    ranked = []
    for name, text in sorted(documents):
        for index, (line_start, line_end) in enumerate(line_spans(text)):
            first = next((w for w in WORD.finditer(text, line_start, line_end) if LETTERS.match(w.group())), None)
            span = _line_prompt(text, first.start()) if first is not None else None
            if span is not None:
                ranked.append((_order(seed, "generations", name, index), name, text[span[0] : span[1]]))
    ranked.sort()
    chosen, documents_used = [], set()
    for one_per_document in (True, False):
        for _, name, prompt in ranked:
            if len(chosen) == count:
                return chosen
            if (one_per_document and name in documents_used) or any(c["prompt"] == prompt for c in chosen):
                continue
            documents_used.add(name)
            chosen.append({"document": name, "prompt": prompt})
    return chosen


def held_out_prompts(corpus_cfg: DictConfig, prepared: Any, count: int, seed: int) -> list[dict]:
    """The prompts of the test documents of the corpus that `corpus_cfg` names (a root config with
    `data`, `cache_dir` and `seed`, as evaluation builds it) and `prepared` is (arches.data.prepare)."""
    from harness.tasks.build import corpus_documents

    (test_docs,) = corpus_documents(corpus_cfg, prepared, (SPLIT,))
    return choose_prompts(test_docs, count, seed)


def continue_prompts(scorer: Any, prompts: list[str], max_tokens: int = MAX_NEW_TOKENS) -> tuple:
    """(greedy continuations, None), or (None, why) for a family that does not generate (a masked LM)."""
    from arches.families.scoring import UnsupportedRequest

    try:
        return scorer.generate(list(prompts), [[] for _ in prompts], max_tokens), None
    except UnsupportedRequest as error:
        return None, str(error)


def read_generations(run_dir: Path | str) -> dict | None:
    """`<run>/eval/generations.json`, or None where it is missing or unreadable (a report skips it)."""
    path = Path(run_dir) / EVAL_DIR / GENERATIONS_FILE
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("prompts"), list) else None


def write_generations(run_dir: Path | str, model: Any, corpus_cfg: DictConfig, cfg: DictConfig) -> Path | None:
    """Continue `eval.generations` held-out prompts with `model` (a harness.lm.model.ArchesLM) and write
    `<run>/eval/generations.json` atomically; its path, or None when eval.generations is 0."""
    from arches.data.cache import prepare
    from arches.train.run_folder import write_atomic

    count = generations_count(cfg)
    if count == 0:
        return None
    seed = int(cfg.eval.get("seed", 1234))
    path = Path(run_dir) / EVAL_DIR / GENERATIONS_FILE
    prepared = prepare(corpus_cfg)  # a lookup where the corpus is cached (its training prepared it)
    key = {"version": VERSION, "checkpoint_sha256": model.checkpoint, "format": model.scoring_format,
           "dtype": model.dtype, "count": count, "seed": seed, "prompt_words": PROMPT_WORDS, "max_tokens": MAX_NEW_TOKENS,
           "corpus": Path(prepared.cache_dir).name, "split": SPLIT}  # fmt: skip
    existing = read_generations(run_dir)
    if existing is not None and all(existing.get(k) == v for k, v in key.items()):
        return path  # the same model, prompts and settings: nothing would change
    started = time.perf_counter()
    prompts = held_out_prompts(corpus_cfg, prepared, count, seed)
    continuations, unsupported = continue_prompts(model.scorer, [p["prompt"] for p in prompts])
    record = {
        **key,
        "family": model.meta["family"],
        "preset": (model.meta.get("arch") or {}).get("name"),
        "decoding": "greedy",
        "documents": [p["document"] for p in prompts],
        "prompts": [p["prompt"] for p in prompts],
        "continuations": continuations,
        "unsupported": unsupported,
        "seconds": round(time.perf_counter() - started, 3),
    }
    return write_atomic(path, json.dumps(record, indent=1, ensure_ascii=False) + "\n")
