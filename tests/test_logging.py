"""Logs without a terminal, the terminal bar, and the experiment trackers, for real.

One `arches train` subprocess, stderr piped (no terminal), logs to every logger at once:
csv, TensorBoard, Weights & Biases (offline: its run file is read back here) and MLflow
(its default local SQLite store, read back with MlflowClient). The bar and the plain-line
callback also run on a real Lightning Trainer in-process, and the evaluation lines come
from ArchesLM answering real lm-eval Instances on the trained run.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import local_corpus

from arches.config import compose
from arches.errors import UserError

STEPS = 6
RUN = "logged"
LINE = re.compile(
    r"^train (?P<run>\S+) step (?P<step>\d+)/(?P<steps>\d+) tokens (?P<tokens>\S+)/(?P<total>\S+) "
    r"loss (?P<loss>[\d.]+)( val_loss [\d.]+)? tok/s (?P<rate>[\d.]+k?) eta (?P<eta>\d+[hms]\S*)$"
)


def env(**extra: str) -> dict:
    variables = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
                 "WANDB_SILENT": "true", "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1", **extra}  # fmt: skip
    for name in ("ARCHES_DEBUG", "ARCHES_TEST_PAUSE_AT", "WANDB_MODE", "MLFLOW_TRACKING_URI"):
        variables.pop(name, None)
    return variables


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """A debug run trained by `arches train` with stderr piped, logging to every logger."""
    root = tmp_path_factory.mktemp("logging")
    data = local_corpus(root)
    results = root / "results"
    command = [sys.executable, "-m", "arches.cli", "train", *data, f"results_dir={results}", f"run_name={RUN}",
               "size=debug", "train.micro_batch_size=4", f"trainer.max_steps={STEPS}", "train.log_interval=1",
               "train.val_interval=3", "train.progress_interval_s=3600",  # the first and the last step only
               "logger=[tensorboard,wandb,mlflow]", "logger.wandb.offline=true", "logger.wandb.project=arches-test"]  # fmt: skip
    wandb_home = root / "wandb-home"
    done = subprocess.run(command, capture_output=True, text=True, timeout=600,
                          env=env(WANDB_CONFIG_DIR=str(wandb_home), WANDB_CACHE_DIR=str(wandb_home),
                                  WANDB_DATA_DIR=str(wandb_home)))  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    run_dir = results / RUN
    with open(run_dir / "logs" / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {"run_dir": run_dir, "results": results, "stderr": done.stderr, "rows": rows, "data": data, "root": root}


def csv_values(rows: list[dict], key: str) -> dict[int, float]:
    return {int(row["step"]): float(row[key]) for row in rows if row.get(key)}


# ---------------------------------------------------------------- plain lines where there is no terminal


def test_a_log_gets_a_plain_line_at_the_first_and_the_last_step(trained):
    lines = [line for line in trained["stderr"].splitlines() if line.startswith("train ")]
    assert len(lines) == 2, trained["stderr"]  # the interval (an hour) passes between none of the others
    first, last = (LINE.match(line) for line in lines)
    assert first and last, lines
    assert (first["run"], first["step"], first["steps"]) == (RUN, "1", str(STEPS))
    assert last["step"] == last["steps"] == str(STEPS)
    # 6 steps x 4 windows x 32 tokens, counted as the run counts them
    assert last["tokens"] == last["total"] == str(STEPS * 4 * 32) and first["tokens"] == "128"
    losses = csv_values(trained["rows"], "train/loss")  # logged at step index (steps done - 1)
    assert float(first["loss"]) == pytest.approx(losses[0], rel=2e-3)
    assert float(last["loss"]) == pytest.approx(losses[STEPS - 1], rel=2e-3)
    assert last["eta"] == "0s"
    # no bar: no carriage-return redraws, no "Epoch 0/-2", no "v_num"
    assert "\r" not in trained["stderr"] and "Epoch" not in trained["stderr"] and "v_num" not in trained["stderr"]


def test_the_plain_lines_follow_their_interval_on_a_real_trainer():
    from lightning.pytorch import Trainer
    from lightning.pytorch.demos.boring_classes import BoringModel

    from arches.progress import plain_progress

    every, never = io.StringIO(), io.StringIO()
    callbacks = [plain_progress("demo", 5, 500, interval_s=0, stream=every),
                 plain_progress("demo", 5, 500, interval_s=3600, stream=never)]  # fmt: skip
    trainer = Trainer(max_steps=5, max_epochs=-1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, limit_val_batches=0, callbacks=callbacks)  # fmt: skip
    trainer.fit(BoringModel())
    assert [line.split()[3] for line in every.getvalue().splitlines()] == ["1/5", "2/5", "3/5", "4/5", "5/5"]
    assert [line.split()[3] for line in never.getvalue().splitlines()] == ["1/5", "5/5"]


# ---------------------------------------------------------------- the terminal bar


def test_the_terminal_bar_counts_the_runs_steps_and_shows_no_logger_version(tmp_path):
    from lightning.pytorch import Trainer
    from lightning.pytorch.callbacks import RichProgressBar
    from lightning.pytorch.demos.boring_classes import BoringModel
    from lightning.pytorch.loggers import TensorBoardLogger

    from arches.progress import step_progress_bar

    bar = step_progress_bar("demo-run")
    steps = 70  # BoringModel's epoch is 64 batches: the bar goes on across the epoch's end
    trainer = Trainer(max_steps=steps, max_epochs=-1, logger=TensorBoardLogger(tmp_path, name="", version="tensorboard"),
                      callbacks=[bar], enable_checkpointing=False, enable_model_summary=False, limit_val_batches=0)  # fmt: skip
    model = BoringModel()
    trainer.fit(model)
    task = bar.progress.tasks[bar.train_progress_bar_id]
    assert (task.description, task.total, task.completed) == ("train demo-run", steps, steps)
    assert "v_num" not in bar.get_metrics(trainer, model)
    # what Lightning's own bar shows for the same trainer: the defect this bar removes
    stock = RichProgressBar()
    stock._trainer = trainer
    assert stock.get_metrics(trainer, model)["v_num"] == "oard"
    assert stock._get_train_description(0).strip() == "Epoch 0/-2"


# ---------------------------------------------------------------- trackers, read back


def wandb_history(run_file: Path) -> list[dict]:
    """The history rows of an offline wandb run file: a LevelDB-style log of 32 KiB blocks
    of protobuf `Record`s (wandb's on-disk format; wandb >= 0.20 ships no Python reader)."""
    from wandb.proto import wandb_internal_pb2

    data, block = run_file.read_bytes(), 32768
    assert data[:4] == b":W&B", run_file
    rows, position, pending = [], 7, b""
    while position + 7 <= len(data):
        left = block - position % block
        if left < 7:  # a block's tail too short for a header is padding
            position += left
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        if kind == 0 and length == 0:
            position += left
            continue
        payload = data[position + 7 : position + 7 + length]
        position += 7 + length
        pending = payload if kind in (1, 2) else pending + payload  # FULL, FIRST | MIDDLE, LAST
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            if record.WhichOneof("record_type") == "history":
                rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item})
    return rows


