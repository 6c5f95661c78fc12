"""Findings for the wang2022 experiment (Wang et al. 2022): each published ordering, tested, with its verdict.

The statistic is what the paper ranks by: the zero-shot average accuracy over multiple-choice
tasks (its EAI-harness average), here over the tasks of the kind it scored: primary metric acc
or acc_norm and a chance level recorded (a multiple-choice task). A cloze scored by greedy
match (corpus_cloze) has no chance level and is left out, as is a group's mean, whose tasks
count one by one. Every pair (better, worse) of a claim is tested by harness.statistics on the
examples pooled over the averaged tasks, Holm-corrected over all pairs of all claims, and a
claim gets one verdict from its pairs (`claim_verdict`).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from harness.report.formatting import MISSING, sig3, signed
from harness.report.scores import (
    MULTIPLE_CHOICE_METRICS,
    Comparer,
    primary_metric,
    score_cells,
)
from harness.statistics import (
    ALPHA,
    MIN_SEEDS_MULTI_BOOTSTRAP,
    ONE_SEED_NOTE,
    POWER,
    RESAMPLES,
    Comparison,
    compare,
    compare_scores,
    holm,
)

# Wang et al. 2022, "What Language Model Architecture and Pretraining Objective Work Best
# for Zero-Shot Generalization?": the orderings after unsupervised pretraining only.
WANG2022 = "wang2022"
WANG2022_NAMES = {
    "cd_flm": "causal decoder, full LM",
    "nd_plm": "non-causal decoder, prefix LM",
    "ed_plm": "encoder-decoder, prefix LM",
    "cd_mlm": "causal decoder, MLM",
    "nd_mlm": "non-causal decoder, MLM",
    "ed_mlm": "encoder-decoder, MLM (span corruption)",
}
# (title, the paper's finding in its own words and units, the pairs (better, worse) it implies)
WANG2022_CLAIMS = (
    (
        "(a) Causal decoder FLM > non-causal decoder PLM > encoder-decoder PLM",
        "The paper's figures (EAI-harness zero-shot average accuracy, %, after 168B tokens; 4.8B-parameter "
        "decoders, 11B-parameter encoder-decoder): cd_flm 44.2, nd_plm 43.5, ed_plm 39.9, gaps of 0.7 and 3.6 "
        "points. They are not comparable with our averages (other tasks, data and scale) and enter only the "
        "power check, converted to accuracy as 0.007 and 0.036.",
        (("cd_flm", "nd_plm"), ("nd_plm", "ed_plm")),
    ),
    (
        "(b) Models trained with the MLM objective are behind LM-trained ones zero-shot",
        "The paper's finding: the MLM-trained (span corruption) models trail the LM-trained ones zero-shot "
        "(no single figure is quoted here). Each architecture's MLM model is compared with its own LM-trained "
        "model.",
        (("cd_flm", "cd_mlm"), ("nd_plm", "nd_mlm"), ("ed_plm", "ed_mlm")),
    ),
)
PAPER_AVERAGES = {"cd_flm": 44.2, "nd_plm": 43.5, "ed_plm": 39.9}  # points (%), the paper's EAI-harness averages
# (b) has no published gap here. Its power check asks whether the run could see an MLM deficit as large as
# the larger of the paper's architecture gaps (3.6 points): a deficit smaller than that would hardly be
# "behind" next to the architecture differences the paper reports.
MLM_REFERENCE_POINTS = 3.6


def paper_effect(better: str, worse: str) -> float | None:
    """The paper's difference better − worse in accuracy (a fraction), or None where it publishes none."""
    if better in PAPER_AVERAGES and worse in PAPER_AVERAGES:
        return round(PAPER_AVERAGES[better] - PAPER_AVERAGES[worse], 1) / 100
    return None


