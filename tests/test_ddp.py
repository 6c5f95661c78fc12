"""Data parallel training on a CPU (gloo): real processes, started as users start them.

`arches train trainer=ddp` with two ranks ends with the same weights on both; `arches
tune trainer=ddp` asks the study on rank 0 only, and rank 1 trains each trial with the
hyperparameters rank 0 drew (lightning-hydra-template #639 is the trap avoided).

Each command runs through a small driver that records what every rank trained: it
wraps `arches.train.loop.train` with a callback that writes, at the end of each fit, the
rank's hyperparameters and weights, then calls `arches.cli.main`. Lightning starts
rank 1 by rerunning the driver's command line, so both ranks are recorded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import optuna
import pytest
import torch
from conftest import local_corpus
from optuna.trial import TrialState

DDP = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"]
TIMEOUT_S = 180  # about 25 s each on two CPU cores

DRIVER = textwrap.dedent('''
    import hashlib, json, os, sys

    import arches.train.loop
    from arches.cli import main

    RECORDS = os.environ["ARCHES_TEST_RANK_RECORDS"]
    real_train = arches.train.loop.train


    def digest(module):
        sha = hashlib.sha256()
        for name, tensor in sorted(module.state_dict().items()):
            sha.update(name.encode())
            sha.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return sha.hexdigest()


    def recording_train(cfg, callbacks=None):
        import lightning as L
        import torch

        class Record(L.Callback):
            def on_fit_start(self, trainer, pl_module):
                self.initial = digest(pl_module.model)
                self.labelled = 0  # this rank's own labelled positions

            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
                self.labelled += int((batch["labels"] != -100).sum())

            def on_fit_end(self, trainer, pl_module):
                name = os.path.join(RECORDS, f"{cfg.run_name}-rank{trainer.global_rank}")
                weights = {k: v.detach().cpu().clone() for k, v in pl_module.model.state_dict().items()}
                torch.save(weights, name + ".pt")
                record = {
                    "rank": trainer.global_rank, "world_size": trainer.world_size, "pid": os.getpid(),
                    "steps": trainer.global_step, "initial": self.initial, "final": digest(pl_module.model),
                    "labelled": self.labelled,
                    "train": {k: cfg.train[k] for k in ("lr", "weight_decay", "warmup_fraction")},
                }
                with open(name + ".json", "w") as handle:
                    json.dump(record, handle)
                trainer.strategy.barrier()  # every rank's record is on disk before rank 0 goes on

        return real_train(cfg, callbacks=[*(callbacks or []), Record()])


    arches.train.loop.train = recording_train
    main(sys.argv[1:])
''')


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return local_corpus(tmp_path_factory.mktemp("ddp_corpus"))


def run_ranks(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, Path]:
    """`arches <args>` through the recording driver; returns the process and the records folder."""
    driver, records = tmp_path / "driver.py", tmp_path / "records"
    driver.write_text(DRIVER)
    records.mkdir()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "ARCHES_TEST_RANK_RECORDS": str(records)}
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)  # this process starts rank 0; Lightning starts rank 1
    done = subprocess.run([sys.executable, str(driver), *args], capture_output=True, text=True, env=env,
                          timeout=TIMEOUT_S, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    return done, records


def ranks_of(records: Path, run_name: str) -> list[dict]:
    found = [json.loads(p.read_text()) for p in sorted(records.glob(f"{run_name}-rank*.json"))]
    assert [r["rank"] for r in found] == [0, 1], f"{run_name}: records of ranks {[r['rank'] for r in found]}"
    return found


def test_ddp_train_ends_with_identical_weights_on_both_ranks(corpus, tmp_path):
    results = tmp_path / "results"
    done, records = run_ranks(tmp_path, "train", "arch=gpt", "size=debug", *corpus, *DDP, f"results_dir={results}",
                              "run_name=ddp", "trainer.max_steps=2", "train.micro_batch_size=4")
    rank0, rank1 = ranks_of(records, "ddp")
    assert rank0["world_size"] == rank1["world_size"] == 2 and rank0["pid"] != rank1["pid"]  # two processes
    assert rank0["steps"] == rank1["steps"] == 2
    assert rank0["initial"] == rank1["initial"] and rank0["final"] != rank0["initial"]  # it trained
    assert rank0["final"] == rank1["final"]
    weights = [torch.load(records / f"ddp-rank{rank}.pt") for rank in (0, 1)]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0])

    # rank 0 alone wrote the run folder, with those weights
    from safetensors.torch import load_file

    run = json.loads((results / "ddp" / "run.json").read_text())
    assert run["status"] == "completed" and run["steps"] == 2
    saved = load_file(results / "ddp" / "checkpoint" / "model.safetensors")
    assert saved and all(torch.equal(tensor, weights[0][key]) for key, tensor in saved.items())


def test_ddp_token_budget_and_counts_are_global(corpus, tmp_path):
    """train.max_tokens is the run's total over every rank, and so is every count it
    records: two ranks take half the steps of one device, over the same windows (each
    rank every other one of the same order). GLM's labelled positions (its spans and an
    [eop] each) vary from batch to batch, so loss_tokens_seen is seen to be the sum of
    the ranks' own counts, not one rank's count doubled."""
    from arches.config import compose
    from arches.train.loop import train

    results = tmp_path / "results"
    budget = ["arch=glm", "size=debug", *corpus, f"results_dir={results}", "train.max_tokens=1024",
              "train.micro_batch_size=4", "trainer.accelerator=cpu"]  # 4 windows x 32 tokens a step on each rank
    one = train(compose([*budget, "run_name=one"]))
    _, records = run_ranks(tmp_path, "train", *budget, *DDP, "run_name=two")
    two = json.loads((results / "two" / "run.json").read_text())
    rank0, rank1 = ranks_of(records, "two")
    assert one["steps"] == 8 and two["steps"] == rank0["steps"] == rank1["steps"] == 4, "the steps halve"
    assert one["tokens_seen"] == two["tokens_seen"] == 1024 == two["planned_tokens"] == one["planned_tokens"]
    assert two["planned_steps"] == 4 and two["world_size"] == 2 and one["world_size"] == 1
    assert rank0["labelled"] != rank1["labelled"]
    assert two["loss_tokens_seen"] == rank0["labelled"] + rank1["labelled"]
    # the same windows, corrupted by other batches' draws: close to one device's count
    assert two["loss_tokens_seen"] == pytest.approx(one["loss_tokens_seen"], rel=0.1)
    assert two["train_flops"] == two["tokens_seen"] * two["flops_per_token"]
    assert two["tokens_per_s"] == pytest.approx(two["tokens_seen"] / two["train_seconds"])
    assert two["val_history"][-1]["tokens_seen"] == 1024


def test_ddp_tune_asks_the_study_on_rank_zero_and_both_ranks_train_its_trials(corpus, tmp_path):
    results = tmp_path / "results"
    overrides = ["arch=gpt", "size=debug", "tune=lr_wd", *corpus, *DDP, f"results_dir={results}",
                 "trainer.max_steps=2", "train.micro_batch_size=4", "tune.n_trials=2", "tune.pruner.name=none"]
    done, records = run_ranks(tmp_path, "tune", *overrides)
    assert done.stdout.strip().splitlines()[0].startswith("gpt-debug-local-lr_wd-2steps\t2 trials\tbest val_loss")
    assert len(done.stdout.strip().splitlines()) == 1  # rank 1 reports nothing
    assert "each trial on 2 ranks, rank 0 asking" in done.stderr

    db = results / "tune" / "gpt-debug-local-lr_wd-2steps.db"
    study = optuna.load_study(study_name="gpt-debug-local-lr_wd-2steps", storage=f"sqlite:///{db}")
    trials = sorted(study.get_trials(), key=lambda t: t.number)
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.COMPLETE]  # rank 1 asked for none
    leader_pids = set()
    for trial in trials:
        rank0, rank1 = ranks_of(records, f"trial-{trial.number:04d}")
        assert rank0["world_size"] == rank1["world_size"] == 2 and rank0["pid"] != rank1["pid"]
        assert rank0["train"] == rank1["train"]
        assert {f"train.{key}": value for key, value in rank0["train"].items()} == trial.params  # rank 0's draw
        assert rank0["final"] == rank1["final"] and rank0["steps"] == rank1["steps"] == 2
        assert trial.user_attrs["worker"].endswith(f":{rank0['pid']}")  # the study saw rank 0 only
        leader_pids.add(rank0["pid"])
        assert sorted(trial.intermediate_values) == [2]  # reported once, by rank 0
    assert len(leader_pids) == 1
    assert trials[0].params != trials[1].params
    # one rank-1 process followed both trials (the ranks start once per command)
    assert len({ranks_of(records, f"trial-{t.number:04d}")[1]["pid"] for t in trials}) == 1


def test_ddp_tune_failed_and_pruned_trials_stop_every_rank(corpus, tmp_path):
    from arches.tune.run import prepare_job
    from arches.tune.study import open_study

    results = tmp_path / "results"
    overrides = ["arch=gpt", "size=debug", "tune=lr_wd", *corpus, *DDP, f"results_dir={results}",
                 "trainer.max_steps=3", "train.val_interval=1", "train.micro_batch_size=4", "tune.n_trials=3",
                 "tune.pruner.n_startup_trials=1"]
    job = prepare_job(overrides)
    study = open_study(job.cfg, job.settings, job.study, job.url)
    # one diverges, one learns, one learns too slowly to go on: rank 0 decides, both ranks stop
    for lr in (1e6, 1e-2, 1e-4):
        study.enqueue_trial({"train.lr": lr, "train.weight_decay": 0.1, "train.warmup_fraction": 0.0})
    done, records = run_ranks(tmp_path, "tune", *overrides)  # returns only once rank 1 has followed every trial
    trials = sorted(optuna.load_study(study_name=job.study, storage=job.url).get_trials(), key=lambda t: t.number)
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE, TrialState.PRUNED]
    assert "validation loss became nan at step 1" in trials[0].user_attrs["error"]
    assert sorted(trials[2].intermediate_values) == [1]  # pruned at its first validation
    statuses = [json.loads((Path(t.user_attrs["run_dir"]) / "run.json").read_text())["status"] for t in trials]
    assert statuses == ["failed", "completed", "pruned"]
    rank0, rank1 = ranks_of(records, "trial-0001")  # both ranks trained the trial after the failed one
    assert rank0["final"] == rank1["final"] and rank0["train"]["lr"] == rank1["train"]["lr"] == 1e-2
    assert "Traceback" not in done.stderr
