"""Multiplicity: Holm within a row, Benjamini–Hochberg across a table, and the row's marks.

Marks, after correction:
  bold  the highest point estimate (lowest for lower-is-better metrics), significant or not;
  ★     a variant significantly better than every other variant of the row;
  †     a variant significantly different from the row's anchor: the bold variant
        (family "all_pairs") or the reference (family "vs_reference").

Families: "all_pairs" corrects over all m(m−1)/2 pairs, which stays valid for the best
variant picked after seeing the data. "vs_reference" corrects over the m − 1 comparisons
with a reference, which is only valid when the reference is fixed beforehand (a baseline):
comparing each variant with the observed best over m − 1 tests would ignore that the best
was selected, and its false-positive rate grows with m (tests/test_stats.py shows it).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from arches.errors import UserError, unknown
from harness.statistics.outcomes import ALPHA, BOOTSTRAP_SEED, RESAMPLES, MetricKind, Outcomes, align, metric_kind
from harness.statistics.significance import Comparison, compare_tables

FAMILIES = ("all_pairs", "vs_reference")


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (Holm 1979): family-wise error ≤ α for any dependence.

    The i-th smallest of m p-values becomes max over j ≤ i of (m − j + 1) p_(j), capped at 1.
    Written here because scipy has no Holm, and statsmodels' `multipletests(method="holm")`
    runs gc.collect() on every call (45 ms in a test process), which a table pays per row.
    """
    p = np.asarray(pvalues, dtype=float)
    order = np.argsort(p, kind="stable")
    stepped = np.maximum.accumulate(p[order] * np.arange(p.size, 0, -1))
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(1.0, stepped)
    return adjusted


def benjamini_hochberg(pvalues: Sequence[float]) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (q-values, 1995): false discovery rate ≤ α across the table
    for independent or positively dependent tests."""
    if len(pvalues) == 0:
        return np.array([])
    return stats.false_discovery_control(np.asarray(pvalues, dtype=float), method="bh")


def adjust_table(rows: Mapping, alpha: float = ALPHA) -> tuple[dict, str]:
    """({row: {pair: q}}, rule) for {row: {pair: p}}: Benjamini–Hochberg over every comparison in the table."""
    keys = [(row, pair) for row, pairs in rows.items() for pair in pairs]
    adjusted = benjamini_hochberg([rows[row][pair] for row, pair in keys])
    out: dict = {row: {} for row in rows}
    for (row, pair), q in zip(keys, adjusted):
        out[row][pair] = float(q)
    rule = f"Benjamini–Hochberg over the {len(keys)} comparisons of the table (false discovery rate {alpha:g})"
    return out, rule


@dataclass(frozen=True)
class RowMarks:
    bold: tuple[str, ...]  # highest point estimate (all tied ones)
    star: str | None  # significantly better than every other variant after correction
    dagger: tuple[str, ...]  # significantly different from `anchor` after correction
    anchor: str | None  # whom † is against: the first bold variant, or the reference
    adjusted: dict  # (a, b) -> adjusted p
    family: str  # the correction and its family, for the table's legend


def _oriented(comparisons: Mapping[tuple[str, str], Comparison], a: str, b: str) -> tuple[float, tuple[str, str]]:
    """(diff a − b, the key it is stored under)."""
    if (a, b) in comparisons:
        return comparisons[(a, b)].diff, (a, b)
    if (b, a) in comparisons:
        return -comparisons[(b, a)].diff, (b, a)
    raise ValueError(f"no comparison of {a} and {b}")


def mark_row(estimates: Mapping[str, float], comparisons: Mapping[tuple[str, str], Comparison],
             higher_is_better: bool, *, alpha: float = ALPHA, family: str = "all_pairs", reference: str | None = None,
             adjusted: Mapping | None = None, rule: str | None = None) -> RowMarks:
    """The row's bold, ★ and † from its point estimates and its comparisons.

    `adjusted` ({pair: p}) replaces the Holm adjustment, e.g. by `adjust_table`'s BH q-values,
    with `rule` naming it.
    """
    if family not in FAMILIES:
        raise unknown("comparison family", family, FAMILIES)
    variants = list(estimates)
    sign = 1.0 if higher_is_better else -1.0
    top = max(sign * estimates[v] for v in variants)
    bold = tuple(v for v in variants if sign * estimates[v] >= top - 1e-12 * max(1.0, abs(top)))
    if family == "all_pairs":
        needed = list(itertools.combinations(variants, 2))
        anchor = bold[0]
    else:
        if reference not in estimates:
            raise unknown("reference variant", str(reference), variants)
        needed = [(reference, v) for v in variants if v != reference]
        anchor = reference
    keys = [_oriented(comparisons, a, b)[1] for a, b in needed]
    if adjusted is None:
        adjusted = dict(zip(keys, (float(q) for q in holm([comparisons[k].p for k in keys]))))
        what = (f"all {len(keys)} pairs of {len(variants)} variants" if family == "all_pairs"
                else f"the {len(keys)} comparisons with the reference '{reference}', fixed before the data")
        rule = f"Holm over {what} (family-wise α = {alpha:g})"

    def beats(a: str, b: str) -> bool:
        diff, key = _oriented(comparisons, a, b)
        return adjusted[key] <= alpha and sign * diff > 0

    def differs(a: str, b: str) -> bool:
        return adjusted[_oriented(comparisons, a, b)[1]] <= alpha

    candidates = variants if family == "all_pairs" else [reference]
    star = next((v for v in candidates if len(variants) > 1 and all(beats(v, w) for w in variants if w != v)), None)
    dagger = tuple(v for v in variants if v != anchor and differs(anchor, v))
    return RowMarks(bold, star, dagger, anchor, dict(adjusted), rule or "adjusted p-values as given")


@dataclass(frozen=True)
class Row:
    comparisons: dict  # (a, b) -> Comparison, a before b in the row's order
    marks: RowMarks
    n: int
    seeds: dict  # variant -> number of seeds


def compare_row(row: Mapping[str, Outcomes], kind: str | MetricKind, test: str = "auto", *,
                family: str = "all_pairs", reference: str | None = None, alpha: float = ALPHA,
                resamples: int = RESAMPLES, seed: int = BOOTSTRAP_SEED) -> Row:
    """Every comparison a row's family needs (aligned once on the doc_ids all variants share), and its marks."""
    kind = metric_kind(kind)
    if family not in FAMILIES:
        raise unknown("comparison family", family, FAMILIES)
    if len(row) < 2:
        raise UserError(f"a row needs at least 2 variants to compare, got {len(row)}")
    tables = align(row, kind)
    variants = list(tables)
    pairs = (itertools.combinations(variants, 2) if family == "all_pairs"
             else [(reference, v) for v in variants if v != reference])
    comparisons = {}
    for a, b in pairs:
        if a not in tables:
            raise unknown("reference variant", str(a), variants)
        comparisons[(a, b)] = compare_tables(tables[a], tables[b], kind, test, alpha=alpha, resamples=resamples,
                                             seed=seed)
    estimates = {v: float(t.seed_scores(kind).mean()) for v, t in tables.items()}
    marks = mark_row(estimates, comparisons, kind.higher_is_better, alpha=alpha, family=family, reference=reference)
    first = next(iter(tables.values()))
    return Row(comparisons, marks, first.n, {v: t.k for v, t in tables.items()})
