"""A ladder's report (`arches report results/<experiment>` on its rung folders): each family's
curve fitted over compute, crossings where known curves cross and "not within range" where they
do not, crossings withheld for curves that cannot show one, rank agreement, and bad ladders in
one line. The rung folders are written as training and evaluation record them, along known curves."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from fixtures.run_folders import make_run

from arches.errors import UserError
from harness import report, store

SIZES = ("ladder_xs", "ladder_s", "ladder_m")
FAMILIES = {"gpt": "decoder", "t5": "encoder_decoder", "bert": "encoder"}


def power_law(E, A, alpha):
    return lambda c: E + A * c ** -alpha


def logistic(top, k, midpoint, chance=0.5):
    return lambda c: chance + (top - chance) / (1 + math.exp(-k * (math.log(c) - math.log(midpoint))))


# gpt, 1 + 200·C^−0.2, and t5, 1.5 + A·C^−0.35, meet at 3e9 FLOPs, between the first two rungs
# (1e9, 1e10, 1e11): gpt is lower (better) below it, t5 above it
MEET = 3e9
GPT_BPB = power_law(1.0, 200.0, 0.2)
T5_BPB = power_law(1.5, (GPT_BPB(MEET) - 1.5) * MEET**0.35, 0.35)
PARALLEL_T5_BPB = power_law(1.5, 200.0, 0.2)  # always 0.5 above gpt: they never cross


def write_ladder(folder, bpb: dict, pairs: dict, seeds=(0, 1, 2), rungs=SIZES, noise=1e-3, rng_seed=0):
    """One run folder per variant x rung x seed, at compute 1e9, 1e10, 1e11, ...: bits/byte and the
    minimal pairs' accuracy from the given curves, with noise (relative for bits/byte)."""
    rng = np.random.default_rng(rng_seed)
    for rung, size in enumerate(rungs):
        flops = 1e9 * 10**rung
        for variant in sorted(set(bpb) | set(pairs)):
            for seed in seeds:
                scores = {}
                if variant in bpb:
                    scores[("corpus_ppl", 0)] = {"bits_per_byte": bpb[variant](flops) * math.exp(rng.normal(0, noise))}
                if variant in pairs:
                    accuracy = min(1.0, max(0.0, pairs[variant](flops) + rng.normal(0, 10 * noise)))
                    scores[("corpus_pairs", 0)] = {"acc": accuracy, "chance": 0.5, "subtasks": ["pairs_swap"]}
                make_run(folder / size, f"{variant}-seed{seed}", variant=variant, seed=seed,
                         family=FAMILIES[variant], experiment="ladder", size=size, ladder_rung=rung,
                         train_flops=flops, scores=scores)


def test_the_report_fits_each_family_and_finds_where_known_curves_cross(tmp_path):
    folder = tmp_path / "ladder"
    write_ladder(folder, {"gpt": GPT_BPB, "t5": T5_BPB, "bert": GPT_BPB},
                 {"gpt": logistic(0.9, 1.0, 1e10), "t5": logistic(0.8, 1.0, 3e9)})

    path = report.write_report(folder)

    assert path == folder / "report.md"
    text = path.read_text()
    assert "## Scaling" in text and (folder / "report.html").exists() and (folder / "scaling.png").exists()
    points = pd.read_csv(folder / "scaling_points.csv")
    # the encoder's bits/byte are pseudo-log-likelihoods: not on the likelihood axis
    assert set(points.loc[points["metric"] == "bits_per_byte", "variant"]) == {"gpt", "t5"}
    assert set(points.loc[points["metric"] == "minimal_pairs", "variant"]) == {"gpt", "t5"}
    fits = pd.read_csv(folder / "scaling_fits.csv").set_index(["metric", "variant", "parameter"])
    gpt_curve = [GPT_BPB(c) for c in (1e9, 1e10, 1e11)]
    fitted = [fits.loc[("bits_per_byte", "gpt", name), "estimate"] for name in ("E", "A", "alpha")]
    assert np.allclose([power_law(*fitted)(c) for c in (1e9, 1e10, 1e11)], gpt_curve, rtol=2e-3)
    for (_, _, _), row in fits.iterrows():
        assert row["low"] <= row["high"]

    crossings = pd.read_csv(folder / "crossovers.csv").set_index(["metric", "a", "b"])
    bpb = crossings.loc[("bits_per_byte", "gpt", "t5")]
    assert bpb["status"] == "within range"
    assert MEET / 1.5 < bpb["estimate"] < MEET * 1.5
    assert bpb["low"] <= MEET <= bpb["high"]
    bpb_reading = text.split("**held-out bits/byte.**")[1].split("**minimal-pair accuracy.**")[0]
    assert "The fitted curves of gpt and t5 cross at" in bpb_reading and "t5 ahead above it" in bpb_reading
    index = pd.read_parquet(folder / "index.parquet")
    assert sorted(index["ladder_rung"].dropna().astype(int).unique()) == [0, 1, 2]


