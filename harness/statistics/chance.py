"""Does any variant of a row beat the task's chance level? One-sided tests, Holm over the row.

A row where none does is flagged: its differences compare variants that have not learnt the
task (the README's `corpus_next 0.240` sat below chance 0.25 and still carried a ★).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from harness.statistics import crossed, resampling
from harness.statistics.multiplicity import holm
from harness.statistics.outcomes import (ALPHA, BOOTSTRAP_SEED, RESAMPLES, MetricKind, Outcomes, Table, align,
                                         metric_kind)
from harness.statistics.significance import TINY_P


@dataclass(frozen=True)
class ChanceTest:
    """Whether any variant of a row beats the task's chance level (one-sided, Holm over the row)."""

    best: str  # the variant with the smallest adjusted p
    p: float  # its Holm-adjusted one-sided p
    beats_chance: bool  # False: flag the row "no variant beats chance"
    p_by_variant: dict  # variant -> unadjusted one-sided p
    test: str


def p_above_chance(table: Table, kind: MetricKind, chance: float, resamples: int = RESAMPLES,
                   seed: int = BOOTSTRAP_SEED) -> tuple[float, str]:
    """(one-sided p for "the score exceeds chance", test): exact binomial at one seed of 0/1 outcomes,
    a one-sided percentile bootstrap at one seed otherwise, the crossed t-test from two seeds."""
    if table.k >= 2:
        variance = crossed.one_sample(table, kind)
        if variance.se == 0:
            return (TINY_P if variance.estimate > chance else 1.0), "seeds × examples t (one-sided)"
        t = (variance.estimate - chance) / variance.se
        return max(TINY_P, crossed.t_sf(t, variance.df)), f"seeds × examples t (one-sided, {variance.df:g} df)"
    if kind.proportion:
        successes = int(round(table.numerator.sum()))
        return float(stats.binomtest(successes, table.n, chance, alternative="greater").pvalue), "exact binomial"
    boot = resampling.replicates(table, None, kind, resamples=resamples, seed=seed)
    return resampling.one_sided_p_above(boot, chance), f"one-sided bootstrap, R = {resamples}"


def beats_chance(row: Mapping[str, Outcomes], chance: float, kind: str | MetricKind, *, alpha: float = ALPHA,
                 resamples: int = RESAMPLES, seed: int = BOOTSTRAP_SEED) -> ChanceTest:
    """One-sided tests of every variant against chance, Holm-adjusted over the row (the best is chosen
    after seeing the data, so testing it alone at α would overstate it)."""
    kind = metric_kind(kind)
    if not kind.higher_is_better or kind.ratio:
        raise ValueError(f"a chance level applies to accuracy-like scores, not {kind.name}")
    tables = align(row, kind)
    results = {variant: p_above_chance(t, kind, chance, resamples, seed) for variant, t in tables.items()}
    variants: Sequence[str] = list(results)
    adjusted = holm([results[v][0] for v in variants])
    best = int(np.argmin(adjusted))
    tests = sorted({test for _, test in results.values()})
    label = f"one-sided test against chance {chance:g} ({', '.join(tests)}), Holm over {len(variants)} variants"
    return ChanceTest(variants[best], float(adjusted[best]), bool(adjusted[best] <= alpha),
                      {v: results[v][0] for v in variants}, label)
