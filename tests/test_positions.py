"""Positions: RoPE's and ALiBi's relative-position property, GPT-NeoX's partial
rotary, GLM's 2D positions on a hand-made span layout, and the KV cache (whose
correctness is that cached keys keep their positions)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import SPECIALS, VOCAB

from arches import registry
from arches.core.attention import KVCache
from arches.core.config import ModelConfig
from arches.core.positions import alibi_bias, alibi_slopes, apply_rope, rope_cos_sin
from arches.core.stack import IGNORE_INDEX
from arches.families import glm

ATOL = 1e-5


def tiny_config(position: str, **overrides) -> ModelConfig:
    values = dict(vocab_size=VOCAB, d_model=32, n_layers=2, n_heads=4, max_len=64, position=position)
    values.update(overrides)
    return ModelConfig(**values)


def tiny_decoder(position: str, **overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = tiny_config(position, **overrides)
    return registry.family("decoder").build(cfg, {"family": "decoder", "objective": "lm"}).eval()


def tokens(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(107, VOCAB, shape, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------- RoPE


def rope_scores(
    q: torch.Tensor, k: torch.Tensor, query_positions: torch.Tensor, key_positions: torch.Tensor, rotary_dim: int
) -> torch.Tensor:
    """q (1, H, T, hd), k (1, H, S, hd) -> scores (1, H, T, S) after RoPE at the given positions."""
    q_rot = apply_rope(q, *rope_cos_sin(query_positions[None], rotary_dim, 10000.0))
    k_rot = apply_rope(k, *rope_cos_sin(key_positions[None], rotary_dim, 10000.0))
    return q_rot @ k_rot.transpose(-1, -2)


@pytest.mark.parametrize("rotary_dim", [16, 4])
@pytest.mark.parametrize("shift", [1, 7, 40])
def test_rope_scores_depend_only_on_the_offset(rotary_dim: int, shift: int) -> None:
    torch.manual_seed(0)
    q, k = torch.randn(1, 2, 6, 16), torch.randn(1, 2, 6, 16)
    positions = torch.arange(6)
    base = rope_scores(q, k, positions, positions, rotary_dim)
    shifted = rope_scores(q, k, positions + shift, positions + shift, rotary_dim)
    assert torch.allclose(base, shifted, atol=1e-4)


def test_rope_scores_do_change_with_the_offset() -> None:
    torch.manual_seed(0)
    q, k = torch.randn(1, 1, 1, 16), torch.randn(1, 1, 1, 16)
    near = rope_scores(q, k, torch.tensor([5]), torch.tensor([4]), 16)
    far = rope_scores(q, k, torch.tensor([5]), torch.tensor([1]), 16)
    assert not torch.allclose(near, far, atol=1e-3)


def test_rope_is_a_rotation() -> None:
    torch.manual_seed(0)
    x = torch.randn(1, 2, 8, 16)
    rotated = apply_rope(x, *rope_cos_sin(torch.arange(8)[None] * 3, 16, 10000.0))
    assert torch.allclose(rotated.norm(dim=-1), x.norm(dim=-1), atol=1e-5)
    at_zero = apply_rope(x, *rope_cos_sin(torch.zeros(1, 8, dtype=torch.long), 16, 10000.0))
    assert torch.allclose(at_zero, x)


def test_partial_rotary_passes_the_other_dims_through() -> None:
    cfg = ModelConfig(vocab_size=VOCAB, d_model=64, n_heads=4, position="rope", rotary_pct=0.25)
    assert (cfg.head_dim, cfg.rotary_dim) == (16, 4)
    torch.manual_seed(0)
    x = torch.randn(1, 4, 5, cfg.head_dim)
    out = apply_rope(x, *rope_cos_sin(torch.arange(1, 6)[None], cfg.rotary_dim, cfg.rope_base))
    assert torch.equal(out[..., cfg.rotary_dim :], x[..., cfg.rotary_dim :])
    assert not torch.allclose(out[..., : cfg.rotary_dim], x[..., : cfg.rotary_dim], atol=1e-3)


# --------------------------------------------------------------------------- ALiBi


def test_alibi_slopes_golden() -> None:
    # Press et al. 2022 §3: 2^(-8/n), 2^(-16/n), ...; non-powers of two interleave the next power's slopes
    assert torch.allclose(alibi_slopes(8), torch.tensor([2.0**-i for i in range(1, 9)]))
    assert torch.allclose(alibi_slopes(4), torch.tensor([2.0**-2, 2.0**-4, 2.0**-6, 2.0**-8]))
    assert torch.allclose(alibi_slopes(6), torch.tensor([2.0**-2, 2.0**-4, 2.0**-6, 2.0**-8, 2.0**-1, 2.0**-3]))


def test_alibi_bias_golden() -> None:
    bias = alibi_bias(torch.tensor([0.5, 0.25]), torch.arange(3)[None], torch.arange(3)[None])
    distance = torch.tensor([[0.0, 1, 2], [1, 0, 1], [2, 1, 0]])
    assert bias.shape == (1, 2, 3, 3)
    assert torch.equal(bias[0, 0], -0.5 * distance)
    assert torch.equal(bias[0, 1], -0.25 * distance)


@pytest.mark.parametrize("shift", [1, 13, 200])
def test_alibi_bias_depends_only_on_the_offset(shift: int) -> None:
    slopes = alibi_slopes(4)
    queries, keys = torch.tensor([[0, 3, 5, 9]]), torch.tensor([[0, 1, 2, 4, 8, 9]])
    assert torch.equal(alibi_bias(slopes, queries + shift, keys + shift), alibi_bias(slopes, queries, keys))
    assert not torch.equal(alibi_bias(slopes, queries + shift, keys), alibi_bias(slopes, queries, keys))


# --------------------------------------------------------------------------- whole models


@pytest.mark.parametrize("position", ["rope", "alibi", "none"])
@pytest.mark.parametrize("causal", [True, False])
def test_relative_positions_make_the_model_shift_invariant(position: str, causal: bool) -> None:
    model = tiny_decoder(position)
    ids = tokens(2, 12)
    positions = torch.arange(12).expand(2, 12)
    with torch.no_grad():
        base = model.body(ids, is_causal=causal, position_ids=positions)
        shifted = model.body(ids, is_causal=causal, position_ids=positions + 37)
    assert torch.allclose(base, shifted, atol=1e-4)


def test_learned_positions_are_not_shift_invariant() -> None:
    # the check above is not vacuous: absolute positions do move the outputs
    model = tiny_decoder("learned")
    ids = tokens(2, 12)
    positions = torch.arange(12).expand(2, 12)
    with torch.no_grad():
        base = model.body(ids, is_causal=True, position_ids=positions)
        shifted = model.body(ids, is_causal=True, position_ids=positions + 37)
    assert not torch.allclose(base, shifted, atol=1e-3)


# --------------------------------------------------------------------------- GLM 2D positions

TEN = np.arange(10, 20)
SPANS = [(2, 4), (7, 8)]  # [12, 13] and [17]
M, SOP, EOP, X = SPECIALS.mask, SPECIALS.sop, SPECIALS.eop, IGNORE_INDEX
PART_A = [10, 11, M, 14, 15, 16, M, 18, 19]
PART_A_POSITIONS = list(range(9))
# Part B for each order in which the shuffle may put the two spans (GLM §2.1-2.3):
# a span's tokens take its [MASK]'s position; block positions count 1.. inside a span
PART_B = {
    (0, 1): dict(
        input_ids=[SOP, 12, 13, SOP, 17],
        labels=[12, 13, EOP, 17, EOP],
        position_ids=[2, 2, 2, 6, 6],
        block_position_ids=[1, 2, 3, 1, 2],
    ),
    (1, 0): dict(
        input_ids=[SOP, 17, SOP, 12, 13],
        labels=[17, EOP, 12, 13, EOP],
        position_ids=[6, 6, 2, 2, 2],
        block_position_ids=[1, 2, 1, 2, 3],
    ),
}


@pytest.mark.parametrize("seed", [0, 3])
def test_glm_blank_infill_golden(seed: int) -> None:
    order = tuple(int(i) for i in np.random.default_rng(seed).permutation(len(SPANS)))
    part_b = PART_B[order]
    got = glm.blank_infill(TEN, SPANS, SPECIALS.mask, SPECIALS, np.random.default_rng(seed))
    assert got.part_a_len == 9
    assert got.input_ids.tolist() == PART_A + part_b["input_ids"]
    assert got.labels.tolist() == [X] * 9 + part_b["labels"]
    assert got.position_ids.tolist() == PART_A_POSITIONS + part_b["position_ids"]
    assert got.block_position_ids.tolist() == [0] * 9 + part_b["block_position_ids"]


def test_glm_golden_seeds_cover_both_span_orders() -> None:
    orders = {tuple(np.random.default_rng(seed).permutation(2).tolist()) for seed in (0, 3)}
    assert orders == set(PART_B)


def test_glm_blank_infill_gmask_golden() -> None:
    got = glm.blank_infill(TEN, [(6, 10)], SPECIALS.gmask, SPECIALS, np.random.default_rng(0))
    assert got.part_a_len == 7
    assert got.input_ids.tolist() == [10, 11, 12, 13, 14, 15, SPECIALS.gmask, SOP, 16, 17, 18, 19]
    assert got.labels.tolist() == [X] * 7 + [16, 17, 18, 19, EOP]
    assert got.position_ids.tolist() == [0, 1, 2, 3, 4, 5, 6] + [6] * 5
    assert got.block_position_ids.tolist() == [0] * 7 + [1, 2, 3, 4, 5]


def test_glm_block_positions_feed_the_model() -> None:
    # the 2D positions are data: changing only the block positions of Part B moves B's outputs, not A's
    torch.manual_seed(0)
    cfg = tiny_config("glm2d")
    model = registry.family("glm").build(cfg, {"family": "glm", "objective": "blank_infilling"}).eval()
    example = glm.blank_infill(TEN + 100, SPANS, SPECIALS.mask, SPECIALS, np.random.default_rng(0))
    batch = {
        "input_ids": torch.as_tensor(example.input_ids)[None],
        "position_ids": torch.as_tensor(example.position_ids)[None],
        "block_position_ids": torch.as_tensor(example.block_position_ids)[None],
        "part_a_len": torch.tensor([example.part_a_len]),
    }
    with torch.no_grad():
        before, _ = model(batch)
        batch["block_position_ids"] = torch.zeros_like(batch["block_position_ids"])
        after, _ = model(batch)
    assert torch.allclose(before[0, :9], after[0, :9], atol=ATOL)
    assert not torch.allclose(before[0, 9:], after[0, 9:], atol=1e-3)


# --------------------------------------------------------------------------- KV cache

KV_SETTINGS = {
    "learned": dict(position="learned"),
    "rope": dict(position="rope"),
    "alibi": dict(position="alibi"),
    "rope_multi_query": dict(position="rope", n_kv_heads=1, parallel_block=True),
    "neox_partial_rotary": dict(position="rope", rotary_pct=0.5, parallel_block=True),
}
@pytest.mark.parametrize("setting", list(KV_SETTINGS))
def test_kv_cache_one_token_at_a_time_matches_a_full_pass(setting: str) -> None:
    model = tiny_decoder(**KV_SETTINGS[setting])
    ids = tokens(2, 10)
    with torch.no_grad():
        full = model.body(ids, is_causal=True)
        cache = KVCache()
        steps = [model.body(ids[:, t : t + 1], is_causal=True, cache=cache) for t in range(ids.shape[1])]
    assert cache.length == ids.shape[1]
    assert torch.allclose(torch.cat(steps, dim=1), full, atol=ATOL)


@pytest.mark.parametrize("setting", list(KV_SETTINGS))
def test_kv_cache_prefill_then_step(setting: str) -> None:
    model = tiny_decoder(**KV_SETTINGS[setting])
    ids = tokens(2, 10)
    with torch.no_grad():
        full = model.body(ids, is_causal=True)
        cache = KVCache()
        prefill = model.body(ids[:, :6], is_causal=True, cache=cache)
        steps = [model.body(ids[:, t : t + 1], is_causal=True, cache=cache) for t in range(6, 10)]
    assert torch.allclose(prefill, full[:, :6], atol=ATOL)
    assert torch.allclose(torch.cat(steps, dim=1), full[:, 6:], atol=ATOL)


@pytest.mark.parametrize("setting", list(KV_SETTINGS))
def test_kv_cache_prefill_then_chunks(setting: str) -> None:
    model = tiny_decoder(**KV_SETTINGS[setting])
    ids = tokens(2, 10)
    with torch.no_grad():
        full = model.body(ids, is_causal=True)
        cache = KVCache()
        # a prefill of three, then chunks of three and two over the cached keys
        chunks = [model.body(ids[:, start:end], is_causal=True, cache=cache) for start, end in ((0, 3), (3, 6), (6, 8))]
    assert cache.length == 8
    assert torch.allclose(torch.cat(chunks, dim=1), full[:, :8], atol=ATOL)


@pytest.mark.parametrize("setting", list(KV_SETTINGS))
def test_kv_cache_steps_without_the_causal_flag(setting: str) -> None:
    # what the scorers do today: a single new query over the cache needs no mask at all
    model = tiny_decoder(**KV_SETTINGS[setting])
    ids = tokens(2, 10)
    with torch.no_grad():
        full = model.body(ids, is_causal=True)
        cache = KVCache()
        prefill = model.body(ids[:, :4], is_causal=True, cache=cache)
        steps = [model.body(ids[:, t : t + 1], cache=cache) for t in range(4, 10)]
    assert torch.allclose(torch.cat([prefill, *steps], dim=1), full, atol=ATOL)


@pytest.mark.parametrize("position", ["learned", "rope", "alibi"])
def test_kv_cache_in_the_encoder_decoder_decoder(position: str) -> None:
    torch.manual_seed(0)
    arch = {"family": "encoder_decoder", "objective": "span_corruption"}
    model = registry.family("encoder_decoder").build(tiny_config(position), arch).eval()
    batch = {"input_ids": tokens(2, 9, seed=1), "is_real": torch.tensor([[True] * 9, [True] * 6 + [False] * 3])}
    decoder_ids = tokens(2, 7, seed=2)
    with torch.no_grad():
        memory, memory_mask = model.encode(batch)
        full = model.decoder(decoder_ids, is_causal=True, memory=memory, memory_mask=memory_mask)
        cache = KVCache()
        prefill = model.decoder(decoder_ids[:, :2], is_causal=True, memory=memory, memory_mask=memory_mask, cache=cache)
        steps = [
            model.decoder(decoder_ids[:, t : t + 1], memory=memory, memory_mask=memory_mask, cache=cache)
            for t in range(2, 7)
        ]
    assert torch.allclose(torch.cat([prefill, *steps], dim=1), full, atol=ATOL)
