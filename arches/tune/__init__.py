"""Optuna studies over `train(cfg)`: `arches tune arch=<preset> tune=<space> [overrides]`.

A search space is a config in `sweeps/tune/` (see `default.yaml` for every setting).
Each trial composes the Hydra config with the user's overrides and the trial's
sampled values and calls the same `train(cfg)` as `arches train`; its final
validation loss is the objective. Sampling is Optuna's TPE, seeded; pruning is
Optuna's MedianPruner fed with the validation loss at each validation.

Crash safety rests on the study's storage (an RDB: SQLite by default, PostgreSQL
for many machines), never on this process:
- A trial counts towards `tune.n_trials` once it has an outcome: COMPLETE, PRUNED,
  or FAIL with its error (a NaN loss, a bad sampled config). A rerun runs only the
  missing ones, and a trial that always fails cannot loop forever.
- A trial left RUNNING by a killed process has no outcome: Optuna's heartbeat marks
  it FAIL (without an error) once it has been silent for `tune.grace_period`
  seconds, and `RetryHeartbeatStaleTrialCallback` queues its parameters again.
- Several workers share a study: each asks for a trial only while finished plus
  running trials fall short of the budget, and a trial asked in the same instant
  as the one that fills the budget sees it (trial numbers are handed out by the
  storage) and closes itself as a FAIL marked `surplus`, which does not count.

A trial may train on several devices (trainer=ddp or fsdp): only rank 0 asks the study
for trials and reports to it; the other ranks, started by Lightning's launcher (or by
torchrun or srun), receive each trial's overrides from rank 0 and train the same
config with it (see `Ranks`).

The package, one concern a module:
- `space`: the search space and the validated `cfg.tune` settings, the shape space;
- `study`: a study's name, storage and creation, its seeded sampler;
- `trials`: trial accounting (the budget above) and pruning;
- `ranks`: trials on several devices;
- `run`: `tune(overrides)` and `run_job`, one study in this process;
- `best`: the best trial as an override file (`tuned_overrides`, read by `arches compare`);
- `command`: `arches tune`.
"""
