"""Ranking robustness (issue 16, item 7): the variants' order under other scoring rules, on fixture
run folders whose samples files hold chosen log-likelihoods (a flip where sum and per-token mean
disagree, an unresolved reversal, a format rule read from the alternative pass, rows that cannot be
computed), and the alternative pass itself through the real lm-eval on a random-weight debug BERT."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from fixtures.run_folders import make_run
from tokenizers import Tokenizer, models, pre_tokenizers

from harness import store
from harness.report import write_report
from harness.report.robustness import (
    COLUMNS,
    robustness_blocks,
    robustness_table,
    rules,
)
from harness.report.scores import Comparer

TASK = "mc"
SHORT, LONG = "yes", "no no no no"  # 1 and 4 tokens under the fixture tokenizer (one per word)


def write_tokenizer(run_dir: Path) -> None:
    tokenizer = Tokenizer(models.WordLevel({"[UNK]": 0, "yes": 1, "no": 2, "ctx": 3}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.save(str(run_dir / "tokenizer.json"))


def write_samples(path: Path, docs: list[tuple[list[str], list[float]]], extra: dict | None = None) -> None:
    """One lm-eval sample per doc: choices (gold first) and their log-likelihoods; acc as lm-eval
    records it (argmax of the summed log-likelihood)."""
    lines = []
    for doc_id, (choices, lls) in enumerate(docs):
        sample = {"doc_id": doc_id, "target": 0, "arguments": [["ctx", " " + c] for c in choices],
                  "resps": [[[ll, False]] for ll in lls], "filtered_resps": [[ll, False] for ll in lls],
                  "acc": float(max(range(len(lls)), key=lambda i: lls[i]) == 0), **(extra or {})}
        lines.append(json.dumps(sample))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def run_folder(folder: Path, variant: str, docs: list, family: str = "decoder", scoring_format: str = "causal",
               alternatives: dict | None = None) -> Path:
    acc = [float(max(range(len(lls)), key=lambda i: lls[i]) == 0) for _, lls in docs]
    run_dir = make_run(folder, f"{variant}-s0", variant=variant, family=family, scoring_format=scoring_format,
                       scores={(TASK, 0): {"acc": sum(acc) / len(acc), "chance": 0.5}},
                       samples={(TASK, 0): {"acc": acc}})  # fmt: skip
    write_samples(run_dir / f"eval/samples-{TASK}-0shot.jsonl", docs)
    write_tokenizer(run_dir)
    if alternatives:
        record = json.loads((run_dir / "run.json").read_text())
        record["alternatives"] = {}
        for alternative, alt_docs in alternatives.items():
            file = f"eval/alternatives/{alternative}/samples-{TASK}-0shot.jsonl"
            write_samples(run_dir / file, alt_docs)
            record["alternatives"][alternative] = {f"{TASK}|0": {
                "task": TASK, "shots": 0, "format": alternative, "samples_file": file, "n": len(alt_docs)}}
        (run_dir / "run.json").write_text(json.dumps(record))
    return run_dir


# Each doc: [gold, distractor]. Half the docs have a long gold (4 tokens) and a short distractor,
# half the reverse, so the summed and the per-token-mean log-likelihood can pick differently.
def long_gold(gold: float, distractor: float) -> tuple[list[str], list[float]]:
    return [LONG, SHORT], [gold, distractor]


def short_gold(gold: float, distractor: float) -> tuple[list[str], list[float]]:
    return [SHORT, LONG], [gold, distractor]


# a: sum right on the short-gold half only (0.5), mean right everywhere (1.0)
A = [long_gold(-4, -3)] * 50 + [short_gold(-1, -8)] * 50
# b: sum right everywhere (1.0), mean right on the long-gold half only (0.5)
B = [long_gold(-2, -3)] * 50 + [short_gold(-2, -4)] * 50
# c: a, with two docs better under the sum and two worse under the mean: 0.52 / 0.98
C = [long_gold(-2, -3)] * 2 + [long_gold(-4, -3)] * 48 + [short_gold(-2, -4)] * 2 + [short_gold(-1, -8)] * 48


FIRST, SECOND = COLUMNS[1], COLUMNS[2]


def _table(folder: Path):
    runs = store.load_runs(folder)
    long = store.scores(folder, runs)
    return robustness_table(runs, long, Comparer(), sorted({r["variant"] for r in runs})).set_index(COLUMNS[0])


def test_sum_and_mean_disagreeing_is_a_significant_flip_and_a_small_reversal_is_unresolved(tmp_path):
    for variant, docs in (("a", A), ("b", B), ("c", C)):
        run_folder(tmp_path, variant, docs)
    table = _table(tmp_path)
    row = table.loc[rules()[0].title]
    assert row[FIRST] == "b 1.00 > c 0.520 > a 0.500"
    assert row[SECOND] == "a 1.00 > c 0.980 > b 0.500"
    assert row["order"] == "flips: b ↔ a, b ↔ c; 1 pair reversed, order not resolved"  # c ↔ a: 2 docs each way
    # acc_norm (per character, the delimiter left out: 3 vs 11 characters) picks as the token mean does here
    assert table.loc[rules()[1].title, SECOND] == "a 1.00 > c 0.980 > b 0.500"
    for rule in rules()[2:]:  # no encoder, T5 or GLM variant
        assert table.loc[rule.title, FIRST].startswith("not applicable: no variant was scored in")


def test_a_format_rule_reads_the_alternative_pass_and_says_where_it_is_missing(tmp_path):
    right, wrong = [short_gold(-1, -2)] * 30, [short_gold(-2, -1)] * 30
    run_folder(tmp_path, "gpt", right[:20] + wrong[:10])  # 0.667 in its own (only) format
    run_folder(tmp_path, "bert", right, family="encoder", scoring_format="pll_word_l2r",
               alternatives={"pll": wrong[:25] + right[:5]})  # 1.00 in pll_word_l2r, 0.167 in pll
    row = _table(tmp_path).loc[rules()[2].title]
    assert (row[FIRST], row[SECOND], row["order"]) == ("bert 1.00 > gpt 0.667", "gpt 0.667 > bert 0.167",
                                                       "flips: bert ↔ gpt")  # fmt: skip
    # the same encoder without its alternative pass, and with a pass that could not score the task: the
    # row says it is not computed, the note below the table says why
    record = json.loads((tmp_path / "bert-s0" / "run.json").read_text())
    for alternatives, why in (({}, "bert-s0 has no pll pass (eval.alternative_formats=true scores it)"),
                              ({"pll": {"mc|0": {"task": TASK, "shots": 0, "skipped": "too long"}}},
                               "pll could not score bert-s0's (too long)")):  # fmt: skip
        (tmp_path / "bert-s0" / "run.json").write_text(json.dumps({**record, "alternatives": alternatives}))
        runs = store.load_runs(tmp_path)
        blocks = robustness_blocks(runs, store.scores(tmp_path, runs), None, ["bert", "gpt"])
        row = blocks[1][1].set_index(COLUMNS[0]).loc[rules()[2].title]
        assert row[FIRST] == "not computed: no ranked task has a pll pass of every pll_word_l2r run (below)"
        assert row["order"] == "—"
        assert blocks[2] == ("ul", [f"**{rules()[2].title}**: mc: {why}."])


def test_samples_without_the_choices_loglikelihoods_say_so(tmp_path):
    for variant, right in (("a", 60), ("b", 40)):  # make_run's samples: doc_id and acc only
        acc = [1.0] * right + [0.0] * (100 - right)
        make_run(tmp_path, f"{variant}-s0", variant=variant, scores={(TASK, 0): {"acc": right / 100, "chance": 0.5}},
                 samples={(TASK, 0): {"acc": acc}})
    assert _table(tmp_path).loc[rules()[0].title, FIRST] == (
        "not computed: samples-mc-0shot.jsonl holds no choices' log-likelihoods (lm-eval `resps`)")


def test_the_report_has_the_section_with_each_reversals_tests(tmp_path):
    for variant, docs in (("a", A), ("c", C)):
        run_folder(tmp_path, variant, docs)
    text = write_report(tmp_path).read_text()
    section = text.split("## Ranking robustness", 1)[1].split("\n## ", 1)[0]
    assert "| sum vs per-token mean | c 0.520 > a 0.500 | a 1.00 > c 0.980 | 1 pair reversed, order not resolved |" \
        in section
    assert re.search(r"^- \*\*sum vs per-token mean\*\*: c ↔ a not resolved \(p = 0\.\d+ under sum, p = 0\.\d+ under "
                     r"mean per token\)\.$", section, flags=re.M)
    assert "Holm-adjusted" in section
    runs = store.load_runs(tmp_path)
    single = robustness_blocks(runs[:1], store.scores(tmp_path, runs[:1]), None, ["a"])
    assert single[1][1].startswith("Not computed: it needs two or more variants")


# ---------------------------------------------------------------- the alternative pass, for real


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    from test_pairs_eval import write_corpus

    root = tmp_path_factory.mktemp("robustness")
    write_corpus(root / "corpus", documents=12)
    return root


@pytest.fixture(scope="module")
def bert_run(root) -> Path:
    """A random-weight debug BERT run folder (tests/test_pairs_eval.py's maker), on its corpus."""
    from test_pairs_eval import make_run as make_preset_run

    return make_preset_run(root, "bert")


def _evaluate(run: Path, *overrides: str) -> dict:
    from arches.config import compose
    from harness.eval.command import evaluate

    cache = run.parent.parent / "cache"  # make_preset_run: <root>/results/bert beside <root>/cache
    return evaluate(compose([f"run={run}", f"cache_dir={cache}", "eval=quick", "eval.tasks=[pairs_swap]",
                             "eval.corpus.max_pairs=6", "eval.corpus.fewshot_pool=2", "eval.limit=4",
                             "eval.device=cpu", *overrides]))  # fmt: skip


def test_the_alternative_pass_is_recorded_apart_and_leaves_evals_as_they_were(bert_run):
    _evaluate(bert_run, "eval.alternative_formats=false")
    before = json.loads((bert_run / "run.json").read_text())
    assert "alternatives" not in before
    outcome = _evaluate(bert_run, "eval.alternative_formats=true")
    after = json.loads((bert_run / "run.json").read_text())
    strip = ("seconds", "evaluated_at", "provenance")
    assert {k: {f: v for f, v in e.items() if f not in strip} for k, e in after["evals"].items()} == \
        {k: {f: v for f, v in e.items() if f not in strip} for k, e in before["evals"].items()}
    entry = after["alternatives"]["pll"]["pairs_swap|0"]
    assert (entry["format"], entry["default_format"], entry["n"], entry["limit"], entry["seed"]) == \
        ("pll", "pll_word_l2r", 4, 4, 1234)
    assert entry["samples_file"] == "eval/alternatives/pll/samples-pairs_swap-0shot.jsonl"
    assert entry["results_file"] == "eval/alternatives/pll/results-pairs_swap-0shot.json"
    assert after["evals"]["pairs_swap|0"]["format"] == "pll_word_l2r"
    assert any("alternative format pll" in note for note in outcome["notes"])
    default = [json.loads(line) for line in (bert_run / after["evals"]["pairs_swap|0"]["samples_file"]).open()]
    other = [json.loads(line) for line in (bert_run / entry["samples_file"]).open()]
    assert [s["doc_id"] for s in other] == [s["doc_id"] for s in default]
    # PLL masks one token where PLL-word-l2r masks the rest of its word too: the scores differ
    assert [s["resps"] for s in other] != [s["resps"] for s in default]
    assert all(set(s) >= {"resps", "arguments", "acc", "target"} for s in other)


def test_a_bad_alternative_formats_value_is_one_line(bert_run):
    from arches.errors import UserError

    before = (bert_run / "run.json").read_bytes()
    with pytest.raises(UserError, match=r"eval.alternative_formats='yes' must be true or false"):
        _evaluate(bert_run, "eval.alternative_formats=yes")
    assert (bert_run / "run.json").read_bytes() == before


def test_a_task_the_alternative_format_cannot_score_is_recorded_as_skipped_and_the_rest_stays(root):
    """T5 trained 14-token targets (test_pairs_eval.SEQ_LEN): its sentinel format scores a longer line as
    successive blanks, the plain format has no such thing and refuses it; the main pass is kept."""
    from test_pairs_eval import make_run as make_preset_run

    run = make_preset_run(root, "t5")
    outcome = _evaluate(run, "eval.alternative_formats=true")
    record = json.loads((run / "run.json").read_text())
    assert record["evals"]["pairs_swap|0"]["format"] == "t5_sentinel" and record["evals"]["pairs_swap|0"]["n"] == 4
    skipped = record["alternatives"]["plain"]["pairs_swap|0"]
    assert skipped["samples_file"] is None and "does not fit the 14-token target" in skipped["skipped"]
    assert any(note.startswith("alternative format plain: pairs_swap not scored (") for note in outcome["notes"])
