"""`evaluate(cfg)`: lm-eval over a run folder, the scores written into it.

    arches eval run=<run folder> eval.tasks=[corpus_cloze,corpus_next,hyperbaton] eval.num_fewshot=[0,5]

The model is rebuilt from the run's checkpoint by `harness.lm.model.ArchesLM` and the
corpus tasks from the run's own `config.yaml` (never from this command line).
Tasks come from three places, all run by lm-eval's `simple_evaluate`:

- the bundled corpus tasks (`harness/tasks/`: corpus_ppl, corpus_cloze,
  corpus_next), whose data is built once per corpus from its held-out documents
  into `<corpus cache entry>/tasks/<key>/` and handed to their loader through
  lm-eval's task metadata (`arches_task_data`), and the minimal pairs (the group
  corpus_pairs and its pairs_<kind> tasks, harness/eval/pairs.py), likewise;
- BIG-bench tasks converted by `arches data bigbench` into `<cache_dir>/bigbench/tasks/`;
- lm-eval's own tasks by name (hellaswag, piqa, BLiMP's blimp_*, ...), unchanged,
  where the Hugging Face Hub is reachable.

A task name ending in `?` is optional: skipped with a note where unavailable.
Each shot count is one `simple_evaluate` with fixed seeds; its results JSON and
per-task samples (with each example's doc_id and metric values, for a paired
bootstrap later) go to `<run>/eval/`, and the run's record (`run.json`, key
`evals`, "{task}|{shots}", a group's aggregate included) is updated once, only after
every shot count succeeded (harness/eval/records.py). Rolling perplexity, and a task
whose YAML fixes its shot count (BLiMP's and the minimal pairs' `num_fewshot: 0`),
are scored at that count only, never again under another.
The settings and the run folder are read by harness/eval/settings.py, the tasks found and
checked by harness/eval/tasks.py; this module runs them and records the scores.
Bad input (no checkpoint, a tokenizer hash mismatch, an unknown or empty task,
more shots than a task's few-shot split holds) is one line and changes nothing.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
import time
from pathlib import Path

from omegaconf import DictConfig

from arches.errors import UserError
from harness.eval.alternatives import alternatives_record, score_alternatives
from harness.eval.records import EVAL_DIR, record_entries, scored_pass, write_results  # what one simple_evaluate leaves
from harness.eval.settings import _corpus_config, _run_folder, eval_settings
from harness.eval.tasks import check_tasks, load_tasks, resolve_tasks, zero_shot_only


def _quiet_git_hash() -> str | None:
    import subprocess

    try:
        out = subprocess.run(["git", "describe", "--always"], capture_output=True, text=True, check=False)
    except OSError:
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None


@contextlib.contextmanager
def _quiet_lm_eval():
    """lm-eval logs every task's setup at INFO/WARNING; arches shows one line per task instead."""
    if os.environ.get("ARCHES_DEBUG"):
        yield
        return
    loggers = [logging.getLogger(name) for name in ("lm_eval", "lm-eval")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    saved = os.environ.get("DISABLE_MULTIPROC")
    os.environ["DISABLE_MULTIPROC"] = "1"  # lm-eval's bootstrap stderr otherwise forks a pool per metric
    import lm_eval.api.task
    import lm_eval.evaluator

    # lm-eval's bar over building each task's requests has no label: in a log (no terminal)
    # it is carriage-return noise, and arches prints labelled lines for the requests themselves
    saved_tqdm = lm_eval.api.task.tqdm
    if not sys.stderr.isatty():
        lm_eval.api.task.tqdm = functools.partial(saved_tqdm, disable=True)
    # lm-eval records `git describe` of the working directory and lets git print
    # "fatal: not a git repository" outside a checkout; the same call, quiet.
    saved_git_hash = lm_eval.evaluator.get_git_commit_hash
    lm_eval.evaluator.get_git_commit_hash = _quiet_git_hash
    try:
        yield
    finally:
        lm_eval.evaluator.get_git_commit_hash = saved_git_hash
        lm_eval.api.task.tqdm = saved_tqdm
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
        if saved is None:
            os.environ.pop("DISABLE_MULTIPROC", None)
        else:
            os.environ["DISABLE_MULTIPROC"] = saved



def evaluate(cfg: DictConfig) -> dict:
    """Score the run folder `cfg.run` on `cfg.eval.tasks` at each `cfg.eval.num_fewshot`.

    Returns {"run", "evals" (the new record entries), "skipped", "task_data", "pairs_data",
    "limit_note", "notes" (kinds built with fewer pairs than asked)}.
    """
    settings = eval_settings(cfg)
    run_dir, run_cfg = _run_folder(cfg)
    corpus_cfg = _corpus_config(run_cfg, cfg)
    with _quiet_lm_eval():
        resolved = resolve_tasks(settings, cfg, corpus_cfg)
        if not resolved["names"]:
            skipped = "; ".join(f"{n}: {why}" for n, why in resolved["skipped"])
            raise UserError(f"no task to run: every task in eval.tasks was skipped ({skipped})")
        members: dict[str, list[str]] = {}
        tasks = load_tasks(resolved["manager"], resolved["names"], cfg.cache_dir, members)
        check_tasks(tasks, settings["shots"])
        # a name at k > 0 shots only where one of its tasks takes few-shot examples: never scored twice at 0
        takes_shots = {name for name, leaves in members.items() if not all(zero_shot_only(tasks[t]) for t in leaves)}

        from harness.lm.model import ArchesLM

        model = ArchesLM(run=str(run_dir), batch_size=settings["batch_size"], device=settings["device"])
        entries: dict[str, dict] = {}
        for shots in settings["shots"]:
            names = [n for n in resolved["names"] if shots == 0 or n in takes_shots]
            if not names:
                continue
            results, common = scored_pass(model, names, shots, settings, resolved["manager"])
            files = write_results(run_dir, shots, results)
            entries.update(record_entries(results, shots, files, common))
        # the 0-shot multiple-choice tasks again in the family's other format, recorded apart (harness/eval/alternatives.py)
        alternatives, alternative_notes = score_alternatives(cfg, settings, run_dir, model, resolved, tasks, members)
        from harness.eval.generations import write_generations

        write_generations(run_dir, model, corpus_cfg, cfg)  # eval.generations held-out prompts, greedily continued

    from arches.train.record import read_record, update_record

    # only now, after every shot count succeeded: one atomic write, merged with earlier scores
    record = read_record(run_dir).to_dict()
    update_record(run_dir, evals={**(record.get("evals") or {}), **entries},
                  **alternatives_record(record, alternatives))
    return {
        "run": str(run_dir),
        "evals": entries,
        "skipped": resolved["skipped"],
        "task_data": str(resolved["task_data"]) if resolved["task_data"] else None,
        "pairs_data": str(resolved["pairs_data"]) if resolved["pairs_data"] else None,
        "limit_note": settings["limit_note"],
        "notes": [*resolved["notes"], *alternative_notes],
    }


def eval_command(argv: list[str]) -> None:
    """`arches eval run=<run folder> [overrides]`: score the run and print one table."""
    from arches.config import compose

    started = time.perf_counter()
    cfg = compose(argv)
    outcome = evaluate(cfg)
    seconds = time.perf_counter() - started

    from rich.table import Table

    from arches.tables import print_table
    from harness.provenance import n_text

    table = Table(title=f"eval: {outcome['run']}", caption_justify="left")
    for column in ("task", "shots", "metric", "value", "stderr", "n", "chance"):
        table.add_column(column, justify="left" if column in ("task", "metric") else "right", no_wrap=column == "task")
    for entry in outcome["evals"].values():
        metrics = entry["metrics"]
        first = True
        for metric, value in metrics.items():
            if metric.endswith("_stderr"):
                continue
            stderr = metrics.get(f"{metric}_stderr")
            chance = entry["chance"]
            table.add_row(
                entry["task"] if first else "", str(entry["shots"]) if first else "", metric, f"{value:.4g}",
                f"{stderr:.3g}" if stderr is not None else "",
                n_text(entry["n"], entry["n_available"]) if first else "",
                f"{chance:.3f}" if first and chance is not None else "",
            )  # fmt: skip
            first = False
        table.add_section()
    lines = [f"scores in {Path(outcome['run']) / 'run.json'} (evals) and {Path(outcome['run']) / EVAL_DIR}/"]
    if outcome["task_data"]:
        lines.append(f"bundled task data {outcome['task_data']}")
    if outcome.get("pairs_data"):
        lines.append(f"minimal pairs {outcome['pairs_data']}")
    lines += [f"skipped {name}: {why}" for name, why in outcome["skipped"]]
    lines += outcome.get("notes") or []
    if outcome.get("limit_note"):
        lines.append(outcome["limit_note"])
    lines.append(f"{seconds:.1f} s")
    table.caption = "\n".join(lines)
    print_table(table)  # whole in a pipe or a file, folded in a narrow terminal
