"""`arches eval` end to end on a tiny, randomly initialised decoder saved as a run folder:
lm-eval's simple_evaluate over the bundled tasks at 0 and 1 shots, the files and the
record it writes; and each bad input, which is one line and leaves run.json as it was."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import composed, tiny_cfg, write_tiny_corpus
from omegaconf import OmegaConf

from arches.config import compose
from arches.errors import UserError
from arches.registry import family, model_config
from arches.train.record import update_record
from arches.train.run_folder import save_checkpoint, write_config
from harness.eval.command import evaluate

BUNDLED = ["corpus_ppl", "corpus_cloze", "corpus_next"]


def make_run(root: Path, corpus: Path, name: str = "run") -> Path:
    """A run folder the way training writes it, with a random tiny `gpt` decoder."""
    from arches.data.cache import prepare

    cfg = tiny_cfg(root / "cache", [corpus], val_fraction=0.1, test_fraction=0.1)
    prepared = prepare(cfg)
    arch = composed("gpt")[0]
    model_cfg = model_config(arch, {"d_model": 32, "n_layers": 2, "n_heads": 2, "max_len": 256}, prepared.vocab_size)
    torch.manual_seed(0)
    model = family(arch["family"]).build(model_cfg, arch)
    run_dir = root / name
    save_checkpoint(run_dir, model, arch["family"], arch, model_cfg)
    write_config(run_dir, {"seed": 0, "cache_dir": str(root / "cache"), "data": OmegaConf.to_container(cfg.data), "arch": arch})
    shutil.copyfile(prepared.tokenizer_path, run_dir / "tokenizer.json")
    update_record(run_dir, status="completed", run_name=name, family="decoder", preset="gpt",
                  tokenizer_hash=prepared.tokenizer_hash, evals={"earlier|0": {"task": "earlier", "shots": 0}})  # fmt: skip
    return run_dir


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("eval")
    write_tiny_corpus(root / "corpus", documents=30)
    return make_run(root, root / "corpus")


def eval_cfg(run_dir: Path, *overrides: str):
    cache = yaml.safe_load((run_dir / "config.yaml").read_text())["cache_dir"]
    return compose([f"run={run_dir}", f"cache_dir={cache}", "eval=quick", *overrides])


def test_evaluate_writes_scores_files_and_record(run):
    outcome = evaluate(eval_cfg(run, f"eval.tasks=[{','.join(BUNDLED)}]", "eval.num_fewshot=[0,1]", "eval.limit=3"))
    # rolling perplexity has no few-shot form: it is scored at 0 shots only
    expected = {"corpus_ppl|0", "corpus_cloze|0", "corpus_cloze|1", "corpus_next|0", "corpus_next|1"}
    assert set(outcome["evals"]) == expected
    record = json.loads((run / "run.json").read_text())
    assert set(record["evals"]) == expected | {"earlier|0"}  # merged with what was there
    from harness.lm.model import ArchesLM

    scoring_format = ArchesLM(run=str(run)).scoring_format
    for key in expected:
        entry = record["evals"][key]
        task, shots = key.split("|")
        assert (entry["task"], entry["shots"], entry["n"], entry["limit"]) == (task, int(shots), 3, 3)
        assert entry["format"] == scoring_format and entry["version"] == 1.0 and entry["seed"] == 1234
        assert (run / entry["results_file"]).is_file()
        results = json.loads((run / entry["results_file"]).read_text())
        assert list(results["results"]) == [task] and results["n-shot"][task] == int(shots) and "samples" not in results
        samples = [json.loads(line) for line in (run / entry["samples_file"]).read_text().splitlines()]
        assert [s["doc_id"] for s in samples] == [0, 1, 2]
    ppl = record["evals"]["corpus_ppl|0"]
    assert ppl["metrics"]["bits_per_byte"] > 0 and ppl["metrics"]["word_perplexity"] > 1 and ppl["chance"] is None
    cloze = record["evals"]["corpus_cloze|1"]
    assert set(cloze["metrics"]) == {"acc", "acc_stderr", "perplexity", "perplexity_stderr"}
    nxt = record["evals"]["corpus_next|1"]
    assert set(nxt["metrics"]) == {"acc", "acc_stderr", "acc_norm", "acc_norm_stderr"} and nxt["chance"] == 0.25
    # per-example outcomes for a paired bootstrap, and the 1-shot prompt as lm-eval built it
    samples = [json.loads(line) for line in (run / nxt["samples_file"]).read_text().splitlines()]
    assert sum(s["acc"] for s in samples) / 3 == pytest.approx(nxt["metrics"]["acc"])
    folder = Path(outcome["task_data"])
    pool = [json.loads(line)["context"] for line in (folder / "corpus_next.train.jsonl").read_text().splitlines()]
    for sample in samples:
        context = sample["arguments"][0][0]
        assert context.endswith("\n\n" + sample["doc"]["context"])
        assert any(context.startswith(shot) for shot in pool)
        assert len(sample["arguments"]) == 4 and "acc_norm" in sample


def expect_user_error(run_dir: Path, cfg, match: str) -> None:
    before = (run_dir / "run.json").read_bytes()
    with pytest.raises(UserError, match=match) as error:
        evaluate(cfg)
    assert "\n" not in str(error.value)
    assert (run_dir / "run.json").read_bytes() == before


def test_a_run_folder_without_a_checkpoint(run, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(run, broken, ignore=shutil.ignore_patterns("checkpoint", "eval"))
    expect_user_error(broken, eval_cfg(broken), "has no checkpoint")


def test_a_tokenizer_that_is_not_the_checkpoint_s(run, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(run, other, ignore=shutil.ignore_patterns("eval"))
    record = json.loads((other / "run.json").read_text())
    record["tokenizer_hash"] = "0" * 64
    (other / "run.json").write_text(json.dumps(record))
    expect_user_error(other, eval_cfg(other), "tokenizer hash")


def test_an_unknown_task_names_the_closest(run):
    expect_user_error(run, eval_cfg(run, "eval.tasks=[corpus_clozee]"), "Did you mean 'corpus_cloze'")


def test_a_standard_task_offline_names_the_offline_alternatives(run):
    expect_user_error(run, eval_cfg(run, "eval.tasks=[corpus_next,hellaswag]"), "offline.*corpus_ppl.*BIG-bench")
    # optional (`?`): skipped with a note instead
    outcome = evaluate(eval_cfg(run, "eval.tasks=[corpus_next,hellaswag?,hyperbaton?]", "eval.limit=2"))
    assert set(outcome["evals"]) == {"corpus_next|0"}
    assert [name for name, _ in outcome["skipped"]] == ["hyperbaton", "hellaswag"]


def test_more_shots_than_the_few_shot_split_holds(run):
    expect_user_error(run, eval_cfg(run, "eval.tasks=[corpus_next]", "eval.num_fewshot=[0,1000]"), "few-shot split")


def test_an_empty_task(tmp_path):
    # held-out text whose lines never end in a word: nothing to build corpus_cloze from
    corpus = tmp_path / "corpus"
    write_tiny_corpus(corpus, documents=30)
    for path in corpus.iterdir():
        path.write_text("".join(line + " 1999\n" for line in path.read_text().splitlines()))
    run_dir = make_run(tmp_path, corpus)
    expect_user_error(run_dir, eval_cfg(run_dir, "eval.tasks=[corpus_cloze]"), "corpus_cloze' has no examples")


def test_limit_auto_scores_cpu_limit_examples_per_task_on_a_cpu(run):
    # eval=default's limit: auto is every example on a GPU and eval.cpu_limit on a CPU
    cfg = eval_cfg(run, "eval.tasks=[corpus_next]", "eval.limit=auto", "eval.cpu_limit=4", "eval.device=cpu")
    outcome = evaluate(cfg)
    entry = outcome["evals"]["corpus_next|0"]
    assert (entry["n"], entry["limit"]) == (4, 4) and entry["n_available"] > 4
    assert outcome["limit_note"].startswith("eval.limit=auto: 4 examples per task on a CPU")
    assert json.loads((run / "run.json").read_text())["evals"]["corpus_next|0"]["limit"] == 4
    default = compose(["eval=default"]).eval
    assert (default.limit, default.cpu_limit) == ("auto", 100)


def test_an_explicit_limit_has_no_note(run):
    outcome = evaluate(eval_cfg(run, "eval.tasks=[corpus_next]", "eval.limit=2", "eval.device=cpu"))
    assert outcome["evals"]["corpus_next|0"]["limit"] == 2 and outcome["limit_note"] is None


@pytest.mark.parametrize("overrides, message", [
    (["eval.tasks=[corpus_clozee]"], "unknown task 'corpus_clozee'"),
    (["eval.tasks=[corpus_next]", "eval.num_fewshot=[1000]"], "few-shot split"),
    (["eval.tasks=[corpus_next]", "eval.limit=-3"], "eval.limit=-3 must be an integer >= 1, null or auto"),
    (["eval.tasks=[corpus_next]", "eval.limit=auto", "eval.cpu_limit=0", "eval.device=cpu"],
     "eval.cpu_limit=0 must be an integer >= 1"),
])  # fmt: skip
def test_the_cli_prints_one_line_and_exits_2(run, overrides, message):
    before = (run / "run.json").read_bytes()
    cache = yaml.safe_load((run / "config.yaml").read_text())["cache_dir"]
    result = subprocess.run(
        [sys.executable, "-m", "arches.cli", "eval", f"run={run}", f"cache_dir={cache}", *overrides],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert (run / "run.json").read_bytes() == before


def test_the_cli_scores_quietly_outside_a_git_checkout(run, tmp_path):
    # lm-eval asks git for a commit hash; outside a checkout git must not print "fatal: ..."
    cache = yaml.safe_load((run / "config.yaml").read_text())["cache_dir"]
    result = subprocess.run(
        [sys.executable, "-m", "arches.cli", "eval", f"run={run}", f"cache_dir={cache}", "eval=quick",
         "eval.tasks=[corpus_next]", "eval.limit=2"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "GIT_CEILING_DIRECTORIES": str(tmp_path.parent)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "fatal:" not in result.stderr and "corpus_next" in result.stdout


def test_the_readme_lm_eval_command_finds_the_runs_corpus_tasks(run, tmp_path):
    # The README's `arches lm-eval --model arches --model_args run=... --tasks corpus_next
    # --include_path harness/tasks`, with nothing else set: the run's task data is built and
    # found (it used to need ARCHES_TASK_DATA, named only by the error).
    env = {k: v for k, v in os.environ.items() if k != "ARCHES_TASK_DATA"}
    result = subprocess.run(
        [sys.executable, "-m", "arches.cli", "lm-eval", "--model", "arches", "--model_args", f"run={run}",
         "--tasks", "corpus_next", "--include_path", "harness/tasks", "--limit", "2",
         "--output_path", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parents[1], env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "corpus_next" in result.stdout and "acc" in result.stdout
