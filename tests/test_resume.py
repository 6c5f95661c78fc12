"""Crash tests: real subprocesses killed with SIGKILL at known points, then rerun.

- `arches train` killed while writing a periodic checkpoint resumes from the one
  before and ends with the weights, losses and logs of an uninterrupted run.
- `arches compare` killed during training, during evaluation and during report
  writing redoes no finished run or evaluation, keeps the evaluation's cached
  requests, and leaves no partial record.

The kill points come from the `ARCHES_TEST_PAUSE_AT` hook (arches.train.run_folder.pause_point):
the process writes a flag file and sleeps there, so the kill lands where intended.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import local_corpus

from arches.train.run_folder import CHECKPOINT_DIR, LIGHTNING_DIR


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> list[str]:
    """Overrides for the tiny local corpus, its cache prepared once for the module."""
    return local_corpus(tmp_path_factory.mktemp("resume"))


def env(pause: str | None = None) -> dict:
    # one torch thread: debug-size models gain nothing from more, and on a loaded machine
    # spinning OpenMP threads cost a 40-fold slowdown
    variables = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    variables.pop("ARCHES_TEST_PAUSE_AT", None)
    if pause:
        variables["ARCHES_TEST_PAUSE_AT"] = pause
    return variables


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "arches.cli", *args]


def run_until_paused(command: list[str], point: str, flag: Path, timeout: float = 300) -> subprocess.Popen:
    """Start `command`, wait until it pauses at `point`, SIGKILL it; returns the dead process."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env(f"{point}@{flag}"))
    deadline = time.time() + timeout
    while not flag.exists():
        if process.poll() is not None:
            pytest.fail(f"{command[3]} ended before pausing at {point}:\n{process.stderr.read().decode()[-3000:]}")
        assert time.time() < deadline, f"{point} not reached in {timeout} s"
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    return process


def metrics_rows(run_dir: Path) -> list[dict]:
    """logs/metrics.csv without the throughput column (wall-clock time is not reproducible)."""
    with open(run_dir / "logs" / "metrics.csv", newline="") as handle:
        return [{k: v for k, v in row.items() if k != "tok/s"} for row in csv.DictReader(handle)]


