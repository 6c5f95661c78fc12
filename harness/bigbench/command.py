"""BIG-bench tasks as local lm-eval tasks, offline: `arches data bigbench [overrides]`.

BIG-bench (Srivastava et al. 2022) is real benchmark data that PyPI carries in
the `bigbench==1.0.0` source archive (358 MB). The archive is fetched once into
`<cache_dir>/downloads/` and never installed (harness/bigbench/archive.py); only the
chosen tasks' `task.json` members are read from it, and each becomes a
multiple-choice lm-eval task (YAML + jsonl, harness/bigbench/convert.py) in
`<cache_dir>/bigbench/tasks/`, once. This module holds that folder, what it holds,
and the command.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from arches.errors import UserError, unknown
from harness.bigbench.archive import ARCHIVE_MB, BIGBENCH_TASKS, REQUIREMENT, archive_path, fetch_archive
from harness.bigbench.convert import ConvertSpec, convert_archive, read_manifest


def bigbench_dir(cache_dir: str | Path) -> Path:
    return Path(cache_dir).expanduser() / "bigbench"


def tasks_dir(cache_dir: str | Path) -> Path:
    """The folder of converted tasks (an lm-eval include path)."""
    return bigbench_dir(cache_dir) / "tasks"


def converted_tasks(cache_dir: str | Path) -> list[str]:
    """The BIG-bench tasks converted and complete in this cache."""
    folder = tasks_dir(cache_dir)
    return sorted(name for name in read_manifest(folder) if (folder / f"{name}.yaml").is_file())


def spec_from_config(cfg: Any) -> ConvertSpec:
    settings = cfg.get("eval", {}).get("bigbench", {}) or {}
    max_examples = settings.get("max_examples", 500)
    spec = ConvertSpec(
        max_examples=None if max_examples is None else int(max_examples),
        fewshot_pool=int(settings.get("fewshot_pool", 50)),
        seed=int(settings.get("seed", 1234)),
    )
    if (spec.max_examples is not None and spec.max_examples < 1) or spec.fewshot_pool < 0:
        raise UserError(
            f"eval.bigbench.max_examples={spec.max_examples} and eval.bigbench.fewshot_pool={spec.fewshot_pool} "
            "must be a positive number (or null: all) and a number >= 0"
        )
    return spec


def ensure_bigbench(cache_dir: str | Path, tasks: list[str], spec: ConvertSpec, fetch: bool = True) -> dict:
    """Convert `tasks` into `<cache_dir>/bigbench/tasks/` if not yet done; the manifest.

    With `fetch=False` a missing archive is an error telling how to get it,
    instead of a 358 MB download.
    """
    for name in tasks:
        if name not in BIGBENCH_TASKS:
            raise unknown("BIG-bench task", name, BIGBENCH_TASKS)
    folder = tasks_dir(cache_dir)
    manifest = read_manifest(folder)
    if all(manifest.get(n, {}).get("spec") == spec.as_dict() and (folder / f"{n}.yaml").is_file() for n in tasks):
        return manifest
    if not fetch and not archive_path(cache_dir).is_file():
        raise UserError(
            f"BIG-bench task(s) {', '.join(tasks)} are not converted yet; run `arches data bigbench` first "
            f"(it fetches {REQUIREMENT}, {ARCHIVE_MB} MB, from PyPI once)"
        )
    return convert_archive(fetch_archive(cache_dir), folder, tasks, spec)


def bigbench_command(argv: list[str]) -> None:
    """`arches data bigbench [overrides]`: fetch BIG-bench once and convert `eval.bigbench.tasks`."""
    from arches.config import compose
    from arches.settings import check_eval_settings

    started = time.perf_counter()
    cfg = compose(argv)
    check_eval_settings(cfg)  # eval.bigbench.* before the 358 MB download
    settings = cfg.get("eval", {}).get("bigbench", {}) or {}
    tasks = [str(t) for t in (settings.get("tasks") or list(BIGBENCH_TASKS))]
    spec = spec_from_config(cfg)
    manifest = ensure_bigbench(cfg.cache_dir, tasks, spec)
    seconds = time.perf_counter() - started

    from rich.table import Table

    from arches.tables import print_table

    table = Table(title=f"BIG-bench tasks ({REQUIREMENT})", caption_justify="left")
    for column in ("task", "examples", "scored", "few-shot pool", "chance"):
        table.add_column(column, justify="left" if column == "task" else "right")
    for name in tasks:
        info = manifest[name]
        table.add_row(name, f"{info['examples']:,}", f"{info['test']:,}", f"{info['train']:,}", f"{info['chance']:.3f}")
    table.caption = f"tasks {tasks_dir(cfg.cache_dir)}\n{seconds:.1f} s"
    print_table(table)  # whole in a pipe or a file, folded in a narrow terminal
