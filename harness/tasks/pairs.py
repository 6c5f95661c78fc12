"""Minimal-pair tasks built from a corpus's held-out documents (BLiMP's format, Warstadt et al. 2020).

Each example is a held-out line (a sentence or verse line of a *test* document,
never found in the training or validation text) and a minimally perturbed copy;
the model is asked which it prefers: an lm-eval `multiple_choice` task with an
empty context and the choices [good, bad], gold 0. One task per kind, all in the
group `corpus_pairs`, so a report can say which kind of knowledge differs:

- `pairs_swap`: two adjacent words swapped ("the old king" -> "old the king").
- `pairs_lexical`: a content word replaced by another of the same frequency band: its
  unigram log-probability (over its tokens, counted in the training+validation text)
  within log(`LEXICAL_RATIO`) of the original's.
- `pairs_morph`: a word replaced by a sibling inflection the corpus attests (-s, -es,
  -ed, -d, -ing, -eth, -th, -est, -st on one base, silent e and doubled consonant
  restored: loved/loves/loveth/loving), the sibling nearest in that log-probability.
  The stemming is a heuristic: a false sibling (even/evening) makes a lexical-like
  change, still a perturbed line.
- `pairs_halves`: the line's two halves swapped at the word boundary nearest its middle.

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

As build.py's tasks: scored lines come from the test documents only, the few-shot
pool (`train` split) from the validation documents (or, with none, from test lines
no scored pair uses); seeded-hash order; byte-identical rebuilds. Each kind's data
is a folder of its own, `<corpus cache entry>/tasks/pairs-<spec key>/<kind>/`, built
when first asked for (a kind's pairs do not depend on which other kinds are asked).
"""

from __future__ import annotations

import bisect
import hashlib
import json
import math
import re
import shutil
import sys
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from arches.errors import UserError, unknown
from harness.tasks.build import MANIFEST, WORD, Doc, _order, corpus_documents, manifest, write_task_data

KINDS = ("swap", "lexical", "morph", "halves")
GROUP = "corpus_pairs"
# Bump when a change here changes what the files hold (it is part of the folder key).
PAIRS_VERSION = 1
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


def task_name(kind: str) -> str:
    return f"pairs_{kind}"


@dataclass(frozen=True)
class PairSpec:
    """What decides the pairs besides the documents and the tokenizer (and so names their folder)."""

    kinds: tuple[str, ...] = KINDS
    max_pairs: int = 500  # scored pairs per kind
    fewshot_pool: int = 100  # few-shot pairs per kind
    seed: int = 1234

    def __post_init__(self):
        if not self.kinds:
            raise UserError(f"eval.corpus.pair_kinds is empty; name some of {', '.join(KINDS)}, e.g. [swap,lexical]")
        for kind in self.kinds:
            if kind not in KINDS:
                raise unknown("pair kind in eval.corpus.pair_kinds", kind, KINDS)
        checks = (("max_pairs", self.max_pairs, 1, 500), ("fewshot_pool", self.fewshot_pool, 0, 100))
        for key, value, least, example in checks:
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise UserError(f"eval.corpus.{key}={value!r} must be an integer >= {least}, e.g. {example}")

    def key(self) -> str:
        """The kinds are not in it: each kind's folder is built on its own."""
        spec = {"version": PAIRS_VERSION, "max_pairs": self.max_pairs, "fewshot_pool": self.fewshot_pool,
                "seed": self.seed}  # fmt: skip
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def pair_spec(ev: Any) -> PairSpec:
    """The PairSpec an `eval` config section asks for: eval.corpus.pair_kinds, max_pairs,
    fewshot_pool and eval.seed (checked before anything is built)."""
    corpus = ev.get("corpus") or {}
    kinds = corpus.get("pair_kinds", list(KINDS))
    kinds = [kinds] if isinstance(kinds, str) else list(kinds or [])
    return PairSpec(
        tuple(dict.fromkeys(str(k).strip() for k in kinds)),
        corpus.get("max_pairs", 500),
        corpus.get("fewshot_pool", 100),
        int(ev.get("seed", 1234)),
    )


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


def build_kind(kind: str, lines: list[tuple[str, int, str]], limit: int, seed: int, lexicon: Lexicon,
               encode: Encode | None, unseen: Callable[[str], bool] = lambda line: True) -> list[dict]:  # fmt: skip
    """Up to `limit` pairs of one kind from `lines`, in seeded order; `unseen(line)` rejects
    a line that occurs in text the model trained on."""
    ordered = sorted(lines, key=lambda entry: _order(seed, task_name(kind), entry[0], entry[1]))
    rows, goods, balance = [], set(), 0
    for name, index, line in ordered:
        if len(rows) >= limit:
            break
        if line in goods:
            continue
        for bad, info in PERTURB[kind](line, (name, index), seed, lexicon, balance):
            if bad == line or not _fits(kind, line, bad, encode):
                continue
            if not unseen(line):
                break
            if "replacement" in info:
                balance += lexicon.direction(info["word"], info["replacement"])
            rows.append({"good": line, "bad": bad, "doc": name, "line": index, **info})
            goods.add(line)
            break
    return rows


