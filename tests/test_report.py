"""The report on fixture run folders with known numbers: table values, CIs, significance marks, findings."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fixtures.run_folders import make_run, outcomes, write_baseline

from arches.errors import UserError
from harness import report, store
from harness.report import marks as report_marks

T_975_DF2 = 4.302652729911275  # Student's t, 97.5% quantile, 2 degrees of freedom (from tables)


def _rows(table: pd.DataFrame, **where) -> pd.DataFrame:
    for column, value in where.items():
        table = table[table[column] == value]
    return table


# ---------------------------------------------------------------- formatting


def test_human_formatting():
    assert report.si(1_234_567) == "1.23M"
    assert report.si(999_999) == "1.00M"
    assert report.si(7.4e12) == "7.40T"
    assert report.si(512) == "512"
    assert report.sig3(0.5) == "0.500"
    assert report.sig3(3.2145) == "3.21"
    assert report.duration(125) == "2.08 min"
    assert report_marks.cell_text(0.61234, 0.5912, 0.6311, False, report.sig3) == "0.612 [0.591, 0.631]"
    assert report_marks.cell_text(0.0, 0.0, 0.037, True, report.sig3) == "**0.00** [0.00, 0.04]"  # never ± 0.00
    assert report_marks.cell_text(1.5, math.nan, math.nan, False, report.sig3) == "1.50"


# ---------------------------------------------------------------- the runs table


def _families_folder(folder: Path) -> Path:
    make_run(folder, "gpt-s0", variant="gpt",
             scores={("corpus_ppl", 0): {"bits_per_byte": 1.5}, ("hyperbaton", 0): {"acc": 0.612, "acc_stderr": 0.0105,
                                                                                  "chance": 0.5}})
    make_run(folder, "bert-s0", variant="bert", family="encoder", objective="mlm", final_val_loss=2.9,
             knobs={"position": "learned", "norm": "rmsnorm"},
             scores={("corpus_ppl", 0): {"bits_per_byte": 1.52}, ("hyperbaton", 0): {"acc": 0.55, "acc_stderr": 0.011,
                                                                                   "chance": 0.5}})
    make_run(folder, "t5-s0", variant="t5", family="encoder_decoder", objective="span_corruption",
             status="failed", error="out of memory in t5-s0; halve train.micro_batch_size")
    write_baseline(folder, val_loss_nats=7.1, bits_per_byte=4.25)
    return folder


def test_runs_table_values(tmp_path):
    runs = store.load_runs(_families_folder(tmp_path))
    table = report.runs_display(runs, store.load_baseline(tmp_path)).set_index("variant")

    gpt = table.loc["gpt"]
    assert (gpt["params"], gpt["non-emb. params"], gpt["FLOPs/token"]) == ("1.23M", "456k", "7.40M")
    assert (gpt["tokens seen"], gpt["loss tokens seen"], gpt["train FLOPs"]) == ("1.00M", "150k", "7.40T")
    assert (gpt["wall time"], gpt["tokens/s"]) == ("2.08 min", "3.41k")
    assert gpt["val loss (objective)"] == "3.21 (lm)"
    assert gpt["held-out bits/byte"] == "1.50"
    assert "knobs" not in table.columns  # they have their own table (harness.report.variants.knobs_display)
    bert = table.loc["bert"]
    assert bert["val loss (objective)"] == "2.90 (mlm)"
    assert bert["held-out bits/byte"] == "1.52 (PLL)"
    failed = table.loc["t5"]
    assert failed["status"] == "failed"
    assert failed["error"] == "out of memory in t5-s0; halve train.micro_batch_size"
    assert failed["params"] == "1.23M" and failed["val loss (objective)"] == report.MISSING
    unigram = table.loc["unigram baseline"]
    assert unigram["val loss (objective)"] == "7.10 (unigram)"
    assert unigram["held-out bits/byte"] == "4.25"


def test_runs_table_flops_ratios_of_matched_variants(tmp_path):
    folder = _families_folder(tmp_path)  # every run records 7.40M FLOPs/token
    runs = store.load_runs(folder)
    table = report.runs_display(runs, store.load_baseline(folder)).set_index("variant")

    assert table["FLOPs/token vs first"].tolist() == ["1.00×", "1.00×", "1.00×", report.MISSING]
    matched = "FLOPs-matched: every variant's FLOPs/token is within 10% of the first variant's (bert)."
    assert report.flops_matching(runs) == matched
    assert matched in report.write_report(folder).read_text()


def test_runs_table_flags_a_variant_more_than_10_percent_apart_in_flops(tmp_path):
    folder = _families_folder(tmp_path)
    make_run(folder, "glm-s0", variant="glm", family="glm", objective="blank_infilling", flops_per_token=7.4e6 * 1.2)
    make_run(folder, "gptj-s0", variant="gptj", flops_per_token=7.4e6 * 0.95)  # within 10%: not flagged
    runs = store.load_runs(folder)
    table = report.runs_display(runs, None).set_index("variant")

    assert (table.loc["glm", "FLOPs/token vs first"], table.loc["gptj", "FLOPs/token vs first"]) == ("1.20×", "0.95×")
    flagged = "Not FLOPs-matched: glm (1.20×) more than 10% apart from the first variant (bert) in FLOPs/token."
    assert report.flops_matching(runs) == flagged
    assert flagged in report.write_report(folder).read_text()


def test_runs_table_shows_each_runs_scoring_format(tmp_path):
    scores = {("hyperbaton", 0): {"acc": 0.5, "chance": 0.5}}
    make_run(tmp_path, "cd_mlm-s0", variant="cd_mlm", objective="span_corruption", scoring_format="sentinel",
             scores=scores)
    make_run(tmp_path, "ed_mlm-s0", variant="ed_mlm", family="encoder_decoder", objective="span_corruption",
             scoring_format="t5_sentinel", scores=scores)
    make_run(tmp_path, "unscored-s0", variant="unscored")
    table = report.runs_display(store.load_runs(tmp_path), None).set_index("variant")

    formats = {"cd_mlm": "sentinel", "ed_mlm": "t5_sentinel", "unscored": report.MISSING}
    assert table["scoring format"].to_dict() == formats
    rescored = {"evals": {"hyperbaton|0": {"format": "t5_sentinel"}, "hyperbaton|5": {"format": "plain"}}}
    assert report.scoring_formats(rescored) == "plain, t5_sentinel"


def test_write_report_writes_every_file(tmp_path):
    folder = _families_folder(tmp_path)

    path = report.write_report(folder)

    assert path == folder / "report.md"
    for name in ("report.md", "report.html", "runs.csv", "scores.csv", "index.parquet", "training_curves.png",
                 "score_vs_flops.png", "throughput.png"):
        assert (folder / name).stat().st_size > 0, name
    assert not list(folder.glob(".*.tmp"))
    markdown = path.read_text()
    assert re.search(r"^\| t5 \| 0 \|.*\| failed \|", markdown, re.M) and "out of memory in t5-s0" in markdown
    assert "| unigram baseline |" in markdown
    assert "Findings" not in markdown  # only for wang2022
    runs_csv = pd.read_csv(folder / "runs.csv")
    assert runs_csv["variant"].tolist() == ["bert", "gpt", "t5", "unigram baseline"]
    assert runs_csv.set_index("variant").loc["unigram baseline", "final_val_loss"] == 7.1


def test_html_is_self_contained(tmp_path):
    report.write_report(_families_folder(tmp_path))
    page = (tmp_path / "report.html").read_text()

    assert "data:image/png;base64," in page
    references = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)""", page, flags=re.IGNORECASE)
    assert references and all(ref.startswith("data:image/png;base64,") for ref in references)
    assert "<link" not in page and "<script" not in page and "@import" not in page
    assert "<table" in page


