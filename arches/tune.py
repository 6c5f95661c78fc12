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
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import re
import socket
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import yaml
from omegaconf import DictConfig, OmegaConf

from arches.config import check_overrides, compose, group_choices, split_multirun
from arches.errors import RunFailure, UserError, closest, unknown

DISTRIBUTIONS = ("float", "log", "int", "categorical")
PARAMETER_KEYS = ("name", "distribution", "low", "high", "step", "choices")
METRICS = {"val_loss": "final_val_loss"}  # tune.metric -> the run record's field
DIRECTIONS = ("minimize", "maximize")
PRUNERS = ("median", "none")
NOT_A_SPACE = "default"  # sweeps/tune/default.yaml: the shared settings, no parameters
BEST_SUFFIX = ".best.yaml"


# --- the search space --------------------------------------------------------------


@dataclass(frozen=True)
class Parameter:
    """One searched hyperparameter: a config path and its distribution."""

    name: str
    distribution: str
    low: float | None = None
    high: float | None = None
    step: float | None = None
    choices: tuple | None = None

    @classmethod
    def from_entry(cls, entry: Any, space: str) -> Parameter:
        where = f"tune={space}"
        if not isinstance(entry, dict) or not entry.get("name"):
            raise UserError(f"{where}: each space entry needs a name (a config path), got {entry!r}")
        name = str(entry["name"])
        extra = sorted(set(entry) - set(PARAMETER_KEYS))
        if extra:
            raise UserError(f"{where}: {name} has unknown key '{extra[0]}'; valid: {', '.join(PARAMETER_KEYS)}")
        distribution = entry.get("distribution")
        if distribution not in DISTRIBUTIONS:
            raise UserError(
                f"{where}: {name} has unknown distribution '{distribution}'; valid: {', '.join(DISTRIBUTIONS)}."
                f"{closest(str(distribution), DISTRIBUTIONS)}"
            )
        if distribution == "categorical":
            choices = entry.get("choices")
            if not isinstance(choices, list) or not choices:
                raise UserError(f"{where}: {name} is categorical and needs a non-empty list of choices")
            return cls(name, distribution, choices=tuple(choices))
        low, high, step = entry.get("low"), entry.get("high"), entry.get("step")
        numbers = (int,) if distribution == "int" else (int, float)
        for key, value in (("low", low), ("high", high)):
            if not isinstance(value, numbers) or isinstance(value, bool):
                kind = "an integer" if distribution == "int" else "a number"
                raise UserError(f"{where}: {name} needs {key} as {kind}, got {value!r}")
        if not low < high:
            raise UserError(f"{where}: {name} has an empty or inverted range: low={low} must be below high={high}")
        if distribution == "log" and low <= 0:
            raise UserError(f"{where}: {name} is log-uniform and needs low > 0, got low={low}")
        if step is not None:
            if distribution == "log":
                raise UserError(f"{where}: {name} is log-uniform and takes no step")
            if not isinstance(step, numbers) or isinstance(step, bool) or step <= 0:
                raise UserError(f"{where}: {name} needs a positive step, got {step!r}")
        return cls(name, distribution, low=low, high=high, step=step)

    def suggest(self, trial) -> Any:
        if self.distribution == "categorical":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.distribution == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=int(self.step or 1))
        if self.distribution == "log":
            return trial.suggest_float(self.name, float(self.low), float(self.high), log=True)
        return trial.suggest_float(self.name, float(self.low), float(self.high), step=self.step)

    def as_dict(self) -> dict:
        keys = ("choices",) if self.distribution == "categorical" else ("low", "high", "step")
        entry = {"name": self.name, "distribution": self.distribution}
        entry.update({key: list(v) if key == "choices" else v for key in keys if (v := getattr(self, key)) is not None})
        return entry