def test_wandb_offline_run_holds_the_logged_metrics(trained):
    runs = list((trained["run_dir"] / "logs" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1, runs
    history = wandb_history(runs[0])
    for key in ("train/loss", "val/loss"):
        logged = {row["trainer/global_step"]: row[key] for row in history if key in row}
        assert logged == pytest.approx(csv_values(trained["rows"], key), rel=1e-6), key
    assert len(csv_values(trained["rows"], "val/loss")) == 2  # validations at steps 3 and 6


def test_mlflow_run_holds_the_logged_metrics_and_the_config(trained):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{trained['results'] / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("arches")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == RUN and run.info.status == "FINISHED"
    for key in ("val/loss", "train/loss"):
        history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, key)}
        assert history == pytest.approx(csv_values(trained["rows"], key), rel=1e-6), key
    assert run.data.params["train/micro_batch_size"] == "4" and run.data.params["run_name"] == RUN
    assert experiment.artifact_location == (trained["results"] / "mlartifacts").as_uri()  # not the working directory


# ---------------------------------------------------------------- evaluation's lines


def test_evaluation_prints_labelled_lines_without_a_terminal(trained, capsys):
    from lm_eval.api.instance import Instance

    from harness.lm.model import ArchesLM

    lm = ArchesLM(run=trained["run_dir"], batch_size=2, cache=False)
    pairs = [("The old king", " walked"), ("A young sailor", " spoke"), ("The queen", " wept"),
             ("Her brother", " sang"), ("The fool", " forgot")]  # fmt: skip
    requests = [Instance(request_type="loglikelihood", doc={}, arguments=pair, idx=0, metadata=("tiny_task", i, 1))
                for i, pair in enumerate(pairs)]  # fmt: skip
    lm.loglikelihood(requests)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("eval ")]
    # three batches (2, 2, 1): the first and the last line, the interval (30 s) between none
    assert [re.sub(r"[\d.]+[kMG]? req/s.*", "R", line) for line in lines] == [
        f"eval {RUN} tiny_task 2/5 requests R", f"eval {RUN} tiny_task 5/5 requests R"]  # fmt: skip
    assert re.search(r"5/5 requests \d[\d.]*[kMG]? req/s$", lines[-1])
    lm.loglikelihood(requests, disable_tqdm=True)  # lm-eval's other ranks: silent
    assert capsys.readouterr().err == ""


