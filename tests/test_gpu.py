"""On a CUDA GPU, what the CPU tests prove on a CPU (issue 21): FlexAttention block masks
against dense SDPA masks, torch.compile (inductor) against eager and the chunked loss against
the plain one, each in bf16 autocast as training runs there; a 20-step `arches train` of each
family with every `auto` switch at its GPU default; each family's scores on the GPU against
the CPU's for the same weights (fp32); and no recompilation of a compiled training step once
warmed up. Everything here is skipped without CUDA; `harness/gpu_check.sh` runs it on the
device machine (`pytest -m gpu tests/test_gpu.py`).

bf16 tolerance: both sides of a comparison round their activations to bf16 (a relative step
of 2^-8) in different places. The loss must agree to 1% and each parameter's gradient to 5% of
its norm (the norm, not each element: an element near zero keeps no relative precision in
bf16). Measured on a CPU under bf16 autocast: bf16 against fp32 moves a gradient by up to
1.4% of its norm (layer 0's q_proj bias, packed documents), flex against dense by up to 0.9%;
a wrong mask (no prefix, no document or no padding mask) by 14% to 75%. At initialization the
loss barely depends on the mask (1e-6 to 2e-4 relative), so the gradients are the check."""

from __future__ import annotations

import copy
import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import SEQ_LEN, local_corpus, tiny_text, windows
from test_speed_paths import build, collate, padded, preset, two_documents

from arches import registry
from arches.core import attention
from arches.core.config import SpeedConfig
from arches.core.stack import IGNORE_INDEX, apply_speed

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

DEVICE = "cuda"
LOSS_RTOL = 1e-2
GRAD_RTOL = 5e-2
FAMILIES = ["gpt", "bert", "t5", "glm"]  # one preset per family, as experiment=families has
REPO = Path(__file__).resolve().parents[1]


def on(batch: dict) -> dict:
    return {key: value.to(DEVICE) for key, value in batch.items()}


def bf16_loss_and_grads(model: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, dict]:
    """The loss and fp32 parameter gradients under bf16 autocast (Lightning's bf16-mixed)."""
    model.zero_grad(set_to_none=True)
    with torch.autocast(next(model.parameters()).device.type, dtype=torch.bfloat16):
        _, loss = model(batch)
    loss.backward()
    grads = {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}
    return loss.detach().float(), grads


def assert_close_bf16(got: tuple[torch.Tensor, dict], want: tuple[torch.Tensor, dict]) -> None:
    (loss, grads), (want_loss, want_grads) = got, want
    assert torch.isfinite(want_loss) and torch.isfinite(loss), f"loss {loss.item()} vs {want_loss.item()}"
    assert abs(loss - want_loss) <= LOSS_RTOL * abs(want_loss), f"loss {loss.item()} vs {want_loss.item()}"
    assert grads.keys() == want_grads.keys(), "the same parameters must get gradients"
    for name, grad in want_grads.items():
        error, scale = (grads[name] - grad).norm().item(), grad.norm().item()
        assert math.isfinite(error) and error <= GRAD_RTOL * scale + 1e-6, f"{name}: differ by {error} (norm {scale})"


def cuda_model(name: str, **arch_overrides) -> tuple[torch.nn.Module, dict]:
    arch, size = preset(name, **arch_overrides)
    return build(arch, size).to(DEVICE), arch


# --------------------------------------------------------------------------- FlexAttention vs dense masks


FLEX_CASES = {
    # the non-causal decoder's prefix mask, a split point per row
    "prefix": (("prefix_lm", {}), lambda arch: collate(arch, windows(3))),
    # GLM's two parts, with padding (rows differ in length)
    "glm": (("glm", {}), lambda arch: collate(arch, windows(6))),
    # packed documents, causal, positions restarting per document
    "documents": (
        ("gpt", {"document_mask": True}),
        lambda arch: collate(arch, windows(2, documents=two_documents(2, 11))),
    ),
    # padding keys in BERT's bidirectional encoder
    "padding": (("bert", {}), lambda arch: padded(collate(arch, windows(2)), [SEQ_LEN, 20])),
}


