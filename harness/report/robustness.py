"""Ranking robustness (issue 16, item 7): the variants' order under scoring rules a reader might
have chosen instead, and where it flips.

A variant's score is the unweighted mean, over the 0-shot tasks with a chance level that every
variant was scored on (multiple choice and the minimal pairs), of its per-example outcomes,
averaged over its seeds. Each rule computes that ranking twice:

  summed vs per-token-mean log-likelihood  acc (argmax of each choice's summed log-likelihood)
      against the argmax of its mean per token of the run's tokenizer; the BabyLM challenge's
      2024 and 2025 evaluation pipelines disagree on exactly this;
  acc vs acc_norm  lm-eval's per-character normalisation (Gao et al., lm-evaluation-harness);
  PLL-word-l2r vs PLL  the encoder (Kauf & Ivanova 2023 against Salazar et al. 2020), and
  T5 sentinel vs plain, GLM [MASK] vs [gMASK]: the other format's pass of harness/eval/alternatives.py.

Where two variants' order reverses, their difference is tested under each rule
(harness.statistics.compare on the per-example outcomes, paired by (task, doc_id), Holm over the
rule's tests): the reversal is a *flip* only where one of the two rules separates them
significantly; otherwise the *order is not resolved* by either rule, and nothing flipped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.eval.alternatives import RECORD_KEY
from harness.report.choices import Choices, Unavailable, accuracy, target_delimiter
from harness.report.formatting import MISSING, p_text, sig3
from harness.report.scores import Comparer, primary_metric
from harness.statistics import ALPHA, compare, holm

SHOTS = 0
COLUMNS = ["rule (default vs alternative)", "default ranking", "alternative ranking", "order"]


@dataclass(frozen=True)
class Rule:
    """One scoring choice: its two sides' labels and, for a format rule, the formats compared."""

    title: str
    default: str
    alternative: str
    formats: tuple[str, str] | None = None  # (the checkpoints' default format, the alternative pass's)


SCORE_RULES = (
    Rule("sum vs per-token mean", "sum", "mean per token"),
    Rule("acc vs acc_norm", "acc", "acc_norm"),
)


def rules() -> tuple[Rule, ...]:
    """The two scoring rules, then each family's format rules (FamilySpec.alternatives), in registry order."""
    from arches import registry  # the family files import torch: only when a report reads them

    return SCORE_RULES + tuple(
        Rule(a.title, a.default, a.alternative, (a.default, a.alternative))
        for name in registry.FAMILIES for a in registry.family(name).alternatives
    )  # fmt: skip


# ---------------------------------------------------------------- one side of a rule


@dataclass
class Source:
    """What one run gives one side of a rule for one task: its samples file and how to read it."""

    run: dict
    task: str
    samples: str | None
    entry: dict


def _entry(run: dict, task: str, scoring_format: str | None = None) -> dict | None:
    key = f"{task}|{SHOTS}"
    if scoring_format is None:
        return (run.get("evals") or {}).get(key)
    return ((run.get(RECORD_KEY) or {}).get(scoring_format) or {}).get(key)


def _file(run: dict, entry: dict | None) -> str | None:
    if not entry or not entry.get("samples_file"):
        return None
    path = Path(run["run_dir"]) / entry["samples_file"]
    return str(path) if path.is_file() else None


def _values(source: Source, how: str, comparer: Comparer, choices: Choices) -> dict:
    """{doc_id: outcome} of one run on one task: `how` is "metric:<name>" (recorded in the samples),
    "token_mean" or "acc_norm" (recorded where the task has it, else computed from the choices)."""
    name = source.run["run_name"]
    if source.samples is None:
        raise Unavailable(f"{name} has no {source.task} samples file")
    if how.startswith("metric:"):
        values = comparer.samples(source.samples, how.partition(":")[2])
        if not values:
            raise Unavailable(f"{name}'s {source.task} samples record no {how.partition(':')[2]}")
        return values
    rows = choices.rows(source.samples)
    if how == "acc_norm" and all("acc_norm" in row[3] for row in rows.values()):
        return {doc: float(row[3]["acc_norm"]) for doc, row in rows.items()}
    if how == "token_mean":
        pieces = [piece for row in rows.values() for piece in row[1]]
        counts = iter(choices.token_counts(source.run["run_dir"], pieces))
        lengths = {doc: np.array([next(counts) for _ in row[1]], dtype=float) for doc, row in rows.items()}
    else:  # lm-eval's acc_norm: the log-likelihood over the choice's characters, its delimiter left out
        delimiter = target_delimiter(source.run["run_dir"], source.entry, source.task)
        lengths = {doc: np.array([max(1, len(x.removeprefix(delimiter))) for _, x in row[1]], dtype=float)
                   for doc, row in rows.items()}  # fmt: skip
    return {doc: accuracy(row[0] / lengths[doc], row[2]) for doc, row in rows.items()}