# ---------------------------------------------------------------- the scores table


def test_ci_over_seeds_is_a_t_interval_by_hand(tmp_path):
    for seed, (a, b) in enumerate([(0.50, 0.40), (0.55, 0.45), (0.60, 0.50)]):
        make_run(tmp_path, f"gpt-s{seed}", variant="gpt", seed=seed, scores={("piqa", 0): {"acc": a, "chance": 0.5}})
        make_run(tmp_path, f"opt-s{seed}", variant="opt", seed=seed, scores={("piqa", 0): {"acc": b, "chance": 0.5}})

    table = report.score_table(store.scores(tmp_path))

    gpt = _rows(table, variant="gpt").iloc[0]
    assert gpt["mean"] == pytest.approx(0.55)
    # sd = 0.05, sem = 0.05 / sqrt(3), half-width = t(0.975, df=2) * sem = 0.124
    assert gpt["high"] - gpt["mean"] == pytest.approx(T_975_DF2 * 0.05 / math.sqrt(3), rel=1e-9)
    assert gpt["interval"] == report_marks.SEEDS_T
    shown = report.score_display(table, ["gpt", "opt"]).iloc[0]
    assert shown["gpt"] == "**0.550** ± 0.050 [0.426, 0.674]"  # mean ± sd over seeds [interval]; bold: the highest
    assert shown["chance"] == "0.500"
    opt = _rows(table, variant="opt").iloc[0]
    # every seed favours gpt by 0.1, but three seeds' scores alone, without outcomes, carry no test
    assert opt["test"] is None and not opt["significant"]
    assert shown["opt"] == "0.450 ± 0.050 [0.326, 0.574]"