@dataclass(frozen=True)
class Settings:
    """`cfg.tune`, validated: the space plus how the study runs."""

    space_name: str
    space: tuple[Parameter, ...]
    n_trials: int
    study: str | None
    storage: str | None
    metric: str
    direction: str
    seed: int
    best: bool
    keep_non_embedding_params: bool
    pruner: str
    pruner_startup_trials: int
    pruner_warmup_steps: int
    heartbeat_interval: int | None
    grace_period: int | None
    max_retry: int | None

    @classmethod
    def from_cfg(cls, cfg: DictConfig) -> Settings:
        spaces = [name for name in group_choices("tune") if name != NOT_A_SPACE]
        if cfg.get("tune") is None:
            raise UserError(f"arches tune needs a search space: tune=<space>; valid: {', '.join(spaces)}")
        tune = OmegaConf.to_container(cfg.tune, resolve=True)
        space_name = str(tune.get("name"))
        entries = tune.get("space") or []
        if not isinstance(entries, list) or not entries:
            raise UserError(f"tune={space_name} has no parameters to search; choose a space: {', '.join(spaces)}")
        space = tuple(Parameter.from_entry(entry, space_name) for entry in entries)
        names = [p.name for p in space]
        if len(set(names)) != len(names):
            raise UserError(f"tune={space_name} lists {next(n for n in names if names.count(n) > 1)} twice")
        pruner = tune.get("pruner") or {}
        settings = cls(
            space_name=space_name,
            space=space,
            n_trials=_count(tune.get("n_trials"), "tune.n_trials"),
            study=str(tune["study"]) if tune.get("study") else None,
            storage=str(tune["storage"]) if tune.get("storage") else None,
            metric=str(tune.get("metric")),
            direction=str(tune.get("direction")),
            seed=_count(tune.get("seed") or 0, "tune.seed", 0),
            best=bool(tune.get("best")),
            keep_non_embedding_params=bool(tune.get("keep_non_embedding_params")),
            pruner=str(pruner.get("name")),
            pruner_startup_trials=_count(pruner.get("n_startup_trials", 5), "tune.pruner.n_startup_trials", 0),
            pruner_warmup_steps=_count(pruner.get("n_warmup_steps", 0), "tune.pruner.n_warmup_steps", 0),
            heartbeat_interval=_optional_positive_int(tune.get("heartbeat_interval"), "tune.heartbeat_interval"),
            grace_period=_optional_positive_int(tune.get("grace_period"), "tune.grace_period"),
            max_retry=None if tune.get("max_retry") is None else _count(tune["max_retry"], "tune.max_retry", 0),
        )
        if settings.metric not in METRICS:
            raise UserError(
                f"tune.metric={settings.metric} is not supported; valid: {', '.join(METRICS)} (the final validation "
                f"loss; to rank by a task score, tune on val_loss and compare with `arches compare tuned=<study>`)"
            )
        if settings.direction not in DIRECTIONS:
            raise unknown("tune.direction", settings.direction, DIRECTIONS)
        if settings.pruner not in PRUNERS:
            raise unknown("tune.pruner.name", settings.pruner, PRUNERS)
        if settings.keep_non_embedding_params:
            if "size.n_layers" not in names:
                raise UserError("tune.keep_non_embedding_params=true needs size.n_layers in the space")
            derived = [n for n in names if n in ("size.d_model", "size.n_heads")]
            if derived:
                raise UserError(
                    f"tune.keep_non_embedding_params=true derives {derived[0]} from size.n_layers; "
                    f"drop it from the space"
                )
        if settings.study and not re.fullmatch(r"[A-Za-z0-9._-]+", settings.study):
            raise UserError(f"tune.study={settings.study!r} must use only letters, digits, '.', '_' and '-'")
        return settings

    def signature(self) -> dict:
        """What a study is bound to: resuming it with another space or goal would mix two searches."""
        return {
            "space": [p.as_dict() for p in self.space],
            "keep_non_embedding_params": self.keep_non_embedding_params,
            "metric": self.metric,
            "direction": self.direction,
        }


def _count(value: Any, key: str, minimum: int = 1) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise UserError(f"{key}={value} must be {'a positive' if minimum == 1 else 'a non-negative'} integer")
    return value


def _optional_positive_int(value: Any, key: str) -> int | None:
    return None if value is None else _count(value, key)


def check_space_keys(cfg: DictConfig, settings: Settings) -> None:
    """Every space parameter must name a key of the composed config (its value may be null)."""
    missing = object()
    for parameter in settings.space:
        if OmegaConf.select(cfg, parameter.name, default=missing) is missing:
            keys = _config_keys(cfg)
            raise UserError(
                f"tune={settings.space_name}: {parameter.name} is not a config key.{closest(parameter.name, keys)}"
            )


def _config_keys(node: Any, prefix: str = "") -> list[str]:
    keys = []
    for key, value in (node.items() if isinstance(node, (dict, DictConfig)) else []):
        if prefix == "" and key in ("tune", "hydra"):
            continue
        path = f"{prefix}{key}"
        keys.append(path)
        if isinstance(value, (dict, DictConfig)):
            keys.extend(_config_keys(value, path + "."))
    return keys


