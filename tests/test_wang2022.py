"""The wang2022 findings (harness/report/wang2022.py): which tasks are averaged, the tests, Holm, the verdicts."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fixtures.run_folders import make_run, outcomes

from harness import report, store
from harness.report import wang2022
from harness.report.render import render_markdown

TASKS = ("hyperbaton", "winowhy")
LM_FIRST = {"cd_flm": 160, "nd_plm": 120, "ed_plm": 80, "cd_mlm": 60, "nd_mlm": 60, "ed_mlm": 40}  # right of 200
REVERSED = {"cd_flm": 80, "nd_plm": 120, "ed_plm": 160, "cd_mlm": 190, "nd_mlm": 190, "ed_mlm": 196}


def _wang_folder(folder: Path, right: dict[str, int], seeds: int = 1, n: int = 200, tasks=TASKS,
                 extra: dict | None = None) -> Path:
    """Each variant's runs: `right[variant]` of n examples right on every task (one more per seed, the
    examples shifting with the seed), plus `extra` {(task, shots): ({metric: value}, {metric: values})}."""
    for i, (variant, r) in enumerate(right.items()):
        for seed in range(seeds):
            values = outcomes(n, r + seed, offset=7 * i + 3 * seed)
            scores = {(task, 0): {"acc": float(np.mean(values)), "chance": 0.5} for task in tasks}
            samples = {(task, 0): {"acc": values} for task in tasks}
            for key, (metrics, columns) in (extra or {}).items():
                scores[key], samples[key] = metrics, columns
            make_run(folder, f"{variant}-s{seed}", variant=variant, seed=seed, experiment="wang2022",
                     scores=scores, samples=samples)
    return folder


def _blocks(folder: Path) -> list:
    runs = store.load_runs(folder)
    return report.wang2022_findings(runs, store.scores(folder, runs))


def _verdicts(blocks: list) -> list[str]:
    return [re.match(r"\*\*Verdict: (.+?)\.\*\*", text).group(1) for kind, text in blocks
            if kind == "p" and text.startswith("**Verdict")]


def _pair_tables(blocks: list) -> pd.DataFrame:
    return pd.concat([t for kind, t in blocks if kind == "table" and "pair (ours)" in t.columns], ignore_index=True)


def test_one_seed_is_never_reproduced(tmp_path):
    blocks = _blocks(_wang_folder(tmp_path, LM_FIRST))

    assert _verdicts(blocks) == ["consistent with the paper at one seed (test-set uncertainty only)"] * 2
    assert (_pair_tables(blocks)["reading"] == "significant, the paper's way").all()
    assert "reproduced" not in render_markdown(blocks).lower()  # nowhere in the section, rules included


def test_three_seeds_with_a_strong_consistent_effect_are_reproduced(tmp_path):
    blocks = _blocks(_wang_folder(tmp_path, LM_FIRST, seeds=3))

    assert _verdicts(blocks) == ["reproduced", "reproduced"]
    table = _pair_tables(blocks).set_index("pair (ours)")
    assert table.loc["cd_flm − nd_plm", "difference"] == "+0.200"
    assert table.loc["cd_flm − nd_plm", "seeds"] == "3/3" and table.loc["cd_flm − nd_plm", "n"] == "400"
    items = [item for kind, content in blocks if kind == "ul" for item in content]
    assert all("seeds × examples t-test, paired seeds (k = 3/3, n = 400" in item for item in items)


def test_a_reversed_effect_is_contradicted(tmp_path):
    blocks = _blocks(_wang_folder(tmp_path, REVERSED, seeds=3))

    assert _verdicts(blocks) == ["contradicted", "contradicted"]
    assert _pair_tables(blocks).set_index("pair (ours)").loc["cd_flm − nd_plm", "difference"] == "−0.200"


def test_significant_pairs_both_ways_are_mixed(tmp_path):
    right = {**LM_FIRST, "ed_plm": 180}  # nd_plm > ed_plm reversed, cd_flm > nd_plm kept

    assert _verdicts(_blocks(_wang_folder(tmp_path, right, seeds=3)))[0] == "mixed"


def test_a_tiny_effect_at_small_n_is_underpowered(tmp_path):
    # one example apart out of 40 per task: intervals span 0 and the paper's gaps, MDEs far above 0.036
    right = {"cd_flm": 21, "nd_plm": 20, "ed_plm": 20, "cd_mlm": 20, "nd_mlm": 20, "ed_mlm": 20}
    blocks = _blocks(_wang_folder(tmp_path, right, n=40))

    assert _verdicts(blocks) == [f"underpowered (one seed: {wang2022.ONE_SEED_NOTE})"] * 2


def test_no_difference_at_large_n_is_not_significant(tmp_path):
    # the same 0/1 outcomes but one flipped example each: the intervals end below the paper's gaps and the
    # MDEs are under the (b) reference, so the run could have seen those effects and did not
    base = outcomes(1000, 500)
    for i, variant in enumerate(wang2022.WANG2022_NAMES):
        values = list(base)
        values[i] = 1 - values[i]
        make_run(tmp_path, f"{variant}-s0", variant=variant, experiment="wang2022",
                 scores={(t, 0): {"acc": float(np.mean(values)), "chance": 0.5} for t in TASKS},
                 samples={(t, 0): {"acc": values} for t in TASKS})

    assert _verdicts(_blocks(tmp_path)) == [f"not significant (one seed: {wang2022.ONE_SEED_NOTE})"] * 2


def test_corpus_cloze_and_bits_per_byte_are_not_averaged(tmp_path):
    # a greedy-match cloze (acc, no chance level) that reverses every pair if it were averaged in
    cloze = {v: outcomes(200, 200 - r) for v, r in LM_FIRST.items()}
    for variant, r in LM_FIRST.items():
        values = outcomes(200, r)
        make_run(tmp_path, f"{variant}-s0", variant=variant, experiment="wang2022",
                 scores={("hyperbaton", 0): {"acc": float(np.mean(values)), "chance": 0.5},
                         ("corpus_cloze", 0): {"acc": float(np.mean(cloze[variant]))},
                         ("corpus_ppl", 0): {"bits_per_byte": 2.0}},
                 samples={("hyperbaton", 0): {"acc": values}, ("corpus_cloze", 0): {"acc": cloze[variant]}})

    blocks = _blocks(tmp_path)

    text = render_markdown(blocks)
    assert "every variant was scored on (primary metric acc or acc_norm, with a chance level): hyperbaton." in text
    assert "corpus_cloze (acc but no chance level recorded, so not multiple choice" in text
    assert "corpus_ppl (primary metric bits_per_byte, not acc or acc_norm)" in text
    table = _pair_tables(blocks).set_index("pair (ours)")
    assert table.loc["cd_flm − nd_plm", "difference"] == "+0.200" and table.loc["cd_flm − nd_plm", "n"] == "200"


def test_the_average_is_the_unweighted_mean_over_tasks_of_different_n(tmp_path):
    # hyperbaton: 100 examples, cd_flm +0.30; winowhy: 300 examples, cd_flm +0.10 -> the average differs by 0.20
    # (pooling the 400 examples unweighted would give 0.15)
    for variant, (small, large) in {"cd_flm": (80, 150), "nd_plm": (50, 120)}.items():
        hyperbaton, winowhy = outcomes(100, small), outcomes(300, large)
        make_run(tmp_path, f"{variant}-s0", variant=variant, experiment="wang2022",
                 scores={("hyperbaton", 0): {"acc": float(np.mean(hyperbaton)), "chance": 0.5},
                         ("winowhy", 0): {"acc": float(np.mean(winowhy)), "chance": 0.5}},
                 samples={("hyperbaton", 0): {"acc": hyperbaton}, ("winowhy", 0): {"acc": winowhy}})
    runs = store.load_runs(tmp_path)
    long = store.scores(tmp_path, runs)
    selection = wang2022.select_tasks(long)
    pooled = wang2022.pooled_outcomes(long, selection.tasks, report.Comparer())

    comparison = wang2022.compare_pair("cd_flm", "nd_plm", pooled, wang2022.seed_averages(long, selection.tasks))

    assert comparison.diff == pytest.approx(0.20)
    assert comparison.n == 400 and comparison.ci[0] < 0.20 < comparison.ci[1]
    averages = wang2022.seed_averages(long, selection.tasks)
    assert averages["cd_flm"][0] == pytest.approx((0.80 + 0.50) / 2)


def test_p_is_never_zero_and_holm_covers_every_pair(tmp_path):
    # every example right against every example wrong: the bootstrap's smallest p is 2 / (1 + R)
    right = {"cd_flm": 200, "nd_plm": 100, "ed_plm": 0, "cd_mlm": 0, "nd_mlm": 0, "ed_mlm": 0}
    runs = store.load_runs(_wang_folder(tmp_path, right))
    long = store.scores(tmp_path, runs)
    tasks = wang2022.select_tasks(long).tasks
    results = wang2022.tested_pairs(wang2022.pooled_outcomes(long, tasks, report.Comparer()),
                                    wang2022.seed_averages(long, tasks))

    pairs = [r for claim in results for r in claim]
    assert len(pairs) == 5 and all(r.comparison.p > 0 and r.adjusted_p > 0 for r in pairs)
    smallest = min(r.comparison.p for r in pairs)
    assert smallest == pytest.approx(2 / (1 + wang2022.RESAMPLES))
    # Holm over all 5 pairs of both claims: the smallest p is multiplied by 5
    assert min(r.adjusted_p for r in pairs) == pytest.approx(5 * smallest)
    table = _pair_tables(report.wang2022_findings(runs, long))
    assert not table["p"].isin(["0", "0.0"]).any() and not table["p, Holm"].isin(["0", "0.0"]).any()


def test_the_papers_figures_are_labelled_and_not_in_our_tables(tmp_path):
    blocks = _blocks(_wang_folder(tmp_path, LM_FIRST, seeds=3))

    paper = [text for kind, text in blocks if kind == "p" and "44.2" in text]
    assert len(paper) == 1 and "The paper's figures (EAI-harness zero-shot average accuracy, %" in paper[0]
    for table in (t for kind, t in blocks if kind == "table"):
        cells = " ".join(map(str, [*table.columns, *table.to_numpy().ravel()]))
        assert not any(figure in cells for figure in ("44.2", "43.5", "39.9"))
        assert not any("paper" in column for column in table.columns)


def test_missing_variants_are_not_tested_and_seeds_without_outcomes_use_a_t_test(tmp_path):
    for seed, (flm, plm) in enumerate([(0.60, 0.55), (0.62, 0.56), (0.64, 0.60)]):
        for variant, score in (("cd_flm", flm), ("nd_plm", plm)):
            make_run(tmp_path, f"{variant}-s{seed}", variant=variant, seed=seed, experiment="wang2022",
                     scores={(task, 0): {"acc": score, "chance": 0.5} for task in TASKS})

    blocks = _blocks(tmp_path)

    table = _pair_tables(blocks).set_index("pair (ours)")
    assert table.loc["cd_flm − nd_plm", "difference"] == "+0.0500"
    assert table.loc["nd_plm − ed_plm", "reading"].startswith("not tested: no zero-shot scores")
    items = [item for kind, content in blocks if kind == "ul" for item in content]
    assert items == ["cd_flm − nd_plm: paired t-test over 3 seeds (2 df), seeds' scores only"]
    assert _verdicts(blocks) == ["not tested", "not tested"]  # never 'reproduced' without ed_plm


def test_wang2022_report_has_findings(tmp_path):
    markdown = report.write_report(_wang_folder(tmp_path, LM_FIRST, seeds=3)).read_text()

    assert "## Findings: Wang et al. 2022" in markdown
    assert "cd_flm 44.2, nd_plm 43.5, ed_plm 39.9" in markdown
    assert markdown.count("**Verdict: reproduced.**") == 2
