"""Running a study: a `Job` (the user's overrides composed and validated), `tune` and
`run_job`, which ask the study for trials until `tune.n_trials` have an outcome, each
trial one call of the same `train(cfg)` as `arches train`, and the study's summary."""

from __future__ import annotations

import math
import os
import socket
import sys
import time
import warnings
from dataclasses import dataclass

from omegaconf import DictConfig

from arches.config import compose
from arches.errors import RunFailure, UserError, first_line
from arches.tune.ranks import Ranks, one_device, ranks_for
from arches.tune.space import METRICS, Settings, check_space_keys, format_value, shape_overrides
from arches.tune.study import open_study, shown_url, storage_url, study_name, trial_sampler, tune_dir
from arches.tune.trials import Surplus, counts, fail_abandoned, is_surplus, progress, pruning_callback


@dataclass
class Job:
    """One study to run: the user's overrides composed and validated."""

    overrides: list[str]
    cfg: DictConfig
    settings: Settings
    study: str
    url: str


def prepare_job(overrides: list[str]) -> Job:
    """Compose and validate everything before any storage is touched."""
    from arches.settings import check_tune_settings

    cfg = compose(overrides)
    check_tune_settings(cfg)  # every trial's train, trainer and data settings, and the study's own
    settings = Settings.from_cfg(cfg)
    check_space_keys(cfg, settings)
    strategy = str(cfg.trainer.get("strategy"))
    if not one_device(cfg) and any(word in strategy for word in ("spawn", "fork", "notebook")):
        # their ranks never run `arches tune`: the trial's closure would be pickled to them
        raise UserError(
            f"arches tune trains a trial on several devices with trainer.strategy=ddp or fsdp, "
            f"not {strategy} (each rank reruns the command and follows rank 0's trials)"
        )
    name = study_name(cfg, settings)
    return Job(overrides, cfg, settings, name, storage_url(cfg, settings, name))


def tune(overrides: list[str], log=None) -> dict:
    """Run or resume the study for these overrides until it has `tune.n_trials` finished
    trials; returns its summary (study, storage, finished, best value, best overrides).

    With several devices per trial (trainer=ddp), call it from a command line that calls
    it again: each rank reruns the command (see `Ranks`); a rank other than 0 returns
    {"study", "rank"} once rank 0 is done."""
    job = prepare_job(overrides)
    with ranks_for([job]) as ranks:
        if ranks is not None and ranks.follower:
            ranks.follow()
            return {"study": job.study, "rank": ranks.rank}
        return run_job(job, log=log, ranks=ranks)


def run_job(job: Job, log=None, ranks: Ranks | None = None) -> dict:
    """One study, in this process: rank 0 of `ranks` when its trials train on several devices."""
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    settings = job.settings
    study = open_study(job.cfg, settings, job.study, job.url)
    done, running = progress(study)
    spread = f"; each trial on {ranks.world_size()} ranks, rank 0 asking" if ranks is not None else ""
    log(f"tune {job.study}: {done} of {settings.n_trials} trials finished; storage {shown_url(job.url)}{spread}")
    while True:
        done, running = progress(study)
        if done >= settings.n_trials:
            break
        if done + running >= settings.n_trials:
            # the rest of the budget is running in other workers (or in a killed one)
            if not wait_for_others(job, study, running, log):
                break
            continue
        if ranks is not None:  # before the trial is asked: a launch that fails is no trial's failure
            ranks.launch()
        study.optimize(lambda trial: objective(job, study, trial, ranks), n_trials=1, catch=(Exception,),
                       callbacks=[lambda _study, trial: report(job, trial, log)])
    return summary(job, study)


def wait_for_others(job: Job, study, running: int, log) -> bool:
    """Wait a moment for the trials running elsewhere, failing (and so queueing again) a killed
    worker's; False when none of them could ever be retried."""
    import optuna

    settings = job.settings
    if not settings.heartbeat_interval:
        log(f"tune {job.study}: {running} trials still RUNNING elsewhere; "
            f"with tune.heartbeat_interval unset, a killed worker's trial is never retried")
        return False
    time.sleep(min(settings.heartbeat_interval or 1, 5))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optuna.storages.fail_stale_trials(study)  # a killed worker's trial: FAIL, then queued again
    fail_abandoned(study, settings.grace_period or 2 * settings.heartbeat_interval)
    return True


