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

The perturbations, and how they keep a unigram model and the choices' lengths from
telling good from bad, are harness/tasks/perturb.py's.

As build.py's tasks: scored lines come from the test documents only, the few-shot
pool (`train` split) from the validation documents (or, with none, from test lines
no scored pair uses); seeded-hash order; byte-identical rebuilds. Each kind's data
is a folder of its own, `<corpus cache entry>/tasks/pairs-<spec key>/<kind>/`, built
when first asked for (a kind's pairs do not depend on which other kinds are asked).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from arches.errors import UserError, unknown
from harness.tasks.build import MANIFEST, corpus_documents, manifest, write_task_data
from harness.tasks.corpus import WORD, Doc, _order
from harness.tasks.perturb import PERTURB, Encode, Lexicon, _fits, held_out_lines

KINDS = ("swap", "lexical", "morph", "halves")
GROUP = "corpus_pairs"
# Bump when a change here or in perturb.py changes what the files hold (it is part of the folder key).
PAIRS_VERSION = 1


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
    with `empty_ok` (harness.eval.pairs, which reports both itself), a kind with no pairs
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