@dataclass(frozen=True)
class PairResult:
    better: str
    worse: str
    comparison: Comparison | None  # None: not tested
    why_untested: str | None
    adjusted_p: float | None  # Holm over every tested pair of every claim
    effect: float | None  # the paper's difference (fraction), for the interval check; None: the MDE check

    @property
    def significant(self) -> bool:
        return self.adjusted_p is not None and self.adjusted_p <= ALPHA

    @property
    def could_not_see(self) -> bool:
        """Could this run not have told the paper's effect (or, for (b), the reference deficit) from none?"""
        c = self.comparison
        if self.effect is not None:
            return c.ci[1] >= self.effect  # the interval reaches the paper's effect: not ruled out
        return not (c.mde <= MLM_REFERENCE_POINTS / 100)  # a nan MDE could not see anything either

    @property
    def reading(self) -> str:
        if self.comparison is None:
            return f"not tested: {self.why_untested}"
        if not self.significant:
            return "not significant"
        return "significant, the paper's way" if self.comparison.diff > 0 else "significant, against the paper"


def claim_verdict(pairs: list[PairResult]) -> tuple[str, str]:
    """(verdict, why) of one claim from its pairs: reproduced (never from one seed), contradicted, mixed,
    underpowered, not significant, or not tested."""
    untested = [r for r in pairs if r.comparison is None]
    if untested:
        return "not tested", "; ".join(f"{r.better} vs {r.worse}: {r.why_untested}" for r in untested) + "."
    one_seed = any(not r.comparison.seed_variance for r in pairs)
    caveat = f" (one seed: {ONE_SEED_NOTE})" if one_seed else ""
    along = [r for r in pairs if r.significant and r.comparison.diff > 0]
    against = [r for r in pairs if r.significant and r.comparison.diff < 0]
    if len(along) == len(pairs):
        if one_seed:
            return ("consistent with the paper at one seed (test-set uncertainty only)",
                    "Every pair is significant the paper's way after correction, but at one seed a second training "
                    "run could reverse it: this tests the examples, not the training.")
        return "reproduced", "Every pair is significant the paper's way after correction, over seeds and examples."
    if len(against) == len(pairs):
        return "contradicted" + caveat, "Every pair is significant against the paper after correction."
    if along or against:
        return "mixed" + caveat, (f"{len(along)} of {len(pairs)} pairs significant the paper's way and "
                                  f"{len(against)} against it after correction; the rest not significant.")
    blind = [r for r in pairs if r.could_not_see]
    paper = all(r.effect is not None for r in pairs)
    if blind:
        how = ("its interval reaches the paper's gap" if paper else
               f"its MDE exceeds the reference deficit of {MLM_REFERENCE_POINTS / 100:g}")
        return "underpowered" + caveat, (f"No pair is significant after correction, and for {_pair_names(blind)} "
                                         f"{how}: this run could not tell that effect from none.")
    how = ("every pair's interval ends below the paper's gap" if paper else
           f"every pair's MDE is at most the reference deficit of {MLM_REFERENCE_POINTS / 100:g}")
    return "not significant" + caveat, (f"No pair is significant after correction, and {how}: this run could have "
                                        "seen an effect that large and did not.")


def _pair_names(pairs: list[PairResult]) -> str:
    return ", ".join(f"{r.better} − {r.worse}" for r in pairs)


@dataclass
class Selection:
    tasks: list[str]  # averaged
    excluded: dict[str, str]  # task -> why not


