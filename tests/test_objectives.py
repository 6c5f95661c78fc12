"""Objective invariants: BERT's masking rate and 80/10/10 split, T5's span corruption
(noise rate, span length, inputs + targets reconstructing the text), the decoder's
prefix-LM and concatenated span-corruption batches, GLM's span sampling and its
Parts A + B reconstructing the text (both [MASK] and [gMASK]), and the
encoder-decoder's teacher forcing. Collators are run on hand-made windows, never
through the data pipeline."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import FIRST_ORDINARY, SPECIALS, VOCAB, composed, windows

from arches import registry
from arches.config import group_choices
from arches.core import masks
from arches.core.stack import IGNORE_INDEX
from arches.data.tokenizer import SPECIAL_TOKENS
from arches.families import glm
from arches.families.noise import random_spans_noise_mask, span_corrupt, span_counts

PRESETS = {name: composed(name)[0] for name in group_choices("arch")}  # each preset's arch section


def presets_with(family: str, objective: str | None = None) -> list[str]:
    names = [n for n, a in PRESETS.items() if a["family"] == family and objective in (None, a.get("objective"))]
    assert names, f"no {family} preset with objective {objective}"
    return names


def collator(arch: dict, seq_len: int, seed: int = 0):
    return registry.family(arch["family"]).collate(arch, SPECIALS, seq_len, seed=seed, vocab_size=VOCAB)


def uncorrupt(inputs: list[int], targets: list[int]) -> list[int]:
    """Undo T5's span corruption: each sentinel in the inputs becomes the tokens that
    follow the same sentinel in the targets."""
    assert inputs[-1] == SPECIALS.eos and targets[-1] == SPECIALS.eos
    spans: dict[int, list[int]] = {}
    current = None
    for token in targets[:-1]:
        if token in SPECIALS.sentinels:
            assert token not in spans, "a sentinel opens two spans"
            current = spans[token] = []
        else:
            assert current is not None, "targets must open with a sentinel"
            current.append(token)
    used = [t for t in inputs if t in SPECIALS.sentinels]
    assert used == list(SPECIALS.sentinels[: len(used)]), "sentinels are used in order"
    assert sorted(used) == sorted(spans), "every sentinel in the inputs has its span in the targets"
    assert all(spans.values()), "no empty span"
    original: list[int] = []
    for token in inputs[:-1]:
        original.extend(spans[token] if token in SPECIALS.sentinels else [token])
    return original


# --------------------------------------------------------------------------- BERT's masked LM


@pytest.mark.parametrize("preset", presets_with("encoder", "mlm"))
@pytest.mark.parametrize("seq_len", [10, 32, 100])
def test_mlm_labels_exactly_the_masking_rate(preset: str, seq_len: int) -> None:
    arch = PRESETS[preset]
    batch_windows = windows(8, seq_len, documents=2, index=False)
    batch = collator(arch, seq_len)(batch_windows)
    original = torch.stack([w["tokens"] for w in batch_windows])
    labelled = batch["labels"] != IGNORE_INDEX
    assert labelled.sum(1).tolist() == [round(arch.get("mask_rate", 0.15) * seq_len)] * 8
    assert torch.equal(batch["labels"][labelled], original[labelled])
    assert torch.equal(batch["input_ids"][~labelled], original[~labelled]), "unchosen positions stay as they were"


def test_mlm_80_10_10_split() -> None:
    arch = {"family": "encoder", "objective": "mlm", "mask_rate": 0.15}
    collate = collator(arch, 100, seed=1)
    masked = randomised = kept = 0
    for seed in range(30):
        batch_windows = windows(64, 100, seed=seed, documents=2, index=False)
        batch = collate(batch_windows)
        original = torch.stack([w["tokens"] for w in batch_windows])
        labelled = batch["labels"] != IGNORE_INDEX
        inputs, truth = batch["input_ids"][labelled], original[labelled]
        is_mask = inputs == SPECIALS.mask
        is_same = inputs == truth
        masked += int(is_mask.sum())
        kept += int(is_same.sum())
        randomised += int((~is_mask & ~is_same).sum())
        replaced = inputs[~is_mask & ~is_same]
        assert (replaced >= len(SPECIAL_TOKENS)).all() and (replaced < VOCAB).all(), "random tokens are ordinary ones"
    total = masked + randomised + kept
    assert total == 30 * 64 * 15
    # 28,800 draws: one standard deviation of a 10% share is 0.0018
    assert abs(masked / total - 0.8) < 0.015
    assert abs(randomised / total - 0.1) < 0.012
    assert abs(kept / total - 0.1) < 0.012


def test_mlm_document_mask_passes_doc_ids() -> None:
    arch = {"family": "encoder", "objective": "mlm", "document_mask": True}
    batch_windows = windows(2, 16, documents=2, index=False)
    batch = collator(arch, 16)(batch_windows)
    assert torch.equal(batch["doc_ids"], torch.stack([w["doc_ids"] for w in batch_windows]))
    assert "doc_ids" not in collator({"family": "encoder", "objective": "mlm"}, 16)(batch_windows)


@pytest.mark.parametrize("preset", presets_with("encoder", "mlm"))
def test_mlm_never_chooses_special_tokens(preset: str) -> None:
    # short documents: an <eos> every few tokens, and a padded tail
    arch, length = PRESETS[preset], 64
    rng = np.random.default_rng(0)
    batch_windows = []
    for row in range(32):
        tokens = rng.integers(FIRST_ORDINARY, VOCAB, size=length)
        tokens[rng.random(length) < 0.3] = SPECIALS.eos
        tokens[length - row :] = SPECIALS.pad
        batch_windows.append({"tokens": torch.as_tensor(tokens), "doc_ids": torch.zeros(length, dtype=torch.long)})
    batch = collator(arch, length)(batch_windows)
    original = torch.stack([w["tokens"] for w in batch_windows])
    labelled = batch["labels"] != IGNORE_INDEX
    assert (original[labelled] >= FIRST_ORDINARY).all(), "a special token (<eos>, <pad>) became a target"
    ordinary = (original >= FIRST_ORDINARY).sum(1)
    expected = [max(1, round(arch.get("mask_rate", 0.15) * int(n))) for n in ordinary]
    assert labelled.sum(1).tolist() == expected, "round(mask_rate x ordinary positions) per window"
    assert torch.equal(batch["input_ids"][~labelled], original[~labelled])


# --------------------------------------------------------------------------- T5's span corruption


def test_span_noise_rate_and_mean_span_length() -> None:
    rng = np.random.default_rng(0)
    noise_total, span_lengths = 0, []
    for _ in range(200):
        noise = random_spans_noise_mask(rng, 512, 0.15, 3.0)
        assert noise.shape == (512,) and noise.dtype == bool
        noise_total += int(noise.sum())
        starts = np.flatnonzero(noise & ~np.concatenate([[False], noise[:-1]]))
        ends = np.flatnonzero(noise & ~np.concatenate([noise[1:], [False]])) + 1
        span_lengths.extend((ends - starts).tolist())
    assert abs(noise_total / (200 * 512) - 0.15) < 0.005
    assert abs(np.mean(span_lengths) - 3.0) < 0.1
    assert min(span_lengths) >= 1 and max(span_lengths) > 5, "span lengths vary"


@pytest.mark.parametrize("length", [8, 32, 101, 512])
def test_span_corrupt_reconstructs_the_original(length: int) -> None:
    rng = np.random.default_rng(length)
    for _ in range(20):
        tokens = rng.integers(FIRST_ORDINARY, VOCAB, size=length)
        noise = random_spans_noise_mask(rng, length, 0.15, 3.0)
        inputs, targets = span_corrupt(tokens, noise, SPECIALS.sentinels, SPECIALS.eos)
        num_noise, num_spans = span_counts({}, length)
        assert len(inputs) == length - num_noise + num_spans + 1
        assert len(targets) == num_noise + num_spans + 1
        assert uncorrupt(inputs.tolist(), targets.tolist()) == tokens.tolist()


def test_span_corrupt_golden() -> None:
    tokens = np.array([10, 11, 12, 13, 14, 15, 16, 17])
    noise = np.array([0, 1, 1, 0, 0, 0, 1, 0], dtype=bool)
    s0, s1 = SPECIALS.sentinels[:2]
    inputs, targets = span_corrupt(tokens, noise, SPECIALS.sentinels, SPECIALS.eos)
    assert inputs.tolist() == [10, s0, 13, 14, 15, s1, 17, SPECIALS.eos]
    assert targets.tolist() == [s0, 11, 12, s1, 16, SPECIALS.eos]


@pytest.mark.parametrize("preset", presets_with("encoder_decoder", "span_corruption"))
def test_encoder_decoder_span_corruption_batch(preset: str) -> None:
    arch = PRESETS[preset]
    collate = collator(arch, 32)
    for seed in range(5):
        batch_windows = windows(4, 32, seed=seed, documents=2, index=False)
        batch = collate(batch_windows)
        for row, window in enumerate(batch_windows):
            encoder_input = batch["input_ids"][row][batch["is_real"][row]].tolist()
            assert (batch["input_ids"][row][~batch["is_real"][row]] == SPECIALS.pad).all()
            labels = batch["labels"][row]
            targets = labels[labels != IGNORE_INDEX].tolist()
            assert uncorrupt(encoder_input, targets) == window["tokens"].tolist()
            noise, spans = span_counts(arch, 32)
            assert len(targets) == noise + spans + 1


@pytest.mark.parametrize("objective", ["span_corruption", "prefix_lm"])
def test_encoder_decoder_teacher_forcing(objective: str) -> None:
    arch = {"family": "encoder_decoder", "objective": objective}
    collate = collator(arch, 32)
    for seed in range(5):
        batch_windows = windows(4, 32, seed=seed, documents=2, index=False)
        batch = collate(batch_windows)
        for row, window in enumerate(batch_windows):
            labels = batch["labels"][row]
            real = labels != IGNORE_INDEX
            length = int(real.sum())
            assert real[:length].all() and not real[length:].any(), "labels are right-padded"
            decoder_inputs = batch["decoder_input_ids"][row]
            assert decoder_inputs[:length].tolist() == [SPECIALS.bos] + labels[: length - 1].tolist()
            assert (decoder_inputs[length:] == SPECIALS.pad).all()
            if objective == "prefix_lm":
                encoder_input = batch["input_ids"][row][batch["is_real"][row]].tolist()
                assert 1 <= len(encoder_input) < 32
                assert encoder_input + labels[:length].tolist() == window["tokens"].tolist()


# --------------------------------------------------------------------------- the decoder's objectives


def test_decoder_lm_batch_shifts_by_one() -> None:
    batch_windows = windows(3, 16, documents=2, index=False)
    batch = collator({"family": "decoder", "objective": "lm"}, 16)(batch_windows)
    tokens = torch.stack([w["tokens"] for w in batch_windows])
    assert torch.equal(batch["input_ids"], tokens[:, :-1])
    assert torch.equal(batch["labels"], tokens[:, 1:])


@pytest.mark.parametrize("preset", presets_with("decoder", "prefix_lm"))
def test_decoder_prefix_lm_has_no_labels_inside_the_prefix(preset: str) -> None:
    arch = PRESETS[preset]
    collate = collator(arch, 16)
    seen_prefix_lens = set()
    for seed in range(40):
        batch_windows = windows(4, 16, seed=seed, documents=2, index=False)
        batch = collate(batch_windows)
        tokens = torch.stack([w["tokens"] for w in batch_windows])
        length = batch["input_ids"].shape[1]
        visible = masks.prefix(length, batch["prefix_len"])[:, 0]
        for row in range(4):
            prefix_len = int(batch["prefix_len"][row])
            seen_prefix_lens.add(prefix_len)
            assert 1 <= prefix_len < length
            labels = batch["labels"][row]
            # input position p predicts token p+1: targets inside the prefix carry no loss
            assert (labels[: prefix_len - 1] == IGNORE_INDEX).all()
            assert torch.equal(labels[prefix_len - 1 :], tokens[row, prefix_len:])
            for position in torch.nonzero(labels != IGNORE_INDEX).flatten().tolist():
                if position + 1 < length:
                    assert not visible[row, position, position + 1], "a labelled position sees its own target"
    assert seen_prefix_lens == set(range(1, 15)), "the split point is uniform over the window"


@pytest.mark.parametrize("non_causal", [False, True])
def test_decoder_span_corruption_labels_only_the_targets(non_causal: bool) -> None:
    arch = {"family": "decoder", "objective": "span_corruption", "prefix_lm": non_causal}
    collate = collator(arch, 32)
    spec = registry.family("decoder")
    for seed in range(5):
        batch_windows = windows(4, 32, seed=seed, documents=2, index=False)
        batch = collate(batch_windows)
        length = batch["input_ids"].shape[1]
        assert length <= spec.input_len(arch, 32)
        if non_causal:
            visible = masks.prefix(length, batch["prefix_len"])[:, 0]
        else:
            visible = masks.causal(length)[None].expand(len(batch_windows), -1, -1)
        for row, window in enumerate(batch_windows):
            prefix_len = int(batch["prefix_len"][row])
            inputs = batch["input_ids"][row, :prefix_len].tolist()
            labels = batch["labels"][row]
            labelled = torch.nonzero(labels != IGNORE_INDEX).flatten().tolist()
            assert labelled == list(range(prefix_len - 1, prefix_len - 1 + len(labelled))), "one run of labels"
            targets = labels[labelled].tolist()
            assert uncorrupt(inputs, targets) == window["tokens"].tolist()
            for position in labelled:
                if position + 1 < length:
                    assert not visible[row, position, position + 1], "a labelled position sees its target"
            # teacher forcing: after the inputs the sequence is the targets (all but the last)
            assert batch["input_ids"][row, prefix_len : prefix_len + len(targets) - 1].tolist() == targets[:-1]


# --------------------------------------------------------------------------- GLM


@pytest.mark.parametrize("length", [7, 20, 32, 100, 256])
def test_glm_sample_spans_invariants(length: int) -> None:
    rng = np.random.default_rng(length)
    covered = np.zeros(length, dtype=int)
    span_lengths = []
    for _ in range(300):
        spans = glm.sample_spans(rng, length, 0.15, 3.0)
        assert spans == sorted(spans)
        assert all(0 <= start < end <= length for start, end in spans)
        assert all(end <= next_start for (_, end), (next_start, _) in zip(spans, spans[1:])), "spans overlap"
        assert sum(end - start for start, end in spans) == max(1, round(0.15 * length))
        for start, end in spans:
            covered[start:end] += 1
            span_lengths.append(end - start)
    assert (covered > 0).all(), "every position, first and last included, is sometimes masked"
    if length >= 100:
        assert 2.3 < np.mean(span_lengths) < 3.5, "Poisson(3) lengths, the last one cut to the budget"


@pytest.mark.parametrize(("length", "mask_rate"), [(32, 0.15), (256, 0.15), (20, 0.6), (12, 0.9), (10, 1.0)])
def test_glm_spans_keep_a_token_between_them(length: int, mask_rate: float) -> None:
    # THUDM/GLM's sample_spans keeps one unmasked token after each span; with a budget
    # that leaves too few kept tokens for the gaps, spans merge rather than touch
    rng = np.random.default_rng(length)
    neighbours = 0
    for _ in range(1000):
        spans = glm.sample_spans(rng, length, mask_rate, 3.0)
        assert spans == sorted(spans) and all(0 <= start < end <= length for start, end in spans)
        assert sum(end - start for start, end in spans) == min(length, max(1, round(mask_rate * length)))
        for (_, end), (next_start, _) in zip(spans, spans[1:]):
            assert next_start > end, f"spans touch or overlap: {spans}"
            neighbours += 1
    if mask_rate < 0.5:
        assert neighbours > 1000, "several spans per window"


def glm_parts(batch: dict, row: int) -> tuple[list[int], list[tuple[int, list[int]]]]:
    """Check one GLM row's layout; return Part A and the (mask position, span) pairs of Part B."""
    part_a = int(batch["part_a_len"][row])
    real = int(batch["is_real"][row].sum())
    ids, labels = batch["input_ids"][row], batch["labels"][row]
    positions, blocks = batch["position_ids"][row], batch["block_position_ids"][row]
    assert (labels[:part_a] == IGNORE_INDEX).all() and (labels[real:] == IGNORE_INDEX).all()
    assert positions[:part_a].tolist() == list(range(part_a)) and (blocks[:part_a] == 0).all()
    assert (ids[real:] == SPECIALS.pad).all()
    starts = [part_a + i for i in torch.nonzero(blocks[part_a:real] == 1).flatten().tolist()]
    assert starts and starts[0] == part_a
    spans = []
    for start, end in zip(starts, starts[1:] + [real]):
        segment = ids[start:end].tolist()
        assert segment[0] == SPECIALS.sop
        assert blocks[start:end].tolist() == list(range(1, end - start + 1))
        assert len(set(positions[start:end].tolist())) == 1, "a span's tokens share its [MASK]'s position"
        assert labels[start:end].tolist() == segment[1:] + [SPECIALS.eop]
        spans.append((int(positions[start]), segment[1:]))
    return ids[:part_a].tolist(), spans


