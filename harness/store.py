"""The index of run folders: one folder per run is the source of truth.

`results/<experiment>/<run>/run.json` is written by training (and its `evals` by
evaluation); this module only reads those records, through arches.train.record. The index (`index.parquet`:
pyarrow is a declared dependency and keeps the column types) is a table rebuilt
from the folders every time, never edited by hand. pandas is the only table engine.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from arches.errors import UserError
from arches.train.record import RUN_RECORD, read_record
from arches.train.run_folder import write_atomic

BASELINE_FILE = "baseline.json"
INDEX_FILE = "index.parquet"

# run.json fields copied into the index as they are (missing ones become empty cells)
INDEX_FIELDS = (
    "run_name", "experiment", "variant", "family", "preset", "objective", "size", "seed", "status", "error",
    "data", "tokenizer_hash", "vocab_size", "seq_len", "params_total", "params_non_embedding", "flops_per_token",
    "planned_steps", "planned_tokens", "steps", "tokens_seen", "loss_tokens_seen", "train_flops", "wall_time_s",
    "tokens_per_s", "final_val_loss", "loss_objective", "precision", "device", "tuned", "tuned_trials", "ladder_rung",
)
SCORE_COLUMNS = (
    "variant", "seed", "run_name", "family", "objective", "task", "shots", "metric", "value", "stderr", "n",
    "n_available", "chance", "samples_file", "subtasks", "limit", "format", "fewshot_seed", "version",
)


def write_bytes_atomic(path: Path, data: bytes) -> Path:
    """Atomic write (temporary file, fsync, rename): the run folders' own writer."""
    return write_atomic(path, data)


def write_text_atomic(path: Path, text: str) -> Path:
    return write_atomic(path, text)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"{path} is corrupted ({error}); delete that run folder and run it again") from None


def _results_folder(folder: Path | str) -> Path:
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"results folder {folder} does not exist; run `arches compare experiment=<name>` first")
    return folder


def load_runs(folder: Path | str, recursive: bool = False) -> list[dict]:
    """Every run record (`<folder>/*/run.json`), sorted by variant, seed and name.

    `recursive` reads every run.json below the folder instead (a results root that holds
    one folder per experiment). Temporary files (`.run.json.*.tmp`) and hidden folders are
    skipped. Each record gains `run_dir`, the folder it was read from (records move with
    their folders), and the defaults of optional fields: `variant` (the preset, else the run
    name), `experiment` (the name of the folder holding the run), `tuned` (false), `evals` ({}).
    """
    folder = _results_folder(folder)
    runs = []
    paths = folder.rglob(RUN_RECORD) if recursive else folder.glob(f"*/{RUN_RECORD}")
    for path in sorted(paths):
        if any(part.startswith(".") for part in path.relative_to(folder).parts[:-1]):
            continue
        record = read_record(path.parent).to_dict()
        record["run_dir"] = str(path.parent)
        record.setdefault("run_name", path.parent.name)
        record["variant"] = record.get("variant") or record.get("preset") or record["run_name"]
        record["experiment"] = record.get("experiment") or path.parent.parent.resolve().name
        record["status"] = record.get("status") or "running"
        record["tuned"] = bool(record.get("tuned", False))
        record["evals"] = record.get("evals") or {}
        runs.append(record)
    runs.sort(key=lambda r: (str(r["variant"]), _seed_key(r.get("seed")), str(r["run_name"])))
    return runs


def _seed_key(seed: Any) -> tuple:
    return (0, seed) if isinstance(seed, (int, float)) else (1, str(seed))


def require_runs(folder: Path | str) -> list[dict]:
    """`load_runs`, refusing an empty folder and runs trained with different tokenizers."""
    runs = load_runs(folder)
    if not runs:
        raise UserError(
            f"{folder} has no runs (no */{RUN_RECORD}); run `arches compare experiment=<name>` to create them"
        )
    check_one_tokenizer(runs)
    return runs


def check_one_tokenizer(runs: list[dict]) -> str | None:
    """The runs' shared tokenizer hash; a UserError naming the runs when they differ.

    Scores and losses of models with different vocabularies are not comparable.
    Runs that failed before their tokenizer was built (no hash) are ignored.
    """
    by_hash: dict[str, list[str]] = {}
    for run in runs:
        if run.get("tokenizer_hash"):
            by_hash.setdefault(str(run["tokenizer_hash"]), []).append(str(run["run_name"]))
    if len(by_hash) > 1:
        groups = "; ".join(f"{h[:12]}: {', '.join(names)}" for h, names in sorted(by_hash.items()))
        raise UserError(
            f"runs were trained with different tokenizers and cannot be compared ({groups}); "
            "retrain them with one data config or move them into separate results folders"
        )
    return next(iter(by_hash), None)


