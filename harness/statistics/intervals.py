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

from arches.errors import UserError, unknown
from harness.statistics import crossed, resampling
from harness.statistics.outcomes import (BOOTSTRAP_SEED, CONFIDENCE, RESAMPLES, MetricKind, Outcomes, Table, align,
                                         metric_kind)

# the words every interval or test that leaves the training seeds out carries in its label
ONE_SEED_NOTE = "test-set uncertainty only; training-seed variance not measured"


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
    bounds = stats.binomtest(successes, n).proportion_ci(confidence, method="wilson")
    return Interval(successes / n, float(bounds.low), float(bounds.high), f"Wilson {confidence:.0%}", n, 1)


def bootstrap_mean(values: Sequence[float], confidence: float = CONFIDENCE, resamples: int = RESAMPLES,
                   seed: int = BOOTSTRAP_SEED) -> Interval:
    """Percentile bootstrap interval of the mean of per-example values (one seed)."""
    kind = metric_kind("mean")
    return _bootstrap(align({"": {0: dict(enumerate(values))}}, kind)[""], kind, confidence, resamples, seed)


def bootstrap_ratio(pairs: Sequence[tuple[float, float]], kind: str = "bits_per_byte",
                    confidence: float = CONFIDENCE, resamples: int = RESAMPLES, seed: int = BOOTSTRAP_SEED) -> Interval:
    """Document bootstrap of a corpus-level ratio metric from per-document (loglik, weight) pairs:
    each resample of documents recomputes transform(Σ loglik / Σ weight), e.g. bits/byte
    = -Σ ll / (ln 2 · Σ bytes), as lm-eval aggregates it (it reports no stderr for it)."""
    kind = metric_kind(kind)
    return _bootstrap(align({"": {0: dict(enumerate(pairs))}}, kind)[""], kind, confidence, resamples, seed)


def _bootstrap(table: Table, kind: MetricKind, confidence: float, resamples: int, seed: int,
               seeds: str = "fixed") -> Interval:
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
    half = crossed.t_quantile((1 + confidence) / 2, len(values) - 1) * sd / math.sqrt(len(values))
    return SeedSummary(mean, sd, mean - half, mean + half, values)


def crossed_interval(table: Table, kind: MetricKind, confidence: float = CONFIDENCE) -> Interval:
    """Mean over seeds ± t_{k-1} · SE, the SE counting seeds and the shared test set (see crossed)."""
    if table.k < 2:
        raise UserError(f"a seeds × examples interval needs at least 2 seeds, got {table.k}; run more seeds")
    variance = crossed.one_sample(table, kind)
    half = crossed.t_quantile((1 + confidence) / 2, variance.df) * variance.se
    return Interval(variance.estimate, variance.estimate - half, variance.estimate + half,
                    f"t {confidence:.0%} over seeds × examples (k = {table.k}, {variance.df:g} df)", table.n, table.k)


METHODS = ("auto", "wilson", "bootstrap", "multi_bootstrap", "crossed")


def cell_interval(outcomes: Outcomes, kind: str | MetricKind, method: str = "auto", confidence: float = CONFIDENCE,
                  resamples: int = RESAMPLES, seed: int = BOOTSTRAP_SEED) -> Interval:
    """One variant's score ({seed: {doc_id: value}}) with its interval.

    auto: at one seed, Wilson for accuracy and the percentile (document) bootstrap otherwise;
    from two seeds, the crossed seeds × examples t interval. `bootstrap` at several seeds
    pools the seeds per document and so covers the test set only, as its label says.
    """
    if method not in METHODS:
        raise unknown("interval method", method, METHODS)
    kind = metric_kind(kind)
    table = align({"": outcomes}, kind)[""]
    if method == "auto":
        method = "crossed" if table.k >= 2 else "wilson" if kind.proportion else "bootstrap"
    if method == "crossed":
        return crossed_interval(table, kind, confidence)
    if method == "multi_bootstrap":
        return _bootstrap(table, kind, confidence, resamples, seed, seeds="unpaired")
    if method == "wilson":
        if not kind.proportion or table.k > 1:
            raise UserError(f"a Wilson interval is for accuracy at one seed, not {kind.name} at {table.k} seeds; "
                            "use method=bootstrap or method=crossed")
        result, seeds = wilson(int(round(table.numerator.sum())), table.n, confidence), "one seed"
    else:
        result = _bootstrap(table if table.k == 1 else table.pooled(), kind, confidence, resamples, seed)
        seeds = "one seed" if table.k == 1 else f"{table.k} seeds pooled per example"
    return Interval(result.estimate, result.low, result.high, f"{result.method}, {seeds}: {ONE_SEED_NOTE}",
                    table.n, table.k)
