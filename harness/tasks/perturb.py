"""The minimal pairs' perturbations: the lines fit to be a good sentence, the words counted, and the
four ways a line is perturbed (harness/tasks/pairs.py builds the tasks from them).

Built so that a unigram model cannot solve them. swap and halves keep the same
words, and, as lm-eval scores a choice (" " + line, `DELIMITER`), the same multiset
of tokens under the run's tokenizer: checked, and a pair whose tokens differ (a BPE
merge across the changed boundary) is dropped. lexical and morph are frequency
matched, and balanced: as many kept replacements are more likely under a unigram
model than the word they replace as are less likely (never more than one apart), so
frequency alone is right half the time. Only lowercase words outside the most
frequent types (`FUNCTION_WORDS`), seen at least `MIN_COUNT` times, are changed.

Length: summed log-likelihood favours the shorter choice, so good and bad have the
same number of tokens under the run's tokenizer: swap and halves have the same
tokens; lexical and morph keep only pairs whose token counts are equal. Without a
tokenizer (`encode=None`) the same is done with characters: swap and halves have the
same characters; lexical and morph replace a word only by one of the same length.
"""

from __future__ import annotations

import bisect
import math
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence

from harness.tasks.corpus import WORD, Doc, _order

DELIMITER = " "  # lm-eval's target_delimiter: a choice is scored as " " + line
LINE_WORDS = (5, 40)  # words in a line taken as a good sentence
LINE_MAX_CHARS = 300
MIN_COUNT = 2  # a changed word and its replacement occur at least this often in train+val: no typos
LEXICAL_RATIO = 1.25  # a lexical replacement's unigram probability is within this factor of the original's
FUNCTION_WORDS = 150  # the most frequent types stand in for function words (any language): never changed
SUFFIXES = ("s", "es", "ed", "d", "ing", "eth", "th", "est", "st")
MIN_STEM = 3
# KJV's "chapter:verse " citation and verse indentation are not part of the sentence
LEAD = re.compile(r"^\s*(?:\d+(?::\d+)*\s+)?")

Encode = Callable[[list[str]], list[list[int]]]  # texts -> token ids each, no special tokens


# ---------------------------------------------------------------- lines and words


def held_out_lines(docs: Sequence[Doc]) -> list[tuple[str, int, str]]:
    """(document, line index, line) of every line fit to be a good sentence: single-spaced,
    LINE_WORDS words, its leading citation and indentation dropped."""
    lines = []
    for name, text in docs:
        for index, raw in enumerate(text.split("\n")):
            line = LEAD.sub("", raw, count=1).rstrip()
            if len(line) > LINE_MAX_CHARS or line != " ".join(line.split()):
                continue
            if LINE_WORDS[0] <= len(WORD.findall(line)) <= LINE_WORDS[1]:
                lines.append((name, index, line))
    return lines


def _bases(word: str) -> set[str]:
    """The base forms `word` may inflect: itself, a suffix stripped, silent e or a doubled consonant restored."""
    found = {word}
    for suffix in SUFFIXES:
        stem = word[: -len(suffix)]
        if not word.endswith(suffix) or len(stem) < MIN_STEM:
            continue
        if suffix in ("d", "th", "st") and not stem.endswith("e"):  # loved, loveth, lovest; not beard, forth, first
            continue
        found.add(stem)
        if suffix[0] in "ei":  # loving, loved, loveth, lovest: love; stopped: stop
            found.add(stem + "e")
            if len(stem) > MIN_STEM and stem[-1] == stem[-2] and stem[-1] not in "aeiou":
                found.add(stem[:-1])
    return found


