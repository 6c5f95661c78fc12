"""Masks: golden matrices on hand-written examples, and leak tests through every family.

A leak test changes one input token and checks which output positions move: a
position that must not see the token keeps its logits (allclose, atol 1e-5), a
position that must see it changes. Every family in the registry needs an entry in
LEAK_TESTS, so a new family fails here until its visibility rules are pinned.
"""

from __future__ import annotations

import pytest
import torch
from conftest import FIRST_ORDINARY, SPECIALS, VOCAB

from arches import registry
from arches.core import masks
from arches.core.config import ModelConfig

KNOBS = ("learned", "rope", "alibi", "none")
ATOL = 1e-5
MOVED = 1e-4  # a position "sees" a change when its logits move by more than this


def tensor(rows: list) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.bool)


# --------------------------------------------------------------------------- golden masks


def test_causal_golden() -> None:
    expected = tensor(
        [
            [1, 0, 0, 0],
            [1, 1, 0, 0],
            [1, 1, 1, 0],
            [1, 1, 1, 1],
        ]
    )
    assert torch.equal(masks.causal(4), expected)


def test_bidirectional_golden() -> None:
    assert torch.equal(masks.bidirectional(3), tensor([[1, 1, 1], [1, 1, 1], [1, 1, 1]]))


def test_prefix_golden_two_prefix_lengths_in_one_batch() -> None:
    got = masks.prefix(5, torch.tensor([2, 4]))
    expected = tensor(
        [
            [  # prefix_len 2: the first two see each other, then causal
                [1, 1, 0, 0, 0],
                [1, 1, 0, 0, 0],
                [1, 1, 1, 0, 0],
                [1, 1, 1, 1, 0],
                [1, 1, 1, 1, 1],
            ],
            [  # prefix_len 4
                [1, 1, 1, 1, 0],
                [1, 1, 1, 1, 0],
                [1, 1, 1, 1, 0],
                [1, 1, 1, 1, 0],
                [1, 1, 1, 1, 1],
            ],
        ]
    )[:, None]
    assert got.shape == (2, 1, 5, 5)
    assert torch.equal(got, expected)


def test_prefix_extremes_are_causal_and_bidirectional() -> None:
    got = masks.prefix(4, torch.tensor([0, 1, 4]))
    assert torch.equal(got[0, 0], masks.causal(4))
    assert torch.equal(got[1, 0], masks.causal(4))  # a prefix of one token adds nothing
    assert torch.equal(got[2, 0], masks.bidirectional(4))


def test_glm_golden() -> None:
    # Part A = the first part_a_len tokens (bidirectional); Part B causal and sees all of A
    got = masks.glm(6, torch.tensor([3, 2]))
    expected = tensor(
        [
            [
                [1, 1, 1, 0, 0, 0],
                [1, 1, 1, 0, 0, 0],
                [1, 1, 1, 0, 0, 0],
                [1, 1, 1, 1, 0, 0],
                [1, 1, 1, 1, 1, 0],
                [1, 1, 1, 1, 1, 1],
            ],
            [
                [1, 1, 0, 0, 0, 0],
                [1, 1, 0, 0, 0, 0],
                [1, 1, 1, 0, 0, 0],
                [1, 1, 1, 1, 0, 0],
                [1, 1, 1, 1, 1, 0],
                [1, 1, 1, 1, 1, 1],
            ],
        ]
    )[:, None]
    assert torch.equal(got, expected)


def test_documents_golden_three_packed_documents() -> None:
    got = masks.documents(torch.tensor([[0, 0, 1, 1, 1, 2]]))
    expected = tensor(
        [
            [1, 1, 0, 0, 0, 0],
            [1, 1, 0, 0, 0, 0],
            [0, 0, 1, 1, 1, 0],
            [0, 0, 1, 1, 1, 0],
            [0, 0, 1, 1, 1, 0],
            [0, 0, 0, 0, 0, 1],
        ]
    )
    assert got.shape == (1, 1, 6, 6)
    assert torch.equal(got[0, 0], expected)


def test_documents_and_causal_golden() -> None:
    got = masks.combine(masks.causal(6), masks.documents(torch.tensor([[0, 0, 1, 1, 1, 2]])))
    expected = tensor(
        [
            [1, 0, 0, 0, 0, 0],
            [1, 1, 0, 0, 0, 0],
            [0, 0, 1, 0, 0, 0],
            [0, 0, 1, 1, 0, 0],
            [0, 0, 1, 1, 1, 0],
            [0, 0, 0, 0, 0, 1],
        ]
    )
    assert torch.equal(got[0, 0], expected)


