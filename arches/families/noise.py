"""Objective building blocks shared by several families: T5's span noise and
batch padding. (The objectives themselves live in the family files.)"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from arches.core.stack import IGNORE_INDEX
from arches.data.tokenizer import SENTINEL_COUNT
from arches.errors import UserError
from arches.families.objective import ArchConfig


def random_segmentation(rng: np.random.Generator, num_items: int, num_segments: int) -> np.ndarray:
    """Split `num_items` into `num_segments` non-empty runs, uniformly at random
    (T5's `random_spans_noise_mask` helper, Raffel et al. 2020 §3.1.4)."""
    first_in_segment = np.zeros(num_items, dtype=bool)
    cut_points = rng.choice(np.arange(1, num_items), size=num_segments - 1, replace=False)
    first_in_segment[cut_points] = True
    segment_ids = np.cumsum(first_in_segment)
    return np.bincount(segment_ids, minlength=num_segments)


def random_spans_noise_mask(
    rng: np.random.Generator, length: int, noise_density: float, mean_span_length: float
) -> np.ndarray:
    """A boolean mask of noise positions: about `noise_density * length` tokens in
    spans of mean length `mean_span_length`, alternating with kept runs, starting
    with a kept run (T5's span corruption)."""
    num_noise, num_spans = noise_span_counts(length, noise_density, mean_span_length)
    noise_lengths = random_segmentation(rng, num_noise, num_spans)
    kept_lengths = random_segmentation(rng, length - num_noise, num_spans)
    interleaved = np.stack([kept_lengths, noise_lengths], axis=1).reshape(-1)
    is_noise_run = np.tile([False, True], num_spans)
    return np.repeat(is_noise_run, interleaved)


def span_corrupt(
    tokens: np.ndarray, noise_mask: np.ndarray, sentinels: tuple[int, ...], eos: int
) -> tuple[np.ndarray, np.ndarray]:
    """T5's span corruption: each noise span becomes one sentinel in the inputs;
    the targets list each sentinel followed by the span it replaced, then eos."""
    inputs: list[int] = []
    targets: list[int] = []
    span = -1
    for position, token in enumerate(tokens.tolist()):
        if noise_mask[position]:
            if position == 0 or not noise_mask[position - 1]:
                span += 1
                if span >= len(sentinels):
                    raise ValueError(f"more noise spans than the {len(sentinels)} sentinel tokens")
                inputs.append(sentinels[span])
                targets.append(sentinels[span])
            targets.append(token)
        else:
            inputs.append(token)
    return np.array(inputs + [eos], dtype=np.int64), np.array(targets + [eos], dtype=np.int64)


def pad_stack(sequences: list[np.ndarray | list[int]], value: int, length: int | None = None) -> torch.Tensor:
    """Right-pad 1-D sequences to one length and stack them into a LongTensor."""
    length = length or max(len(s) for s in sequences)
    out = torch.full((len(sequences), length), value, dtype=torch.long)
    for row, sequence in enumerate(sequences):
        out[row, : len(sequence)] = torch.as_tensor(np.asarray(sequence, dtype=np.int64))
    return out


def pad_labels(sequences: list[np.ndarray | list[int]], length: int | None = None) -> torch.Tensor:
    return pad_stack(sequences, IGNORE_INDEX, length)


def span_counts(arch: Any, length: int) -> tuple[int, int]:
    """Noise tokens and spans that `random_spans_noise_mask` makes of `length` tokens
    with the preset's `noise_density` and `mean_span_length`."""
    settings = ArchConfig.of(arch)
    return noise_span_counts(length, settings.noise_density, settings.mean_span_length)


def noise_span_counts(length: int, noise_density: float, mean_span_length: float) -> tuple[int, int]:
    num_noise = int(np.clip(round(length * noise_density), 1, length - 1))
    num_spans = max(1, min(round(num_noise / mean_span_length), num_noise, length - num_noise))
    return num_noise, num_spans


def span_corrupted_lengths(arch: Any, length: int) -> tuple[int, int]:
    """The lengths `span_corrupt` gives a window of `length` tokens: (inputs, the kept
    tokens and a sentinel per span, then eos; targets, a sentinel and its span per
    span, then eos). They are fixed: the noise and span counts are."""
    noise, spans = span_counts(arch, length)
    return length - noise + spans + 1, noise + spans + 1


def check_sentinel_capacity(arch: Any, seq_len: int, sentinels: int = SENTINEL_COUNT) -> None:
    """Span corruption gives each noise span of a window its own sentinel (T5 §3.1.4):
    refuse, when the config is composed, a window that makes more spans than the
    tokenizer has sentinels, naming the longest data.seq_len that fits."""
    settings = ArchConfig.of(arch)
    _, spans = span_counts(settings, seq_len)
    if spans <= sentinels:
        return
    # the span count never falls as the window grows: bisect for the longest that fits
    fits, too_long = 2, seq_len
    while too_long - fits > 1:
        middle = (fits + too_long) // 2
        fits, too_long = (middle, too_long) if span_counts(settings, middle)[1] <= sentinels else (fits, middle)
    raise UserError(
        f"arch.noise_density={settings.noise_density} and arch.mean_span_length="
        f"{settings.mean_span_length} over data.seq_len={seq_len} make {spans} noise spans, but the "
        f"tokenizer has {sentinels} sentinels; lower data.seq_len (at most {fits} here) or raise arch.mean_span_length"
    )


def batch_rng(seed: int, windows: list[dict], fallback: np.random.Generator) -> np.random.Generator:
    """The generator for one batch's corruption (masks, spans, split points).

    When the windows carry their dataset `index` (arches.data.WindowDataset does), it
    is a pure function of (seed, the batch's window indices): a resumed run corrupts
    each batch exactly as an uninterrupted one, and every validation pass scores the
    same corruption. Windows built by hand, without an index, draw from `fallback`,
    one stream across batches."""
    if windows and all("index" in window for window in windows):
        return np.random.default_rng([int(seed) % 2**63, *(int(window["index"]) for window in windows)])
    return fallback
