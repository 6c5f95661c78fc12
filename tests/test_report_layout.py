"""The report reads top-down: the Variants table (mean ± sd over seeds) and the knobs that differ come
first, and in a 1400 px browser window no table hides the comparison's columns behind a scrollbar."""

from __future__ import annotations

import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from fixtures.run_folders import make_run, outcomes, write_baseline

from harness import report, store
from harness.report.variants import knobs_display, mean_sd_text, variants_display

LAYOUT_CHECK = Path(__file__).parent / "layout_check.py"


def _three_seeds(folder: Path) -> Path:
    losses = {"gpt": (3.20, 3.25, 3.30), "bert": (2.90, 2.80, 3.00)}
    for variant, values in losses.items():
        for seed, loss in enumerate(values):
            family, knobs = ("decoder", {"position": "learned", "norm": "layernorm", "bias": True})
            if variant == "bert":
                family, knobs = ("encoder", {"position": "learned", "norm": "rmsnorm", "bias": True})
            make_run(folder, f"{variant}-s{seed}", variant=variant, seed=seed, family=family, final_val_loss=loss,
                     objective="mlm" if variant == "bert" else "lm", knobs=knobs, params_total=1_230_000,
                     flops_per_token=7.4e6, tokens_seen=1_000_000,
                     scores={("corpus_ppl", 0): {"bits_per_byte": 1.5 + loss / 100}})
    write_baseline(folder, val_loss_nats=7.1, bits_per_byte=4.25)
    return folder


def test_variants_table_is_mean_and_sd_over_seeds(tmp_path):
    runs = store.load_runs(_three_seeds(tmp_path))
    table = variants_display(runs, ["bert", "gpt"], store.load_baseline(tmp_path)).set_index("variant")

    gpt = table.loc["gpt"]
    assert statistics.stdev([3.20, 3.25, 3.30]) == pytest.approx(0.05)
    assert gpt["val loss (objective)"] == "3.25 ± 0.05 (lm)"  # the sd to the mean's decimals
    assert gpt["seeds"] == "3"
    assert table.loc["bert", "held-out bits/byte"].endswith("(PLL)")  # the encoder's is a pseudo-likelihood
    assert table.loc["unigram baseline", "val loss (objective)"] == "7.10 (unigram)"
    # the comparison's columns first (issue 16, item 9)
    assert list(table.reset_index().columns[:5]) == ["variant", "family", "seeds", "params", "FLOPs/token"]
    assert mean_sd_text([1.0]) == "1.00" and mean_sd_text([]) == report.MISSING
    assert mean_sd_text([2.470, 2.471, 2.472]) == "2.47 ± 0.001"  # never '± 0.00'


def test_knobs_table_shows_only_what_differs(tmp_path):
    runs = store.load_runs(_three_seeds(tmp_path))
    table, shared = knobs_display(runs, ["bert", "gpt"])

    assert list(table.columns) == ["variant", "preset", "norm"]
    assert table.set_index("variant").loc["bert", "norm"] == "rmsnorm"
    assert shared == "Knobs shared by every run: bias=true, position=learned."


def test_report_opens_on_variants_and_lists_each_run_later(tmp_path):
    text = report.write_report(_three_seeds(tmp_path)).read_text()

    assert text.index("## Variants") < text.index("## Scores") < text.index("## Runs")
    runs_section = text[text.index("## Runs"):]
    assert runs_section.count("| gpt | ") == 3  # each seed's own row, in the later table
    assert "| params |" not in runs_section.split("\n\n")[2]  # shared columns are not repeated per run


@pytest.mark.skipif(not __import__("shutil").which("chromium"), reason="needs a chromium binary (apt-get install chromium)")
def test_first_columns_fit_a_1400_px_window(tmp_path):
    path = report.write_report(_three_seeds(tmp_path)).with_suffix(".html")
    done = subprocess.run([sys.executable, str(LAYOUT_CHECK), str(path), "--width", "1400"], capture_output=True,
                          text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Variants:" in done.stdout and "fits" in done.stdout


def _summary_folder(folder: Path, seeds: int) -> Path:
    """Two tasks at 200 examples: on `clear`, gpt is right on 160 and opt on 100 (significant at any seed
    count); on `close`, 101 against 100 (a spread far below what n = 200 can detect)."""
    for variant, (clear, close) in {"gpt": (160, 101), "opt": (100, 100)}.items():
        for seed in range(seeds):
            make_run(folder, f"{variant}-s{seed}", variant=variant, seed=seed,
                     scores={("clear", 0): {"acc": (clear - seed) / 200, "chance": 0.5},
                             ("close", 0): {"acc": close / 200, "chance": 0.5}},
                     samples={("clear", 0): {"acc": outcomes(200, clear - seed, seed)},
                              ("close", 0): {"acc": outcomes(200, close)}})
    return folder


def _section(text: str, title: str) -> str:
    start = text.index(f"## {title}")
    return text[start:text.index("\n## ", start + 1)]


def test_summary_opens_the_report_with_what_is_and_is_not_significant(tmp_path):
    text = report.write_report(_summary_folder(tmp_path, seeds=3)).read_text()
    summary = _section(text, "Summary")

    assert text.index("## Summary") < text.index("## Variants") < text.index("## Scores")
    assert "2 variants × 3 seed(s) each (6 completed runs), n = 200 examples per task" in summary
    significant = [line for line in summary.splitlines() if line.startswith("- **Significant after correction**")]
    assert len(significant) == 1 and "clear 0-shot (acc ↑): gpt ★" in significant[0]
    assert "opt worse than gpt by" in significant[0]
    assert "**Not significant:** close 0-shot." in summary
    assert "close 0-shot (spread 0.00500, MDE" in summary  # could not have been detected at n = 200
    assert "One seed per variant" not in summary


def test_one_seed_summary_says_what_it_did_not_measure(tmp_path):
    summary = _section(report.write_report(_summary_folder(tmp_path, seeds=1)).read_text(), "Summary")

    assert "One seed per variant: test-set uncertainty only; training-seed variance not measured" in summary
