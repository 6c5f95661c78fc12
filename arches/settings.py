"""Every setting of the `train`, `trainer`, `data`, `eval`, `tune`, `compare` and `experiment`
sections, typed in one table per section (the kinds are in `arches.settings_kinds`), and
checked before anything is prepared, imported or written: a bad value, or a key the section
does not have, is one line naming the key, what it must be and an example (or the closest
valid name), and no folder exists yet.

Each command checks the sections it reads, first: `arches train` train and data, `arches
tune` train, data and tune, `arches eval` eval, `arches compare` compare, eval and every
run's train and data, `arches data prepare` data. A section without a key keeps the code's
default, so a config with fewer keys (an older run's) still passes.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from arches.errors import UserError, first_line, unknown
from arches.loggers import check_logger_settings
from arches.progress import PROGRESS_MODES
from arches.settings_kinds import Choice, Entry, Flag, Items, Mapping, Number, Text

__all__ = ["Number", "check_compare_settings", "check_data_settings", "check_eval_settings", "check_settings",
           "check_train_settings", "check_tune_settings", "rule_for", "unknown_override"]  # fmt: skip


def _count(minimum: int, example: str, **options) -> Number:
    return Number(integer=True, minimum=minimum, example=example, **options)


def _real(example: str, **options) -> Number:
    return Number(integer=False, minimum=0, example=example, **options)


FRACTION = dict(maximum=1, below_maximum=True)  # [0, 1)


class Devices:
    """trainer.devices as Lightning takes it: a count (-1: every visible device), auto, a
    list of device indices, or their text ("0,1")."""

    example = "1"

    def check(self, key: str, value: Any) -> None:
        count = isinstance(value, int) and not isinstance(value, bool) and (value == -1 or value >= 1)
        indices = isinstance(value, list) and bool(value) and all(
            isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in value
        )  # fmt: skip
        text = isinstance(value, str) and (value == "auto" or re.fullmatch(r"-1|\d+(,\d+)*,?", value) is not None)
        if not (count or indices or text):
            raise UserError(
                f"{key}={value!r} must be a device count >= 1, -1 (every visible device), auto, or a list of "
                f"device indices, e.g. {key}=1 or {key}=[0,1]"
            )


# The values Lightning 2 takes (lightning.fabric.plugins.precision.precision._PRECISION_INPUT,
# its AcceleratorRegistry and StrategyRegistry); tests/test_settings.py checks these against
# the installed Lightning, so an upgrade that adds one fails a test rather than a user.
PRECISIONS = (None, "transformer-engine", "transformer-engine-float16", "16-true", "16-mixed", "bf16-true",
              "bf16-mixed", "32-true", "64-true", 64, 32, 16, "64", "32", "16", "bf16")  # fmt: skip
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")
STRATEGIES = (
    "auto", "ddp", "ddp_spawn", "ddp_fork", "ddp_notebook", "ddp_find_unused_parameters_false",
    "ddp_find_unused_parameters_true", "ddp_spawn_find_unused_parameters_false", "ddp_spawn_find_unused_parameters_true",
    "ddp_fork_find_unused_parameters_false", "ddp_fork_find_unused_parameters_true",
    "ddp_notebook_find_unused_parameters_false", "ddp_notebook_find_unused_parameters_true", "deepspeed",
    "deepspeed_stage_1", "deepspeed_stage_2", "deepspeed_stage_2_offload", "deepspeed_stage_3",
    "deepspeed_stage_3_offload", "deepspeed_stage_3_offload_nvme", "fsdp", "fsdp_cpu_offload", "single_device",
    "single_xla", "xla_debug", "xla", "single_tpu",
)  # fmt: skip
# The owners' own constants (kept equal by tests/test_settings.py; importing them here would
# import torch: arches.core's package imports the model).
ATTENTION_BACKENDS = ("auto", "sdpa", "flex")  # arches.core.config.ATTENTION_BACKENDS
SOURCES = ("classics", "hf", "local")  # arches.data.cache.SOURCES
DIRECTIONS = ("minimize", "maximize")  # arches.tune.space.DIRECTIONS
PRUNERS = ("median", "none")  # arches.tune.space.PRUNERS
METRICS = ("val_loss",)  # arches.tune.space.METRICS
PAIR_KINDS = ("swap", "lexical", "morph", "halves")  # harness.tasks.pairs.KINDS (the model side imports no harness)
AUTO_SWITCH = ("auto", True, False)

ROOT = {
    "seed": _count(0, "0"),
    "quick": Flag(),
    "tuned": Items(Text("gpt-lr"), must="a study name or a non-empty list of them", example="gpt-lr",
                   single=True, nullable=True),
}
TRAIN = {
    "max_tokens": _count(1, "1000000"),
    "micro_batch_size": _count(1, "16"),
    "grad_accum": _count(1, "1"),
    "lr": _real("1e-3", above_minimum=True),
    "weight_decay": _real("0.1"),
    "betas": Items(_real("0.9", **FRACTION), must="two numbers in [0, 1)", example="[0.9,0.95]", count=2),
    "eps": _real("1e-8", above_minimum=True),
    "warmup_fraction": _real("0.05", **FRACTION),
    "min_lr_ratio": _real("0.1", maximum=1),
    "grad_clip": _real("1.0", nullable=True),
    "val_interval": _count(1, "100"),
    "val_windows": _count(1, "64", nullable=True),
    "log_interval": _count(1, "10"),
    "checkpoint_interval": _count(1, "100"),
    "keep_checkpoints": _count(1, "2"),
    "attention_backend": Choice(ATTENTION_BACKENDS, example="auto"),
    "loss_chunk_size": _count(1, "4096", nullable=True, also=("auto",)),
    "activation_checkpointing": Flag(example="false"),
    "fused_adamw": Choice(AUTO_SWITCH, example="auto"),
    "tf32": Flag(),
    "progress": Choice(PROGRESS_MODES, example="lines"),
    "progress_interval_s": _real("30"),
}
TRAINER = {
    "name": Text("default"),
    "accelerator": Choice(ACCELERATORS, example="auto"),
    "devices": Devices(),
    "num_nodes": _count(1, "1"),
    "strategy": Choice(STRATEGIES, example="ddp", what="auto or a Lightning strategy (ddp, fsdp, deepspeed, ...)"),
    "precision": Choice(PRECISIONS, example="bf16-mixed"),
    "max_steps": _count(1, "200", nullable=True),
    "compile": Choice(AUTO_SWITCH, example="auto"),
    "deterministic": Flag(example="false"),
}
DATA_COMMON = {
    "source": Choice(SOURCES, example="classics"),
    "vocab_size": _count(1, "8192", nullable=True),  # at least MIN_VOCAB_SIZE when a tokenizer is trained
    "seq_len": _count(1, "256"),
    "tokenizer_path": Text("tokenizer.json", nullable=True),
    "val_fraction": _real("0.05", **FRACTION),
    "test_fraction": _real("0.05", **FRACTION),
    "num_workers": _count(0, "0"),
    # streaming preparation (arches.data.stream): bounded memory, shards, processes
    "stream": Flag(example="false"),
    "num_proc": _count(1, "2"),
    "shard_bytes": _count(1, "67108864"),
    "tokenizer_sample_bytes": _count(1, "100000000"),
}
DATA_BY_SOURCE = {
    "classics": {},
    "local": {
        "paths": Items(Text("notes.txt"), must="a file or folder, or a non-empty list of them",
                       example="[notes.txt,corpus/]", single=True),
        "text_field": Text("text"),
    },
    "hf": {
        "name": Text("roneneldan/TinyStories", nullable=True),
        "config_name": Text("default", nullable=True),
        "split": Text("train"),
        "revision": Text("main", nullable=True),
        "text_field": Text("text"),
        "streaming": Flag(example="false"),
        "max_documents": _count(1, "20000", nullable=True),
    },
}
EVAL = {
    "name": Text("default"),
    "tasks": Items(Text("corpus_cloze"), must="a task name or a non-empty list of them",
                   example="[corpus_cloze,corpus_next]", single=True),
    "num_fewshot": Items(_count(0, "0"), must="a non-empty list of integers >= 0", example="[0,5]", single=True),
    "limit": _count(1, "100", nullable=True, also=("auto",)),
    "cpu_limit": _count(1, "100"),
    "batch_size": _count(1, "16", also=("auto",)),
    "device": Text("cuda:0", pattern=r"auto|cpu|mps|cuda(:\d+)?", what="auto, cpu, cuda, cuda:<index> or mps"),
    "seed": _count(0, "1234"),
    "bootstrap_iters": _count(0, "1000"),
    "alternative_formats": Flag(),  # 0-shot multiple choice again in the other format (harness/eval/alternatives.py)
    "generations": _count(0, "3"),  # held-out prompts continued greedily after the scores (harness/eval/generations.py)
    "corpus": {
        "max_examples": _count(1, "500"),
        "fewshot_pool": _count(0, "100"),
        "pair_kinds": Items(Choice(PAIR_KINDS, example="swap"), example="[swap,lexical]",
                            must=f"a non-empty list of pair kinds ({', '.join(PAIR_KINDS)})"),
        "max_pairs": _count(1, "500"),
    },
    "bigbench": {
        "tasks": Items(Text("hyperbaton"), must="a non-empty list of BIG-bench task names", example="[hyperbaton]"),
        "max_examples": _count(1, "500", nullable=True),
        "fewshot_pool": _count(0, "50"),
        "seed": _count(0, "1234"),
    },
}
TUNE = {
    "name": Text("lr_wd"),
    "space": Items(Entry(), must="a list of parameters ({name, distribution, low, high} or {name, distribution: "
                   "categorical, choices})", example="[{name:train.lr,distribution:log,low:1e-4,high:1e-2}]",
                   min_items=0),  # fmt: skip
    "n_trials": _count(1, "20"),
    "study": Text("gpt-lr", nullable=True, pattern=r"[A-Za-z0-9._-]+", what="a name of letters, digits, '.', '_' and '-'"),
    "storage": Text("sqlite:///tune.db", nullable=True),
    "metric": Choice(METRICS, example="val_loss", what="val_loss (the final validation loss; to rank by a task score, "
                     "tune on val_loss and compare with `arches compare tuned=<study>`)"),
    "direction": Choice(DIRECTIONS, example="minimize"),
    "seed": _count(0, "0"),
    "best": Flag(example="false"),
    "keep_non_embedding_params": Flag(example="false"),
    "pruner": {"name": Choice(PRUNERS, example="median"), "n_startup_trials": _count(0, "5"),
               "n_warmup_steps": _count(0, "0")},  # fmt: skip
    "heartbeat_interval": _count(1, "30", nullable=True),
    "grace_period": _count(1, "120", nullable=True),
    "max_retry": _count(0, "3", nullable=True),
}
COMPARE = {"rerun_mismatched": Flag(example="false"),
           "rungs": Items(Text("base"), must="a list of the ladder's size names", example="[base]", nullable=True)}
OVERRIDES = Items(Text("arch=gpt"), must="a list of overrides", example="[arch=gpt]", min_items=0)
EXPERIMENT = {
    "name": Text("families"),
    "seeds": Items(_count(0, "0"), must="a non-empty list of integers >= 0", example="[0,1,2]"),
    "variants": Mapping(OVERRIDES, must="variant names, each with its list of overrides", example="{gpt:[arch=gpt]}"),
    "common": OVERRIDES,
    # a scaling ladder (harness.ladder): the cross-key rules (one budget rule, known sizes) are checked there
    "ladder": {
        "sizes": Items(Text("ladder_xs"), must="a non-empty list of size names",
                       example="[ladder_xs,ladder_s,ladder_m]"),  # fmt: skip
        "tokens_per_param": _real("20", above_minimum=True, nullable=True),
        "tokens": Items(_count(1, "200000"), must="a list of token budgets >= 1, one per size",
                        example="[100000,200000,400000]", nullable=True),  # fmt: skip
    },
}
DATA_ANY = {**DATA_COMMON, **{key: rule for table in DATA_BY_SOURCE.values() for key, rule in table.items()}}
SECTIONS = {"train": TRAIN, "trainer": TRAINER, "data": DATA_ANY, "eval": EVAL, "tune": TUNE, "compare": COMPARE,
            "experiment": EXPERIMENT}  # fmt: skip


# ---------------------------------------------------------------- checking


def _plain(cfg: Any, key: str, default: Any = None) -> Any:
    """The resolved value at `key` as plain Python (a bad interpolation is one line too)."""
    try:
        value = OmegaConf.select(cfg, key, default=default) if key else cfg
        if isinstance(value, (DictConfig, ListConfig)):
            return OmegaConf.to_container(value, resolve=True)
        return value
    except OmegaConfBaseException as error:
        raise UserError(f"{key}: {first_line(error)}; fix the value or the ${{...}} it refers to") from None


def _unknown_setting(key: str, prefix: str, table: dict) -> UserError:
    return unknown("setting", key, [f"{prefix}.{name}" for name in table])


def check_table(prefix: str, values: Any, table: dict) -> None:
    """Every key of a section (`values`, plain Python) against its table; nested tables are sub-sections."""
    if values is None:
        return
    if not isinstance(values, dict):
        first = next(iter(table))
        raise UserError(f"{prefix}={values!r} must be a section of settings, e.g. {prefix}.{first}=...")
    for name, value in values.items():
        key = f"{prefix}.{name}"
        rule = table.get(name)
        if rule is None:
            raise _unknown_setting(key, prefix, table)
        if isinstance(rule, dict):
            check_table(key, value, rule)
        else:
            rule.check(key, value)


def check_data_section(data: Any, prefix: str = "data") -> None:
    """The data section (plain or a DictConfig): its source's keys, then the rules across keys."""
    data = _plain(data, "") if isinstance(data, DictConfig) else data
    if not isinstance(data, dict):
        raise UserError(f"{prefix}={data!r} must be a section of settings; choose one with data=classics, data=local or data=hf")
    source = data.get("source", "classics")
    DATA_COMMON["source"].check(f"{prefix}.source", source)
    own = {**DATA_COMMON, **DATA_BY_SOURCE[source]}
    for name in data:
        owner = next((s for s, table in DATA_BY_SOURCE.items() if name in table and name not in own), None)
        if owner is not None:
            raise UserError(
                f"{prefix}.{name} is a setting of data.source={owner}, not of data.source={source}; "
                f"choose data={owner}, or drop {prefix}.{name}"
            )
    if data.get("tokenizer_path") is None:  # a tokenizer is trained: its vocabulary holds every special token
        from arches.data.tokenizer import MIN_VOCAB_SIZE  # the tokenizers library: no torch

        vocab = Number(integer=True, minimum=MIN_VOCAB_SIZE, example="8192", note=" (the special tokens plus 256 bytes)")
        vocab.check(f"{prefix}.vocab_size", data.get("vocab_size", 8192))
    check_table(prefix, data, own)
    val, test = data.get("val_fraction", 0.05), data.get("test_fraction", 0.05)
    if val + test >= 1:
        raise UserError(f"{prefix}.val_fraction={val} and {prefix}.test_fraction={test} must each be in [0, 1) and sum below 1")
    if data.get("tokenizer_path") is not None:
        _existing(f"{prefix}.tokenizer_path", str(data["tokenizer_path"]))
    if source == "local":
        paths = data.get("paths")
        if not paths:
            raise UserError("data=local needs files: set data.paths, e.g. data.paths=[notes.txt,corpus/]")
        for path in [paths] if isinstance(paths, str) else paths:
            _existing(f"{prefix}.paths", str(path))
    if source == "hf" and not data.get("name"):
        raise UserError("data=hf needs a dataset: set data.name, e.g. data.name=roneneldan/TinyStories")