# ---------------------------------------------------------------- bad settings: one line, no folder


@pytest.mark.parametrize(
    "override, message",
    [
        ("logger.wandb.offline=maybe", "logger.wandb.offline='maybe' must be true or false"),
        ("+logger.wandb.projekt=x", "unknown logger.wandb setting 'projekt'"),
        ("train.progress=tty", "train.progress='tty' must be one of: auto, bar, lines, none"),
        ("train.progress_interval_s=-1", "train.progress_interval_s=-1 must be a number >= 0"),
    ],
)
def test_a_bad_logging_setting_is_one_line_and_leaves_no_folder(tmp_path, override, message):
    from arches.train.loop import train

    overrides = ["size=debug", f"results_dir={tmp_path / 'results'}", f"cache_dir={tmp_path / 'cache'}", override]
    if override.startswith(("logger.wandb", "+logger.wandb")):
        overrides.insert(0, "logger=wandb")
    with pytest.raises(UserError) as raised:
        train(compose(overrides))
    assert str(raised.value).startswith(message) and "\n" not in str(raised.value), str(raised.value)
    assert not (tmp_path / "results").exists() and not (tmp_path / "cache").exists()


def test_an_unknown_logger_names_the_closest():
    with pytest.raises(UserError, match=r"unknown logger 'wandbb'.*Did you mean 'wandb'"):
        compose(["logger=[tensorboard,wandbb]"])


def test_a_missing_tracker_package_is_one_line_before_any_folder(tmp_path, monkeypatch):
    from arches.train.loop import train

    monkeypatch.setitem(sys.modules, "mlflow", None)  # what an environment without the extra looks like to find_spec
    with pytest.raises(UserError) as raised:
        train(compose(["logger=mlflow", "size=debug", f"results_dir={tmp_path / 'results'}"]))
    assert str(raised.value).startswith("logger=mlflow needs mlflow: pip install arches[mlflow]")
    assert not (tmp_path / "results").exists()


def test_a_tracker_that_cannot_start_is_one_line(trained, tmp_path, monkeypatch):
    from arches.train.loop import train

    for name in ("WANDB_API_KEY", "WANDB_MODE"):
        monkeypatch.delenv(name, raising=False)
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb-home"))
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))  # no login anywhere: online wandb cannot start
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = compose([*trained["data"], "logger=wandb", "size=debug", f"results_dir={tmp_path / 'results'}",
                   "trainer.max_steps=1", "train.micro_batch_size=4"])  # fmt: skip
    with pytest.raises(UserError) as raised:
        train(cfg)
    assert re.match(r"logger=wandb could not start its run \(.+\); log in with `wandb login`", str(raised.value))
    assert "\n" not in str(raised.value)


def test_arches_eval_without_a_terminal_prints_labelled_lines_and_no_bars(trained, capfd):
    from harness.eval.command import evaluate

    cfg = compose([*trained["data"], f"run={trained['run_dir']}", "eval=quick", "eval.tasks=[corpus_cloze]",
                   "eval.limit=3", "eval.bootstrap_iters=0"])  # fmt: skip
    evaluate(cfg)
    err = capfd.readouterr().err
    assert re.search(rf"^eval {RUN} corpus_cloze (\d+)/\1 requests [\d.]+[kMG]? req/s$", err, re.M), err
    # lm-eval's own unlabelled bar (building each task's requests) stays out of a log
    assert "\r" not in err and "it/s]" not in err, err
