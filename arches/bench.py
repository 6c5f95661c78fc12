"""Training and scoring throughput of each preset against its transformers equivalent
(issue #8). `arches bench` itself, with lm-eval's end-to-end comparison, the table
and the JSON, lives in `harness/bench.py`; this module is the model side.

A training step is forward, backward and AdamW on one fixed batch that the family's
own collate builds from seeded random token ids. It is timed after warm-up with the
device synchronized. MFU divides the FLOPs that `torch.utils.flop_counter` counts on
one eager step by the step time and a peak: configured, or measured by a matmul
microbenchmark in the step's dtype. The transformers model gets the same batch and
our weights (through `arches.interop`), so at fp32 its first loss equals ours: the
two columns time the same function.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from arches import registry
from arches.config import auto_switch
from arches.core import stack
from arches.core.config import SpeedConfig
from arches.data.tokenizer import MIN_VOCAB_SIZE, SPECIAL_TOKENS, Specials
from arches.errors import UserError, unknown

PRECISIONS = ("bf16", "fp32")
FIRST_ORDINARY_ID = len(SPECIAL_TOKENS)  # random batches draw ids after the special tokens
TOKENIZER_VOCAB = 2048  # the synthetic text's tokenizer: enough merges for its words
BENCH_LR = 1e-5  # AdamW runs for real, but barely moves the weights


# --------------------------------------------------------------------------- settings


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
        shapes = {}
        for family, shape in (values.get("shapes") or {}).items():
            if family not in registry.FAMILIES:
                raise unknown("family in bench.shapes", family, registry.FAMILIES)
            shape = dict(shape or {})
            shapes[family] = Shape(
                _integer(f"shapes.{family}.batch_size", shape.get("batch_size"), 1),
                _integer(f"shapes.{family}.seq_len", shape.get("seq_len"), 8),
            )
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
            eval=EvalSettings(
                enabled=auto_switch("bench.eval.enabled", evaluation.get("enabled", True), on_gpu),
                questions=_integer("eval.questions", evaluation.get("questions"), 1),
                choices=_integer("eval.choices", evaluation.get("choices"), 2),
                context_words=_integer("eval.context_words", evaluation.get("context_words"), 1),
                batch_size=batch_size,
                lm_eval=auto_switch("bench.eval.lm_eval", evaluation.get("lm_eval", True), on_gpu),
            ),
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


# --------------------------------------------------------------------------- synthetic text and batches

SYLLABLES = ("ka", "lo", "mi", "ne", "ru", "ta", "shi", "ve", "do", "pa", "ri", "so", "ga", "le", "mo", "fu", "zan", "ter")


def synthetic_words(seed: int, count: int = 600) -> list[str]:
    rng = random.Random(seed)
    words: set[str] = set()
    while len(words) < count:
        words.add("".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 3))))
    return sorted(words)


def synthetic_sentence(rng: random.Random, words: list[str], length: int) -> str:
    return " ".join(rng.choice(words) for _ in range(length)).capitalize() + "."


def synthetic_tokenizer(settings: Settings):
    """A byte-level BPE (arches.data.tokenizer) on seeded synthetic text: the scorers' and
    lm-eval's tokenizer. Its vocabulary fits inside the benchmarked models'."""
    return _tokenizer(settings.seed, min(settings.vocab_size, TOKENIZER_VOCAB))


@functools.lru_cache(maxsize=2)
def _tokenizer(seed: int, vocab_size: int):
    from arches.data.tokenizer import train_tokenizer

    rng, words = random.Random(seed), synthetic_words(seed)
    texts = [synthetic_sentence(rng, words, rng.randint(5, 30)) for _ in range(2000)]
    return train_tokenizer(texts, vocab_size=vocab_size, length=len(texts))


def multiple_choice_set(settings: Settings) -> list[dict]:
    """`questions` examples of {query, choices, gold}: a context of random words and
    `choices` two-word continuations (each with its leading space), BIG-bench's layout."""
    evaluation = settings.eval
    rng, words = random.Random(settings.seed + 1), synthetic_words(settings.seed)
    examples = []
    for index in range(evaluation.questions):
        choices = [" " + " ".join(rng.choice(words) for _ in range(2)) for _ in range(evaluation.choices)]
        examples.append({
            "idx": index,
            "query": synthetic_sentence(rng, words, evaluation.context_words) + " Then",
            "choices": choices,
            "gold": rng.randrange(evaluation.choices),
        })  # fmt: skip
    return examples


def random_windows(shape: Shape, vocab_size: int, seed: int) -> list[dict]:
    """`batch_size` windows of seeded random ordinary token ids, one document each."""
    generator = torch.Generator().manual_seed(seed)
    return [
        {
            "tokens": torch.randint(FIRST_ORDINARY_ID, vocab_size, (shape.seq_len,), generator=generator),
            "doc_ids": torch.zeros(shape.seq_len, dtype=torch.long),
            "index": index,
        }
        for index in range(shape.batch_size)
    ]


