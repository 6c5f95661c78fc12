"""The score tables' statistics: each cell's interval, the row's marks and its chance flag.

Everything statistical comes from harness.statistics; this module only turns a row of the
report (a variant's lm-eval scores by seed, and its per-example outcomes where the samples
files hold them) into what a cell shows:

  interval  one seed: Wilson (k of n) for 0/1 accuracy, a percentile bootstrap over the
            documents (bits/byte, perplexities: Σ loglik / Σ bytes) or examples otherwise;
            several seeds: the mean's t interval counting seeds and examples (the crossed
            seeds × examples variance) where the outcomes are recorded, else over the seeds'
            scores; for accuracy never narrower than Wilson's at its n.
  test      harness.statistics' choice by the seeds there are ("auto"), or the one the report
            asks for (`arches report <folder> report.test=...`); a test the seeds cannot support
            is refused in one line naming the row and the seeds it needs.
  bold      the highest point estimate (lowest for lower-is-better metrics).
  ★         significantly better than every other ranked variant, Holm over all pairs of the row.
  †         significantly worse than the bold variant, same Holm family.
  ≈ chance  no variant beats the task's chance level (one-sided, Holm over the row); such a
            row gets no ★.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field

from arches.errors import UserError
from harness.report.formatting import _decimals, _number, sd_text
from harness.statistics import (
    ALPHA,
    ONE_SEED_NOTE,
    Outcomes,
    align,
    beats_chance,
    compare_row,
    compare_scores,
    crossed_interval,
    mark_row,
    metric_kind,
    seed_summary,
    wilson,
)
from harness.statistics.outcomes import METRIC_KINDS

BEST_MARK, WORSE_MARK, CHANCE_FLAG = "★", "†", "≈ chance"
WILSON, DOC_BOOT, EXAMPLE_BOOT, SEEDS_T = "wilson", "document bootstrap", "example bootstrap", "t over seeds"
CROSSED = "t over seeds × examples"


@dataclass
class RowStats:
    low: dict = field(default_factory=dict)  # variant -> interval bound (nan: none)
    high: dict = field(default_factory=dict)
    interval: dict = field(default_factory=dict)  # variant -> WILSON | DOC_BOOT | EXAMPLE_BOOT | CROSSED | SEEDS_T | "none"
    bold: tuple = ()
    star: str | None = None
    dagger: tuple = ()
    p_vs_best: dict = field(default_factory=dict)  # variant -> Holm-adjusted p against the bold variant
    test: str | None = None  # the pairwise test, for the legend
    at_chance: bool | None = None  # True: no variant beats chance; None: not tested (no chance level or outcomes)
    comparisons: dict = field(default_factory=dict)  # (a, b) -> Comparison, every pair of the ranked variants
    adjusted: dict = field(default_factory=dict)  # (a, b) -> Holm-adjusted p, over the same pairs
    anchor: str | None = None  # whom † and p_vs_best are against: the first bold variant


def metric_kind_of(metric: str, higher: bool, outcomes: dict[str, Outcomes] | None):
    """The statistics' kind for an lm-eval metric; accuracy whose outcomes are not all 0/1 (a
    minimal pair's tie scores half) is a plain mean."""
    name = METRIC_KINDS.get(metric) or ("mean" if higher else "mean_lower_better")
    if name == "accuracy" and outcomes and any(v not in (0, 1) for o in outcomes.values()
                                               for docs in o.values() for v in docs.values()):
        name = "mean"
    return metric_kind(name)


def usable(outcomes: dict[str, Outcomes], kind) -> bool:
    """Whether the outcomes align as `kind` (old samples files may hold no (loglik, bytes) pairs)."""
    try:
        align(outcomes, kind)
    except UserError:
        return False
    return True