def test_seeds_scores_alone_carry_no_marks(tmp_path):
    for seed in range(5):
        make_run(tmp_path, f"gpt-s{seed}", variant="gpt", seed=seed, scores={("piqa", 0): {"acc": 0.6 + 0.01 * seed}})
        make_run(tmp_path, f"opt-s{seed}", variant="opt", seed=seed, scores={("piqa", 0): {"acc": 0.5 + 0.01 * seed}})

    table = report.score_table(store.scores(tmp_path)).set_index("variant")

    assert table.loc["gpt", "bold"] and not table.loc["gpt", "best"]
    assert table.loc["opt", "test"] is None and not table.loc["opt", "significant"]


def test_seeds_with_outcomes_use_the_seeds_by_examples_test(tmp_path):
    for seed in range(3):
        for name, right in (("gpt", 160), ("opt", 80)):
            values = outcomes(200, right - seed, offset=seed)
            make_run(tmp_path, f"{name}-s{seed}", variant=name, seed=seed,
                     scores={("piqa", 0): {"acc": float(np.mean(values))}}, samples={("piqa", 0): {"acc": values}})

    table = report.score_table(store.scores(tmp_path)).set_index("variant")

    assert table.loc["opt", "test"].startswith("seeds × examples t-test")
    assert table.loc["opt", "significant"] and table.loc["opt", "p_vs_best"] < 0.01  # t on 2 df: not tiny
    assert table.loc["gpt", "best"] and table.loc["gpt", "interval"] == report_marks.CROSSED


def test_seeds_that_agree_still_get_the_test_sets_uncertainty(tmp_path):
    # three seeds at 0 of 100 (and three at exactly 20 of 100): the seeds' spread is 0, the test set's is not
    for seed in range(3):
        make_run(tmp_path, f"gpt-s{seed}", variant="gpt", seed=seed, scores={("cloze", 0): {"acc": 0.0}},
                 samples={("cloze", 0): {"acc": [0] * 100}})
        make_run(tmp_path, f"opt-s{seed}", variant="opt", seed=seed, scores={("cloze", 0): {"acc": 0.2}},
                 samples={("cloze", 0): {"acc": outcomes(100, 20, offset=seed)}})

    table = report.score_table(store.scores(tmp_path)).set_index("variant")

    assert (table.loc["gpt", "low"], table.loc["gpt", "high"]) == pytest.approx((0.0, 0.0370), abs=1e-4)  # Wilson 0/100
    assert table.loc["opt", "high"] - table.loc["opt", "low"] > 0.1  # at least Wilson's at 20/100: [0.133, 0.289]
    assert table.loc["gpt", "interval"] == report_marks.CROSSED
    assert report.score_display(table.reset_index(), ["gpt", "opt"]).iloc[0]["gpt"].startswith("0.00 ± 0 [0.00, 0.04]")


