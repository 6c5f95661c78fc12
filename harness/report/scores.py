"""The score tables: each (task, shots) row's primary metric, per-variant cells and their marks."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from arches.errors import UserError
from harness import store
from harness.report import comparisons, marks
from harness.report.formatting import MISSING, _number, metric_label, sig3
from harness.report.marks import CHANCE_FLAG, cell_text, marks_text
from harness.report.mismatch import WARNING, WARNING_COLUMN

MULTIPLE_CHOICE_METRICS = ("acc_norm", "acc")  # acc_norm preferred: length-normalised (lm-eval)
LIKELIHOOD_METRICS = ("bits_per_byte", "byte_perplexity", "word_perplexity", "perplexity")  # lower is better


def pseudo_likelihood(family: str | None) -> bool:
    """Whether a family scores by pseudo-log-likelihood (Salazar et al. 2020), not a true likelihood
    (FamilySpec.likelihood); a family this arches does not know counts as exact."""
    from arches import registry  # the family files import torch: only when a report reads them

    return family in registry.FAMILIES and registry.family(family).pseudo_likelihood


def pseudo_likelihood_families() -> list[str]:
    """The registered families whose likelihoods are pseudo-log-likelihoods (the report's prose)."""
    from arches import registry

    return [name for name in registry.FAMILIES if registry.family(name).pseudo_likelihood]


def primary_metric(metrics: set[str]) -> str:
    """acc_norm, else acc (multiple choice); bits_per_byte, else a perplexity; else the first."""
    for metric in (*MULTIPLE_CHOICE_METRICS, *LIKELIHOOD_METRICS):
        if metric in metrics:
            return metric
    return sorted(metrics)[0]


def higher_is_better(metric: str) -> bool:
    return metric not in LIKELIHOOD_METRICS


@dataclass
class Cell:
    """One variant's primary score on one (task, shots): one value per seed."""

    variant: str
    family: str | None
    values: dict = field(default_factory=dict)  # seed -> value
    stderr: dict = field(default_factory=dict)  # seed -> lm-eval stderr
    samples: dict = field(default_factory=dict)  # seed -> samples file (or None)
    n: dict = field(default_factory=dict)  # seed -> examples scored (or None)

    @property
    def mean(self) -> float:
        return float(np.mean(list(self.values.values())))

    @property
    def sd(self) -> float:
        """The sample standard deviation over seeds (nan at one seed)."""
        return float(np.std(list(self.values.values()), ddof=1)) if len(self.values) >= 2 else math.nan


class Comparer:
    """Per-example outcomes (lm-eval samples files), loaded once per file and metric, and aligned by doc_id."""

    def __init__(self) -> None:
        self._samples: dict[tuple[str, str], dict] = {}

    def samples(self, path: str | None, metric: str) -> dict | None:
        if not isinstance(path, str) or not Path(path).exists():
            return None
        key = (path, metric)
        if key not in self._samples:
            self._samples[key] = store.load_samples(path, metric)
        return self._samples[key] or None

    def aligned(self, a: Cell, b: Cell, metric: str, seed_pairs: list) -> list[tuple[list, list]] | None:
        """Per seed pair, the per-example values of a and b on the doc_ids that all of them share."""
        tables = []
        for seed_a, seed_b in seed_pairs:
            outcomes_a = self.samples(a.samples.get(seed_a), metric)
            outcomes_b = self.samples(b.samples.get(seed_b), metric)
            if outcomes_a is None or outcomes_b is None:
                return None
            tables.append((outcomes_a, outcomes_b))
        if not tables:
            return None
        docs = [d for d in tables[0][0] if all(d in oa and d in ob for oa, ob in tables)]
        if not docs:
            return None
        return [([oa[d] for d in docs], [ob[d] for d in docs]) for oa, ob in tables]

    def difference_matrix(self, a: Cell, b: Cell, metric: str, seed_pairs: list) -> np.ndarray | None:
        """(seeds, examples) per-example differences a - b, or None without numeric outcomes."""
        aligned = self.aligned(a, b, metric, seed_pairs)
        if aligned is None or not all(_scalar(v) for va, vb in aligned for v in va + vb):
            return None
        return np.array([np.asarray(va, float) - np.asarray(vb, float) for va, vb in aligned])

    def outcomes(self, cells: list[Cell], metric: str) -> dict | None:
        """{variant: {seed: {doc_id: value}}} (harness.statistics' Outcomes), or None unless every
        seed of every cell has its samples file."""
        out: dict = {}
        for cell in cells:
            for seed in cell.values:
                loaded = self.samples(cell.samples.get(seed), metric)
                if loaded is None:
                    return None
                out.setdefault(cell.variant, {})[0 if seed is None else int(seed)] = loaded
        return out


def _scalar(value: Any) -> bool:
    return _number(value) or isinstance(value, bool)


def _is_pll(metric: str, family: str | None) -> bool:
    return metric in LIKELIHOOD_METRICS and pseudo_likelihood(family)


def score_cells(long: pd.DataFrame) -> dict[tuple[str, int], tuple[str, dict[str, Cell]]]:
    """(task, shots) -> (primary metric, {variant: Cell}) from the store's long score table."""
    cells: dict[tuple[str, int], tuple[str, dict[str, Cell]]] = {}
    for task, task_rows in long.groupby("task", sort=True):
        metric = primary_metric(set(task_rows["metric"]))
        chosen = task_rows[task_rows["metric"] == metric]
        for shots, rows in chosen.groupby("shots", sort=True):
            by_variant: dict[str, Cell] = {}
            for row in rows.itertuples(index=False):
                cell = by_variant.setdefault(row.variant, Cell(row.variant, row.family))
                cell.values[row.seed] = row.value
                cell.stderr[row.seed] = row.stderr
                cell.samples[row.seed] = row.samples_file
                cell.n[row.seed] = getattr(row, "n", None)
            cells[(task, int(shots))] = (metric, dict(sorted(by_variant.items())))
    return cells


def score_table(long: pd.DataFrame, comparer: Comparer | None = None, test: str = "auto") -> pd.DataFrame:
    """task × shots × variant: mean, 95% interval, chance, the row's marks (harness.report.marks) and each
    variant's difference from the bold one with Holm's p, the table's BH q and the MDE (harness.report.comparisons).

    Pseudo-log-likelihood figures (encoder) are shown but not ranked against true likelihoods.
    `test` is the pairwise test (harness.statistics.TESTS; `arches report ... report.test=`).
    """
    comparer = comparer or Comparer()
    chance = long.groupby("task")["chance"].first().to_dict() if len(long) else {}
    rows, row_pairs, anchors = [], {}, {}
    for (task, shots), (metric, cells) in score_cells(long).items():
        marked, stats = _marked_rows(task, shots, metric, cells, chance.get(task), comparer, None, test)
        rows += marked
        row_pairs[(task, shots)] = {pair: c.p for pair, c in stats.comparisons.items()}
        anchors[(task, shots)] = stats.anchor
    q, _ = comparisons.table_q(row_pairs, anchors)  # Benjamini–Hochberg across every pair of the table
    for row in rows:
        row["q_bh"] = q.get((row["task"], row["shots"], row["variant"]), math.nan)
    return pd.DataFrame(rows, columns=SCORE_COLUMNS)


# p_vs_best is p_holm (its older name, kept for readers of older files); diff = variant − vs, the bold variant
SCORE_COLUMNS = ["task", "shots", "metric", "higher_is_better", "chance", "variant", "n_seeds", "mean", "sd", "low",
                 "high",
                 "ci95", "interval", "pll", "bold", "best", "p_vs_best", "significant", "test", "at_chance",
                 "vs", "diff", "diff_low", "diff_high", "p_raw", "p_holm", "q_bh", "mde", "mismatch"]


def marked_rows(task: str, shots: int, metric: str, cells: dict[str, Cell], chance: Any, comparer: Comparer,
                outcomes: dict | None = None, test: str = "auto") -> list[dict]:
    """score_table's rows of one (task, shots): each variant's interval and marks. `outcomes`
    replaces the cells' samples files (a group's mean pools its tasks')."""
    return _marked_rows(task, shots, metric, cells, chance, comparer, outcomes, test)[0]


def _marked_rows(task: str, shots: int, metric: str, cells: dict[str, Cell], chance: Any, comparer: Comparer,
                 outcomes: dict | None, test: str) -> tuple[list[dict], marks.RowStats]:
    higher = higher_is_better(metric)
    ranked = [v for v, c in cells.items() if not _is_pll(metric, c.family)]
    if outcomes is None:
        outcomes = comparer.outcomes(list(cells.values()), metric)
    # examples scored: a count, also where pandas made it a float beside a missing one
    n = {v: next((int(k) for k in c.n.values() if _number(k) and float(k).is_integer()), None)
         for v, c in cells.items()}
    values = {v: c.values for v, c in cells.items()}
    try:
        stats = marks.row_stats(values, outcomes, metric, higher, ranked, chance if _number(chance) else None, n,
                                test)
    except UserError as error:
        if test == "auto":
            raise
        raise UserError(f"report.test={test} cannot compare {task} {shots}-shot: {error}") from None
    rows = []
    for variant, cell in cells.items():
        low, high = stats.low[variant], stats.high[variant]
        p = stats.p_vs_best.get(variant)
        rows.append({
            "task": task, "shots": shots, "metric": metric, "higher_is_better": higher, "chance": chance,
            "variant": variant, "n_seeds": len(cell.values), "mean": cell.mean, "sd": cell.sd, "low": low, "high": high,
            "ci95": max(cell.mean - low, high - cell.mean) if _number(low) else math.nan,  # plots' error bars
            "interval": stats.interval[variant], "pll": _is_pll(metric, cell.family),
            "bold": variant in stats.bold, "best": variant == stats.star, "p_vs_best": p,
            "significant": variant in stats.dagger, "test": stats.test if p is not None else None,
            "at_chance": stats.at_chance,
            **comparisons.versus_anchor(stats, variant, values if variant in ranked else {}, metric, higher,
                                        n.get(variant)),
            "mismatch": None,  # harness.report.mismatch's warning, where the report shows a mismatched row
        })
    return rows, stats


def variant_cells(rows: pd.DataFrame, variants: list[str], text_of) -> dict[str, str]:
    """{variant: text_of(its row)} for one (task, shots) of a score table, MISSING where it has no row."""
    cells = {}
    for variant in variants:
        match = rows[rows["variant"] == variant]
        cells[variant] = MISSING if match.empty else text_of(match.iloc[0])
    return cells


def _score_cell_text(cell: pd.Series) -> str:
    text = cell_text(cell["mean"], cell["low"], cell["high"], bool(cell["bold"]), sig3, cell["sd"])
    return text + (" (PLL)" if cell["pll"] else marks_text(bool(cell["best"]), bool(cell["significant"])))


def score_display(table: pd.DataFrame, variants: list[str]) -> pd.DataFrame:
    """The human table: one row per (task, shots), one column per variant, marks on the cells."""
    rows = []
    for (task, shots), group in table.groupby(["task", "shots"], sort=True):
        first = group.iloc[0]
        chance = sig3(first["chance"]) if _number(first["chance"]) else MISSING
        row = {
            "task": task,
            "shots": int(shots),
            "metric": metric_label(first["metric"], first["higher_is_better"]),
            "chance": f"{chance} ({CHANCE_FLAG})" if first["at_chance"] in (True,) else chance,  # None: untested
        }
        row.update(variant_cells(group, variants, _score_cell_text))
        rows.append(row)
    display = pd.DataFrame(rows, columns=["task", "shots", "metric", "chance", *variants])
    if "mismatch" in table and table["mismatch"].notna().any():  # shown on request: report.allow_mismatch=true
        flagged = {(t, int(s)) for t, s, m in zip(table["task"], table["shots"], table["mismatch"]) if pd.notna(m)}
        display[WARNING_COLUMN] = [WARNING if (t, int(s)) in flagged else ""
                                   for t, s in zip(display["task"], display["shots"])]
    return display


def scores_legend(table: pd.DataFrame) -> str:
    """The mark rule, the correction and the interval types of a score table (harness.report.marks)."""
    ranked = table[~table["pll"]]
    untested = ranked.groupby(["task", "shots"])["test"].apply(lambda t: t.isna().all() and len(t) >= 2).any()
    # a cell's tests are joined by "; ", which the one-seed caveat itself contains: keep it whole
    tests = {t for text in table["test"].dropna() for t in re.split(r"; (?!training-seed)", str(text))}
    return marks.legend(set(table["interval"]), tests, bool((table["n_seeds"] <= 1).all()), bool(untested))