def select_tasks(long: pd.DataFrame) -> Selection:
    """The zero-shot tasks of the kind the paper averaged (acc / acc_norm with a chance level), scored by
    every Wang variant present; the others with the reason they were left out."""
    zero = long[(long["shots"] == 0) & long["variant"].isin(list(WANG2022_NAMES))]
    excluded: dict[str, str] = {}
    if "subtasks" in zero.columns:
        for group in sorted(set(zero.loc[zero["subtasks"].notna(), "task"])):
            excluded[group] = "a group's mean (its tasks count one by one)"
        zero = zero[zero["subtasks"].isna()]
    present = set(zero["variant"])
    tasks = []
    for task, rows in zero.groupby("task", sort=True):
        metric = primary_metric(set(rows["metric"]))
        chance = pd.to_numeric(rows["chance"], errors="coerce").dropna()
        missing = sorted(present - set(rows["variant"]), key=list(WANG2022_NAMES).index)
        if metric not in MULTIPLE_CHOICE_METRICS:
            excluded[task] = f"primary metric {metric}, not acc or acc_norm"
        elif chance.empty:
            excluded[task] = (f"{metric} but no chance level recorded, so not multiple choice: a greedy match or "
                              "generation")
        elif missing:
            excluded[task] = f"not scored by {', '.join(missing)}"
        else:
            tasks.append(task)
    return Selection(tasks, excluded)


def _seed(seed: Any) -> int:
    return 0 if seed is None or (isinstance(seed, float) and math.isnan(seed)) else int(seed)


def seed_averages(long: pd.DataFrame, tasks: list[str]) -> dict[str, dict[int, float]]:
    """{variant: {seed: average over `tasks` of the task's primary zero-shot score}}, seeds with every task."""
    cells = score_cells(long[(long["shots"] == 0) & long["task"].isin(tasks)])
    averages: dict[str, dict[int, float]] = {}
    for variant in WANG2022_NAMES:
        per_task = [cells[(t, 0)][1].get(variant) for t in tasks]
        if not tasks or any(cell is None for cell in per_task):
            continue
        seeds = set.intersection(*(set(cell.values) for cell in per_task))
        for seed in sorted(seeds, key=_seed):
            averages.setdefault(variant, {})[_seed(seed)] = float(np.mean([c.values[seed] for c in per_task]))
    return averages


def pooled_outcomes(long: pd.DataFrame, tasks: list[str], comparer: Comparer) -> dict[str, dict]:
    """{variant: {seed: {(task, doc_id): value}}} for the variants whose every seed recorded per-example
    outcomes on every averaged task, on the doc_ids all of them share.

    The average over tasks is tested on the examples pooled as (task, doc_id) keys, as harness/report/groups.py
    pools a group's mean, rather than per task and combined: one training seed scores every task, so the
    tasks' seed effects are correlated, and only a test on the pooled examples keeps one seed factor crossed
    with all of them. Each value is weighted by N / (T · n_task) (N pooled examples, T tasks), so the pooled
    mean is the unweighted mean over tasks, the paper's average, even where tasks differ in n. The bootstrap
    then resamples the pooled examples without stratifying by task, which lets the tasks' shares vary and
    can only widen its interval.
    """
    cells = score_cells(long[(long["shots"] == 0) & long["task"].isin(tasks)])
    per_task: dict[str, dict[str, dict]] = {}
    for task in tasks:
        metric, by_variant = cells[(task, 0)]
        for variant, cell in by_variant.items():
            loaded = comparer.outcomes([cell], metric) if variant in WANG2022_NAMES else None
            values = loaded[variant] if loaded else None
            if values and all(isinstance(v, numbers.Real) for docs in values.values() for v in docs.values()):
                per_task.setdefault(task, {})[variant] = values
    variants = [v for v in WANG2022_NAMES if tasks and all(v in per_task.get(t, {}) for t in tasks)]
    if not variants:
        return {}
    seeds = {v: set.intersection(*(set(per_task[t][v]) for t in tasks)) for v in variants}
    shared = {t: set.intersection(*(set(per_task[t][v][s]) for v in variants for s in seeds[v])) for t in tasks}
    if not all(seeds.values()) or not all(shared.values()):
        return {}
    total = sum(len(docs) for docs in shared.values())
    pooled: dict[str, dict] = {v: {s: {} for s in seeds[v]} for v in variants}
    for task in tasks:
        weight = total / (len(tasks) * len(shared[task]))
        for variant in variants:
            for seed in seeds[variant]:
                values = per_task[task][variant][seed]
                pooled[variant][seed].update({(task, d): weight * float(values[d]) for d in shared[task]})
    return pooled


