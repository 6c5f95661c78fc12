"""`evaluate(cfg)`: lm-eval over a run folder, the scores written into it.

    arches eval run=<run folder> eval.tasks=[corpus_cloze,corpus_next,hyperbaton] eval.num_fewshot=[0,5]

The model is rebuilt from the run's checkpoint by `harness.lm.ArchesLM` and the
corpus tasks from the run's own `config.yaml` (never from this command line).
Tasks come from three places, all run by lm-eval's `simple_evaluate`:

- the bundled corpus tasks (`harness/tasks/`: corpus_ppl, corpus_cloze,
  corpus_next), whose data is built once per corpus from its held-out documents
  into `<corpus cache entry>/tasks/<key>/` and handed to their loader through
  lm-eval's task metadata (`arches_task_data`), and the minimal pairs (the group
  corpus_pairs and its pairs_<kind> tasks, harness/pairs_eval.py), likewise;
- BIG-bench tasks converted by `arches data bigbench` into `<cache_dir>/bigbench/tasks/`;
- lm-eval's own tasks by name (hellaswag, piqa, BLiMP's blimp_*, ...), unchanged,
  where the Hugging Face Hub is reachable.

A task name ending in `?` is optional: skipped with a note where unavailable.
Each shot count is one `simple_evaluate` with fixed seeds; its results JSON and
per-task samples (with each example's doc_id and metric values, for a paired
bootstrap later) go to `<run>/eval/`, and the run's record (`run.json`, key
`evals`, "{task}|{shots}", a group's aggregate included) is updated once, only after
every shot count succeeded (harness/eval_records.py). Rolling perplexity, and a task
whose YAML fixes its shot count (BLiMP's and the minimal pairs' `num_fewshot: 0`),
are scored at that count only, never again under another.
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
from typing import Any

from omegaconf import DictConfig, OmegaConf

from arches import hub
from arches.errors import UserError, closest
from harness.alternatives import alternatives_record, score_alternatives

# the files and record entries one simple_evaluate leaves (record_metrics and write_results importable here too)
from harness.eval_records import EVAL_DIR, record_entries, record_metrics, scored_pass, write_results  # noqa: F401
from harness.pairs_eval import PAIR_TASKS, blimp_offline, prepare_pairs

CORPUS_TASKS = ("corpus_ppl", "corpus_cloze", "corpus_next")  # their data: harness/tasks/build.py
BUNDLED_TASKS = (*CORPUS_TASKS, *PAIR_TASKS)  # and the minimal pairs: harness/pairs_eval.py
OPTIONAL = "?"
def _alternatives(cache_dir: Any) -> str:
    from harness.bigbench import BIGBENCH_TASKS, converted_tasks

    converted = converted_tasks(cache_dir)
    bigbench = ", ".join(converted) if converted else f"{', '.join(BIGBENCH_TASKS)} (after `arches data bigbench`)"
    return f"offline, use the bundled {', '.join(BUNDLED_TASKS)} or BIG-bench {bigbench}"


def _hub_error(name: str, cache_dir: Any) -> UserError:
    blimp = blimp_offline(name)
    if blimp is not None:
        return blimp
    return UserError(
        f"task '{name}' is one of lm-eval's own and loads from the Hugging Face Hub, which cannot be reached here "
        f"(HF_HUB_OFFLINE/HF_DATASETS_OFFLINE set, or no connection); {_alternatives(cache_dir)}"
    )


# ---------------------------------------------------------------- settings


def _on_gpu(device: str) -> bool:
    """Whether ArchesLM will score on a GPU: cuda (or auto) where one is visible; it
    falls back to the CPU when cuda is asked for without one."""
    import torch

    return torch.cuda.is_available() and (device == "auto" or device.startswith("cuda"))


def _limit(ev: DictConfig) -> tuple[int | None, str | None]:
    """eval.limit: examples per task, null for all, or `auto`: all on a GPU and
    `eval.cpu_limit` per task on a CPU, where the encoder's pseudo-log-likelihood
    (one forward per continuation token) would take the full suite past half an hour.
    Whatever is used is recorded with the scores; returns (limit, a note or None)."""
    limit = ev.get("limit")
    if limit == "auto":
        if _on_gpu(str(ev.get("device", "auto"))):
            return None, None
        limit = ev.get("cpu_limit", 100)  # checked by eval_settings, as eval.limit is
        return limit, f"eval.limit=auto: {limit} examples per task on a CPU (eval.limit=null scores every example)"
    return limit, None


def eval_settings(cfg: DictConfig) -> dict:
    """The checked `eval` section: tasks, shots, limit, batch size, device and seeds (a bad value is one line)."""
    from arches.settings import check_eval_settings

    ev = cfg.get("eval")
    if ev is None:
        raise UserError("the config has no `eval` section; add `- eval: default` to sweeps/config.yaml's defaults")
    check_eval_settings(cfg)  # every key's type and range: the one definition of each rule
    tasks = ev.get("tasks")
    tasks = [str(t).strip() for t in ([tasks] if isinstance(tasks, str) else tasks or [])]
    if not tasks:  # no eval.tasks key at all
        raise UserError("eval.tasks is empty; name some tasks, e.g. eval.tasks=[corpus_cloze,corpus_next]")
    shots = ev.get("num_fewshot", [0])
    shots = [int(k) for k in ([shots] if isinstance(shots, int) else shots)]
    limit, limit_note = _limit(ev)
    batch_size = ev.get("batch_size", 16)
    corpus = ev.get("corpus") or {}
    return {
        "tasks": list(dict.fromkeys(tasks)),
        "shots": list(dict.fromkeys(shots)),
        "limit": limit,
        "limit_note": limit_note,
        "batch_size": batch_size,
        "device": str(ev.get("device", "auto")),
        "seed": int(ev.get("seed", 1234)),
        "bootstrap_iters": int(ev.get("bootstrap_iters", 1000)),
        "max_examples": int(corpus.get("max_examples", 500)),
        "fewshot_pool": int(corpus.get("fewshot_pool", 100)),
    }


def _run_folder(cfg: DictConfig) -> tuple[Path, DictConfig]:
    from arches.train.run_folder import CHECKPOINT_DIR, WEIGHTS_FILE, read_config

    if not cfg.get("run"):
        raise UserError("which run? set run=<run folder>, e.g. arches eval run=results/gpt-tiny-classics-seed0-...")
    run_dir = Path(str(cfg.run)).expanduser()
    if not run_dir.is_dir():
        raise UserError(f"run={cfg.run} is not a folder; point run= at a run folder written by `arches train`")
    weights = run_dir / CHECKPOINT_DIR / WEIGHTS_FILE
    if not weights.is_file():
        raise UserError(f"{run_dir} has no checkpoint ({weights} is missing); train it first with `arches train`")
    run_cfg = OmegaConf.create(read_config(run_dir))
    if "data" not in run_cfg:
        raise UserError(f"{run_dir / 'config.yaml'} has no `data` section: it is not a run's config; train again")
    return run_dir, run_cfg


def _corpus_config(run_cfg: DictConfig, cfg: DictConfig) -> DictConfig:
    """The run's corpus (its own `data` section), looked up in the run's cache folder where
    that exists on this machine, else in this command's `cache_dir`."""
    recorded = run_cfg.get("cache_dir")
    cache_dir = recorded if recorded and Path(str(recorded)).expanduser().is_dir() else cfg.cache_dir
    return OmegaConf.create({"seed": run_cfg.get("seed", 0), "cache_dir": str(cache_dir), "data": run_cfg.data})


