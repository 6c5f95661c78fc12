"""The comparison report: `arches report <results folder>`.

`write_report(folder, options)` reads only the recorded run folders (`harness.store`), never the
live config, and writes into the folder, each file atomically:

    report.md  report.html     the report; the HTML is self-contained (plots as base64 PNG)
    runs.csv                   one row per run (raw numbers) plus the unigram baseline
    scores.csv                 task × shots × variant: mean, 95% interval, bold / ★ / †; against the bold variant
                               (vs): diff [diff_low, diff_high], p_raw, p_holm (= p_vs_best), q_bh and the MDE;
                               mismatch: the warning on a row shown under report.allow_mismatch=true
    seeds.csv                  task × shots × metric × variant × seed: each seed's value and n
    *.png                      training curves, score against FLOPs, held-out bits/byte against tokens and FLOPs,
                               differences from each row's best, score against shots, tokens/s
    index.parquet              the store's index, rebuilt

One concern per module; the statistics themselves are `harness.statistics` (no tables,
plots or HTML there):

    summary      the opening: what is and is not significant after correction, what could not be seen
    variants     one row per variant (mean ± sd over seeds) and the knobs that differ
    formatting   numbers as the tables show them
    scores       the score tables: primary metric, cells, intervals and marks per row
    marks        a row's intervals and ★ / † / bold / ≈ chance, from harness.statistics
    comparisons  each variant against its row's bold one: difference, Holm p, BH q across the table, MDE
    mismatch     rows whose runs were scored under different settings: refused, or shown with a warning
    options      `arches report <folder> report.key=value`: report.allow_mismatch, report.test
    groups       task groups (the minimal pairs, BLiMP): each task beside the group's mean
    runs         the per-run table: parameters, FLOPs, tokens, losses, status
    robustness   the families' order under other scoring rules, and where it flips (choices: the
                 per-choice log-likelihoods it reads from the samples files)
    samples      each variant's greedy continuations of the same held-out prompts
    wang2022     the findings of the wang2022 experiment (Wang et al. 2022)
    seeds        the seed values behind every mean (seeds.csv, the plots' dots)
    plots        matplotlib figures as PNG bytes
    plots_differences  each variant's difference from its row's best, with its interval (numbers and plot)
    render       Markdown and HTML
    document     the report's sections in order, and its files

A ladder's folder (`<experiment>/<size>/<run>`, harness.ladder) gets a report of its own
instead, over its rungs (each rung's folder has the report above):

    ladder          its document: the Scaling section and its files (scaling_*.csv, crossovers.csv, ...)
    scaling_points  the rungs' observations: one row per run x metric comparable across families
    scaling         each variant's fits per metric, where the curves cross, rank agreement, the reading
    plots_scaling   one axis per metric: points, fitted curves, bootstrap bands
"""

from harness.report.document import USAGE, report_command, write_report
from harness.report.formatting import MISSING, duration, p_text, si, sig3, signed
from harness.report.runs import (
    flops_matching, held_out_bpb, runs_display, runs_raw, scoring_formats, variant_order, varying_knobs,
)
from harness.report.scores import (
    LIKELIHOOD_METRICS, MULTIPLE_CHOICE_METRICS, SCORE_COLUMNS, Cell, Comparer, higher_is_better, marked_rows,
    primary_metric, score_cells, score_display, score_table, scores_legend,
)
from harness.report.wang2022 import WANG2022, wang2022_findings

__all__ = [
    "LIKELIHOOD_METRICS", "MISSING", "MULTIPLE_CHOICE_METRICS", "SCORE_COLUMNS", "USAGE", "WANG2022", "Cell",
    "Comparer", "duration", "flops_matching", "held_out_bpb", "higher_is_better", "marked_rows", "p_text",
    "primary_metric", "report_command", "runs_display", "runs_raw", "score_cells", "score_display", "score_table",
    "scores_legend", "scoring_formats", "si", "sig3", "signed", "variant_order", "varying_knobs", "wang2022_findings",
    "write_report",
]