def objective(job: Job, study, trial, ranks: Ranks | None) -> float:
    """The study's objective: the trial's metric, or an error recorded with the trial (which
    then counts as finished, and the study goes on)."""
    import optuna

    settings = job.settings
    # first: marks this trial as started (its heartbeat thread is running); see `fail_abandoned`
    trial.set_user_attr("started", trial.number)
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    if is_surplus(study, trial.number, settings.n_trials):
        trial.set_user_attr("surplus", True)
        raise Surplus(f"trial {trial.number} is past the budget of {settings.n_trials}")
    try:
        return run_trial(job, study, trial, ranks)
    except optuna.TrialPruned:
        raise
    except Exception as error:  # recorded with the trial, which counts as finished; the study goes on
        trial.set_user_attr("error", first_line(error))
        raise


def run_trial(job: Job, study, trial, ranks: Ranks | None) -> float:
    """Sample the trial's values, train its run folder, and return its metric."""
    import optuna

    from arches.train.record import update_record
    from arches.train.loop import train

    settings = job.settings
    trials_dir = tune_dir(job.cfg.results_dir) / job.study
    # the sampler is read at each suggest: this trial draws with its own seed (see trial_sampler)
    study.sampler = trial_sampler(settings.seed, trial.number)
    params = {parameter.name: parameter.suggest(trial) for parameter in settings.space}
    trial_overrides = [f"{key}={format_value(value)}" for key, value in params.items()]
    if settings.keep_non_embedding_params:
        kv_heads = (job.cfg.arch.get("model") or {}).get("n_kv_heads")
        trial_overrides += shape_overrides(job.cfg.size, int(params["size.n_layers"]), kv_heads)
    trial.set_user_attr("overrides", trial_overrides)
    # a retry of a killed trial continues that trial's run folder from its last checkpoint
    # (same parameters, so the same config); any other trial starts its folder afresh
    frozen = next(t for t in study.get_trials(deepcopy=False) if t.number == trial.number)
    retried = frozen.system_attrs.get("failed_trial")
    run_name = f"trial-{trial.number if retried is None else retried:04d}"
    trial.set_user_attr("run_dir", str(trials_dir / run_name))
    resume = "never" if retried is None else "auto"
    run_overrides = [*job.overrides, *trial_overrides, f"results_dir={trials_dir}", f"run_name={run_name}",
                     f"++resume={resume}"]
    cfg = compose(run_overrides)
    if ranks is not None:  # the other ranks compose the same config and train with this one
        ranks.send({"study": job.study, "trial": trial.number, "overrides": run_overrides})
    try:
        record = train(cfg, callbacks=[pruning_callback(trial)])
    except optuna.TrialPruned:
        update_record(trials_dir / run_name, status="pruned")
        raise
    value = record.get(METRICS[settings.metric])
    if value is None or not math.isfinite(float(value)):
        raise RunFailure(f"{settings.metric} is {value}")
    trial.set_user_attr("params_non_embedding", record.get("params_non_embedding"))
    return float(value)


def report(job: Job, trial, log) -> None:
    """One line per finished trial (Optuna's callback after each)."""
    if trial.user_attrs.get("surplus"):
        return
    shown = " ".join(f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}"
                     for key, value in trial.params.items())
    if trial.state.name == "COMPLETE":
        outcome = f"complete, {job.settings.metric} {trial.value:.4f}"
    elif trial.state.name == "PRUNED":
        steps = sorted(trial.intermediate_values)
        outcome = f"pruned at step {steps[-1]}" if steps else "pruned"
    else:
        outcome = f"failed: {trial.user_attrs.get('error', 'interrupted')}"
    log(f"tune {job.study}: trial {trial.number} {outcome} ({shown})")


def summary(job: Job, study) -> dict:
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = study.best_trial if complete else None
    return {
        "study": job.study,
        "storage": shown_url(job.url),
        "preset": str(job.cfg.arch.name),
        "space": job.settings.space_name,
        "metric": job.settings.metric,
        "direction": job.settings.direction,
        "n_trials": sum(counts(t) for t in trials),
        "n_complete": len(complete),
        "n_pruned": sum(t.state == TrialState.PRUNED for t in trials),
        "n_failed": sum(t.state == TrialState.FAIL and "error" in t.user_attrs for t in trials),
        "best_value": best.value if best else None,
        "best_trial": best.number if best else None,
        "params": dict(best.params) if best else {},
        "overrides": list(best.user_attrs.get("overrides", [])) if best else [],
    }
