"""Measuring a training step: device synchronization, autocast, the peak-memory probe,
the FLOPs torch counts, the matmul peak MFU divides by, and the timed loop itself."""

from __future__ import annotations

import contextlib
import gc
import math
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.utils import flop_counter
from torch.utils.flop_counter import FlopCounterMode

from arches.bench.settings import Settings

BENCH_LR = 1e-5  # AdamW runs for real, but barely moves the weights


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
    `warmup` untimed steps (compilation happens in these), then `steps` timed ones, each
    on its own; tokens/s is of the median step (the mean is kept as `step_s_mean`)."""
    flops = counted_flops(module, loss_of, settings)
    memory = PeakMemory(settings.device)
    first_loss, last_loss, step_times = _train_steps(module, loss_of, settings, compile, memory)
    # the median step: a shared machine's bursts of other work slow a few steps, which the
    # mean would charge to whichever model happened to run through them
    step_s = statistics.median(step_times)
    return {
        "tokens_per_s": tokens_per_step / step_s,
        "step_s": step_s,
        "step_s_mean": statistics.fmean(step_times),
        "flops_per_step": flops,
        "peak_memory_bytes": memory.read(),
        "loss": float(first_loss),
        "last_loss": float(last_loss),
        "compiled": compile,
    }


def _train_steps(
    module: nn.Module, loss_of: Callable[[nn.Module], torch.Tensor], settings: Settings, compile: bool, memory: PeakMemory
) -> tuple[torch.Tensor, torch.Tensor, list[float]]:
    """(first loss, last loss, the seconds of each timed step). The optimizer and the
    compiled runner live only in this call, so they are freed before the caller reads memory."""
    optimizer = torch.optim.AdamW(module.parameters(), lr=BENCH_LR, fused=True if settings.fused_adamw else None)
    runner = torch.compile(module) if compile else module

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
    times = []
    for _ in range(settings.steps):
        synchronize(settings.device)
        start = time.perf_counter()
        last_loss = step()
        synchronize(settings.device)
        times.append(time.perf_counter() - start)
    return first_loss, last_loss, times


def free(device: str) -> None:
    torch._dynamo.reset()  # compiled graphs hold on to the model they were traced from
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