# --- the shape space: depth against width at fixed non-embedding parameters --------


def shape_overrides(size: Any, n_layers: int, n_kv_heads: int | None = None) -> list[str]:
    """size.d_model and size.n_heads for `n_layers` layers at the size's non-embedding parameters.

    N ~ 12 * n_layers * d_model^2 (Kaplan et al. 2020, §2.1) for an MLP of 4 * d_model,
    so d_model scales as sqrt(n_layers_0 / n_layers). The head dimension stays the
    size's (heads are added or removed, as wider models do), so d_model is rounded to
    a multiple of it: within a few percent at real sizes, coarse at `debug`. The head
    count stays a multiple of n_kv_heads; an explicit size.d_ff scales with d_model."""
    d_model, layers, heads = int(size.d_model), int(size.n_layers), int(size.n_heads)
    head_dim = d_model // heads
    group = int(n_kv_heads or 1)
    width = d_model * math.sqrt(layers / n_layers)
    new_heads = max(group, group * round(width / (head_dim * group)))
    overrides = [f"size.d_model={new_heads * head_dim}", f"size.n_heads={new_heads}"]
    if size.get("d_ff"):
        overrides.append(f"size.d_ff={max(1, round(int(size.d_ff) * new_heads / heads))}")
    return overrides


# --- the study: name, storage, creation ----------------------------------------------


def budget(cfg: DictConfig) -> str:
    if cfg.trainer.get("max_steps"):
        return f"{int(cfg.trainer.max_steps)}steps"
    return f"{int(cfg.train.max_tokens)}tokens"


def study_name(cfg: DictConfig, settings: Settings) -> str:
    """`tune.study`, or <preset>-<size>-<data>-<space>-<budget>: one study per preset at a fixed budget."""
    if settings.study:
        return settings.study
    name = f"{cfg.arch.name}-{cfg.size.name}-{cfg.data.source}-{settings.space_name}-{budget(cfg)}"
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


def tune_dir(results_dir: str | Path) -> Path:
    return Path(str(results_dir)) / "tune"


def storage_url(cfg: DictConfig, settings: Settings, name: str) -> str:
    if settings.storage:
        return settings.storage
    return f"sqlite:///{(tune_dir(cfg.results_dir) / f'{name}.db').resolve()}"


