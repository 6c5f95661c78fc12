"""The real compile. `trainer.compile=auto` compiles with inductor on every GPU and no GPU is in CI,
so the `gpt` and `glm` debug models are compiled here with inductor on the CPU (its C++ code
generation) and their loss and gradients checked against eager. test_speed_paths compiles with
aot_eager in seconds; inductor's code generation takes about a minute cold on two cores."""

from __future__ import annotations

import copy
import shutil

import pytest
import torch
from conftest import SEQ_LEN, SPECIALS, VOCAB, composed, windows

from arches import registry
from arches.core.config import SpeedConfig
from arches.core.stack import apply_speed

# fp32 on a CPU: inductor fuses and reorders reductions (layer norms, softmax, the loss), which
# moves results by a few ulps; measured here: the loss equal, gradients (|g| <= 0.26) within 6e-8.
# 1e-5 leaves room for another CPU's vector width and is still far below what a wrong kernel,
# mask or graph break would change
RTOL = ATOL = 1e-5


def cpp_compiler() -> str | None:
    """The C++ compiler inductor's CPU backend runs (torch._inductor.config.cpp.cxx lists it)."""
    import torch._inductor.config as inductor_config

    return next((path for name in inductor_config.cpp.cxx if name and (path := shutil.which(name))), None)


def loss_and_grads(model: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, dict]:
    model.zero_grad(set_to_none=True)
    _, loss = model(batch)
    loss.backward()
    return loss.detach(), {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.skipif(cpp_compiler() is None, reason="inductor's CPU backend needs a C++ compiler (g++), none on PATH")
@pytest.mark.parametrize("name", ["gpt", "glm"])
def test_inductor_gives_the_eager_loss_and_gradients(name: str) -> None:
    """Compiled as arches.train compiles the model: the speed settings (here the defaults) applied,
    then nn.Module.compile in place, whose default backend is inductor. GLM's labelled-only head is
    a data-dependent shape (a graph break) that inductor must get through."""
    arch, size = composed(name)
    cfg = registry.model_config(arch, size, VOCAB, SEQ_LEN)
    torch.manual_seed(0)
    model = apply_speed(registry.family(arch["family"]).build(cfg, arch), SpeedConfig())
    batch = registry.family(arch["family"]).collate(arch, SPECIALS, SEQ_LEN, seed=0, vocab_size=VOCAB)(windows(2))
    compiled = copy.deepcopy(model)
    compiled.compile(backend="inductor")
    try:
        want_loss, want_grads = loss_and_grads(model, batch)
        loss, grads = loss_and_grads(compiled, batch)
        assert compiled._compiled_call_impl is not None
    finally:
        torch._dynamo.reset()  # compiled graphs hold on to the model they were traced from
    assert torch.isfinite(want_loss)
    torch.testing.assert_close(loss, want_loss, rtol=RTOL, atol=ATOL)
    assert grads.keys() == want_grads.keys(), "the same parameters must get gradients"
    torch.testing.assert_close(grads, want_grads, rtol=RTOL, atol=ATOL)