def row_stats(values: dict[str, dict], outcomes: dict[str, Outcomes] | None, metric: str, higher: bool,
              ranked: list[str], chance: float | None, n: dict[str, int | None], test: str = "auto") -> RowStats:
    """A row's intervals and marks. `values`: variant -> {seed: lm-eval score}; `outcomes`:
    variant -> {seed: {doc_id: value}} for every variant with a samples file at every seed
    (None where some has none); `ranked`: the variants compared (PLL figures are not); `test`:
    harness.statistics' pairwise test (TESTS). The sign-flip test needs only the seeds' scores,
    so it also marks rows without outcomes."""
    kind = metric_kind_of(metric, higher, outcomes)
    if outcomes is not None and not usable(outcomes, kind):
        outcomes = None
    stats = RowStats()
    for variant, seeds in values.items():
        stats.low[variant], stats.high[variant], stats.interval[variant] = _interval(
            variant, seeds, outcomes, kind, n.get(variant))
    estimates = {v: sum(values[v].values()) / len(values[v]) for v in ranked}
    compared = {v: outcomes[v] for v in ranked} if outcomes is not None else None
    comparisons = None
    if len(estimates) >= 2 and compared is not None:
        comparisons = compare_row(compared, kind, test).comparisons
    elif len(estimates) >= 2 and test == "sign_flip" and all(_integer_seeds(values[v]) for v in ranked):
        comparisons = {(a, b): compare_scores(values[a], values[b], "sign_flip", names=(a, b))
                       for i, a in enumerate(ranked) for b in ranked[i + 1:]}
    if comparisons is not None:
        marks = mark_row(estimates, comparisons, higher)  # bold on the scores the table shows
        stats.comparisons, stats.adjusted, stats.anchor = comparisons, marks.adjusted, marks.anchor
        stats.bold, stats.star, stats.dagger = marks.bold, marks.star, marks.dagger
        stats.p_vs_best = {v: p for (a, b), p in marks.adjusted.items() for v in (a, b)
                           if marks.anchor in (a, b) and v != marks.anchor}
        stats.test = "; ".join(sorted({c.test for c in comparisons.values()}))
    elif estimates:
        sign = 1 if higher else -1
        top = max(sign * e for e in estimates.values())
        stats.bold = tuple(v for v, e in estimates.items() if sign * e >= top - 1e-12 * max(1.0, abs(top)))
    if _number(chance) and kind.higher_is_better and not kind.ratio and estimates:
        if all(e <= chance for e in estimates.values()):
            stats.at_chance = True  # no one-sided test can reject at or below chance
        elif compared is not None:
            stats.at_chance = not beats_chance(compared, chance, kind).beats_chance
    if stats.at_chance:
        stats.star = None
    return stats


def _integer_seeds(seeds: dict) -> bool:
    return all(isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in seeds)


def _with_wilson_floor(low: float, high: float, mean: float, kind, n: int | None) -> tuple[float, float]:
    """An accuracy's interval never narrower than Wilson's at its n: seeds only add variance to the test
    set's, and when every seed scores alike (0 of 100 three times) the seeds' spread is 0, which would
    show '0.00 [0.00, 0.00]'."""
    if not (kind.proportion and isinstance(n, int) and n > 0 and _number(mean) and 0 <= mean <= 1):
        return low, high
    floor = wilson(int(round(mean * n)), n)
    return max(0.0, min(low, floor.low)), min(1.0, max(high, floor.high))  # an accuracy lies in [0, 1]


