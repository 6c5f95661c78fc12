"""Every speed path against the plain path, at fp32 on a CPU (issue #8): FlexAttention
vs dense SDPA masks (prefix LM, GLM, packed documents, padding), chunked vs plain
cross-entropy, labelled-only vs full heads, packed vs unpacked documents, activation
checkpointing, fused vs foreach AdamW, each giving the same loss and gradients; and
torch.compile giving the same loss. Models are the presets at `debug` size.

FlexAttention has no CPU backward pass in torch 2.13 (`flex_attention` refuses inputs
that require grad on a CPU), so the flex tests lift that one device check: eagerly,
flex_attention then runs its reference implementation (the dense math PyTorch checks
its GPU kernels against) with autograd, which is what a CPU can compare.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from conftest import SEQ_LEN, SPECIALS, VOCAB, composed, windows

from arches import registry
from arches.config import compose
from arches.core import attention, masks
from arches.core.config import SpeedConfig
from arches.core.positions import document_position_ids
from arches.core.stack import IGNORE_INDEX, ChunkedCrossEntropy, Transformer, apply_speed, lm_loss
from arches.errors import UserError

ATOL = 1e-5


def preset(name: str, **arch_overrides) -> tuple[dict, dict]:
    arch, size = composed(name)
    model_overrides = arch_overrides.pop("model", {})
    arch.update(arch_overrides)
    arch["model"] = {**arch.get("model", {}), **model_overrides}
    return arch, size


def build(arch: dict, size: dict, **size_overrides) -> torch.nn.Module:
    cfg = registry.model_config(arch, {**size, **size_overrides}, VOCAB, SEQ_LEN)
    torch.manual_seed(0)
    return registry.family(arch["family"]).build(cfg, arch)


def collate(arch: dict, items: list[dict], seq_len: int = SEQ_LEN) -> dict:
    return registry.family(arch["family"]).collate(arch, SPECIALS, seq_len, seed=0, vocab_size=VOCAB)(items)


def loss_and_grads(model: torch.nn.Module, batch: dict, scale: float = 1.0) -> tuple[torch.Tensor, dict]:
    model.zero_grad(set_to_none=True)
    _, loss = model(batch)
    (loss * scale).backward()
    grads = {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), grads


def assert_same(got: tuple[torch.Tensor, dict], want: tuple[torch.Tensor, dict], atol: float = ATOL) -> None:
    (loss, grads), (want_loss, want_grads) = got, want
    assert torch.isfinite(want_loss)
    assert torch.allclose(loss, want_loss, atol=atol, rtol=0), f"loss {loss.item()} vs {want_loss.item()}"
    assert grads.keys() == want_grads.keys(), "the same parameters must get gradients"
    for name, grad in want_grads.items():
        difference = (grads[name] - grad).abs().max().item()
        assert difference <= atol, f"{name}: gradients differ by {difference}"


# --------------------------------------------------------------------------- FlexAttention vs dense masks


@pytest.fixture
def flex_on_cpu(monkeypatch):
    """Lift flex_attention's CPU-backward refusal (see the module docstring) and count
    the calls that reach it, so a test knows flex really ran."""
    pytest.importorskip("torch.nn.attention.flex_attention")
    import torch.nn.attention.flex_attention as flex_module

    monkeypatch.setattr(flex_module, "_validate_device", lambda *args: None)
    calls = []
    original = attention.flex_attention

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(attention, "flex_attention", counted)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*flex_attention called without torch.compile.*")
        yield calls


def padded(batch: dict, lengths: list[int]) -> dict:
    """The batch with each row's keys after `lengths[row]` marked as padding."""
    length = batch["input_ids"].shape[1]
    batch = dict(batch)
    batch["is_real"] = torch.arange(length)[None, :] < torch.tensor(lengths)[:, None]
    labels = batch["labels"].clone()
    labels[~batch["is_real"]] = IGNORE_INDEX
    batch["labels"] = labels
    return batch


def two_documents(count: int, first: int, seq_len: int = SEQ_LEN) -> list[int]:
    return [0] * first + [1] * (seq_len - first)


