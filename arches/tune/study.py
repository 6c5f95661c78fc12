"""A study's name, storage and creation: one Optuna study per preset at a fixed budget, in an
RDB storage (SQLite by default, PostgreSQL for many machines), with its seeded sampler."""

from __future__ import annotations

import re
import time
import warnings
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from arches.errors import UserError, first_line
from arches.tune.space import Settings


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


def shown_url(url: str) -> str:
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
    from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError, SQLAlchemyError

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
                except (IntegrityError, OperationalError, ProgrammingError) as error:
                    # workers started together on a new storage race to create its tables, its
                    # enum types and alembic_version's one row: the loser's CREATE fails (a
                    # duplicate key; on PostgreSQL DuplicateTable or DuplicateObject, which
                    # SQLAlchemy calls a ProgrammingError), and a second look finds them made
                    if attempt == 2 or not _lost_creation_race(error):
                        raise
                    time.sleep(0.5 + attempt)
    except ImportError:
        driver = " (pip install arches[postgres])" if url.startswith("postgres") else ""
        raise UserError(
            f"cannot open tune.storage {shown_url(url)}: its database driver is not installed{driver}"
        ) from None
    except (SQLAlchemyError, ValueError, OSError) as error:
        raise UserError(f"cannot open tune.storage {shown_url(url)}: {first_line(error)}") from None


# PostgreSQL's SQLSTATEs for a CREATE that another connection's committed CREATE beat:
# unique_violation, duplicate_table, duplicate_object
_CREATED_BY_ANOTHER = {"23505", "42P07", "42710"}


def _lost_creation_race(error: Exception) -> bool:
    from sqlalchemy.exc import IntegrityError

    sqlstate = getattr(getattr(error, "orig", None), "sqlstate", None)
    return isinstance(error, IntegrityError) or sqlstate in _CREATED_BY_ANOTHER or "already exists" in str(error)


def study_exists(storage, name: str) -> bool:
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
    if study_exists(storage, name):
        study = optuna.load_study(study_name=name, storage=storage)
        if study.direction.name.lower() != settings.direction:
            raise UserError(
                f"study '{name}' in {shown_url(url)} was made to {study.direction.name.lower()}; pass "
                f"tune.study=<new name> to start a new study, or tune.direction={study.direction.name.lower()}"
            )
        recorded = study.user_attrs.get("signature")
        if recorded is not None and recorded != signature:
            differs = next(key for key in signature if recorded.get(key) != signature[key])
            raise UserError(
                f"study '{name}' in {shown_url(url)} exists with a different {differs.replace('_', ' ')} "
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
        sampler=trial_sampler(settings.seed, 0),
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


def trial_sampler(seed: int, trial_number: int):
    """TPE seeded by (seed, trial number): a resumed study or a second worker would
    otherwise replay the first trials' random start-up draws with one seed."""
    from optuna.samplers import TPESampler

    # constant_liar: a worker's TPE counts other workers' running trials as poor, so
    # parallel workers spread out instead of sampling the same point
    return TPESampler(seed=seed * 100_003 + trial_number, constant_liar=True)
