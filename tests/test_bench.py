"""`arches bench --quick` end to end on a CPU (issue #8): every default preset is
measured against its transformers twin (GLM against this harness's decoder), the
twin computes the same loss from the same weights, FLOPs are counted and agree with
the analytic count, each family's scorer is timed, lm-eval's `simple_evaluate` runs
with `arches` and with its own `hf` backend on the same weights, and the JSON is
written and parses. Timings are never asserted: only that they exist and are sane.
Bad input is one line and exit code 2.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch
from rich.console import Console

from arches.bench import run as bench_run
from arches.bench.settings import Settings
from arches.config import compose, group_choices
from arches.errors import UserError
from harness import bench

TWINS = {"gpt": "GPT2LMHeadModel", "llama": "LlamaForCausalLM", "bert": "BertForMaskedLM", "t5": "T5ForConditionalGeneration"}


@pytest.fixture(scope="module")
def quick(tmp_path_factory) -> tuple[dict, object]:
    """One `arches bench --quick` (the default presets), on one thread: two cores are shared."""
    results = tmp_path_factory.mktemp("bench") / "results"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        record, path = bench.run_bench(["--quick", f"results_dir={results}"])
    finally:
        torch.set_num_threads(threads)
    return record, path


def finite_positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_every_default_preset_is_measured_against_its_baseline(quick) -> None:
    record, _ = quick
    defaults = list(compose(["+bench=default"]).bench.presets)
    assert defaults == ["gpt", "llama", "bert", "t5", "glm"]
    assert list(record["presets"]) == defaults
    for name, row in record["presets"].items():
        for side in ("ours", "baseline"):
            result = row[side]
            assert finite_positive(result["tokens_per_s"]), (name, side)
            assert finite_positive(result["step_s"]), (name, side)
            assert finite_positive(result["mfu"]), (name, side)
            assert math.isfinite(result["loss"])
            assert result["peak_memory_bytes"] is None or result["peak_memory_bytes"] > 0
        # the speed switches `arches train` applies (train.*), where this harness has them
        assert row["ours"]["speed"] is None or row["ours"]["speed"]["attention_backend"] == "auto"
        assert finite_positive(row["ratio"])
        assert row["ratio"] == pytest.approx(row["ours"]["tokens_per_s"] / row["baseline"]["tokens_per_s"])
        assert row["tokens_per_step"] == row["batch_size"] * row["seq_len"]
    for name, hf_class in TWINS.items():
        assert record["presets"][name]["baseline"]["name"] == f"transformers {hf_class}"
    assert record["presets"]["glm"]["baseline"]["name"] == "arches gpt", "GLM is compared with the harness's own decoder"
    assert record["notes"] == []
    assert record["meta"]["complete"] is True and record["meta"]["size"] == "debug" and record["meta"]["device"] == "cpu"
    assert finite_positive(record["meta"]["peak_tflops"])


def test_the_transformers_twin_computes_the_same_loss(quick) -> None:
    """Same weights (arches.interop's export mapping), same batch, fp32: the same first loss."""
    record, _ = quick
    for name in TWINS:
        row = record["presets"][name]
        assert row["baseline"]["loss"] == pytest.approx(row["ours"]["loss"], abs=1e-4), name


def test_counted_flops_agree_with_the_analytic_count(quick) -> None:
    """torch's flop counter on one step against the family's own flops_per_token: a loose
    factor, as the step pads its batch to the longest example, which the per-example
    analytic count leaves out (tests/test_flops.py checks the count exactly)."""
    record, _ = quick
    for name, row in record["presets"].items():
        counted, analytic = row["ours"]["flops_per_step"], row["analytic_flops_per_step"]
        assert counted > 0 and analytic > 0
        assert 0.5 < counted / analytic < 2.0, (name, counted, analytic)
        if name in TWINS:  # the same function: nearly the same FLOPs
            assert 0.7 < row["baseline"]["flops_per_step"] / counted < 1.4, name


def test_every_family_scorer_is_timed(quick) -> None:
    record, _ = quick
    settings = compose(["+bench=quick"]).bench.eval
    for name, row in record["presets"].items():
        scoring = row["scoring"]
        assert scoring["requests"] == settings.questions * settings.choices
        assert finite_positive(scoring["requests_per_s"]) and scoring["finite"], name


def test_lm_eval_runs_both_backends_on_the_same_weights(quick) -> None:
    record, _ = quick
    comparison = record["lm_eval"]
    settings = compose(["+bench=quick"]).bench.eval
    assert comparison["preset"] == "gpt" and comparison["requests"] == settings.questions * settings.choices
    for backend in ("hf", "arches"):
        assert finite_positive(comparison[backend]["requests_per_s"])
        assert comparison[backend]["acc"] is not None
    # the same weights score the same questions alike (a tie may fall either way)
    assert abs(comparison["hf"]["acc"] - comparison["arches"]["acc"]) <= 1 / settings.questions + 1e-9
    assert finite_positive(comparison["ratio"])


def test_the_json_is_written_atomically_and_parses(quick) -> None:
    record, path = quick
    assert path.parent.name == "bench" and path.suffix == ".json"
    assert json.loads(path.read_text()) == json.loads(json.dumps(record, default=str))
    assert [p.name for p in path.parent.iterdir()] == [path.name], "no temporary file is left behind"


def test_the_table_shows_every_preset_and_ratio(quick) -> None:
    record, _ = quick
    console = Console(record=True, width=200)
    console.print(bench.table(record))
    console.print(bench.lm_eval_table(record["lm_eval"]))
    text = console.export_text()
    for name, row in record["presets"].items():
        assert name in text and f"{row['ratio']:.2f}x" in text
    assert "HF GPT2LMHeadModel" in text and "arches/hf" in text


def test_without_transformers_the_hf_column_is_skipped_with_a_note(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(bench_run, "transformers_missing", lambda: "transformers is not installed")
    monkeypatch.setattr(bench, "transformers_missing", lambda: "transformers is not installed")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        record, _ = bench.run_bench(["--quick", "arch=llama,glm", "bench.eval.questions=1", f"results_dir={tmp_path}"])
    finally:
        torch.set_num_threads(threads)
    assert record["presets"]["llama"]["baseline"] is None and record["presets"]["llama"]["ratio"] is None
    assert record["presets"]["glm"]["baseline"]["name"] == "arches gpt", "the reference needs no transformers"
    assert record["lm_eval"] is None
    assert any("transformers is not installed" in note for note in record["notes"])
    console = Console(record=True, width=200)
    console.print(bench.table(record))
    assert "llama" in console.export_text()


def test_parse_reads_presets_size_and_quick() -> None:
    assert bench.parse(["--quick"]) == (None, "debug", "quick", [])
    here = "default" if torch.cuda.is_available() else "cpu"  # a CPU measures the demo's scale
    assert bench.parse(["arch=gpt,glm", "size=tiny", "bench.steps=3"]) == (["gpt", "glm"], "tiny", here, ["bench.steps=3"])
    assert bench.parse([])[1:3] == ((None, "default") if torch.cuda.is_available() else ("tiny", "cpu"))
    assert bench.parse(["bench=default"])[1:3] == (None, "default"), "bench= chooses the GPU shapes on a CPU too"
    assert bench.parse(["bench.quick=true"])[1:3] == ("debug", "quick")
    assert bench.parse(["bench=quick", "size=tiny"])[1:3] == ("tiny", "quick")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["arch=gpt,nope"], "unknown preset 'nope'"),
        (["bench.steps=0"], "bench.steps=0 must be an integer >= 1"),
        (["bench.warmup=0"], "bench.warmup=0 must be an integer >= 1"),
        (["bench.shapes.decoder.batch_size=0"], "bench.shapes.decoder.batch_size=0"),
        (["bench.precision=fp8"], "bench.precision='fp8' is not valid"),
        (["bench.device=tpu"], "bench.device='tpu' is not valid"),
        (["bench.peak_tflops=-1"], "bench.peak_tflops=-1"),
        (["bench.vocab_size=100"], "bench.vocab_size=100 must be an integer >= 363"),
        (["bench.nope=1"], "bad override"),
        (["bench=nope"], "unknown bench 'nope'"),
        (["bench.shapes.decoder.seq_len=4096"], "max_len"),
        (["--fast"], "unknown option --fast"),
        (["size=tiny,small"], "one size at a time"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message, capsys) -> None:
    from arches.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["bench", "--quick", *args])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("arches: error: ") and message in err, err


def test_the_training_speed_switches_are_checked_before_anything_runs(capsys) -> None:
    from arches.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["bench", "--quick", "arch=glm", "train.attention_backend=nope"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "train.attention_backend='nope'" in err, err


def test_bad_input_exits_2_from_a_real_process() -> None:
    done = subprocess.run([sys.executable, "-m", "arches.cli", "bench", "--quick", "arch=gtp"],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == ["arches: error: unknown preset 'gtp'; valid: "
                                                + ", ".join(group_choices("arch")) + ". Did you mean 'gpt'?"]  # fmt: skip


def test_a_gpu_device_without_a_gpu_is_refused() -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    with pytest.raises(UserError, match="no GPU is visible"):
        Settings.from_config(dict(compose(["+bench=default"]).bench, device="cuda"))