def _shown(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # a malformed URL has no password to hide
        return url


def _driver_url(url: str) -> str:
    """A bare postgresql:// URL with psycopg 3 (what arches[postgres] installs) where it is
    importable: SQLAlchemy 2.0 would pick psycopg2 for it, 2.1 picks psycopg. An explicit
    driver (postgresql+psycopg2://) is kept."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme in ("postgresql", "postgres"):
        import importlib.util

        if importlib.util.find_spec("psycopg") is not None:
            return f"postgresql+psycopg://{rest}"
    return url


def open_storage(url: str, settings: Settings):
    """An RDBStorage with the heartbeat on; a malformed or unreachable URL is one line."""
    import optuna
    from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError

    try:
        from optuna.storages import RetryHeartbeatStaleTrialCallback as Retry  # Optuna >= 4.9

        retry_key = "heartbeat_stale_trial_callback"
    except ImportError:
        from optuna.storages import RetryFailedTrialCallback as Retry

        retry_key = "failed_trial_callback"
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        # several workers on one SQLite file wait for its write lock instead of failing at once
        engine_kwargs = {"connect_args": {"timeout": 60}}
    elif url.startswith("postgres"):
        engine_kwargs = {"pool_pre_ping": True, "connect_args": {"connect_timeout": 10}}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the heartbeat is "experimental" in Optuna's words
            heartbeat: dict[str, Any] = {}
            if settings.heartbeat_interval:
                heartbeat = {
                    "heartbeat_interval": settings.heartbeat_interval,
                    "grace_period": settings.grace_period,
                    retry_key: Retry(max_retry=settings.max_retry),
                }
            for attempt in range(3):
                try:
                    return optuna.storages.RDBStorage(_driver_url(url), engine_kwargs=engine_kwargs, **heartbeat)
                except (IntegrityError, OperationalError) as error:
                    # workers started together on a new storage race to create its tables (and
                    # alembic_version's one row): the loser finds them made on a second look
                    racing = isinstance(error, IntegrityError) or "already exists" in str(error)
                    if attempt == 2 or not racing:
                        raise
                    time.sleep(0.5 + attempt)
    except ImportError:
        driver = " (pip install arches[postgres])" if url.startswith("postgres") else ""
        raise UserError(
            f"cannot open tune.storage {_shown(url)}: its database driver is not installed{driver}"
        ) from None
    except (SQLAlchemyError, ValueError, OSError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"cannot open tune.storage {_shown(url)}: {first}") from None


def _exists(storage, name: str) -> bool:
    try:
        storage.get_study_id_from_name(name)
    except KeyError:
        return False
    return True


def open_study(cfg: DictConfig, settings: Settings, name: str, url: str):
    """Create the study or resume it; one bound to another space or goal is refused untouched."""
    import optuna

    if not settings.storage:
        tune_dir(cfg.results_dir).mkdir(parents=True, exist_ok=True)  # the default SQLite file's folder
    storage = open_storage(url, settings)
    signature = settings.signature()
    if _exists(storage, name):
        study = optuna.load_study(study_name=name, storage=storage)
        if study.direction.name.lower() != settings.direction:
            raise UserError(
                f"study '{name}' in {_shown(url)} was made to {study.direction.name.lower()}; pass "
                f"tune.study=<new name> to start a new study, or tune.direction={study.direction.name.lower()}"
            )
        recorded = study.user_attrs.get("signature")
        if recorded is not None and recorded != signature:
            differs = next(key for key in signature if recorded.get(key) != signature[key])
            raise UserError(
                f"study '{name}' in {_shown(url)} exists with a different {differs.replace('_', ' ')} "
                f"({_describe(recorded, differs)}); pass tune.study=<new name> to start a new study, "
                f"or the original tune settings to resume it"
            )
    pruner = (
        optuna.pruners.MedianPruner(
            n_startup_trials=settings.pruner_startup_trials, n_warmup_steps=settings.pruner_warmup_steps
        )
        if settings.pruner == "median"
        else optuna.pruners.NopPruner()
    )
    study = optuna.create_study(
        storage=storage,
        study_name=name,
        direction=settings.direction,
        load_if_exists=True,  # another worker may create it in the same instant
        sampler=_sampler(settings.seed, 0),
        pruner=pruner,
    )
    if "signature" not in study.user_attrs:
        study.set_user_attr("signature", signature)
        study.set_user_attr("preset", str(cfg.arch.name))
        study.set_user_attr("size", str(cfg.size.name))
        study.set_user_attr("data", str(cfg.data.source))
        study.set_user_attr("budget", budget(cfg))
    return study


def _describe(signature: dict, key: str) -> str:
    value = signature.get(key)
    if key != "space":
        return f"{key.replace('_', ' ')} {value}"
    ranges = [str(p["choices"]) if "choices" in p else f"[{p['low']}, {p['high']}]" for p in value]
    return "; ".join(f"{p['name']} {p['distribution']} {shown}" for p, shown in zip(value, ranges))


def _sampler(seed: int, trial_number: int):
    """TPE seeded by (seed, trial number): a resumed study or a second worker would
    otherwise replay the first trials' random start-up draws with one seed."""
    from optuna.samplers import TPESampler

    # constant_liar: a worker's TPE counts other workers' running trials as poor, so
    # parallel workers spread out instead of sampling the same point
    return TPESampler(seed=seed * 100_003 + trial_number, constant_liar=True)


# --- trial accounting --------------------------------------------------------------


def counts(trial) -> bool:
    """A trial with an outcome: it counts towards tune.n_trials (see the module docstring)."""
    from optuna.trial import TrialState

    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return trial.state == TrialState.FAIL and "error" in trial.user_attrs


def progress(study) -> tuple[int, int]:
    """(trials with an outcome, trials running now, here or in other workers)."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    return sum(counts(t) for t in trials), sum(t.state == TrialState.RUNNING for t in trials)


def _surplus(study, number: int, n_trials: int) -> bool:
    from optuna.trial import TrialState

    earlier = [t for t in study.get_trials(deepcopy=False) if t.number < number]
    return sum(counts(t) or t.state == TrialState.RUNNING for t in earlier) >= n_trials


def _fail_abandoned(study, grace_period: int) -> None:
    """FAIL the trials whose process died between asking for them and starting them.

    Optuna's heartbeat only sees a trial once it has recorded one beat; a trial that
    has none is skipped forever and would hold its slot of the budget. One that has
    not marked itself started (the objective's first line; a retry inherits its original's
    user attributes, hence the trial number) after grace_period seconds never will; it
    sampled nothing and ran nothing, so it is not retried."""
    import datetime

    from optuna.trial import TrialState

    cutoff = datetime.datetime.now() - datetime.timedelta(seconds=grace_period)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        started = trial.user_attrs.get("started") == trial.number
        if not started and trial.datetime_start and trial.datetime_start < cutoff:
            study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)


class _Surplus(Exception):
    """This trial was asked after the budget had been filled by another worker."""


def pruning_callback(trial):
    """A Lightning callback that reports the validation loss to the trial at each validation
    and stops the run when the pruner says so. optuna-integration's
    PyTorchLightningPruningCallback does the same, but that package is neither installed
    nor a dependency, and pins its own Lightning range; these few lines are the whole job.

    Under DDP every rank has one and only rank 0 has the trial (`trial` is None on the
    others): rank 0 reports and decides, and its verdict (go on, prune, fail) is broadcast,
    so every rank stops at the same validation; the other ranks never touch the study."""
    import lightning as L  # imported here: bad input must not wait for Lightning to import
    import optuna

    class ReportValLoss(L.Callback):
        def __init__(self) -> None:
            self.reported: set[int] = set()

        def on_validation_end(self, trainer, pl_module) -> None:
            if trainer.sanity_checking or "val/loss" not in trainer.callback_metrics:
                return
            error: BaseException | None = None
            verdict = None
            if trial is not None:
                try:
                    verdict = self.verdict(trainer)
                except Exception as raised:  # e.g. the storage: the other ranks must still hear the verdict
                    error, verdict = raised, ("fail", _one_line(raised))
            # one process: returns the verdict as it is; DDP: rank 0's, on every rank
            verdict = trainer.strategy.broadcast(verdict, src=0)
            if error is not None:
                raise error
            if verdict is not None:
                kind, message = verdict
                raise optuna.TrialPruned(message) if kind == "prune" else RunFailure(message)

        def verdict(self, trainer) -> tuple[str, str] | None:
            value, step = float(trainer.callback_metrics["val/loss"]), int(trainer.global_step)
            if not math.isfinite(value):
                # a diverged trial fails (FAIL, with its error); reported, the pruner would call it pruned
                return "fail", f"validation loss became {value} at step {step}; lower train.lr"
            if step in self.reported:
                return None
            self.reported.add(step)
            trial.report(value, step)
            if trainer.state.fn == "fit" and trial.should_prune():
                return "prune", f"pruned at step {step} with val_loss {value:.4f}"
            return None

    return ReportValLoss()


def _format(value: Any) -> str:
    """A sampled value as Hydra override text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, str) and not re.fullmatch(r"[A-Za-z0-9_./-]+", value):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"  # Hydra's quoted string
    return repr(value) if isinstance(value, float) else str(value)


