"""The bundled corpus tasks' candidate examples, cut from held-out documents' text.

Three lm-eval tasks (the YAMLs beside this file) score a model on text that no
run of the comparison trained on: the *test* split of its own corpus, whole
documents, raw text.

- `corpus_ppl`: passages of a few hundred characters (whole lines), scored by
  rolling log-likelihood: word perplexity, byte perplexity and bits per byte,
  as lm-eval's wikitext task.
- `corpus_cloze`: LAMBADA-style (Paperno et al. 2016): a passage ends in a word,
  the model predicts that last word (` word`) from the rest; accuracy is greedy
  match, plus perplexity. Passages whose last word occurred earlier in the
  passage come first, as LAMBADA kept only passages that need the wider context.
- `corpus_next`: HellaSwag/StoryCloze-style multiple choice: the true next line
  of a passage among 4, the 3 distractors being lines of similar length from
  *other* held-out documents (so they cannot be told apart by length alone).

Each `*_candidates` function gives every possible example of its task, in a seeded
order; which are taken, and where they are written, is harness/tasks/build.py's.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import re
from collections.abc import Callable, Sequence
from typing import Any

PPL_CHARS = 400  # a passage closes at the first line end past this many characters
PPL_MIN_CHARS = 100
CLOZE_CONTEXT_CHARS = (150, 600)  # context length before the target word: at least, at most
CLOZE_MIN_WORD = 3  # LAMBADA's targets are content words; skip "a", "of", "I"
NEXT_CONTEXT_CHARS = (100, 500)
NEXT_LINE_CHARS = (15, 300)  # the length of a true next line
NEXT_CHOICES = 4
NEXT_NEAREST = 32  # distractors are drawn among this many lines closest in length
NEXT_SAME_DOC_GAP = 20  # fallback distractors from the same document: at least this many lines away

# A word: letters with inner apostrophes ("lov'd", "o'er"), any script.
WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)*")
# A line ending a sentence or clause with a word preceded by one space: LAMBADA's
# targets close a sentence, not a line that prose happens to wrap at.
LAST_WORD = re.compile(r"^(?P<head>.*\S) (?P<word>[^\W\d_]+(?:['’][^\W\d_]+)*)(?P<tail>[^\w\s]*[.!?;:][^\w\s]*)\s*$")

Doc = tuple[str, str]  # (document name, text)


def _order(seed: int, *parts: Any) -> str:
    """A stable pseudo-random sort key (sha256), the same on every machine and Python."""
    return hashlib.sha256(json.dumps([seed, *parts], ensure_ascii=False).encode("utf-8")).hexdigest()


def line_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of every line, without its newline."""
    spans, start = [], 0
    for line in text.split("\n"):
        spans.append((start, start + len(line)))
        start += len(line) + 1
    return spans


def _blank(text: str, span: tuple[int, int]) -> bool:
    return not text[span[0] : span[1]].strip()


def _context_start(text: str, spans: list[tuple[int, int]], first: int, end: int, max_chars: int) -> int:
    """The earliest line index j <= first with text[spans[j][0]:end] within max_chars, leading blank lines dropped."""
    j = first
    while j > 0 and end - spans[j - 1][0] <= max_chars:
        j -= 1
    while j < first and _blank(text, spans[j]):
        j += 1
    return j


# ---------------------------------------------------------------- corpus_ppl


def ppl_candidates(docs: Sequence[Doc], seed: int) -> list[dict]:
    candidates = []
    for name, text in docs:
        spans = line_spans(text)
        first = None
        for index, span in enumerate(spans):
            if first is None:
                if _blank(text, span):
                    continue
                first = index
            start = spans[first][0]
            if span[1] - start >= PPL_CHARS or index == len(spans) - 1:
                last = index
                while last > first and _blank(text, spans[last]):
                    last -= 1
                passage = text[start : spans[last][1]]
                if len(passage.strip()) >= PPL_MIN_CHARS:
                    candidates.append({"text": passage, "doc": name, "start": start, "_first": first, "_last": last})
                first = None
    candidates.sort(key=lambda c: _order(seed, "corpus_ppl", c["doc"], c["start"]))
    return candidates


# ---------------------------------------------------------------- corpus_cloze


