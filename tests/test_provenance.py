"""Provenance: the code, libraries and device behind every record and report, and the
n behind every score. A real checkout, a real copy outside git, a real debug training
(crashed, then resumed under "other code") and a real lm-eval evaluation of it."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
from conftest import local_corpus
from fixtures.run_folders import make_run

from arches import provenance as prov
from arches.config import compose
from harness import report

REPO = Path(__file__).resolve().parents[1]
OLD_COMMIT = "0" * 40


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, check=True).stdout


# ---------------------------------------------------------------- what provenance() says


def test_provenance_names_the_installed_versions_and_this_checkout():
    record = prov.provenance()

    assert record["arches_version"] == importlib.metadata.version("arches")
    for name in ("torch", "lightning", "lm-eval", "transformers", "tokenizers", "optuna", "hydra-core"):
        assert record["libraries"][name] == importlib.metadata.version(name), name
    assert record["python"] == platform.python_version()
    assert record["git_commit"] == git("rev-parse", "HEAD").strip()
    assert isinstance(record["git_dirty"], bool)
    assert record["git_dirty"] == bool(git("status", "--porcelain").strip())
    json.dumps(record)  # a run.json field as it is


def test_device_info_names_the_cpu_and_the_dtype():
    info = prov.device_info("cpu", "32-true")
    assert (info["kind"], info["count"], info["cuda"], info["dtype"]) == ("cpu", 1, None, "32-true")
    assert info["name"] and info["name"] == prov.cpu_name()


def _provenance_in(folder: Path, path: str | None = None) -> dict:
    """provenance() in a fresh interpreter that imports arches from `folder` (git looks no higher)."""
    code = ("import json, sys; from arches import provenance as p; "
            "print(json.dumps({**p.provenance(), 'file': p.__file__, 'torch': 'torch' in sys.modules}))")  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(folder), "GIT_CEILING_DIRECTORIES": str(folder.parent)}
    if path is not None:
        env["PATH"] = path
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=folder, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_copy_outside_git_or_without_git_has_no_commit_and_does_not_fail(tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(REPO / "arches", copy / "arches", ignore=shutil.ignore_patterns("__pycache__"))

    outside = _provenance_in(copy)
    assert Path(outside["file"]).is_relative_to(copy)  # the copy, not the checkout
    assert (outside["git_commit"], outside["git_dirty"]) == (None, None)
    assert outside["arches_version"] == importlib.metadata.version("arches")
    assert outside["torch"] is False  # importing it stays light

    # a copy inside some other repository (a venv in a checkout) is not that repository's commit
    subprocess.run(["git", "init", "-q", str(copy)], check=True)
    subprocess.run(["git", "-C", str(copy), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q",
                    "--allow-empty", "-m", "other"], check=True)  # fmt: skip
    assert _provenance_in(copy)["git_commit"] is None

    # no git at all: the checkout's own package, with git missing from PATH
    no_git = _provenance_in(REPO, path=str(tmp_path / "empty"))
    assert (no_git["git_commit"], no_git["git_dirty"]) == (None, None)


# ---------------------------------------------------------------- run.json of a trained run


class Crash(Exception):
    pass


class CrashAtStep3(L.Callback):
    def on_train_batch_start(self, trainer, *args) -> None:
        if trainer.global_step == 3:
            raise Crash("the machine went away")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A debug gpt run that crashed at step 3 (after its step-2 checkpoint), its record made
    to look as if that attempt ran under an older commit, then resumed to completion."""
    from arches.train.loop import train

    root = tmp_path_factory.mktemp("provenance")
    overrides = [*local_corpus(root), f"results_dir={root / 'results'}", "run_name=gpt", "size=debug",
                 "train.micro_batch_size=4", "train.checkpoint_interval=2", "train.val_interval=2",
                 "trainer.max_steps=4"]  # fmt: skip
    run_dir = root / "results" / "gpt"
    with pytest.raises(Crash):
        train(compose(overrides), callbacks=[CrashAtStep3()])
    record = json.loads((run_dir / "run.json").read_text())
    first = record["provenance"]
    assert record["status"] == "failed" and "provenance_history" not in record
    record["provenance"] = {**first, "git_commit": OLD_COMMIT}
    (run_dir / "run.json").write_text(json.dumps(record))
    train(compose(overrides))
    return run_dir


def test_a_trained_runs_record_holds_its_provenance(trained):
    record = json.loads((trained / "run.json").read_text())
    assert record["status"] == "completed" and record["resumed"][0]["from_step"] == 2

    expected = {**prov.provenance(), "device": prov.device_info("cpu", "32-true", count=1)}
    assert record["provenance"] == json.loads(json.dumps(expected))
    # the first attempt ran under "other code": both are kept, numbered like `resumed`
    history = record["provenance_history"]
    assert [(h["attempt"], h["provenance"]["git_commit"]) for h in history] == [
        (0, OLD_COMMIT), (1, expected["git_commit"])]  # fmt: skip