def index(folder: Path | str, runs: list[dict] | None = None) -> pd.DataFrame:
    """One row per run: the record's scalar fields, `knobs` as JSON, `n_evals` and `run_dir`."""
    rows = []
    for run in load_runs(folder) if runs is None else runs:
        row = {field: run.get(field) for field in INDEX_FIELDS}
        row["knobs"] = json.dumps(run.get("knobs") or {}, sort_keys=True)
        row["n_evals"] = len(run["evals"])
        row["run_dir"] = run["run_dir"]
        rows.append(row)
    return pd.DataFrame(rows, columns=[*INDEX_FIELDS, "knobs", "n_evals", "run_dir"])


def write_index(folder: Path | str) -> Path:
    """Rebuild `<folder>/index.parquet` from every run folder below it (atomically); return its path.

    Works on one experiment's folder and on the results root (`results/index.parquet`).
    """
    folder = _results_folder(folder)
    table = index(folder, load_runs(folder, recursive=True))
    for column in table.columns[table.dtypes == object]:
        kinds = {type(v) for v in table[column] if v is not None}
        if len(kinds) > 1 or kinds - {str}:  # parquet needs one type per column
            table[column] = table[column].map(lambda v: None if v is None else str(v))
    buffer = io.BytesIO()
    table.to_parquet(buffer, index=False)
    return write_atomic(folder / INDEX_FILE, buffer.getvalue())


def scores(folder: Path | str, runs: list[dict] | None = None) -> pd.DataFrame:
    """The long table of scores: one row per completed run × task × shots × metric.

    `stderr` is lm-eval's `<metric>_stderr` where it has one; `n` the examples scored and
    `n_available` those the task holds (empty in records older than them); `chance` is the task's
    chance level (multiple choice) or empty; `samples_file` is the absolute path of the
    per-example outcomes, or empty when the evaluation did not record them. A group's
    aggregate (lm-eval's score of a group such as corpus_pairs or blimp: the mean over its
    tasks, which have rows of their own) has `subtasks`, its tasks' names joined by commas,
    and no samples file; a task's `subtasks` is empty. `limit`, `format` (the scoring format),
    `fewshot_seed` (lm-eval's seeds, few-shot sampling included) and `version` (the task's) are
    the entry's evaluation settings, empty where the record predates them.
    """
    rows = []
    for run in load_runs(folder) if runs is None else runs:
        if run["status"] != "completed":
            continue
        for key, entry in sorted(run["evals"].items()):
            task = entry.get("task") or key.split("|")[0]
            shots = int(entry.get("shots", key.split("|")[-1]))
            metrics = entry.get("metrics") or {}
            samples = entry.get("samples_file")
            for metric, value in sorted(metrics.items()):
                if metric.endswith("_stderr") or not _is_number(value):
                    continue
                stderr = metrics.get(f"{metric}_stderr")
                rows.append({
                    "variant": run["variant"],
                    "seed": run.get("seed"),
                    "run_name": run["run_name"],
                    "family": run.get("family"),
                    "objective": run.get("loss_objective") or run.get("objective"),
                    "task": task,
                    "shots": shots,
                    "metric": metric,
                    "value": float(value),
                    "stderr": float(stderr) if _is_number(stderr) else math.nan,
                    "n": entry.get("n"),
                    "n_available": entry.get("n_available", entry.get("n_total")),  # n_total: its older name
                    "chance": entry.get("chance"),
                    "samples_file": str(Path(run["run_dir"]) / samples) if samples else None,
                    "subtasks": ",".join(entry["subtasks"]) if entry.get("subtasks") else None,
                    # the evaluation settings a fair row shares (harness.report.mismatch checks them)
                    "limit": entry.get("limit"),
                    "format": entry.get("format"),
                    "fewshot_seed": entry.get("seed"),
                    "version": entry.get("version"),
                })
    return pd.DataFrame(rows, columns=list(SCORE_COLUMNS))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def load_baseline(folder: Path | str) -> dict | None:
    """`<folder>/baseline.json` (the unigram baseline written by `arches compare`), or None."""
    path = Path(folder) / BASELINE_FILE
    return _read_json(path) if path.exists() else None


def load_samples(path: Path | str, metric: str) -> dict[Any, Any]:
    """Per-example values of `metric` from an lm-eval samples file, keyed by doc_id (first one wins)."""
    path = Path(path)
    values: dict[Any, Any] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise UserError(f"{path} does not exist; evaluate the run again with `arches eval`") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            sample = json.loads(line)
        except json.JSONDecodeError as error:
            raise UserError(f"{path}:{number} is corrupted ({error}); evaluate the run again") from None
        if "doc_id" in sample and metric in sample:
            values.setdefault(sample["doc_id"], sample[metric])
    return values