FLEX_CASES = {
    # the non-causal decoder's prefix mask, a split point per row
    "prefix": lambda: (preset("prefix_lm"), lambda arch: collate(arch, windows(3))),
    # GLM's two parts, with padding (rows differ in length)
    "glm": lambda: (preset("glm"), lambda arch: collate(arch, windows(6))),
    # packed documents, causal (learned positions restart per document)
    "documents_causal": lambda: (
        preset("gpt", document_mask=True),
        lambda arch: collate(arch, windows(2, documents=two_documents(2, 11))),
    ),
    # packed documents, grouped-query attention with RoPE
    "documents_gqa_rope": lambda: (
        preset("llama", document_mask=True, model={"n_kv_heads": 1}),
        lambda arch: collate(arch, windows(2, documents=[0] * 9 + [1] * 13 + [2] * 10)),
    ),
    # packed documents, bidirectional (BERT's MLM with document_mask)
    "documents_bidirectional": lambda: (
        preset("bert", document_mask=True),
        lambda arch: collate(arch, windows(2, documents=two_documents(2, 20))),
    ),
    # causal with padding (the concatenated span-corruption decoder pads its rows)
    "causal_padding": lambda: (preset("gpt"), lambda arch: padded(collate(arch, windows(2)), [31, 20])),
    # padding alone, in T5's encoder (learned positions here: T5's relative bias stays on SDPA)
    "encoder_padding": lambda: (preset("t5", model={"position": "learned"}), lambda arch: collate(arch, windows(3))),
}


@pytest.mark.parametrize("case", list(FLEX_CASES))
def test_flex_attention_matches_the_dense_mask(case: str, flex_on_cpu) -> None:
    (arch, size), make_batch = FLEX_CASES[case]()
    model = build(arch, size)
    batch = make_batch(arch)
    dense = loss_and_grads(apply_speed(model, SpeedConfig(attention_backend="sdpa")), batch)
    assert not flex_on_cpu, "the sdpa backend must not call flex_attention"
    flex = loss_and_grads(apply_speed(model, SpeedConfig(attention_backend="flex")), batch)
    assert flex_on_cpu, f"{case}: the flex backend never called flex_attention"
    assert_same(flex, dense)


def test_glm_flex_batches_have_padding_and_two_parts() -> None:
    # what the glm case above covers: rows of different lengths, Part B after Part A
    arch, _ = preset("glm")
    batch = collate(arch, windows(6))
    assert (~batch["is_real"]).any(), "the GLM batch must hold padding for the flex test to cover it"
    assert (batch["part_a_len"] < batch["is_real"].sum(1)).all()


ATTENTION_MASKS = {
    "causal": masks.AttentionMask(causal=True),
    "prefix": masks.AttentionMask(causal=True, prefix_len=torch.tensor([0, 3, 9])),
    "glm_padding": masks.AttentionMask(
        causal=True, prefix_len=torch.tensor([4, 2, 6]), is_real=torch.arange(9)[None, :] < torch.tensor([[9], [5], [7]])
    ),
    "documents": masks.AttentionMask(causal=True, doc_ids=torch.tensor([[0] * 4 + [1] * 5, [0] * 9, [0, 1, 1, 2, 2, 2, 3, 3, 3]])),
    "bidirectional_documents_padding": masks.AttentionMask(
        doc_ids=torch.tensor([[0] * 4 + [1] * 5] * 3), is_real=torch.arange(9)[None, :] < torch.tensor([[9], [6], [3]])
    ),
}


@pytest.mark.parametrize("name", list(ATTENTION_MASKS))
def test_mask_mod_is_the_dense_mask(name: str) -> None:
    """FlexAttention's own materialization of our mask_mod (create_mask) equals the dense
    mask SDPA gets (after with_self), element by element."""
    from torch.nn.attention.flex_attention import create_mask

    parts = ATTENTION_MASKS[name]
    dense = masks.with_self(parts.dense(9)).expand(3, 1, 9, 9)
    from_mod = create_mask(parts.mask_mod(), 3, 1, 9, 9, device="cpu")
    assert torch.equal(from_mod, dense)


