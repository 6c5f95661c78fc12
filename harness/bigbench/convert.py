"""A BIG-bench JSON task as a local multiple-choice lm-eval task (YAML + jsonl).

The prompt is BIG-bench's own (`bigbench/api/json_task.py`): `task_prefix`
once (lm-eval's `description`), then per example `example_input_prefix + input`,
the choices appended when `append_choices_to_input` (permuted as BIG-bench does,
seed 42), then `example_output_prefix`; few-shot examples are joined by
`few_shot_example_separator`. The choices are the `target_scores` keys and the
gold one is the first with the highest score. Trailing whitespace of the prompt
moves to the front of every choice (" Yes"), the text scored being the same.

Examples are de-duplicated (as BIG-bench does) and ordered by a seeded hash; the
first ones form the few-shot pool (the `train` split, never scored) and the
next ones, at most `max_examples`, the scored `test` split.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from arches.errors import UserError, unknown
from harness.bigbench.archive import BIGBENCH_TASKS, REQUIREMENT, TASKS_ROOT, read_task_files

# Bump when a change here changes what a converted task holds.
CONVERT_VERSION = 1
LOADER = Path(__file__).resolve().parents[1] / "tasks" / "loader.py"  # harness/tasks/, copied beside each task
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class ConvertSpec:
    max_examples: int | None = 500  # scored examples per task (None: all)
    fewshot_pool: int = 50  # few-shot examples per task, at most a fifth of the task
    seed: int = 1234

    def as_dict(self) -> dict:
        return {"version": CONVERT_VERSION, "max_examples": self.max_examples, "fewshot_pool": self.fewshot_pool,
                "seed": self.seed}  # fmt: skip


def read_manifest(folder: Path) -> dict:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return {}  # damaged: every task is converted again


def _order(seed: int, *parts: Any) -> str:
    return hashlib.sha256(json.dumps([seed, *parts], ensure_ascii=False).encode("utf-8")).hexdigest()


def format_example(example: dict, task: dict) -> dict | None:
    """One BIG-bench example as {query, choices, gold} (BIG-bench's default_format_fn), or None."""
    import numpy as np

    scores = example.get("target_scores")
    text = example.get("input")
    if not isinstance(scores, dict) or len(scores) < 2 or not isinstance(text, str):
        return None
    values = list(scores.values())
    if max(values) <= min(values):  # no choice is better than another: BIG-bench refuses such examples
        return None
    keys = [str(k) for k in scores]
    query = task.get("example_input_prefix", "\nQ: ") + text
    if task.get("append_choices_to_input", True):
        choice_prefix = task.get("choice_prefix", "\n  choice: ")
        permuted = np.random.RandomState(seed=42).permutation(sorted(keys))  # BIG-bench's JsonTask default seed
        query += choice_prefix + choice_prefix.join(str(c) for c in permuted)
    query += task.get("example_output_prefix", "\nA: ")
    stripped = query.rstrip()
    space = query[len(stripped) :]
    best = max(values)
    return {
        "query": stripped,
        "choices": [space + key for key in keys],
        "gold": values.index(best),  # the first of the highest scores, as BIG-bench
    }


def _template_safe(text: str) -> str:
    # lm-eval renders `description` as a Jinja template
    return "{% raw %}" + text + "{% endraw %}" if any(s in text for s in ("{{", "{%", "{#")) else text


def convert_task(name: str, task: dict, spec: ConvertSpec) -> tuple[str, list[dict], list[dict], dict]:
    """(YAML text, test rows, few-shot rows, info) of one BIG-bench JSON task."""
    seen, examples, skipped = set(), [], 0
    for index, example in enumerate(task.get("examples") or []):
        key = json.dumps(example, sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        formatted = format_example(example, task)
        if formatted is None:
            skipped += 1
            continue
        original = {"idx": index, "input": example["input"], "target_scores": example["target_scores"]}
        examples.append({**original, **formatted})
    if not examples:
        raise UserError(f"BIG-bench task {name} has no multiple-choice examples (input + target_scores)")
    examples.sort(key=lambda e: _order(spec.seed, name, e["idx"]))
    pool_size = min(spec.fewshot_pool, len(examples) // 5)
    train, test = examples[:pool_size], examples[pool_size:]
    if spec.max_examples is not None:
        test = test[: spec.max_examples]
    path = BIGBENCH_TASKS[name]
    config = {
        "tag": ["arches_bigbench"],
        "task": name,
        "dataset_kwargs": {"arches_task": name},
        "output_type": "multiple_choice",
        "training_split": "train",
        "test_split": "test",
        "fewshot_split": "train",
        "description": _template_safe(str(task.get("task_prefix", ""))),
        "doc_to_text": "query",
        "doc_to_choice": "choices",
        "doc_to_target": "gold",
        "target_delimiter": "",  # the choices carry the prompt's trailing space
        "fewshot_delimiter": str(task.get("few_shot_example_separator", "\n")),
        "metric_list": [
            {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
            {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True},
        ],
        "metadata": {"version": 1.0, "source": f"{REQUIREMENT} {TASKS_ROOT}/{path}/task.json"},
    }
    text = (
        f"# BIG-bench {path}, converted by `arches data bigbench` from {REQUIREMENT}; do not edit.\n"
        "custom_dataset: !function loader.load_local_task\n"
        + yaml.safe_dump(config, sort_keys=False, allow_unicode=True, width=1000)
    )
    choices = [len(e["choices"]) for e in test]
    info = {
        "path": f"{TASKS_ROOT}/{path}/task.json",
        "examples": len(task.get("examples") or []),
        "usable": len(examples),
        "skipped": skipped,
        "test": len(test),
        "train": len(train),
        "chance": round(sum(1 / c for c in choices) / len(choices), 4) if choices else None,
    }
    return text, test, train, info


def _write_atomic(path: Path, text: str) -> None:
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temp.write_text(text, encoding="utf-8")
    os.replace(temp, path)


def _jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n" for row in rows)


def convert_archive(
    archive: str | Path, out_dir: str | Path, tasks: list[str], spec: ConvertSpec = ConvertSpec()
) -> dict:
    """Convert `tasks` of a BIG-bench source archive into lm-eval tasks in `out_dir`; returns the manifest.

    Tasks already converted there with the same spec are kept as they are.
    """
    for name in tasks:
        if name not in BIGBENCH_TASKS:
            raise unknown("BIG-bench task", name, BIGBENCH_TASKS)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(out_dir)
    todo = [
        name for name in dict.fromkeys(tasks)
        if manifest.get(name, {}).get("spec") != spec.as_dict() or not (out_dir / f"{name}.yaml").is_file()
    ]  # fmt: skip
    if not todo:
        return manifest
    archive = Path(archive)
    files = read_task_files(archive, todo)
    if not (out_dir / LOADER.name).is_file() or (out_dir / LOADER.name).read_bytes() != LOADER.read_bytes():
        _write_atomic(out_dir / LOADER.name, LOADER.read_text())
    for name in todo:
        try:
            task = json.loads(files[name].decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            task = None
        if not isinstance(task, dict):
            path = f"{TASKS_ROOT}/{BIGBENCH_TASKS[name]}/task.json"
            raise UserError(f"{archive}: {path} is not a JSON task; delete the archive and fetch it again")
        text, test, train, info = convert_task(name, task, spec)
        (out_dir / f"{name}.yaml").unlink(missing_ok=True)  # the YAML goes last: lm-eval indexes only complete tasks
        _write_atomic(out_dir / f"{name}.test.jsonl", _jsonl(test))
        _write_atomic(out_dir / f"{name}.train.jsonl", _jsonl(train))
        _write_atomic(out_dir / f"{name}.yaml", text)
        manifest[name] = {
            **info,
            "spec": spec.as_dict(),
            "task_json_sha256": hashlib.sha256(files[name]).hexdigest(),
            "archive": archive.name,
        }
        _write_atomic(out_dir / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return manifest
