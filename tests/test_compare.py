"""`arches compare`: experiments compose and train, the whole pipeline runs at debug
size, a second invocation skips finished work, and a killed comparison resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import local_corpus

from arches.config import compose, group_choices
from arches.registry import family, model_config, plain
from harness.compare import plan

EXPERIMENTS = group_choices("experiment")
# ladder_gpu's rungs are 23M-740M parameters, and quick=true keeps a ladder's sizes: one of
# its training steps on a CPU takes minutes and, for t5 at `base`, more memory than a CI
# machine has (it was OOM-killed at 23 GB). Its plan is tested with every experiment's; its
# training is the GPU's.
CPU_EXPERIMENTS = [name for name in EXPERIMENTS if name != "ladder_gpu"]


def local_overrides(tmp_path: Path) -> list[str]:
    return [*local_corpus(tmp_path), f"results_dir={tmp_path / 'results'}"]


def test_the_paper_experiments_exist():
    assert {"families", "seed_models", "wang2022", "knobs"} <= set(EXPERIMENTS)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_shipped_experiment_runs_three_seeds_and_quick_runs_one(experiment, tmp_path):
    # a claim must test training-seed variance (issue 16): one seed per variant only tests its examples
    cfg, runs, _ = plan([f"experiment={experiment}", *local_overrides(tmp_path)])
    assert len(set(cfg.experiment.seeds)) >= 3
    assert {run.seed for run in runs} == set(cfg.experiment.seeds)
    _, quick_runs, _ = plan([f"experiment={experiment}", *local_overrides(tmp_path), "quick=true"])
    assert {run.seed for run in quick_runs} == {0}  # a smoke check
    _, chosen, _ = plan([f"experiment={experiment}", *local_overrides(tmp_path), "quick=true", "experiment.seeds=[3,4]"])
    assert {run.seed for run in chosen} == {3, 4}  # the user's seeds win over quick's


@pytest.mark.parametrize("experiment", CPU_EXPERIMENTS)
def test_experiment_composes_and_each_variant_trains_one_step(experiment, tmp_path):
    from arches.train.loop import train

    cfg, runs, _ = plan([f"experiment={experiment}", *local_overrides(tmp_path), "quick=true"])
    assert cfg.experiment.name == experiment
    rungs = len((cfg.experiment.get("ladder") or {}).get("sizes") or [None])  # a ladder: each variant x seed per size
    assert len(runs) == len(cfg.experiment.variants) * len(cfg.experiment.seeds) * rungs
    hashes = set()
    for run in runs:
        run_cfg = compose([*run.overrides, *local_overrides(tmp_path), "trainer.max_steps=1",
                           f"run_name={run.run_dir.name if run.size is None else run.size + '-' + run.run_dir.name}"])
        assert run_cfg.size.name == (run.size or "debug")  # quick=true (a ladder keeps its rungs' sizes)
        model_config(plain(run_cfg.arch), run_cfg.size, 512, int(run_cfg.data.seq_len))
        record = train(run_cfg)
        assert record["status"] == "completed" and record["steps"] == 1
        assert record["variant"] == run.variant and record["experiment"] == experiment
        hashes.add(record["tokenizer_hash"])
        family(record["family"])
    assert len(hashes) == 1  # every variant saw the same tokenizer


def compare_cmd(tmp_path: Path, *extra: str) -> list[str]:
    # 128-token windows: the corpus_next lines (up to ~80 tokens at vocab 512) must fit the
    # trained window, since a continuation longer than it is refused (harness.lm.model)
    return [sys.executable, "-m", "arches.cli", "compare", "experiment=families", "quick=true",
            *local_overrides(tmp_path), "data.seq_len=128", *extra]


def env() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def test_compare_end_to_end_then_skips_finished_work(tmp_path):
    first = subprocess.run(compare_cmd(tmp_path), capture_output=True, text=True, env=env(), timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    report = Path(first.stdout.strip().splitlines()[-1])
    assert report.name == "report.md" and report.exists()
    assert (report.parent / "report.html").exists() and (report.parent / "baseline.json").exists()
    folder = report.parent
    records = {p.parent.name: json.loads(p.read_text()) for p in folder.glob("*/run.json")}
    assert set(records) == {"gpt-seed0", "bert-seed0", "t5-seed0", "glm-seed0"}
    for record in records.values():
        assert record["status"] == "completed" and record["compared_shots"] == [0]
        assert any(key.startswith("corpus_ppl|") for key in record["evals"])
    text = report.read_text()
    for variant in ("gpt", "bert", "t5", "glm", "unigram baseline"):
        assert variant in text

    # a second invocation trains and evaluates nothing again
    before = {name: (folder / name / "run.json").stat().st_mtime_ns for name in records}
    second = subprocess.run(compare_cmd(tmp_path), capture_output=True, text=True, env=env(), timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "] training" not in second.stderr and "] evaluating" not in second.stderr
    after = {name: (folder / name / "run.json").stat().st_mtime_ns for name in records}
    assert before == after


def test_killed_compare_resumes_without_redoing_a_run(tmp_path):
    process = subprocess.Popen(compare_cmd(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env())
    first_record = tmp_path / "results" / "families-quick" / "gpt-seed0" / "run.json"
    deadline = time.time() + 600
    while time.time() < deadline:
        if first_record.exists() and json.loads(first_record.read_text()).get("compared_shots"):
            break
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        time.sleep(0.5)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = json.loads(first_record.read_text())
    assert done["status"] == "completed"

    rerun = subprocess.run(compare_cmd(tmp_path), capture_output=True, text=True, env=env(), timeout=900)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "] training gpt" not in rerun.stderr  # the finished run was not trained again
    assert "] evaluating gpt" not in rerun.stderr
    assert json.loads(first_record.read_text())["wall_time_s"] == done["wall_time_s"]
    folders = sorted(p.name for p in (tmp_path / "results" / "families-quick").iterdir() if p.is_dir())
    assert folders == ["bert-seed0", "glm-seed0", "gpt-seed0", "t5-seed0"]
    for name in folders:
        assert json.loads((tmp_path / "results" / "families-quick" / name / "run.json").read_text())["status"] == "completed"


def test_unknown_experiment_is_one_line_and_exit_2(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "arches.cli", "compare", "experiment=famlies", *local_overrides(tmp_path)],
        capture_output=True, text=True, env=env(), timeout=120,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "families" in lines[0] and "famlies" in lines[0]
    assert not (tmp_path / "results").exists()


# ---------------------------------------------------------------- integrity


def one_variant_cmd(tmp_path: Path, *extra: str) -> list[str]:
    """The families experiment cut to gpt alone, quick, scored on one cheap task."""
    return [sys.executable, "-m", "arches.cli", "compare", "experiment=families", "quick=true",
            *local_overrides(tmp_path), "~experiment.variants.bert=['arch=bert']",
            "~experiment.variants.t5=['arch=t5']", "~experiment.variants.glm=['arch=glm']",
            "train.max_tokens=2048", "eval.tasks=[corpus_cloze]", "eval.limit=4", *extra]  # fmt: skip


def test_quick_runs_live_apart_from_the_full_comparison(tmp_path):
    _, quick_runs, _ = plan(["experiment=knobs", *local_overrides(tmp_path), "quick=true"])
    _, full_runs, _ = plan(["experiment=knobs", *local_overrides(tmp_path)])
    assert {run.run_dir.parent.name for run in quick_runs} == {"knobs-quick"}
    assert {run.run_dir.parent.name for run in full_runs} == {"knobs"}


def test_a_run_trained_under_another_config_is_never_reused(tmp_path):
    first = subprocess.run(one_variant_cmd(tmp_path), capture_output=True, text=True, env=env(), timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    run = tmp_path / "results" / "families-quick" / "gpt-seed0"
    trained = (run / "run.json").stat().st_mtime_ns

    # the same experiment asking for twice the tokens: refused, in one line, before any work
    refused = subprocess.run(one_variant_cmd(tmp_path, "train.max_tokens=4096"), capture_output=True, text=True,
                             env=env(), timeout=300)  # fmt: skip
    assert refused.returncode == 2
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "gpt-seed0" in lines[0] and "train.max_tokens=2048 there, 4096 here" in lines[0]
    assert "compare.rerun_mismatched=true" in lines[0]
    assert (run / "run.json").stat().st_mtime_ns == trained

    # asked to, it moves the old run aside (never deletes it) and trains the one asked for
    rerun = subprocess.run(one_variant_cmd(tmp_path, "train.max_tokens=4096", "compare.rerun_mismatched=true"),
                           capture_output=True, text=True, env=env(), timeout=600)  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert json.loads((run / "run.json").read_text())["tokens_seen"] >= 4096
    (moved,) = (tmp_path / "results" / "families-quick" / ".mismatched").iterdir()
    assert json.loads((moved / "run.json").read_text())["tokens_seen"] < 4096
    assert "gpt" in (tmp_path / "results" / "families-quick" / "report.md").read_text()


@pytest.mark.parametrize("flag", ["quick=no", "compare.rerun_mismatched=maybe"])
def test_a_flag_that_is_not_true_or_false_is_one_line(flag, tmp_path):
    result = subprocess.run([sys.executable, "-m", "arches.cli", "compare", "experiment=families", flag,
                             *local_overrides(tmp_path)], capture_output=True, text=True, env=env(), timeout=120)  # fmt: skip
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "must be true or false" in lines[0] and flag.split("=")[0] in lines[0]
    assert not (tmp_path / "results").exists()