def test_one_seed_accuracy_gets_a_wilson_interval(tmp_path):
    make_run(tmp_path, "gpt-s0", variant="gpt", scores={("piqa", 0): {"acc": 0.0, "acc_stderr": 0.0}},
             samples={("piqa", 0): {"acc": [0] * 100}})

    table = report.score_table(store.scores(tmp_path))

    # Wilson at 0 of 100: [0, z²/(n + z²)] = [0, 3.8415/103.8415] = [0, 0.0370]; Wald gave 0.00 ± 0.00
    assert (table.iloc[0]["low"], table.iloc[0]["high"]) == pytest.approx((0.0, 0.036993498), abs=1e-8)
    assert table.iloc[0]["interval"] == report_marks.WILSON
    assert report.score_display(table, ["gpt"]).iloc[0]["gpt"] == "**0.00** [0.00, 0.04]"


def _two_variants(folder: Path, a: list[int], b: list[int], task: str = "hyperbaton") -> pd.DataFrame:
    for name, values in (("gpt", a), ("opt", b)):
        make_run(folder, f"{name}-s0", variant=name, scores={(task, 0): {"acc": float(np.mean(values)),
                                                                          "acc_norm": float(np.mean(values)),
                                                                          "chance": 0.5}},
                 samples={(task, 0): {"acc": values, "acc_norm": values}})
    return report.score_table(store.scores(folder))


def test_tied_variants_are_all_bold_and_none_starred(tmp_path):
    table = _two_variants(tmp_path, [0] * 6, [0] * 6)

    shown = report.score_display(table, ["gpt", "opt"]).iloc[0]
    # Wilson at 0 of 6: [0, 3.8415/9.8415] = [0, 0.390]
    assert (shown["gpt"], shown["opt"]) == ("**0.00** [0.00, 0.39]", "**0.00** [0.00, 0.39]")


def test_large_difference_is_marked_significant(tmp_path):
    # 200 examples: gpt right on 80% (0..159), opt on 40% (100..179)
    table = _two_variants(tmp_path, outcomes(200, 160), outcomes(200, 80, offset=100))

    assert _rows(table, variant="gpt").iloc[0]["best"]
    opt = _rows(table, variant="opt").iloc[0]
    assert opt["metric"] == "acc_norm"  # preferred over acc
    assert opt["significant"] and opt["p_vs_best"] < 0.001
    assert opt["test"].startswith("paired bootstrap over 200 examples")
    assert report.score_display(table, ["gpt", "opt"]).iloc[0]["opt"].endswith(report_marks.WORSE_MARK)


def test_a_few_flips_are_not_significant(tmp_path):
    same = outcomes(200, 100)
    a, b = list(same), list(same)
    a[150], a[151] = 1, 1  # gpt alone right on two examples
    b[0] = 0  # and on a third
    b[152] = 1  # opt alone right on one
    table = _two_variants(tmp_path, a, b)

    opt = _rows(table, variant="opt").iloc[0]
    assert not opt["significant"] and opt["p_vs_best"] > 0.2
    shown = report.score_display(table, ["gpt", "opt"]).iloc[0]
    # Wilson 102/200 = [0.441, 0.578], 100/200 = [0.431, 0.569]; bold but no ★: not significant
    assert (shown["gpt"], shown["opt"]) == ("**0.510** [0.441, 0.578]", "0.500 [0.431, 0.569]")


