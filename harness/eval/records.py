"""What one `simple_evaluate` leaves in a run folder: per-task files and record entries.

Files (`write_results`): `eval/results-{task}-{k}shot.json`, lm-eval's results JSON cut to
that task (a group's file keeps its `groups` and `group_subtasks` entries too), and
`eval/samples-{task}-{k}shot.jsonl`, lm-eval's logged samples, one per line (a group has
none: its outcomes are its tasks').

Entries (`record_entries`), keyed "{task}|{shots}" in run.json's `evals`: one per task
scored at that shot count, and one per group lm-eval aggregated (BLiMP's `blimp`, the
minimal pairs' `corpus_pairs`), with `subtasks` (the leaf tasks its score averages), n
summed over them and no samples file. A task whose YAML fixes its shot count (BLiMP's
`num_fewshot: 0`) is scored at that count whatever was asked, so it is recorded only
under its own count.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

EVAL_DIR = "eval"
PER_TASK_KEYS = ("results", "configs", "versions", "n-shot", "higher_is_better", "n-samples")
GROUP_KEYS = ("groups", "group_subtasks")


def scored_pass(model: Any, names: list[str], shots: int, settings: dict, manager: Any) -> tuple[dict, dict]:
    """(lm-eval's results, the fields every entry of the pass records) for one `simple_evaluate` of `names`
    at `shots` with the evaluation's limit, bootstrap and seeds (python, numpy, torch and the few-shot
    sampler: every run of a comparison sees the same prompts, so their outcomes pair by doc_id)."""
    import lm_eval

    from harness.provenance import evaluation_provenance

    seed = settings["seed"]
    started = time.perf_counter()
    results = lm_eval.simple_evaluate(
        model=model, tasks=names, num_fewshot=shots, limit=settings["limit"], log_samples=True,
        task_manager=manager, bootstrap_iters=settings["bootstrap_iters"], random_seed=seed,
        numpy_random_seed=seed, torch_random_seed=seed, fewshot_random_seed=seed,
    )  # fmt: skip
    common = {"format": model.scoring_format, "limit": settings["limit"], "seed": seed,
              "seconds": round(time.perf_counter() - started, 3),
              "provenance": evaluation_provenance(model, settings["batch_size"])}  # fmt: skip
    return results, common


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value))


def record_metrics(task_results: dict) -> dict:
    """lm-eval's `{"acc,none": x, "acc_stderr,none": s}` as `{"acc": x, "acc_stderr": s}` (numbers only)."""
    metrics = {}
    for key, value in task_results.items():
        if "," not in key or not _number(value):
            continue
        metric, _, filter_name = key.partition(",")
        if filter_name != "none":
            metric = f"{metric}_{filter_name}"
        metrics[metric] = float(value)
    return metrics


def _chance(samples: list[dict], output_type: str) -> float | None:
    """Mean 1/len(choices) over the scored examples of a multiple-choice task."""
    if output_type != "multiple_choice" or not samples:
        return None
    return sum(1 / len(s["arguments"]) for s in samples) / len(samples)


def _dumps(data: Any) -> str:
    from lm_eval.utils import handle_non_serializable

    return json.dumps(data, default=handle_non_serializable, ensure_ascii=False)


def write_results(run_dir: Path, shots: int, results: dict,
                  folder: str = EVAL_DIR) -> dict[str, tuple[str, str | None]]:
    """Per task and group: `eval/results-{task}-{k}shot.json` (lm-eval's results JSON, cut to
    that task, so a later evaluation of other tasks never makes it stale) and, for a task,
    `eval/samples-{task}-{k}shot.jsonl`; `folder` (relative to the run) replaces `eval`
    (the other scoring formats' pass writes under eval/alternatives/<format>/)."""
    from arches.train.run_folder import write_atomic

    (run_dir / folder).mkdir(parents=True, exist_ok=True)
    samples = results.get("samples") or {}
    dropped = (*PER_TASK_KEYS, *GROUP_KEYS, "samples")
    shared = {k: v for k, v in results.items() if k not in dropped}
    files = {}
    for task in results.get("results", {}):
        keys = (*PER_TASK_KEYS, *GROUP_KEYS)
        body = {key: {task: results[key][task]} for key in keys if task in (results.get(key) or {})}
        results_file = f"{folder}/results-{task}-{shots}shot.json"
        text = json.dumps(json.loads(_dumps({**body, **shared})), indent=2, ensure_ascii=False)
        write_atomic(run_dir / results_file, text + "\n")
        samples_file = None
        if task in samples:
            samples_file = f"{folder}/samples-{task}-{shots}shot.jsonl"
            write_atomic(run_dir / samples_file, "".join(_dumps(row) + "\n" for row in samples[task]))
        files[task] = (results_file, samples_file)
    return files


def leaf_tasks(group: str, group_subtasks: dict[str, list[str]]) -> list[str]:
    """The tasks under a group, subgroups expanded (what lm-eval's group score averages)."""
    leaves = []
    for child in group_subtasks.get(group, []):
        leaves += leaf_tasks(child, group_subtasks) if child in group_subtasks else [child]
    return list(dict.fromkeys(leaves))


def record_entries(results: dict, shots: int, files: dict, common: dict) -> dict[str, dict]:
    """run.json's new `evals` entries from one simple_evaluate's results; `common` holds the
    fields every entry shares (format, limit, seed, seconds, provenance)."""
    from harness.provenance import sample_counts

    entries: dict[str, dict] = {}
    logged = results.get("samples") or {}
    groups = results.get("groups") or {}
    subtasks = results.get("group_subtasks") or {}
    when = time.strftime("%Y-%m-%dT%H:%M:%S")
    for task, task_results in results["results"].items():
        if task not in groups and task not in (results.get("configs") or {}):
            continue  # a group without an aggregate (a plain list of tasks) has no score of its own
        if (results.get("n-shot") or {}).get(task, shots) != shots:
            continue  # its YAML fixes another shot count: recorded under that count
        results_file, samples_file = files[task]
        entry = {"task": task, "shots": shots, "metrics": record_metrics(task_results)}
        if task in groups:
            leaves = [leaf for leaf in leaf_tasks(task, subtasks) if leaf in results["results"]]
            counts = [sample_counts(results.get("n-samples", {}).get(leaf, {}), len(logged.get(leaf, []))) for leaf in leaves]
            chances = [_chance(logged.get(leaf, []), results.get("configs", {}).get(leaf, {}).get("output_type", ""))
                       for leaf in leaves]  # fmt: skip
            entry.update(
                subtasks=leaves,
                n=sum(c["n"] for c in counts),
                n_available=sum(c["n_available"] for c in counts) if all(_number(c["n_available"]) for c in counts) else None,
                # the group's score is the unweighted mean of its tasks' (weight_by_size: false), and so its chance
                chance=sum(chances) / len(chances) if chances and all(c is not None for c in chances) else None,
            )
        else:
            samples = logged.get(task, [])
            output_type = results.get("configs", {}).get(task, {}).get("output_type", "")
            entry.update(**sample_counts(results.get("n-samples", {}).get(task, {}), len(samples)),
                         chance=_chance(samples, output_type))  # fmt: skip
        entries[f"{task}|{shots}"] = {
            **entry,
            "version": results.get("versions", {}).get(task),
            **common,
            "results_file": results_file,
            "samples_file": samples_file,
            "evaluated_at": when,
        }
    return entries