def _one_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


# --- trials on several devices: rank 0 asks, the others follow ----------------------


EXIT = "exit"
# how long the other ranks wait for rank 0's next trial: it may wait hours for other
# workers' trials to finish (the training collectives keep Lightning's own timeout)
COMMAND_TIMEOUT_S = 7 * 24 * 3600


def _one_device(cfg: DictConfig) -> bool:
    devices = cfg.trainer.get("devices")
    one = devices in (1, "1") or (OmegaConf.is_list(devices) and len(devices) == 1)
    return one and int(cfg.trainer.get("num_nodes") or 1) == 1


def _launched_rank() -> int:
    """The rank a launcher gave this process before it started (0 when none did): Lightning's
    rerun of the command sets LOCAL_RANK (and NODE_RANK on other machines), torchrun RANK,
    srun SLURM_PROCID."""
    from arches.train.resume import env_rank as _env_rank

    return _env_rank() or int(os.environ.get("NODE_RANK") or os.environ.get("GROUP_RANK") or 0)


class Ranks:
    """The processes that train each trial of a multi-device study (trainer=ddp, fsdp).

    DDP and Optuna have a known trap (lightning-hydra-template #639): every rank runs the
    same command, and each would ask the study for a trial of its own, with its own
    hyperparameters. Here only rank 0 opens the study. Before its first trial it starts the
    ranks with Lightning Fabric's launcher, the one `arches train trainer=ddp` uses: on one
    machine Lightning reruns this command line once per extra device (with LOCAL_RANK set);
    under torchrun or srun they are started already and join. The ranks share a
    process group, which each trial's Trainer then reuses, and a gloo group for commands:
    rank 0 broadcasts each trial's full list of overrides (its sampled values included);
    the others compose that config and call the same `train(cfg)` until rank 0 says exit.
    Pruning and failures: see `pruning_callback`."""

    def __init__(self, trainer: Any) -> None:
        self.trainer = trainer
        self.rank = _launched_rank()
        self.fabric = None
        self.group = None

    @property
    def follower(self) -> bool:
        return self.rank != 0

    @classmethod
    def for_jobs(cls, jobs: list[Job]) -> Ranks | None:
        """None when every trial trains in this one process."""
        spread = [job for job in jobs if not _one_device(job.cfg)]
        if not spread:
            return None
        placement = [_placement(job.cfg) for job in jobs]
        if len(set(placement)) > 1:
            raise UserError(
                "arches tune -m trains every study's trials on the same devices: keep trainer.accelerator, "
                "trainer.devices and trainer.num_nodes the same in each"
            )
        ranks = cls(spread[0].cfg.trainer)
        return ranks if ranks.world_size() > 1 else None

    def _fabric(self):
        if self.fabric is None:
            from lightning.fabric import Fabric

            from arches.loggers import quiet_lightning

            quiet_lightning()
            devices = self.trainer.devices
            devices = OmegaConf.to_container(devices) if OmegaConf.is_list(devices) else devices
            try:
                # DDP's launcher and process group serve FSDP as well: it only starts the ranks
                self.fabric = Fabric(
                    accelerator=self.trainer.accelerator,
                    devices=devices,
                    num_nodes=int(self.trainer.get("num_nodes") or 1),
                    strategy="ddp",
                )
            except Exception as error:  # Lightning's MisconfigurationException, ValueError, ...
                raise UserError(
                    f"trainer.accelerator={self.trainer.accelerator} trainer.devices={self.trainer.devices}: "
                    f"{_one_line(error)}"
                ) from None
        return self.fabric

    def world_size(self) -> int:
        return int(self._fabric().world_size)

    def launch(self) -> None:
        """Start or join the other ranks (once per process)."""
        if self.group is not None:
            return
        import datetime

        import torch.distributed as distributed

        fabric = self._fabric()
        fabric.launch()
        if (fabric.global_rank == 0) == self.follower:
            raise RunFailure(
                f"this process was started as rank {self.rank} but Lightning made it rank {fabric.global_rank}; "
                f"start `arches tune` once per machine (Lightning starts its ranks) or once per device "
                f"(torchrun, srun)"
            )
        self.group = distributed.new_group(
            backend="gloo", timeout=datetime.timedelta(seconds=COMMAND_TIMEOUT_S)
        )

    def send(self, message: Any) -> None:
        """Rank 0: a trial's overrides (or EXIT) to every other rank."""
        import torch.distributed as distributed

        distributed.broadcast_object_list([message], src=0, group=self.group)

    def receive(self) -> Any:
        import torch.distributed as distributed

        box = [None]
        distributed.broadcast_object_list(box, src=0, group=self.group)
        return box[0]

    def close(self, failed: bool = False) -> None:
        """Rank 0, at the end: the other ranks exit, and this returns once they have
        finished their last trial. Ranks that were never started need no word, unless a
        launcher (torchrun, srun) started them, waiting to join.

        After a failure of rank 0 the others may be gone, or stuck in a training
        collective: exit is sent without waiting for them (when this process ends,
        its connections close and theirs fail)."""
        if failed:
            if self.group is not None:
                sender = threading.Thread(target=self._send_quietly, args=(EXIT,), daemon=True)
                sender.start()
                sender.join(timeout=10)
            return
        if self.group is None and not self._fabric().strategy.cluster_environment.creates_processes_externally:
            return
        import torch.distributed as distributed

        self.launch()
        self.send(EXIT)
        distributed.barrier(group=self.group)

    def _send_quietly(self, message: Any) -> None:
        try:
            self.send(message)
        except Exception:
            pass

    def follow(self) -> None:
        """A rank other than 0: train the trials rank 0 sends, until it says exit."""
        import traceback

        import optuna

        from arches.errors import ArchesError
        from arches.train.loop import train

        self.launch()
        while True:
            message = self.receive()
            if message == EXIT:
                import torch.distributed as distributed

                distributed.barrier(group=self.group)
                return
            try:
                train(compose(message["overrides"]), callbacks=[pruning_callback(None)])
            except Exception as error:  # rank 0 records the trial's outcome; this rank waits for the next
                if isinstance(error, (ArchesError, optuna.TrialPruned)):
                    continue  # rank 0 stopped the same way, and says so
                print(f"arches: rank {self.rank}, trial {message.get('trial')}: {type(error).__name__}: "
                      f"{_one_line(error)}", file=sys.stderr, flush=True)
                if os.environ.get("ARCHES_DEBUG"):
                    traceback.print_exc()


