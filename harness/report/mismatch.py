"""Rows whose variants were not scored alike: refused in one line, or shown with a warning on request.

A row (task, shots) compares like with like only when every run in it scored the same examples
under the same task definition: the same n (examples scored), eval.limit, lm-eval task version
and, with few-shot examples, the same few-shot seed (which picks them); and the doc_ids of the
per-example outcomes agree (harness.statistics.mismatched_docs). Variants may score in different
formats (each family scores in its own), but the seeds of one variant may not: their mean would
mix two scoring rules. `arches report <folder> report.allow_mismatch=true` shows such rows, each
with a warning; otherwise the report is refused before anything is written. A setting an older
record lacks is not compared (eval.limit's null is a value: every example).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from arches.errors import UserError
from harness.statistics import mismatched_docs

# long-table column -> what the message calls it; compared across every run of a row
ACROSS_VARIANTS = (("n", "n (examples scored)"), ("limit", "eval.limit"), ("version", "task version"),
                   ("fewshot_seed", "few-shot seed"))
SHOWN_ROWS = 3  # rows named in the refusal before "and N more"
WARNING_COLUMN, WARNING = "settings", "⚠ differ (see below)"  # the score table's column on a mismatched row


@dataclass(frozen=True)
class Mismatch:
    task: str
    shots: int
    settings: tuple[str, ...]  # what differs, short: "n", "eval.limit", ...
    line: str  # the one line naming the variants and what differs

    @property
    def short(self) -> str:
        return "⚠ " + ", ".join(self.settings) + " differ"


def _value(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, float) and value.is_integer():
        return int(value)  # pandas turns a column of ints and Nones into floats
    return value


def _text(value: Any) -> str:
    return "null" if value is None else str(value)  # only eval.limit keeps None: null, every example


def _seed_key(seed: Any) -> tuple:
    return (0, seed) if isinstance(seed, (int, float)) else (1, str(seed))


def _by_variant(runs: pd.DataFrame, column: str) -> dict[str, list]:
    """variant -> its seeds' distinct values of `column`, in seed order."""
    out: dict[str, list] = {}
    for row in sorted(runs.itertuples(index=False), key=lambda r: (str(r.variant), _seed_key(r.seed))):
        seen = out.setdefault(row.variant, [])
        value = _value(getattr(row, column))
        if value is None and column != "limit":
            continue  # not recorded (an older record): nothing to compare; eval.limit=null is all examples
        if value not in seen:
            seen.append(value)
    return out


def _row_mismatch(task: str, shots: int, runs: pd.DataFrame, outcomes: dict | None) -> Mismatch | None:
    settings, parts = [], []
    for column, what in ACROSS_VARIANTS:
        if column == "fewshot_seed" and shots == 0:
            continue  # no few-shot examples to pick
        values = _by_variant(runs, column)
        if len({v for seen in values.values() for v in seen}) > 1:
            settings.append(column if column != "fewshot_seed" else "few-shot seed")
            parts.append(f"{what} " + ", ".join(f"{variant} {'/'.join(_text(v) for v in seen)}"
                                                 for variant, seen in values.items()))
    formats = {variant: seen for variant, seen in _by_variant(runs, "format").items() if len(seen) > 1}
    if formats:
        settings.append("format")
        parts.append("scoring format across one variant's seeds " + ", ".join(
            f"{variant} {'/'.join(_text(v) for v in seen)}" for variant, seen in formats.items()))
    if not settings and outcomes is not None:
        docs = mismatched_docs(outcomes)
        if docs:
            settings.append("doc_ids")
            parts.append("doc_ids " + docs.removeprefix("the variants were scored on different examples: ")
                         .removesuffix(" doc_ids"))
    if not settings:
        return None
    return Mismatch(task, shots, tuple(settings), f"{task} {shots}-shot: the variants differ in " + "; ".join(parts))


def row_mismatches(long: pd.DataFrame, comparer=None) -> dict[tuple[str, int], Mismatch]:
    """(task, shots) -> Mismatch for every row of the store's long table whose runs were not scored alike.
    `comparer` (harness.report.scores.Comparer) loads the rows' per-example outcomes for the doc_id check."""
    from harness.report.scores import score_cells

    found: dict[tuple[str, int], Mismatch] = {}
    if long.empty:
        return found
    cells = score_cells(long[long["subtasks"].isna()]) if comparer is not None else {}
    for (task, shots), rows in long.groupby(["task", "shots"], sort=True):
        key = (str(task), int(shots))
        runs = rows.drop_duplicates("run_name")
        outcomes = None
        if key in cells:
            metric, by_variant = cells[key]
            outcomes = comparer.outcomes(list(by_variant.values()), metric)
        mismatch = _row_mismatch(*key, runs, outcomes)
        if mismatch is not None:
            found[key] = mismatch
    return found


def check(long: pd.DataFrame, comparer=None, allow: bool = False) -> dict[tuple[str, int], Mismatch]:
    """The mismatched rows when `allow` (report.allow_mismatch=true); otherwise one UserError naming them."""
    found = row_mismatches(long, comparer)
    if found and not allow:
        first, *rest = found.values()
        more = ""
        if rest:
            named = ", ".join(f"{m.task} {m.shots}-shot" for m in rest[:SHOWN_ROWS])
            more = f" (and {len(rest)} more row(s): {named}{', ...' if len(rest) > SHOWN_ROWS else ''})"
        raise UserError(f"{first.line}{more}; evaluate every run with the same eval settings, or pass "
                        "report.allow_mismatch=true to show these rows with a warning")
    return found


def annotate(table: pd.DataFrame, found: dict[tuple[str, int], Mismatch]) -> pd.DataFrame:
    """The score table with each mismatched row's warning line in its `mismatch` column."""
    if table.empty or not found:
        return table
    table = table.copy()
    table["mismatch"] = [found[(t, int(s))].line if (t, int(s)) in found else None
                         for t, s in zip(table["task"], table["shots"])]
    return table


def warning_text(table: pd.DataFrame) -> str:
    """The sentence under a score table naming its mismatched rows ('' when it has none)."""
    lines = list(dict.fromkeys(t for t in table.get("mismatch", pd.Series(dtype=object)).dropna()))
    if not lines:
        return ""
    return ("⚠ Shown although their runs were not scored alike (report.allow_mismatch=true), so their variants do "
            "not compare directly: " + "; ".join(lines) + ".")