def _interval(variant: str, seeds: dict, outcomes: dict | None, kind, n: int | None) -> tuple[float, float, str]:
    if len(seeds) >= 2:
        mean = sum(seeds.values()) / len(seeds)
        if outcomes is not None:  # seeds and the shared test set, both (Bouthillier et al. 2021; Sellam et al. 2022)
            table = align({variant: outcomes[variant]}, kind)[variant]
            result = crossed_interval(table, kind)
            return (*_with_wilson_floor(result.low, result.high, mean, kind, table.n), CROSSED)
        summary = seed_summary(list(seeds.values()))
        return (*_with_wilson_floor(summary.low, summary.high, mean, kind, n), SEEDS_T)
    if outcomes is not None:
        table = align({variant: outcomes[variant]}, kind)[variant]
        if kind.proportion:
            result = wilson(int(round(table.numerator.sum())), table.n)
            return result.low, result.high, WILSON
        from harness.statistics.intervals import (
            cell_interval,  # the percentile bootstrap of one seed
        )

        result = cell_interval(outcomes[variant], kind, "bootstrap")
        return result.low, result.high, DOC_BOOT if kind.ratio else EXAMPLE_BOOT
    value = next(iter(seeds.values()))
    if kind.proportion and _number(value) and isinstance(n, int) and n > 0 and 0 <= value <= 1:
        result = wilson(int(round(value * n)), n)  # k of n from the recorded score and its n
        return result.low, result.high, WILSON
    return math.nan, math.nan, "none"


# ---------------------------------------------------------------- display


def cell_text(estimate: float, low: float, high: float, bold: bool, sig3, sd: float | None = None) -> str:
    """'**0.612** [0.580, 0.640]': the estimate to 3 significant digits (bold where best), its
    interval's bounds to the same decimals; intervals need not be symmetric (Wilson at 0/100 is
    [0, 0.037]), so every cell shows its bounds, never '± 0.00'. Over several seeds the sd over
    the seeds' scores comes between them: '0.612 ± 0.010 [0.570, 0.654]'."""
    text = sig3(estimate)
    shown = f"**{text}**" if bold else text
    places = _decimals(text)
    if _number(sd):
        shown += sd_text(sd, estimate)
    if not (_number(low) and _number(high)):
        return shown
    return f"{shown} [{low:.{places}f}, {high:.{places}f}]"


def marks_text(star: bool, dagger: bool) -> str:
    return f" {BEST_MARK}" if star else f" {WORSE_MARK}" if dagger else ""


_METHOD_WORDS = {
    WILSON: "a Wilson 95% interval of k correct of n (one seed)",
    DOC_BOOT: "a percentile bootstrap 95% interval over documents of Σ log-likelihood / Σ bytes (one seed)",
    EXAMPLE_BOOT: "a percentile bootstrap 95% interval over examples (one seed)",
    CROSSED: ("the mean over seeds with its t 95% interval counting both the seeds and the shared test set "
              "(seeds × examples; for accuracy never narrower than Wilson's at its n)"),
    SEEDS_T: "the mean over seeds with its t 95% interval over the seeds' scores (no per-example outcomes)",
}


def legend(methods: set, tests: set, one_seed: bool, any_untested: bool) -> str:
    """The table's legend: its interval types, the mark rule with its family-wise correction, and
    what a one-seed table leaves out."""
    used = [_METHOD_WORDS[m] for m in (WILSON, DOC_BOOT, EXAMPLE_BOOT, CROSSED, SEEDS_T) if m in methods]
    if one_seed:  # the caveat each one-seed test label carries is said once, at the end
        tests = {test.removesuffix(f": {ONE_SEED_NOTE}") for test in tests}
    text = ("Each cell is the score" + (" ± the sd over its seeds" if not one_seed else "")
            + " [its 95% interval's bounds], intervals need not be symmetric: "
            + ("; ".join(used) if used else "no interval could be computed") + ". "
            + "**Bold**: the highest point estimate (lowest for ↓), significant or not. "
            + f"{BEST_MARK}: significantly better than every other variant of the row; {WORSE_MARK}: significantly "
            + "worse than the bold variant; both after Holm's correction over all pairs of the row (family-wise "
            + f"α = {ALPHA:g}). {CHANCE_FLAG}: no variant beats the task's chance level (one-sided tests, Holm over "
            + f"the row), and the row gets no {BEST_MARK}. Pairwise tests: "
            + ("; ".join(sorted(tests)) if tests else "none (no per-example outcomes, or nothing to compare)") + ".")
    if any_untested:
        text += " Rows without per-example outcomes in every variant's samples files carry no marks."
    if one_seed:
        text += f" One seed per variant: {ONE_SEED_NOTE}."
    return text