def compare_pair(better: str, worse: str, pooled: dict, averages: dict) -> Comparison | str:
    """The pair's comparison (harness.statistics' choice of test for the seeds present), or why it has none."""
    if better in pooled and worse in pooled:
        # one seed of either: the paired bootstrap over examples; two or more of each: the crossed seeds ×
        # examples t-test, as the Scores table does
        return compare(pooled[better], pooled[worse], "mean", names=(better, worse))
    missing = [v for v in (better, worse) if v not in averages]
    if missing:
        return f"no zero-shot scores on every averaged task for {', '.join(missing)}"
    a, b = averages[better], averages[worse]
    if len(a) >= 2 and len(b) >= 2:
        return compare_scores(a, b, "t", names=(better, worse))
    return "no per-example outcomes recorded, and a test on the seeds' averages alone needs 2 seeds of each"


def tested_pairs(pooled: dict, averages: dict) -> list[list[PairResult]]:
    """Each claim's pairs, tested and Holm-adjusted over every tested pair of every claim."""
    found = [[(b, w, compare_pair(b, w, pooled, averages)) for b, w in pairs] for _, _, pairs in WANG2022_CLAIMS]
    tested = [c for claim in found for _, _, c in claim if isinstance(c, Comparison)]
    adjusted = iter(holm([c.p for c in tested]) if tested else [])
    results = []
    for claim in found:
        rows = []
        for better, worse, c in claim:
            if isinstance(c, Comparison):
                rows.append(PairResult(better, worse, c, None, float(next(adjusted)), paper_effect(better, worse)))
            else:
                rows.append(PairResult(better, worse, None, c, None, paper_effect(better, worse)))
        results.append(rows)
    return results


def _pair_table(pairs: list[PairResult]) -> pd.DataFrame:
    rows = []
    for r in pairs:
        c = r.comparison
        row = {"pair (ours)": f"{r.better} − {r.worse}", "difference": MISSING, "95% interval": MISSING,
               "p": MISSING, "p, Holm": MISSING, "MDE": MISSING, "seeds": MISSING, "n": MISSING,
               "reading": r.reading}
        if c is not None:
            row.update({"difference": signed(c.diff), "95% interval": f"[{signed(c.ci[0])}, {signed(c.ci[1])}]",
                        "p": f"{c.p:.2g}", "p, Holm": f"{r.adjusted_p:.2g}", "MDE": sig3(c.mde),
                        "seeds": f"{c.seeds[0]}/{c.seeds[1]}", "n": str(c.n) if c.n else MISSING})
        rows.append(row)
    return pd.DataFrame(rows)


def _averages_table(averages: dict) -> pd.DataFrame:
    rows = [{"variant": v, "architecture, objective": WANG2022_NAMES[v], "seeds": len(averages[v]),
             "average accuracy (ours)": sig3(float(np.mean(list(averages[v].values())))),
             "per seed": ", ".join(sig3(x) for x in averages[v].values())} for v in WANG2022_NAMES if v in averages]
    return pd.DataFrame(rows, columns=["variant", "architecture, objective", "seeds", "average accuracy (ours)",
                                       "per seed"])