# ---------------------------------------------------------------- tasks


def _local_manager(include: list[Path], metadata: dict | None = None):
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=[str(p) for p in include], include_defaults=False, metadata=metadata)


def resolve_tasks(settings: dict, cfg: DictConfig, corpus_cfg: DictConfig) -> dict:
    """Which tasks run and the TaskManager that finds them: {names, skipped, manager, task_data}.

    Names are checked first (cheap: YAMLs are only indexed); then BIG-bench tasks
    are converted from a cached archive and the bundled tasks' data is built, if missing.
    """
    from harness import bigbench
    from harness.tasks.build import TASKS_DIR, TaskDataSpec, task_data_for_config
    from harness.tasks.loader import METADATA_KEY

    include = [TASKS_DIR]
    if bigbench.tasks_dir(cfg.cache_dir).is_dir():
        include.append(bigbench.tasks_dir(cfg.cache_dir))
    local = set(_local_manager(include).all_tasks) | set(bigbench.BIGBENCH_TASKS)
    names, skipped, wanted_bigbench, standard, optional_names = [], [], [], [], set()
    for raw in settings["tasks"]:
        optional = raw.endswith(OPTIONAL)
        name = raw.rstrip(OPTIONAL)
        if optional:
            optional_names.add(name)
        if name in bigbench.BIGBENCH_TASKS:
            converted = name in bigbench.converted_tasks(cfg.cache_dir)
            if not converted and not bigbench.archive_path(cfg.cache_dir).is_file():
                if optional:
                    skipped.append((name, "not converted: run `arches data bigbench`"))
                    continue
                raise UserError(
                    f"BIG-bench task '{name}' is not converted yet; run `arches data bigbench` first "
                    f"(it fetches {bigbench.REQUIREMENT}, {bigbench.ARCHIVE_MB} MB, from PyPI once)"
                )
            wanted_bigbench.append(name)
        elif name not in local:
            standard.append((name, optional))
        names.append(name)

    online = bool(standard) and hub.unreachable() is None
    if standard and not online:
        for name, optional in standard:
            if not optional:
                raise _unknown_or_offline(name, sorted(local), cfg.cache_dir)
        skipped.extend((name, "needs the Hugging Face Hub, which cannot be reached") for name, _ in standard)
        names = [n for n in names if n not in {name for name, _ in standard}]

    if wanted_bigbench:
        bigbench.ensure_bigbench(cfg.cache_dir, wanted_bigbench, bigbench.spec_from_config(cfg), fetch=False)
        if bigbench.tasks_dir(cfg.cache_dir) not in include:
            include.append(bigbench.tasks_dir(cfg.cache_dir))
    task_data, metadata = None, {}
    if any(name in CORPUS_TASKS for name in names):
        spec = TaskDataSpec(settings["max_examples"], settings["fewshot_pool"], settings["seed"])
        task_data = task_data_for_config(corpus_cfg, spec)
        metadata[METADATA_KEY] = str(task_data)
    pairs = prepare_pairs(names, optional_names, cfg.eval, corpus_cfg)
    if pairs is not None:  # after the bundled tasks: a group of fewer kinds replaces the bundled one
        names, skipped, include = pairs.names, [*skipped, *pairs.skipped], [*include, *pairs.include]
        metadata.update(pairs.metadata)
    from lm_eval.tasks import TaskManager

    manager = TaskManager(  # with lm-eval's own tasks, indexing takes ~15 s
        include_path=[str(p) for p in include],
        include_defaults=online,
        metadata=metadata or None,
    )
    for name, _ in standard if online else []:
        if name not in manager.all_tasks:
            raise UserError(
                f"unknown task '{name}'; bundled: {', '.join(BUNDLED_TASKS)}; BIG-bench: "
                f"{', '.join(bigbench.BIGBENCH_TASKS)}; or any of lm-eval's {len(manager.all_tasks)} tasks "
                f"(hellaswag, piqa, arc_easy, ...).{closest(name, manager.all_tasks)}"
            )
    return {"names": list(dict.fromkeys(names)), "skipped": skipped, "manager": manager, "task_data": task_data,
            "pairs_data": pairs.folder if pairs is not None else None, "notes": pairs.notes if pairs else []}  # fmt: skip


