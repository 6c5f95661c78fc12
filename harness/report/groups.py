"""The report's task groups: each task of a group and the group's mean, per variant.

A group is what lm-eval aggregates over tasks: the minimal pairs' `corpus_pairs` (one task
per perturbation kind, harness/tasks/pairs.py), BLiMP's `blimp`. Its record
(harness/eval/records.py) holds lm-eval's unweighted mean over its tasks and their names;
the tasks are rows of the Scores table too, and here they sit beside the mean, with their
ties (a tie scores half and is counted apart: harness/tasks/pairs_metrics.py) and chance.

Intervals and marks follow the Scores table's rules (harness.report.marks). The mean's
are computed on the examples of its tasks pooled ((task, doc_id) pairs), which is lm-eval's
unweighted mean over the tasks only when they have equal n; otherwise the mean is shown
without marks.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from harness import provenance
from harness.report import marks, mismatch
from harness.report import scores as rep
from harness.report.formatting import MISSING, sig3

PAIRS_GROUP = "corpus_pairs"  # harness.tasks.pairs.GROUP (the report reads records only, never the tasks)
TIE = "tie"
MEAN = "mean"


def _ties(leaves: pd.DataFrame, task: str, variant: str) -> float | None:
    rows = leaves[(leaves["task"] == task) & (leaves["variant"] == variant) & (leaves["metric"] == TIE)]
    return float(rows["value"].mean()) if len(rows) else None


def _cell_text(cell: pd.Series, ties: float | None) -> str:
    text = marks.cell_text(cell["mean"], cell["low"], cell["high"], bool(cell["bold"]), sig3, cell.get("sd"))
    text += marks.marks_text(bool(cell["best"]), bool(cell["significant"]))
    return text + (f" (ties {ties:.1%})" if ties else "")


def pooled_outcomes(tasks: list[str], per_task: dict, shots: int, variants: list[str],
                    comparer: rep.Comparer) -> dict | None:  # fmt: skip
    """{variant: {seed: {(task, doc_id): value}}}: the group's examples pooled over its tasks, or None
    without every task's outcomes or where the tasks differ in n (the pooled mean is then not the
    unweighted mean over tasks that lm-eval reports)."""
    pooled: dict = {}
    sizes = set()
    for task in tasks:
        metric, by_variant = per_task.get((task, shots), (None, {}))
        if any(v not in by_variant for v in variants):
            return None
        outcomes = comparer.outcomes([by_variant[v] for v in variants], metric)
        if outcomes is None:
            return None
        for variant, seeds in outcomes.items():
            for seed, docs in seeds.items():
                sizes.add(len(docs))
                pooled.setdefault(variant, {}).setdefault(seed, {}).update({(task, d): v for d, v in docs.items()})
    return pooled if len(sizes) == 1 else None


def mean_rows(rows: pd.DataFrame, leaves: pd.DataFrame, tasks: list[str], shots: int,
              comparer: rep.Comparer, test: str = "auto") -> list[dict]:  # fmt: skip
    """score_table's rows for the group's mean (its primary metric), one per variant."""
    metric = rep.primary_metric(set(rows["metric"]))
    cells: dict[str, rep.Cell] = {}
    for row in rows[rows["metric"] == metric].itertuples(index=False):
        cell = cells.setdefault(row.variant, rep.Cell(row.variant, row.family))
        cell.values[row.seed], cell.stderr[row.seed] = row.value, row.stderr
    outcomes = pooled_outcomes(tasks, rep.score_cells(leaves), shots, list(cells), comparer)
    chance = rows["chance"].dropna()
    return rep.marked_rows(MEAN, shots, metric, cells, float(chance.iloc[0]) if len(chance) else None, comparer,
                           outcomes, test)


def group_table(group: str, shots: int, groups: pd.DataFrame, leaves: pd.DataFrame, variants: list[str],
                comparer: rep.Comparer,
                test: str = "auto") -> tuple[pd.DataFrame, list[str], bool, pd.DataFrame]:  # fmt: skip
    """(the display table: a row per task and the mean, a column per variant; the tasks; whether
    every variant's mean is over the same tasks; the score table behind it)."""
    rows = groups[(groups["task"] == group) & (groups["shots"] == shots)]
    lists = set(rows["subtasks"])
    tasks = list(dict.fromkeys(t for joined in sorted(lists) for t in joined.split(",")))
    leaves = leaves[leaves["task"].isin(tasks) & (leaves["shots"] == shots)]
    scored = rep.score_table(leaves, comparer, test) if len(leaves) else pd.DataFrame(columns=["task"])
    table = pd.concat([scored, pd.DataFrame(mean_rows(rows, leaves, tasks, shots, comparer, test))],
                      ignore_index=True)
    table = provenance.with_n(table, pd.concat([leaves, rows]).replace({"task": {group: MEAN}}))
    chance = rows["chance"].dropna()
    shown = [v for v in variants if v in set(table["variant"])]
    display = []
    for task in [*[t for t in tasks if t in set(table["task"])], MEAN]:
        here = table[table["task"] == task]
        row: dict[str, Any] = {"task": task if task != MEAN else f"{MEAN} ({group})", "shots": shots}
        task_chance = leaves[leaves["task"] == task]["chance"].dropna() if task != MEAN else chance
        row["chance"] = sig3(float(task_chance.iloc[0])) if len(task_chance) else MISSING
        if len(here) and here["at_chance"].iloc[0] in (True,):  # None: untested
            row["chance"] += f" ({marks.CHANCE_FLAG})"
        row.update(rep.variant_cells(here, shown, lambda cell: _cell_text(
            cell, _ties(leaves, task, cell["variant"]) if task != MEAN else _mean_ties(rows, cell["variant"]))))
        display.append(row)
    frame = pd.DataFrame(display, columns=["task", "shots", "chance", *shown])
    # n per row: provenance's column, keyed by the names the table shows
    counts = table.assign(task=[f"{MEAN} ({group})" if t == MEAN else t for t in table["task"]])
    return provenance.n_column(frame, counts), tasks, len(lists) == 1, table


def _mean_ties(rows: pd.DataFrame, variant: str) -> float | None:
    ties = rows[(rows["variant"] == variant) & (rows["metric"] == TIE)]["value"]
    return float(np.mean(ties)) if len(ties) else None


def group_blocks(groups: pd.DataFrame, leaves: pd.DataFrame, variants: list[str],
                 comparer: rep.Comparer | None = None, test: str = "auto",
                 mismatched: dict | None = None) -> list[tuple[str, Any]]:  # fmt: skip
    """The report's blocks for every recorded group (none without one): the minimal pairs
    first, under their own heading, then any other group (BLiMP's, ...). `test`: the rows' pairwise
    test; `mismatched`: harness.report.mismatch's rows shown with a warning (report.allow_mismatch=true)."""
    comparer = comparer or rep.Comparer()
    blocks: list[tuple[str, Any]] = []
    keys = sorted({(str(t), int(s)) for t, s in zip(groups["task"], groups["shots"])},
                  key=lambda key: (key[0] != PAIRS_GROUP, key))  # fmt: skip
    for group, shots in keys:
        display, tasks, same_tasks, table = group_table(group, shots, groups, leaves, variants, comparer, test)
        warning = mismatch.warning_text(mismatch.annotate(
            table.replace({"task": {MEAN: group}}), mismatched or {}))
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
            what + rep.scores_legend(table) + f" The mean's interval and tests pool the examples of its "
            f"{len(tasks)} tasks, whose pooled mean is their unweighted mean when they have equal n; where their n "
            "differ, or a task lacks outcomes, the mean carries no marks."
            + ("" if same_tasks else " The variants' means are over different tasks and do not compare directly.")
            + (" No pair was a tie." if pairs and not _any_ties(groups, group, shots) else "")
            + (" " + warning if warning else "")
        )))
    return blocks


def _any_ties(groups: pd.DataFrame, group: str, shots: int) -> bool:
    rows = groups[(groups["task"] == group) & (groups["shots"] == shots) & (groups["metric"] == TIE)]
    return bool((rows["value"] > 0).any())