def test_curves_that_do_not_cross_are_not_within_range_with_no_point(tmp_path):
    folder = tmp_path / "ladder"
    write_ladder(folder, {"gpt": GPT_BPB, "t5": PARALLEL_T5_BPB}, {})

    text = report.write_report(folder).read_text()

    crossing = pd.read_csv(folder / "crossovers.csv").iloc[0]
    assert crossing["status"] == "not within range" and pd.isna(crossing["estimate"])
    assert "do not cross within a decade of the ladder: not within range" in text
    assert "| bits/byte ↓ | gpt – t5 | not within range |" in text.replace("held-out ", "")
    assert "gpt leads at every rung" in text


def test_an_accuracy_at_chance_gets_no_crossing(tmp_path):
    folder = tmp_path / "ladder"
    write_ladder(folder, {}, {"gpt": logistic(0.9, 1.0, 1e10), "bert": lambda c: 0.5}, noise=0)

    text = report.write_report(folder).read_text()

    assert "bert's curve is flat at chance" in text
    assert "bert stays at chance (a flat fit): its place in each order is noise." in text
    assert "| minimal-pair accuracy ↑ | gpt – bert | not identified |" in text or \
           "| minimal-pair accuracy ↑ | bert – gpt | not identified |" in text
    assert pd.read_csv(folder / "crossovers.csv").empty  # nothing estimated, so nothing claimed


def test_the_order_flips_and_rank_agreement_says_from_where_it_is_decided(tmp_path):
    folder = tmp_path / "ladder"
    # gpt is better (lower) at the smallest rung, t5 from the middle one up
    write_ladder(folder, {"gpt": GPT_BPB, "t5": T5_BPB}, {})

    text = report.write_report(folder).read_text()

    agreement = pd.read_csv(folder / "rank_agreement.csv")
    assert agreement["decided_from"].unique().tolist() == ["ladder_s"]
    assert agreement.set_index("rung").loc["ladder_xs", "tau"] == pytest.approx(-1.0)
    assert "The order flips: gpt–t5 between ladder_xs and ladder_s." in text
    assert "The order at ladder_m is already the order from ladder_s up" in text


def test_two_rungs_are_reported_but_not_fitted(tmp_path):
    folder = tmp_path / "ladder"
    write_ladder(folder, {"gpt": GPT_BPB, "t5": T5_BPB}, {}, rungs=SIZES[:2])

    text = report.write_report(folder).read_text()

    assert "a scaling fit needs at least 3 rungs (distinct sizes), got 2" in text
    assert pd.read_csv(folder / "scaling_fits.csv").empty
    assert "| held-out bits/byte ↓ | gpt | not fitted |" in text


def test_a_rung_folder_with_two_rungs_is_one_line_and_writes_nothing(tmp_path):
    folder = tmp_path / "ladder"
    write_ladder(folder, {"gpt": GPT_BPB}, {})
    make_run(folder / "ladder_s", "stray-seed0", variant="stray", family="decoder", experiment="ladder",
             size="ladder_s", ladder_rung=2, scores={})

    with pytest.raises(UserError, match=r"holds runs of ladder rungs \[1, 2\]; a rung folder holds one rung"):
        report.write_report(folder)
    assert not (folder / "report.md").exists() and not (folder / "scaling_points.csv").exists()

    cli = subprocess.run([sys.executable, "-m", "arches.cli", "report", str(folder)], capture_output=True, text=True,
                         timeout=120)
    assert cli.returncode == 2
    lines = cli.stderr.strip().splitlines()
    assert len(lines) == 1 and "a rung folder holds one rung" in lines[0]


def test_a_ladder_trained_with_two_tokenizers_is_refused(tmp_path):
    folder = tmp_path / "ladder"
    write_ladder(folder, {"gpt": GPT_BPB}, {})
    make_run(folder / "ladder_m", "gpt-seed9", variant="gpt", seed=9, family="decoder", experiment="ladder",
             size="ladder_m", ladder_rung=2, tokenizer_hash="hash-bbbbbbbbbbbb", scores={})

    with pytest.raises(UserError, match="tokenizer"):
        report.write_report(folder)
    assert not (folder / "report.md").exists()


def test_a_folder_of_runs_is_still_an_experiment_report(tmp_path):
    write_ladder(tmp_path / "ladder", {"gpt": GPT_BPB}, {})

    rung_report = report.write_report(tmp_path / "ladder" / "ladder_s").read_text()

    assert "## Scores" in rung_report and "## Scaling" not in rung_report
    assert store.load_runs(tmp_path / "ladder" / "ladder_s")[0]["ladder_rung"] == 1
