"""Statistics for comparison tables: intervals, tests, multiplicity and power (no tables, plots or HTML).

Data model: a variant's `Outcomes` on one task are {seed: {doc_id: value}}, a value being
0/1 (accuracy), a float (a per-example mean) or a (loglikelihood, weight) pair (bits/byte and
the perplexities, lm-eval's corpus-level ratio metrics). Everything pairs by doc_id.

    compare(a, b, kind)          -> Comparison(diff, ci, p, test, n, seeds, seed_variance, se, df, mde)
    compare_row(row, kind)       -> Row(comparisons, marks: bold / ★ / †, n, seeds)
    cell_interval(outcomes, kind)-> Interval(estimate, low, high, method, n, seeds)
    beats_chance(row, chance, kind), adjust_table(...), accuracy_mde(...)

Which test runs, and why it holds its level at few seeds, is in `significance` and `crossed`.

Across a ladder's rungs (issue 18): `fit_loss` (L = E + A·C^-α, Hoffmann et al. 2022 approach 3) and
`fit_accuracy` (a bounded logistic in log C) with bootstrap intervals over seeds within rungs, `crossover`
(where two fitted curves cross, or "not within range") and `rank_agreement` (Kendall's τ against the largest rung).
"""

from harness.statistics.chance import ChanceTest, beats_chance, p_above_chance
from harness.statistics.crossover import NOT_WITHIN_RANGE, Crossover, RankAgreement, crossover, rank_agreement
from harness.statistics.intervals import (ONE_SEED_NOTE, Interval, SeedSummary, bootstrap_mean, bootstrap_ratio,
                                          cell_interval, crossed_interval, seed_summary, wilson)
from harness.statistics.multiplicity import (FAMILIES, Row, RowMarks, adjust_table, benjamini_hochberg, compare_row,
                                             holm, mark_row)
from harness.statistics.outcomes import (ALPHA, CONFIDENCE, KINDS, POWER, RESAMPLES, MetricKind, Outcomes, Table,
                                         align, metric_kind, mismatched_docs)
from harness.statistics.power import (accuracy_difference_se, accuracy_mde, minimum_detectable_difference,
                                      seeds_difference_se)
from harness.statistics.resampling import sign_flip_p, smallest_sign_flip_p
from harness.statistics.scaling import MIN_RUNGS, Estimate, ScalingFit, fit_accuracy, fit_loss
from harness.statistics.significance import (MIN_SEEDS_MULTI_BOOTSTRAP, TESTS, Comparison, compare, compare_scores,
                                             compare_tables, min_seeds_sign_flip, multi_bootstrap)

__all__ = [
    "ALPHA", "CONFIDENCE", "FAMILIES", "KINDS", "MIN_RUNGS", "MIN_SEEDS_MULTI_BOOTSTRAP", "NOT_WITHIN_RANGE",
    "ONE_SEED_NOTE", "POWER", "RESAMPLES", "TESTS", "ChanceTest", "Comparison", "Crossover", "Estimate", "Interval",
    "MetricKind", "Outcomes", "RankAgreement", "Row", "RowMarks", "ScalingFit", "SeedSummary", "Table",
    "accuracy_difference_se", "accuracy_mde", "adjust_table", "align", "beats_chance", "benjamini_hochberg",
    "bootstrap_mean", "bootstrap_ratio", "cell_interval", "compare", "compare_row", "compare_scores", "compare_tables",
    "crossed_interval", "crossover", "fit_accuracy", "fit_loss", "holm", "mark_row", "metric_kind",
    "min_seeds_sign_flip", "minimum_detectable_difference", "mismatched_docs", "multi_bootstrap", "p_above_chance",
    "rank_agreement", "seed_summary", "seeds_difference_se", "sign_flip_p", "smallest_sign_flip_p", "wilson",
]