def _existing(key: str, given: str) -> None:
    path = Path(given).expanduser()
    if not (path if path.is_absolute() else Path.cwd() / path).exists():
        raise UserError(f"{key}: {given} does not exist (relative paths resolve against {Path.cwd()}); fix the path")


def _check_keys(cfg: DictConfig, table: dict, keys: tuple[str, ...]) -> None:
    missing = object()
    for key in keys:
        value = _plain(cfg, key, default=missing)
        if value is not missing:
            table[key].check(key, value)


def check_settings(cfg: DictConfig, sections: tuple[str, ...]) -> None:
    """Refuse the first bad value or unknown key of these sections, in one line."""
    for section in sections:
        if section == "data":
            if cfg.get("data") is not None:
                check_data_section(_plain(cfg, "data"))
            continue
        check_table(section, _plain(cfg, section), SECTIONS[section])


def check_train_settings(cfg: DictConfig) -> None:
    """`seed`, the `train`, `trainer` and `logger` sections (arches.train calls this first)."""
    _check_keys(cfg, ROOT, ("seed",))
    check_settings(cfg, ("train", "trainer"))
    check_logger_settings(cfg)  # the logger group, and the packages its trackers need


def check_data_settings(cfg: DictConfig) -> None:
    """The `data` section, with the rules of its source."""
    check_settings(cfg, ("data",))


