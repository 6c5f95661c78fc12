"""Provenance on the evaluation side: what scored a run (recorded with its scores), and
the report's provenance header and its n per score.

Training records `provenance` in run.json (arches.provenance); evaluation records its
own with every score entry, and each entry's `n` (examples scored) and `n_available`
(examples in the task), from lm-eval's `n-samples`. The report shows, for training and
for evaluation, the arches version and commit, the library versions and the device and
dtype, naming the runs wherever they differ; records written before any of this show
"not recorded" and "—".
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from arches.provenance import LIBRARIES, device_info, provenance

MISSING = "—"
NAMES_SHOWN = 6  # runs named per group before "and N more"


# ---------------------------------------------------------------- recording


def evaluation_provenance(model, batch_size: Any) -> dict:
    """What scored: the code and libraries, the device and dtype of `model` (a
    harness.lm.model.ArchesLM) and its batch size (asked for, and used where `auto` chose it)."""
    weights = next(model.model.parameters()).device
    used = batch_size if isinstance(batch_size, int) else model.batch_sizes.get(0)  # what `auto` chose
    return {
        **provenance(),
        "device": device_info(weights.type, str(model.dtype), count=1, index=weights.index or 0),
        "batch_size": batch_size,
        "batch_size_used": used,
    }


def sample_counts(n_samples: dict, logged: int) -> dict:
    """{n, n_available} from lm-eval's `results["n-samples"][task]` ({"original", "effective"}):
    the examples scored (after eval.limit) and those the task holds."""
    return {"n": n_samples.get("effective", logged), "n_available": n_samples.get("original")}


# ---------------------------------------------------------------- n per score


def _count(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if math.isfinite(number) else None


def n_text(n: Any, available: Any) -> str:
    """'100 of 497', 'all 497', '100' (the task's size unrecorded) or '—' (n unrecorded)."""
    n, available = _count(n), _count(available)
    if n is None:
        return MISSING
    if available is None:
        return str(n)
    return f"all {n}" if n == available else f"{n} of {available}"


def with_n(table: pd.DataFrame, long: pd.DataFrame) -> pd.DataFrame:
    """The score table with `n` and `n_available` per (task, shots, variant): one number
    when its seeds agree (they do, unless evaluated with different limits), else each
    seed's, joined by '/'."""
    counts: dict[tuple, tuple[list, list]] = {}
    if len(long):
        per_run = long.drop_duplicates(["task", "shots", "run_name"])
        for row in per_run.itertuples(index=False):
            seen = counts.setdefault((row.task, int(row.shots), row.variant), ([], []))
            seen[0].append(_count(row.n))
            seen[1].append(_count(row.n_available))

    def joined(values: list) -> Any:
        distinct = list(dict.fromkeys(values))
        if len(distinct) == 1:
            return distinct[0]
        return "/".join(MISSING if v is None else str(v) for v in distinct)

    def column(values: list) -> Any:
        # counts stay integers next to missing ones (a plain column would make 100 into 100.0)
        return pd.array(values, dtype="Int64") if all(v is None or isinstance(v, int) for v in values) else values

    table = table.copy()
    keys = [(t, int(s), v) for t, s, v in zip(table["task"], table["shots"], table["variant"])]
    table["n"] = column([joined(counts[k][0]) if k in counts else None for k in keys])
    table["n_available"] = column([joined(counts[k][1]) if k in counts else None for k in keys])
    return table


def n_column(display: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """The human scores table with an `n` column after `chance`: how many examples each
    row's scores are over ('100 of 497'), per variant where the variants differ."""
    texts: dict[tuple, dict[str, str]] = {}
    for row in table.itertuples(index=False):
        if isinstance(row.n, str) or isinstance(row.n_available, str):  # seeds that differ: "100/200"
            text = str(row.n) + ("" if row.n_available is None else f" of {row.n_available}")
        else:
            text = n_text(row.n, row.n_available)
        texts.setdefault((row.task, int(row.shots)), {})[row.variant] = text
    column = []
    for task, shots in zip(display["task"], display["shots"]):
        by_variant = texts.get((task, int(shots)), {})
        distinct = set(by_variant.values())
        if len(distinct) <= 1:
            column.append(next(iter(distinct), MISSING))
        else:
            column.append("; ".join(f"{variant} {text}" for variant, text in by_variant.items()))
    display = display.copy()
    display.insert(list(display.columns).index("chance") + 1, "n", column)
    return display


# ---------------------------------------------------------------- the report header


def code_text(record: dict) -> str:
    commit = record.get("git_commit")
    dirty = ", dirty" if record.get("git_dirty") else ""
    source = f"commit `{str(commit)[:12]}`{dirty}" if commit else "no git commit"
    return f"arches {record.get('arches_version') or MISSING}, {source}"


def libraries_text(record: dict) -> str:
    libraries = record.get("libraries") or {}
    shown = [f"{name} {libraries.get(name) or MISSING}" for name in LIBRARIES]
    return ", ".join(shown + [f"Python {record.get('python') or MISSING}"])


def device_text(device: dict | None, fallback: dict | None = None) -> str | None:
    """'cuda NVIDIA H200 × 4, CUDA 12.4, bf16-mixed'; from an old record's `device` and
    `precision` (no provenance) what they say; None when nothing is recorded."""
    if not device:
        fallback = fallback or {}
        if not fallback.get("device"):
            return None
        return f"{fallback['device']}, dtype {fallback.get('precision') or MISSING}"
    name = device.get("name") or MISSING
    count = f" × {device['count']}" if (device.get("count") or 1) > 1 else ""
    parts = [f"{device.get('kind')} ({name}){count}"]
    if device.get("cuda"):
        parts.append(f"CUDA {device['cuda']}")
    parts.append(f"dtype {device.get('dtype') or MISSING}")
    return ", ".join(parts)


def _attempts(run: dict) -> list[dict]:
    """Every provenance a run's training ran under: each change between attempts, else the one."""
    history = [step.get("provenance") or {} for step in run.get("provenance_history") or []]
    return history or ([run["provenance"]] if run.get("provenance") else [])


def _evaluations(run: dict) -> list[dict]:
    return [entry["provenance"] for entry in (run.get("evals") or {}).values() if entry.get("provenance")]


def _names(names: list[str]) -> str:
    names = list(dict.fromkeys(names))
    shown = ", ".join(f"`{name}`" for name in names[:NAMES_SHOWN])
    return shown + (f" and {len(names) - NAMES_SHOWN} more" if len(names) > NAMES_SHOWN else "")


def _grouped(pairs: list[tuple[str | None, str]]) -> str:
    """One text when every run agrees, else each text with the runs it holds for."""
    groups: dict[str, list[str]] = {}
    for text, name in pairs:
        groups.setdefault(text or "not recorded", []).append(name)
    if len(groups) == 1:
        return next(iter(groups))
    return "differ between runs: " + "; ".join(f"{text} ({_names(names)})" for text, names in groups.items())


def header_blocks(runs: list[dict]) -> list[tuple[str, Any]]:
    """The report's provenance section: the code, libraries and device of each run's
    training and evaluation (the runs named where they differ), and the report's own code."""
    training = {r["run_name"]: _attempts(r) for r in runs}
    evaluation = {r["run_name"]: _evaluations(r) for r in runs if r.get("evals")}
    items = []
    for label, text_of in (("arches", code_text), ("libraries", libraries_text)):
        texts = {}
        for phase, records in (("training", training), ("evaluation", evaluation)):
            if records:
                pairs = [(text_of(p), name) for name, ps in records.items() for p in ps]
                texts[phase] = _grouped(pairs + [(None, name) for name, ps in records.items() if not ps])
        if len(set(texts.values())) == 1:  # the usual case: one line
            items.append(f"**{label} ({' and '.join(texts)})**: {next(iter(texts.values()))}")
        else:
            items += [f"**{label} ({phase})**: {text}" for phase, text in texts.items()]
    pairs = [(device_text(p.get("device")), name) for name, ps in training.items() for p in ps]
    pairs += [(device_text(None, r), r["run_name"]) for r in runs if not training[r["run_name"]]]
    items.append(f"**device (training)**: {_grouped(pairs)}")
    if evaluation:
        pairs = [(_eval_device_text(p), name) for name, ps in evaluation.items() for p in ps]
        pairs += [(None, name) for name, ps in evaluation.items() if not ps]
        items.append(f"**device (evaluation)**: {_grouped(pairs)}")
    resumed = [r["run_name"] for r in runs if len(r.get("provenance_history") or []) > 1]
    if resumed:
        items.append(f"**resumed under other code or device**: {_names(resumed)} (see provenance_history in run.json)")
    items.append(f"**this report** (its statistics): {code_text(provenance())}")
    return [("h2", "Provenance"), ("ul", items)]


def _eval_device_text(record: dict) -> str | None:
    text = device_text(record.get("device"))
    if text is None:
        return None
    used, asked = record.get("batch_size_used"), record.get("batch_size")
    batch = f"{asked} ({used})" if used is not None and str(used) != str(asked) else str(asked)
    return f"{text}, batch size {batch}"