def test_bits_per_byte_lower_is_better_and_pll_is_not_ranked(tmp_path):
    nbytes = 100.0
    for name, family, bpb in (("gpt", "decoder", 1.5), ("opt", "decoder", 1.8), ("bert", "encoder", 0.9)):
        # per-document (loglikelihood, bytes), as lm-eval records bits_per_byte samples
        pairs = [[-nbytes * (bpb + 0.01 * (i % 5)) * math.log(2), nbytes] for i in range(50)]
        make_run(tmp_path, f"{name}-s0", variant=name, family=family,
                 scores={("corpus_ppl", 0): {"bits_per_byte": bpb + 0.02}},
                 samples={("corpus_ppl", 0): {"bits_per_byte": pairs}})

    table = report.score_table(store.scores(tmp_path)).set_index("variant")

    assert table.loc["gpt", "best"] and not table.loc["gpt", "higher_is_better"]
    assert table.loc["opt", "significant"] and table.loc["opt", "test"].startswith("paired bootstrap over 50 documents")
    assert not table.loc["bert", "best"] and not table.loc["bert", "bold"] and table.loc["bert", "pll"]
    # a document bootstrap of Σ loglik / Σ bytes: the documents' bits/byte are 1.50..1.54 (mean 1.52)
    gpt = table.loc["gpt"]
    assert gpt["interval"] == report_marks.DOC_BOOT
    assert 1.50 < gpt["low"] < 1.52 < gpt["high"] < 1.54
    shown = report.score_display(table.reset_index(), ["bert", "gpt", "opt"]).iloc[0]
    assert shown["metric"] == "bits_per_byte ↓"
    assert re.fullmatch(r"0\.920 \[0\.9\d\d, 0\.9\d\d\] \(PLL\)", shown["bert"])
    assert re.fullmatch(r"\*\*1\.52\*\* \[1\.5\d, 1\.5\d\] ★", shown["gpt"]) and shown["opt"].endswith(" †")


def test_report_states_the_rule_the_correction_and_the_intervals(tmp_path):
    _two_variants(tmp_path, outcomes(200, 160), outcomes(200, 80, offset=100))

    markdown = report.write_report(tmp_path).read_text()

    assert "Holm's correction over all pairs of the row (family-wise α = 0.05)" in markdown
    assert "Wilson 95% interval of k correct of n (one seed)" in markdown
    assert "test-set uncertainty only; training-seed variance not measured" in markdown
    legend = next(line for line in markdown.splitlines() if line.startswith("Primary metric"))
    assert legend.count("test-set uncertainty only") == 1  # said once, not after every test's label
    # n: 200 examples; Wilson 160/200 = [0.7391, 0.8495] and 80/200 = [0.3346, 0.4692], to the estimate's 3 decimals
    assert ("| hyperbaton | 0 | acc_norm ↑ | 0.500 | 200 | **0.800** [0.739, 0.850] ★ | 0.400 [0.335, 0.469] † |"
            in markdown)
    assert "<b>0.800</b><br>[0.739, 0.850] ★" in (tmp_path / "report.html").read_text()  # bold in HTML too


def _three_variants(folder: Path, extra: int) -> pd.DataFrame:
    """gpt right on `extra` more of 200 examples than opt and t5, which agree on every one."""
    same = outcomes(200, 100)
    better = [1 if 100 <= i < 100 + extra else v for i, v in enumerate(same)]
    for name, values in (("gpt", better), ("opt", same), ("t5", same)):
        make_run(folder, f"{name}-s0", variant=name, scores={("piqa", 0): {"acc": float(np.mean(values)), "chance": 0.5}},
                 samples={("piqa", 0): {"acc": values}})
    return report.score_table(store.scores(folder)).set_index("variant")