def weights(run_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(run_dir / CHECKPOINT_DIR / "model.safetensors")


# ---------------------------------------------------------------- train


def test_training_killed_mid_checkpoint_resumes_to_the_uninterrupted_weights(corpus, tmp_path):
    # GLM (the collator that draws most randomness), dropout (the torch RNG), gradient
    # accumulation over an epoch of an odd number of micro batches (29): the kill lands
    # while the step-16 checkpoint is written; the resumed run crosses into epoch 1.
    common = [
        *corpus, f"results_dir={tmp_path}", "arch=glm", "size=debug", "+size.dropout=0.1",
        "train.micro_batch_size=10", "train.grad_accum=2", "trainer.max_steps=18", "train.val_interval=4",
        "train.checkpoint_interval=8", "train.keep_checkpoints=2", "train.log_interval=1",
    ]  # fmt: skip
    uninterrupted = subprocess.Popen(
        cli("train", *common, "run_name=uninterrupted"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env()
    )
    run_until_paused(cli("train", *common, "run_name=killed"), "checkpoint-write:killed:16", tmp_path / "paused")

    killed = tmp_path / "killed"
    lightning = killed / CHECKPOINT_DIR / LIGHTNING_DIR
    assert sorted(p.name for p in lightning.glob("step*.ckpt")) == ["step00000008.ckpt"]
    assert len(list(lightning.glob(".step00000016.ckpt.*.tmp"))) == 1  # the half-written one: never under its name
    assert json.loads((killed / "run.json").read_text())["status"] == "running"

    # another config is refused, and the folder is left as it was
    before = (killed / "run.json").read_bytes()
    refused = subprocess.run(cli("train", *common, "train.lr=0.002", "run_name=killed"),
                             capture_output=True, text=True, env=env(), timeout=300)  # fmt: skip
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert refused.stderr.count("\n") == 1 and "train.lr=0.001 there, 0.002 here" in refused.stderr
    assert (killed / "run.json").read_bytes() == before

    resumed = subprocess.run(cli("train", *common, "run_name=killed"), capture_output=True, text=True, env=env(), timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming killed from step00000008.ckpt" in resumed.stderr
    _, err = uninterrupted.communicate(timeout=300)
    assert uninterrupted.returncode == 0, err.decode()[-3000:]

    reference, record_a = tmp_path / "uninterrupted", json.loads((tmp_path / "uninterrupted" / "run.json").read_text())
    record_b = json.loads((killed / "run.json").read_text())
    assert record_b["status"] == "completed" and record_b["resumed"][0]["from_step"] == 8
    a, b = weights(reference), weights(killed)
    assert a.keys() == b.keys()
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-6
    assert abs(record_a["final_val_loss"] - record_b["final_val_loss"]) <= 1e-6
    assert record_a["val_history"] == record_b["val_history"]  # every validation, none lost to the kill
    for key in ("steps", "tokens_seen", "loss_tokens_seen"):
        assert record_a[key] == record_b[key]
    # the training log as well: the rows before the checkpoint kept, none twice
    assert metrics_rows(reference) == metrics_rows(killed)
    # done: the training checkpoints (and the temp file of the killed save) are gone
    assert not (killed / CHECKPOINT_DIR / LIGHTNING_DIR).exists()
    assert not list(killed.rglob("*.tmp"))


# ---------------------------------------------------------------- compare


def test_compare_killed_in_training_evaluation_and_report_redoes_nothing(corpus, tmp_path):
    # one variant (gpt) of the families experiment, at quick size with a few steps
    command = cli(
        "compare", "experiment=families", "quick=true", *corpus, f"results_dir={tmp_path}",
        "~experiment.variants.bert=['arch=bert']", "~experiment.variants.t5=['arch=t5']",
        "~experiment.variants.glm=['arch=glm']", "train.max_tokens=2048", "train.checkpoint_interval=4",
        "eval.tasks=[corpus_cloze,corpus_ppl]", "eval.limit=8", "eval.batch_size=4",
    )  # fmt: skip
    folder = tmp_path / "families-quick"  # quick runs have their own folder
    run = folder / "gpt-seed0"

    def record() -> dict:
        return json.loads((run / "run.json").read_text())

    def cached() -> dict:
        with sqlite3.connect(run / "eval" / "cache.sqlite") as connection:
            return dict(connection.execute("SELECT request, rowid FROM results"))

    # 1. killed during training, right after the step-8 checkpoint
    run_until_paused(command, "checkpoint:gpt-seed0:8", tmp_path / "paused-1")
    assert record()["status"] == "running" and (run / CHECKPOINT_DIR / LIGHTNING_DIR / "step00000008.ckpt").exists()

    # 2. rerun: training continues from step 8; killed after the first cached batch of scores
    run_until_paused(command, "eval-cached:gpt-seed0", tmp_path / "paused-2")
    trained = record()
    assert trained["status"] == "completed" and trained["resumed"][0]["from_step"] == 8
    assert not trained.get("compared_shots") and not trained.get("evals")  # no partial scores recorded
    first_rows = cached()
    assert first_rows  # the scored batch survived the kill

    # 3. rerun: nothing trained; the evaluation reuses the cached requests; killed while
    #    report.md is written (its temp file complete, not yet renamed)
    run_until_paused(command, "write:report.md", tmp_path / "paused-3")
    evaluated = record()
    assert evaluated["wall_time_s"] == trained["wall_time_s"]  # not trained again
    assert evaluated["compared_shots"] == [0] and any(key.startswith("corpus_cloze|") for key in evaluated["evals"])
    rows = cached()
    assert len(rows) > len(first_rows)
    assert all(rows[request] == rowid for request, rowid in first_rows.items())  # reused, not scored again
    assert not (folder / "report.md").exists() and list(folder.glob(".report.md.*.tmp"))

    # 4. rerun to the end: no training, no evaluation, a complete report
    final = subprocess.run(command, capture_output=True, text=True, env=env(), timeout=300)
    assert final.returncode == 0, final.stderr[-3000:]
    assert "] training" not in final.stderr and "] evaluating" not in final.stderr
    assert record() == evaluated
    report = Path(final.stdout.strip().splitlines()[-1])
    assert report == folder / "report.md" and "gpt" in report.read_text()
    assert (folder / "report.html").exists() and (folder / "baseline.json").exists()
