"""The report's task groups: each task of a group and the group's mean, per variant.

A group is what lm-eval aggregates over tasks: the minimal pairs' `corpus_pairs` (one task
per perturbation kind, harness/tasks/pairs.py), BLiMP's `blimp`. Its record
(harness/eval_records.py) holds lm-eval's unweighted mean over its tasks and their names;
the tasks are rows of the Scores table too, and here they sit beside the mean, with their
ties (a tie scores half and is counted apart: harness/tasks/pairs_metrics.py) and chance.

The statistics are the report's own (harness/report.py). A cell is the mean ± a 95%
interval: a t-interval over seeds where a variant has several, else 1.96·stderr; the
mean's stderr is lm-eval's group stderr, sqrt(Σ se_k²)/k, exact for the unweighted mean of
k independent task means. The best variant per row is marked, and one significantly
different from it: for a task, the Scores table's paired bootstrap; for the mean, the same
bootstrap with each task a stratum (examples matched by doc_id and resampled within their
task, and seeds too where there are several), its statistic the unweighted mean over the
tasks, as the group's score is.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from harness import provenance
from harness import report as rep

PAIRS_GROUP = "corpus_pairs"  # harness.tasks.pairs.GROUP (the report reads records only, never the tasks)
TIE = "tie"
MEAN = "mean"


def _ties(leaves: pd.DataFrame, task: str, variant: str) -> float | None:
    rows = leaves[(leaves["task"] == task) & (leaves["variant"] == variant) & (leaves["metric"] == TIE)]
    return float(rows["value"].mean()) if len(rows) else None


def _cell_text(mean: float, ci95: float, best: bool, significant: bool, ties: float | None) -> str:
    text = rep.with_interval(mean, ci95)
    text += f" {rep.BEST_MARK}" if best else f" {rep.WORSE_MARK}" if significant else ""
    return text + (f" (ties {ties:.1%})" if ties else "")


def mean_test(a: rep.Cell, b: rep.Cell, tasks: list[str], per_task: dict, shots: int,
              comparer: rep.Comparer) -> tuple[float | None, str | None]:  # fmt: skip
    """(p, test) for the difference of two variants' group means, each task a stratum."""
    pairs = comparer.seed_pairs(a, b)
    strata = []
    for task in tasks:
        metric, by_variant = per_task.get((task, shots), (None, {}))
        if a.variant not in by_variant or b.variant not in by_variant:
            strata.append(None)
            continue
        strata.append(comparer.difference_matrix(by_variant[a.variant], by_variant[b.variant], metric, pairs))
    if pairs and strata and all(m is not None for m in strata):
        n = sum(m.shape[1] for m in strata)
        if len(pairs) >= 2:
            return rep.seeds_examples_bootstrap(strata)[1], f"seeds × examples within {len(tasks)} tasks (k={len(pairs)}, n={n})"
        return rep.paired_bootstrap([m[0] for m in strata])[1], f"examples within {len(tasks)} tasks (n={n})"
    if len(pairs) >= 2:
        return rep.seed_bootstrap([a.values[s] - b.values[s] for s, _ in pairs])
    return None, None


def mean_rows(rows: pd.DataFrame, leaves: pd.DataFrame, tasks: list[str], shots: int,
              comparer: rep.Comparer) -> list[dict]:  # fmt: skip
    """score_table's rows for the group's mean (its primary metric), one per variant."""
    metric = rep.primary_metric(set(rows["metric"]))
    cells: dict[str, rep.Cell] = {}
    for row in rows[rows["metric"] == metric].itertuples(index=False):
        cell = cells.setdefault(row.variant, rep.Cell(row.variant, row.family))
        cell.values[row.seed], cell.stderr[row.seed] = row.value, row.stderr
    higher = rep.higher_is_better(metric)
    top = max((c.mean if higher else -c.mean) for c in cells.values())
    tied = [c for c in cells.values() if abs((c.mean if higher else -c.mean) - top) <= 1e-12]
    per_task = rep.score_cells(leaves)
    out = []
    for cell in cells.values():
        best = any(cell is c for c in tied)
        p, test = (None, None) if best else mean_test(tied[0], cell, tasks, per_task, shots, comparer)
        half_width, interval = cell.interval()
        out.append({"task": MEAN, "shots": shots, "metric": metric, "variant": cell.variant, "mean": cell.mean,
                    "ci95": half_width, "interval": interval, "best": best, "p_vs_best": p,
                    "significant": p is not None and p < rep.ALPHA, "test": test})  # fmt: skip
    return out