def test_padding_golden() -> None:
    is_real = tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    got = masks.padding(is_real)
    assert got.shape == (2, 1, 1, 4)
    assert torch.equal(got, tensor([[[[1, 1, 1, 0]]], [[[1, 1, 0, 0]]]]))


def test_combine_golden_and_none_handling() -> None:
    is_real = tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    got = masks.combine(None, masks.causal(4), None, masks.padding(is_real))
    expected = tensor(
        [
            [
                [1, 0, 0, 0],
                [1, 1, 0, 0],
                [1, 1, 1, 0],
                [1, 1, 1, 0],
            ],
            [
                [1, 0, 0, 0],
                [1, 1, 0, 0],
                [1, 1, 0, 0],
                [1, 1, 0, 0],
            ],
        ]
    )[:, None]
    assert got.shape == (2, 1, 4, 4)
    assert torch.equal(got, expected)
    assert masks.combine(None, None) is None
    single = masks.causal(3)
    assert masks.combine(None, single) is single


def test_with_self_golden() -> None:
    # the padded query (row 3 of the first example) sees no real key after a
    # document split; with_self gives it its own key so softmax has a finite row
    mask = masks.combine(
        masks.causal(4),
        masks.documents(torch.tensor([[0, 0, 1, 2]])),
        masks.padding(tensor([[1, 1, 1, 0]])),
    )
    assert not mask[0, 0, 3].any()
    expected = tensor(
        [
            [1, 0, 0, 0],
            [1, 1, 0, 0],
            [0, 0, 1, 0],
            [0, 0, 0, 1],
        ]
    )
    assert torch.equal(masks.with_self(mask)[0, 0], expected)


def test_with_self_leaves_non_square_masks_alone() -> None:
    padding = masks.padding(tensor([[1, 1, 0]]))  # (B, 1, 1, S): not square
    assert torch.equal(masks.with_self(padding), padding)
    cached = masks.causal(5)[3:]  # two new queries over five keys
    assert torch.equal(masks.with_self(cached), cached)


# --------------------------------------------------------------------------- leak tests


def tiny_config(position: str = "learned", **overrides) -> ModelConfig:
    values = dict(vocab_size=VOCAB, d_model=32, n_layers=2, n_heads=4, max_len=64, position=position)
    values.update(overrides)
    return ModelConfig(**values)


def build(family: str, arch: dict, cfg: ModelConfig) -> torch.nn.Module:
    torch.manual_seed(0)
    return registry.family(family).build(cfg, arch).eval()


