"""Two-sided tests of a difference between two variants: which test, its interval, p and MDE.

`compare(a, b, kind)` chooses by the seeds there are (test="auto"):
  - one seed of either variant: the paired percentile bootstrap over examples (documents
    for ratio metrics), seeds pooled per example: test-set uncertainty only, said in the label;
  - two or more seeds of each: the crossed seeds × examples t-test (see `crossed`), paired
    by doc_id, with paired seeds when both variants ran the same seed ids, Welch otherwise.
Explicitly: "examples", "crossed", "multi_bootstrap" (Sellam et al. 2022; refused below
MIN_SEEDS_MULTI_BOOTSTRAP seeds, where it does not hold its level), and, on the seeds'
scores alone, "t" (paired t, Welch when seeds differ) and "sign_flip" (exact; refused when
2 / 2^k cannot reach α).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from arches.errors import UserError, unknown
from harness.statistics import crossed, power, resampling
from harness.statistics.intervals import ONE_SEED_NOTE
from harness.statistics.outcomes import (ALPHA, BOOTSTRAP_SEED, CONFIDENCE, RESAMPLES, MetricKind, Outcomes, Table,
                                         align, metric_kind, paired_seeds, seed_ids)

# Where seed variance dominates, the multi-bootstrap's percentile test rejected, at nominal 5%,
# 28% of null pairs at 3 seeds, 14% at 5, 8% at 10, 6% at 15 and 4% at 20 (400 simulated pairs
# each: seed offsets sd 1, per-example noise sd 0.5, 100 examples); tests/test_stats.py reruns
# the 3-seed case on bits/byte.
MIN_SEEDS_MULTI_BOOTSTRAP = 20
TESTS = ("auto", "examples", "crossed", "multi_bootstrap", "t", "sign_flip")
TINY_P = float(np.finfo(float).tiny)  # closed-form p-values underflow to 0 only in degenerate data


@dataclass(frozen=True)
class Comparison:
    """a − b in the metric's units, with its interval, p and the test that gave them."""

    a: str
    b: str
    diff: float
    ci: tuple[float, float]
    p: float  # two-sided, never 0
    test: str  # the test and its sizes, for the table's legend
    n: int  # documents (0 for tests on the seeds' scores alone)
    seeds: tuple[int, int]  # (seeds of a, seeds of b)
    seed_variance: bool  # False: test-set uncertainty only
    se: float  # standard error of diff
    df: float  # degrees of freedom of the reference (inf for a normal or resampling reference)
    mde: float  # minimum detectable |difference| at 80% power, α = 0.05 (see power)

    def significant(self, alpha: float = ALPHA) -> bool:
        return self.p <= alpha


def min_seeds_sign_flip(alpha: float = ALPHA) -> int:
    """Fewest seeds whose exact two-sided sign-flip test can reach α: the least k with 2 / 2^k ≤ α."""
    return max(1, math.ceil(math.log2(2 / alpha) - 1e-12))


def _refuse_sign_flip(k: int, alpha: float) -> None:
    need = min_seeds_sign_flip(alpha)
    if k < need:
        raise UserError(f"the exact sign-flip test cannot reach α = {alpha:g} with {k} seeds (its smallest p is "
                        f"2/2^{k} = {resampling.smallest_sign_flip_p(k):.4g}); it needs at least {need} seeds: "
                        "run more seeds or use the paired t-test")


def _t_result(diff: float, se: float, df: float, confidence: float) -> tuple[tuple[float, float], float]:
    if se == 0:
        return (diff, diff), 1.0 if diff == 0 else TINY_P
    half = crossed.t_quantile((1 + confidence) / 2, df) * se
    return (diff - half, diff + half), max(TINY_P, 2 * crossed.t_sf(abs(diff) / se, df))