Side = Callable[[dict, str], tuple[Source, str]]


def _plain_side(how: str) -> Side:
    def side(run: dict, task: str) -> tuple[Source, str]:
        entry = _entry(run, task) or {}
        return Source(run, task, _file(run, entry), entry), how

    return side


def _format_side(formats: tuple[str, str], alternative: bool, metric_of: dict[str, str]) -> Side:
    def side(run: dict, task: str) -> tuple[Source, str]:
        entry = _entry(run, task) or {}
        how = f"metric:{metric_of[task]}"
        if alternative and entry.get("format") == formats[0]:
            other = _entry(run, task, formats[1])
            if other is None:
                raise Unavailable(f"{run['run_name']} has no {formats[1]} pass of {task} "
                                  "(eval.alternative_formats=true scores it)")
            return Source(run, task, _file(run, other), other), how
        return Source(run, task, _file(run, entry), entry), how

    return side


def side_outcomes(runs: list[dict], tasks: list[str], side: Side, comparer: Comparer,
                  choices: Choices) -> dict[str, dict[str, dict[int, dict]]]:
    """{task: {variant: {seed: {doc_id: outcome}}}} of one side of a rule; Unavailable if any is missing."""
    out: dict = {}
    for task in tasks:
        for run in runs:
            source, how = side(run, task)
            seed = run.get("seed")
            out.setdefault(task, {}).setdefault(run["variant"], {})[0 if seed is None else int(seed)] = \
                _values(source, how, comparer, choices)
    return out


def pooled(per_task: dict, docs: dict[str, list]) -> dict:
    """{variant: {seed: {(task, doc_id): outcome · N / (T n_task)}}}: every task's shared documents
    pooled, weighted so that a pooled mean is the unweighted mean over the T tasks (N documents in all)."""
    total = sum(len(d) for d in docs.values())
    out: dict = {}
    for task, by_variant in per_task.items():
        weight = total / (len(docs) * len(docs[task]))
        for variant, seeds in by_variant.items():
            for seed, values in seeds.items():
                out.setdefault(variant, {}).setdefault(seed, {}).update(
                    {(task, doc): float(values[doc]) * weight for doc in docs[task]})
    return out


def _shared_docs(sides: list[dict]) -> dict[str, list]:
    docs = {}
    for task in sides[0]:
        sets = [set(values) for side in sides for seeds in side[task].values() for values in seeds.values()]
        shared = set.intersection(*sets)
        if not shared:
            raise Unavailable(f"the runs share no {task} example")
        docs[task] = sorted(shared, key=repr)
    return docs


# ---------------------------------------------------------------- rankings and flips


def scores_of(outcomes: dict) -> dict[str, float]:
    """Each variant's score: the mean over its seeds of its pooled mean."""
    return {variant: float(np.mean([np.mean(list(docs.values())) for docs in seeds.values()]))
            for variant, seeds in outcomes.items()}


def ranking_text(scores: dict[str, float]) -> str:
    ordered = sorted(scores, key=lambda v: -scores[v])
    text = f"{ordered[0]} {sig3(scores[ordered[0]])}"
    for before, variant in zip(ordered, ordered[1:]):
        text += f" {'=' if scores[variant] == scores[before] else '>'} {variant} {sig3(scores[variant])}"
    return text


def reversed_pairs(default: dict[str, float], alternative: dict[str, float], variants: list[str]) -> list[tuple]:
    """(a, b) with a ahead of b under the default and b ahead of a under the alternative (ties are no flip)."""
    pairs = []
    for i, a in enumerate(variants):
        for b in variants[i + 1:]:
            before, after = default[a] - default[b], alternative[a] - alternative[b]
            if before * after < 0:
                pairs.append((a, b) if before > 0 else (b, a))
    return pairs


