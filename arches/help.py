"""What each `arches` command says about itself: `--help` and `--cfg`.

`arches <command> --help` prints the command's purpose, its main keys with their
defaults and a few examples. The defaults are read from the composed Hydra config each
time, never written here, so the help cannot go stale; a test checks that every key
named here exists in the config. `arches <command> --cfg job` prints the composed
config as YAML and runs nothing, as a Hydra app's `--cfg` does (the commands compose
with Hydra's compose API, so Hydra's own flag never reaches them).
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field

from omegaconf import DictConfig, OmegaConf

from arches.config import compose, config_groups, expand_grid, group_choices, split_multirun
from arches.errors import UserError
from arches.listing import GROUPS, value_text

HELP_FLAGS = ("-h", "--help")
CFG_FLAGS = ("--cfg", "-c")
CFG_MODES = ("job", "hydra", "all")
KEY_WIDTH = 34  # the key=value column; a longer one puts its text on the next line
WIDTH = 96  # the purpose paragraph's lines
CFG_OPTION = ("--cfg job|hydra|all [--resolve]", "print the composed config as YAML and run nothing")


@dataclass(frozen=True)
class CommandHelp:
    usage: str
    purpose: str
    keys: tuple[tuple[str, str], ...] = ()  # (config key or group, what it sets)
    options: tuple[tuple[str, str], ...] = ()  # flags and arguments that are no config key
    examples: tuple[str, ...] = ()
    compose: tuple[str, ...] = ()  # overrides the defaults are read under (what the command composes)
    # key -> what the command line must give ("" for a group: one of its choices)
    required: dict[str, str] = field(default_factory=dict)


COMMANDS: dict[str, CommandHelp] = {
    "data": CommandHelp(
        usage="arches data prepare|bigbench [key=value ...]",
        purpose="Prepare what training and evaluation read, once (cached under cache_dir).",
        options=(("prepare", "build or reuse the corpus, tokenizer and token arrays"),
                 ("bigbench", "fetch BIG-bench once and convert its tasks to local lm-eval tasks")),
        examples=("arches data prepare", "arches data bigbench", "arches data prepare --help"),
    ),
    "data prepare": CommandHelp(
        usage="arches data prepare [key=value ...]",
        purpose="Build or reuse the cached corpus, tokenizer and token arrays, and print their statistics "
                "(a second call with the same data settings is a cache hit).",
        keys=(("data", "the corpus source (sweeps/data/)"), ("data.vocab_size", "the BPE tokenizer's vocabulary"),
              ("data.seq_len", "tokens per training window"),
              ("data.tokenizer_path", "an existing tokenizer.json instead of training one"),
              ("data.val_fraction", "held-out documents for validation"),
              ("data.test_fraction", "held-out documents for the test split (the corpus tasks)"),
              ("cache_dir", "where the cache lives ($ARCHES_CACHE_DIR)")),
        options=(CFG_OPTION,),
        examples=("arches data prepare", "arches data prepare data=local data.paths=[notes.txt,corpus/]",
                  "arches data prepare data=hf data.name=roneneldan/TinyStories data.max_documents=20000"),
    ),
    "data bigbench": CommandHelp(
        usage="arches data bigbench [key=value ...]",
        purpose="Fetch BIG-bench from PyPI once and convert its English multiple-choice tasks to local "
                "lm-eval tasks (the default suite's optional tasks).",
        keys=(("eval.bigbench.tasks", "the tasks converted"),
              ("eval.bigbench.max_examples", "scored examples per task (null: all)"),
              ("eval.bigbench.fewshot_pool", "few-shot examples per task, never scored"),
              ("cache_dir", "where the converted tasks live")),
        options=(CFG_OPTION,),
        examples=("arches data bigbench", "arches data bigbench eval.bigbench.tasks=[hyperbaton,winowhy]"),
    ),
    "list": CommandHelp(
        usage=f"arches list [{'|'.join(GROUPS)}] [key=value ...]",
        purpose="One config group as a table, each entry with a one-line description: presets (the default: "
                "family, objective, knobs, parameters and FLOPs/token per size), experiments and their variants, "
                "eval suites with their tasks and shots, tune search spaces with their parameters, sizes with "
                "their shapes. A pipe or a file gets every name and column whole.",
        keys=(("data.vocab_size", "the vocabulary the parameter counts assume"),
              ("data.seq_len", "the window FLOPs/token is counted at")),
        examples=("arches list", "arches list experiments", "arches list sizes > sizes.txt"),
    ),
    "train": CommandHelp(
        usage="arches train [-m] [key=value ...]",
        purpose="Train one architecture on the corpus into a run folder (results_dir/run_name; the last line "
                "printed is its path). A Hydra app: -m runs a grid, one run per combination of comma lists.",
        keys=(("arch", "the preset (sweeps/arch/)"), ("size", "the model size (sweeps/size/)"),
              ("data", "the corpus (sweeps/data/)"), ("trainer", "the Lightning trainer and strategy (sweeps/trainer/)"),
              ("seed", "weights, data order and objective noise"),
              ("train.max_tokens", "the token budget: window tokens over all ranks"),
              ("train.lr", "peak learning rate (AdamW, warmup then cosine)"),
              ("train.micro_batch_size", "windows per device per step"), ("train.grad_accum", "micro-batches per step"),
              ("trainer.max_steps", "optimizer steps; when set, wins over train.max_tokens"),
              ("results_dir", "where run folders go"), ("run_name", "the run folder's name (null: derived from the config)"),
              ("resume", "auto: continue an interrupted run of the same config; never: start over")),
        options=(("-m, --multirun", "a grid: arch=gpt,bert size=debug,tiny"), CFG_OPTION),
        examples=("arches train arch=bloom size=tiny trainer.max_steps=200",
                  "arches train arch=gpt train.max_tokens=2000000 train.lr=6e-4",
                  "arches train -m arch=gpt,bert,t5,glm size=debug", "arches train arch=llama --cfg job"),
    ),
    "tune": CommandHelp(
        usage="arches tune [-m] tune=<space> [key=value ...]",
        purpose="An Optuna study over `arches train`: each trial trains a run with sampled settings. Resumable: a "
                "rerun runs only the missing trials; workers sharing tune.storage share the study.",
        keys=(("tune", "the search space (sweeps/tune/)"), ("arch", "the preset tuned"), ("size", "its size"),
              ("tune.n_trials", "finished trials wanted in the study"),
              ("tune.study", "the study's name (null: from preset, size, data, space and budget)"),
              ("tune.storage", "an SQLAlchemy URL (null: SQLite under results_dir/tune/)"),
              ("tune.metric", "what each trial minimizes or maximizes"), ("tune.direction", "minimize or maximize"),
              ("tune.best", "true: run nothing; print the best trial and write <study>.best.yaml"),
              ("tune.pruner.name", "median or none"), ("train.max_tokens", "each trial's token budget")),
        options=(("-m, --multirun", "one study per combination of comma lists, in turn"), CFG_OPTION),
        examples=("arches tune arch=gpt size=tiny tune=lr_wd tune.n_trials=20",
                  "arches tune arch=gpt size=tiny tune=lr_wd tune.best=true", "arches tune -m arch=gpt,bert tune=lr_wd"),
        compose=("tune=default",), required={"tune": ""},
    ),
    "eval": CommandHelp(
        usage="arches eval run=<run folder> [key=value ...]",
        purpose="Score a run folder with lm-eval and print one table; the scores are written into the run folder. "
                "The model is rebuilt from the run's own checkpoint and config, never from this command line.",
        keys=(("run", "the run folder to score"), ("eval", "the suite (sweeps/eval/)"),
              ("eval.tasks", "lm-eval task names; a trailing ? makes a task optional"),
              ("eval.num_fewshot", "shot counts, each scored separately"),
              ("eval.limit", "examples per task: a number, null (all) or auto (all on a GPU, eval.cpu_limit on a CPU)"),
              ("eval.batch_size", "requests per forward pass, or auto"), ("eval.device", "auto, cpu or cuda"),
              ("eval.alternative_formats", "true: the 0-shot multiple choice again in the family's other format "
                                           "(the report's ranking robustness)"),
              ("eval.generations", "held-out prompts continued greedily (the report's Samples); 0: none")),
        options=(CFG_OPTION,),
        examples=("arches eval run=results/<run>", "arches eval run=results/<run> eval=quick",
                  "arches eval run=results/<run> eval.tasks=[corpus_cloze,hyperbaton] eval.num_fewshot=[0,5]"),
        required={"run": "<run folder>"},
    ),
    # lm-eval: its own parser answers `arches lm-eval --help` (arches.cli passes it through)
    "compare": CommandHelp(
        usage="arches compare [experiment=<name>] [key=value ...]",
        purpose="Train every variant x seed of an experiment, evaluate each at every shot count of its suite, and "
                "write the report (results_dir/<experiment>/report.md). Work already done is skipped.",
        keys=(("experiment", "what is compared (sweeps/experiment/; arches list experiments)"),
              ("quick", "true: a smoke check at the debug size, in results_dir/<experiment>-quick/"),
              ("compare.rerun_mismatched", "true: move a run trained under another config aside and train it again"),
              ("tuned", "a study (or [a,b]) whose best trial each variant of its preset uses"),
              ("results_dir", "where the experiment's folder goes"),
              ("train.max_tokens", "each run's token budget (the experiment's own)"), ("eval", "the suite")),
        options=(CFG_OPTION,),
        examples=("arches compare", "arches compare experiment=wang2022 quick=true",
                  "arches compare experiment=families tuned=<study>", "arches compare experiment=knobs --cfg job"),
        compose=("experiment=families",),  # harness.compare's default (a test keeps the two equal)
    ),
    "report": CommandHelp(
        usage="arches report <results folder> [report.allow_mismatch=true] [report.test=<test>]",
        purpose="Rebuild report.md, report.html, scores.csv and runs.csv from the run folders recorded in a "
                "results folder (no training, no evaluation); prints the report's path.",
        options=(("report.allow_mismatch=true", "show rows scored under different settings, with a warning"),
                 ("report.test=<test>", "auto, crossed, multi_bootstrap (20+ seeds), sign_flip (6+), examples")),
        examples=("arches report results/families", "arches report results/families-quick",
                  "arches report results/families report.test=crossed"),
    ),
    "import-hf": CommandHelp(
        usage="arches import-hf <model folder or hub name> [--preset P] [key=value ...]",
        purpose="A transformers checkpoint (GPT-2, OPT, GPT-NeoX, BLOOM, LLaMA, BERT, T5, ...) as an arches run "
                "folder, which arches eval and arches compare read like a trained one.",
        keys=(("results_dir", "where the run folder goes"), ("run_name", "its name (null: hf-<model name>)")),
        options=(("--preset P", "the preset recorded (default: the one of its transformers class)"),),
        examples=("arches import-hf gpt2 --preset gpt", "arches import-hf path/to/checkpoint run_name=mine"),
    ),
    "export-hf": CommandHelp(
        usage="arches export-hf <run folder> <out folder>",
        purpose="A run as a transformers checkpoint folder (from_pretrained loads it) where transformers has "
                "the architecture.",
        examples=("arches export-hf results/<run> exported/<run>",),
    ),
    "bench": CommandHelp(
        usage="arches bench [--quick] [arch=a,b] [size=<size>] [bench.<key>=<value> ...]",
        purpose="Training tokens/s, MFU and memory of each preset against its transformers twin, and scoring "
                "requests/s through lm-eval; one JSON file of results.",
        keys=(("bench.presets", "the presets measured when arch= names none"),
              ("bench.reference", "what a preset without a transformers twin is compared with"),
              ("bench.device", "auto, cpu or cuda"), ("bench.precision", "auto, bf16 or fp32"),
              ("bench.steps", "timed steps"), ("bench.vocab_size", "every benchmarked model's vocabulary"),
              ("bench.hf", "measure the transformers twin too"), ("bench.output", "the JSON written")),
        options=(("--quick", "the whole code path on a CPU in seconds (+bench=quick, size=debug)"),
                 ("size=<size>", "the size measured: small unless --quick (then debug)")),
        examples=("arches bench --quick", "arches bench arch=gpt,llama size=small"),
        compose=("+bench=default",),
    ),
}  # fmt: skip


def wants_help(argv: list[str]) -> bool:
    return any(arg in HELP_FLAGS for arg in argv)


def key_value(cfg: DictConfig, key: str, required: dict[str, str]) -> str:
    """`key=<its default>`; a group shows the choice composed, a required key what it wants."""
    if key in required:
        # `default` is what a group's choices share (sweeps/tune/default.yaml), no choice of its own
        wanted = required[key] or f"<{'|'.join(c for c in group_choices(key) if c != 'default')}>"
        return f"{key}={wanted}"
    if key in config_groups():
        choice = OmegaConf.select(cfg, f"hydra.runtime.choices.{key}")
        return f"{key}={value_text(choice)}"
    return f"{key}={value_text(OmegaConf.select(cfg, key, throw_on_missing=False))}"


def missing_keys(name: str) -> list[str]:
    """The keys a command's help names that its composed config lacks (for the tests)."""
    entry = COMMANDS[name]
    cfg = compose(list(entry.compose))
    groups = config_groups()
    return [key for key, _ in entry.keys if key not in groups and OmegaConf.select(cfg, key, default="\0") == "\0"]