def test_holm_removes_marks_the_uncorrected_test_would_give(tmp_path):
    from harness.statistics import compare

    table = _three_variants(tmp_path, extra=4)
    same = dict(enumerate(outcomes(200, 100)))
    better = {i: 1 if 100 <= i < 104 else v for i, v in same.items()}
    raw = compare({0: better}, {0: same}, "accuracy").p
    # uncorrected, gpt would be ★ with opt and t5 † (p ≈ 0.033 each); Holm over the 3 pairs triples them
    assert raw < 0.05 < 3 * raw
    assert table.loc["opt", "p_vs_best"] == pytest.approx(3 * raw)
    assert table.loc["gpt", "bold"] and not table["best"].any() and not table["significant"].any()


def test_a_clear_winner_gets_the_star(tmp_path):
    table = _three_variants(tmp_path, extra=30)  # 130 of 200: above chance 0.5 too

    assert table.loc["gpt", "best"] and table.loc["opt", "significant"] and table.loc["t5", "significant"]
    assert table.loc["opt", "p_vs_best"] < 0.01


def test_a_row_where_no_variant_beats_chance_is_flagged_and_unstarred(tmp_path):
    # chance 0.5: gpt 0.45 is far better than opt 0.10 but not better than chance (the README's corpus_next 0.240 ★)
    table = _two_variants(tmp_path, outcomes(200, 90), outcomes(200, 20))
    assert table.set_index("variant").loc["opt", "significant"]

    shown = report.score_display(table, ["gpt", "opt"]).iloc[0]
    assert shown["chance"] == "0.500 (≈ chance)"
    assert shown["gpt"] == "**0.450** [0.383, 0.519]" and shown["opt"].endswith(" †")


def test_a_row_above_chance_but_not_significantly_is_flagged(tmp_path):
    # 104 and 100 of 200 against chance 0.5: one-sided binomial p ≈ 0.31 before Holm
    table = _two_variants(tmp_path, outcomes(200, 104), outcomes(200, 100))

    assert table["at_chance"].iloc[0]
    assert report.score_display(table, ["gpt", "opt"]).iloc[0]["chance"] == "0.500 (≈ chance)"
    above = _two_variants(tmp_path / "above", outcomes(200, 160), outcomes(200, 80, offset=100))
    assert not above["at_chance"].iloc[0]


# ---------------------------------------------------------------- bad inputs


def test_mixed_tokenizers_are_refused(tmp_path):
    make_run(tmp_path, "gpt-s0", variant="gpt", tokenizer_hash="1111aaaa2222bbbb")
    make_run(tmp_path, "bert-s0", variant="bert", tokenizer_hash="3333cccc4444dddd")

    with pytest.raises(UserError, match=r"different tokenizers.*3333cccc4444: bert-s0.*1111aaaa2222: gpt-s0|"
                                        r"different tokenizers.*1111aaaa2222: gpt-s0.*3333cccc4444: bert-s0"):
        report.write_report(tmp_path)
    assert not (tmp_path / "report.md").exists()


def test_empty_folder_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="has no runs"):
        report.write_report(tmp_path)


def test_cli_exits_2_with_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "arches.cli", "report", str(tmp_path)], capture_output=True,
                          text=True, timeout=120)

    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("arches: error:") and "has no runs" in lines[0]


def test_report_command_prints_the_path_last(tmp_path, capsys):
    make_run(tmp_path, "gpt-s0", variant="gpt")

    report.report_command([str(tmp_path)])

    assert capsys.readouterr().out.strip().splitlines()[-1] == str(tmp_path / "report.md")
    with pytest.raises(UserError, match="expected one results folder"):
        report.report_command([])


def test_a_crossed_interval_on_accuracy_stays_within_zero_and_one(tmp_path):
    # the same 1 of 100 at every seed: the crossed t interval (2 df) alone is 0.01 ± 0.043, below 0
    for seed in range(3):
        make_run(tmp_path, f"gpt-s{seed}", variant="gpt", seed=seed, scores={("cloze", 0): {"acc": 0.01}},
                 samples={("cloze", 0): {"acc": outcomes(100, 1)}})

    row = report.score_table(store.scores(tmp_path)).iloc[0]

    assert row["low"] == 0.0 and 0.0 < row["high"] < 1.0
