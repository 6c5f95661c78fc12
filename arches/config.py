"""Finding and composing the Hydra config tree in `sweeps/`.

`sweeps` is shipped as a package so the same tree is found from a checkout
and from an installed distribution. Group choices are checked before Hydra
sees them, so an unknown preset gets one line with the valid names and the
closest one, rather than Hydra's multi-line exception.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf

from arches.errors import UserError, first_line, unknown

CONFIG_NAME = "config"


def auto_switch(key: str, value, auto: bool) -> bool:
    """A setting that is true, false or `auto` (which takes `auto`, e.g. "on a GPU");
    anything else is one line naming the key and the valid values."""
    if value == "auto":
        return auto
    if not isinstance(value, bool):
        raise UserError(f"{key}={value!r} is not valid; choose one of: auto, true, false")
    return value


def sweeps_dir() -> Path:
    return Path(str(resources.files("sweeps")))


def group_choices(group: str) -> list[str]:
    folder = sweeps_dir() / group
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.yaml"))


def config_groups() -> list[str]:
    return sorted(p.name for p in sweeps_dir().iterdir() if p.is_dir() and not p.name.startswith("_"))


def check_overrides(overrides: list[str]) -> None:
    """Raise UserError for a group override naming a config that does not exist."""
    groups = set(config_groups())
    for override in overrides:
        if "=" not in override:
            raise UserError(f"override '{override}' is not key=value; e.g. arch=gpt size=tiny")
        key, value = override.split("=", 1)
        key = key.lstrip("+~")
        if key in groups and value not in ("", "null"):
            # a Hydra sweep list (`-m arch=gpt,bert`) names several choices, and so does a
            # group that takes several at once (`logger=[tensorboard,wandb]`)
            for choice in value.strip("[]").split(","):
                choice = choice.strip()
                if choice and choice not in group_choices(key):
                    raise unknown(key, choice, group_choices(key))


def compose(overrides: list[str] | None = None, config_name: str = CONFIG_NAME, hydra_node: bool = False) -> DictConfig:
    """The resolved-able config for these overrides (Hydra's compose API); `hydra_node`
    adds Hydra's own `hydra:` section (`--cfg all`, and the group choices help reads)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    overrides = list(overrides or [])
    check_overrides(overrides)
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(sweeps_dir()), version_base=None):
            cfg = hydra_compose(config_name=config_name, overrides=overrides, return_hydra_config=hydra_node)
    except (HydraException, OmegaConfBaseException) as error:
        first = first_line(error)
        missing = re.fullmatch(r"Could not override '([\w.]+)'\.?", first)
        if missing:  # a key no section has: the settings tables name the closest one
            from arches.settings import unknown_override

            suggestion = unknown_override(missing.group(1))
            if suggestion is not None:
                raise suggestion from error
        raise UserError(f"bad override: {first}") from error
    except yaml.YAMLError as error:
        raise broken_yaml(error) from None
    return cfg


def broken_yaml(error: yaml.YAMLError) -> UserError:
    """One line naming the config file that does not parse, with its line and column.
    Hydra parses a file's text, so the error knows no file name: the tree is searched for
    the file that fails (a few dozen small files)."""
    for path in sorted(sweeps_dir().rglob("*.yaml")):
        try:
            yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as found:
            mark = getattr(found, "problem_mark", None)
            where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
            problem = getattr(found, "problem", None) or first_line(found)
            return UserError(f"{path}{where}: {problem}; fix the YAML there")
    return UserError(f"a config file does not parse: {first_line(error)}")


def to_container(cfg: DictConfig) -> dict:
    """The fully resolved config as plain Python (what a run folder records)."""
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


MULTIRUN_FLAGS = ("-m", "--multirun")


def split_multirun(argv: list[str]) -> tuple[bool, list[str]]:
    """Hydra's `-m`/`--multirun` flag and the overrides around it: (multirun?, overrides)."""
    return any(arg in MULTIRUN_FLAGS for arg in argv), [arg for arg in argv if arg not in MULTIRUN_FLAGS]


def expand_grid(overrides: list[str]) -> list[list[str]]:
    """The jobs of a `-m` grid, in order: `arch=gpt,bert size=debug,tiny` is (gpt, debug),
    (gpt, tiny), (bert, debug), (bert, tiny). It is Hydra's own override grammar and its
    basic sweeper's cartesian product, the expansion `arches train -m` runs through Hydra's
    multirun, so every command that takes a grid reads it alike: comma lists and range()
    sweep, brackets (`data.paths=[/a,/b]`) are one value, and a key given twice keeps its
    first place and its last value. A grid Hydra cannot expand is one line."""
    # BasicSweeper.split_arguments is what Hydra's multirun calls; it lives in hydra._internal
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except HydraException as error:
        raise UserError(f"bad override: {first_line(error)}") from None
    for override, text in zip(parsed, overrides):
        if override.is_sweep_override() and not override.is_discrete_sweep():
            raise UserError(f"{text}: a grid takes lists and ranges, not intervals")
    try:
        (jobs,) = BasicSweeper.split_arguments(parsed, max_batch_size=None)
    except HydraException as error:  # e.g. glob(), which needs a running Hydra app's config loader
        raise UserError(f"bad override: {first_line(error)}") from None
    return jobs
