"""The report's plots and seed values (issue 16, items 1 and 8) on fixture runs with 3 seeds."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fixtures.run_folders import make_run, outcomes, write_baseline
from matplotlib.container import ErrorbarContainer
from matplotlib.figure import Figure

from harness import store
from harness.report import Comparer, score_table, write_report
from harness.report.plots import (
    _means_with_intervals,
    colors_for,
    plot_held_out_bpb,
    plot_score_vs_shots,
    plot_throughput,
)
from harness.report.plots_differences import difference_rows, plot_differences
from harness.report.seeds import seed_values
from harness.statistics import compare

PNG = b"\x89PNG\r\n\x1a\n"
T_975_DF2 = 4.302652729911275  # Student's t, 97.5% quantile, 2 degrees of freedom (from tables)
SEEDS = (0, 1, 2)


def _bpb_pairs(n: int, bits: float) -> list[list[float]]:
    """n documents of 10 bytes whose Σ loglik / Σ bytes gives `bits` bits/byte."""
    return [[-bits * 10 * math.log(2), 10.0] for _ in range(n)]


def _three_seeds(folder: Path) -> Path:
    """gpt and opt (decoders) and bert (encoder, PLL) at 3 seeds: piqa at 0 and 5 shots, corpus_ppl."""
    right = {"gpt": 60, "opt": 50, "bert": 45}
    bits = {"gpt": 1.50, "opt": 1.60, "bert": 1.40}
    for variant, family in (("gpt", "decoder"), ("opt", "decoder"), ("bert", "encoder")):
        for seed in SEEDS:
            piqa = {shots: outcomes(100, right[variant] + shots + seed, offset=seed) for shots in (0, 5)}
            ppl = _bpb_pairs(20, bits[variant] + 0.01 * seed)
            make_run(folder, f"{variant}-s{seed}", variant=variant, seed=seed, family=family,
                     tokens_per_s=3000.0 + 100 * seed, tokens_seen=1_000_000 * (seed + 1), train_flops=7.4e12,
                     scores={("piqa", 0): {"acc": float(np.mean(piqa[0])), "chance": 0.5},
                             ("piqa", 5): {"acc": float(np.mean(piqa[5])), "chance": 0.5},
                             ("corpus_ppl", 0): {"bits_per_byte": bits[variant] + 0.01 * seed}},
                     samples={("piqa", 0): {"acc": piqa[0]}, ("piqa", 5): {"acc": piqa[5]},
                              ("corpus_ppl", 0): {"bits_per_byte": ppl}})
    write_baseline(folder, bits_per_byte=4.25)
    return folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return _three_seeds(tmp_path_factory.mktemp("three_seeds"))


@pytest.fixture(scope="module")
def loaded(folder):
    runs = store.load_runs(folder)
    long = store.scores(folder, runs)
    comparer = Comparer()
    return runs, long, score_table(long, comparer), comparer, colors_for(sorted({r["variant"] for r in runs}))


# ---------------------------------------------------------------- every plot, and None with nothing to show


def test_each_plot_draws_the_three_seeds(loaded):
    runs, long, table, comparer, colors = loaded
    pngs = [plot_held_out_bpb(runs, None, colors), plot_differences(long, table, colors, comparer),
            plot_score_vs_shots(table, colors, seed_values(long)), plot_throughput(runs, colors)]
    assert all(png is not None and png.startswith(PNG) for png in pngs)


def test_held_out_plot_leaves_out_the_pseudo_likelihood(loaded):
    runs, _, _, _, colors = loaded
    assert plot_held_out_bpb([r for r in runs if r["family"] == "encoder"], None, colors) is None  # PLL only
    assert plot_held_out_bpb([{**r, "evals": {}} for r in runs], None, colors) is None  # no corpus_ppl
    no_flops = [{**r, "train_flops": None} for r in runs]  # one panel says so; the other still draws
    assert plot_held_out_bpb(no_flops, None, colors).startswith(PNG)


def test_plots_with_nothing_to_show_are_none(loaded):
    runs, long, table, comparer, colors = loaded
    zero_shot = table[table["shots"] == 0]
    assert plot_score_vs_shots(zero_shot, colors, seed_values(long)) is None  # one shot count per task
    one_variant = table[table["variant"] == "gpt"]
    assert plot_differences(long, one_variant, colors, comparer) is None  # nothing to compare
    pll_only = table[table["task"] == "corpus_ppl"]  # gpt and opt are ranked there, bert is not
    assert plot_differences(long, pll_only[pll_only["variant"] != "opt"], colors, comparer) is None
    assert plot_differences(long, table.iloc[0:0], colors, comparer) is None
    assert plot_throughput([{**r, "tokens_per_s": None} for r in runs], colors) is None


def test_a_missing_interval_is_no_bar():
    axis = Figure().subplots()
    missing = _means_with_intervals(axis, [0, 1, 2], [0.5, 0.6, 0.7], [0.4, math.nan, 0.6], [0.6, math.nan, 0.8], "red")
    assert missing
    assert sum(isinstance(c, ErrorbarContainer) for c in axis.containers) == 2  # the NaN one draws no bar
    assert not _means_with_intervals(Figure().subplots(), [0], [0.5], [0.4], [0.6], "red")


def test_one_seed_without_an_interval_still_draws(tmp_path):
    for shots in (0, 5):  # no samples file and no n: the table has no interval for these cells
        make_run(tmp_path, f"gpt-{shots}", variant="gpt", seed=shots, scores={("piqa", shots): {"acc": 0.6}})
    long = store.scores(tmp_path)
    table = score_table(long)
    assert table["low"].isna().all()
    assert plot_score_vs_shots(table, colors_for(["gpt"]), seed_values(long)).startswith(PNG)


# ---------------------------------------------------------------- the differences' numbers


def _seeds_of(values: dict[int, list]) -> dict[int, dict[int, object]]:
    return {seed: dict(enumerate(per_doc)) for seed, per_doc in values.items()}


def test_identical_outcomes_differ_by_zero():
    same = _seeds_of({s: outcomes(50, 20 + s, offset=s) for s in SEEDS})
    means = {"a": 0.42, "b": 0.42}
    best, other = difference_rows(means, "a", {"a": same, "b": same}, "acc", True)
    assert best.best and best.diff == 0.0 and best.low is None
    assert (other.variant, other.diff, other.low, other.high) == ("b", 0.0, 0.0, 0.0)
    assert other.seed_diffs == (0.0, 0.0, 0.0)


def test_seed_differences_give_the_t_interval_by_hand():
    # every document differs by the seed's own amount (0.1, 0.2, 0.3): the documents add no
    # variance, so the interval is the paired t over 3 seeds: -0.2 ± t(0.975, 2) · 0.1 / √3
    best = _seeds_of({s: [0.5] * 10 for s in SEEDS})
    worse = _seeds_of({s: [0.5 - d] * 10 for s, d in zip(SEEDS, (0.1, 0.2, 0.3))})
    (_, row) = difference_rows({"best": 0.5, "worse": 0.3}, "best", {"best": best, "worse": worse}, "acc", True)
    half = T_975_DF2 * 0.1 / math.sqrt(3)
    assert row.diff == pytest.approx(-0.2)
    assert (row.low, row.high) == pytest.approx((-0.2 - half, -0.2 + half))
    assert row.seed_diffs == pytest.approx((-0.1, -0.2, -0.3))
    assert row.test.startswith("seeds × examples t-test, paired seeds")


def test_one_seed_difference_is_the_statistics_compare():
    a, b = {0: dict(enumerate(outcomes(100, 40)))}, {0: dict(enumerate(outcomes(100, 65, offset=7)))}
    rows = difference_rows({"a": 0.40, "b": 0.65}, "b", {"a": a, "b": b}, "acc", True)
    expected = compare(a, b, "accuracy", names=("a", "b"))
    assert (rows[0].diff, (rows[0].low, rows[0].high)) == (expected.diff, expected.ci)
    assert rows[0].diff == pytest.approx(-0.25) and rows[0].high < 0
    assert rows[0].seed_diffs == ()  # one seed: the mean is the only value


def test_without_outcomes_the_difference_has_no_interval():
    rows = difference_rows({"a": 1.5, "b": 1.6}, "a", None, "bits_per_byte", False)
    assert [(r.variant, r.best, r.low, r.high) for r in rows] == [("a", True, None, None), ("b", False, None, None)]
    assert rows[1].diff == pytest.approx(0.1)


# ---------------------------------------------------------------- seeds.csv


def test_seeds_csv_has_one_row_per_seed(folder):
    write_report(folder)
    seeds = pd.read_csv(folder / "seeds.csv")
    for name in ("held_out_bpb.png", "differences.png", "score_vs_shots.png"):
        assert (folder / name).read_bytes().startswith(PNG), name

    # 3 variants × 3 seeds × (piqa 0 + piqa 5 + corpus_ppl)
    assert len(seeds) == 27 and not seeds.duplicated(["task", "shots", "metric", "variant", "seed"]).any()
    piqa = seeds[(seeds["task"] == "piqa") & (seeds["shots"] == 5) & (seeds["variant"] == "gpt")]
    assert piqa["seed"].tolist() == [0, 1, 2]
    assert piqa["value"].tolist() == pytest.approx([0.65, 0.66, 0.67])  # 60 + 5 shots + seed right of 100
    assert piqa["n"].tolist() == [100, 100, 100] and piqa["primary"].all()
    bpb = seeds[(seeds["task"] == "corpus_ppl") & (seeds["variant"] == "opt")]
    assert bpb["value"].tolist() == pytest.approx([1.60, 1.61, 1.62]) and bpb["n"].tolist() == [20, 20, 20]
    assert list(seeds.columns[:6]) == ["task", "shots", "metric", "primary", "variant", "seed"]
