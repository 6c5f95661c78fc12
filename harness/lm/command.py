"""`arches lm-eval ...`: lm-eval's own command line, with the `arches` model registered
and the bundled corpus tasks made findable.

The corpus tasks (corpus_ppl, corpus_cloze, corpus_next) and the minimal pairs
(corpus_pairs, pairs_<kind>) are built from a run's own held-out documents, so lm-eval
alone cannot know where their data lies. When the command scores an arches run
(`--model arches --model_args run=<folder>`) on one of them, this builds (or reuses) the
run's task data exactly as `arches eval` does, passes its folder through the variable
the task loader reads, and adds the bundled tasks' folder to `--include_path` if it is
missing; every other argument reaches lm-eval's parser unchanged. (lm-eval's own
corpus_pairs lists all four kinds: a kind without pairs is an error here, where
`arches eval` runs the group without it.)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

CORPUS_TAG = "arches_corpus"


def _values(argv: list[str], flag: str) -> list[str]:
    """The values of `flag` (`--flag value` or `--flag=value`), in order."""
    found = []
    for index, arg in enumerate(argv):
        if arg == flag and index + 1 < len(argv):
            found.append(argv[index + 1])
        elif arg.startswith(f"{flag}="):
            found.append(arg.split("=", 1)[1])
    return found


def _model_run(argv: list[str]) -> str | None:
    """The run folder of `--model arches --model_args run=<folder>,...`, else None."""
    if _values(argv, "--model") != ["arches"]:
        return None
    for model_args in _values(argv, "--model_args"):
        for pair in model_args.split(","):
            key, _, value = pair.partition("=")
            if key.strip() == "run" and value.strip():
                return value.strip()
    return None


def _task_names(argv: list[str]) -> set[str]:
    return {name.strip() for tasks in _values(argv, "--tasks") for name in tasks.split(",")}


def _wants_corpus_tasks(argv: list[str]) -> bool:
    from harness.eval.tasks import BUNDLED_TASKS

    return bool(_task_names(argv) & {*BUNDLED_TASKS, CORPUS_TAG})


def corpus_task_arguments(argv: list[str]) -> list[str]:
    """argv with what lm-eval needs to find the corpus tasks of the run it scores; sets the
    task loader's data variable. Unchanged when the command needs neither."""
    from harness.tasks.build import TASKS_DIR
    from harness.tasks.loader import ENV_VAR, METADATA_KEY

    run = _model_run(argv)
    if run is None or not _wants_corpus_tasks(argv):
        return argv
    if not _values(argv, "--include_path"):
        argv = [*argv, "--include_path", str(TASKS_DIR)]
    from harness.eval.pairs import PAIR_TASKS
    from harness.eval.tasks import CORPUS_TASKS
    from harness.tasks.loader import PAIRS_ENV_VAR, PAIRS_METADATA_KEY

    metadata = " ".join(_values(argv, "--metadata"))
    corpus = bool(_task_names(argv) & {*CORPUS_TASKS, CORPUS_TAG}) and not (os.environ.get(ENV_VAR) or METADATA_KEY in metadata)
    pairs = bool(_task_names(argv) & set(PAIR_TASKS)) and not (os.environ.get(PAIRS_ENV_VAR) or PAIRS_METADATA_KEY in metadata)
    if not corpus and not pairs:
        return argv  # the caller named the data folders itself
    from arches.config import compose
    from harness.eval.settings import _corpus_config, _run_folder, eval_settings
    from harness.tasks.build import TaskDataSpec, task_data_for_config
    from harness.tasks.pairs import pair_spec, pairs_data_for_config

    cfg = compose([f"run={run}"])
    _, run_cfg = _run_folder(cfg)
    settings = eval_settings(cfg)  # the default suite's corpus settings, as `arches eval` uses
    if corpus:
        spec = TaskDataSpec(settings["max_examples"], settings["fewshot_pool"], settings["seed"])
        folder = task_data_for_config(_corpus_config(run_cfg, cfg), spec)
        os.environ[ENV_VAR] = str(folder)
        print(f"arches: corpus tasks of {Path(run).name} from {folder}", file=sys.stderr)
    if pairs:
        folder = pairs_data_for_config(_corpus_config(run_cfg, cfg), pair_spec(cfg.eval))
        os.environ[PAIRS_ENV_VAR] = str(folder)
        print(f"arches: minimal pairs of {Path(run).name} from {folder}", file=sys.stderr)
    return argv


def lm_eval_command(argv: list[str]) -> int:
    """lm-eval's CLI (`harness.lm.model` registers `arches` on import); returns its exit code."""
    from lm_eval.__main__ import cli_evaluate

    import harness.lm.model  # noqa: F401  (registers the arches model)

    if not any(arg in ("-h", "--help") for arg in argv):
        argv = corpus_task_arguments(argv)
    saved = sys.argv
    sys.argv = ["lm-eval", *argv]
    try:
        cli_evaluate()
    except SystemExit as exit_:
        if exit_.code is None or isinstance(exit_.code, int):
            return int(exit_.code or 0)
        print(exit_.code, file=sys.stderr)
        return 1
    finally:
        sys.argv = saved
    return 0