@pytest.mark.parametrize("case", list(FLEX_CASES))
def test_flex_block_masks_match_dense_sdpa_masks_in_bf16(case: str, monkeypatch) -> None:
    (name, overrides), make_batch = FLEX_CASES[case]
    model, arch = cuda_model(name, **overrides)
    batch = on(make_batch(arch))
    calls = []
    compiled_flex = attention.flex_attention

    def counted(*args, **kwargs):  # the real kernel, counted: the flex side must have run it
        calls.append(1)
        return compiled_flex(*args, **kwargs)

    monkeypatch.setattr(attention, "flex_attention", counted)
    dense = bf16_loss_and_grads(apply_speed(model, SpeedConfig(attention_backend="sdpa"), gpu=True), batch)
    assert not calls, "the sdpa backend must not call flex_attention"
    flex = bf16_loss_and_grads(apply_speed(model, SpeedConfig(attention_backend="flex"), gpu=True), batch)
    assert calls, f"{case}: the flex backend never called flex_attention"
    assert_close_bf16(flex, dense)


# --------------------------------------------------------------------------- torch.compile and the loss


@pytest.mark.parametrize("name", FAMILIES)
def test_inductor_gives_the_eager_loss_and_gradients_in_bf16(name: str) -> None:
    """Compiled as training compiles it: the GPU's speed defaults, then nn.Module.compile in
    place (inductor's Triton kernels, FlexAttention inlined for GLM's mask)."""
    model, arch = cuda_model(name)
    apply_speed(model, SpeedConfig(), gpu=True)
    batch = on(collate(arch, windows(4)))
    compiled = copy.deepcopy(model)
    compiled.compile()
    try:
        eager = bf16_loss_and_grads(model, batch)
        got = bf16_loss_and_grads(compiled, batch)
        assert compiled._compiled_call_impl is not None
    finally:
        torch._dynamo.reset()  # compiled graphs hold on to the model they were traced from
    assert_close_bf16(got, eager)


@pytest.mark.parametrize("name", FAMILIES)
def test_chunked_cross_entropy_matches_the_plain_loss_in_bf16(name: str) -> None:
    model, arch = cuda_model(name)
    batch = on(collate(arch, windows(16)))
    assert int((batch["labels"] != IGNORE_INDEX).sum()) > 64, "the batch must span several 64-row chunks"
    plain = bf16_loss_and_grads(apply_speed(model, SpeedConfig(loss_chunk_size=None), gpu=True), batch)
    apply_speed(model, SpeedConfig(loss_chunk_size=64), gpu=True)
    with torch.no_grad(), torch.autocast(DEVICE, dtype=torch.bfloat16):
        assert model(batch)[0] is None, "the chunked loss must not form the whole batch's logits"
    assert_close_bf16(bf16_loss_and_grads(model, batch), plain)


# --------------------------------------------------------------------------- recompilation


def equal_shape_batches(arch: dict, count: int) -> list[dict]:
    """`count` batches of 4 windows whose tensors all have the first one's shapes (a collator
    may pad to its batch's longest row, GLM's does), with different corruption each."""
    batches, shapes = [], None
    for start in range(0, 400, 4):
        batch = collate(arch, windows(range(start, start + 4), seed=start))
        batch_shapes = {key: tuple(value.shape) for key, value in batch.items()}
        if shapes is None or batch_shapes == shapes:
            shapes = batch_shapes
            batches.append(batch)
        if len(batches) == count:
            return batches
    raise AssertionError(f"fewer than {count} equal-shape batches of {arch['name']} in 100 tries")


@pytest.mark.parametrize("name", FAMILIES)
def test_a_compiled_training_step_is_not_recompiled_after_warm_up(name: str) -> None:
    """Three warm-up steps (automatic dynamic shapes may recompile once, where the number of
    labelled positions differs between batches: the labelled-only heads), then four more on
    equal-shape batches under Dynamo's error_on_recompile: none may compile a graph."""
    from torch._dynamo.utils import counters

    from arches.train.lit import adamw

    model, arch = cuda_model(name)
    apply_speed(model, SpeedConfig(), gpu=True)
    model.compile()
    optimizer = adamw(model, {"lr": 1e-3, "weight_decay": 0.1, "betas": [0.9, 0.95], "eps": 1e-8}, fused=True)
    batches = [on(batch) for batch in equal_shape_batches(arch, 7)]

    def step(batch: dict) -> float:
        loss, _ = bf16_loss_and_grads(model, batch)
        optimizer.step()
        return loss.item()

    torch._dynamo.reset()
    counters.clear()
    try:
        losses = [step(batch) for batch in batches[:3]]
        warmed = counters["stats"]["unique_graphs"]
        assert warmed > 0, "the warm-up steps must have compiled the model"
        with torch._dynamo.config.patch(error_on_recompile=True):
            losses += [step(batch) for batch in batches[3:]]
        assert counters["stats"]["unique_graphs"] == warmed, "graphs were compiled after warm-up"
    finally:
        torch._dynamo.reset()
    assert all(math.isfinite(loss) for loss in losses)