def key_line(left: str, text: str) -> list[str]:
    """`  key=value   what it sets`; a long key=value (a list of tasks) puts the text below it."""
    if len(left) <= KEY_WIDTH:
        return [f"  {left:<{KEY_WIDTH}} {text}"]
    return [f"  {left}", f"  {'':<{KEY_WIDTH}} {text}"]


def render(name: str) -> str:
    """The help of `arches <name>`; the defaults are read from the config composed now."""
    entry = COMMANDS[name]
    lines = [f"usage: {entry.usage}", "", *textwrap.wrap(entry.purpose, WIDTH)]
    if entry.keys:
        cfg = compose(list(entry.compose), hydra_node=True)
        under = f", under {' '.join(entry.compose)}" if entry.compose else ""
        lines += ["", f"main keys (defaults from the config in sweeps/{under}):"]
        groups = config_groups()
        for key, text in entry.keys:
            choices = f"; one of: {', '.join(group_choices(key))}" if key in groups and key not in entry.required else ""
            lines += key_line(key_value(cfg, key, entry.required), text + choices)
    if entry.options:
        lines += ["", "options:"]
        for flag, text in entry.options:
            lines += key_line(flag, text)
    if entry.examples:
        lines += ["", "examples:"] + [f"  {example}" for example in entry.examples]
    if CFG_OPTION in entry.options:
        lines += ["", f"every key and its value: arches {name} --cfg job; the groups: arches list {'|'.join(GROUPS)}"]
    return "\n".join(lines)


