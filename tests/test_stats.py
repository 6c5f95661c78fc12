"""harness.statistics on its own: pinned intervals and tests, multiplicity, power, and null simulations.

No training and no files: outcomes are built in memory as {seed: {doc_id: value}}.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from fixtures.run_folders import outcomes

from arches.errors import UserError
from harness import statistics as st

ALPHA = 0.05


def fpr_bound(trials: int, level: float = ALPHA) -> float:
    """The level plus three Monte-Carlo standard errors: a false-positive rate above it is not noise."""
    return level + 3 * math.sqrt(level * (1 - level) / trials)


def accuracy(values) -> dict:
    return dict(enumerate(values))


# ---------------------------------------------------------------- intervals


def test_wilson_interval_matches_hand_computation():
    # Wilson: (p + z²/2n ± z sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n), z = 1.959964, z² = 3.841459.
    # 7/20: p = 0.35, 1 + z²/n = 1.192073, centre = (0.35 + 0.096036) / 1.192073 = 0.374170,
    #       half = 1.959964 / 1.192073 · sqrt(0.011375 + 0.002401) = 1.644166 · 0.117371 = 0.192977
    #       -> (0.181192, 0.567146)
    seven = st.wilson(7, 20)
    assert seven.estimate == 0.35
    assert seven.low == pytest.approx(0.181192, abs=2e-6) and seven.high == pytest.approx(0.567146, abs=2e-6)
    # 0/100: p = 0, centre = half = (z²/200) / (1 + z²/100), so low = 0 and high = (z²/100) / 1.038415 = 0.036993
    # (the Wald interval here is "0.00 ± 0.00")
    zero = st.wilson(0, 100)
    assert zero.low == 0.0 and zero.high == pytest.approx(0.036993, abs=2e-6)
    assert st.cell_interval({0: accuracy([0] * 100)}, "accuracy").high == zero.high


LL = [-120.0, -95.5, -210.25, -60.0, -150.0, -80.75, -300.0, -45.5]
BYTES = [100, 80, 150, 50, 110, 70, 200, 40]


def test_document_bootstrap_of_bits_per_byte_is_pinned_and_brackets_the_estimate():
    interval = st.bootstrap_ratio(list(zip(LL, BYTES)), "bits_per_byte", resamples=2000, seed=0)
    # -Σ ll / (ln 2 · Σ bytes) = 1062 / (0.693147 · 800) = 1.915178
    assert interval.estimate == pytest.approx(1062 / (math.log(2) * 800))
    assert (interval.low, interval.high) == pytest.approx((1.743500, 2.034878), abs=1e-6)
    assert interval.low < interval.estimate < interval.high
    assert interval.n == 8 and "documents" in interval.method


def test_seed_summary_is_mean_sd_and_t_interval():
    summary = st.seed_summary([0.5, 0.6, 0.7])
    # sd 0.1; t(0.975, 2 df) = 4.302653, half = 4.302653 · 0.1 / sqrt(3) = 0.248414
    assert summary.mean == pytest.approx(0.6) and summary.sd == pytest.approx(0.1)
    assert (summary.low, summary.high) == pytest.approx((0.351586, 0.848414), abs=1e-6)
    assert summary.values == (0.5, 0.6, 0.7) and math.isnan(st.seed_summary([0.5]).sd)


def test_cell_interval_says_what_it_covers():
    three = {s: accuracy(outcomes(40, right, offset=s)) for s, right in enumerate((28, 22, 25))}
    crossed = st.cell_interval(three, "accuracy")
    assert crossed.method.startswith("t 95% over seeds × examples (k = 3") and crossed.estimate == pytest.approx(0.625)
    pooled = st.cell_interval(three, "accuracy", method="bootstrap", resamples=999)
    assert "3 seeds pooled" in pooled.method and st.ONE_SEED_NOTE in pooled.method
    assert crossed.high - crossed.low > pooled.high - pooled.low  # the seeds' spread is counted
    one = st.cell_interval({0: three[0]}, "accuracy")
    assert one.method == f"Wilson 95%, one seed: {st.ONE_SEED_NOTE}" and one.seeds == 1
    with pytest.raises(UserError, match="Wilson interval is for accuracy at one seed"):
        st.cell_interval(three, "accuracy", method="wilson")


def test_ratio_pseudo_values_average_to_each_seeds_score():
    pairs = {0: dict(enumerate(zip(LL, BYTES))), 1: dict(enumerate((ll * 1.1, b) for ll, b in zip(LL, BYTES)))}
    kind = st.metric_kind("bits_per_byte")
    table = st.align({"x": pairs}, kind)["x"]
    assert table.pseudo_values(kind).mean(axis=1) == pytest.approx(table.seed_scores(kind))
    assert table.seed_scores(kind)[1] == pytest.approx(1.1 * 1062 / (math.log(2) * 800))


# ---------------------------------------------------------------- tests of a difference

A_RIGHT, B_RIGHT = (28, 22, 25), (22, 23, 18)  # correct answers of 40, per seed: the seeds disagree
THREE_A = {s: accuracy(outcomes(40, right, offset=s)) for s, right in enumerate(A_RIGHT)}
THREE_B = {s: accuracy(outcomes(40, right, offset=s + 5)) for s, right in enumerate(B_RIGHT)}


def width(comparison) -> float:
    return comparison.ci[1] - comparison.ci[0]


def test_hierarchical_bootstrap_on_three_seeds_is_pinned_and_wider_than_examples_only():
    tables = st.align({"a": THREE_A, "b": THREE_B}, "accuracy")
    multi = st.multi_bootstrap(tables["a"], tables["b"], st.metric_kind("accuracy"), resamples=2000, seed=0)
    # seed scores a: 0.700 0.550 0.625, b: 0.550 0.575 0.450 -> differences 0.150 -0.025 0.175, mean 0.100
    assert multi.diff == pytest.approx(0.1)
    assert multi.p == pytest.approx(0.222889, abs=1e-6)  # 2 (1 + b) / 2001 with b = 222
    assert multi.ci == pytest.approx((-0.066667, 0.241667), abs=1e-6)
    assert "paired seeds" in multi.test and multi.seed_variance
    one_seed = st.compare({0: THREE_A[0]}, {0: THREE_B[0]}, "accuracy", resamples=2000)
    assert one_seed.diff == pytest.approx(0.15) and one_seed.ci == pytest.approx((0.05, 0.275), abs=1e-6)
    assert not one_seed.seed_variance and st.ONE_SEED_NOTE in one_seed.test
    assert width(multi) > width(one_seed) * 1.3


def test_crossed_test_on_three_seeds_is_pinned_and_wider_still():
    crossed = st.compare(THREE_A, THREE_B, "accuracy")  # auto: 3 shared seeds -> crossed seeds × examples
    assert crossed.test.startswith("seeds × examples t-test, paired seeds") and crossed.df == 2
    # seeds' part: sd of (0.150, -0.025, 0.175) = 0.108972, / sqrt 3 = 0.062915; documents add 0.0015545 to SE²
    t_only = st.compare(THREE_A, THREE_B, "accuracy", test="t")
    assert t_only.se == pytest.approx(0.062915, abs=1e-6)
    assert crossed.se**2 - t_only.se**2 == pytest.approx(0.0015545, abs=1e-6)
    assert crossed.p == pytest.approx(0.310355, abs=1e-6)
    assert crossed.ci == pytest.approx((-0.219465, 0.419465), abs=1e-6)
    assert crossed.mde == pytest.approx((4.302653 + 1.060660) * crossed.se, rel=1e-5)
    tables = st.align({"a": THREE_A, "b": THREE_B}, "accuracy")
    multi = st.multi_bootstrap(tables["a"], tables["b"], st.metric_kind("accuracy"), resamples=2000, seed=0)
    assert width(crossed) > 2 * width(multi)  # t with 2 df where the bootstrap has normal tails


def test_unpaired_seeds_use_welch():
    shifted = {seed + 10: values for seed, values in THREE_B.items()}
    result = st.compare(THREE_A, shifted, "accuracy")
    assert "unpaired seeds" in result.test and 2 <= result.df <= 4
    assert result.diff == pytest.approx(0.1)


def test_sign_flip_is_exact_and_refused_below_the_seeds_it_needs():
    assert st.sign_flip_p([0.01, 0.02, 0.03, 0.04, 0.05]) == 0.0625  # 2 of 32 patterns: 2 / 2^5
    assert st.sign_flip_p([1.0, 2, 3, 4, 5, 6]) == 0.03125
    # (1, -2, 3), sum 2: the 8 signed sums are ±6, ±4, ±2, 0, 0, and 6 of them have |sum| ≥ 2
    assert st.sign_flip_p([1.0, -2.0, 3.0]) == 0.75
    assert st.min_seeds_sign_flip(0.05) == 6 and st.min_seeds_sign_flip(0.0625) == 5
    five = {seed: 0.6 + 0.01 * seed for seed in range(5)}
    with pytest.raises(UserError, match=r"needs at least 6 seeds") as refused:
        st.compare_scores(five, {seed: 0.5 for seed in range(5)}, "sign_flip")
    assert "0.0625" in str(refused.value) and "\n" not in str(refused.value)
    six = st.compare_scores({s: 0.6 + 0.01 * s for s in range(6)}, {s: 0.5 for s in range(6)}, "sign_flip")
    assert six.p == 0.03125 and six.significant()


def test_tests_refuse_what_the_seeds_cannot_support():
    with pytest.raises(UserError, match=f"only from {st.MIN_SEEDS_MULTI_BOOTSTRAP} seeds"):
        st.compare(THREE_A, THREE_B, "accuracy", test="multi_bootstrap")
    with pytest.raises(UserError, match="at least 2 seeds of each variant"):
        st.compare({0: THREE_A[0]}, THREE_B, "accuracy", test="crossed")
    with pytest.raises(UserError, match="unknown test 'cross'.*Did you mean 'crossed'"):
        st.compare(THREE_A, THREE_B, "accuracy", test="cross")


def test_p_is_never_zero():
    always, never = {0: accuracy([1] * 50)}, {0: accuracy([0] * 50)}
    examples = st.compare(always, never, "accuracy", resamples=999)
    assert examples.p == pytest.approx(2 / 1000)  # every resample favours a: b = 0, p = 2 (1 + 0) / (1 + R)
    tables = st.align({"a": always, "b": never}, "accuracy")
    assert st.multi_bootstrap(tables["a"], tables["b"], st.metric_kind("accuracy"), resamples=99).p > 0
    assert st.sign_flip_p([1.0] * 20, resamples=99) == pytest.approx(1 / 100)  # random flips beyond 16 seeds
    identical = st.compare(THREE_A, THREE_A, "accuracy")
    assert identical.p == 1.0 and identical.diff == 0.0


def test_bits_per_byte_difference_is_the_difference_of_corpus_ratios():
    better = {0: dict(enumerate((ll * 0.9, b) for ll, b in zip(LL, BYTES)))}
    worse = {0: dict(enumerate(zip(LL, BYTES)))}
    result = st.compare(better, worse, "bits_per_byte", resamples=2000)
    assert result.diff == pytest.approx(-0.1 * 1062 / (math.log(2) * 800))
    assert result.ci[0] < result.diff < result.ci[1] < 0 and "documents" in result.test


# ---------------------------------------------------------------- multiplicity and marks


def test_holm_and_benjamini_hochberg_on_a_hand_worked_example():
    p = [0.01, 0.04, 0.03, 0.005]
    # Holm: sorted 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04 -> running max 0.06
    assert st.holm(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # BH: sorted 0.005·4/1 = 0.02, 0.01·4/2 = 0.02, 0.03·4/3 = 0.04, 0.04·4/4 = 0.04 -> running min from the top
    assert st.benjamini_hochberg(p) == pytest.approx([0.02, 0.04, 0.04, 0.02])
    adjusted, rule = st.adjust_table({"task1": {("a", "b"): 0.01, ("a", "c"): 0.04}, "task2": {("a", "b"): 0.03,
                                                                                                ("a", "c"): 0.005}})
    assert adjusted["task1"][("a", "c")] == pytest.approx(0.04) and "Benjamini–Hochberg over the 4" in rule


def test_star_needs_significance_after_correction_and_bold_does_not():
    # the README's corpus_cloze: 2/100 against 0/100 is the highest, and nothing more
    row = {"cloze_a": {0: accuracy([1, 1] + [0] * 98)}, "cloze_b": {0: accuracy([0] * 100)}}
    marks = st.compare_row(row, "accuracy", resamples=999).marks
    assert marks.bold == ("cloze_a",) and marks.star is None and marks.dagger == ()
    clear = {name: {s: accuracy(outcomes(200, right + 4 * s, offset=s)) for s in range(3)}
             for name, right in (("strong", 150), ("middle", 100), ("weak", 60))}
    result = st.compare_row(clear, "accuracy")
    assert result.marks.star == "strong" and set(result.marks.dagger) == {"middle", "weak"}
    assert result.marks.family == "Holm over all 3 pairs of 3 variants (family-wise α = 0.05)"
    assert result.n == 200 and result.seeds == {"strong": 3, "middle": 3, "weak": 3}
    versus = st.compare_row(clear, "accuracy", family="vs_reference", reference="middle").marks
    assert versus.star is None and versus.anchor == "middle" and set(versus.dagger) == {"strong", "weak"}
    assert "fixed before the data" in versus.family


def test_each_against_the_observed_best_overstates_and_all_pairs_does_not():
    # six equal variants, each estimate N(0, 1), exact z-tests: marking against the observed best
    # with Holm over its m − 1 comparisons ignores the selection of the best
    from scipy.special import ndtr

    rng = np.random.default_rng(11)
    rows, m = 1000, 6
    names = [f"v{i}" for i in range(m)]
    pairs = [(i, j) for i in range(m) for j in range(i + 1, m)]
    false_all = false_best = 0
    for estimates in rng.normal(0, 1, (rows, m)):
        diffs = np.array([estimates[i] - estimates[j] for i, j in pairs])
        p_values = 2 * ndtr(-np.abs(diffs) / math.sqrt(2))  # two-sided z-test of a difference of two N(0, 1)
        comparisons = {(names[i], names[j]): st.Comparison(names[i], names[j], float(d), (0, 0), float(p), "z", 1,
                                                           (1, 1), False, math.sqrt(2), math.inf, 0)
                       for (i, j), d, p in zip(pairs, diffs, p_values)}
        by_name = dict(zip(names, estimates))
        all_pairs = st.mark_row(by_name, comparisons, True)
        best = st.mark_row(by_name, comparisons, True, family="vs_reference", reference=max(by_name, key=by_name.get))
        false_all += bool(all_pairs.star or all_pairs.dagger)
        false_best += bool(best.star or best.dagger)
    assert false_all / rows <= fpr_bound(rows)
    assert false_best / rows > fpr_bound(rows)  # about 11%


def null_rows(rows: int, seeds: int, n: int, seed_logit_sd: float, seed: int, variants: int | None = None) -> list:
    """Rows of 4-6 variants (or `variants`) equal in expectation: per document a shared difficulty,
    per training run a seed offset on the logit (0.3: seeds differ by about 5 accuracy points), then 0/1 outcomes."""
    rng = np.random.default_rng(seed)
    data = []
    for index in range(rows):
        m = variants or 4 + index % 3
        difficulty = rng.normal(0, 1.5, n)
        offsets = rng.normal(0, seed_logit_sd, (m, seeds, 1))
        right = rng.random((m, seeds, n)) < 1 / (1 + np.exp(-(difficulty + offsets)))  # (m, seeds, n)
        data.append({f"v{v}": {s: accuracy(right[v, s].astype(int).tolist()) for s in range(seeds)}
                     for v in range(m)})
    return data


def marked(marks) -> bool:
    return bool(marks.star or marks.dagger)


def test_null_rows_keep_the_marks_at_their_level_only_after_correction():
    rows = null_rows(300, seeds=3, n=100, seed_logit_sd=0.3, seed=0)
    results = [st.compare_row(row, "accuracy") for row in rows]  # crossed seeds × examples, Holm over all pairs
    corrected = np.mean([marked(r.marks) for r in results])
    assert corrected <= fpr_bound(len(rows))
    # the same tests without correction
    raw = []
    for row, result in zip(rows, results):
        estimates = {variant: _row_mean(per_seed) for variant, per_seed in row.items()}
        raw.append(marked(st.mark_row(estimates, result.comparisons, True,
                                      adjusted={pair: c.p for pair, c in result.comparisons.items()})))
    assert np.mean(raw) > fpr_bound(len(rows)) + 0.05  # about 25%
    # examples-only tests (seeds pooled), corrected, on the 4-variant rows: R = 299 resolves Holm's α/6
    four = [row for row in rows if len(row) == 4]
    examples = np.mean([marked(st.compare_row(row, "accuracy", test="examples", resamples=299).marks) for row in four])
    assert examples > fpr_bound(len(four)) + 0.05  # about 33%: training-seed variance unmeasured


def test_one_seed_rows_without_seed_variance_hold_their_level():
    # where the test set is the only noise, the examples bootstrap with p = 2 (1 + b) / (1 + R) and Holm hold α
    rows = null_rows(200, seeds=1, n=100, seed_logit_sd=0.0, seed=1, variants=4)
    results = [st.compare_row(row, "accuracy", resamples=299) for row in rows]
    assert all(st.ONE_SEED_NOTE in c.test for r in results for c in r.comparisons.values())
    assert np.mean([marked(r.marks) for r in results]) <= fpr_bound(len(rows))  # about 4%


def _row_mean(per_seed: dict) -> float:
    return float(np.mean([np.mean(list(values.values())) for values in per_seed.values()]))


def test_crossed_test_holds_its_level_on_bits_per_byte_where_the_multi_bootstrap_does_not():
    # seed sd 0.008 bits/byte, documents shared: the seed variance dominates, as in the issue
    rng = np.random.default_rng(7)
    pairs, n, seeds = 200, 50, 3
    size = rng.integers(200, 2000, n).astype(float)
    kind = st.metric_kind("bits_per_byte")
    rejected = {"crossed": 0, "multi_bootstrap": 0, "one_seed": 0}
    for _ in range(pairs):
        level = 1.2 + rng.normal(0, 0.15, n)

        def runs():
            offsets = rng.normal(0, 0.008, (seeds, 1)) + rng.normal(0, 0.01, (seeds, n))
            loglik = -math.log(2) * size * (level + offsets)  # (seeds, n)
            return {s: dict(enumerate(zip(loglik[s].tolist(), size.tolist()))) for s in range(seeds)}

        a, b = runs(), runs()
        rejected["crossed"] += st.compare(a, b, kind).p <= ALPHA
        tables = st.align({"a": a, "b": b}, kind)
        rejected["multi_bootstrap"] += st.multi_bootstrap(tables["a"], tables["b"], kind, resamples=199).p <= ALPHA
        rejected["one_seed"] += st.compare({0: a[0]}, {0: b[0]}, kind, resamples=199).p <= ALPHA
    assert rejected["crossed"] / pairs <= fpr_bound(pairs)
    assert rejected["multi_bootstrap"] / pairs > fpr_bound(pairs) + 0.05  # about 24% at 3 seeds
    assert rejected["one_seed"] / pairs > 0.5  # the 35-60%: one seed measures the test set only


# ---------------------------------------------------------------- chance and power


def test_a_row_where_no_variant_beats_chance_is_flagged():
    below = {"next_a": {0: accuracy(outcomes(100, 24))}, "next_b": {0: accuracy(outcomes(100, 20))}}
    flagged = st.beats_chance(below, 0.25, "acc")
    assert not flagged.beats_chance and flagged.best == "next_a" and "Holm over 2 variants" in flagged.test
    # one seed, 15/20 at chance 0.5: P(X ≥ 15) = (15504 + 4845 + 1140 + 190 + 20 + 1) / 2^20 = 0.020695
    above = st.beats_chance({"x": {0: accuracy(outcomes(20, 15))}}, 0.5, "accuracy")
    assert above.p == pytest.approx(21700 / 2**20) and above.beats_chance
    seeds = st.beats_chance({"x": THREE_A}, 0.25, "accuracy")
    assert seeds.beats_chance and "seeds × examples" in seeds.test


def test_minimum_detectable_difference_formula():
    # (1.959964 + 0.841621) · sqrt(2 · 0.25 / 100) = 2.801585 · 0.070711 = 0.198102
    assert st.accuracy_mde(100, 1, 0.5) == pytest.approx(0.198102, abs=1e-6)
    # McNemar: 20% discordant -> SE sqrt(0.2 / 100) = 0.044721 -> 0.125291
    assert st.accuracy_mde(100, 1, 0.5, discordance=0.2) == pytest.approx(0.125291, abs=1e-6)
    # 3 seeds, seed sd 0.03: SE² = 0.005 + 0.0009 · 2/3, SE = 0.074833;
    # t(2 df): 4.302653 + 1.060660 = 5.363313 -> 0.401354
    assert st.accuracy_mde(100, 3, 0.5, seed_sd=0.03) == pytest.approx(0.401354, abs=1e-6)
    one_seed = st.compare({0: THREE_A[0]}, {0: THREE_B[0]}, "accuracy", resamples=2000)
    assert one_seed.mde == pytest.approx(2.801585 * one_seed.se, rel=1e-6)


# ---------------------------------------------------------------- bad input


def test_rows_scored_on_different_examples_are_named():
    assert st.mismatched_docs({"a": THREE_A, "b": THREE_B}) is None
    short = {0: accuracy(outcomes(30, 20))}
    message = st.mismatched_docs({"a": THREE_A, "b": short})
    assert message == "the variants were scored on different examples: a seed 0 (40) vs b seed 0 (30) doc_ids"
    assert st.align({"a": THREE_A, "b": short}, "accuracy")["a"].n == 30  # align pairs on the shared ones


@pytest.mark.parametrize(("row", "kind", "message"), [
    ({"a": {}}, "accuracy", r"variant 'a' has no seeds \(seeds: \[\]\)"),
    ({"a": {"0": accuracy([1])}}, "accuracy", r"seed '0', which is not an integer"),
    ({"a": {0: accuracy([1, 0.5])}}, "accuracy", r"doc_id 1: accuracy outcomes are 0 or 1, got 0.5"),
    ({"a": {0: accuracy([1.5])}}, "bits_per_byte", r"bits_per_byte needs \(loglikelihood, weight\) pairs"),
    ({"a": {0: {0: 1}}, "b": {0: {1: 1}}}, "accuracy", r"share no doc_id"),
    ({"a": {0: {0: 1}}}, "acc_nrom", r"unknown metric kind 'acc_nrom'.*Did you mean 'acc_norm'"),
])
def test_bad_outcomes_are_one_line(row, kind, message):
    with pytest.raises(UserError, match=message) as error:
        st.align(row, kind)
    assert "\n" not in str(error.value)


def test_seeds_that_agree_by_coincidence_do_not_make_the_crossed_test_certain():
    # a beats b on exactly one document at every seed, a different one each time: the seeds' differences
    # agree (0.01, 0.01, 0.01), so their spread alone is 0 and t would be infinite (p = 3e-307 before)
    a = {seed: accuracy(outcomes(100, 1, offset=seed)) for seed in range(3)}
    b = {seed: accuracy([0] * 100) for seed in range(3)}

    result = st.compare(a, b, "accuracy")

    assert result.test.startswith("seeds × examples t-test") and result.diff == pytest.approx(0.01)
    assert result.se > 0 and result.p > ALPHA  # one document a seed is no evidence
    assert st.cell_interval(a, "accuracy").low < 0.01 < st.cell_interval(a, "accuracy").high