@dataclass(frozen=True)
class Reversal:
    """Two variants in the opposite order under a rule's two sides, with Holm-adjusted p under each."""

    ahead: str  # ahead under the default
    behind: str
    p_default: float
    p_alternative: float

    @property
    def flips(self) -> bool:
        """A flip: one of the two sides separates the pair (else the order is not resolved)."""
        return min(self.p_default, self.p_alternative) <= ALPHA

    @property
    def pair(self) -> str:
        return f"{self.ahead} ↔ {self.behind}"


def reversals(pairs: list[tuple], default: dict, alternative: dict) -> list[Reversal]:
    """Each reversed pair tested under both sides (harness.statistics.compare, paired by (task, doc_id)),
    Holm over the 2 × pairs tests of the rule."""
    tests = [compare(side[a], side[b], "mean", names=(a, b)) for a, b in pairs for side in (default, alternative)]
    adjusted = holm([t.p for t in tests]) if tests else []
    return [Reversal(a, b, float(adjusted[2 * i]), float(adjusted[2 * i + 1])) for i, (a, b) in enumerate(pairs)]


def order_text(found: list[Reversal]) -> str:
    """The table's column: the flipped pairs by name, the unresolved reversals counted (named below it)."""
    if not found:
        return "same order"
    flips = [r.pair for r in found if r.flips]
    unresolved = len(found) - len(flips)
    parts = [f"flips: {', '.join(flips)}"] if flips else []
    if unresolved:
        parts.append(f"{unresolved} {'pair' if unresolved == 1 else 'pairs'} reversed, order not resolved")
    return "; ".join(parts)


def detail_text(rule: Rule, found: list[Reversal], note: str | None = None) -> str:
    """One rule's reversed pairs with their Holm-adjusted p under each side, after its note if any."""
    def one(reversal: Reversal) -> str:
        verdict = "a flip" if reversal.flips else "not resolved"
        return (f"{reversal.ahead} ↔ {reversal.behind} {verdict} ({p_text(reversal.p_default)} under "
                f"{rule.default}, {p_text(reversal.p_alternative)} under {rule.alternative})")

    return f"**{rule.title}**: " + "; ".join([*([note] if note else []), *map(one, found)]) + "."


def rule_row(rule: Rule, runs: list[dict], tasks: list[str], metric_of: dict[str, str], variants: list[str],
             comparer: Comparer, choices: Choices) -> tuple[dict, list[Reversal], str | None]:
    """One row of the table (both rankings and the order), its reversed pairs and a note on the tasks
    it left out; or the reason it has none."""
    row, note = {COLUMNS[0]: rule.title}, None
    if rule.formats is None:
        sides = (_plain_side("metric:acc"), _plain_side("acc_norm" if rule.alternative == "acc_norm" else "token_mean"))
    else:
        affected = {t: [r for r in runs if (_entry(r, t) or {}).get("format") == rule.formats[0]] for t in tasks}
        if not any(affected.values()):
            return {**row, **_not_computed(f"not applicable: no variant was scored in {rule.formats[0]}")}, [], None
        # a task the format could not score (a continuation past T5's trained target) leaves both sides
        missing = {t: why for t in tasks if (why := _missing(affected[t], t, rule.formats[1]))}
        if missing:
            by_reason: dict[str, list[str]] = {}
            for task, why in missing.items():
                by_reason.setdefault(why, []).append(task)
            note = "; ".join(f"{', '.join(left_out)}: {why}" for why, left_out in by_reason.items())
            if len(missing) == len(tasks):
                return {**row, **_not_computed(f"not computed: no ranked task has a {rule.formats[1]} pass of "
                                               f"every {rule.formats[0]} run (below)")}, [], note
            note = f"ranked on {len(tasks) - len(missing)} of the {len(tasks)} tasks, without {note}"
            tasks = [t for t in tasks if t not in missing]
        sides = (_format_side(rule.formats, False, metric_of), _format_side(rule.formats, True, metric_of))
    try:
        per_task = [side_outcomes(runs, tasks, side, comparer, choices) for side in sides]
        docs = _shared_docs(per_task)
    except Unavailable as reason:
        return {**row, **_not_computed(f"not computed: {reason}")}, [], None
    default, alternative = (pooled(side, docs) for side in per_task)
    before, after = scores_of(default), scores_of(alternative)
    found = reversals(reversed_pairs(before, after, [v for v in variants if v in before]), default, alternative)
    row.update({COLUMNS[1]: ranking_text(before), COLUMNS[2]: ranking_text(after), "order": order_text(found)})
    return row, found, note