def _placement(cfg: DictConfig) -> tuple:
    trainer = cfg.trainer
    return (str(trainer.accelerator), str(trainer.devices), int(trainer.get("num_nodes") or 1))


# --- running a study ---------------------------------------------------------------


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
    if not _one_device(cfg) and any(word in strategy for word in ("spawn", "fork", "notebook")):
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


@contextlib.contextmanager
def ranks_for(jobs: list[Job]) -> Iterator[Ranks | None]:
    """The ranks that train these studies' trials (None: this process alone). On rank 0,
    leaving the block tells the other ranks to exit and waits until they have."""
    ranks = Ranks.for_jobs(jobs)
    if ranks is None or ranks.follower:
        yield ranks
        return
    try:
        yield ranks
    except BaseException:
        ranks.close(failed=True)
        raise
    ranks.close()


def run_job(job: Job, log=None, ranks: Ranks | None = None) -> dict:
    """One study, in this process: rank 0 of `ranks` when its trials train on several devices."""
    import optuna

    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    settings = job.settings
    study = open_study(job.cfg, settings, job.study, job.url)
    trials_dir = tune_dir(job.cfg.results_dir) / job.study
    base_size = job.cfg.size

    def objective(trial) -> float:
        # first: marks this trial as started (its heartbeat thread is running); see `_fail_abandoned`
        trial.set_user_attr("started", trial.number)
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        if _surplus(study, trial.number, settings.n_trials):
            trial.set_user_attr("surplus", True)
            raise _Surplus(f"trial {trial.number} is past the budget of {settings.n_trials}")
        try:
            return run_trial(trial)
        except optuna.TrialPruned:
            raise
        except Exception as error:  # recorded with the trial, which counts as finished; the study goes on
            trial.set_user_attr("error", _one_line(error))
            raise

    def run_trial(trial) -> float:
        from arches.train.loop import train
        from arches.train.record import update_record

        # the sampler is read at each suggest: this trial draws with its own seed (see _sampler)
        study.sampler = _sampler(settings.seed, trial.number)
        params = {parameter.name: parameter.suggest(trial) for parameter in settings.space}
        trial_overrides = [f"{key}={_format(value)}" for key, value in params.items()]
        if settings.keep_non_embedding_params:
            kv_heads = (job.cfg.arch.get("model") or {}).get("n_kv_heads")
            trial_overrides += shape_overrides(base_size, int(params["size.n_layers"]), kv_heads)
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

    def report(study, trial) -> None:
        if trial.user_attrs.get("surplus"):
            return
        shown = " ".join(f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}"
                         for key, value in trial.params.items())
        if trial.state.name == "COMPLETE":
            outcome = f"complete, {settings.metric} {trial.value:.4f}"
        elif trial.state.name == "PRUNED":
            steps = sorted(trial.intermediate_values)
            outcome = f"pruned at step {steps[-1]}" if steps else "pruned"
        else:
            outcome = f"failed: {trial.user_attrs.get('error', 'interrupted')}"
        log(f"tune {job.study}: trial {trial.number} {outcome} ({shown})")

    done, running = progress(study)
    spread = f"; each trial on {ranks.world_size()} ranks, rank 0 asking" if ranks is not None else ""
    log(f"tune {job.study}: {done} of {settings.n_trials} trials finished; storage {_shown(job.url)}{spread}")
    poll = min(settings.heartbeat_interval or 1, 5)
    while True:
        done, running = progress(study)
        if done >= settings.n_trials:
            break
        if done + running >= settings.n_trials:
            # the rest of the budget is running in other workers (or in a killed one)
            if not settings.heartbeat_interval:
                log(f"tune {job.study}: {running} trials still RUNNING elsewhere; "
                    f"with tune.heartbeat_interval unset, a killed worker's trial is never retried")
                break
            time.sleep(poll)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                optuna.storages.fail_stale_trials(study)  # a killed worker's trial: FAIL, then queued again
            _fail_abandoned(study, settings.grace_period or 2 * settings.heartbeat_interval)
            continue
        if ranks is not None:  # before the trial is asked: a launch that fails is no trial's failure
            ranks.launch()
        study.optimize(objective, n_trials=1, catch=(Exception,), callbacks=[report])
    return summary(job, study)


