"""harness/gpu_summary.py's table on a check's output folder (a bench.json shaped like the one
`arches bench --quick` writes, a pytest junit XML), its one-line refusals, and
harness/gpu_check.sh's dry run on this CPU, end to end (about 50 s on two cores)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from harness import gpu_summary

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "harness" / "gpu_check.sh"


def preset_row(family: str, tokens_per_s: float, mfu: float, baseline: str, ratio: float | None) -> dict:
    """One preset of bench.json as arches.bench.run writes it (the keys the summary reads and some it does not)."""
    ours = {"kind": "arches", "tokens_per_s": tokens_per_s, "mfu": mfu, "step_s": 0.1, "peak_memory_bytes": 1 << 30,
            "compiled": True, "loss": 10.4,
            "speed": {"attention_backend": "auto", "loss_chunk_size": None}}  # fmt: skip
    base = None if ratio is None else {"kind": "transformers", "name": baseline, "tokens_per_s": tokens_per_s / ratio,
                                       "mfu": mfu / ratio, "peak_memory_bytes": 1 << 30}  # fmt: skip
    return {"family": family, "batch_size": 32, "seq_len": 1024, "tokens_per_step": 32768, "parameters": 124_000_000,
            "ours": ours, "baseline": base, "ratio": ratio,
            "scoring": {"requests": 1600, "requests_per_s": 900.0, "format": "causal", "finite": True}}  # fmt: skip


def fake_bench() -> dict:
    # t5 is missing (a bench cut short), so its target is not measured
    presets = {
        "gpt": preset_row("decoder", 400_000.0, 0.61, "transformers GPT2LMHeadModel", 2.5),
        "llama": preset_row("decoder", 300_000.0, 0.50, "transformers LlamaForCausalLM", 2.0),
        "bert": preset_row("encoder", 500_000.0, 0.40, "transformers BertForMaskedLM", 1.2),
        "glm": preset_row("glm", 360_000.0, 0.55, "arches gpt", 0.9),
    }
    meta = {"device": "cuda", "device_name": "NVIDIA H200", "precision": "bf16", "size": "small", "complete": False,
            "presets": ["gpt", "llama", "bert", "t5", "glm"], "peak_tflops": 792.0, "torch": "2.13.0"}  # fmt: skip
    lm_eval = {"task": "arches_bench_choice", "preset": "gpt", "requests": 1600, "ratio": 3.4,
               "hf": {"seconds": 3.4, "requests_per_s": 470.6},
               "arches": {"seconds": 1.0, "requests_per_s": 1600.0}}  # fmt: skip
    return {"meta": meta, "presets": dict(sorted(presets.items())), "notes": [], "lm_eval": lm_eval}


JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites name="pytest tests"><testsuite name="pytest" errors="1"
failures="2" skipped="3" tests="24" time="150.2"><testcase classname="tests.test_gpu" name="test_x" time="1.0"/>
</testsuite></testsuites>"""