def random_tokens(*shape: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(FIRST_ORDINARY, VOCAB, shape, generator=generator)


def changed_token(value: int) -> int:
    return FIRST_ORDINARY + (value - FIRST_ORDINARY + 1) % (VOCAB - FIRST_ORDINARY)


@torch.no_grad()
def logits_after_change(model, batch: dict, key: str, row: int, position: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits of `batch` and of `batch` with `batch[key][row, position]` replaced."""
    before, _ = model(batch)
    edited = {k: v.clone() for k, v in batch.items()}
    edited[key][row, position] = changed_token(int(edited[key][row, position]))
    after, _ = model(edited)
    return before[row], after[row]


def assert_unchanged(before: torch.Tensor, after: torch.Tensor, positions, why: str) -> None:
    positions = list(positions)
    assert positions, "the test must check at least one position"
    assert torch.allclose(before[positions], after[positions], atol=ATOL), why


def assert_changed(before: torch.Tensor, after: torch.Tensor, positions, why: str) -> None:
    positions = list(positions)
    assert positions, "the test must check at least one position"
    moved = (before[positions] - after[positions]).abs().amax(dim=-1)
    assert (moved > MOVED).all(), f"{why}: positions {[p for p, m in zip(positions, moved) if m <= MOVED]} did not move"


DECODER = {"family": "decoder", "objective": "lm"}
PREFIX_DECODER = {"family": "decoder", "objective": "prefix_lm", "prefix_lm": True}
ENCODER = {"family": "encoder", "objective": "mlm"}
ENCODER_DECODER = {"family": "encoder_decoder", "objective": "span_corruption"}
GLM = {"family": "glm", "objective": "blank_infilling"}


@pytest.mark.parametrize("position", KNOBS)
def test_decoder_is_causal(position: str) -> None:
    model = build("decoder", DECODER, tiny_config(position))
    batch = {"input_ids": random_tokens(2, 16)}
    before, after = logits_after_change(model, batch, "input_ids", row=1, position=9)
    assert_unchanged(before, after, range(9), "a causal position saw a later token")
    assert_changed(before, after, range(9, 16), "a causal position missed an earlier token")


@pytest.mark.parametrize("position", KNOBS)
def test_decoder_documents_do_not_see_each_other(position: str) -> None:
    model = build("decoder", DECODER, tiny_config(position))
    doc_ids = torch.tensor([[0] * 5 + [1] * 6 + [2] * 5])
    batch = {"input_ids": random_tokens(1, 16), "doc_ids": doc_ids}
    before, after = logits_after_change(model, batch, "input_ids", row=0, position=6)  # inside document 1
    assert_unchanged(before, after, [*range(6), *range(11, 16)], "a token leaked across a document boundary")
    assert_changed(before, after, range(6, 11), "a token was hidden from its own document")


@pytest.mark.parametrize("position", KNOBS)
def test_non_causal_decoder_prefix_is_bidirectional(position: str) -> None:
    model = build("decoder", PREFIX_DECODER, tiny_config(position))
    batch = {"input_ids": random_tokens(2, 16), "prefix_len": torch.tensor([6, 10])}
    before, after = logits_after_change(model, batch, "input_ids", row=0, position=3)
    assert_changed(before, after, range(16), "a prefix token was hidden from some position")
    before, after = logits_after_change(model, batch, "input_ids", row=1, position=2)
    assert_changed(before, after, range(16), "a prefix token was hidden from some position")


@pytest.mark.parametrize("position", KNOBS)
def test_non_causal_decoder_is_causal_after_the_prefix(position: str) -> None:
    model = build("decoder", PREFIX_DECODER, tiny_config(position))
    batch = {"input_ids": random_tokens(2, 16), "prefix_len": torch.tensor([6, 10])}
    before, after = logits_after_change(model, batch, "input_ids", row=0, position=9)
    assert_unchanged(before, after, range(9), "a token after the prefix leaked backwards")
    assert_changed(before, after, range(9, 16), "a later position missed a token")
    before, after = logits_after_change(model, batch, "input_ids", row=1, position=12)
    assert_unchanged(before, after, range(12), "a token after the prefix leaked backwards")
    assert_changed(before, after, range(12, 16), "a later position missed a token")


@pytest.mark.parametrize("position", KNOBS)
def test_encoder_sees_everything(position: str) -> None:
    model = build("encoder", ENCODER, tiny_config(position))
    batch = {"input_ids": random_tokens(2, 12)}
    before, after = logits_after_change(model, batch, "input_ids", row=0, position=7)
    assert_changed(before, after, range(12), "an encoder position missed a token")


@pytest.mark.parametrize("position", KNOBS)
def test_encoder_documents_and_padding(position: str) -> None:
    model = build("encoder", ENCODER, tiny_config(position))
    doc_ids = torch.tensor([[0] * 4 + [1] * 5 + [2] * 3, [0] * 12])
    is_real = torch.tensor([[True] * 12, [True] * 8 + [False] * 4])
    batch = {"input_ids": random_tokens(2, 12), "doc_ids": doc_ids, "is_real": is_real}
    before, after = logits_after_change(model, batch, "input_ids", row=0, position=5)  # document 1
    assert_unchanged(before, after, [*range(4), *range(9, 12)], "a token leaked across a document boundary")
    assert_changed(before, after, range(4, 9), "a token was hidden from its own document")
    before, after = logits_after_change(model, batch, "input_ids", row=1, position=10)  # a padded key
    assert_unchanged(before, after, range(8), "a padded key changed a real position")
    before, after = logits_after_change(model, batch, "input_ids", row=1, position=3)
    assert_changed(before, after, range(8), "a real token was hidden")
    assert torch.isfinite(before).all(), "padded queries must not produce NaN"


def seq2seq_batch() -> dict:
    return {
        "input_ids": random_tokens(2, 10, seed=1),
        "is_real": torch.tensor([[True] * 10, [True] * 7 + [False] * 3]),
        "decoder_input_ids": random_tokens(2, 8, seed=2),
    }


@pytest.mark.parametrize("position", KNOBS)
def test_encoder_decoder_decoder_is_causal(position: str) -> None:
    model = build("encoder_decoder", ENCODER_DECODER, tiny_config(position))
    before, after = logits_after_change(model, seq2seq_batch(), "decoder_input_ids", row=1, position=4)
    assert_unchanged(before, after, range(4), "a decoder position saw a later decoder input")
    assert_changed(before, after, range(4, 8), "a decoder position missed an earlier decoder input")


@pytest.mark.parametrize("position", KNOBS)
def test_encoder_decoder_sees_the_whole_real_encoder_input(position: str) -> None:
    model = build("encoder_decoder", ENCODER_DECODER, tiny_config(position))
    before, after = logits_after_change(model, seq2seq_batch(), "input_ids", row=0, position=9)
    assert_changed(before, after, range(8), "a decoder position missed an encoder token")
    before, after = logits_after_change(model, seq2seq_batch(), "input_ids", row=1, position=8)  # padding
    assert_unchanged(before, after, range(8), "a padded encoder position changed the decoder")


def glm_batch(seed: int = 0) -> dict:
    arch = {"family": "glm", "objective": "blank_infilling", "mask_rate": 0.25}
    collate = registry.family("glm").collate(arch, SPECIALS, 16, seed=seed, vocab_size=VOCAB)
    windows = [{"tokens": random_tokens(16, seed=s), "doc_ids": torch.zeros(16, dtype=torch.long)} for s in (3, 4)]
    batch = collate(windows)
    del batch["labels"]  # with labels the head runs on Part B only; these tests read every position's logits
    return batch


def test_glm_part_a_is_bidirectional_and_blind_to_part_b() -> None:
    model = build("glm", GLM, tiny_config("glm2d"))
    batch = glm_batch()
    part_a, total = int(batch["part_a_len"][0]), int(batch["is_real"][0].sum())
    assert part_a < total
    for position in (0, part_a - 1):
        before, after = logits_after_change(model, batch, "input_ids", row=0, position=position)
        assert_changed(before, after, range(total), "a Part A token was hidden from some position (A or B)")
    for position in (part_a, total - 1):
        before, after = logits_after_change(model, batch, "input_ids", row=0, position=position)
        assert_unchanged(before, after, range(part_a), "Part A saw Part B")


def test_glm_part_b_is_causal() -> None:
    model = build("glm", GLM, tiny_config("glm2d"))
    batch = glm_batch()
    part_a, total = int(batch["part_a_len"][1]), int(batch["is_real"][1].sum())
    middle = (part_a + total) // 2
    assert part_a < middle < total - 1
    before, after = logits_after_change(model, batch, "input_ids", row=1, position=middle)
    assert_unchanged(before, after, range(middle), "a Part B token leaked backwards")
    assert_changed(before, after, range(middle, total), "a later Part B position missed an earlier one")


def test_glm_padding_is_invisible() -> None:
    model = build("glm", GLM, tiny_config("glm2d"))
    for seed in range(20):  # find a batch whose rows differ in length
        batch = glm_batch(seed)
        real = batch["is_real"].sum(1)
        if real[0] != real[1]:
            break
    else:
        pytest.fail("no batch with padding in 20 seeds")
    short = int(real.argmin())
    length = int(real[short])
    before, after = logits_after_change(model, batch, "input_ids", row=short, position=length)
    assert_unchanged(before, after, range(length), "a padded position changed a real one")
    assert torch.isfinite(before).all()


@pytest.mark.parametrize("position", ["learned", "alibi"])
def test_a_mask_and_is_causal_combine(position: str) -> None:
    # the cached path already ANDs a given mask with the causal one; a fresh pass must too
    torch.manual_seed(0)
    body = registry.family("decoder").build(tiny_config(position), DECODER).eval().body
    ids = random_tokens(2, 8)
    all_real = masks.padding(torch.ones(2, 8, dtype=torch.bool))
    with torch.no_grad():
        assert torch.allclose(body(ids, mask=all_real, is_causal=True), body(ids, is_causal=True), atol=ATOL)


LEAK_TESTS = {
    "decoder": (test_decoder_is_causal, test_non_causal_decoder_prefix_is_bidirectional),
    "encoder": (test_encoder_sees_everything, test_encoder_documents_and_padding),
    "encoder_decoder": (test_encoder_decoder_decoder_is_causal, test_encoder_decoder_sees_the_whole_real_encoder_input),
    "glm": (test_glm_part_a_is_bidirectional_and_blind_to_part_b, test_glm_part_b_is_causal),
}


@pytest.mark.parametrize("family", sorted(registry.FAMILIES))
def test_every_family_has_leak_tests(family: str) -> None:
    assert family in LEAK_TESTS, f"family '{family}' has no leak tests in tests/test_masks.py"