def _method_blocks(selection: Selection, results: list[list[PairResult]]) -> list[tuple[str, str]]:
    """What is averaged, how each pair is tested, and the verdict rules."""
    tested = [r for claim in results for r in claim if r.comparison is not None]
    all_one_seed = bool(tested) and all(not r.comparison.seed_variance for r in tested)
    excluded = "; ".join(f"{t} ({why})" for t, why in selection.excluded.items()) or "none"
    count = len(selection.tasks)
    top = ("*consistent with the paper at one seed*: every pair significant the paper's way after correction, "
           "at one seed (a claim needs two or more seeds, so that a second training run is measured, before it "
           "can count as shown)" if all_one_seed else
           "*reproduced*: every pair significant the paper's way after correction, from two or more seeds (at one "
           "seed the most it can be is *consistent with the paper at one seed*)")
    return [
        ("p", "Wang et al. (2022), *What Language Model Architecture and Pretraining Objective Work Best for "
              "Zero-Shot Generalization?*, rank the variants by the zero-shot average accuracy over "
              f"multiple-choice tasks. Ours is the unweighted mean over the {count} zero-shot "
              f"task{'s' if count != 1 else ''} of that kind that every variant was scored on (primary metric acc "
              f"or acc_norm, with a chance level): {', '.join(selection.tasks) or 'none'}. Left out: {excluded}. "
              "Our figures and differences are in accuracy (a fraction)."),
        ("p", "Each pair is tested on the examples of those tasks pooled as (task, doc_id), paired by doc_id and "
              "weighted so that their mean is the mean over tasks: at one seed of either variant, a paired "
              f"percentile bootstrap over examples ({RESAMPLES:,} resamples; {ONE_SEED_NOTE}); at two or more "
              "seeds of each, the crossed seeds × examples t-test (t with the seeds' degrees of freedom, which "
              f"holds its level at 3 seeds where the Multi-Bootstrap needs {MIN_SEEDS_MULTI_BOOTSTRAP}); without "
              "per-example outcomes, a t-test on the seeds' averages. p-values are two-sided and never 0; *p, "
              f"Holm* is Holm's step-down adjustment over all {len(tested)} tested pairs of both claims "
              f"(family-wise error ≤ {ALPHA:g}), and a pair is significant when it is ≤ {ALPHA:g}. The intervals "
              f"are unadjusted 95% intervals. MDE: the smallest difference the test would detect with {POWER:.0%} "
              f"power at α = {ALPHA:g}."),
        ("p", f"Verdicts: {top}; *contradicted*: every pair significant against the paper; *mixed*: significant "
              "pairs in both directions, or some significant and some not; *underpowered*: no pair significant, "
              "and the run could not have seen the effect in question (for (a), some pair's interval reaches the "
              "paper's gap, converted from points to accuracy for this check only; for (b), some pair's MDE "
              f"exceeds {MLM_REFERENCE_POINTS / 100:g}, the larger of the paper's architecture gaps "
              f"({MLM_REFERENCE_POINTS:g} points), our choice of the smallest deficit worth calling *behind*); "
              "*not significant*: no pair significant, though the run could have seen the effect in every pair; "
              "*not tested*: a pair lacks the scores or outcomes it needs."),
    ]


def wang2022_findings(runs: list[dict], long: pd.DataFrame, comparer: Comparer | None = None) -> list[tuple[str, Any]]:
    """The report's findings section: each claim's pairs (difference, interval, Holm p) and its verdict."""
    comparer = comparer or Comparer()
    selection = select_tasks(long)
    leaves = long[long["subtasks"].isna()] if "subtasks" in long.columns else long
    averages = seed_averages(leaves, selection.tasks)
    results = tested_pairs(pooled_outcomes(leaves, selection.tasks, comparer), averages)
    blocks: list[tuple[str, Any]] = [("h2", "Findings: Wang et al. 2022"), *_method_blocks(selection, results)]
    if averages:
        blocks.append(("table", _averages_table(averages)))
    for (title, paper, _), pairs in zip(WANG2022_CLAIMS, results):
        blocks.append(("p", f"**{title}.** {paper}"))
        blocks.append(("table", _pair_table(pairs)))
        tests = [f"{r.better} − {r.worse}: {r.comparison.test}" for r in pairs if r.comparison is not None]
        if tests:
            blocks.append(("ul", tests))
        word, why = claim_verdict(pairs)
        blocks.append(("p", f"**Verdict: {word}.** {why}"))
    return blocks
