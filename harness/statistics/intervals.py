"""Intervals for one variant's score: Wilson, percentile and document bootstraps, seeds, crossed.

`cell_interval` picks one per cell from the metric kind and the number of seeds; a table
that must show one interval type throughout passes `method` explicitly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats
from statsmodels.stats.proportion import proportion_confint

from arches.errors import UserError, unknown
from harness.statistics import crossed, resampling
from harness.statistics.outcomes import BOOTSTRAP_SEED, CONFIDENCE, RESAMPLES, Outcomes, align, metric_kind


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float
    method: str  # what the interval covers, for the table's legend
    n: int  # documents
    seeds: int

    @property
    def half_width(self) -> float:
        """The larger side: Wilson and bootstrap intervals need not be symmetric."""
        return max(self.estimate - self.low, self.high - self.estimate)


@dataclass(frozen=True)
class SeedSummary:
    """mean ± sd over seeds, the seed values themselves, and the t interval of the mean."""

    mean: float
    sd: float  # nan at one seed
    low: float
    high: float
    values: tuple[float, ...]

    @property
    def k(self) -> int:
        return len(self.values)


def wilson(successes: int, n: int, confidence: float = CONFIDENCE) -> Interval:
    """The Wilson score interval of k successes in n (Wilson 1927): never below 0 or above 1, and
    not empty at 0/n, where the Wald interval collapses to "0.00 ± 0.00"."""
    if n <= 0 or not 0 <= successes <= n:
        raise ValueError(f"a Wilson interval needs 0 ≤ successes ≤ n and n > 0, got {successes} of {n}")
    low, high = proportion_confint(successes, n, alpha=1 - confidence, method="wilson")
    return Interval(successes / n, float(low), float(high), f"Wilson {confidence:.0%}", n, 1)


def bootstrap_mean(values: Sequence[float], confidence: float = CONFIDENCE, resamples: int = RESAMPLES,
                   seed: int = BOOTSTRAP_SEED) -> Interval:
    """Percentile bootstrap interval of the mean of per-example values (one seed)."""
    per_seed = {0: dict(enumerate(values))}
    return _bootstrap(per_seed, "mean", confidence, resamples, seed)


def bootstrap_ratio(pairs: Sequence[tuple[float, float]], kind: str = "bits_per_byte",
                    confidence: float = CONFIDENCE, resamples: int = RESAMPLES, seed: int = BOOTSTRAP_SEED) -> Interval:
    """Document bootstrap of a corpus-level ratio metric from per-document (loglik, weight) pairs:
    each resample of documents recomputes transform(Σ loglik / Σ weight), e.g. bits/byte
    = -Σ ll / (ln 2 · Σ bytes), as lm-eval aggregates it (it reports no stderr for it)."""
    per_seed = {0: dict(enumerate(pairs))}
    return _bootstrap(per_seed, kind, confidence, resamples, seed)


def _bootstrap(outcomes: Outcomes, kind, confidence: float, resamples: int, seed: int,
               seeds: str = "fixed") -> Interval:
    kind = metric_kind(kind)
    table = align({"": outcomes}, kind)[""]
    boot = resampling.replicates(table, None, kind, seeds=seeds, resamples=resamples, seed=seed)
    low, high = resampling.percentile_interval(boot, confidence)
    what = "documents" if kind.ratio else "examples"
    if seeds != "fixed":
        what = f"seeds × {what} (multi-bootstrap)"
    return Interval(float(table.seed_scores(kind).mean()), low, high,
                    f"percentile bootstrap {confidence:.0%} over {what}, R = {resamples}", table.n, table.k)


def seed_summary(values: Sequence[float], confidence: float = CONFIDENCE) -> SeedSummary:
    """mean ± sd over seeds' scores and the t interval of the mean (needs two seeds for sd and interval)."""
    values = tuple(float(v) for v in values)
    if not values:
        raise UserError("no seeds (seeds: []); give at least one seed's score")
    mean = float(np.mean(values))
    if len(values) < 2:
        return SeedSummary(mean, math.nan, math.nan, math.nan, values)
    sd = float(np.std(values, ddof=1))
    half = float(stats.t.ppf((1 + confidence) / 2, len(values) - 1)) * sd / math.sqrt(len(values))
    return SeedSummary(mean, sd, mean - half, mean + half, values)


def crossed_interval(outcomes: Outcomes, kind, confidence: float = CONFIDENCE) -> Interval:
    """Mean over seeds ± t_{k-1} · SE, the SE counting seeds and the shared test set (see crossed)."""
    kind = metric_kind(kind)
    table = align({"": outcomes}, kind)[""]
    if table.k < 2:
        raise UserError(f"a seeds × examples interval needs at least 2 seeds, got {table.k}; run more seeds")
    variance = crossed.one_sample(table, kind)
    half = float(stats.t.ppf((1 + confidence) / 2, variance.df)) * variance.se
    return Interval(variance.estimate, variance.estimate - half, variance.estimate + half,
                    f"t {confidence:.0%} over seeds × examples (k = {table.k}, {variance.df:g} df)", table.n, table.k)


METHODS = ("auto", "wilson", "bootstrap", "multi_bootstrap", "crossed")


def cell_interval(outcomes: Outcomes, kind, method: str = "auto", confidence: float = CONFIDENCE,
                  resamples: int = RESAMPLES, seed: int = BOOTSTRAP_SEED) -> Interval:
    """One variant's score with its interval.

    auto: at one seed, Wilson for accuracy and the percentile (document) bootstrap otherwise;
    from two seeds, the crossed seeds × examples t interval. `wilson` and `bootstrap` at
    several seeds pool the seeds per document and so cover the test set only (said in the label).
    """
    if method not in METHODS:
        raise unknown("interval method", method, METHODS)
    kind = metric_kind(kind)
    seeds = len(outcomes) if hasattr(outcomes, "__len__") else 0
    if method == "auto":
        method = "crossed" if seeds >= 2 else "wilson" if kind.proportion else "bootstrap"
    if method == "crossed":
        return crossed_interval(outcomes, kind, confidence)
    if method == "multi_bootstrap":
        return _bootstrap(outcomes, kind, confidence, resamples, seed, seeds="unpaired")
    table = align({"": outcomes}, kind)[""].pooled()
    pooled = {0: {d: (table.numerator[0, d], table.weight[0, d]) if kind.ratio else table.numerator[0, d]
                  for d in range(table.n)}}
    only = "" if seeds == 1 else f", {seeds} seeds pooled per example: test-set uncertainty only"
    if method == "wilson":
        if not kind.proportion:
            raise UserError(f"a Wilson interval is for accuracy (0/1 outcomes), not {kind.name}; use bootstrap")
        if seeds > 1:  # pooled per-document rates are not 0/1: the Wilson count is over all seed × example trials
            raise UserError("a Wilson interval is for one seed; use method=crossed for several seeds")
        result = wilson(int(round(table.numerator.sum())), table.n, confidence)
    else:
        result = _bootstrap(pooled, kind if kind.ratio or not kind.proportion else "mean", confidence, resamples, seed)
    return Interval(result.estimate, result.low, result.high, result.method + only, result.n, seeds)
