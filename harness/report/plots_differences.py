"""Per task, each variant's difference from the row's best (bold) variant with its 95% interval
(issue 16, items 5 and 8): the numbers (`difference_rows`, pure) and their plot."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from arches.errors import UserError
from harness.report.formatting import _number
from harness.report.marks import metric_kind_of, usable
from harness.report.plots import SEED_DOT, _figure, _figure_legend, _png, _seed_dots
from harness.report.scores import Comparer, score_cells
from harness.statistics import align, compare_tables
from harness.statistics.outcomes import paired_seeds


@dataclass(frozen=True)
class Difference:
    """variant − best in the metric's units; low/high None where no interval can be computed."""

    variant: str
    diff: float
    low: float | None
    high: float | None
    best: bool = False  # the row's reference itself (diff 0 by definition)
    seed_diffs: tuple = ()  # per paired seed (same seed ids in both), the seed's own difference
    test: str | None = None


def difference_rows(means: dict[str, float], best: str, outcomes: dict | None, metric: str,
                    higher: bool) -> list[Difference]:
    """Each variant's difference from `best`, in the order of `means` ({variant: mean score}).

    With per-example outcomes for every variant ({variant: {seed: {doc_id: value}}}) the
    difference, its interval and the test come from harness.statistics, on the doc_ids all of
    them share (as the table's marks are); the interval is the test's own 95% interval, not
    corrected for the row's other comparisons. Without outcomes the difference is that of the
    means and there is no interval.
    """
    if best not in means:
        raise ValueError(f"best variant {best!r} is not one of {list(means)}")
    kind = metric_kind_of(metric, higher, outcomes)
    tables = None
    if outcomes is not None and set(means) <= set(outcomes):
        row = {v: outcomes[v] for v in means}
        tables = align(row, kind) if usable(row, kind) else None
    rows = []
    for variant, mean in means.items():
        if variant == best:
            rows.append(Difference(variant, 0.0, None, None, best=True))
            continue
        if tables is None:
            rows.append(Difference(variant, float(mean - means[best]), None, None))
            continue
        try:
            comparison = compare_tables(tables[variant], tables[best], kind)
        except UserError:  # e.g. a test the seeds cannot support: the point, without an interval
            rows.append(Difference(variant, float(mean - means[best]), None, None))
            continue
        low, high = comparison.ci
        bounded = _number(low) and _number(high)
        seed_diffs = ()
        if paired_seeds(tables[variant], tables[best]) and tables[variant].k > 1:
            seed_diffs = tuple(float(d) for d in
                               tables[variant].seed_scores(kind) - tables[best].seed_scores(kind))
        rows.append(Difference(variant, comparison.diff, float(low) if bounded else None,
                               float(high) if bounded else None, seed_diffs=seed_diffs, test=comparison.test))
    return rows


def _row_best(rows: pd.DataFrame) -> str | None:
    """The row's reference: its ★ variant, else its first bold one (ties: the first in order)."""
    for column in ("best", "bold"):
        marked = rows[rows[column].astype(bool)]
        if len(marked):
            return str(marked["variant"].iloc[0])
    return None


def row_differences(long: pd.DataFrame, table: pd.DataFrame, comparer: Comparer,
                    order: list[str]) -> dict[tuple[str, int], tuple[str, bool, list[Difference]]]:
    """(task, shots) -> (metric, higher is better, differences) for each row of the score table with
    two or more ranked (not PLL) variants, the variants in `order`."""
    cells = score_cells(long)
    out = {}
    for (task, shots), rows in table[~table["pll"].astype(bool)].groupby(["task", "shots"], sort=True):
        best = _row_best(rows)
        if len(rows) < 2 or best is None or (task, int(shots)) not in cells:
            continue
        metric, by_variant = cells[(task, int(shots))]
        means = {v: float(m) for v, m in sorted(zip(rows["variant"], rows["mean"]),
                                                key=lambda vm: order.index(vm[0]) if vm[0] in order else len(order))}
        outcomes = comparer.outcomes([by_variant[v] for v in means], metric)
        higher = bool(rows["higher_is_better"].iloc[0])
        out[(task, int(shots))] = (metric, higher, difference_rows(means, best, outcomes, metric, higher))
    return out


def plot_differences(long: pd.DataFrame, table: pd.DataFrame, colors: dict, comparer: Comparer) -> bytes | None:
    """One panel per (task, shots) row: each variant's difference from the row's best, with its 95%
    interval (or "no interval"), variants on the y axis and a line at 0; paired seeds' own
    differences as dots."""
    if table.empty:
        return None
    rows = row_differences(long, table, comparer, list(colors))
    if not rows:
        return None
    tallest = max(len(diffs) for _, _, diffs in rows.values())
    figure, axes = _figure(len(rows), width=4.8, height=1.3 + 0.38 * tallest)
    for axis, ((task, shots), (metric, higher, diffs)) in zip(axes, rows.items()):
        axis.axvline(0, color="grey", linewidth=1)
        for y, row in enumerate(diffs):
            color = colors[row.variant]
            if row.best:
                axis.plot([0], [y], marker="*", markersize=11, color=color, linestyle="none")
            elif row.low is not None:
                axis.errorbar([row.diff], [y], xerr=[[row.diff - row.low], [row.high - row.diff]], marker="o",
                              capsize=3, color=color)
            else:  # never a zero-width bar: the point, hollow, and the words
                axis.plot([row.diff], [y], marker="o", markerfacecolor="white", color=color, linestyle="none")
                axis.annotate("no interval", (row.diff, y), xytext=(6, 4), textcoords="offset points",
                              fontsize="x-small", color="dimgrey")
            _seed_dots(axis, y, row.seed_diffs, color, horizontal=True)
        axis.set_yticks(range(len(diffs)), [f"{r.variant} (best)" if r.best else r.variant for r in diffs])
        axis.set_ylim(len(diffs) - 0.5, -0.5)  # the first variant on top
        _pad_x(axis, diffs)
        arrow = "↑" if higher else "↓"
        axis.set(title=f"{task}, {shots}-shot ({metric} {arrow})", xlabel=f"variant − best ({metric})")
    _figure_legend(figure, colors, [v for v in colors if any(r.variant == v for *_, d in rows.values() for r in d)], [
        ("best (reference)", {"color": "black", "marker": "*", "linestyle": "none"}),
        ("difference, 95% interval", {"color": "black", "marker": "o", "linestyle": "-"}),
        ("no interval", {"color": "black", "marker": "o", "markerfacecolor": "white", "linestyle": "none"}),
        ("paired seeds' differences", SEED_DOT[1])])
    return _png(figure)


def _pad_x(axis, diffs: list[Difference]) -> None:
    """Room for 0, every point and bound, and the "no interval" words."""
    values = [0.0] + [v for r in diffs for v in (r.diff, r.low, r.high, *r.seed_diffs) if v is not None]
    low, high = min(values), max(values)
    span = high - low or max(abs(high), 1e-3)
    axis.set_xlim(low - 0.1 * span, high + (0.35 if any(r.low is None and not r.best for r in diffs) else 0.1) * span)