def _unknown_or_offline(name: str, local: list[str], cache_dir: Any) -> UserError:
    blimp = blimp_offline(name)
    if blimp is not None:
        return blimp
    hint = closest(name, local)
    if hint:  # a typo of a task that is here
        return UserError(f"unknown task '{name}'; available offline: {', '.join(local)}.{hint}")
    return UserError(
        f"task '{name}' is neither bundled nor a converted BIG-bench task, and lm-eval's own tasks load from the "
        f"Hugging Face Hub, which cannot be reached here (HF_HUB_OFFLINE/HF_DATASETS_OFFLINE set, or no connection); "
        f"{_alternatives(cache_dir)}"
    )


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


def load_tasks(manager, names: list[str], cache_dir: Any, members: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """{leaf task name: Task} for the names (a tag or group expands to its tasks); `members`,
    if given, gets each name's leaf task names."""
    tasks: dict[str, Any] = {}
    for name in names:
        try:
            loaded = manager.load([name])
        except IndexError as error:  # lm-eval reads the first document while building a task
            raise UserError(f"task '{name}' has no examples; {_empty_hint(name)}") from error
        except UserError:
            raise
        except Exception as error:
            if hub.is_connection_error(error) or (hub.offline() and "offline" in str(error).lower()):
                raise _hub_error(name, cache_dir) from error
            raise
        tasks.update(loaded["tasks"])
        if members is not None:
            members[name] = list(loaded["tasks"])
    return tasks


def zero_shot_only(task) -> bool:
    """Rolling perplexity (no few-shot form), or a task whose YAML says `num_fewshot: 0`
    (BLiMP's, the minimal pairs'), which lm-eval scores at 0 shots whatever it is asked."""
    return task.OUTPUT_TYPE == "loglikelihood_rolling" or task.config.num_fewshot == 0


def _empty_hint(name: str) -> str:
    if name in CORPUS_TASKS:
        return "the run's corpus has too little held-out text to build it (raise data.test_fraction or add text)"
    return "check its data"


def _fewshot_allowed(task) -> int | None:
    """How many few-shot examples the task can give per scored example (None: no limit known)."""
    docs = task.fewshot_docs()
    if docs is None:
        return 0
    pool = len(docs)
    split = task.config.fewshot_split
    same_as_test = split is not None and split == task.config.test_split
    if same_as_test or (split is None and not task.has_training_docs() and not task.has_validation_docs()):
        pool -= 1  # the sampler leaves the scored example itself out
    return pool


def check_tasks(tasks: dict[str, Any], shots: list[int]) -> None:
    """Every task has examples and enough few-shot examples for the largest shot count."""
    for name, task in tasks.items():
        if len(task.eval_docs) == 0:
            raise UserError(f"task '{name}' has no examples; {_empty_hint(name)}")
        if zero_shot_only(task):
            continue  # scored at 0 shots only
        most = max(shots)
        if most > 0:
            allowed = _fewshot_allowed(task)
            if allowed is not None and allowed < most:
                split = task.config.fewshot_split or task.config.training_split or task.config.validation_split
                raise UserError(
                    f"eval.num_fewshot={most} is more than task '{name}' allows: its few-shot split "
                    f"({split}) holds {allowed} example(s); lower eval.num_fewshot"
                )


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

        from harness.lm import ArchesLM

        model = ArchesLM(run=str(run_dir), batch_size=settings["batch_size"], device=settings["device"])
        entries: dict[str, dict] = {}
        for shots in settings["shots"]:
            names = [n for n in resolved["names"] if shots == 0 or n in takes_shots]
            if not names:
                continue
            results, common = scored_pass(model, names, shots, settings, resolved["manager"])
            files = write_results(run_dir, shots, results)
            entries.update(record_entries(results, shots, files, common))
        # the 0-shot multiple-choice tasks again in the family's other format, recorded apart (harness/alternatives.py)
        alternatives, alternative_notes = score_alternatives(cfg, settings, run_dir, model, resolved, tasks, members)
        from harness.generations import write_generations

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
