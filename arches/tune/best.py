"""The best trial of a study as an override file, `<results_dir>/tune/<study>.best.yaml`:
written by `arches tune ... tune.best=true`, read by `arches compare tuned=<study>`."""

from __future__ import annotations

from pathlib import Path

import yaml

from arches.errors import UserError, first_line, unknown
from arches.tune.run import Job, summary
from arches.tune.space import format_value
from arches.tune.study import open_storage, study_exists, tune_dir

BEST_SUFFIX = ".best.yaml"


def existing_studies(job: Job) -> list[str]:
    if job.settings.storage:
        import optuna

        return optuna.get_all_study_names(open_storage(job.url, job.settings))
    return sorted(p.stem for p in tune_dir(job.cfg.results_dir).glob("*.db"))


def best_path(results_dir: str | Path, study: str) -> Path:
    return tune_dir(results_dir) / f"{study}{BEST_SUFFIX}"


def write_best(job: Job) -> tuple[dict, Path]:
    """Write the study's best trial as `<results_dir>/tune/<study>.best.yaml`; runs nothing."""
    import optuna

    from arches.train.run_folder import write_atomic

    default_db = tune_dir(job.cfg.results_dir) / f"{job.study}.db"
    if not job.settings.storage and not default_db.exists():  # opening it would create it
        raise unknown("study", job.study, existing_studies(job))
    storage = open_storage(job.url, job.settings)
    if not study_exists(storage, job.study):
        raise unknown("study", job.study, existing_studies(job))
    study = optuna.load_study(study_name=job.study, storage=storage)
    result = summary(job, study)
    if result["best_trial"] is None:
        raise UserError(f"study '{job.study}' has no complete trial yet; run `arches tune` without tune.best first")
    path = best_path(job.cfg.results_dir, job.study)
    write_atomic(path, yaml.safe_dump(result, sort_keys=False))
    return result, path


def tuned_overrides(results_dir: str | Path, study: str) -> dict:
    """The best trial of `study`, as written by `arches tune ... tune.best=true`.

    Returns the dict of `<results_dir>/tune/<study>.best.yaml`: `study`, `preset`,
    `n_trials` (trials with an outcome), `n_complete`, `metric`, `direction`,
    `best_value`, `best_trial`, `params` and `overrides` (["train.lr=0.003", ...]:
    Hydra overrides to append after a run's own). A study without that file is a
    UserError listing the studies that have one."""
    path = best_path(results_dir, study)
    if not path.exists():
        known = sorted(p.name.removesuffix(BEST_SUFFIX) for p in tune_dir(results_dir).glob(f"*{BEST_SUFFIX}"))
        error = unknown("tuned study", study, known)
        raise UserError(f"{error} (write one with `arches tune ... tune.best=true`)")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise UserError(f"{path} is corrupted ({first_line(error)}); write it again with tune.best=true") from None
    if not isinstance(data, dict) or not isinstance(data.get("overrides"), list):
        raise UserError(f"{path} has no list of overrides; write it again with `arches tune ... tune.best=true`")
    return data


def best_table(result: dict) -> str:
    rows = [("parameter", "value")] + [(key, format_value(value)) for key, value in result["params"].items()]
    derived = [o.split("=", 1) for o in result["overrides"] if o.split("=", 1)[0] not in result["params"]]
    rows += [(f"{key} (derived)", value) for key, value in derived]
    width = max(len(key) for key, _ in rows)
    head = (
        f"study {result['study']}: best {result['metric']} {result['best_value']:.4f} (trial {result['best_trial']}; "
        f"{result['n_complete']} complete of {result['n_trials']} finished)"
    )
    return "\n".join([head, *(f"  {key.ljust(width)}  {value}" for key, value in rows)])
