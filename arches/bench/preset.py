"""One preset: its model (seeded) with training's speed switches, its training batch,
our timed step, the transformers twin's on the same batch and weights, and the
family's scorer on the multiple-choice set."""

from __future__ import annotations

import dataclasses
import math
import time

import torch
from torch import nn

from arches import registry
from arches.bench.measure import synchronize, time_training
from arches.bench.settings import Settings
from arches.bench.synthetic import random_windows, to_device
from arches.bench.twin import transformers_batch, transformers_twin
from arches.core import stack
from arches.core.config import SpeedConfig
from arches.data.tokenizer import Specials


def build_model(arch: dict, size: dict, settings: Settings, seq_len: int | None = None) -> nn.Module:
    spec = registry.family(arch["family"])
    model_cfg = registry.model_config(arch, size, settings.vocab_size, seq_len)
    torch.manual_seed(settings.seed)
    return spec.build(model_cfg, arch).to(settings.device)


def speed_settings(model_cfg, settings: Settings) -> SpeedConfig:
    """The speed switches training applies (`train.attention_backend`, `train.loss_chunk_size`,
    `train.activation_checkpointing`: arches.core.config.SpeedConfig), checked for this
    model and device, so the bench times what `arches train` runs."""
    speed = SpeedConfig.from_train(settings.train)
    speed.check(model_cfg, training_on_cpu=not settings.on_gpu)
    return speed


def apply_speed(model: nn.Module, settings: Settings) -> dict:
    speed = speed_settings(model.cfg, settings)
    stack.apply_speed(model, speed, settings.on_gpu)
    # the chunk size `auto` chose for this vocabulary and device
    return {**dataclasses.asdict(speed), "loss_chunk_size": speed.loss_chunk_rows(settings.vocab_size, settings.on_gpu)}


def training_batch(arch: dict, settings: Settings, specials: Specials) -> dict[str, torch.Tensor]:
    spec, shape = registry.family(arch["family"]), settings.shape(arch["family"])
    collate = spec.collate(arch, specials, shape.seq_len, seed=settings.seed, vocab_size=settings.vocab_size)
    return to_device(collate(random_windows(shape, settings.vocab_size, settings.seed)), settings.device)


def with_mfu(result: dict, peak_tflops: float) -> dict:
    result["mfu"] = result["flops_per_step"] / result["step_s"] / (peak_tflops * 1e12)
    return result


def bench_ours(name: str, arch: dict, size: dict, settings: Settings, specials: Specials, peak_tflops: float) -> tuple[dict, nn.Module]:
    """Our training step for one preset; returns the result and the (eager) model."""
    family = arch["family"]
    shape = settings.shape(family)
    model = build_model(arch, size, settings, shape.seq_len)
    speed = apply_speed(model, settings)
    batch = training_batch(arch, settings, specials)
    tokens_per_step = shape.batch_size * shape.seq_len
    result = time_training(model, lambda m: m(batch)[1], settings, tokens_per_step, settings.compile)
    result.update(name=f"arches {name}", kind="arches", speed=speed)
    return with_mfu(result, peak_tflops), model


def bench_twin(name: str, arch: dict, size: dict, settings: Settings, specials: Specials, peak_tflops: float) -> dict | None:
    """The transformers equivalent on the same batch, from the same initial weights as
    ours (the model is rebuilt with the same seed), or None where there is none."""
    shape = settings.shape(arch["family"])
    initial = build_model(arch, size, settings, shape.seq_len)
    twin, hf_class = transformers_twin(name, arch, initial, specials)
    del initial
    if twin is None:
        return None
    twin = twin.to(settings.device).train()
    hf_batch = transformers_batch(arch["family"], training_batch(arch, settings, specials))
    result = time_training(twin, lambda m: m(**hf_batch).loss, settings, shape.batch_size * shape.seq_len, settings.compile_hf)
    result.update(
        name=f"transformers {hf_class}", kind="transformers",
        attn_implementation=getattr(twin.config, "_attn_implementation", None),
    )  # fmt: skip
    del twin
    return with_mfu(result, peak_tflops)


def bench_scoring(arch: dict, model: nn.Module, tokenizer, settings: Settings, examples: list[dict]) -> dict:
    """Requests/s of the family's scorer (`SPEC.scorer`) on the multiple-choice set:
    each (context, choice) pair is one lm-eval loglikelihood request."""
    spec = registry.family(arch["family"])
    model = model.to(settings.dtype).eval()
    scorer = spec.scorer(model, tokenizer, arch)
    pairs = [(e["query"], choice) for e in examples for choice in e["choices"]]
    batch_size = settings.eval.batch_size
    if batch_size == "auto":
        batch_size = 64 if settings.on_gpu else 16
    scorer.loglikelihood(pairs[:batch_size], batch_size)  # warm-up
    synchronize(settings.device)
    start = time.perf_counter()
    scores = scorer.loglikelihood(pairs, batch_size)
    synchronize(settings.device)
    seconds = time.perf_counter() - start
    return {
        "requests": len(pairs),
        "batch_size": batch_size,
        "seconds": seconds,
        "requests_per_s": len(pairs) / seconds,
        "format": scorer.format,
        "finite": all(math.isfinite(logprob) for logprob, _ in scores),
    }
