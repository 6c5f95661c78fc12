"""A multiple-choice sample's choices, read from an lm-eval samples file, scored under other rules.

lm-eval logs each choice's (log-likelihood, is_greedy) in `resps` beside the request's
(context, continuation) in `arguments` and the gold index in `target`; from those, a sample's
outcome can be recomputed under a rule other than the one lm-eval scored: the argmax of the mean
log-likelihood per token (of the run's own tokenizer) or per character (lm-eval's acc_norm).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

TOKENIZER_FILE = "tokenizer.json"  # arches.train.run_folder.TOKENIZER_FILE: the run's own tokenizer


class Unavailable(Exception):
    """A side of a rule that cannot be computed; its message is the table's reason."""


def accuracy(scores: np.ndarray, gold: list[int]) -> float:
    """1 when a gold choice scores highest; on an exact tie for the highest, the share of the tied
    choices that are gold (the minimal pairs' rule, a tie scores half: harness/tasks/pairs_metrics.py)."""
    top = np.flatnonzero(scores == scores.max())
    return float(np.isin(top, gold).sum() / top.size)


class Choices:
    """Each samples file's choices (log-likelihoods, continuations, gold), read once per file."""

    def __init__(self) -> None:
        self._files: dict[str, dict] = {}
        self._tokenizers: dict[str, Any] = {}

    def rows(self, path: str) -> dict:
        """{doc_id: (log-likelihoods, [(context, continuation)], gold indices, the sample)}."""
        if path not in self._files:
            rows = {}
            for line in Path(path).read_text(encoding="utf-8").splitlines():
                if not line.strip():
                    continue
                sample = json.loads(line)
                parsed = _choices(sample)
                if parsed is None:
                    raise Unavailable(f"{Path(path).name} holds no choices' log-likelihoods (lm-eval `resps`)")
                rows.setdefault(sample["doc_id"], (*parsed, sample))
            self._files[path] = rows
        return self._files[path]

    def token_counts(self, run_dir: str, pieces: list[tuple[str, str]]) -> list[int]:
        """Tokens of each continuation as the scorer counts them (arches.families.scoring.encode_pair: the
        context's trailing spaces move to the continuation), with the run's own tokenizer."""
        if run_dir not in self._tokenizers:
            path = Path(run_dir) / TOKENIZER_FILE
            if not path.is_file():
                raise Unavailable(f"{Path(run_dir).name} has no {TOKENIZER_FILE} to count the choices' tokens")
            from tokenizers import Tokenizer

            self._tokenizers[run_dir] = Tokenizer.from_file(str(path))
        texts = [context[len(context.rstrip()):] + continuation for context, continuation in pieces]
        encoded = self._tokenizers[run_dir].encode_batch(texts, add_special_tokens=False)
        return [max(1, len(e.ids)) for e in encoded]


def _choices(sample: dict) -> tuple[np.ndarray, list[tuple[str, str]], list[int]] | None:
    responses = sample.get("filtered_resps") or [r[0] for r in sample.get("resps") or []]
    arguments = sample.get("arguments")
    if isinstance(arguments, dict):  # lm-eval's other layout: {"gen_args_0": {"arg_0": ..., "arg_1": ...}}
        arguments = [[a.get("arg_0"), a.get("arg_1")] for a in arguments.values()]
    if not responses or not arguments or len(responses) != len(arguments):
        return None
    lls = np.array([float(r[0] if isinstance(r, (list, tuple)) else r) for r in responses])
    pieces = [(str(c), str(x)) for c, x in arguments]
    target = sample.get("target")
    targets = target if isinstance(target, list) else [target]
    gold = []
    for t in targets:
        if isinstance(t, int) and not isinstance(t, bool) and 0 <= t < len(pieces):
            gold.append(t)
        elif isinstance(t, str):
            gold += [i for i, (_, x) in enumerate(pieces) if x.strip() == t.strip()]
    return (lls, pieces, gold) if gold else None


def target_delimiter(run_dir: str, entry: dict, task: str) -> str:
    """The task's target delimiter (its results file's config), which lm-eval's acc_norm leaves out."""
    path = Path(run_dir) / str(entry.get("results_file") or "")
    try:
        return str(json.loads(path.read_text(encoding="utf-8"))["configs"][task].get("target_delimiter", " "))
    except (OSError, KeyError, ValueError, TypeError):
        return " "