def test_attempts_under_the_same_provenance_keep_no_history():
    current = {**prov.provenance(), "device": prov.device_info("cpu", "32-true")}
    assert prov.attempt_fields({}, current) == {"provenance": current}
    resumed = {"status": "failed", "provenance": current, "resumed": [{"from_step": 2}]}
    assert prov.attempt_fields(resumed, dict(current)) == {"provenance": current}
    # a third attempt on another device extends the history of a run that already has one
    gpu = {**current, "device": {**current["device"], "kind": "cuda", "name": "NVIDIA H200"}}
    history = [{"attempt": 0, "provenance": {**current, "git_commit": OLD_COMMIT}},
               {"attempt": 1, "provenance": current}]
    third = prov.attempt_fields({"provenance": current, "provenance_history": history, "resumed": [{}, {}]}, gpu)
    assert [h["attempt"] for h in third["provenance_history"]] == [0, 1, 3] and third["provenance"] == gpu


# ---------------------------------------------------------------- the evaluation's record


def test_evaluation_records_what_scored_and_n_per_score(trained):
    from harness.eval.command import evaluate

    cache = next(arg for arg in local_corpus(trained.parents[1]) if arg.startswith("cache_dir="))
    evaluate(compose([f"run={trained}", cache, "eval=quick", "eval.tasks=[corpus_cloze]", "eval.limit=2",
                      "eval.device=cpu", "eval.batch_size=4"]))  # fmt: skip

    entry = json.loads((trained / "run.json").read_text())["evals"]["corpus_cloze|0"]
    lm_eval_says = json.loads((trained / entry["results_file"]).read_text())["n-samples"]["corpus_cloze"]
    assert (entry["n"], entry["n_available"]) == (2, lm_eval_says["original"]) and lm_eval_says["original"] > 2
    scored_by = entry["provenance"]
    assert scored_by["libraries"]["lm-eval"] == importlib.metadata.version("lm-eval")
    assert scored_by["git_commit"] == prov.provenance()["git_commit"]
    assert (scored_by["device"]["kind"], scored_by["device"]["dtype"]) == ("cpu", "float32")
    assert (scored_by["batch_size"], scored_by["batch_size_used"]) == (4, 4)


# ---------------------------------------------------------------- the report


def test_the_report_shows_provenance_and_n_per_score(tmp_path):
    here = prov.provenance()
    cpu = {**here, "device": prov.device_info("cpu", "32-true")}
    gpu = {**here, "device": {"kind": "cuda", "name": "NVIDIA H200", "count": 4, "cuda": "12.4", "dtype": "bf16-mixed"}}
    scored_by = {**here, "device": prov.device_info("cpu", "float32"), "batch_size": "auto", "batch_size_used": 16}
    task = {("hyperbaton", 0): {"acc": 0.6, "acc_stderr": 0.02, "chance": 0.5}}
    resumed = [{"attempt": 0, "provenance": {**cpu, "git_commit": OLD_COMMIT}}, {"attempt": 1, "provenance": cpu}]
    for name, variant, trained_on, history in (("gpt-s0", "gpt", cpu, resumed), ("opt-s0", "opt", gpu, None)):
        run_dir = make_run(tmp_path, name, variant=variant, scores=task, provenance=trained_on,
                           **({"provenance_history": history} if history else {}))
        record = json.loads((run_dir / "run.json").read_text())
        record["evals"]["hyperbaton|0"].update(n=100, n_available=497, provenance=scored_by)
        (run_dir / "run.json").write_text(json.dumps(record))
    make_run(tmp_path, "bert-s0", variant="bert", family="encoder", scores=task)  # an old record: no n, no provenance

    markdown = report.write_report(tmp_path).read_text()
    page = (tmp_path / "report.html").read_text()

    header = markdown[markdown.index("## Provenance") : markdown.index("## Runs")]
    commit = f"`{here['git_commit'][:12]}`"
    assert f"arches {here['arches_version']}, commit {commit}" in header
    assert f"torch {here['libraries']['torch']}, lightning {here['libraries']['lightning']}" in header
    assert "not recorded (`bert-s0`)" in header  # the old record is named, not guessed
    dirty = ", dirty" if here["git_dirty"] else ""
    assert f"commit `{OLD_COMMIT[:12]}`{dirty} (`gpt-s0`)" in header  # each attempt of a resumed run
    assert "**resumed under other code or device**: `gpt-s0`" in header
    assert "cpu (" in header and "cuda (NVIDIA H200) × 4, CUDA 12.4, dtype bf16-mixed (`opt-s0`)" in header
    assert "**device (training)**: differ between runs" in header
    assert "dtype float32, batch size auto (16)" in header
    assert "| task | shots | metric | chance | n | bert | gpt | opt |" in markdown
    assert "| hyperbaton | 0 | acc ↑ | 0.500 | bert —; gpt 100 of 497; opt 100 of 497 |" in markdown
    # the same in the HTML
    assert "<h2>Provenance</h2>" in page and "NVIDIA H200" in page and f"<code>{here['git_commit'][:12]}</code>" in page
    assert "<th>n</th>" in page and "gpt 100 of 497" in page
    scores = (tmp_path / "scores.csv").read_text().splitlines()
    assert scores[0].split(",")[-2:] == ["n", "n_available"] and any(",100,497" in line for line in scores)


def test_n_reads_all_of_and_missing():
    from harness.provenance import n_text

    assert (n_text(100, 497), n_text(497, 497), n_text(3, None), n_text(None, 497)) == (
        "100 of 497", "all 497", "3", "—")  # fmt: skip
    assert n_text(float("nan"), float("nan")) == "—"  # what pandas makes of a missing n
