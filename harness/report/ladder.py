"""A ladder's report: `arches report results/<experiment>` on a folder of rung folders.

Each rung (`<experiment>/<size>/`) has its own report, comparing its variants at that size;
this one reads every rung and writes the Scaling section, with its files, atomically:

    report.md  report.html   the Scaling section: the reading, the rungs, fits, crossovers, rank agreement
    scaling.png              one axis per metric: observed points, fitted curves with 95% bands
    scaling_points.csv       one row per run x metric: the data the fits saw
    scaling_fits.csv         metric x variant x parameter: estimate and 95% interval
    crossovers.csv           metric x pair of variants: where the fitted curves cross, with its interval
    rank_agreement.csv       metric x rung: the rung's order and Kendall's τ against the largest rung's
    index.parquet            the store's index of every run below, with its ladder_rung
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from harness import store
from harness.report.formatting import MISSING, si
from harness.report.plots import colors_for
from harness.report.plots_scaling import plot_scaling
from harness.report.render import render_html, render_markdown
from harness.report.scaling import (
    agreement_csv,
    agreement_table,
    crossover_table,
    crossovers_csv,
    fit_metrics,
    fits_csv,
    fits_table,
    reading,
)
from harness.report.scaling_points import Rung, ladder_rungs, scaling_points


def write_ladder_report(folder: Path | str) -> Path:
    """Fit the rungs below `folder` and write its report; return the path of report.md."""
    folder = Path(folder)
    rungs = ladder_rungs(folder)
    runs = [run for rung in rungs for run in rung.runs]
    experiment = Counter(r["experiment"] for r in runs).most_common(1)[0][0]
    variants = sorted({r["variant"] for r in runs})
    points = scaling_points(rungs)
    results = fit_metrics(points, variants, rungs)

    blocks: list[tuple[str, Any]] = [("h1", f"arches report: {experiment} (scaling ladder)")]
    blocks.append(("p", _provenance(folder, rungs, runs)))
    blocks.append(("h2", "Scaling"))
    if points.empty:
        blocks.append(("p", ("No completed run of this ladder has a scaling metric yet (held-out bits/byte, the "
                             "minimal pairs or the next-line choice): run `arches compare` to finish it.")))
    else:
        for heading, items in reading(results, rungs):
            blocks += [("p", f"**{heading}.**"), ("ul", items)]
    blocks += [("p", "**Rungs.** Each rung's own report compares its variants at that size."),
               ("table", rungs_table(rungs, variants))]
    png = plot_scaling(results, colors_for(variants))
    if png is not None:
        title = "Each metric against training FLOPs: runs (dots), rung means, fits with 95% bootstrap bands"
        store.write_bytes_atomic(folder / "scaling.png", png)
        blocks += [("p", f"**{title}.** Solid within the ladder, dashed a decade beyond it."),
                   ("img", (title, "scaling.png", png))]
    else:
        (folder / "scaling.png").unlink(missing_ok=True)
    for title, table in (("Fits", fits_table(results)), ("Crossovers", crossover_table(results)),
                         ("Rank agreement with the largest rung", agreement_table(results))):
        if not table.empty:
            blocks += [("p", f"**{title}.**"), ("table", table)]
    blocks.append(("p", _legend()))

    store.write_text_atomic(folder / "scaling_points.csv", points.to_csv(index=False))
    store.write_text_atomic(folder / "scaling_fits.csv", fits_csv(results).to_csv(index=False))
    store.write_text_atomic(folder / "crossovers.csv", crossovers_csv(results).to_csv(index=False))
    store.write_text_atomic(folder / "rank_agreement.csv", agreement_csv(results).to_csv(index=False))
    store.write_index(folder)
    store.write_text_atomic(folder / "report.html", render_html(blocks, f"arches report: {experiment} (scaling)"))
    return store.write_text_atomic(folder / "report.md", render_markdown(blocks))


def _provenance(folder: Path, rungs: list[Rung], runs: list[dict]) -> str:
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    status = Counter(r["status"] for r in runs)
    tokenizer = store.check_one_tokenizer(runs)
    data = ", ".join(sorted({str(r.get("data")) for r in runs}))
    return (f"Generated {when} by `arches report {folder}` from {len(runs)} run folder(s) in {len(rungs)} rung(s) ("
            + ", ".join(rung.size for rung in rungs) + "): "
            + ", ".join(f"{n} {s}" for s, n in sorted(status.items()))
            + f". Tokenizer `{str(tokenizer or MISSING)[:12]}`; data {data}.")


def rungs_table(rungs: list[Rung], variants: list[str]) -> pd.DataFrame:
    """Per rung and variant: parameters, tokens, FLOPs spent, seeds completed, the rung's report."""
    rows = []
    for rung in rungs:
        for variant in variants:
            mine = [r for r in rung.runs if r["variant"] == variant]
            if not mine:
                continue
            done = [r for r in mine if r.get("status") == "completed"] or mine
            rows.append({"rung": rung.index, "size": rung.size, "variant": variant,
                         "params": si(done[0].get("params_total")), "tokens": si(done[0].get("tokens_seen")),
                         "train FLOPs": si(done[0].get("train_flops")),
                         "seeds completed": f"{sum(r.get('status') == 'completed' for r in mine)} of {len(mine)}",
                         "report": f"{rung.folder.name}/report.md"})
    return pd.DataFrame(rows)


def _legend() -> str:
    return (
        "Compute is each run's spent training FLOPs (its record's train_flops), so variants are compared at equal "
        "compute, not equal size. Held-out bits/byte (corpus_ppl) are fitted for the families with a true "
        "likelihood only, as L(C) = E + A·C^−α with a Huber loss (δ = 1e-3) on log L (Hoffmann et al. 2022, "
        "approach 3); the encoder's pseudo-log-likelihood (Salazar et al. 2020) is not a likelihood. Accuracies "
        "(minimal pairs, chance 0.5; the next-line choice, chance 0.25) are fitted for every family, each scored in "
        "its own format, as chance + (top − chance)·σ(k·(log C − m)): accuracy is bounded by chance and 1, which a "
        "power law is not (the link of Ruan et al. 2024). Intervals are percentile bootstraps with the rungs fixed "
        "and seeds resampled within each rung. A crossover is searched a decade beyond the ladder on each side; "
        "where the fitted curves do not cross there it is \"not within range\" and no point is claimed, and an "
        "interval is open where some bootstrap pairs do not cross. Rank agreement is Kendall's τ between each "
        "rung's order (means over seeds) and the largest rung's, as DataDecide (Magnusson et al. 2025) measures "
        "it. The fits, crossovers and agreement are in scaling_fits.csv, crossovers.csv and rank_agreement.csv."
    )
