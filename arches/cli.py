"""`arches` subcommands: parse and dispatch, nothing else.

Every subcommand takes Hydra overrides (`key=value`); errors from the harness
arrive as `ArchesError` and are printed as one line with the exit code of
their kind (2 for user mistakes, 1 for runtime failures). `ARCHES_DEBUG=1` or
`HYDRA_FULL_ERROR=1` shows the traceback instead.
"""

from __future__ import annotations

import importlib
import os
import sys

from arches.errors import unknown

USAGE = """usage: arches <command> [hydra overrides]

commands:
  data prepare [overrides]     build or reuse the cached corpus, tokenizer and token arrays
  data bigbench [overrides]    fetch BIG-bench and convert its tasks to local lm-eval tasks
  list [group] [overrides]     a config group, one line each: presets (default: family, knobs,
                               parameters, FLOPs/token), experiments, suites, tune, sizes
  train [-m] [overrides]       train one architecture (a Hydra app: -m runs a grid)
  tune [-m] tune=<space> [...] an Optuna study over train (resumable; -m: one study per preset)
  eval run=<folder> [...]      score a run folder with lm-eval
  lm-eval <lm-eval args>       lm-eval's own CLI with the `arches` model registered
  compare [experiment=<name>]  train, evaluate and report a whole comparison
  report <results folder>      rebuild the report from recorded run folders
  import-hf <model> [--preset P] [tokenizer=<path>] [results_dir=...] [run_name=...]
                               a transformers checkpoint (folder or hub name) as a run folder
  export-hf <run folder> <out> [--as <transformers class>]
                               a run as a transformers checkpoint folder (from_pretrained loads it)
  bench [--quick] [arch=a,b] [size=S] [bench.*]
                               training tokens/s, MFU and memory against transformers; scoring requests/s

arches <command> --help (or arches help <command>): its purpose, main keys with their defaults, examples
arches <command> [overrides] --cfg job: the composed config as YAML, nothing run (train, tune, eval,
                               compare, data prepare, data bigbench; --cfg all adds Hydra's own)
"""


# command -> (module, function), in the order of USAGE
DATA_COMMANDS = {"prepare": ("arches.data.command", "prepare_command"), "bigbench": ("harness.bigbench.command", "bigbench_command")}
COMMANDS = {
    "list": ("arches.listing", "list_command"),
    "train": ("arches.train.command", "train_command"),
    "tune": ("arches.tune.command", "tune_command"),
    "eval": ("harness.eval.command", "eval_command"),
    "lm-eval": ("harness.lm.command", "lm_eval_command"),
    "compare": ("harness.compare", "compare_command"),
    "report": ("harness.report", "report_command"),
    "import-hf": ("arches.interop", "import_command"),
    "export-hf": ("arches.interop", "export_command"),
    "bench": ("harness.bench", "bench_command"),
}
# commands that take `--cfg`: None composes the command line's overrides as they are;
# (module, function) maps them to what the command composes (arches.help.show_config)
CONFIGS = {
    "train": None, "tune": None, "eval": None, "data prepare": None, "data bigbench": None,
    "compare": ("harness.compare", "experiment_overrides"),
}  # fmt: skip


def _debug() -> bool:
    return bool(os.environ.get("ARCHES_DEBUG")) or bool(os.environ.get("HYDRA_FULL_ERROR"))


def _dispatch(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        if argv[1:] and argv[0] == "help":  # `arches help train` is `arches train --help`
            return _dispatch([*argv[1:], "--help"])
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "lm-eval":  # lm-eval's own parser answers its --help
        return _run(COMMANDS[command], rest)
    if command == "data":
        sub = rest[0] if rest else ""
        if sub not in DATA_COMMANDS:
            if sub in ("-h", "--help"):
                return _help("data")
            raise unknown("data command", sub, list(DATA_COMMANDS))
        command, rest = f"data {sub}", rest[1:]
        target = DATA_COMMANDS[sub]
    elif command in COMMANDS:
        target = COMMANDS[command]
    else:
        raise unknown("command", command, ["data", *COMMANDS])
    from arches import help

    if help.wants_help(rest):
        return _help(command)
    if command in CONFIGS and help.cfg_request(rest) is not None:
        mapping = CONFIGS[command]
        help.show_config(rest, getattr(importlib.import_module(mapping[0]), mapping[1]) if mapping else None)
        return 0
    return _run(target, rest)


def _help(command: str) -> int:
    from arches import help

    print(help.render(command))
    return 0


def _run(target: tuple[str, str], argv: list[str]) -> int:
    """Import the command's module only now (`arches list` need not load lm-eval) and run it;
    a command returns None, or its own exit code (lm-eval's CLI)."""
    module, function = target
    code = getattr(importlib.import_module(module), function)(argv)
    return 0 if code is None else code


def _one_line(text: str) -> str:
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    return " ".join(lines) if len(lines) <= 3 else lines[0]


def main(argv: list[str] | None = None) -> None:
    from arches.errors import ArchesError, write_failure

    argv = sys.argv[1:] if argv is None else argv
    try:
        code = _dispatch(argv)
    except ArchesError as error:
        if _debug():
            raise
        print(f"arches: error: {_one_line(str(error))}", file=sys.stderr)
        code = error.exit_code
    except KeyboardInterrupt:
        print("arches: interrupted", file=sys.stderr)
        code = 130
    except BrokenPipeError:  # `arches list | head`: the reader has what it wanted; no error
        # stdout to /dev/null, so the interpreter's last flush does not fail again (Python's
        # signal docs, "Note on SIGPIPE")
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 141  # 128 + SIGPIPE, what a shell reports for a command cut off by its pipe
    except OSError as error:  # a write that failed (disk full, read-only folder) or a bad path
        if _debug():
            raise
        failure = write_failure(error)
        print(f"arches: error: {failure}", file=sys.stderr)
        code = failure.exit_code
    except Exception as error:  # a bug: still one line; the traceback on request
        if _debug():
            raise
        print(
            f"arches: error: internal error {type(error).__name__}: {_one_line(str(error))[:300]}; "
            f"ARCHES_DEBUG=1 shows the traceback",
            file=sys.stderr,
        )
        code = 1
    sys.exit(code)


if __name__ == "__main__":
    main()