def compare_scores(scores_a: Mapping[int, float], scores_b: Mapping[int, float], test: str = "t", *,
                   alpha: float = ALPHA, confidence: float = CONFIDENCE, names: tuple[str, str] = ("a", "b"),
                   resamples: int = RESAMPLES, seed: int = BOOTSTRAP_SEED) -> Comparison:
    """A test on the seeds' scores alone ({seed: score}, no per-example outcomes): "t" or "sign_flip".

    Paired by seed id when both ran the same seeds (paired t, exact sign flip); otherwise
    Welch's t (the sign flip needs pairs). The interval is the t interval in both cases.
    """
    if test not in ("t", "sign_flip"):
        raise unknown("seeds-alone test", test, ("t", "sign_flip"))
    for name, scores in zip(names, (scores_a, scores_b)):
        seed_ids(name, scores)
        if not all(np.isfinite(float(v)) for v in scores.values()):
            raise UserError(f"variant '{name}' has a seed score that is not a finite number: {dict(scores)}")
    ka, kb = len(scores_a), len(scores_b)
    paired = sorted(scores_a) == sorted(scores_b)
    if paired:
        diffs = np.array([scores_a[s] - scores_b[s] for s in sorted(scores_a)], dtype=float)
        if diffs.size < 2 and test == "t":
            raise UserError("a paired t-test over seeds needs at least 2 seeds; run more seeds")
        diff = float(diffs.mean())
        se = float(diffs.std(ddof=1)) / math.sqrt(diffs.size) if diffs.size > 1 else math.nan
        df = diffs.size - 1
    else:
        if test == "sign_flip":
            raise UserError(f"the sign-flip test pairs seeds, but '{names[0]}' and '{names[1]}' ran different seed "
                            "ids; run the same seeds or use the t-test (Welch)")
        if ka < 2 or kb < 2:
            raise UserError(f"Welch's t-test over seeds needs at least 2 seeds of each variant (have {ka} and {kb})")
        va, vb = (np.var(list(s.values()), ddof=1) / len(s) for s in (scores_a, scores_b))
        diff = float(np.mean(list(scores_a.values())) - np.mean(list(scores_b.values())))
        se = math.sqrt(va + vb)
        df = (va + vb) ** 2 / (va**2 / (ka - 1) + vb**2 / (kb - 1)) if va + vb > 0 else ka + kb - 2
    if test == "sign_flip":
        _refuse_sign_flip(diffs.size, alpha)
        p = resampling.sign_flip_p(diffs, resamples, seed)
        exact = "exact" if diffs.size <= resampling.EXACT_FLIPS_UP_TO else f"R = {resamples}"
        label = f"sign-flip test over {diffs.size} paired seeds ({exact}); interval: t"
        ci = _t_result(diff, se, df, confidence)[0] if diffs.size > 1 else (math.nan, math.nan)
    else:
        ci, p = _t_result(diff, se, df, confidence)
        label = (f"paired t-test over {ka} seeds" if paired else f"Welch t-test over {ka} and {kb} seeds") \
            + f" ({df:.3g} df), seeds' scores only"
    return Comparison(names[0], names[1], diff, ci, p, label, 0, (ka, kb), True, se, df,
                      power.minimum_detectable_difference(se, df=df))


def compare(a: Outcomes, b: Outcomes, kind: str | MetricKind, test: str = "auto", *, alpha: float = ALPHA,
            confidence: float = CONFIDENCE, resamples: int = RESAMPLES, seed: int = BOOTSTRAP_SEED,
            names: tuple[str, str] = ("a", "b")) -> Comparison:
    """a − b for two variants' outcomes on one task ({seed: {doc_id: value}}), paired by doc_id."""
    if names[0] == names[1]:
        raise ValueError(f"the two variants need different names, got {names}")
    kind = metric_kind(kind)
    tables = align({names[0]: a, names[1]: b}, kind)
    return compare_tables(tables[names[0]], tables[names[1]], kind, test, alpha=alpha, confidence=confidence,
                          resamples=resamples, seed=seed)