def test_attention_mask_dense_is_the_mask_functions() -> None:
    prefix_len, doc_ids = torch.tensor([2, 5]), torch.tensor([[0, 0, 1, 1, 1, 1], [0, 0, 0, 1, 1, 2]])
    is_real = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    parts = masks.AttentionMask(causal=True, prefix_len=prefix_len, doc_ids=doc_ids, is_real=is_real)
    want = masks.prefix(6, prefix_len) & masks.documents(doc_ids) & masks.padding(is_real)
    assert torch.equal(parts.dense(6), want)
    assert torch.equal(masks.AttentionMask(causal=True).dense(6), masks.causal(6))
    assert masks.AttentionMask().dense(6) is None and masks.AttentionMask().is_empty
    assert masks.AttentionMask(causal=True).is_plain_causal and not parts.is_plain_causal
    with pytest.raises(ValueError):
        masks.AttentionMask(prefix_len=prefix_len)  # a prefix mask is causal after the prefix


def test_auto_backend_is_sdpa_on_a_cpu_and_flex_on_a_gpu() -> None:
    arch, size = preset("glm")
    body = build(arch, size).body
    parts = masks.AttentionMask(causal=True, prefix_len=torch.tensor([3]))
    assert body.attention_backend == "auto"
    assert not body.uses_flex(parts, torch.device("cpu"), None), "auto keeps SDPA on a CPU (the old results)"
    assert body.uses_flex(parts, torch.device("cuda"), None) == attention.flex_available()
    assert not body.uses_flex(masks.AttentionMask(causal=True), torch.device("cuda"), None), "plain causal keeps flash"
    body.attention_backend = "flex"
    assert body.uses_flex(parts, torch.device("cpu"), None)
    assert not body.uses_flex(parts, torch.device("cpu"), attention.KVCache()), "cached decoding stays on SDPA"


def test_flex_refuses_what_it_cannot_run() -> None:
    glm_cfg = registry.model_config(*preset("glm"), VOCAB, SEQ_LEN)
    SpeedConfig(attention_backend="flex").check(glm_cfg)  # GLM's 2D positions: fine
    with pytest.raises(UserError, match="position=alibi"):
        SpeedConfig(attention_backend="flex").check(registry.model_config(*preset("bloom"), VOCAB, SEQ_LEN))
    with pytest.raises(UserError, match="position=t5_relative"):
        SpeedConfig(attention_backend="flex").check(registry.model_config(*preset("t5"), VOCAB, SEQ_LEN))
    with pytest.raises(UserError, match="CPU"):
        SpeedConfig(attention_backend="flex").check(glm_cfg, training_on_cpu=True)
    SpeedConfig(attention_backend="auto").check(glm_cfg, training_on_cpu=True)
    with pytest.raises(UserError, match="attention_backend='flux'.*Did you mean 'flex'"):
        SpeedConfig(attention_backend="flux")
    with pytest.raises(UserError, match="loss_chunk_size"):
        SpeedConfig(loss_chunk_size=0)


# --------------------------------------------------------------------------- heads and the loss


HEAD_CASES = {
    "gpt": lambda arch: collate(arch, windows(2)),  # tied head, every position labelled
    "bert": lambda arch: collate(arch, windows(2)),  # BERT's head transform and bias, labelled only
    "glm": lambda arch: collate(arch, windows(2)),  # Part B only, padding
    "t5": lambda arch: collate(arch, windows(2)),  # padded targets
    "prefix_lm": lambda arch: collate(arch, windows(2)),  # the prefix is unlabelled
}


@pytest.mark.parametrize("name", list(HEAD_CASES))
@pytest.mark.parametrize("chunk_size", [1, 7, 4096, "auto"])
def test_chunked_cross_entropy_matches_the_plain_loss(name: str, chunk_size: int | str) -> None:
    arch, size = preset(name)
    model = build(arch, size)
    batch = HEAD_CASES[name](arch)
    plain = loss_and_grads(model, batch)
    apply_speed(model, SpeedConfig(loss_chunk_size=chunk_size), gpu=False)
    logits, _ = model(batch)
    assert logits is None, "the chunked loss must not form the whole batch's logits"
    assert_same(loss_and_grads(model, batch), plain)


