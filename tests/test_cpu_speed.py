"""The CPU speed paths (the CPU speed issue): each is checked against the plain path,
its loss and gradients at fp32, as tests/test_speed_paths.py checks the GPU's."""

from __future__ import annotations

import pytest
import torch
from conftest import SEQ_LEN, SPECIALS, VOCAB, composed, windows

from arches import registry
from arches.core import attention, masks
from arches.core.config import SpeedConfig
from arches.core.positions import RelativePositionBias
from arches.core.stack import apply_speed

ATOL = 1e-5


def build(name: str, **model_overrides) -> torch.nn.Module:
    arch, size = composed(name)
    arch["model"] = {**arch.get("model", {}), **model_overrides}
    cfg = registry.model_config(arch, size, VOCAB, SEQ_LEN)
    torch.manual_seed(0)
    return registry.family(arch["family"]).build(cfg, arch)


def test_the_default_chunks_the_loss_on_a_cpu_and_not_on_a_gpu() -> None:
    """`auto`: 16 MiB of float32 logits per chunk on a CPU (512 positions at vocabulary
    8192), one piece on a GPU; a number or null is taken as it is."""
    assert SpeedConfig().loss_chunk_size == "auto"
    assert SpeedConfig().loss_chunk_rows(8192, gpu=False) == 512
    assert SpeedConfig().loss_chunk_rows(2**30, gpu=False) == 1, "at least one position per chunk"
    assert SpeedConfig().loss_chunk_rows(8192, gpu=True) is None
    assert SpeedConfig(loss_chunk_size=64).loss_chunk_rows(8192, gpu=True) == 64
    assert SpeedConfig(loss_chunk_size=None).loss_chunk_rows(8192, gpu=False) is None
    model = build("gpt")
    apply_speed(model, SpeedConfig(), gpu=False)
    assert model.head.loss_chunk_size == max(1, 16 * 2**20 // (4 * VOCAB))
    apply_speed(model, SpeedConfig(), gpu=True)
    assert model.head.loss_chunk_size is None


def loss_and_grads(model: torch.nn.Module, run) -> tuple[torch.Tensor, dict]:
    model.zero_grad(set_to_none=True)
    loss = run(model)
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def assert_same(got: tuple[torch.Tensor, dict], want: tuple[torch.Tensor, dict]) -> None:
    (loss, grads), (want_loss, want_grads) = got, want
    assert torch.isfinite(want_loss) and torch.allclose(loss, want_loss, atol=ATOL, rtol=0), (loss, want_loss)
    assert grads.keys() == want_grads.keys()
    for name, grad in want_grads.items():
        assert (grads[name] - grad).abs().max() <= ATOL, name


def family_loss(batch: dict):
    return lambda model: model(batch)[1]


def collate(name: str, count: int = 3) -> dict:
    arch, _ = composed(name)
    return registry.family(arch["family"]).collate(arch, SPECIALS, SEQ_LEN, seed=0, vocab_size=VOCAB)(windows(count))


@pytest.mark.parametrize(
    ("position", "causal", "padded"),
    [("rope", True, False), ("alibi", True, True), ("alibi", False, True), ("t5_relative", False, True), ("t5_relative", True, False)],
)
def test_position_tables_shared_by_every_row_equal_per_row_tables(position: str, causal: bool, padded: bool) -> None:
    """With the default positions the RoPE tables and the ALiBi and T5 biases are built for
    one row and broadcast; given as explicit (B, T) positions they are built per row, the
    plain path. Loss and gradients agree, with a padding mask merged into the bias too."""
    model = build("gpt", position=position)
    body = model.body
    tokens = torch.stack([w["tokens"] for w in windows(3)])
    is_real = torch.ones_like(tokens, dtype=torch.bool)
    if padded:
        is_real[1, -5:] = False
    mask = masks.padding(is_real) if padded else None

    def run(explicit: bool):
        positions = torch.arange(SEQ_LEN).expand(3, SEQ_LEN).clone() if explicit else None
        return lambda _: body(tokens, mask=mask, is_causal=causal, position_ids=positions).square().mean()

    assert_same(loss_and_grads(model, run(explicit=False)), loss_and_grads(model, run(explicit=True)))


def test_a_bias_and_a_mask_become_one_additive_mask() -> None:
    """-inf exactly where the boolean mask hides a key, the bias elsewhere; the causal
    mask for T queries over S >= T keys (a KV cache's) is aligned to the last query."""
    bias = torch.randn(1, 2, 3, 5)
    mask = torch.tensor([True, True, False, True, True])[None, None, None, :]
    merged = masks.with_bias(bias, mask, is_causal=False, key_length=5)
    assert torch.equal(merged.isinf(), (~mask).expand(1, 2, 3, 5))
    assert torch.equal(merged[..., [0, 1, 3, 4]], bias[..., [0, 1, 3, 4]])
    causal = masks.with_bias(bias, None, is_causal=True, key_length=5)
    assert torch.equal(~causal[0, 0].isinf(), torch.ones(3, 5, dtype=torch.bool).tril(2))
    assert masks.with_bias(bias, None, is_causal=False, key_length=5) is bias


@pytest.mark.parametrize("name", ["falcon", "t5"])
def test_sdpa_sharing_the_kv_heads_equals_repeating_them(name: str, monkeypatch) -> None:
    """Grouped-query attention through SDPA's enable_gqa against the plain path, each kv
    head repeated for its query heads: falcon's causal decoder, and T5 with one kv head
    through its padded cross-attention (its biased self-attention repeats the heads)."""
    model = build(name, n_kv_heads=1)
    assert any(m.n_kv_heads != m.n_heads for m in model.modules() if isinstance(m, attention.Attention))
    batch = collate(name)
    shared = loss_and_grads(model, family_loss(batch))
    monkeypatch.setattr(attention, "SDPA_SHARES_KV_HEADS", False)
    assert_same(shared, loss_and_grads(model, family_loss(batch)))


def stack_of(model: torch.nn.Module) -> torch.nn.Module:
    """The self-attention stack a scorer reads: the encoder's or decoder's body, T5's encoder."""
    return model.encoder if hasattr(model, "encoder") else model.body


@pytest.mark.parametrize(
    ("name", "causal", "padded"),
    [("bert", False, True), ("bert", False, False), ("gpt", True, True), ("gpt", True, False),
     ("llama", True, True), ("bloom", True, True), ("neox", False, True), ("t5", False, True)],
)  # fmt: skip
def test_one_query_per_row_in_the_last_block_equals_the_full_pass(name: str, causal: bool, padded: bool) -> None:
    """`only_positions`: the last block computes one query per row (pseudo-log-likelihood
    reads each masked copy at one position); its states equal the full pass's there, for
    learned, RoPE (llama; neox's partial rotary, parallel block), ALiBi and T5 positions,
    pre- and post-norm, causal or bidirectional, with padding or SDPA's causal flag."""
    body = stack_of(build(name).eval())
    tokens = torch.stack([w["tokens"] for w in windows(3)])
    positions = torch.tensor([5, 0, SEQ_LEN - 1])
    is_real = torch.ones_like(tokens, dtype=torch.bool)
    if padded:
        is_real[2, SEQ_LEN - 4 : SEQ_LEN - 1] = False  # padded keys before the last one read
    mask = masks.AttentionMask(causal=causal, is_real=is_real) if padded else None
    with torch.no_grad():
        full = body(tokens, mask=mask, is_causal=causal and not padded)
        got = body(tokens, mask=mask, is_causal=causal and not padded, only_positions=positions)
    assert got.shape == (3, full.shape[-1])
    torch.testing.assert_close(got, full[torch.arange(3), positions], atol=ATOL, rtol=0)


def test_one_query_per_row_after_flex_attention_blocks(monkeypatch) -> None:
    """Earlier blocks through FlexAttention's block mask, the last one through the same
    mask made dense for its rows: the full pass's states at those positions."""
    pytest.importorskip("torch.nn.attention.flex_attention")
    import torch.nn.attention.flex_attention as flex_module

    monkeypatch.setattr(flex_module, "_validate_device", lambda *args: None)
    model = build("bert").eval()
    apply_speed(model, SpeedConfig(attention_backend="flex"))
    tokens = torch.stack([w["tokens"] for w in windows(2)])
    is_real = torch.ones_like(tokens, dtype=torch.bool)
    is_real[1, -6:] = False
    positions = torch.tensor([SEQ_LEN - 1, 3])
    with torch.no_grad():
        full = model.body(tokens, mask=masks.AttentionMask(is_real=is_real))
        got = model.body(tokens, mask=masks.AttentionMask(is_real=is_real), only_positions=positions)
    torch.testing.assert_close(got, full[torch.arange(2), positions], atol=ATOL, rtol=0)


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize(("length", "key_length", "offset"), [(1, 1, 0), (7, 7, 0), (40, 40, 0), (1, 9, 8), (3, 10, 7)])
def test_t5_bias_laid_out_by_distance_is_the_bias_of_every_pair(bidirectional: bool, length: int, key_length: int, offset: int) -> None:
    """`consecutive` (one lookup per distance, laid along the diagonals) against `forward`
    (one lookup per query and key), the plain path: the same bias, exactly, in a fresh
    pass and after cached keys, and the same gradient for the table."""
    torch.manual_seed(0)
    bias = RelativePositionBias(n_heads=3, buckets=32, max_distance=20, bidirectional=bidirectional)
    queries, keys = torch.arange(offset, offset + length)[None], torch.arange(key_length)[None]
    plain = bias(queries, keys)
    laid_out = bias.consecutive(length, key_length, offset)
    assert torch.equal(laid_out, plain)
    weights = torch.randn_like(plain)
    plain_grad = torch.autograd.grad((plain * weights).sum(), bias.table.weight)[0]
    laid_out_grad = torch.autograd.grad((bias.consecutive(length, key_length, offset) * weights).sum(), bias.table.weight)[0]
    torch.testing.assert_close(laid_out_grad, plain_grad, atol=ATOL, rtol=1e-5)  # sums in another order


@pytest.mark.parametrize(("name", "model_overrides"), [("t5", {}), ("bloom", {}), ("t5", {"n_kv_heads": 1}), ("bert", {"position": "alibi"})])
def test_biased_attention_on_a_cpu_equals_sdpa(name: str, model_overrides: dict, monkeypatch) -> None:
    """The CPU's own attention for an additive bias (T5's, ALiBi's) against SDPA with the
    same bias as its mask, the plain path: loss and gradients of a whole training step,
    through padding, the causal decoder and grouped kv heads."""
    model = build(name, **model_overrides)
    batch = collate(name)
    calls = []
    own = attention.biased_attention

    def counted(*args):
        calls.append(1)
        return own(*args)

    monkeypatch.setattr(attention, "biased_attention", counted)
    got = loss_and_grads(model, family_loss(batch))
    assert calls, "the biased path must run"

    def sdpa(q, k, v, bias, dropout):
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout)

    monkeypatch.setattr(attention, "biased_attention", sdpa)
    assert_same(got, loss_and_grads(model, family_loss(batch)))
