"""`arches tune`: real Optuna studies on real SQLite over real (debug-size) training.

A study records its trials; a rerun runs only the missing ones; a NaN trial fails
and a poor one is pruned while the study goes on; a killed worker's trial is failed
by the heartbeat and retried; two workers share one study; the best trial becomes
an override file. Configs for launchers and multi-GPU strategies compose. Trials on
several devices (DDP): tests/test_ddp.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
import yaml
from conftest import local_corpus
from optuna.trial import TrialState

from arches.config import compose, sweeps_dir
from arches.errors import UserError
from arches.tune.best import tuned_overrides
from arches.tune.command import tune_command
from arches.tune.run import prepare_job, tune
from arches.tune.space import Settings, shape_overrides
from arches.tune.study import _driver_url, open_storage, open_study

optuna.logging.set_verbosity(optuna.logging.ERROR)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """The tiny local corpus, prepared once into a shared cache (workers only read it)."""
    return local_corpus(tmp_path_factory.mktemp("tune_corpus"))


def study_overrides(corpus, tmp_path, *extra: str) -> list[str]:
    return ["arch=gpt", "size=debug", "tune=lr_wd", *corpus, f"results_dir={tmp_path / 'results'}",
            "trainer.max_steps=2", "train.micro_batch_size=4", *extra]


def load(job) -> optuna.Study:
    return optuna.load_study(study_name=job.study, storage=_driver_url(job.url))


def states(study) -> list[str]:
    return [t.state.name for t in sorted(study.get_trials(), key=lambda t: t.number)]


def env() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "arches.cli", "tune", *args]


# --- configs -----------------------------------------------------------------------


def test_tune_configs_compose_and_leave_train_configs_unchanged():
    assert "tune" not in compose([])  # `arches train` and `arches compare` see no tune key
    lr_wd = Settings.from_cfg(compose(["tune=lr_wd"]))
    assert [p.name for p in lr_wd.space] == ["train.lr", "train.weight_decay", "train.warmup_fraction"]
    assert lr_wd.space[0].distribution == "log" and lr_wd.pruner == "median" and lr_wd.metric == "val_loss"
    shape = Settings.from_cfg(compose(["tune=shape", "tune.n_trials=3"]))
    assert shape.keep_non_embedding_params and shape.n_trials == 3
    assert [p.name for p in shape.space] == ["size.n_layers"]


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_multi_device_trainer_configs_compose(strategy):
    cfg = compose([f"trainer={strategy}"])
    assert cfg.trainer.strategy == strategy and cfg.trainer.num_nodes == 1
    assert cfg.trainer.devices == -1 and cfg.trainer.accelerator == "auto"  # the rest from trainer/default


LAUNCHERS = {
    "joblib": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher",
    "submitit_slurm": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher",
}


def compose_with_hydra(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(sweeps_dir()), version_base=None):
        return hydra_compose(config_name="config", overrides=overrides, return_hydra_config=True)


@pytest.mark.parametrize("launcher", sorted(LAUNCHERS))
def test_launcher_configs_compose(launcher):
    path = sweeps_dir() / "hydra" / "launcher" / f"{launcher}.yaml"
    assert path.read_text().splitlines()[0] == "# @package hydra.launcher"
    assert yaml.safe_load(path.read_text())["_target_"] == LAUNCHERS[launcher]
    cfg = compose_with_hydra([f"hydra/launcher={launcher}"])
    assert cfg.hydra.launcher._target_ == LAUNCHERS[launcher]
    if launcher == "submitit_slurm":
        assert cfg.hydra.launcher.gpus_per_node == 1 and cfg.hydra.launcher.tasks_per_node == 1


def test_joblib_launcher_instantiates():
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher", reason="pip install arches[joblib]")
    from hydra.utils import instantiate

    launcher = instantiate(compose_with_hydra(["hydra/launcher=joblib"]).hydra.launcher)
    assert type(launcher).__name__ == "JoblibLauncher" and launcher.joblib["n_jobs"] == 2


def test_submitit_launcher_instantiates():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="pip install arches[slurm]")
    from hydra.utils import instantiate

    launcher = instantiate(compose_with_hydra(["hydra/launcher=submitit_slurm"]).hydra.launcher)
    assert type(launcher).__name__ == "SlurmLauncher" and launcher.params["gpus_per_node"] == 1


def test_shape_space_keeps_non_embedding_parameters():
    from arches.registry import model_config, plain

    # `small` (d_model 768, 12 heads of 64): at tiny's two heads, whole-head rounding is too coarse to test
    base = compose(["size=small"]).size
    target = 12 * base.n_layers * base.d_model**2
    for n_layers in range(1, 17):
        overrides = shape_overrides(base, n_layers)
        d_model = int(overrides[0].split("=")[1])
        assert d_model % (base.d_model // base.n_heads) == 0 and overrides[1] != "size.n_heads=0"
        if n_layers <= 8:  # rounding to whole heads costs more at small widths
            assert abs(12 * n_layers * d_model**2 / target - 1) < 0.3, (n_layers, overrides)
    for preset, n_layers in (("gpt", 1), ("falcon", 3), ("neox", 8), ("t5", 16), ("glm", 6)):
        cfg = compose([f"arch={preset}", "size=small", f"size.n_layers={n_layers}", *shape_overrides(base, n_layers)])
        model = model_config(plain(cfg.arch), cfg.size, 512, 64)  # valid: heads divide d_model, kv heads divide heads
        assert model.head_dim == base.d_model // base.n_heads


def test_budget_counts_outcomes_and_refuses_a_surplus_trial():
    from arches.tune.trials import counts, is_surplus, progress

    study = optuna.create_study()
    study.add_trial(optuna.create_trial(value=1.0))  # complete: counts
    study.add_trial(optuna.create_trial(state=TrialState.PRUNED))  # pruned: counts
    study.add_trial(optuna.create_trial(state=TrialState.FAIL, user_attrs={"error": "loss became nan"}))  # counts
    study.add_trial(optuna.create_trial(state=TrialState.FAIL))  # failed by the heartbeat: retried, not counted
    study.add_trial(optuna.create_trial(state=TrialState.FAIL, user_attrs={"surplus": True}))  # not counted
    assert [counts(t) for t in study.trials] == [True, True, True, False, False]
    other_worker = study.ask()  # running elsewhere: takes the fourth slot of a budget of 4
    mine = study.ask()
    assert progress(study) == (3, 2)
    assert not is_surplus(study, other_worker.number, 4) and is_surplus(study, mine.number, 4)


# --- bad input: one line, exit 2, nothing touched ----------------------------------


BAD = {
    "tune=nope": "unknown tune 'nope'",
    "tune=default": "no parameters to search",
    "tune.n_trials=0": "tune.n_trials=0 must be an integer >= 1",
    "tune.direction=up": "tune.direction='up' must be one of: minimize, maximize",
    "tune.metric=accuracy": "tune.metric='accuracy' must be val_loss (the final validation loss",
    "tune.pruner.name=hyperband": "tune.pruner.name='hyperband' must be one of: median, none",
    "tune.space=[{name:train.lrr,distribution:log,low:1e-4,high:1e-2}]": "train.lrr is not a config key",
    "tune.space=[{name:train.lr,distribution:gauss,low:1e-4,high:1e-2}]": "unknown distribution 'gauss'",
    "tune.space=[{name:train.lr,distribution:log,low:1e-2,high:1e-4}]": "empty or inverted range",
    "tune.space=[{name:train.lr,distribution:float,low:1e-2,high:1e-2}]": "empty or inverted range",
    "tune.space=[{name:train.lr,distribution:log,low:0,high:1e-2}]": "needs low > 0",
    "tune.space=[{name:arch.model.activation,distribution:categorical,choices:[]}]": "non-empty list of choices",
    "tune.storage=not-a-url": "cannot open tune.storage not-a-url",
    "tune.study=a/b": "must be a name of letters, digits",
}


@pytest.mark.parametrize("override", sorted(BAD))
def test_bad_input_is_one_line_and_touches_nothing(override, corpus, tmp_path):
    with pytest.raises(UserError) as error:
        tune(study_overrides(corpus, tmp_path, override))
    assert BAD[override] in str(error.value) and "\n" not in str(error.value)
    assert not (tmp_path / "results").exists()


MULTI_DEVICE_BAD = {
    # their ranks would never run `arches tune`, so could not follow rank 0's trials
    "trainer.strategy=ddp_spawn": "not ddp_spawn",
    "trainer.devices=-1": "trainer.accelerator=cpu trainer.devices=-1: `devices` selected with `CPUAccelerator`",
}


@pytest.mark.parametrize("override", sorted(MULTI_DEVICE_BAD))
def test_bad_multi_device_trials_are_one_line_and_touch_nothing(override, corpus, tmp_path):
    with pytest.raises(UserError) as error:
        tune(study_overrides(corpus, tmp_path, "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", override))
    assert MULTI_DEVICE_BAD[override] in str(error.value) and "\n" not in str(error.value)
    assert not (tmp_path / "results").exists()


def test_multirun_trains_every_study_on_the_same_devices(corpus, tmp_path):
    with pytest.raises(UserError, match="on the same devices"):  # one set of ranks follows every study
        tune_command(["-m", *study_overrides(corpus, tmp_path, "trainer=ddp", "trainer.accelerator=cpu",
                                             "trainer.devices=1,2")])
    assert not (tmp_path / "results").exists()


def test_cli_bad_input_exits_2_with_one_line(corpus, tmp_path):
    unknown_space = subprocess.run(cli(*study_overrides(corpus, tmp_path, "tune=lr")), capture_output=True,
                                   text=True, env=env(), timeout=120)
    assert unknown_space.returncode == 2
    assert unknown_space.stderr.strip().splitlines() == [
        "arches: error: unknown tune 'lr'; valid: default, lr_wd, shape. Did you mean 'lr_wd'?"
    ]
    unreachable = subprocess.run(cli(*study_overrides(corpus, tmp_path, "tune.storage=postgresql://nohost/db")),
                                 capture_output=True, text=True, env=env(), timeout=120)
    assert unreachable.returncode == 2
    lines = unreachable.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("arches: error: cannot open tune.storage postgresql://nohost/db")
    assert not (tmp_path / "results").exists()


# --- studies -------------------------------------------------------------------------


def test_study_fails_prunes_resumes_and_writes_the_best(corpus, tmp_path, capsys):
    overrides = study_overrides(corpus, tmp_path, "trainer.max_steps=3", "train.val_interval=1",
                                "tune.pruner.n_startup_trials=1", "tune.n_trials=3")
    job = prepare_job(overrides)
    assert job.study == "gpt-debug-local-lr_wd-3steps"
    study = open_study(job.cfg, job.settings, job.study, job.url)
    # three fixed first trials: one diverges, one learns, one learns too slowly to go on
    study.enqueue_trial({"train.lr": 1e6, "train.weight_decay": 0.1, "train.warmup_fraction": 0.0})
    study.enqueue_trial({"train.lr": 1e-2, "train.weight_decay": 0.1, "train.warmup_fraction": 0.0})
    study.enqueue_trial({"train.lr": 1e-4, "train.weight_decay": 0.1, "train.warmup_fraction": 0.0})
    result = tune(overrides)
    study = load(job)
    assert states(study) == ["FAIL", "COMPLETE", "PRUNED"]
    diverged, learned, pruned = sorted(study.get_trials(), key=lambda t: t.number)
    assert "became" in diverged.user_attrs["error"]  # the NaN/inf loss, in one line
    assert json.loads((Path(diverged.user_attrs["run_dir"]) / "run.json").read_text())["status"] == "failed"
    assert json.loads((Path(pruned.user_attrs["run_dir"]) / "run.json").read_text())["status"] == "pruned"
    assert sorted(learned.intermediate_values) == [1, 2, 3] and learned.value == pytest.approx(
        learned.intermediate_values[3])
    assert result["n_trials"] == 3 and result["n_complete"] == 1 and result["best_value"] == learned.value

    # the same command again runs nothing; a larger budget runs only the difference
    tune(overrides)
    assert len(load(job).trials) == 3
    tune([*overrides, "tune.n_trials=4"])
    study = load(job)
    assert len(study.trials) == 4 and study.trials[3].state in (TrialState.COMPLETE, TrialState.PRUNED)

    # a study bound to one goal is not resumed with another, and is left as it was
    with pytest.raises(UserError, match="was made to minimize"):
        tune([*overrides, "tune.direction=maximize"])
    with pytest.raises(UserError, match="exists with a different space"):
        tune([*overrides, "tune.space=[{name:train.lr,distribution:log,low:1e-3,high:1e-1}]"])
    assert len(load(job).trials) == 4

    capsys.readouterr()
    tune_command([*overrides, "tune.best=true"])
    out = capsys.readouterr().out.strip().splitlines()
    best_file = tmp_path / "results" / "tune" / f"{job.study}.best.yaml"
    assert out[-1] == str(best_file) and "train.lr" in "\n".join(out)
    tuned = tuned_overrides(tmp_path / "results", job.study)
    best = load(job).best_trial
    assert tuned["study"] == job.study and tuned["preset"] == "gpt" and tuned["n_trials"] == 4
    assert tuned["best_value"] == best.value and tuned["overrides"] == best.user_attrs["overrides"]
    assert tuned["overrides"][0].startswith("train.lr=")
    compose(["arch=gpt", *tuned["overrides"]])  # the override file is valid Hydra overrides

    with pytest.raises(UserError, match=f"unknown tuned study 'nope'; valid: {job.study}"):
        tuned_overrides(tmp_path / "results", "nope")
    with pytest.raises(UserError, match=f"unknown study 'other'; valid: {job.study}"):
        tune_command([*overrides, "tune.best=true", "tune.study=other"])


def test_multirun_gives_each_preset_its_own_study(corpus, tmp_path, capsys):
    overrides = study_overrides(corpus, tmp_path, "tune.n_trials=1", "trainer.max_steps=1")
    with pytest.raises(UserError, match="add -m"):
        tune_command([*overrides, "arch=gpt,bert"])
    tune_command(["-m", *overrides, "arch=gpt,bert"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split("\t")[:2] for line in lines] == [
        ["gpt-debug-local-lr_wd-1steps", "1 trials"], ["bert-debug-local-lr_wd-1steps", "1 trials"]
    ]
    for preset in ("gpt", "bert"):
        study = load(prepare_job([*overrides, f"arch={preset}"]))
        assert states(study) == ["COMPLETE"] and study.user_attrs["preset"] == preset


def test_killed_worker_is_failed_by_the_heartbeat_and_retried(corpus, tmp_path):
    overrides = study_overrides(corpus, tmp_path, "trainer.max_steps=5", "tune.n_trials=4", "tune.pruner.name=none",
                                "tune.heartbeat_interval=1", "tune.grace_period=2")
    job = prepare_job(overrides)
    process = subprocess.Popen(cli(*overrides), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env())
    third_run = tmp_path / "results" / "tune" / job.study / "trial-0002"
    deadline = time.time() + 240
    while not (third_run / "run.json").exists() and time.time() < deadline:  # the third trial is training
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        time.sleep(0.1)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert states(load(job)) == ["COMPLETE", "COMPLETE", "RUNNING"]

    result = tune(overrides)  # the same command again, once the dead trial's heartbeat is stale
    study = load(job)
    trials = sorted(study.get_trials(), key=lambda t: t.number)
    assert trials[2].state == TrialState.FAIL and "error" not in trials[2].user_attrs  # failed by the heartbeat
    retried = [t for t in trials if t.system_attrs.get("failed_trial") == 2]
    assert len(retried) == 1 and retried[0].state == TrialState.COMPLETE
    assert retried[0].params == trials[2].params  # the same hyperparameters, run again
    assert retried[0].user_attrs["run_dir"] == str(third_run)  # in the killed trial's run folder
    assert json.loads((third_run / "run.json").read_text())["status"] == "completed"
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 4 and result["n_trials"] == 4


POSTGRES_URL = os.environ.get("ARCHES_TEST_POSTGRES_URL")


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_two_workers_share_one_study(backend, corpus, tmp_path):
    extra = []
    if backend == "postgresql":
        if not POSTGRES_URL:
            pytest.skip("no PostgreSQL server: set ARCHES_TEST_POSTGRES_URL=postgresql://user:password@host/db")
        pytest.importorskip("psycopg", reason="no PostgreSQL driver: pip install arches[postgres]")
        extra = [f"tune.storage={POSTGRES_URL}", f"tune.study=two-workers-{os.getpid()}-{time.time_ns()}"]
    overrides = study_overrides(corpus, tmp_path, "tune.n_trials=4", "tune.pruner.name=none", *extra)
    job = prepare_job(overrides)
    workers = [subprocess.Popen(cli(*overrides), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env())
               for _ in range(2)]
    for worker in workers:
        _, stderr = worker.communicate(timeout=300)
        assert worker.returncode == 0, stderr.decode()[-3000:]
    trials = load(job).get_trials()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 4
    assert all(t.user_attrs.get("surplus") for t in trials if t.state != TrialState.COMPLETE)
    numbers = [t.number for t in trials]
    assert len(set(numbers)) == len(numbers)
    assert len({t.user_attrs["run_dir"] for t in complete}) == 4  # each trial trained once, in its own folder
    assert len({tuple(sorted(t.params.items())) for t in complete}) == 4  # no replayed draws across workers


def test_trial_killed_before_it_started_is_failed_after_the_grace_period(corpus, tmp_path):
    # Optuna's heartbeat never sees a trial that died before its first beat
    overrides = study_overrides(corpus, tmp_path, "trainer.max_steps=1", "tune.n_trials=1",
                                "tune.heartbeat_interval=1", "tune.grace_period=1")
    job = prepare_job(overrides)
    open_study(job.cfg, job.settings, job.study, job.url).ask()  # RUNNING, never started
    assert tune(overrides)["n_trials"] == 1
    assert states(load(job)) == ["FAIL", "COMPLETE"]


@pytest.fixture()
def fresh_postgres_database():
    """A new, empty database on the test server, dropped afterwards."""
    if not POSTGRES_URL:
        pytest.skip("no PostgreSQL server: set ARCHES_TEST_POSTGRES_URL=postgresql://user:password@host/db")
    psycopg = pytest.importorskip("psycopg", reason="no PostgreSQL driver: pip install arches[postgres]")
    name = f"arches_race_{os.getpid()}_{time.time_ns()}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    yield POSTGRES_URL.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_a_worker_that_loses_the_race_to_create_the_storage_opens_it(fresh_postgres_database):
    # CI saw it: two workers on a new PostgreSQL storage, and the loser's CREATE TYPE or
    # CREATE TABLE failed with DuplicateObject/DuplicateTable. Here the rival worker opens
    # the storage, committed, between this one's look for the tables and its first CREATE.
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    url = fresh_postgres_database
    settings = SimpleNamespace(heartbeat_interval=None)  # open_storage reads only this
    raced = []

    def rival_creates_first(conn, cursor, statement, parameters, context, executemany):
        if not raced and statement.lstrip().upper().startswith("CREATE"):
            raced.append(statement.split("(")[0].strip())
            open_storage(url, settings)  # another worker, on its own engine, commits the whole schema

    event.listen(Engine, "before_cursor_execute", rival_creates_first)
    try:
        storage = open_storage(url, settings)
    finally:
        event.remove(Engine, "before_cursor_execute", rival_creates_first)
    assert raced, "the storage was opened without creating anything: the race was not run"
    assert storage.get_all_studies() == []
    optuna.create_study(storage=storage, study_name="after-the-race")
    assert [study.study_name for study in storage.get_all_studies()] == ["after-the-race"]
