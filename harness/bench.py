"""`arches bench`: the speed table of issue #8, and the JSON behind it.

    arches bench [--quick] [arch=gpt,llama,bert,t5,glm] [size=small] [bench.<key>=<value> ...]

On a machine with no GPU it measures the embedded default's scale instead
(sweeps/bench/cpu.yaml: size tiny, 8 x 256 tokens, vocabulary 8192).

For each preset, `arches.bench` times our training step and its transformers twin's
(or, for GLM, this harness's decoder's) and each family's scorer. Here, for the
reference decoder (`bench.reference`, gpt), eval scoring is also timed end to end
through lm-eval's `simple_evaluate`: model `arches` on a run folder against lm-eval's
own `hf` backend on the same weights (exported with `arches export-hf`), on a
synthetic multiple-choice task written as a local lm-eval task. Everything goes into
one JSON file (`bench.output`, default `<results_dir>/bench/<timestamp>.json`).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from arches import registry
from arches.bench.preset import build_model, speed_settings
from arches.bench.run import benchmark
from arches.bench.settings import Settings
from arches.bench.synthetic import multiple_choice_set, synthetic_tokenizer
from arches.bench.twin import has_twin, transformers_missing
from arches.config import compose, expand_grid, group_choices
from arches.errors import UserError, unknown
from arches.train.run_folder import write_json

USAGE = "usage: arches bench [--quick] [arch=gpt,llama,...] [size=<size>] [bench.<key>=<value> ...]"
DEFAULT_SIZE = "small"  # issue #8's targets are at `small`
QUICK_SIZE = "debug"
CPU_SIZE = "tiny"  # the embedded default's size: sweeps/bench/cpu.yaml, where no GPU is visible
TASK = "arches_bench_choice"


# --------------------------------------------------------------------------- the command line


def parse(argv: list[str]) -> tuple[list[str] | None, str | None, str, list[str]]:
    """argv -> (presets or None, size or None, bench config name, the other overrides)."""
    quick, presets, size, group, rest = False, None, None, None, []
    for arg in argv:
        if arg in ("--quick", "-q"):
            quick = True
        elif arg.startswith("-"):
            raise UserError(f"unknown option {arg}; {USAGE}")
        elif "=" not in arg:
            raise UserError(f"'{arg}' is not key=value; {USAGE}")
        else:
            key, value = arg.split("=", 1)
            key = key.lstrip("+~")
            if key == "arch":  # the presets in the order of the grid `train -m` and `tune -m` expand
                presets = [job[0].split("=", 1)[1] for job in expand_grid([arg]) if not job[0].endswith("=")]
                if not presets:
                    raise UserError(f"arch= names no preset; e.g. arch=gpt,bert; valid: {', '.join(group_choices('arch'))}")
                for preset in presets:
                    if preset not in group_choices("arch"):
                        raise unknown("preset", preset, group_choices("arch"))
            elif key == "size":
                if "," in value:
                    raise UserError(f"size={value}: one size at a time")
                size = value
            elif key == "bench":
                group = value
            else:
                if key == "bench.quick" and value.lower() in ("true", "1", "yes"):
                    quick = True
                rest.append(arg)
    group = group or ("quick" if quick else "default" if torch.cuda.is_available() else "cpu")
    if size is None and (quick or group == "quick"):
        size = QUICK_SIZE
    if size is None and group == "cpu":
        size = CPU_SIZE
    return presets, size, group, rest


def bench_command(argv: list[str]) -> None:
    from rich.console import Console

    console = Console(log_path=False)
    if not console.is_terminal:  # a log or a pipe: keep the table's rows whole
        console = Console(width=160, log_path=False)
    record, path = run_bench(argv, progress=lambda message: console.log(message))
    console.print(table(record))
    if record.get("lm_eval"):
        console.print(lm_eval_table(record["lm_eval"]))
    for note in record["notes"]:
        console.print(f"note: {note}")
    print(path)


# --------------------------------------------------------------------------- the benchmark


def run_bench(argv: list[str], progress=lambda message: None) -> tuple[dict, Path]:
    """Parse, compose, measure, write the JSON: (record, its path)."""
    presets, size_name, group, rest = parse(argv)
    size_name = size_name or DEFAULT_SIZE
    base = [f"size={size_name}", f"+bench={group}", *rest]
    cfg = compose(base)
    settings = Settings.from_config(cfg.bench, cfg.train)
    names = list(dict.fromkeys(presets or settings.presets))
    if not names:
        raise UserError("no preset to measure: bench.presets is empty and arch= names none; e.g. arch=gpt,bert")
    for name in [*names, settings.reference]:
        if name not in group_choices("arch"):
            raise unknown("preset", name, group_choices("arch"))
    composed = {name: compose([f"arch={name}", *base]) for name in dict.fromkeys([*names, settings.reference])}
    chosen = {name: (registry.plain(composed[name].arch), registry.plain(composed[name].size)) for name in names}
    reference = (registry.plain(composed[settings.reference].arch), registry.plain(composed[settings.reference].size))
    for name, (arch, size) in chosen.items():  # every model fits its window, before anything runs
        seq_len = settings.shape(arch["family"]).seq_len
        speed_settings(registry.model_config(arch, size, settings.vocab_size, seq_len), settings)
        if not has_twin(name, arch) and name != settings.reference:
            speed_settings(registry.model_config(reference[0], reference[1], settings.vocab_size, seq_len), settings)
    stamp = time.strftime("%Y%m%d-%H%M%S") + ("-quick" if settings.quick else "")
    output = Path(settings.output) if settings.output else Path(cfg.results_dir) / "bench" / f"{stamp}.json"

    started = time.perf_counter()
    record: dict[str, Any] = {"meta": {}, "presets": {}, "notes": [], "lm_eval": None}

    def save(measured: dict, complete: bool = False) -> None:
        record["meta"] = machine(settings) | {
            "size": size_name,
            "presets": names,
            "reference": settings.reference,
            "settings": registry.plain(cfg.bench),
            "peak_tflops": measured["peak_tflops"],
            "peak_source": measured["peak_source"],
            "memory": measured["memory"],
            "tokens": "window tokens per step (batch_size x seq_len), as `arches train` counts them",
            "seconds": time.perf_counter() - started,
            "complete": complete,  # false while running: a run cut short keeps what it measured
        }
        record["presets"] = measured["presets"]
        record["notes"] = list(measured["notes"])
        write_json(output, record)

    measured = benchmark(settings, chosen, reference, progress, on_row=save)
    if settings.eval.enabled and settings.eval.lm_eval:
        missing = transformers_missing() if settings.hf else "bench.hf=false"
        if missing:
            measured["notes"].append(f"lm-eval comparison skipped: {missing}")
        else:
            progress(f"lm-eval simple_evaluate: arches vs hf on arches {settings.reference}")
            record["lm_eval"] = lm_eval_comparison(settings, *reference)
    save(measured, complete=True)
    return record, output


def machine(settings: Settings) -> dict:
    import platform

    info: dict[str, Any] = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "device": settings.device,
        "device_name": torch.cuda.get_device_name(settings.device) if settings.on_gpu else cpu_name() or platform.machine(),
        "precision": settings.precision,
        "compile": settings.compile,
        "compile_hf": settings.compile_hf,
        "fused_adamw": settings.fused_adamw,
        "quick": settings.quick,
        "torch": torch.__version__,
        "cpu_threads": torch.get_num_threads(),
    }
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:
        info["transformers"] = None
    return info


def cpu_name() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


# --------------------------------------------------------------------------- lm-eval end to end


def write_run_folder(folder: Path, model, arch: dict, tokenizer) -> Path:
    """The smallest run folder ArchesLM and export-hf accept: weights, model.json,
    tokenizer.json and a run.json recording the tokenizer's hash."""
    from arches.data.tokenizer import tokenizer_hash
    from arches.train.record import RunRecord, write_record
    from arches.train.run_folder import TOKENIZER_FILE, save_checkpoint

    folder.mkdir(parents=True)
    tokenizer.save(str(folder / TOKENIZER_FILE))
    record = RunRecord(status="completed", family=arch["family"], preset=arch.get("name"),
                       tokenizer_hash=tokenizer_hash(tokenizer), extra={"note": "written by arches bench"})  # fmt: skip
    write_record(folder, record)
    # the bench's random weights stand for a model trained on its whole context, as hf assumes
    save_checkpoint(folder, model, arch["family"], arch, model.cfg, {"input": model.cfg.max_len})
    return folder