# --------------------------------------------------------------------------- scoring


@pytest.fixture
def exact_fp32():
    """IEEE fp32 matmuls (no TF32), so the GPU's scores are the CPU's to rounding."""
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    yield
    torch.set_float32_matmul_precision(before)


def scoring_pairs() -> list[tuple[str, str]]:
    rng = random.Random(1)
    pairs = [("The old king walked through", " the silent harbour"), ("", "A young sailor spoke of a letter."),
             ("Her brother dreamed of ", "the winter sea"), (tiny_text(rng, 12), " at last.")]  # fmt: skip
    for _ in range(8):  # rows of many lengths: padding in every batch
        text = tiny_text(rng, 1).strip()
        cut = rng.randint(5, len(text) - 5)
        pairs.append((text[:cut], text[cut:]))
    return pairs


@pytest.mark.parametrize("name", FAMILIES)
def test_gpu_scores_are_the_cpu_scores_of_the_same_weights(name: str, exact_fp32) -> None:
    from arches.data.tokenizer import train_tokenizer

    rng = random.Random(0)
    tokenizer = train_tokenizer([tiny_text(rng, 15) for _ in range(20)], 400)
    arch, size = preset(name)
    cfg = registry.model_config(arch, {**size, "max_len": 64}, tokenizer.get_vocab_size())
    torch.manual_seed(0)
    spec = registry.family(arch["family"])
    cpu_model = spec.build(cfg, arch).eval()
    gpu_model = copy.deepcopy(cpu_model).to(DEVICE)
    pairs, texts = scoring_pairs(), [tiny_text(rng, 6), "The queen forgot a letter."]
    scores = {}
    for device, model in (("cpu", cpu_model), (DEVICE, gpu_model)):
        scorer = spec.scorer(model, tokenizer, arch)
        scores[device] = ([s for s, _ in scorer.loglikelihood(pairs, 8)], scorer.loglikelihood_rolling(texts, 8))
    (cpu_pairs, cpu_rolling), (gpu_pairs, gpu_rolling) = scores["cpu"], scores[DEVICE]
    assert all(math.isfinite(s) for s in cpu_pairs + cpu_rolling)
    assert gpu_pairs == pytest.approx(cpu_pairs, abs=1e-3)
    assert gpu_rolling == pytest.approx(cpu_rolling, abs=1e-3)


# --------------------------------------------------------------------------- arches train


TRAIN_STEPS = 20


@pytest.mark.parametrize("name", FAMILIES)
def test_twenty_steps_of_arches_train_lower_the_loss_with_the_gpu_defaults(name: str, tmp_path) -> None:
    """A real `arches train` (a subprocess, as a user runs it) on the tiny local corpus at
    size debug, no speed setting given: bf16-mixed, compiled, fused AdamW, TF32, the loss in
    one piece, FlexAttention where a mask calls for it. The validation loss must be finite
    and lower at the end than at the first validation."""
    results = tmp_path / "results"
    command = [sys.executable, "-m", "arches.cli", "train", f"arch={name}", "size=debug", *local_corpus(tmp_path),
               f"results_dir={results}", f"run_name={name}", f"trainer.max_steps={TRAIN_STEPS}",
               "train.micro_batch_size=8", "train.val_interval=5", "train.val_windows=16",
               "train.progress=none"]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((results / name / "run.json").read_text())
    assert record["status"] == "completed" and record["steps"] == TRAIN_STEPS
    assert record["precision"] == "bf16-mixed" and record["device"] != "cpu"
    assert record["speed"] == {"compile": True, "attention_backend": "auto", "loss_chunk_size": None,
                               "activation_checkpointing": False, "fused_adamw": True, "tf32": True}  # fmt: skip
    losses = [entry["val_loss"] for entry in record["val_history"]]
    assert len(losses) >= 2 and all(math.isfinite(loss) for loss in losses), losses
    assert math.isfinite(record["final_val_loss"]) and record["final_val_loss"] < losses[0], losses