def summary(job: Job, study) -> dict:
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = study.best_trial if complete else None
    return {
        "study": job.study,
        "storage": _shown(job.url),
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


# --- the best trial as an override file --------------------------------------------


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
    if not _exists(storage, job.study):
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
        first = str(error).splitlines()[0]
        raise UserError(f"{path} is corrupted ({first}); write it again with tune.best=true") from None
    if not isinstance(data, dict) or not isinstance(data.get("overrides"), list):
        raise UserError(f"{path} has no list of overrides; write it again with `arches tune ... tune.best=true`")
    return data


def best_table(result: dict) -> str:
    rows = [("parameter", "value")] + [(key, _format(value)) for key, value in result["params"].items()]
    derived = [o.split("=", 1) for o in result["overrides"] if o.split("=", 1)[0] not in result["params"]]
    rows += [(f"{key} (derived)", value) for key, value in derived]
    width = max(len(key) for key, _ in rows)
    head = (
        f"study {result['study']}: best {result['metric']} {result['best_value']:.4f} (trial {result['best_trial']}; "
        f"{result['n_complete']} complete of {result['n_trials']} finished)"
    )
    return "\n".join([head, *(f"  {key.ljust(width)}  {value}" for key, value in rows)])


# --- the command ------------------------------------------------------------------


def _parsed(overrides: list[str]) -> list:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        return OverridesParser.create().parse_overrides(overrides)
    except HydraException as error:
        raise UserError(f"bad override: {_one_line(error)}") from None


def expand_sweeps(overrides: list[str]) -> list[list[str]]:
    """`-m arch=gpt,bert size=debug,tiny`: every combination of the comma lists, in order
    (Hydra's basic sweeper's expansion, read with Hydra's own override parser)."""
    axes = []
    for override, text in zip(_parsed(overrides), overrides):
        if override.is_sweep_override():
            if not override.is_discrete_sweep():
                raise UserError(f"{text}: arches tune -m takes lists and ranges, not intervals")
            axes.append([f"{override.get_key_element()}={value}" for value in override.sweep_string_iterator()])
        else:
            axes.append([text])
    return [list(combination) for combination in itertools.product(*axes)]


def tune_command(argv: list[str]) -> None:
    """`arches tune [-m] arch=<preset> tune=<space> [overrides]`.

    -m runs one study per combination of comma lists, one after another, each with
    the same budget. It is expanded here rather than by Hydra's multirun: a study
    composes a fresh config per trial with Hydra's compose API, which would reset the
    global state of a running Hydra app, and parallelism comes from workers instead:
    several `arches tune` processes or machines on one tune.storage share a study."""
    import optuna

    if not os.environ.get("ARCHES_DEBUG"):
        # one line per trial comes from here; Optuna would add a traceback per failed trial
        optuna.logging.set_verbosity(optuna.logging.ERROR)
    multirun, overrides = split_multirun(argv)
    check_overrides(overrides)
    sweeps = [text for override, text in zip(_parsed(overrides), overrides) if override.is_sweep_override()]
    if sweeps and not multirun:
        raise UserError(f"{sweeps[0]} lists several values; add -m to tune each in turn")
    jobs = [prepare_job(job) for job in (expand_sweeps(overrides) if multirun else [overrides])]
    # every job validated before any study is touched
    with ranks_for([job for job in jobs if not job.settings.best]) as ranks:
        if ranks is not None and ranks.follower:  # trains rank 0's trials; rank 0 reports
            ranks.follow()
            return
        for job in jobs:
            if job.settings.best:
                if _launched_rank() == 0:  # under torchrun or srun, every rank runs this command
                    result, path = write_best(job)
                    print(best_table(result))
                    print(path)
                continue
            result = run_job(job, ranks=ranks)
            best = "no complete trial"
            if result["best_value"] is not None:
                best = f"best {result['metric']} {result['best_value']:.4f}"
            print(f"{result['study']}\t{result['n_trials']} trials\t{best}\t{result['storage']}", flush=True)