def cloze_candidates(docs: Sequence[Doc], seed: int) -> list[dict]:
    candidates = []
    for name, text in docs:
        spans = line_spans(text)
        for index, (line_start, line_end) in enumerate(spans):
            match = LAST_WORD.match(text[line_start:line_end])
            if not match or len(match["word"]) < CLOZE_MIN_WORD:
                continue
            word_start = line_start + match.start("word")
            context_end = word_start - 1  # the space before the word goes to the continuation
            first = _context_start(text, spans, index, context_end, CLOZE_CONTEXT_CHARS[1])
            context = text[spans[first][0] : context_end]
            if len(context.strip()) < CLOZE_CONTEXT_CHARS[0]:
                continue
            word = match["word"]
            earlier = {w.lower() for w in WORD.findall(context)}
            candidates.append({
                "context": context,
                "continuation": " " + word,
                "target": word,
                "in_context": word.lower() in earlier,
                "doc": name,
                "start": spans[first][0],
                "_first": first,
                "_last": index,
            })  # fmt: skip
    # LAMBADA's filter as a preference: targets seen earlier in the passage first
    candidates.sort(key=lambda c: (not c["in_context"], _order(seed, "corpus_cloze", c["doc"], c["start"])))
    return candidates


# ---------------------------------------------------------------- corpus_next


def _normal(line: str) -> str:
    return " ".join(line.lower().split())


class LinePool:
    """Every usable line of some documents, sorted by length, to draw distractors of similar length."""

    def __init__(self, docs: Sequence[Doc]):
        entries = []
        for name, text in docs:
            for index, (start, end) in enumerate(line_spans(text)):
                line = text[start:end].strip()
                if len(line) >= NEXT_LINE_CHARS[0] // 2:
                    entries.append((len(line), name, index, line))
        entries.sort()
        self.entries = entries
        self.lengths = [entry[0] for entry in entries]

    def nearest(self, length: int, accept: Callable[[tuple], bool], count: int) -> list[tuple]:
        """Up to `count` accepted lines closest in length (walking outward from `length`)."""
        right = bisect.bisect_left(self.lengths, length)
        left = right - 1
        found = []
        while len(found) < count and (left >= 0 or right < len(self.entries)):
            take_left = right >= len(self.entries) or (
                left >= 0 and length - self.lengths[left] <= self.lengths[right] - length
            )
            if take_left:
                entry, left = self.entries[left], left - 1
            else:
                entry, right = self.entries[right], right + 1
            if accept(entry):
                found.append(entry)
        return found


def next_candidates(docs: Sequence[Doc], seed: int, task: str = "corpus_next") -> list[dict]:
    """Every (context, true next line) position, in seeded order; the distractors are
    drawn by `_finish` only for the positions selected."""
    pool = LinePool(docs)
    many_docs = len({name for name, _ in docs}) > 1
    candidates = []
    for name, text in docs:
        spans = line_spans(text)
        for index in range(1, len(spans)):
            true_line = text[spans[index][0] : spans[index][1]].strip()
            if not NEXT_LINE_CHARS[0] <= len(true_line) <= NEXT_LINE_CHARS[1] or _blank(text, spans[index - 1]):
                continue
            context_end = spans[index - 1][1]
            first = _context_start(text, spans, index - 1, context_end, NEXT_CONTEXT_CHARS[1])
            context = text[spans[first][0] : context_end]
            if len(context.strip()) < NEXT_CONTEXT_CHARS[0]:
                continue
            candidates.append({
                "context": context,
                "doc": name,
                "start": spans[first][0],
                "_first": first,
                "_last": index,
                "_true": true_line,
                "_finish": lambda c: _with_distractors(c, pool, many_docs, seed, task),
            })  # fmt: skip
    candidates.sort(key=lambda c: _order(seed, task, c["doc"], c["start"]))
    return candidates


def _with_distractors(candidate: dict, pool: LinePool, many_docs: bool, seed: int, task: str) -> dict | None:
    """The candidate with 4 shuffled choices and the gold index, or None without 3 distractors."""
    name, index, true_line = candidate["doc"], candidate["_last"], candidate["_true"]
    seen = {_normal(true_line)}

    def accept(entry: tuple) -> bool:
        if _normal(entry[3]) in seen:
            return False
        if many_docs:  # "other held-out documents"; one document: far-away lines of it
            return entry[1] != name
        return abs(entry[2] - index) > NEXT_SAME_DOC_GAP

    near = pool.nearest(len(true_line), accept, NEXT_NEAREST)
    near.sort(key=lambda e: _order(seed, task, "distractor", name, index, e[1], e[2]))
    distractors = []
    for entry in near:
        if _normal(entry[3]) not in seen:
            seen.add(_normal(entry[3]))
            distractors.append(entry[3])
        if len(distractors) == NEXT_CHOICES - 1:
            break
    if len(distractors) < NEXT_CHOICES - 1:
        return None
    choices = sorted([true_line, *distractors], key=lambda c: _order(seed, task, "choice", name, index, c))
    finished = {k: v for k, v in candidate.items() if k not in ("_finish", "_true")}
    return {**finished, "choices": choices, "gold": choices.index(true_line)}