def fill_blanks(part_a: list[int], spans: list[tuple[int, list[int]]], mask_token: int) -> list[int]:
    by_position = dict(spans)
    assert len(by_position) == len(spans), "two spans claim one [MASK]"
    assert sorted(by_position) == [i for i, t in enumerate(part_a) if t == mask_token]
    text: list[int] = []
    for index, token in enumerate(part_a):
        text.extend(by_position[index] if index in by_position else [token])
    return text


@pytest.mark.parametrize("preset", presets_with("glm"))
def test_glm_parts_reconstruct_the_text_mask(preset: str) -> None:
    arch = dict(PRESETS[preset], gmask_ratio=0.0)
    collate = collator(arch, 32)
    for seed in range(5):
        batch_windows = windows(4, 32, seed=seed, documents=2, index=False)
        batch = collate(batch_windows)
        for row, window in enumerate(batch_windows):
            part_a, spans = glm_parts(batch, row)
            assert SPECIALS.gmask not in part_a
            assert sum(len(span) for _, span in spans) == round(arch.get("mask_rate", 0.15) * 32)
            assert fill_blanks(part_a, spans, SPECIALS.mask) == window["tokens"].tolist()


@pytest.mark.parametrize("preset", presets_with("glm"))
def test_glm_parts_reconstruct_the_text_gmask(preset: str) -> None:
    arch = dict(PRESETS[preset], gmask_ratio=1.0)
    collate = collator(arch, 32)
    span_lengths = set()
    for seed in range(10):
        batch_windows = windows(4, 32, seed=seed, documents=2, index=False)
        batch = collate(batch_windows)
        for row, window in enumerate(batch_windows):
            part_a, spans = glm_parts(batch, row)
            assert len(spans) == 1 and part_a[-1] == SPECIALS.gmask and spans[0][0] == len(part_a) - 1
            assert 16 <= len(spans[0][1]) <= 31, "one span of at least half the text, leaving some context"
            span_lengths.add(len(spans[0][1]))
            assert fill_blanks(part_a, spans, SPECIALS.gmask) == window["tokens"].tolist()
    assert len(span_lengths) > 5, "the [gMASK] span length varies"


def test_glm_gmask_ratio_mixes_the_objectives() -> None:
    collate = collator({"family": "glm", "objective": "blank_infilling", "gmask_ratio": 0.5}, 32)
    generation = 0
    for seed in range(25):
        batch = collate(windows(16, 32, seed=seed, documents=2, index=False))
        generation += int((batch["input_ids"] == SPECIALS.gmask).any(1).sum())
    assert 0.4 < generation / 400 < 0.6
