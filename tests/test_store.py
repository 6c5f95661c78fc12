"""The store: run folders are the source of truth; the index and the score table are rebuilt from them."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
from fixtures.run_folders import make_run

from arches.errors import UserError
from harness import store


def test_load_runs_reads_every_run_and_skips_temporary_files(tmp_path):
    make_run(tmp_path, "b-run", variant="bert", family="encoder", objective="mlm")
    make_run(tmp_path, "a-run", variant="gpt", seed=1)
    (tmp_path / "a-run" / ".run.json.x1y2.tmp").write_text("{half a record")  # an interrupted write
    hidden = tmp_path / ".staging"
    hidden.mkdir()
    (hidden / "run.json").write_text("{not json")
    (tmp_path / "not-a-run").mkdir()  # a folder without run.json

    runs = store.load_runs(tmp_path)

    assert [r["run_name"] for r in runs] == ["b-run", "a-run"]  # sorted by variant
    assert runs[1]["run_dir"] == str(tmp_path / "a-run")
    assert runs[0]["tuned"] is False


def test_load_runs_fills_optional_fields(tmp_path):
    run_dir = make_run(tmp_path, "old", variant="gpt")
    record = json.loads((run_dir / "run.json").read_text())
    for key in ("variant", "experiment", "evals"):
        record.pop(key)
    (run_dir / "run.json").write_text(json.dumps(record))

    (run,) = store.load_runs(tmp_path)

    assert run["variant"] == "gpt"  # the preset
    assert run["experiment"] == tmp_path.name
    assert run["tuned"] is False and run["evals"] == {}


def test_corrupted_record_is_a_user_error_naming_the_file(tmp_path):
    make_run(tmp_path, "good", variant="gpt")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "run.json").write_text('{"status": "comp')

    with pytest.raises(UserError, match=r"broken/run\.json is corrupted"):
        store.load_runs(tmp_path)


def test_missing_and_empty_folders_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        store.load_runs(tmp_path / "nowhere")
    with pytest.raises(UserError, match="has no runs"):
        store.require_runs(tmp_path)


def test_mixed_tokenizers_are_refused_naming_the_runs(tmp_path):
    make_run(tmp_path, "gpt-s0", variant="gpt", tokenizer_hash="1111aaaa2222bbbb")
    make_run(tmp_path, "bert-s0", variant="bert", tokenizer_hash="3333cccc4444dddd")
    make_run(tmp_path, "t5-s0", variant="t5", tokenizer_hash="1111aaaa2222bbbb")

    with pytest.raises(UserError) as caught:
        store.require_runs(tmp_path)

    message = str(caught.value)
    assert "\n" not in message
    assert "1111aaaa2222: gpt-s0, t5-s0" in message and "3333cccc4444: bert-s0" in message


def test_index_has_one_row_per_run_and_is_written_atomically(tmp_path):
    make_run(tmp_path, "gpt-s0", variant="gpt")
    make_run(tmp_path, "gpt-s1", variant="gpt", seed=1, status="failed", error="out of memory")

    table = store.index(tmp_path)
    path = store.write_index(tmp_path)

    assert list(table["run_name"]) == ["gpt-s0", "gpt-s1"]
    assert list(table["status"]) == ["completed", "failed"]
    assert table.loc[0, "params_total"] == 1_234_567
    assert json.loads(table.loc[0, "knobs"]) == {"norm": "layernorm", "position": "learned"}
    assert path == tmp_path / "index.parquet"
    assert pd.read_parquet(path).shape[0] == 2
    assert not list(tmp_path.glob(".*tmp"))


def test_index_is_rebuilt_not_edited(tmp_path):
    make_run(tmp_path, "gpt-s0", variant="gpt")
    store.write_index(tmp_path)
    make_run(tmp_path, "gpt-s1", variant="gpt", seed=1)

    assert pd.read_parquet(store.write_index(tmp_path))["run_name"].tolist() == ["gpt-s0", "gpt-s1"]


def test_scores_long_table(tmp_path):
    make_run(
        tmp_path, "gpt-s0", variant="gpt",
        scores={("hyperbaton", 0): {"acc": 0.6, "acc_stderr": 0.02, "chance": 0.5},
                ("corpus_ppl", 0): {"bits_per_byte": 1.5, "word_perplexity": 80.0}},
        samples={("hyperbaton", 0): {"acc": [1, 0, 1]}},
    )
    make_run(tmp_path, "gpt-s1", variant="gpt", seed=1, status="failed", error="boom")

    table = store.scores(tmp_path)

    assert list(table.columns) == list(store.SCORE_COLUMNS)
    assert len(table) == 3  # acc, bits_per_byte, word_perplexity of the completed run; stderr is a column
    acc = table[table["metric"] == "acc"].iloc[0]
    assert (acc["variant"], acc["seed"], acc["task"], acc["shots"]) == ("gpt", 0, "hyperbaton", 0)
    assert acc["value"] == 0.6 and acc["stderr"] == 0.02 and acc["chance"] == 0.5 and acc["n"] == 3
    assert acc["samples_file"] == str(tmp_path / "gpt-s0" / "eval" / "samples-hyperbaton-0shot.jsonl")
    bpb = table[table["metric"] == "bits_per_byte"].iloc[0]
    assert math.isnan(bpb["stderr"]) and pd.isna(bpb["samples_file"])
    assert store.load_samples(acc["samples_file"], "acc") == {0: 1, 1: 0, 2: 1}


def test_index_of_a_results_root_covers_every_experiment(tmp_path):
    make_run(tmp_path / "families", "gpt-s0", variant="gpt", experiment="families")
    record_path = make_run(tmp_path / "knobs", "rope-s0", variant="rope") / "run.json"
    record = json.loads(record_path.read_text())
    del record["experiment"]  # recorded before experiments were named: the folder names it
    record_path.write_text(json.dumps(record))

    table = pd.read_parquet(store.write_index(tmp_path))

    assert table[["experiment", "variant"]].values.tolist() == [["families", "gpt"], ["knobs", "rope"]]
    assert store.load_runs(tmp_path) == []  # the report reads one experiment's folder, not the root