def table_rows(text: str, header: str) -> dict[str, list[str]]:
    """The rows of the printed table under `header` (its first word), keyed by their first cell."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:1] == [header])
    rows = {}
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        cells = [cell for cell in line.split("  ") if cell.strip()]
        rows[cells[0].strip()] = [cell.strip() for cell in cells[1:]]
    return rows


def test_the_table_marks_each_target_met_missed_or_not_measured(tmp_path, capsys):
    (tmp_path / "bench.json").write_text(json.dumps(fake_bench()))
    (tmp_path / "gpu_tests.xml").write_text(JUNIT)
    stages = ["install=0:1.5", "tests=1:120.2", "compare=124:150.0", "bench=0:200.5"]
    assert gpu_summary.main([str(tmp_path), *stages]) == 0
    text = capsys.readouterr().out

    stage_rows = table_rows(text, "stage")
    assert stage_rows["install"] == ["ok", "1.5"]
    assert stage_rows["tests"] == ["failed (1)", "120.2", "18 passed, 2 failed, 1 errors, 3 skipped"]
    assert stage_rows["compare"] == ["timed out", "150.0"]
    assert "cut short" in text  # meta.complete is false
    bench_rows = table_rows(text, "preset")
    assert list(bench_rows) == ["gpt", "llama", "bert", "glm"]  # the order the bench ran them, not the JSON's
    assert bench_rows["gpt"] == ["400,000", "61.0%", "2.50x", "transformers GPT2LMHeadModel"]

    results = {label: cells[-1] for label, cells in table_rows(text, "target").items()}
    assert results == {
        "gpt MFU >= 55%": "met", "llama MFU >= 55%": "missed", "gpt tokens/s >= 2.2x HF GPT-2": "met",
        "bert tokens/s >= 1.3x HF BERT": "missed", "t5 tokens/s >= 3x HF T5": "not measured",
        "glm tokens/s within 15% of the decoder": "met", "GPU scoring >= 3x lm-eval's hf backend": "met",
    }  # fmt: skip
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["ok"] is False and summary["stages"]["compare"] == {"status": 124, "seconds": 150.0}
    assert summary["tests"] == {"tests": 24, "failures": 2, "errors": 1, "skipped": 3, "passed": 18}
    assert {t["target"]: t["measured"] for t in summary["targets"]}["bert tokens/s >= 1.3x HF BERT"] == 1.2


def test_a_dry_runs_folder_counts_the_collected_tests_and_measures_no_target(tmp_path, capsys):
    (tmp_path / "gpu_tests.txt").write_text("tests/test_gpu.py::test_a\n\n24 tests collected in 2.11s\n")
    assert gpu_summary.main([str(tmp_path), "--dry-run", "tests=0:3.6", "bench=skipped:0"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("gpu_check --dry-run")
    assert table_rows(text, "stage")["tests"] == ["ok", "3.6", "24 collected"]
    assert table_rows(text, "stage")["bench"] == ["skipped", "0.0"]
    assert "preset" not in text  # no bench.json: no bench table
    assert {cells[-1] for cells in table_rows(text, "target").values()} == {"not measured"}
    assert json.loads((tmp_path / "summary.json").read_text())["ok"] is False  # a skipped stage is not ok


@pytest.mark.parametrize("args,message", [
    (["{out}", "tests=ok:3"], "'tests=ok:3' is not STAGE=STATUS:SECONDS"),
    (["{out}/missing", "tests=0:3"], "is not a folder"),
    ([], "usage:"),
    (["{out}", "bench=0:1"], "bench.json is not readable JSON"),
])  # fmt: skip
def test_bad_input_is_one_line_and_a_non_zero_exit(args, message, tmp_path, capsys):
    (tmp_path / "bench.json").write_text('{"meta": ')  # a file cut short
    assert gpu_summary.main([arg.format(out=tmp_path) for arg in args]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and message in captured.err and len(captured.err.strip().splitlines()) == 1


# --------------------------------------------------------------------------- harness/gpu_check.sh


def check(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    variables = {**os.environ, "OUT": str(tmp_path / "out"), "PYTHON": sys.executable,
                 "GPU_CHECK_WHEELS": str(tmp_path / "no-wheels"), "OMP_NUM_THREADS": "1", **env}  # fmt: skip
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=variables, cwd=tmp_path,
                          timeout=600)  # fmt: skip


def test_the_dry_run_runs_every_stage_on_a_cpu_and_prints_the_table(tmp_path):
    done = check(tmp_path, GPU_CHECK_DRY_RUN="1")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = tmp_path / "out"
    # the device tool brings back 8 files at most
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["gpu.txt", "gpu_tests.txt", "compare.txt", "bench.txt", "bench.json", "summary.json", "summary.txt"]
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dry_run"] is True and summary["ok"] is True
    assert list(summary["stages"]) == ["install", "tests", "compare", "bench"]
    assert all(stage["status"] == 0 and stage["seconds"] >= 0 for stage in summary["stages"].values())
    assert summary["tests"]["collected"] >= 20  # every GPU test collected, none run
    assert [row["preset"] for row in summary["bench"]["presets"]] == ["gpt", "bert", "t5", "glm"]
    assert all(row["tokens_per_s"] > 0 for row in summary["bench"]["presets"])
    assert all(target["met"] in (True, False) for target in summary["targets"])  # each one measured
    assert "report.md" in (out / "compare.txt").read_text()  # compare wrote its report
    table = done.stdout[done.stdout.index("== summary") :]
    assert table.split("\n", 1)[1] == (out / "summary.txt").read_text()
    assert table_rows(table, "stage")["compare"][0] == "ok"
    assert set(table_rows(table, "target")) == {target["target"] for target in summary["targets"]}


def test_a_spent_budget_skips_the_stages_and_fails(tmp_path):
    # 15 s is under the 15 s a stage needs as soon as anything has run: every stage is skipped
    done = check(tmp_path, "--dry-run", GPU_CHECK_BUDGET="15")
    assert done.returncode == 1
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert {name: stage["status"] for name, stage in summary["stages"].items()} == {
        "install": 0, "tests": "skipped", "compare": "skipped", "bench": "skipped"}  # fmt: skip
    assert "GPU_CHECK_BUDGET=15" in done.stderr


@pytest.mark.parametrize("args,env,message", [
    (["--bogus"], {}, "unknown option --bogus"),
    ([], {"GPU_CHECK_DRY_RUN": "yes"}, "GPU_CHECK_DRY_RUN=yes must be 0 or 1"),
    (["--dry-run"], {"BENCH_TIMEOUT": "soon"}, "BENCH_TIMEOUT=soon must be a positive number"),
])  # fmt: skip
def test_the_script_refuses_bad_input_in_one_line(args, env, message, tmp_path):
    done = check(tmp_path, *args, **env)
    assert done.returncode == 2 and message in done.stderr and len(done.stderr.strip().splitlines()) == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal where torch sees no GPU")
def test_without_dry_run_a_cpu_is_refused(tmp_path):
    done = check(tmp_path)
    assert done.returncode == 1 and "no CUDA GPU" in done.stderr and "--dry-run" in done.stderr
    assert not (tmp_path / "out" / "summary.json").exists()
