"""`bench.*` checked and resolved for this machine: the device, the precision, the
switches, the step counts and each family's shape (see sweeps/bench/default.yaml)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from arches import registry
from arches.config import auto_switch
from arches.data.tokenizer import MIN_VOCAB_SIZE
from arches.errors import UserError, unknown

PRECISIONS = ("bf16", "fp32")


@dataclass(frozen=True)
class Shape:
    batch_size: int  # windows per step
    seq_len: int  # tokens per window


@dataclass(frozen=True)
class EvalSettings:
    enabled: bool
    questions: int
    choices: int
    context_words: int
    batch_size: int | str  # or "auto"
    lm_eval: bool


@dataclass(frozen=True)
class Settings:
    """`bench.*`, checked and resolved for this machine (see sweeps/bench/default.yaml)."""

    quick: bool
    presets: tuple[str, ...]
    reference: str
    device: str
    precision: str
    compile: bool
    compile_hf: bool
    fused_adamw: bool
    vocab_size: int
    warmup: int
    steps: int
    seed: int
    peak_tflops: float | None
    hf: bool
    shapes: dict[str, Shape]
    eval: EvalSettings
    output: str | None
    train: dict = dataclasses.field(default_factory=dict)  # the `train` section: its speed keys apply

    @classmethod
    def from_config(cls, bench: Any, train: Any = None) -> Settings:
        values = registry.plain(bench)
        device = _device(values.get("device", "auto"))
        on_gpu = device.startswith("cuda")
        precision = values.get("precision", "auto")
        if precision == "auto":
            precision = "bf16" if on_gpu else "fp32"
        if precision not in PRECISIONS:
            raise UserError(f"bench.precision={precision!r} is not valid; choose one of: auto, {', '.join(PRECISIONS)}")
        peak = values.get("peak_tflops")
        if peak is not None and (isinstance(peak, bool) or not isinstance(peak, (int, float)) or not peak > 0):
            raise UserError(f"bench.peak_tflops={peak!r} must be a positive number of TFLOP/s, or null to measure it")
        shapes = _shapes(values.get("shapes") or {})
        evaluation = dict(values.get("eval") or {})
        batch_size = evaluation.get("batch_size", 64)
        if not (isinstance(batch_size, str) and batch_size == "auto"):
            batch_size = _integer("eval.batch_size", batch_size, 1)
        presets = values.get("presets") or []
        presets = [presets] if isinstance(presets, str) else list(presets)
        vocab_size = _integer("vocab_size", values.get("vocab_size"), MIN_VOCAB_SIZE)
        return cls(
            quick=auto_switch("bench.quick", values.get("quick", False), auto=False),
            presets=tuple(str(p) for p in presets),
            reference=str(values.get("reference", "gpt")),
            device=device,
            precision=precision,
            compile=auto_switch("bench.compile", values.get("compile", "auto"), on_gpu),
            compile_hf=auto_switch("bench.compile_hf", values.get("compile_hf", False), on_gpu),
            fused_adamw=auto_switch("bench.fused_adamw", values.get("fused_adamw", "auto"), on_gpu),
            vocab_size=vocab_size,
            warmup=_integer("warmup", values.get("warmup"), 1),
            steps=_integer("steps", values.get("steps"), 1),
            seed=_integer("seed", values.get("seed", 0), 0),
            peak_tflops=float(peak) if peak is not None else None,
            hf=auto_switch("bench.hf", values.get("hf", True), on_gpu),
            shapes=shapes,
            eval=_eval_settings(evaluation, batch_size, on_gpu),
            output=values.get("output"),
            train=registry.plain(train),
        )

    def shape(self, family: str) -> Shape:
        """`bench.shapes.<family>`, else the family's own (FamilySpec.bench_shape)."""
        if family in self.shapes:
            return self.shapes[family]
        return Shape(*registry.family(family).bench_shape)

    @property
    def on_gpu(self) -> bool:
        return self.device.startswith("cuda")

    @property
    def dtype(self) -> torch.dtype:
        return torch.bfloat16 if self.precision == "bf16" else torch.float32


def _shapes(values: dict) -> dict[str, Shape]:
    """`bench.shapes`: family -> Shape, each family registered."""
    shapes = {}
    for family, shape in values.items():
        if family not in registry.FAMILIES:
            raise unknown("family in bench.shapes", family, registry.FAMILIES)
        shape = dict(shape or {})
        shapes[family] = Shape(
            _integer(f"shapes.{family}.batch_size", shape.get("batch_size"), 1),
            _integer(f"shapes.{family}.seq_len", shape.get("seq_len"), 8),
        )
    return shapes


def _eval_settings(evaluation: dict, batch_size: int | str, on_gpu: bool) -> EvalSettings:
    """`bench.eval` (its batch size already checked): the multiple-choice set and switches."""
    return EvalSettings(
        enabled=auto_switch("bench.eval.enabled", evaluation.get("enabled", True), on_gpu),
        questions=_integer("eval.questions", evaluation.get("questions"), 1),
        choices=_integer("eval.choices", evaluation.get("choices"), 2),
        context_words=_integer("eval.context_words", evaluation.get("context_words"), 1),
        batch_size=batch_size,
        lm_eval=auto_switch("bench.eval.lm_eval", evaluation.get("lm_eval", True), on_gpu),
    )


def _integer(key: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UserError(f"bench.{key}={value!r} must be an integer >= {minimum}")
    return value


def _device(value: Any) -> str:
    value = str(value)
    if value == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if value == "cpu":
        return value
    if value == "cuda" or (value.startswith("cuda:") and value[5:].isdigit()):
        if not torch.cuda.is_available():
            raise UserError(f"bench.device={value} but no GPU is visible to torch; use bench.device=auto or cpu")
        return value
    raise UserError(f"bench.device={value!r} is not valid; choose one of: auto, cpu, cuda, cuda:<index>")
