"""`arches` subcommands: parse and dispatch, nothing else.

Every subcommand takes Hydra overrides (`key=value`); errors from the harness
arrive as `ArchesError` and are printed as one line with the exit code of
their kind (2 for user mistakes, 1 for runtime failures). `ARCHES_DEBUG=1` or
`HYDRA_FULL_ERROR=1` shows the traceback instead.
"""

from __future__ import annotations

import os
import sys

USAGE = """usage: arches <command> [hydra overrides]

commands:
  data prepare [overrides]     build or reuse the cached corpus, tokenizer and token arrays
  data bigbench [overrides]    fetch BIG-bench and convert its tasks to local lm-eval tasks
  list [overrides]             every preset with its family, knobs, parameters and FLOPs/token
  train [-m] [overrides]       train one architecture (a Hydra app: -m runs a grid)
  eval run=<folder> [...]      score a run folder with lm-eval
  lm-eval <lm-eval args>       lm-eval's own CLI with the `arches` model registered
  compare [experiment=<name>]  train, evaluate and report a whole comparison
  report <results folder>      rebuild the report from recorded run folders
"""


def _debug() -> bool:
    return bool(os.environ.get("ARCHES_DEBUG")) or bool(os.environ.get("HYDRA_FULL_ERROR"))


def _dispatch(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "data":
        sub = rest[0] if rest else ""
        if sub == "prepare":
            from arches.data import prepare_command

            prepare_command(rest[1:])
            return 0
        if sub == "bigbench":
            from harness.bigbench import bigbench_command

            bigbench_command(rest[1:])
            return 0
        from arches.errors import unknown

        raise unknown("data command", sub, ["prepare", "bigbench"])
    if command == "list":
        from arches.registry import list_command

        list_command(rest)
        return 0
    if command == "train":
        from arches.train import train_command

        train_command(rest)
        return 0
    if command == "eval":
        from harness.evaluate import eval_command

        eval_command(rest)
        return 0
    if command == "lm-eval":
        from harness.lm import lm_eval_command

        return lm_eval_command(rest)
    if command == "compare":
        from harness.compare import compare_command

        compare_command(rest)
        return 0
    if command == "report":
        from harness.report import report_command

        report_command(rest)
        return 0
    from arches.errors import unknown

    raise unknown("command", command, ["data", "list", "train", "eval", "lm-eval", "compare", "report"])


def main(argv: list[str] | None = None) -> None:
    from arches.errors import ArchesError

    argv = sys.argv[1:] if argv is None else argv
    try:
        code = _dispatch(argv)
    except ArchesError as error:
        if _debug():
            raise
        print(f"arches: error: {error}", file=sys.stderr)
        code = error.exit_code
    except KeyboardInterrupt:
        print("arches: interrupted", file=sys.stderr)
        code = 130
    sys.exit(code)


if __name__ == "__main__":
    main()
