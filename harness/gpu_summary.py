"""The last word of harness/gpu_check.sh: each stage's exit status and seconds, the GPU tests'
counts, each benchmarked preset's tokens/s, MFU and ratio to its baseline, and issue 21's
targets, each met or missed, read from the check's output folder. Writes <out>/summary.json
and prints the table.

    python -m harness.gpu_summary OUT [--dry-run] STAGE=STATUS:SECONDS ...

STATUS is the stage's exit status (124: stopped by its timeout) or `skipped`."""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path
from xml.etree import ElementTree

from arches.errors import UserError

USAGE = "usage: python -m harness.gpu_summary OUT [--dry-run] STAGE=STATUS:SECONDS ..."
TIMEOUT = 124  # timeout(1)'s exit status


# (label, what is measured, the threshold it must reach). The decoders' MFU rows are added per
# decoder preset measured (gpt, llama); "glm within 15% of the decoder": its ratio to this
# harness's decoder at GLM's shape, 0.85 or more.
RATIO_TARGETS = [
    ("gpt tokens/s >= 2.2x HF GPT-2", ("presets", "gpt", "ratio"), 2.2),
    ("bert tokens/s >= 1.3x HF BERT", ("presets", "bert", "ratio"), 1.3),
    ("t5 tokens/s >= 3x HF T5", ("presets", "t5", "ratio"), 3.0),
    ("glm tokens/s within 15% of the decoder", ("presets", "glm", "ratio"), 0.85),
    ("GPU scoring >= 3x lm-eval's hf backend", ("lm_eval", "ratio"), 3.0),
]
DECODER_MFU = 0.55


def parse_stages(args: list[str]) -> dict[str, dict]:
    stages = {}
    for arg in args:
        match = re.fullmatch(r"([A-Za-z_]\w*)=(-?\d+|skipped):(\d+(?:\.\d*)?)", arg)
        if not match:
            raise UserError(f"'{arg}' is not STAGE=STATUS:SECONDS (e.g. tests=0:12.5); {USAGE}")
        name, status, seconds = match.groups()
        stages[name] = {"status": status if status == "skipped" else int(status), "seconds": float(seconds)}
    return stages


def read_json(path: Path) -> dict | None:
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise UserError(f"{path} is not readable JSON: {error}") from None


def test_counts(out: Path) -> dict | None:
    """The pytest junit XML's counts; without one (a dry run collects only), the collected count."""
    xml, log = out / "gpu_tests.xml", out / "gpu_tests.txt"
    if xml.exists():
        try:
            root = ElementTree.parse(xml).getroot()
        except ElementTree.ParseError as error:
            raise UserError(f"{xml} is not readable XML: {error}") from None
        suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
        counts = {key: sum(int(s.get(key, 0)) for s in suites) for key in ("tests", "failures", "errors", "skipped")}
        counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
        return counts
    if log.exists():
        found = re.search(r"(\d+) tests? collected", log.read_text(encoding="utf-8", errors="replace"))
        return {"collected": int(found.group(1))} if found else None
    return None


def bench_rows(bench: dict | None) -> list[dict]:
    """One row per preset, in the order the bench ran them (meta.presets; the JSON's keys are sorted)."""
    presets = (bench or {}).get("presets") or {}
    order = [name for name in ((bench or {}).get("meta") or {}).get("presets") or [] if name in presets]
    rows = []
    for name, row in ((name, presets[name]) for name in dict.fromkeys([*order, *presets])):
        ours, baseline = row.get("ours") or {}, row.get("baseline") or {}
        rows.append({"preset": name, "family": row.get("family"), "tokens_per_s": ours.get("tokens_per_s"),
                     "mfu": ours.get("mfu"), "baseline": baseline.get("name"), "ratio": row.get("ratio")})  # fmt: skip
    return rows


