"""benchmark(): every preset in turn, one model at a time. Our step, the transformers
twin's (or, for a preset without one, the reference decoder's at the same shape),
their ratio, and the scorer's requests/s."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch

from arches import registry
from arches.bench.measure import PeakMemory, free, matmul_peak_tflops
from arches.bench.preset import bench_ours, bench_scoring, bench_twin, training_batch
from arches.bench.settings import Settings, Shape
from arches.bench.synthetic import multiple_choice_set, synthetic_tokenizer
from arches.bench.twin import has_twin, transformers_missing
from arches.data.tokenizer import Specials


@dataclass
class _Context:
    """What every preset's measurement shares."""

    settings: Settings
    reference: tuple[dict, dict]
    missing: str | None  # why the HF column is skipped, or None
    peak: float
    tokenizer: object
    specials: Specials
    examples: list[dict]
    progress: Callable[[str], None]
    measured: dict[tuple[str, int, int], dict]  # our results by (preset, batch, window), reused by the reference


def benchmark(
    settings: Settings,
    presets: dict[str, tuple[dict, dict]],
    reference: tuple[dict, dict],
    progress: Callable[[str], None] = lambda message: None,
    on_row: Callable[[dict], None] = lambda partial: None,
) -> dict:
    """Every preset (name -> (arch, size)): our step, the transformers twin's (or, for a
    preset without one, the reference decoder's at the same shape), their ratio, and the
    scorer's requests/s. One model at a time, freed before the next; `on_row` sees the
    result so far after each preset (so a run cut short keeps what it measured)."""
    if settings.on_gpu:
        torch.set_float32_matmul_precision("high")  # TF32 for what runs in fp32, both columns alike
    missing = transformers_missing() if settings.hf else "bench.hf=false: the HF column is skipped"
    notes = [missing] if missing else []
    peak, peak_source = _peak(settings, progress)
    tokenizer = synthetic_tokenizer(settings)
    specials = Specials.from_tokenizer(tokenizer)
    examples = multiple_choice_set(settings) if settings.eval.enabled else []
    context = _Context(settings, reference, missing, peak, tokenizer, specials, examples, progress, measured={})
    rows: dict[str, dict] = {}
    result = {
        "peak_tflops": peak,
        "peak_source": peak_source,
        "memory": PeakMemory(settings.device).kind,
        "notes": notes,
        "presets": rows,
    }
    for name, (arch, size) in presets.items():
        row = _ours(context, name, arch, size)
        free(settings.device)  # our model is gone: the baseline's peak memory would otherwise hold it
        baseline = _baseline(context, name, arch, size)
        free(settings.device)
        if baseline is not None:
            row["baseline"] = baseline
            row["ratio"] = row["ours"]["tokens_per_s"] / baseline["tokens_per_s"]
        rows[name] = row
        on_row(result)
    return result


def _peak(settings: Settings, progress: Callable[[str], None]) -> tuple[float, str]:
    """The peak MFU divides by, and where it came from."""
    if settings.peak_tflops is not None:
        return settings.peak_tflops, "bench.peak_tflops"
    progress("measuring the matmul peak")
    return matmul_peak_tflops(settings), f"measured, {settings.precision} matmul"


def _ours(context: _Context, name: str, arch: dict, size: dict) -> dict:
    """One preset's row: our step, the model's facts and, if enabled, its scorer. The
    model lives only in this call, so it is freed when the row is returned."""
    settings, specials = context.settings, context.specials
    family = arch["family"]
    shape = settings.shape(family)
    spec = registry.family(family)
    context.progress(f"{name}: arches")
    ours, model = bench_ours(name, arch, size, settings, specials, context.peak)
    context.measured[(name, shape.batch_size, shape.seq_len)] = ours
    row = {
        "family": family,
        "batch_size": shape.batch_size,
        "seq_len": shape.seq_len,
        "tokens_per_step": shape.batch_size * shape.seq_len,
        "parameters": sum(p.numel() for p in model.parameters()),
        "analytic_flops_per_step": spec.flops_per_token(model.cfg, arch, shape.seq_len) * shape.batch_size * shape.seq_len,
        "inputs": {k: list(v.shape) for k, v in training_batch(arch, settings, specials).items()},
        "ours": ours,
        "baseline": None,
        "ratio": None,
    }
    if context.examples:
        context.progress(f"{name}: scoring")
        row["scoring"] = bench_scoring(arch, model, context.tokenizer, settings, context.examples)
    return row


def _baseline(context: _Context, name: str, arch: dict, size: dict) -> dict | None:
    """The transformers twin's step where the preset has one (None if transformers is
    missing); else, but for the reference itself, the reference's step at this shape."""
    settings = context.settings
    if has_twin(name, arch):
        if context.missing:
            return None
        context.progress(f"{name}: transformers")
        return bench_twin(name, arch, size, settings, context.specials, context.peak)
    if name == settings.reference:
        return None
    shape = settings.shape(arch["family"])
    key = (settings.reference, shape.batch_size, shape.seq_len)
    if key not in context.measured:
        context.progress(f"{name}: the reference, arches {settings.reference}")
        context.measured[key] = _reference_at(context, shape)
    return dict(context.measured[key])


def _reference_at(context: _Context, shape: Shape) -> dict:
    """Our step for the reference preset at another preset's shape."""
    settings = context.settings
    ref_arch, ref_size = context.reference
    ref_settings = dataclasses.replace(settings, shapes={**settings.shapes, ref_arch["family"]: shape})
    result, _ = bench_ours(settings.reference, ref_arch, ref_size, ref_settings, context.specials, context.peak)
    return result

