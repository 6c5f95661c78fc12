"""The comparison report: `arches report <results folder>`.

`write_report(folder)` reads only the recorded run folders (`harness.store`), never the
live config, and writes into the folder, each file atomically:

    report.md  report.html     the report; the HTML is self-contained (plots as base64 PNG)
    runs.csv                   one row per run (raw numbers) plus the unigram baseline
    scores.csv                 task × shots × variant: mean, 95% interval, bold / ★ / †, Holm p against the best
    *.png                      training curves, score against FLOPs, score against shots, tokens/s
    index.parquet              the store's index, rebuilt

One concern per module; the statistics themselves are `harness.statistics` (no tables,
plots or HTML there):

    formatting   numbers as the tables show them
    scores       the score tables: primary metric, cells, intervals and marks per row
    marks        a row's intervals and ★ / † / bold / ≈ chance, from harness.statistics
    groups       task groups (the minimal pairs, BLiMP): each task beside the group's mean
    runs         the runs table: parameters, FLOPs, tokens, losses, knobs
    wang2022     the findings of the wang2022 experiment (Wang et al. 2022)
    plots        matplotlib figures as PNG bytes
    render       Markdown and HTML
    document     the report's sections in order, and its files
"""

from harness.report.document import USAGE, report_command, write_report
from harness.report.formatting import MISSING, duration, p_text, si, sig3, signed
from harness.report.runs import (flops_matching, held_out_bpb, runs_display, runs_raw, scoring_formats,
                                 variant_order, varying_knobs)
from harness.report.scores import (LIKELIHOOD_METRICS, MULTIPLE_CHOICE_METRICS, SCORE_COLUMNS, Cell, Comparer,
                                   higher_is_better, marked_rows, primary_metric, score_cells, score_display,
                                   score_table, scores_legend)
from harness.report.wang2022 import WANG2022, wang2022_findings

__all__ = [
    "LIKELIHOOD_METRICS", "MISSING", "MULTIPLE_CHOICE_METRICS", "SCORE_COLUMNS", "USAGE", "WANG2022", "Cell",
    "Comparer", "duration", "flops_matching", "held_out_bpb", "higher_is_better", "marked_rows", "p_text",
    "primary_metric", "report_command", "runs_display", "runs_raw", "score_cells", "score_display", "score_table",
    "scores_legend", "scoring_formats", "si", "sig3", "signed", "variant_order", "varying_knobs", "wang2022_findings",
    "write_report",
]