def _missing(runs: list[dict], task: str, scoring_format: str) -> str | None:
    """Why one of `runs` has no outcomes of `task` in the alternative format, or None when all have."""
    for run in runs:
        entry = _entry(run, task, scoring_format)
        if entry is None:
            return f"{run['run_name']} has no {scoring_format} pass (eval.alternative_formats=true scores it)"
        if entry.get("skipped"):
            return f"{scoring_format} could not score {run['run_name']}'s ({entry['skipped']})"
    return None


def _not_computed(reason: str) -> dict:
    return {COLUMNS[1]: reason, COLUMNS[2]: MISSING, "order": MISSING}


def ranked_tasks(long: pd.DataFrame, variants: list[str]) -> list[str]:
    """The 0-shot tasks with a chance level that every variant has a score on (groups excluded)."""
    zero = long[(long["shots"] == SHOTS) & long["chance"].notna()]
    if "subtasks" in zero:
        zero = zero[zero["subtasks"].isna()]
    present = [set(zero[zero["variant"] == v]["task"]) for v in variants]
    return sorted(set.intersection(*present)) if present else []


def robustness_rows(runs: list[dict], long: pd.DataFrame, comparer: Comparer,
                    variants: list[str]) -> list[tuple[Rule, dict, list[Reversal], str | None]]:
    """Per rule (`rules()`): its table row, its reversed pairs and its note."""
    variants = [v for v in variants if v in set(long["variant"])] if len(long) else []
    tasks = ranked_tasks(long, variants)
    runs = [r for r in runs if r.get("status") == "completed" and r["variant"] in variants]
    metric_of = {task: primary_metric(set(rows["metric"])) for task, rows in long.groupby("task")}
    choices = Choices()
    return [(rule, *rule_row(rule, runs, tasks, metric_of, variants, comparer, choices)) for rule in rules()]


def robustness_table(runs: list[dict], long: pd.DataFrame, comparer: Comparer, variants: list[str]) -> pd.DataFrame:
    """One row per rule: both rankings, and whether the order flips and between whom."""
    return pd.DataFrame([row for _, row, _, _ in robustness_rows(runs, long, comparer, variants)], columns=COLUMNS)


def robustness_blocks(runs: list[dict], long: pd.DataFrame, comparer: Comparer | None,
                      variants: list[str]) -> list[tuple[str, Any]]:
    """The report's Ranking robustness section: one table of the rules, each reversed pair's tests, and
    how to read them."""
    comparer = comparer or Comparer()
    blocks: list[tuple[str, Any]] = [("h2", "Ranking robustness")]
    present = [v for v in variants if len(long) and v in set(long["variant"])]
    tasks = ranked_tasks(long, present) if present else []
    if len(present) < 2 or not tasks:
        blocks.append(("p", "Not computed: it needs two or more variants scored on a 0-shot task with a chance "
                            "level (multiple choice or the minimal pairs)."))
        return blocks
    rows = robustness_rows(runs, long, comparer, variants)
    blocks.append(("table", pd.DataFrame([row for _, row, _, _ in rows], columns=COLUMNS)))
    details = [detail_text(rule, found, note) for rule, _, found, note in rows if found or note]
    if details:
        blocks.append(("ul", details))
    blocks.append(("p", (
        f"Each variant's score is the unweighted mean over the {len(tasks)} 0-shot task(s) with a chance level "
        f"that every variant was scored on ({', '.join(tasks)}), averaged over seeds, under each rule's default "
        "and its alternative: the argmax of each choice's summed log-likelihood against its mean per "
        "token (the BabyLM challenge's 2024 and 2025 pipelines differ on exactly this), acc against acc_norm "
        "(lm-eval's, per character), and the encoder, T5 and GLM scored in their other format "
        "(`eval.alternative_formats`; recorded apart from the Scores table, whose figures stay in the default "
        "format), the other variants keeping their default outcomes. The first two rules' default ranking is on "
        "acc; the format rules' is on each task's metric in the Scores table (acc_norm where the task has it). "
        "A tie between choices scores the gold choice's share of it. Where two variants' order reverses, their "
        "difference is tested under both the default and the alternative on the per-example outcomes paired by "
        "(task, doc_id), Holm over the "
        f"rule's tests at α = {ALPHA:g} (the p-values above are Holm-adjusted): a *flip* where either side "
        "separates them, *order not resolved* where neither does."
    )))
    return blocks
