"""BIG-bench tasks as local lm-eval tasks, offline: `arches data bigbench [overrides]`.

BIG-bench (Srivastava et al. 2022) is real benchmark data that PyPI carries in
the `bigbench==1.0.0` source archive (358 MB): each JSON task is a `task.json` of
`{"input", "target_scores"}` examples. The archive is fetched once with `pip
download` into `<cache_dir>/downloads/` and never installed (its install needs
tensorflow); only the chosen tasks' `task.json` members are read from it, and
each becomes a multiple-choice lm-eval task (YAML + jsonl) in
`<cache_dir>/bigbench/tasks/`, once.

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
import re
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from arches.train.run_folder import file_sha256
from arches.errors import UserError, unknown

REQUIREMENT = "bigbench==1.0.0"
ARCHIVE_NAME = "bigbench-1.0.0.tar.gz"
ARCHIVE_SHA256 = "1bb398a5512c6d798cdebe0dfa0ac03f67f6033fa6b39c6ef71df978c7cbc5c2"
ARCHIVE_MB = 358
TASKS_ROOT = "bigbench/benchmark_tasks"
# pip 26.3 refuses a PyPI sdist whose metadata declares a direct-URL dependency, even
# with --no-deps, and bigbench 1.0.0 declares `bleurt @ file://...`; pip 25.0.1 (run
# from its wheel, never installed) downloads the same archive.
FALLBACK_PIP = "pip==25.0.1"
FALLBACK_PIP_WHEEL = "pip-25.0.1-py3-none-any.whl"
# Bump when a change here changes what a converted task holds.
CONVERT_VERSION = 1
LOADER = Path(__file__).resolve().parent / "tasks" / "loader.py"
MANIFEST = "manifest.json"

# lm-eval task name -> the task's folder under bigbench/benchmark_tasks/
BIGBENCH_TASKS: dict[str, str] = {
    "hyperbaton": "hyperbaton",
    "winowhy": "winowhy",
    "social_iqa": "social_iqa",
    "strategyqa": "strategyqa",
    "timedial": "timedial",
    "date_understanding": "date_understanding",
    "logical_deduction_three_objects": "logical_deduction/three_objects",
    "cause_and_effect_one_sentence": "cause_and_effect/one_sentence",
    "cause_and_effect_two_sentences": "cause_and_effect/two_sentences",
}


@dataclass(frozen=True)
class ConvertSpec:
    max_examples: int | None = 500  # scored examples per task (None: all)
    fewshot_pool: int = 50  # few-shot examples per task, at most a fifth of the task
    seed: int = 1234

    def as_dict(self) -> dict:
        return {"version": CONVERT_VERSION, "max_examples": self.max_examples, "fewshot_pool": self.fewshot_pool,
                "seed": self.seed}  # fmt: skip


def bigbench_dir(cache_dir: str | Path) -> Path:
    return Path(cache_dir).expanduser() / "bigbench"


def tasks_dir(cache_dir: str | Path) -> Path:
    """The folder of converted tasks (an lm-eval include path)."""
    return bigbench_dir(cache_dir) / "tasks"


def archive_path(cache_dir: str | Path) -> Path:
    return Path(cache_dir).expanduser() / "downloads" / ARCHIVE_NAME


def read_manifest(folder: Path) -> dict:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return {}  # damaged: every task is converted again


def converted_tasks(cache_dir: str | Path) -> list[str]:
    """The BIG-bench tasks converted and complete in this cache."""
    folder = tasks_dir(cache_dir)
    return sorted(name for name in read_manifest(folder) if (folder / f"{name}.yaml").is_file())


# ---------------------------------------------------------------- fetching


def _pip_download(pip: list[str], requirement: str, folder: Path, *extra: str) -> subprocess.CompletedProcess:
    # --retries/--timeout: fail within seconds offline rather than after pip's minutes of retries
    command = [*pip, "download", "--no-deps", *extra, requirement, "-d", str(folder),
               "--disable-pip-version-check", "--quiet", "--retries", "1", "--timeout", "30"]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True)


def offline_error(downloads: Path) -> UserError:
    return UserError(
        f"cannot fetch {REQUIREMENT} from PyPI (offline?); where PyPI is reachable run `pip download --no-deps "
        f"--no-binary :all: {REQUIREMENT}` (with pip 25 or older) and copy {ARCHIVE_NAME} ({ARCHIVE_MB} MB) into "
        f"{downloads}, then run `arches data bigbench` again"
    )


def _pip_refuses_direct_urls() -> bool:
    """Whether this environment's pip refuses bigbench's metadata (pip 26.3's check, in this module)."""
    import importlib.util

    try:
        return importlib.util.find_spec("pip._internal.metadata.direct_references") is not None
    except (ImportError, ValueError):
        return False


def fetch_archive(cache_dir: str | Path) -> Path:
    """The BIG-bench source archive in `<cache_dir>/downloads/`, fetched with pip if missing, hash checked."""
    path = archive_path(cache_dir)
    downloads = path.parent
    if not path.is_file():
        downloads.mkdir(parents=True, exist_ok=True)
        from rich.console import Console

        pip = [sys.executable, "-m", "pip"]
        with Console(stderr=True).status(f"fetching {REQUIREMENT} ({ARCHIVE_MB} MB) from PyPI"):
            refuses = _pip_refuses_direct_urls()  # then skip a 358 MB download that pip would throw away
            if not refuses:
                result = _pip_download(pip, REQUIREMENT, downloads, "--no-binary", ":all:")
            if not path.is_file() and (refuses or "direct URL" in result.stderr):
                tools = downloads / "tools"
                _pip_download(pip, FALLBACK_PIP, tools, "--only-binary", ":all:")
                if (tools / FALLBACK_PIP_WHEEL).is_file():
                    fallback = [sys.executable, str(tools / FALLBACK_PIP_WHEEL / "pip")]
                    _pip_download(fallback, REQUIREMENT, downloads, "--no-binary", ":all:")
        if not path.is_file():
            raise offline_error(downloads)
    actual = file_sha256(path)
    if actual != ARCHIVE_SHA256:
        raise UserError(
            f"{path} has sha256 {actual}, not the pinned {ARCHIVE_SHA256} of {REQUIREMENT}; "
            "refusing to read it: delete the file and run `arches data bigbench` again"
        )
    return path


# ---------------------------------------------------------------- reading the archive


def _escapes(name: str) -> bool:
    parts = PurePosixPath(name).parts
    return name.startswith(("/", "\\")) or ".." in parts or bool(re.match(r"^[A-Za-z]:", name))


def read_task_files(archive: Path, tasks: list[str]) -> dict[str, bytes]:
    """The `task.json` bytes of each task, read in one pass over the archive.

    Members are read straight from the archive, never extracted to disk, and
    the whole archive is refused if any member path could escape a target folder
    (absolute, or with `..`). One pass in archive order: a gzip stream cannot
    seek backwards without decompressing again from the start.
    """
    wanted = {f"{TASKS_ROOT}/{BIGBENCH_TASKS[name]}/task.json": name for name in tasks}
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                if _escapes(member.name):
                    raise UserError(
                        f"archive {archive} has a member path escaping its folder ('{member.name}'); "
                        "refusing it: delete the file and fetch it again"
                    )
                parts = PurePosixPath(member.name).parts
                inner = "/".join(parts[1:])  # strip `bigbench-1.0.0/`
                if member.isfile() and inner in wanted:
                    handle = tar.extractfile(member)
                    if handle is not None:
                        found[wanted[inner]] = handle.read()
    except (tarfile.TarError, EOFError, OSError) as error:
        raise UserError(f"{archive} is not a readable tar.gz ({error}); delete it and fetch it again") from error
    missing = [name for name in tasks if name not in found]
    if missing:
        paths = ", ".join(f"{TASKS_ROOT}/{BIGBENCH_TASKS[name]}/task.json" for name in missing)
        raise UserError(f"archive {archive} has no {paths}; delete it and fetch {REQUIREMENT} again")
    return found


# ---------------------------------------------------------------- conversion


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
