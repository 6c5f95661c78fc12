"""The `logger` config group (sweeps/logger/) -> Lightning's loggers.

logs/metrics.csv (Lightning's CSVLogger, kept across a resume) is always written: it is
part of the run folder, and arches reads a run's metrics from it. The group adds the
others: `tensorboard` (logs/tensorboard/, with csv the default), `wandb` (WandbLogger,
files in logs/wandb/) and `mlflow` (MLFlowLogger, by default a SQLite store
<results_dir>/mlflow.db), several at once as `logger=[tensorboard,wandb]`. wandb and
mlflow are optional extras (`pip install arches[wandb]`, `arches[mlflow]`): a missing
one, like a bad setting, is refused in one line before any run folder exists.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import logging
import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from arches.errors import UserError, first_line, unknown
from arches.settings_kinds import Flag, Items, Text

DEFAULT_LOGGERS = ("csv", "tensorboard")  # a config without a `logger` section (written before it existed)
# logger name -> the package it needs (and the extra that installs it), None: always there
PACKAGES = {"csv": None, "tensorboard": None, "wandb": "wandb", "mlflow": "mlflow"}
SETTINGS = {
    "csv": {},
    "tensorboard": {},
    "wandb": {
        "project": Text(example="arches"),
        "entity": Text(example="my-team", nullable=True),
        "offline": Flag(),
        "tags": Items(Text(example="baseline"), must="a list of names", example="[baseline,gpu]", min_items=0),
    },
    "mlflow": {
        "experiment": Text(example="arches"),
        "tracking_uri": Text(example="http://localhost:5000", nullable=True),
    },
}

START_ADVICE = {
    "wandb": "log in with `wandb login` (or set WANDB_API_KEY), or log offline with logger.wandb.offline=true",
    "mlflow": "check logger.mlflow.tracking_uri and that its server is reachable",
}


def chosen(cfg: DictConfig) -> dict[str, dict]:
    """{logger name: its settings} as the config chooses them, csv always among them."""
    section = cfg.get("logger")
    if section is None:
        return {name: {} for name in DEFAULT_LOGGERS}
    loggers = OmegaConf.to_container(section, resolve=True) if OmegaConf.is_config(section) else dict(section)
    return {"csv": {}, **{name: settings or {} for name, settings in loggers.items()}}


def check_logger_settings(cfg: DictConfig) -> None:
    """Unknown loggers and settings, bad values and missing packages, each one line."""
    section = cfg.get("logger")
    if section is not None and not OmegaConf.is_dict(section):
        raise UserError(f"logger={section!r} must choose loggers from sweeps/logger/, e.g. logger=wandb or logger=[tensorboard,wandb]")
    for name, settings in chosen(cfg).items():
        if name not in PACKAGES:
            raise unknown("logger", name, PACKAGES)
        if not isinstance(settings, dict):
            raise UserError(f"logger.{name}={settings!r} must be a section of settings, e.g. logger={name}")
        for key, value in settings.items():
            if not SETTINGS[name]:
                raise UserError(f"logger.{name} takes no settings; remove logger.{name}.{key}")
            if key not in SETTINGS[name]:
                raise unknown(f"logger.{name} setting", key, SETTINGS[name])
            SETTINGS[name][key].check(f"logger.{name}.{key}", value)
        package = PACKAGES[name]
        if package is not None and importlib.util.find_spec(package) is None:
            raise UserError(f"logger={name} needs {package}: pip install arches[{name}] (or pip install {package})")


def run_loggers(cfg: DictConfig, logs: Path, run: str, lit, resuming: bool) -> list:
    """The Lightning loggers of one run attempt, csv first (Lightning's `trainer.logger`).
    The trackers also get the resolved config as their run's parameters (Lightning logs
    only a module's saved hyperparameters, and LitArches saves none)."""
    loggers, trackers = [], {}
    for name, settings in chosen(cfg).items():
        if name == "csv":
            loggers.insert(0, resumable_csv_logger(logs, lit, resuming))
        elif name == "tensorboard":
            from lightning.pytorch.loggers import TensorBoardLogger

            loggers.append(TensorBoardLogger(logs, name="", version="tensorboard"))
        elif name == "wandb":
            from lightning.pytorch.loggers import WandbLogger

            # one wandb run per attempt, named after the arches run (a resumed attempt is a new
            # wandb run of the same name; its metrics go on from the checkpoint's step)
            trackers[name] = WandbLogger(
                name=run, project=str(settings.get("project", "arches")), entity=settings.get("entity"),
                save_dir=str(logs), offline=bool(settings.get("offline", False)),
                tags=[str(tag) for tag in settings.get("tags") or []],
            )  # fmt: skip
        elif name == "mlflow":
            trackers[name] = mlflow_logger(cfg, settings, run)
    for name, tracker in trackers.items():
        try:  # starts the tracker's run now, so a login or server problem is one line before training
            tracker.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
        except Exception as error:
            text = first_line(error)
            raise UserError(f"logger={name} could not start its run ({text}); {START_ADVICE[name]}") from error
    return loggers + list(trackers.values())


def mlflow_tracking_uri(cfg: DictConfig, settings: dict) -> str:
    """logger.mlflow.tracking_uri, or a SQLite store next to the run folders (MLflow 3
    refuses its plain-file store unless told to: the database is its recommended local store)."""
    if settings.get("tracking_uri"):
        return str(settings["tracking_uri"])
    return f"sqlite:///{Path(cfg.results_dir).resolve() / 'mlflow.db'}"


def mlflow_logger(cfg: DictConfig, settings: dict, run: str):
    import mlflow  # noqa: F401  (it sets its loggers' level when imported: quietened after)
    from lightning.pytorch.loggers import MLFlowLogger

    if not os.environ.get("ARCHES_DEBUG"):
        # its database set-up (alembic migrations) logs at INFO: not news on every run
        for name in ("mlflow", "alembic"):
            logging.getLogger(name).setLevel(logging.WARNING)
    uri = mlflow_tracking_uri(cfg, settings)
    local = uri.startswith("sqlite:///") and not settings.get("tracking_uri")
    return MLFlowLogger(
        experiment_name=str(settings.get("experiment", "arches")),
        run_name=run,
        tracking_uri=uri,
        tags={"arches_run": run},
        # artifacts (none are logged unless asked) beside the store, not in the working directory
        artifact_location=(Path(cfg.results_dir).resolve() / "mlartifacts").as_uri() if local else None,
    )


# ---------------------------------------------------------------- logs/metrics.csv across a resume


def _keep_log_rows(metrics_csv: Path, resumed: dict) -> None:
    """logs/metrics.csv as it stood when the checkpoint was saved: rows logged after it
    are trained (and logged) again, and the checkpointed step's own row, which Lightning
    writes only after saving, comes from the checkpoint."""
    rows, fields = [], []
    if metrics_csv.exists():
        with open(metrics_csv, newline="") as handle:
            reader = csv.DictReader(handle)
            fields, rows = list(reader.fieldnames or []), list(reader)
    if resumed.get("step") is not None:
        rows = [row for row in rows if row.get("step") in ("", None) or int(float(row["step"])) < resumed["step"]]
    if resumed.get("row"):
        rows.append(resumed["row"])
        fields = sorted(set(fields) | set(resumed["row"]))
    if not fields:
        return
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    from arches.train.run_folder import write_atomic

    write_atomic(metrics_csv, out.getvalue())


def resumable_csv_logger(logs: Path, lit, resuming: bool):
    """Lightning's CSVLogger deletes an existing metrics.csv when it opens the folder; a
    resumed run keeps the rows up to its checkpoint and appends the rest. The cut waits
    for the first save, when the checkpoint has been loaded and says where it was."""
    from lightning.pytorch.loggers import CSVLogger
    from lightning.pytorch.loggers.csv_logs import ExperimentWriter

    class ResumedWriter(ExperimentWriter):
        _cut = not resuming

        def _check_log_dir_exists(self) -> None:
            if not resuming:
                super()._check_log_dir_exists()

        def save(self) -> None:
            if not self._cut and self.metrics:
                self._cut = True
                _keep_log_rows(Path(self.metrics_file_path), lit.resumed_log or {})
                if self._fs.isfile(self.metrics_file_path):
                    with open(self.metrics_file_path, newline="") as handle:
                        self.metrics_keys = sorted(csv.DictReader(handle).fieldnames or [])
            super().save()

    class ResumedCSVLogger(CSVLogger):
        @property
        def experiment(self):
            if self._experiment is None:
                os.makedirs(self.root_dir, exist_ok=True)
                self._experiment = ResumedWriter(log_dir=self.log_dir)
            return self._experiment

    return ResumedCSVLogger(logs, name="", version="")


def quiet_lightning() -> None:
    """Lightning's start-up banners (accelerators, tips) are not news on every run: errors
    stay one line. Called after Lightning is imported, which sets its own level;
    ARCHES_DEBUG=1 keeps them."""
    if not os.environ.get("ARCHES_DEBUG"):
        for name in ("lightning.pytorch", "lightning.fabric"):
            logging.getLogger(name).setLevel(logging.WARNING)