def test_chunked_cross_entropy_with_an_untied_head_and_ignored_rows() -> None:
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(23, 16, generator=generator, requires_grad=True)
    weight = torch.randn(50, 16, generator=generator, requires_grad=True)
    bias = torch.randn(50, generator=generator, requires_grad=True)
    labels = torch.randint(0, 50, (23,), generator=generator)
    labels[[0, 5, 6, 22]] = IGNORE_INDEX
    want = lm_loss(torch.nn.functional.linear(hidden, weight, bias), labels)
    want_grads = torch.autograd.grad(want * 3.0, (hidden, weight, bias))
    got = ChunkedCrossEntropy.apply(hidden, weight, bias, labels, 5)
    got_grads = torch.autograd.grad(got * 3.0, (hidden, weight, bias))
    assert torch.allclose(got, want, atol=ATOL)
    for g, w in zip(got_grads, want_grads):
        assert torch.allclose(g, w, atol=ATOL)
    assert got_grads[0][[0, 5, 6, 22]].abs().max() == 0, "an ignored position gets no gradient"


@pytest.mark.parametrize("name", ["bert", "glm", "prefix_lm"])
def test_only_labelled_positions_go_through_the_head(name: str) -> None:
    """The MLM, GLM and prefix heads run on the labelled positions only: their logits are
    (N, V) for those N, and loss and gradients are those of the head over every position."""
    arch, size = preset(name)
    model = build(arch, size)
    batch = HEAD_CASES[name](arch)
    labelled = int((batch["labels"] != IGNORE_INDEX).sum())
    assert labelled < batch["labels"].numel(), "the batch must have unlabelled positions"
    logits, _ = model(batch)
    assert logits.shape == (labelled, VOCAB)
    got = loss_and_grads(model, batch)

    def full_head_loss(batch: dict):
        unlabelled = {k: v for k, v in batch.items() if k != "labels"}
        full_logits, _ = model(unlabelled)  # (B, T, V): every position
        return full_logits, lm_loss(full_logits, batch["labels"])

    full_logits, _ = full_head_loss(batch)
    assert full_logits.shape[:2] == batch["labels"].shape
    assert torch.allclose(logits, full_logits[batch["labels"] != IGNORE_INDEX], atol=ATOL)
    model.zero_grad(set_to_none=True)
    want_loss = full_head_loss(batch)[1]
    want_loss.backward()
    want = (want_loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert_same(got, want)


# --------------------------------------------------------------------------- packing


def test_document_position_ids_restart_per_document() -> None:
    doc_ids = torch.tensor([[0, 0, 0, 1, 1, 2], [0, 0, 0, 0, 0, 0]])
    assert document_position_ids(doc_ids).tolist() == [[0, 1, 2, 0, 1, 0], [0, 1, 2, 3, 4, 5]]


@pytest.mark.parametrize("name", ["gpt", "llama", "bloom"])
def test_packed_documents_compute_what_each_document_computes_alone(name: str) -> None:
    """Two documents packed in one window, with the document mask and positions that
    restart per document, give each token the loss and gradients it has when its document
    runs alone (summed over tokens). The one position that predicts across the boundary
    (the first document's last token -> the second's first) has no counterpart alone."""
    first, second = 13, SEQ_LEN - 13
    arch, size = preset(name, document_mask=True)
    model = build(arch, size)
    packed_window = windows(1, documents=[0] * first + [1] * second)[0]
    packed = collate(arch, [packed_window])
    assert packed["position_ids"][0, first].item() == 0, "the second document starts at position 0"
    packed["labels"][0, first - 1] = IGNORE_INDEX  # the cross-boundary prediction
    tokens = packed_window["tokens"]
    alone_a = collate(arch, [{"tokens": tokens[:first], "doc_ids": torch.zeros(first, dtype=torch.long), "index": 0}], first)
    alone_b = collate(arch, [{"tokens": tokens[first:], "doc_ids": torch.zeros(second, dtype=torch.long), "index": 0}], second)

    # per-token losses line up with each document's own run
    with torch.no_grad():
        logits = model({k: v for k, v in packed.items() if k != "labels"})[0][0]
        logits_a = model({k: v for k, v in alone_a.items() if k != "labels"})[0][0]
        logits_b = model({k: v for k, v in alone_b.items() if k != "labels"})[0][0]
    assert torch.allclose(logits[: first - 1], logits_a, atol=ATOL)
    assert torch.allclose(logits[first:], logits_b, atol=ATOL)

    # the sums of token losses (and so their gradients) agree
    count_a, count_b = first - 1, second - 1
    loss_packed, grads_packed = loss_and_grads(model, packed, scale=count_a + count_b)
    loss_a, grads_a = loss_and_grads(model, alone_a, scale=count_a)
    loss_b, grads_b = loss_and_grads(model, alone_b, scale=count_b)
    summed = {k: grads_a[k] + grads_b[k] for k in grads_a}
    assert_same((loss_packed * (count_a + count_b), grads_packed), (loss_a * count_a + loss_b * count_b, summed), atol=1e-4)

    # and without the document mask they would not (the test can fail)
    unmasked = {k: v for k, v in packed.items() if k not in ("doc_ids", "position_ids")}
    with torch.no_grad():
        leaked = model({k: v for k, v in unmasked.items() if k != "labels"})[0][0]
    assert not torch.allclose(leaked[first:], logits_b, atol=ATOL)


def test_packed_mlm_documents_match_each_document_alone() -> None:
    first, second = 12, SEQ_LEN - 12
    arch, size = preset("bert", document_mask=True)
    model = build(arch, size)
    window = windows(1, documents=[0] * first + [1] * second)[0]
    packed = collate(arch, [window])
    labels = torch.full((1, SEQ_LEN), IGNORE_INDEX)
    labels[0, [1, 5, 11, 12, 20, 31]] = window["tokens"][[1, 5, 11, 12, 20, 31]]
    packed = {"input_ids": window["tokens"][None], "labels": labels, "doc_ids": packed["doc_ids"], "position_ids": packed["position_ids"]}
    alone = [{"input_ids": packed["input_ids"][:, part], "labels": labels[:, part]} for part in (slice(0, first), slice(first, None))]
    count_a, count_b = 3, 3  # labelled positions in each document
    loss_packed, grads_packed = loss_and_grads(model, packed, scale=count_a + count_b)
    loss_a, grads_a = loss_and_grads(model, alone[0], scale=count_a)
    loss_b, grads_b = loss_and_grads(model, alone[1], scale=count_b)
    summed = {k: grads_a[k] + grads_b[k] for k in grads_a}
    assert_same((loss_packed * 6, grads_packed), (loss_a * count_a + loss_b * count_b, summed), atol=1e-4)


# --------------------------------------------------------------------------- activation checkpointing


@pytest.mark.parametrize("name", ["gpt", "glm", "t5"])
def test_activation_checkpointing_gives_the_same_loss_and_gradients(name: str) -> None:
    """With dropout on, so the recomputed forward must replay the same random draws."""
    arch, size = preset(name)
    model = build(arch, size, dropout=0.1).train()
    batch = collate(arch, windows(2))
    torch.manual_seed(1)
    plain = loss_and_grads(model, batch)
    apply_speed(model, SpeedConfig(activation_checkpointing=True))
    torch.manual_seed(1)
    checkpointed = loss_and_grads(model, batch)
    assert_same(checkpointed, plain)
    torch.manual_seed(2)  # other dropout draws give another loss: the comparison can fail
    assert not torch.allclose(loss_and_grads(model, batch)[0], plain[0])


# --------------------------------------------------------------------------- optimizer


def test_fused_adamw_step_matches_the_foreach_step() -> None:
    from arches.train.lit import adamw, fused_adamw

    arch, size = preset("llama")
    model = build(arch, size)
    _, grads = loss_and_grads(model, collate(arch, windows(2)))
    cfg = {"lr": 1e-2, "weight_decay": 0.1, "betas": [0.9, 0.95], "eps": 1e-8}
    twins = {fused: copy.deepcopy(model) for fused in (True, False)}
    for fused, twin in twins.items():
        for name, parameter in twin.named_parameters():
            parameter.grad = grads[name].clone()
        optimizer = adamw(twin, cfg, fused=fused)
        assert optimizer.defaults["fused"] is fused
        for _ in range(2):
            optimizer.step()
    moved = False
    for (name, a), b, before in zip(twins[True].named_parameters(), twins[False].parameters(), model.parameters()):
        assert torch.allclose(a, b, atol=1e-6, rtol=0), f"{name}: fused and foreach AdamW differ"
        moved |= not torch.allclose(a, before)
    assert moved, "the steps must change the weights"
    assert fused_adamw("auto", torch.device("cpu")) is False, "auto keeps the CPU's foreach update"
    assert fused_adamw("auto", torch.device("cuda")) is True
    assert fused_adamw(True, torch.device("cpu")) is True
    with pytest.raises(UserError, match="fused_adamw"):
        fused_adamw("yes", torch.device("cpu"))


# --------------------------------------------------------------------------- torch.compile and the train wiring


@pytest.mark.parametrize("name", ["gpt", "glm"])
def test_compiled_model_gives_the_eager_loss_and_gradients(name: str) -> None:
    """torch.compile as training uses it (nn.Module.compile, in place). The backend here is
    aot_eager: Dynamo's graph capture and AOTAutograd's forward/backward split, the parts
    this code meets, in seconds; inductor's C++ code generation for a CPU takes 40-60 s
    cold on two cores, and a GPU runs Triton kernels instead. GLM's labelled-only head is
    a data-dependent shape (a graph break) that compile must get through."""
    arch, size = preset(name)
    model = build(arch, size)
    batch = collate(arch, windows(2))
    compiled = copy.deepcopy(model)
    compiled.compile(backend="aot_eager")
    eager = loss_and_grads(model, batch)
    got = loss_and_grads(compiled, batch)
    assert compiled._compiled_call_impl is not None
    assert_same(got, eager)
    assert set(compiled.state_dict()) == set(model.state_dict()), "in-place compile keeps the checkpoint keys"


def test_train_applies_the_speed_settings() -> None:
    from arches.train.fit import apply_speed_settings as _speed
    from arches.train.fit import compile_wanted

    cfg = compose(["arch=glm", "size=debug", "train.loss_chunk_size=64", "train.activation_checkpointing=true"])
    arch = registry.plain(cfg.arch)
    model_cfg = registry.model_config(arch, cfg.size, VOCAB, SEQ_LEN)
    model = registry.family("glm").build(model_cfg, arch)
    _speed(cfg, model_cfg, model, gpu=False)
    assert model.head.loss_chunk_size == 64
    assert all(m.activation_checkpointing for m in model.modules() if isinstance(m, Transformer))
    assert model._compiled_call_impl is None, "trainer.compile=auto does not compile on a CPU"
    assert compile_wanted("auto", gpu=True) and not compile_wanted("auto", gpu=False)
    assert compile_wanted(True, gpu=False) and not compile_wanted(False, gpu=True)
    with pytest.raises(UserError, match="trainer.compile"):
        compile_wanted("sometimes", gpu=False)
    flex_cfg = compose(["arch=glm", "size=debug", "train.attention_backend=flex"])
    with pytest.raises(UserError, match="cannot train on a CPU"):
        _speed(flex_cfg, model_cfg, model, gpu=False)
    defaults = compose([])
    assert SpeedConfig.from_train(defaults.train) == SpeedConfig(), "the config's defaults are SpeedConfig's"
    assert defaults.trainer.compile == "auto" and defaults.train.fused_adamw == "auto"
