"""`arches report`: build the report of a results folder and write its files atomically."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from arches.errors import UserError
from harness import provenance, store
from harness.report import mismatch
from harness.report.comparisons import comparison_blocks
from harness.report.formatting import MISSING
from harness.report.groups import group_blocks
from harness.report.ladder import write_ladder_report
from harness.report.options import ReportOptions, parse_options
from harness.report.plots import (
    colors_for,
    plot_held_out_bpb,
    plot_score_vs_flops,
    plot_score_vs_shots,
    plot_throughput,
    plot_training_curves,
)
from harness.report.plots_differences import plot_differences
from harness.report.render import render_html, render_markdown
from harness.report.robustness import robustness_blocks
from harness.report.runs import (
    baseline_scored,
    check_duplicates,
    flops_matching,
    runs_display,
    runs_raw,
    variant_order,
)
from harness.report.samples import samples_blocks
from harness.report.scaling_points import is_ladder_folder
from harness.report.scores import (
    Comparer,
    pseudo_likelihood_families,
    score_display,
    score_table,
    scores_legend,
)
from harness.report.seeds import seed_values
from harness.report.summary import summary_blocks
from harness.report.variants import knobs_display, variants_display
from harness.report.wang2022 import WANG2022, wang2022_findings

SHOWN_IN_VARIANTS = ("params", "non-emb. params", "FLOPs/token", "FLOPs/token vs first", "train FLOPs", "family", "preset")
USAGE = ("usage: arches report <results folder> [report.allow_mismatch=true] "
         "[report.test=auto|crossed|multi_bootstrap|sign_flip|examples]   (e.g. arches report results/families)")


def write_report(folder: Path | str, options: ReportOptions | None = None) -> Path:
    """Build the report of a results folder from its run folders; return the path of report.md."""
    folder = Path(folder)
    options = options or ReportOptions()
    if is_ladder_folder(folder):  # a folder of rung folders: the Scaling section over them
        return write_ladder_report(folder)
    runs = store.require_runs(folder)
    check_duplicates(runs)
    baseline = store.load_baseline(folder)
    long = store.scores(folder, runs)
    comparer = Comparer()
    # rows whose runs were not scored alike: refused here, before anything is written, unless asked for
    mismatched = mismatch.check(long, comparer, options.allow_mismatch)
    groups, long = long[long["subtasks"].notna()], long[long["subtasks"].isna()]  # a group's mean: its own section
    table = provenance.with_n(score_table(long, comparer, options.test), long)  # n per score: scores.csv, the table
    table = mismatch.annotate(table, mismatched)
    seeds = seed_values(long, groups)  # every seed's value behind a mean: seeds.csv and the plots' dots
    experiment = Counter(r["experiment"] for r in runs).most_common(1)[0][0]
    variants = variant_order(runs, experiment)
    runs = sorted(runs, key=lambda r: variants.index(r["variant"]))  # stable: seeds stay in order
    colors = colors_for(variants)

    blocks = _header_blocks(folder, runs, experiment)
    findings = wang2022_findings(runs, long, comparer) if experiment == WANG2022 else []
    blocks += summary_blocks(table, runs, findings)  # what was found, before any table
    blocks += provenance.header_blocks(runs)
    blocks += _variants_blocks(runs, variants, baseline)
    blocks += _scores_blocks(table, variants)
    blocks += group_blocks(groups, long, [v for v in variants if v in set(groups["variant"])], comparer,
                           options.test, mismatched)
    blocks += robustness_blocks(runs, long, comparer, variants)  # the order under other scoring rules: flips
    blocks += findings
    blocks += samples_blocks(runs, variants)  # each variant's greedy continuations of held-out prompts

    plots = _plots(runs, baseline, long, table, colors, comparer, seeds)
    blocks += _runs_blocks(runs)
    blocks += _plot_blocks(folder, plots)
    return _write_files(folder, blocks, runs, baseline, table, seeds, experiment)


def _header_blocks(folder: Path, runs: list[dict], experiment: str) -> list[tuple[str, Any]]:
    """The title and the line saying when, from what and on which data the report was built."""
    status = Counter(r["status"] for r in runs)
    tokenizer = store.check_one_tokenizer(runs)
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")

    blocks: list[tuple[str, Any]] = [("h1", f"arches report: {experiment}")]
    data = ", ".join(sorted({str(r.get("data")) for r in runs}))
    sizes = ", ".join(sorted({str(r.get("size")) for r in runs}))
    blocks.append(("p", (
        f"Generated {when} by `arches report {folder}` from {len(runs)} run folder(s): "
        + ", ".join(f"{n} {s}" for s, n in sorted(status.items()))
        + f". Tokenizer `{str(tokenizer or MISSING)[:12]}`; data {data}; size {sizes}."
    )))
    return blocks


def _variants_blocks(runs: list[dict], variants: list[str], baseline: dict | None) -> list[tuple[str, Any]]:
    """The Variants section: what every seed of a variant shares, the knobs that differ."""
    blocks: list[tuple[str, Any]] = []
    blocks.append(("h2", "Variants"))
    blocks.append(("table", variants_display(runs, variants, baseline)))
    matching = flops_matching(runs)
    if matching:
        blocks.append(("p", matching))
    pseudo = pseudo_likelihood_families()  # FamilySpec.likelihood
    blocks.append(("p", (
        "Validation loss is labelled with its objective: losses of different objectives (e.g. lm and mlm) are "
        "not comparable. Held-out bits/byte come from the corpus_ppl evaluation"
        + (f"; {' and '.join(pseudo)} figures are pseudo-log-likelihoods (PLL, Salazar et al. 2020), not "
           "comparable to true likelihoods." if pseudo else ".")
        + " Over several seeds a cell is the mean ± the sample standard deviation over the seeds (each run's "
        "own values are in the Runs table and runs.csv)."
    )))
    unigram = (baseline or {}).get("unigram")
    if unigram:
        blocks.append(("p", f"The unigram baseline: token frequencies of the training split, scored on "
                            f"{baseline_scored(unigram)}."))
    knobs_table, shared_sentence = knobs_display(runs, variants)
    if knobs_table is not None:
        blocks += [("p", "**Knobs that differ between variants.**"), ("table", knobs_table)]
    if shared_sentence:
        blocks.append(("p", shared_sentence))
    return blocks


def _scores_blocks(table, variants: list[str]) -> list[tuple[str, Any]]:
    """The Scores section: the primary metric per task and variant, then the comparisons."""
    blocks: list[tuple[str, Any]] = []
    blocks.append(("h2", "Scores"))
    if table.empty:
        blocks.append(("p", "No evaluation scores are recorded in these runs yet."))
    else:
        display = score_display(table, [v for v in variants if v in set(table["variant"])])
        blocks.append(("table", provenance.n_column(display, table)))
        blocks.append(("p", (
            "Primary metric per task: acc_norm where the task has it, else acc (multiple choice, higher is "
            "better ↑); bits_per_byte for perplexity tasks (lower is better ↓); n: the examples scored, of those "
            "the task holds. " + scores_legend(table) + (" " + mismatch.warning_text(table)).rstrip()
        )))
        blocks += comparison_blocks(table)  # each variant against the bold one: diff, Holm p, BH q, MDE
    return blocks


def _plots(runs, baseline, long, table, colors, comparer, seeds) -> list[tuple[str, str, bytes | None]]:
    """(title, file name, PNG bytes or None where the plot does not apply) of every plot."""
    return [
        ("Training curves: validation loss against tokens seen, one panel per objective", "training_curves.png",
         plot_training_curves(runs, baseline, colors)),
        ("Each task's score against training FLOPs", "score_vs_flops.png",
         plot_score_vs_flops(runs, long, table, colors)),
        ("Held-out bits/byte against tokens seen and against training FLOPs, one dot per run, for the families "
         "with a true likelihood", "held_out_bpb.png", plot_held_out_bpb(runs, baseline, colors)),
        ("Each variant's difference from its row's best (bold) variant, with the test's 95% interval (not corrected "
         "for the row's other comparisons; the table's marks are)", "differences.png",
         plot_differences(long, table, colors, comparer)),
        ("Zero-shot against few-shot score per variant (dots: seed values)", "score_vs_shots.png",
         plot_score_vs_shots(table, colors, seeds)),
        ("Training throughput (tokens/s) per variant", "throughput.png", plot_throughput(runs, colors)),
    ]


def _runs_blocks(runs: list[dict]) -> list[tuple[str, Any]]:
    """The Runs section: each run's own values."""
    blocks: list[tuple[str, Any]] = []
    blocks.append(("h2", "Runs"))
    blocks.append(("p", "Each run's own values (the Variants table holds what every seed shares: parameters, FLOPs)."))
    per_run = runs_display(runs, None)  # the unigram baseline is a row of the Variants table
    blocks.append(("table", per_run.drop(columns=[c for c in SHOWN_IN_VARIANTS if c in per_run.columns])))
    return blocks


