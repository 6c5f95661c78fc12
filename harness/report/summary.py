"""The report's opening: what was found, in a few lines, before any table (issue 16, item 9).

It says only what the corrected tests support (harness.report.comparisons.comparison_facts):
  - what is significant after Holm within its row, and how many comparisons survive
    Benjamini–Hochberg across the whole table;
  - which rows show no significant difference, and of those which could not have shown one,
    their whole spread being below the minimum detectable difference at their n and seeds;
  - rows where no variant beats chance, and rows that could not be tested;
  - for wang2022, each published ordering's verdict (harness.report.wang2022);
  - at one seed per variant, that only test-set uncertainty was measured.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from harness.report.comparisons import ComparisonFacts, comparison_facts
from harness.report.formatting import metric_label, sig3
from harness.statistics import ALPHA, ONE_SEED_NOTE


def _row_name(task: str, shots: int, metric: str, higher: bool) -> str:
    return f"{task} {shots}-shot ({metric_label(metric, higher)})"


def _direction(diff: float, higher: bool) -> str:
    return "better" if (diff > 0) == higher else "worse"


def _significant_lines(facts: ComparisonFacts, table: pd.DataFrame) -> list[str]:
    """One line per row with a significant difference after Holm: who beats whom, by how much."""
    lines = []
    rows: dict[tuple, list] = {}
    for found in facts.holm:
        rows.setdefault((found.task, found.shots), []).append(found)
    for (task, shots), found in rows.items():
        row = table[(table["task"] == task) & (table["shots"] == shots)]
        metric, higher = str(row["metric"].iloc[0]), bool(row["higher_is_better"].iloc[0])
        star = row[row["best"].astype(bool)]["variant"].tolist()
        parts = [f"{f.variant} {_direction(f.diff, higher)} than {f.vs} by {sig3(abs(f.diff))} "
                 f"[{sig3(min(abs(f.low), abs(f.high)))}, {sig3(max(abs(f.low), abs(f.high)))}] "
                 f"(Holm p = {f.p_holm:.2g})" for f in found]
        lead = f"{star[0]} ★ (significantly better than every other variant); " if star else ""
        lines.append(f"{_row_name(task, shots, metric, higher)}: {lead}{'; '.join(parts)}.")  # one row, one line
    return lines


def _rows_text(keys: list[tuple[str, int]]) -> str:
    return ", ".join(f"{task} {shots}-shot" for task, shots in keys)


def summary_blocks(table: pd.DataFrame, runs: list[dict], findings: list[tuple[str, Any]] = ()) -> list:
    """The Summary section's blocks ("h2", "p", "ul"), from the score table and the findings' verdicts."""
    blocks: list[tuple[str, Any]] = [("h2", "Summary")]
    completed = [r for r in runs if r["status"] == "completed"]
    seeds: dict[str, set] = {}
    for run in completed:
        seeds.setdefault(run["variant"], set()).add(run.get("seed"))
    counts = sorted({len(s) for s in seeds.values()})
    n = sorted({int(k) for k in table.get("n", pd.Series(dtype=object)).dropna() if str(k).isdigit()})
    design = (f"{len(seeds)} variants × {'/'.join(map(str, counts)) or 0} seed(s) each ({len(completed)} completed "
              f"runs)" + (f", n = {'/'.join(map(str, n))} examples per task" if n else "") + ".")
    if table.empty:
        blocks.append(("p", design + " No evaluation scores are recorded yet, so nothing can be compared."))
        return blocks
    facts = comparison_facts(table)
    total = int(table["q_bh"].map(lambda q: isinstance(q, float) and q == q).sum()) if "q_bh" in table else 0
    blocks.append(("p", design + f" Significance is at α = {ALPHA:g} after Holm's correction within each row "
                                 f"(family-wise); across the whole table {len(facts.bh)} of {total} comparisons "
                                 f"against a row's best are significant after Benjamini–Hochberg (false "
                                 f"discovery rate {ALPHA:g})."))
    items = []
    significant = _significant_lines(facts, table)
    if significant:
        items += [f"**Significant after correction**, {line}" for line in significant]
    else:
        items.append("**Significant after correction:** nothing; no variant differs significantly from a row's "
                     "best on any task.")
    with_holm = {(f.task, f.shots) for f in facts.holm}
    quiet = [key for key in facts.compared if key not in with_holm]
    undetectable = [u for u in facts.undetectable]
    if quiet:
        items.append(f"**Not significant:** {_rows_text(quiet)}.")
    if undetectable:
        items.append("**Could not have been detected at this n and number of seeds** (the row's whole spread is "
                     "below its minimum detectable difference, 80% power): "
                     + "; ".join(f"{u.task} {u.shots}-shot (spread {sig3(u.spread)}, MDE {sig3(u.mde)})"
                                 for u in undetectable) + ". Read these as *no evidence either way*, not as *no "
                     "difference*.")
    at_chance = sorted({(str(t), int(s)) for t, s, c in zip(table["task"], table["shots"], table["at_chance"])
                        if c is True})
    if at_chance:
        items.append(f"**No variant beats chance:** {_rows_text(at_chance)}.")
    if facts.untested:
        items.append(f"**Not tested** (no per-example outcomes for every variant): {_rows_text(list(facts.untested))}.")
    verdicts = _verdicts(findings)
    if verdicts:
        items.append("**Findings:** " + " ".join(verdicts))
    blocks.append(("ul", items))
    if counts == [1]:
        blocks.append(("p", f"One seed per variant: {ONE_SEED_NOTE}. Run more seeds (experiment.seeds=[0,1,2]) "
                            "before claiming an ordering."))
    return blocks


def _verdicts(findings: list[tuple[str, Any]]) -> list[str]:
    """'(a) ...: not significant.' per claim, from the findings' claim titles and verdict paragraphs."""
    out, title = [], None
    for kind, content in findings:
        if kind != "p" or not isinstance(content, str):
            continue
        if content.startswith("**(") and ".**" in content:
            title = content[2:content.index(".**")]
        elif content.startswith("**Verdict:") and title:
            out.append(f"{title}: {content[len('**Verdict: '):content.index('.**')]}.")
            title = None
    return out