def build_pairs(test_docs: Sequence[Doc], pool_docs: Sequence[Doc], train_docs: Sequence[Doc], spec: PairSpec,
                encode: Encode | None = None) -> dict[str, dict[str, list[dict]]]:  # fmt: skip
    """{kind: {"test": scored pairs, "train": few-shot pool}}; word counts from train+val."""
    test_docs, pool_docs, train_docs = sorted(test_docs), sorted(pool_docs or []), sorted(train_docs)
    lexicon = Lexicon([*train_docs, *pool_docs], encode)
    trained_text = "\n".join(text for _, text in [*train_docs, *pool_docs])
    test_lines = held_out_lines(test_docs)
    known: dict[str, bool] = {}

    def unseen(line: str) -> bool:
        if line not in known:
            # a word the training text lacks: the line is not in it, no need to scan it all
            known[line] = any(lexicon.counts[w] == 0 for w in WORD.findall(line)) or line not in trained_text
        return known[line]

    out = {}
    for kind in spec.kinds:
        test = build_kind(kind, test_lines, spec.max_pairs, spec.seed, lexicon, encode, unseen)
        if pool_docs:
            pool_lines = held_out_lines(pool_docs)
        else:  # test lines no scored pair uses
            taken = {(row["doc"], row["line"]) for row in test}
            pool_lines = [entry for entry in test_lines if entry[:2] not in taken]
        pool = build_kind(kind, pool_lines, spec.fewshot_pool, spec.seed + 1, lexicon, encode)
        out[kind] = {"test": test, "train": pool}
    return out


# ---------------------------------------------------------------- the build


def pairs_folder(entry: Path, spec: PairSpec) -> Path:
    """What the task YAMLs' loader is given (`arches_pairs_data`); each kind is a folder inside."""
    return Path(entry) / "tasks" / f"pairs-{spec.key()}"


def short_note(kind: str, built: int, spec: PairSpec) -> str | None:
    """The line for a kind built with fewer than max_pairs pairs (None when it has them all)."""
    if built >= spec.max_pairs:
        return None
    return (f"{task_name(kind)}: the held-out split gives {built} of eval.corpus.max_pairs={spec.max_pairs} pairs; "
            "the task is built with those (raise data.test_fraction for more)")  # fmt: skip


def no_pairs(kind: str, documents: int | str) -> UserError:
    return UserError(
        f"pair kind '{kind}': the held-out split ({documents} documents) gives no pairs; raise "
        f"data.test_fraction or add text, or drop {kind} from eval.corpus.pair_kinds"
    )


def pair_counts(root: Path, kinds: Sequence[str]) -> dict[str, int]:
    """{kind: scored pairs} of a built pairs folder."""
    return {kind: manifest(Path(root) / kind)["examples"][task_name(kind)]["test"] for kind in kinds}


def ensure_pairs_data(entry: Path, documents: Callable[[], tuple[list[Doc], list[Doc], list[Doc]]], spec: PairSpec,
                      encode: Encode | None = None, empty_ok: bool = False) -> Path:  # fmt: skip
    """The pairs folder of a corpus cache entry, each kind of `spec.kinds` built from
    `documents()` -> (test, val, train) if missing. A kind with no pairs is a UserError
    and nothing is written, and a kind with fewer than max_pairs is one line on stderr;
    with `empty_ok` (harness.pairs_eval, which reports both itself), a kind with no pairs
    is written empty, so the group can run without it, and nothing is printed."""
    root = pairs_folder(entry, spec)
    missing = [kind for kind in spec.kinds if not (root / kind / MANIFEST).is_file()]
    if missing:
        test_docs, pool_docs, train_docs = documents()
        built = build_pairs(test_docs, pool_docs, train_docs, replace(spec, kinds=tuple(missing)), encode)
        for kind in missing:
            if not built[kind]["test"] and not empty_ok:
                raise no_pairs(kind, len(test_docs))
        for kind in missing:
            folder = root / kind
            if folder.exists():  # incomplete (damaged by hand): never trusted
                shutil.rmtree(folder)
            write_task_data(folder, {task_name(kind): built[kind]}, {
                "kind": kind,
                "pairs_version": PAIRS_VERSION,
                "spec": {"max_pairs": spec.max_pairs, "fewshot_pool": spec.fewshot_pool, "seed": spec.seed},
                "length": "same token count under the run's tokenizer" if encode else "same characters (no tokenizer)",
                "test_documents": sorted(name for name, _ in test_docs),
                "fewshot_documents": sorted(n for n, _ in pool_docs) if pool_docs else "test (lines no pair uses)",
            })  # fmt: skip
    for kind, built_pairs in pair_counts(root, spec.kinds).items():
        note = None if empty_ok else short_note(kind, built_pairs, spec)
        if note:
            print(f"arches: {note}", file=sys.stderr)
    return root


def pairs_data_for_config(cfg: Any, spec: PairSpec, empty_ok: bool = False) -> Path:
    """Build or reuse the pairs of the corpus that `cfg` (a root config with `data` and
    `cache_dir`) names, token counts under its cache entry's tokenizer.json."""
    from arches.data.cache import prepare

    prepared = prepare(cfg)
    tokenizer = prepared.tokenizer()

    def encode(texts: list[str]) -> list[list[int]]:
        if len(texts) > 64:  # encode_batch's thread pool costs more than it gives on a pair
            return [e.ids for e in tokenizer.encode_batch(texts, add_special_tokens=False)]
        return [tokenizer.encode(text, add_special_tokens=False).ids for text in texts]

    documents = lambda: tuple(corpus_documents(cfg, prepared, ("test", "val", "train")))  # noqa: E731
    return ensure_pairs_data(prepared.cache_dir, documents, spec, encode, empty_ok)
