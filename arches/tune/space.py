"""The search space of a study: its parameters, the validated `cfg.tune` settings, and the
shape space (depth against width at fixed non-embedding parameters)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from arches.config import group_choices
from arches.errors import UserError, closest, unknown

DISTRIBUTIONS = ("float", "log", "int", "categorical")
PARAMETER_KEYS = ("name", "distribution", "low", "high", "step", "choices")
METRICS = {"val_loss": "final_val_loss"}  # tune.metric -> the run record's field
DIRECTIONS = ("minimize", "maximize")
PRUNERS = ("median", "none")
NOT_A_SPACE = "default"  # sweeps/tune/default.yaml: the shared settings, no parameters


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


def format_value(value: Any) -> str:
    """A sampled value as Hydra override text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, str) and not re.fullmatch(r"[A-Za-z0-9_./-]+", value):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"  # Hydra's quoted string
    return repr(value) if isinstance(value, float) else str(value)


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
