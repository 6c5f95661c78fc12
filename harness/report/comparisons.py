"""Effect sizes and power: each ranked variant against its row's bold one, with both corrections and the MDE.

For every (task, shots) row of the score table and every ranked variant other than the bold
one (the row's anchor, whom † is against), the report shows

  diff [low, high]  variant − bold in the metric's units, with the pairwise test's 95% interval;
  p (Holm)          Holm-adjusted over all pairs of the row, the family the marks use (Holm 1979);
  q (BH)            Benjamini–Hochberg over every pairwise comparison of the whole table (Benjamini &
                    Hochberg 1995): the false discovery rate, for a reader scanning many rows at once;
  MDE               the minimum detectable |difference| at 80% power and α = 0.05 for this n and these
                    seeds (harness.statistics.power): from the test's own standard error where there are
                    per-example outcomes, else from the design (binomial at n, or the seeds' spread).

A non-significant difference whose MDE is far above the effect a reader cares about says
"could not have seen it", not "no difference". The MDE is at α = 0.05 before correction, so
it is a lower bound on what the corrected marks could detect.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from harness.report import marks
from harness.report.formatting import MISSING, _decimals, _number, metric_label, sig3, signed
from harness.statistics import (
    ALPHA,
    ONE_SEED_NOTE,
    POWER,
    accuracy_mde,
    adjust_table,
    minimum_detectable_difference,
)


NO_EFFECT = {"vs": None, "diff": math.nan, "diff_low": math.nan, "diff_high": math.nan, "p_raw": math.nan,
             "p_holm": math.nan, "q_bh": math.nan, "mde": math.nan}


def versus_anchor(stats: marks.RowStats, variant: str, values: dict[str, dict], metric: str, higher: bool,
                  n: int | None) -> dict:
    """The columns of `variant` against its row's anchor (the first bold variant): diff, its interval, raw
    and Holm p, and the MDE; q_bh is filled across the table by `table_q`. Empty for the anchor itself."""
    anchor = stats.anchor or (stats.bold[0] if stats.bold else None)
    if anchor is None or variant == anchor or variant not in stats.low:
        return dict(NO_EFFECT)
    out = dict(NO_EFFECT, vs=anchor)
    key = (variant, anchor) if (variant, anchor) in stats.comparisons else (anchor, variant)
    comparison = stats.comparisons.get(key)
    if comparison is not None:
        sign = 1.0 if key == (variant, anchor) else -1.0  # every diff is variant − anchor
        low, high = sorted((sign * comparison.ci[0], sign * comparison.ci[1]))
        out.update(diff=sign * comparison.diff, diff_low=low, diff_high=high, p_raw=comparison.p,
                   p_holm=stats.adjusted[key], mde=comparison.mde)
        return out
    if variant in values and anchor in values:  # no test: the difference of the means, and the design's MDE
        mean = {v: float(np.mean(list(values[v].values()))) for v in (variant, anchor)}
        out.update(diff=mean[variant] - mean[anchor],
                   mde=design_mde(values[variant], values[anchor], metric, higher, n))
    return out


def design_mde(seeds_a: dict, seeds_b: dict, metric: str, higher: bool, n: int | None) -> float:
    """The MDE of a − b without per-example outcomes: from the seeds' scores (Welch's standard error, the
    smaller sample's k − 1 df) at two or more seeds each; at one seed, for accuracy, the binomial standard
    error of two independent accuracies at the pooled rate over n examples (an upper bound where the
    variants agree on examples, harness.statistics.power.accuracy_difference_se); else unknown (nan)."""
    a, b = (np.array(list(s.values()), dtype=float) for s in (seeds_a, seeds_b))
    if min(a.size, b.size) >= 2:
        se = math.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size)
        return minimum_detectable_difference(se, df=min(a.size, b.size) - 1)
    kind = marks.metric_kind_of(metric, higher, None)
    rate = float(np.mean([*a, *b]))
    if kind.proportion and isinstance(n, int) and n > 0 and 0 <= rate <= 1:
        return accuracy_mde(n, 1, rate)
    return math.nan


def table_q(row_pairs: dict, anchors: dict) -> tuple[dict, int]:
    """({(task, shots, variant): q} of each variant against its row's anchor, the number of comparisons) from
    {(task, shots): {(a, b): raw p}} over every pair of every row: Benjamini–Hochberg across the table."""
    adjusted, _ = adjust_table({row: pairs for row, pairs in row_pairs.items() if pairs})
    q = {}
    for row, pairs in adjusted.items():
        anchor = anchors.get(row)
        for (a, b), value in pairs.items():
            if anchor in (a, b):
                q[(*row, b if a == anchor else a)] = value
    return q, sum(len(pairs) for pairs in row_pairs.values())


# ---------------------------------------------------------------- the facts a summary needs


@dataclass(frozen=True)
class Difference:
    task: str
    shots: int
    variant: str
    vs: str
    diff: float
    low: float
    high: float
    p_holm: float
    q_bh: float


@dataclass(frozen=True)
class Undetectable:
    task: str
    shots: int
    spread: float  # best − worst ranked estimate of the row, in the metric's units
    mde: float  # the row's smallest MDE against its bold variant


@dataclass(frozen=True)
class ComparisonFacts:
    holm: tuple[Difference, ...]  # significant after Holm within its row
    bh: tuple[Difference, ...]  # significant after Benjamini–Hochberg across the table
    undetectable: tuple[Undetectable, ...]  # nothing significant, and the spread below every MDE of the row
    compared: tuple[tuple[str, int], ...]  # rows with at least one comparison
    untested: tuple[tuple[str, int], ...]  # rows of two or more ranked variants and no test


def _ranked(table: pd.DataFrame) -> pd.DataFrame:
    return table[~table["pll"].astype(bool)] if "pll" in table else table


def comparison_facts(table: pd.DataFrame, alpha: float = ALPHA) -> ComparisonFacts:
    """What the report's summary says, from a score table (harness.report.scores.score_table): the
    differences significant after Holm (per row) and after BH (across the table), and the rows that could
    not have detected their own spread."""
    holm, bh, undetectable, compared, untested = [], [], [], [], []
    for (task, shots), rows in _ranked(table).groupby(["task", "shots"], sort=True):
        key = (str(task), int(shots))
        tested = rows[rows["p_holm"].map(_number)]
        if len(rows) >= 2:
            (compared if len(tested) else untested).append(key)
        for row in tested.itertuples(index=False):
            found = Difference(key[0], key[1], row.variant, row.vs, row.diff, row.diff_low, row.diff_high,
                               row.p_holm, row.q_bh)
            if row.p_holm <= alpha:
                holm.append(found)
            if _number(row.q_bh) and row.q_bh <= alpha:
                bh.append(found)
        mdes = [m for m in rows["mde"] if _number(m)]
        spread = float(rows["mean"].max() - rows["mean"].min())
        if mdes and not (tested["p_holm"] <= alpha).any() and spread < min(mdes):
            undetectable.append(Undetectable(key[0], key[1], spread, float(min(mdes))))
    return ComparisonFacts(tuple(holm), tuple(bh), tuple(undetectable), tuple(compared), tuple(untested))


# ---------------------------------------------------------------- the Comparisons table


def _difference_text(diff: float, low: float, high: float) -> str:
    if not _number(diff):
        return MISSING
    text = signed(diff)
    if not (_number(low) and _number(high)):
        return text
    places = _decimals(text)
    low_text, high_text = (f"{x:+.{places}f}".replace("-", "−") for x in (low, high))
    return f"{text} [{low_text}, {high_text}]"


def _p(value: Any) -> str:
    return f"{value:.2g}" if _number(value) else MISSING


def _corrected(p_holm: Any, q_bh: Any, alpha: float) -> str:
    if not _number(p_holm):
        return "not tested"
    passed = [name for name, value in (("Holm", p_holm), ("BH", q_bh)) if _number(value) and value <= alpha]
    return ", ".join(passed) if passed else "neither"


def comparison_display(table: pd.DataFrame, alpha: float = ALPHA) -> pd.DataFrame:
    """One line per ranked variant against its row's bold variant."""
    lines = []
    ranked = _ranked(table)
    for (task, shots), rows in ranked.groupby(["task", "shots"], sort=True):
        for row in rows[rows["vs"].notna()].itertuples(index=False):
            n = getattr(row, "n", None)
            lines.append({
                "task": task, "shots": int(shots),
                "metric": metric_label(row.metric, row.higher_is_better),
                "n": MISSING if n is None or (not isinstance(n, str) and pd.isna(n)) else str(n),
                "seeds": f"{row.n_seeds}/{int(rows.loc[rows['variant'] == row.vs, 'n_seeds'].iloc[0])}",
                "variant": row.variant, "vs (bold)": row.vs,
                "difference [95% interval]": _difference_text(row.diff, row.diff_low, row.diff_high),
                "p (Holm)": _p(row.p_holm), "q (BH)": _p(row.q_bh), "significant after": _corrected(
                    row.p_holm, row.q_bh, alpha),
                "MDE": sig3(row.mde),
            })
    columns = ["task", "shots", "metric", "n", "seeds", "variant", "vs (bold)", "difference [95% interval]",
               "p (Holm)", "q (BH)", "significant after", "MDE"]
    return pd.DataFrame(lines, columns=columns)


def comparisons_legend(table: pd.DataFrame, alpha: float = ALPHA) -> str:
    """The two correction rules, the MDE's definition and how to read a non-significant line."""
    ranked = _ranked(table)
    tested = ranked[ranked["p_holm"].map(_number)]
    rows = tested.groupby(["task", "shots"])["variant"].count()
    pairs = int(sum((m + 1) * m // 2 for m in rows))  # m variants against the bold one: m + 1 in the row
    text = (
        "Each ranked variant against its row's bold variant: the difference (variant − bold, in the metric's "
        f"units) with its pairwise test's 95% interval. p (Holm): Holm's step-down correction over all pairs of "
        f"the row (family-wise α = {alpha:g}), the rule the ★ and † marks use. q (BH): Benjamini–Hochberg over "
        "all "
        f"{pairs} pairwise comparisons of the table's {len(rows)} tested row(s) (false discovery rate {alpha:g}), "
        "for reading many rows at once. MDE: the minimum detectable |difference| at "
        f"{POWER:.0%} power and α = {alpha:g} (before correction) for this n and these seeds, from the test's "
        "standard error where per-example outcomes exist, else from the design (the seeds' spread, or the "
        "binomial at n for one-seed accuracy). A difference that is not significant and whose MDE is larger "
        "than the effect in question could not have been seen at this n: it is not evidence of no difference."
    )
    if tested["test"].astype(str).str.contains(ONE_SEED_NOTE, regex=False).any():
        text += f" Lines tested on the examples alone (one seed, or report.test=examples): {ONE_SEED_NOTE}."
    if (ranked["vs"].notna() & ~ranked["p_holm"].map(_number)).any():
        text += " Lines marked 'not tested' have no per-example outcomes: their difference is of the means."
    return text


def comparison_blocks(table: pd.DataFrame, alpha: float = ALPHA) -> list[tuple[str, Any]]:
    """The report's Comparisons section ([] when no row has two ranked variants)."""
    display = comparison_display(table, alpha)
    if display.empty:
        return []
    return [("h2", "Comparisons"), ("table", display), ("p", comparisons_legend(table, alpha))]