def compare_tables(ta: Table, tb: Table, kind: MetricKind, test: str = "auto", *, alpha: float = ALPHA,
                   confidence: float = CONFIDENCE, resamples: int = RESAMPLES,
                   seed: int = BOOTSTRAP_SEED) -> Comparison:
    """`compare` on aligned tables (a row aligns once and compares every pair)."""
    if test not in TESTS:
        raise unknown("test", test, TESTS)
    names, ks = (ta.variant, tb.variant), (ta.k, tb.k)
    if test == "auto":
        test = "examples" if min(ks) < 2 else "crossed"
    if test in ("t", "sign_flip"):
        return compare_scores(dict(zip(ta.seeds, ta.seed_scores(kind))), dict(zip(tb.seeds, tb.seed_scores(kind))),
                              test, alpha=alpha, confidence=confidence, names=names, resamples=resamples, seed=seed)
    pairing = "paired" if paired_seeds(ta, tb) else "unpaired"
    if test == "crossed":
        if min(ks) < 2:
            raise UserError(f"the seeds × examples test needs at least 2 seeds of each variant ('{names[0]}' has "
                            f"{ks[0]}, '{names[1]}' has {ks[1]}); run more seeds or use test=examples")
        variance = crossed.two_sample(ta, tb, kind)
        ci, p = _t_result(variance.estimate, variance.se, variance.df, confidence)
        label = (f"seeds × examples t-test, {pairing} seeds (k = {ks[0]}/{ks[1]}, n = {ta.n}, "
                 f"{variance.df:.3g} df)")
        return Comparison(*names, variance.estimate, ci, p, label, ta.n, ks, True, variance.se, variance.df,
                          power.minimum_detectable_difference(variance.se, df=variance.df))
    if test == "multi_bootstrap":
        if min(ks) < MIN_SEEDS_MULTI_BOOTSTRAP:
            raise UserError(f"the multi-bootstrap holds its level only from {MIN_SEEDS_MULTI_BOOTSTRAP} seeds of each "
                            f"variant (have {ks[0]} and {ks[1]}); run more seeds or use test=crossed")
        return multi_bootstrap(ta, tb, kind, confidence=confidence, resamples=resamples, seed=seed)
    # examples only: seeds pooled per document, documents resampled
    pooled_a, pooled_b = (ta, tb) if max(ks) == 1 else (ta.pooled(), tb.pooled())
    boot = resampling.replicates(pooled_a, pooled_b, kind, seeds="fixed", resamples=resamples, seed=seed)
    diff = float(pooled_a.seed_scores(kind).mean() - pooled_b.seed_scores(kind).mean())
    se = float(boot.std(ddof=1))
    what = "documents" if kind.ratio else "examples"
    pooled = "" if max(ks) == 1 else f", seeds pooled ({ks[0]}/{ks[1]})"
    label = f"paired bootstrap over {ta.n} {what}, R = {resamples}{pooled}: {ONE_SEED_NOTE}"
    return Comparison(*names, diff, resampling.percentile_interval(boot, confidence), resampling.two_sided_p(boot),
                      label, ta.n, ks, False, se, math.inf, power.minimum_detectable_difference(se))


def multi_bootstrap(ta: Table, tb: Table, kind: MetricKind, *, confidence: float = CONFIDENCE,
                    resamples: int = RESAMPLES, seed: int = BOOTSTRAP_SEED) -> Comparison:
    """The multi-bootstrap of Sellam et al. 2022 (seeds, then examples, paired by doc_id; paired seeds
    when both variants ran the same seed ids): percentile interval and p = 2 (1 + b) / (1 + R).

    Called directly it runs at any number of seeds, e.g. to show how narrow it is at 3;
    `compare` refuses it below MIN_SEEDS_MULTI_BOOTSTRAP.
    """
    pairing = "paired" if paired_seeds(ta, tb) else "unpaired"
    boot = resampling.replicates(ta, tb, kind, seeds=pairing, resamples=resamples, seed=seed)
    diff = float(ta.seed_scores(kind).mean() - tb.seed_scores(kind).mean())
    se = float(boot.std(ddof=1))
    label = f"multi-bootstrap, {pairing} seeds × examples (k = {ta.k}/{tb.k}, n = {ta.n}), R = {resamples}"
    return Comparison(ta.variant, tb.variant, diff, resampling.percentile_interval(boot, confidence),
                      resampling.two_sided_p(boot), label, ta.n, (ta.k, tb.k), True, se, math.inf,
                      power.minimum_detectable_difference(se))