class Lexicon:
    """The training+validation text's words, and the replacements lexical and morph draw.

    `score[word]`: the log-probability a unigram model gives the word as scored: the
    sum over the tokens of " word" of log P(token), the token counts those of the
    text's words (add-one), or log(count) without a tokenizer. A replacement is
    matched on it, so the bad line's unigram log-probability is the good one's within
    log(LEXICAL_RATIO) (lexical), and its sign is what `build_kind` balances.
    `size[word]`: what must match for equal length: the number of tokens of " word"
    (the tokenizer splits before a space, so a word's tokens do not depend on its
    neighbours; the whole line is checked anyway), or its characters."""

    def __init__(self, docs: Sequence[Doc], encode: Encode | None):
        self.counts = Counter(word for _, text in docs for word in WORD.findall(text))
        ranked = sorted(self.counts, key=lambda w: (-self.counts[w], w))
        function = set(ranked[: min(FUNCTION_WORDS, len(ranked) // 10)])
        self.open = [w for w in sorted(self.counts) if self.counts[w] >= MIN_COUNT and w.isalpha() and w.islower()
                     and w not in function]  # fmt: skip
        if encode:
            ids = dict(zip(ranked, encode([DELIMITER + w for w in ranked])))
            tokens = Counter()
            for word, word_ids in ids.items():
                for token in word_ids:
                    tokens[token] += self.counts[word]
            total = sum(tokens.values()) + len(tokens) + 1
            self.score = {w: sum(math.log((tokens[t] + 1) / total) for t in ids[w]) for w in self.open}
            self.size = {w: len(ids[w]) for w in self.open}
        else:
            self.score = {w: math.log(self.counts[w]) for w in self.open}
            self.size = {w: len(w) for w in self.open}
        self.by_size: dict[int, list[tuple[float, str]]] = defaultdict(list)  # (score, word), sorted
        for w in self.open:
            self.by_size[self.size[w]].append((self.score[w], w))
        for bucket in self.by_size.values():
            bucket.sort()
        self.family: dict[str, set[str]] = defaultdict(set)  # base -> the open words inflecting it
        for w in self.open:
            for base in _bases(w):
                if base in self.size:
                    self.family[base].add(w)

    def lexical(self, word: str, direction: int, key: tuple) -> str | None:
        """Another word of the same size whose score is within log(LEXICAL_RATIO) of `word`'s on
        the `direction` side (+1: as likely or more, -1: as likely or less), drawn by the seeded hash."""
        score, band = self.score[word], math.log(LEXICAL_RATIO)
        low, high = (score, score + band) if direction > 0 else (score - band, score)
        bucket = self.by_size[self.size[word]]
        first, end = bisect.bisect_left(bucket, (low, "")), bisect.bisect_right(bucket, (high, "\U0010ffff"))
        if end <= first:
            return None
        start = int(_order(*key, "lexical", direction)[:12], 16) % (end - first)
        bases = _bases(word)
        for step in range(end - first):
            candidate = bucket[first + (start + step) % (end - first)][1]
            if candidate != word and not _bases(candidate) & bases:  # another word, not an inflection of it
                return candidate
        return None

    def morph(self, word: str, direction: int, key: tuple) -> str | None:
        """The attested sibling inflection of the same size nearest in score on the `direction` side."""
        score = self.score[word]
        siblings = {s for base in _bases(word) for s in self.family.get(base, ())} - {word}
        near = [(abs(self.score[s] - score), s) for s in siblings
                if self.size[s] == self.size[word] and (self.score[s] - score) * direction >= 0]  # fmt: skip
        return min(near)[1] if near else None

    def direction(self, word: str, replacement: str) -> int:
        """+1 when the replacement is the more likely under the unigram, -1 the less, 0 equal."""
        return (self.score[replacement] > self.score[word]) - (self.score[replacement] < self.score[word])


# ---------------------------------------------------------------- perturbations


def _swap(line: str, key: tuple, seed: int, lexicon: Lexicon, balance: int) -> list[tuple[str, dict]]:
    words = list(WORD.finditer(line))
    # neighbours one space apart (punctuation stays put), and not the same word twice
    spots = [i for i, (a, b) in enumerate(zip(words, words[1:])) if line[a.end() : b.start()] == " "
             and a[0].lower() != b[0].lower()]  # fmt: skip
    spots.sort(key=lambda i: _order(seed, "swap", *key, i))
    out = []
    for i in spots:
        a, b = words[i], words[i + 1]
        out.append((line[: a.start()] + b[0] + " " + a[0] + line[b.end() :], {"at": a.start()}))
    return out


def _halves(line: str, key: tuple, seed: int, lexicon: Lexicon, balance: int) -> list[tuple[str, dict]]:
    spaces = [m.start() for m in re.finditer(" ", line)]
    if not spaces:
        return []
    middle = min(spaces, key=lambda s: (abs(2 * s - len(line)), s))
    bad = line[middle + 1 :] + " " + line[:middle]
    return [(bad, {"at": middle})] if bad != line else []


def _replacements(kind: str) -> Callable:
    def perturb(line: str, key: tuple, seed: int, lexicon: Lexicon, balance: int) -> list[tuple[str, dict]]:
        # the side that keeps |more frequent - less frequent| <= 1; a seeded coin when even
        coin = 1 if int(_order(seed, kind, *key)[:8], 16) % 2 else -1
        directions = (coin, -coin) if balance == 0 else ((-1,) if balance > 0 else (1,))
        words = [m for m in WORD.finditer(line) if m[0] in lexicon.size]
        words.sort(key=lambda m: _order(seed, kind, *key, m.start()))
        out = []
        for match in words:
            for direction in directions:
                other = getattr(lexicon, kind)(match[0], direction, (seed, *key, match.start()))
                if other is not None:
                    info = {"at": match.start(), "word": match[0], "replacement": other}
                    out.append((line[: match.start()] + other + line[match.end() :], info))
        return out

    return perturb


PERTURB = {"swap": _swap, "lexical": _replacements("lexical"), "morph": _replacements("morph"), "halves": _halves}
SAME_TOKENS = {"swap": True, "halves": True, "lexical": False, "morph": False}


def _fits(kind: str, good: str, bad: str, encode: Encode | None) -> bool:
    """Same tokens (swap, halves) or as many tokens (lexical, morph) as lm-eval will score them."""
    if encode is None:
        return sorted(good) == sorted(bad) if SAME_TOKENS[kind] else len(good) == len(bad)
    good_ids, bad_ids = encode([DELIMITER + good, DELIMITER + bad])
    return sorted(good_ids) == sorted(bad_ids) if SAME_TOKENS[kind] else len(good_ids) == len(bad_ids)