# --------------------------------------------------------------------------- --cfg


def cfg_request(argv: list[str]) -> tuple[str, bool, list[str]] | None:
    """`--cfg job|hydra|all [--resolve]` (or `--cfg=job`, `-c job`) in argv: (mode, resolve,
    the other arguments); None without --cfg."""
    rest, mode, resolve, args = [], None, False, list(argv)
    while args:
        arg = args.pop(0)
        if arg in CFG_FLAGS or arg.startswith("--cfg="):
            mode = arg.split("=", 1)[1] if "=" in arg else (args.pop(0) if args else "")
            if mode not in CFG_MODES:
                raise UserError(
                    f"--cfg takes one of: {', '.join(CFG_MODES)} (got '{mode}'); e.g. arches train arch=gpt --cfg job"
                )
        elif arg == "--resolve":
            resolve = True
        else:
            rest.append(arg)
    if mode is None:
        if resolve:
            raise UserError("--resolve goes with --cfg; e.g. arches train --cfg job --resolve")
        return None
    return mode, resolve, rest


def config_yaml(cfg: DictConfig, mode: str, resolve: bool) -> str:
    """The part of the config `--cfg <mode>` shows; Hydra's section is never resolved (its
    runtime values, such as hydra.job.num, exist only inside a running Hydra app)."""
    parts = []
    if mode in ("job", "all"):
        job = OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"]) if "hydra" in cfg else cfg
        parts.append(OmegaConf.to_yaml(job, resolve=resolve))
    if mode in ("hydra", "all"):
        parts.append(OmegaConf.to_yaml(OmegaConf.create({"hydra": OmegaConf.to_container(cfg.hydra)})))
    return "".join(parts)


def show_config(argv: list[str], overrides_for: Callable[[list[str]], tuple[list[str], list[str]]] | None = None) -> None:
    """`arches <command> ... --cfg <mode>`: the composed config as YAML, one YAML document per
    job of a `-m` grid (each under a comment naming its overrides). `overrides_for` maps the
    command line's overrides to what the command composes, as (its own, the user's)."""
    mode, resolve, rest = cfg_request(argv)  # type: ignore[misc]
    multirun, overrides = split_multirun(rest)
    if multirun:
        jobs = expand_grid(overrides)  # Hydra's basic sweeper's expansion
    else:
        jobs = [overrides]
    documents = []
    for job in jobs:
        own, user = overrides_for(job) if overrides_for is not None else ([], job)
        cfg = compose([*own, *user], hydra_node=mode != "job")
        head = f"# {' '.join(job)}\n" if multirun else ""
        documents.append(head + config_yaml(cfg, mode, resolve))
    print("---\n".join(documents), end="")
