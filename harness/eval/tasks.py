"""Which tasks one `arches eval` runs, and the checks before any is scored.

`resolve_tasks` sorts the names of `eval.tasks` into the bundled corpus tasks and minimal
pairs, BIG-bench tasks (converted from a cached archive when missing) and lm-eval's own
(where the Hugging Face Hub is reachable), a trailing `?` marking a name that may be
skipped; `load_tasks` builds them with lm-eval and `check_tasks` refuses an empty task
or more shots than a task's few-shot split holds. Each refusal is one line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from arches import hub
from arches.errors import UserError, closest
from harness.eval.pairs import PAIR_TASKS, blimp_offline, prepare_pairs

CORPUS_TASKS = ("corpus_ppl", "corpus_cloze", "corpus_next")  # their data: harness/tasks/build.py
BUNDLED_TASKS = (*CORPUS_TASKS, *PAIR_TASKS)  # and the minimal pairs: harness/eval/pairs.py
OPTIONAL = "?"


def _alternatives(cache_dir: Any) -> str:
    from harness.bigbench.archive import BIGBENCH_TASKS
    from harness.bigbench.command import converted_tasks

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


def _local_manager(include: list[Path], metadata: dict | None = None):
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=[str(p) for p in include], include_defaults=False, metadata=metadata)


def resolve_tasks(settings: dict, cfg: DictConfig, corpus_cfg: DictConfig) -> dict:
    """Which tasks run and the TaskManager that finds them: {names, skipped, manager, task_data}.

    Names are checked first (cheap: YAMLs are only indexed); then BIG-bench tasks
    are converted from a cached archive and the bundled tasks' data is built, if missing.
    """
    from harness.bigbench import command as bigbench
    from harness.bigbench.archive import ARCHIVE_MB, BIGBENCH_TASKS, REQUIREMENT, archive_path
    from harness.tasks.build import TASKS_DIR, TaskDataSpec, task_data_for_config
    from harness.tasks.loader import METADATA_KEY

    include = [TASKS_DIR]
    if bigbench.tasks_dir(cfg.cache_dir).is_dir():
        include.append(bigbench.tasks_dir(cfg.cache_dir))
    local = set(_local_manager(include).all_tasks) | set(BIGBENCH_TASKS)
    names, skipped, wanted_bigbench, standard, optional_names = [], [], [], [], set()
    for raw in settings["tasks"]:
        optional = raw.endswith(OPTIONAL)
        name = raw.rstrip(OPTIONAL)
        if optional:
            optional_names.add(name)
        if name in BIGBENCH_TASKS:
            converted = name in bigbench.converted_tasks(cfg.cache_dir)
            if not converted and not archive_path(cfg.cache_dir).is_file():
                if optional:
                    skipped.append((name, "not converted: run `arches data bigbench`"))
                    continue
                raise UserError(
                    f"BIG-bench task '{name}' is not converted yet; run `arches data bigbench` first "
                    f"(it fetches {REQUIREMENT}, {ARCHIVE_MB} MB, from PyPI once)"
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
                f"{', '.join(BIGBENCH_TASKS)}; or any of lm-eval's {len(manager.all_tasks)} tasks "
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