def _lookup(bench: dict | None, path: tuple[str, ...]) -> float | None:
    value = bench
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def targets(bench: dict | None) -> list[dict]:
    """Each target: its label, the threshold, what was measured (None: not measured) and met."""
    presets = (bench or {}).get("presets") or {}
    decoders = [name for name, row in presets.items() if row.get("family") == "decoder"] or ["gpt"]
    wanted = [(f"{name} MFU >= {DECODER_MFU:.0%}", ("presets", name, "ours", "mfu"), DECODER_MFU) for name in decoders]
    result = []
    for label, path, need in wanted + RATIO_TARGETS:
        measured = _lookup(bench, path)
        result.append({"target": label, "need": need, "measured": measured,
                       "met": None if measured is None else measured >= need})  # fmt: skip
    return result


def summarize(out: Path, stages: dict[str, dict], dry_run: bool = False) -> dict:
    if not out.is_dir():
        raise UserError(f"{out} is not a folder (the check's OUT)")
    bench = read_json(out / "bench.json")
    meta = (bench or {}).get("meta") or {}
    measured = {"device": meta.get("device_name"), "precision": meta.get("precision"), "size": meta.get("size"),
                "complete": meta.get("complete"), "presets": bench_rows(bench)}  # fmt: skip
    summary = {
        "dry_run": dry_run,
        "ok": all(stage["status"] == 0 for stage in stages.values()),
        "stages": stages,
        "tests": test_counts(out),
        "bench": None if bench is None else measured,
        "targets": targets(bench),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def _status(status: int | str) -> str:
    return {0: "ok", TIMEOUT: "timed out", "skipped": "skipped"}.get(status, f"failed ({status})")


def _number(value: float | None, form: str) -> str:
    return "-" if value is None else form.format(value)


def _grid(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows)]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in [header, *rows]]


COUNT_WORDS = [("passed", "passed"), ("failures", "failed"), ("errors", "errors"), ("skipped", "skipped")]


def render(summary: dict) -> str:
    dry = " --dry-run: the plumbing on a CPU; its figures measure nothing" if summary["dry_run"] else ""
    lines = [f"gpu_check{dry}"]
    tests = summary["tests"] or {}
    if "collected" in tests:
        notes = {"tests": f"{tests['collected']} collected"}
    else:
        notes = {"tests": ", ".join(f"{tests[key]} {word}" for key, word in COUNT_WORDS if key in tests)}
    stages = summary["stages"]
    rows = [[name, _status(s["status"]), f"{s['seconds']:.1f}", notes.get(name, "")] for name, s in stages.items()]
    lines += ["", *_grid(["stage", "status", "seconds", ""], rows)]
    bench = summary["bench"]
    if bench is not None:
        complete = "" if bench["complete"] else ", cut short: the presets measured so far"
        lines += ["", f"bench: {bench['device']}, {bench['precision']}, size {bench['size']}{complete}"]
        rows = [[row["preset"], _number(row["tokens_per_s"], "{:,.0f}"), _number(row["mfu"], "{:.1%}"),
                 _number(row["ratio"], "{:.2f}x"), row["baseline"] or "-"] for row in bench["presets"]]  # fmt: skip
        lines += _grid(["preset", "tok/s", "MFU", "ratio", "baseline"], rows)
    rows = []
    for target in summary["targets"]:
        form = "{:.1%}" if "MFU" in target["target"] else "{:.2f}x"
        result = "not measured" if target["met"] is None else "met" if target["met"] else "missed"
        rows.append([target["target"], form.format(target["need"]), _number(target["measured"], form), result])
    lines += ["", *_grid(["target", "need", "measured", "result"], rows)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    dry_run = "--dry-run" in args
    args = [arg for arg in args if arg != "--dry-run"]
    try:
        if not args or args[0].startswith("-"):
            raise UserError(USAGE)
        summary = summarize(Path(args[0]), parse_stages(args[1:]), dry_run)
    except UserError as error:
        print(f"gpu_summary: {error}", file=sys.stderr)
        return 2
    print(render(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