def write_task(folder: Path, examples: list[dict]) -> Path:
    """A local lm-eval multiple-choice task over `examples` (the BIG-bench layout:
    query, choices, gold), loaded by the bundled loader copied beside it."""
    import yaml

    import harness.tasks

    folder.mkdir(parents=True)
    shutil.copy(Path(harness.tasks.__file__).parent / "loader.py", folder / "loader.py")
    for split, rows in (("test", examples), ("train", examples[:1])):
        (folder / f"{TASK}.{split}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    config = {
        "task": TASK,
        "dataset_kwargs": {"arches_task": TASK},
        "output_type": "multiple_choice",
        "training_split": "train",
        "test_split": "test",
        "fewshot_split": "train",
        "doc_to_text": "query",
        "doc_to_choice": "choices",
        "doc_to_target": "gold",
        "target_delimiter": "",  # the choices carry their leading space
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
        "metadata": {"version": 1.0},
    }
    text = "custom_dataset: !function loader.load_local_task\n" + yaml.safe_dump(config, sort_keys=False)
    (folder / f"{TASK}.yaml").write_text(text, encoding="utf-8")
    return folder


def lm_eval_comparison(settings: Settings, arch: dict, size: dict) -> dict:
    """One synthetic multiple-choice task through `lm_eval.simple_evaluate`, end to end
    (model loading included): lm-eval's `hf` backend on the exported weights, then
    `arches` on the run folder. Same weights, same requests, same batch size."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    import harness.lm.model  # noqa: F401  (registers the `arches` model)
    from arches.interop import export_hf

    tokenizer = synthetic_tokenizer(settings)
    examples = multiple_choice_set(settings)
    model = build_model(arch, size, settings).cpu().eval()
    dtype = "bfloat16" if settings.precision == "bf16" else "float32"
    backends = {
        "hf": lambda run, hf: {"pretrained": str(hf), "dtype": dtype},
        "arches": lambda run, hf: {"run": str(run), "dtype": dtype, "cache": False},
    }
    results: dict[str, Any] = {"task": TASK, "preset": arch.get("name"), "requests": len(examples) * settings.eval.choices,
                               "batch_size": settings.eval.batch_size}  # fmt: skip
    quiet = [logging.getLogger(name) for name in ("lm_eval", "lm-eval", "transformers", "datasets")]
    levels = [logger.level for logger in quiet]
    workdir = Path(tempfile.mkdtemp(prefix="arches-bench-"))
    stack = contextlib.ExitStack()
    try:
        for logger in quiet:
            logger.setLevel(logging.ERROR)
        # lm-eval's and transformers' progress bars go to stderr; the table is the output
        stack.enter_context(contextlib.redirect_stderr(io.StringIO()))
        run = write_run_folder(workdir / "run", model, arch, tokenizer)
        hf = export_hf(run, workdir / "hf")
        del model
        manager = TaskManager(include_path=[str(write_task(workdir / "tasks", examples))], include_defaults=False)
        for backend, model_args in backends.items():
            start = time.perf_counter()
            out = lm_eval.simple_evaluate(
                model=backend, model_args=model_args(run, hf), tasks=[TASK], task_manager=manager, num_fewshot=0,
                batch_size=settings.eval.batch_size, device=settings.device, bootstrap_iters=0,
                random_seed=settings.seed, numpy_random_seed=settings.seed, torch_random_seed=settings.seed,
                fewshot_random_seed=settings.seed,
            )  # fmt: skip
            seconds = time.perf_counter() - start
            results[backend] = {
                "seconds": seconds,
                "requests_per_s": results["requests"] / seconds,
                "acc": out["results"][TASK].get("acc,none"),
            }
    finally:
        stack.close()
        for logger, level in zip(quiet, levels):
            logger.setLevel(level)
        shutil.rmtree(workdir, ignore_errors=True)
    results["ratio"] = results["arches"]["requests_per_s"] / results["hf"]["requests_per_s"]
    return results


# --------------------------------------------------------------------------- the table


def _count(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    for unit, scale in (("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.1f}{unit}"
    return f"{value:.1f}" if abs(value) < 100 else f"{value:.0f}"


def _bytes(value: int | None) -> str:
    if value is None:
        return "-"
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20)):
        if value >= scale:
            return f"{value / scale:.1f} {unit}"
    return f"{value / 1024:.0f} KiB"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def table(record: dict):
    """Ours against the transformers twin (or the reference decoder), per preset."""
    from rich.table import Table

    meta = record["meta"]
    peak = meta["peak_tflops"]
    peak_text = f"{peak:.0f} TFLOP/s" if peak >= 1 else f"{peak * 1e3:.1f} GFLOP/s"
    scored = next((row["scoring"]["requests"] for row in record["presets"].values() if row.get("scoring")), None)
    result = Table(
        title=f"arches bench: {meta['device_name'] or meta['device']} ({meta['device']}), {meta['precision']}, size {meta['size']}",
        caption=f"tokens/s of window tokens; MFU against {peak_text} ({meta['peak_source']}); memory: {meta['memory']}"
        + (f"; score: the family's scorer on {scored} requests" if scored else ""),
    )
    for column in ("preset", "batch", "tok/s", "MFU", "memory", "baseline", "tok/s ", "MFU ", "memory ", "ours/base", "score req/s"):
        result.add_column(column, justify="left" if column in ("preset", "baseline", "batch") else "right", no_wrap=True)
    for name, row in record["presets"].items():
        ours, base = row["ours"], row.get("baseline") or {}
        result.add_row(
            name,
            f"{row['batch_size']}x{row['seq_len']}",
            _count(ours["tokens_per_s"]),
            _percent(ours["mfu"]),
            _bytes(ours["peak_memory_bytes"]),
            base.get("name", "-").replace("transformers ", "HF "),
            _count(base.get("tokens_per_s")),
            _percent(base.get("mfu")),
            _bytes(base.get("peak_memory_bytes")),
            "-" if row["ratio"] is None else f"{row['ratio']:.2f}x",
            _count((row.get("scoring") or {}).get("requests_per_s")),
        )
    return result


def lm_eval_table(comparison: dict):
    from rich.table import Table

    result = Table(
        title=f"lm-eval simple_evaluate: arches {comparison['preset']}",
        caption=f"{comparison['requests']} requests, batch {comparison['batch_size']}, same weights",
    )
    for column in ("backend", "seconds", "requests/s", "acc"):
        result.add_column(column, justify="left" if column == "backend" else "right")
    for backend in ("hf", "arches"):
        entry = comparison[backend]
        result.add_row(backend, f"{entry['seconds']:.2f}", f"{entry['requests_per_s']:.1f}", f"{entry['acc']:.3f}")
    result.add_row("arches/hf", "", f"{comparison['ratio']:.2f}x", "")
    return result