def _plot_blocks(folder: Path, plots: list[tuple[str, str, bytes | None]]) -> list[tuple[str, Any]]:
    """The Plots section; each PNG is written beside the report, a stale one removed."""
    blocks: list[tuple[str, Any]] = []
    blocks.append(("h2", "Plots"))
    for title, name, png in plots:
        if png is None:
            (folder / name).unlink(missing_ok=True)  # a plot of an earlier report that no longer applies
            continue
        store.write_bytes_atomic(folder / name, png)
        blocks += [("p", f"**{title}.**"), ("img", (title, name, png))]
    if all(png is None for _, _, png in plots):
        blocks.append(("p", "No plots yet: no run has a validation history, scores or a throughput."))
    return blocks


def _write_files(folder: Path, blocks, runs, baseline, table, seeds, experiment: str) -> Path:
    """The tables as CSV, the index, then report.html and report.md; the path of report.md."""
    store.write_text_atomic(folder / "runs.csv", runs_raw(runs, baseline).to_csv(index=False))
    store.write_text_atomic(folder / "scores.csv", table.to_csv(index=False))
    store.write_text_atomic(folder / "seeds.csv", seeds.to_csv(index=False))
    store.write_index(folder)
    store.write_text_atomic(folder / "report.html", render_html(blocks, f"arches report: {experiment}"))
    return store.write_text_atomic(folder / "report.md", render_markdown(blocks))


def report_command(argv: list[str]) -> None:
    """`arches report <results folder> [report.key=value ...]`: write the report and print its path as the last line."""
    if argv in (["-h"], ["--help"]):
        print(USAGE)
        return
    if not argv or argv[0].startswith("-"):
        raise UserError(f"expected one results folder, got {' '.join(argv) or 'nothing'}; {USAGE}")
    if "=" in argv[0] and not Path(argv[0]).exists():
        raise UserError(f"arches report takes a results folder first, then overrides ({argv[0]}); {USAGE}")
    print(write_report(argv[0], parse_options(argv[1:])))