def to_device(batch: dict[str, torch.Tensor], device: str) -> dict[str, torch.Tensor]:
    return {key: value.to(device) for key, value in batch.items()}


# --------------------------------------------------------------------------- measuring


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def autocast(settings: Settings):
    if settings.precision == "bf16":
        return torch.autocast(device_type=torch.device(settings.device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


class PeakMemory:
    """The high-water mark of what runs between `reset` and `read`: CUDA's allocator
    on a GPU (bytes allocated, `torch.cuda.max_memory_allocated`); on a CPU the
    process's peak resident set (VmHWM, reset through /proc/self/clear_refs, Linux
    4.0+), or None where that cannot be reset."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.kind = "cuda max allocated" if device.startswith("cuda") else "process peak RSS"

    def reset(self) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self._resettable = True
        except OSError:
            self._resettable = False

    def read(self) -> int | None:
        if self.device.startswith("cuda"):
            return int(torch.cuda.max_memory_allocated(self.device))
        if not getattr(self, "_resettable", False):
            return None
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        return None


def _cpu_attention_formulas() -> dict:
    """torch's flop counter knows the CUDA SDPA kernels but not the CPU flash kernel;
    count that one as torch counts the others (full QK^T and AV, causal or not)."""
    from torch.utils import flop_counter

    aten, formulas = torch.ops.aten, {}
    forward = getattr(aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    backward = getattr(aten, "_scaled_dot_product_flash_attention_for_cpu_backward", None)
    if forward is not None and forward not in flop_counter.flop_registry:
        formulas[forward] = lambda q, k, v, *args, out_shape=None, **kwargs: flop_counter.sdpa_flop_count(q, k, v)
    if backward is not None and backward not in flop_counter.flop_registry:
        formulas[backward] = lambda grad, q, k, v, *args, out_shape=None, **kwargs: flop_counter.sdpa_backward_flop_count(grad, q, k, v)
    return formulas


def counted_flops(module: nn.Module, loss_of: Callable[[nn.Module], torch.Tensor], settings: Settings) -> int:
    """FLOPs of one eager forward and backward, as `torch.utils.flop_counter` counts them."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False, custom_mapping=_cpu_attention_formulas()) as counter:
        with autocast(settings):
            loss = loss_of(module)
        loss.backward()
    module.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


def matmul_peak_tflops(settings: Settings) -> float:
    """The best TFLOP/s of square matmuls in the step's dtype: the peak MFU divides by."""
    # on a CPU a 1024 matmul fell short of what the tiny models' own matmuls reached
    # (MFU above 100%); 2048 is closer to the cores' sustained peak
    size, repeats = (8192, 20) if settings.on_gpu else (512 if settings.quick else 2048, 5)
    generator = torch.Generator(device="cpu").manual_seed(settings.seed)
    a = torch.randn(size, size, generator=generator).to(settings.device, settings.dtype)
    b = torch.randn(size, size, generator=generator).to(settings.device, settings.dtype)
    for _ in range(3):
        a @ b
    best = math.inf
    for _ in range(repeats):
        synchronize(settings.device)
        start = time.perf_counter()
        a @ b
        synchronize(settings.device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e12


def time_training(
    module: nn.Module, loss_of: Callable[[nn.Module], torch.Tensor], settings: Settings, tokens_per_step: int, compile: bool
) -> dict:
    """Forward, backward and AdamW on one batch: FLOPs counted on one eager step, then
    `warmup` untimed steps (compilation happens in these), then `steps` timed ones."""
    flops = counted_flops(module, loss_of, settings)
    optimizer = torch.optim.AdamW(module.parameters(), lr=BENCH_LR, fused=True if settings.fused_adamw else None)
    runner = torch.compile(module) if compile else module
    memory = PeakMemory(settings.device)

    def step() -> torch.Tensor:
        with autocast(settings):
            loss = loss_of(runner)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    memory.reset()
    first_loss = step()  # from the initial weights: the loss the transformers twin must match
    for _ in range(settings.warmup - 1):
        step()
    synchronize(settings.device)
    start = time.perf_counter()
    for _ in range(settings.steps):
        last_loss = step()
    synchronize(settings.device)
    seconds = time.perf_counter() - start
    step_s = seconds / settings.steps
    del optimizer, runner
    return {
        "tokens_per_s": tokens_per_step / step_s,
        "step_s": step_s,
        "flops_per_step": flops,
        "peak_memory_bytes": memory.read(),
        "loss": float(first_loss),
        "last_loss": float(last_loss),
        "compiled": compile,
    }


def free(device: str) -> None:
    torch._dynamo.reset()  # compiled graphs hold on to the model they were traced from
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


# --------------------------------------------------------------------------- the transformers twin


def transformers_missing() -> str | None:
    """None when transformers imports; else the one-line note the table shows."""
    try:
        import transformers  # noqa: F401
    except ImportError:
        return "transformers is not installed: the HF column is skipped (pip install 'arches[bench]')"
    return None


def has_twin(preset: str, arch: dict) -> bool:
    """Whether arches.interop maps this preset onto a transformers class and its family
    has a twin batch (FamilySpec.hf_batch); prefix-LM decoders and document masks have none."""
    from arches import interop

    architecture = interop.BY_PRESET.get(preset)
    return (
        architecture is not None and architecture.family == arch.get("family")
        and registry.family(architecture.family).hf_batch is not None
        and not arch.get("prefix_lm") and not arch.get("document_mask")
    )  # fmt: skip


def transformers_twin(preset: str, arch: dict, model: nn.Module, specials: Specials) -> tuple[nn.Module | None, str]:
    """The transformers model that computes what `model` does, with its weights
    (arches.interop's export mapping): (model, class name), or (None, why not)."""
    from arches import interop

    if not has_twin(preset, arch):
        return None, f"no transformers equivalent of {preset}"
    architecture = interop.BY_PRESET[preset]
    import transformers

    transformers.logging.set_verbosity_error()
    try:
        values = architecture.hf_config(model.cfg)
    except UserError as error:
        return None, f"{architecture.hf_class} cannot express this {preset}: {error}"
    values.update(pad_token_id=specials.pad, bos_token_id=specials.bos, eos_token_id=specials.eos)
    values.update(registry.family(architecture.family).hf_config_ids(specials))
    config = transformers.AutoConfig.for_model(architecture.model_type, **values)
    twin = getattr(transformers, architecture.auto_class).from_config(config)
    weights = interop.export_weights(model, architecture, config, model.cfg)
    missing, unexpected = twin.load_state_dict(weights, strict=False)
    tied = set(getattr(twin, "all_tied_weights_keys", None) or {})
    if unexpected or set(missing) - tied:
        raise RuntimeError(f"arches.interop's {architecture.hf_class} mapping is incomplete: {sorted(set(missing) - tied)}")
    twin.tie_weights()
    return twin, architecture.hf_class


def transformers_batch(family: str, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our batch in transformers' keyword arguments, predicting the same targets (FamilySpec.hf_batch)."""
    hf_batch = registry.family(family).hf_batch
    if hf_batch is None:
        raise UserError(f"no transformers batch for the {family} family")
    return hf_batch(batch)


# --------------------------------------------------------------------------- one preset


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
    stack.apply_speed(model, speed)
    return dataclasses.asdict(speed)


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
    peak_source = "bench.peak_tflops"
    peak = settings.peak_tflops
    if peak is None:
        progress("measuring the matmul peak")
        peak = matmul_peak_tflops(settings)
        peak_source = f"measured, {settings.precision} matmul"
    tokenizer = synthetic_tokenizer(settings)
    specials = Specials.from_tokenizer(tokenizer)
    examples = multiple_choice_set(settings) if settings.eval.enabled else []
    measured: dict[tuple[str, int, int], dict] = {}  # our results by (preset, batch, window), reused by the reference
    rows: dict[str, dict] = {}
    result = {
        "peak_tflops": peak,
        "peak_source": peak_source,
        "memory": PeakMemory(settings.device).kind,
        "notes": notes,
        "presets": rows,
    }
    for name, (arch, size) in presets.items():
        family = arch["family"]
        shape = settings.shape(family)
        spec = registry.family(family)
        progress(f"{name}: arches")
        ours, model = bench_ours(name, arch, size, settings, specials, peak)
        measured[(name, shape.batch_size, shape.seq_len)] = ours
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
        if examples:
            progress(f"{name}: scoring")
            row["scoring"] = bench_scoring(arch, model, tokenizer, settings, examples)
        del model  # before the baseline, whose peak memory would otherwise hold ours
        free(settings.device)
        baseline = None
        if has_twin(name, arch):
            if not missing:
                progress(f"{name}: transformers")
                baseline = bench_twin(name, arch, size, settings, specials, peak)
        elif name != settings.reference:
            key = (settings.reference, shape.batch_size, shape.seq_len)
            if key not in measured:
                progress(f"{name}: the reference, arches {settings.reference}")
                ref_arch, ref_size = reference
                # the reference at this preset's shape
                ref_settings = dataclasses.replace(settings, shapes={**settings.shapes, ref_arch["family"]: shape})
                measured[key], ref_model = bench_ours(settings.reference, ref_arch, ref_size, ref_settings, specials, peak)
                del ref_model
            baseline = dict(measured[key])
        free(settings.device)
        if baseline is not None:
            row["baseline"] = baseline
            row["ratio"] = ours["tokens_per_s"] / baseline["tokens_per_s"]
        rows[name] = row
        on_row(result)
    return result