def group_table(group: str, shots: int, groups: pd.DataFrame, leaves: pd.DataFrame, variants: list[str],
                comparer: rep.Comparer) -> tuple[pd.DataFrame, list[str], bool]:  # fmt: skip
    """(the display table: a row per task and the mean, a column per variant; the tasks; whether
    every variant's mean is over the same tasks)."""
    rows = groups[(groups["task"] == group) & (groups["shots"] == shots)]
    lists = set(rows["subtasks"])
    tasks = list(dict.fromkeys(t for joined in sorted(lists) for t in joined.split(",")))
    leaves = leaves[leaves["task"].isin(tasks) & (leaves["shots"] == shots)]
    scored = rep.score_table(leaves, comparer) if len(leaves) else pd.DataFrame(columns=["task"])
    table = pd.concat([scored, pd.DataFrame(mean_rows(rows, leaves, tasks, shots, comparer))], ignore_index=True)
    table = provenance.with_n(table, pd.concat([leaves, rows]).replace({"task": {group: MEAN}}))
    chance = rows["chance"].dropna()
    shown = [v for v in variants if v in set(table["variant"])]
    display = []
    for task in [*[t for t in tasks if t in set(table["task"])], MEAN]:
        here = table[table["task"] == task]
        row: dict[str, Any] = {"task": task if task != MEAN else f"{MEAN} ({group})", "shots": shots}
        task_chance = leaves[leaves["task"] == task]["chance"].dropna() if task != MEAN else chance
        row["chance"] = rep.sig3(float(task_chance.iloc[0])) if len(task_chance) else rep.MISSING
        for variant in shown:
            match = here[here["variant"] == variant]
            if match.empty:
                row[variant] = rep.MISSING
                continue
            cell = match.iloc[0]
            ties = _ties(leaves, task, variant) if task != MEAN else _mean_ties(rows, variant)
            row[variant] = _cell_text(cell["mean"], cell["ci95"], bool(cell["best"]), bool(cell["significant"]), ties)
        display.append(row)
    frame = pd.DataFrame(display, columns=["task", "shots", "chance", *shown])
    # n per row: provenance's column, keyed by the names the table shows
    counts = table.assign(task=[f"{MEAN} ({group})" if t == MEAN else t for t in table["task"]])
    return provenance.n_column(frame, counts), tasks, len(lists) == 1


def _mean_ties(rows: pd.DataFrame, variant: str) -> float | None:
    ties = rows[(rows["variant"] == variant) & (rows["metric"] == TIE)]["value"]
    return float(np.mean(ties)) if len(ties) else None


def group_blocks(groups: pd.DataFrame, leaves: pd.DataFrame, variants: list[str],
                 comparer: rep.Comparer | None = None) -> list[tuple[str, Any]]:  # fmt: skip
    """The report's blocks for every recorded group (none without one): the minimal pairs
    first, under their own heading, then any other group (BLiMP's, ...)."""
    comparer = comparer or rep.Comparer()
    blocks: list[tuple[str, Any]] = []
    keys = sorted({(str(t), int(s)) for t, s in zip(groups["task"], groups["shots"])},
                  key=lambda key: (key[0] != PAIRS_GROUP, key))  # fmt: skip
    for group, shots in keys:
        display, tasks, same_tasks = group_table(group, shots, groups, leaves, variants, comparer)
        pairs = group == PAIRS_GROUP
        blocks.append(("h2", f"Minimal pairs ({group}, {shots}-shot)" if pairs else f"Group {group} ({shots}-shot)"))
        blocks.append(("table", display))
        what = (
            "Each example is a held-out line of the run's corpus and a minimally perturbed copy (swap: two adjacent "
            "words swapped; lexical: a content word replaced by one of the same frequency band; morph: an inflection "
            "changed; halves: the line's halves swapped), of equal length in tokens; acc is how often the model "
            "prefers the real line, scored in its family's own format. Chance is 0.5; a tie (the two equally "
            "likely) scores half and is shown as its share of the pairs. "
            if pairs else f"lm-eval's group {group}: its tasks and their unweighted mean. "
        )
        blocks.append(("p", (
            what + f"Each cell is the mean ± a 95% interval ({'t-interval over seeds' if _several_seeds(groups) else '1.96·stderr'}"
            f"; the mean's stderr is lm-eval's group stderr, sqrt(Σ se²)/{len(tasks)}). {rep.BEST_MARK} best in the "
            f"row; {rep.WORSE_MARK} different from the best at α = {rep.ALPHA}: for the mean, a paired bootstrap "
            f"with each task a stratum ({rep.RESAMPLES:,} resamples, two-sided)."
            + ("" if same_tasks else " The variants' means are over different tasks and do not compare directly.")
            + (" No pair was a tie." if pairs and not _any_ties(groups, group, shots) else "")
        )))
    return blocks


def _any_ties(groups: pd.DataFrame, group: str, shots: int) -> bool:
    rows = groups[(groups["task"] == group) & (groups["shots"] == shots) & (groups["metric"] == TIE)]
    return bool((rows["value"] > 0).any())


def _several_seeds(groups: pd.DataFrame) -> bool:
    return bool(len(groups)) and int(groups.groupby("variant")["seed"].nunique().max()) >= 2