def check_eval_settings(cfg: DictConfig) -> None:
    """The `eval` section (eval.corpus.*, eval.bigbench.* included)."""
    check_settings(cfg, ("eval",))


def check_tune_settings(cfg: DictConfig) -> None:
    """Everything a study's trials train with (seed, train, trainer, data) and the `tune` section."""
    check_train_settings(cfg)
    check_settings(cfg, ("data", "tune"))


def check_compare_settings(cfg: DictConfig) -> None:
    """`quick`, `tuned`, the `compare` and `experiment` sections and the suite (`eval`)."""
    _check_keys(cfg, ROOT, ("quick", "tuned"))
    check_settings(cfg, ("compare", "experiment", "eval"))


def rule_for(key: str) -> Any:
    """The kind of one setting, by its full key (`quick`, `compare.rerun_mismatched`)."""
    if key in ROOT:
        return ROOT[key]
    rule: Any = SECTIONS
    for part in key.split("."):
        rule = rule[part]
    return rule


def unknown_override(key: str) -> UserError | None:
    """Hydra's `Could not override 'eval.limt'` as the table's line with the closest valid
    name (None for a key outside these sections)."""
    parts = key.split(".")
    table: Any = SECTIONS.get(parts[0])
    for part in parts[1:-1]:
        table = table.get(part) if isinstance(table, dict) else None
    if not isinstance(table, dict) or len(parts) < 2:
        return None
    return _unknown_setting(key, ".".join(parts[:-1]), table)

