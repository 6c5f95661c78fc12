"""The GLM family: autoregressive blank infilling (Du et al. 2022, "GLM: General
Language Model Pretraining with Autoregressive Blank Infilling", §2).

A window is cut into Part A, the text with each sampled span replaced by one
[MASK], and Part B, the spans in shuffled order, each opened by [sop] and closed by
[eop]. Part A attends bidirectionally; Part B attends to all of A and causally
within B (the prefix mask with A as the prefix). Positions are 2D (§2.3): a position
id (a span's tokens take their [MASK]'s position in A) and a block position id (0 in
A, 1..l+1 inside a span of length l).

Objectives: `blank_infilling` samples span lengths from Poisson(λ=3) until 15% of
the tokens are masked; with probability `gmask_ratio` a window instead gets GLM's
generation objective: one [gMASK] span at the end covering 50-100% of the text.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from arches.core import LMHead, ModelConfig, Transformer, masks
from arches.core.attention import KVCache
from arches.core.flops import TRAINING_MULTIPLIER, expected, head_flops, stack_forward_flops
from arches.core.stack import IGNORE_INDEX, init_weights
from arches.data.tokenizer import Specials
from arches.errors import UserError
from arches.families.noise import batch_rng, pad_labels, pad_stack
from arches.families.objective import ArchConfig
from arches.families.scoring import (
    ROLLING_SPAN,
    BaseScorer,
    GreedyStops,
    TokenPair,
    check_options,
    choose_format,
    pad_rows,
    score_positions,
    sum_by_request,
)
from arches.families.spec import AlternativeFormat, FamilySpec

OBJECTIVES = ("blank_infilling",)


class GLM(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.body = Transformer(cfg)
        self.head = LMHead(cfg, self.body.embed)
        init_weights(self, cfg)

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        tokens = batch["input_ids"]  # (B, T_A + T_B)
        hidden = self.body(
            tokens, mask=two_part_mask(batch["part_a_len"], batch.get("is_real")),
            position_ids=batch["position_ids"], block_position_ids=batch["block_position_ids"],
        )  # fmt: skip
        if "labels" not in batch:
            return self.head(hidden), None  # (B, T, V)
        # only Part B is labelled: only its positions go through the head, logits (N, V)
        return self.head.logits_and_loss(hidden, batch["labels"], labelled_only=True)


def two_part_mask(part_a_len: torch.Tensor, is_real: torch.Tensor | None = None) -> masks.AttentionMask:
    """GLM's mask (`masks.glm`: the prefix mask with Part A as the prefix) with padding."""
    return masks.AttentionMask(causal=True, prefix_len=part_a_len, is_real=is_real)


@dataclass
class BlankInfilling:
    """One example cut into GLM's two parts (all arrays 1-D, Part A then Part B)."""

    input_ids: np.ndarray
    labels: np.ndarray
    position_ids: np.ndarray
    block_position_ids: np.ndarray
    part_a_len: int


def sample_spans(rng: np.random.Generator, length: int, mask_rate: float, poisson_lambda: float) -> list[tuple[int, int]]:
    """Sorted (start, end) spans covering round(mask_rate * length) tokens (at least 1, at
    most all), with lengths from Poisson(λ) (at least 1; the last one cut to the budget),
    placed uniformly with at least one kept token between neighbouring spans."""
    budget = min(length, max(1, round(mask_rate * length)))
    lengths: list[int] = []
    while sum(lengths) < budget:
        lengths.append(min(max(1, int(rng.poisson(poisson_lambda))), budget - sum(lengths)))
    order = rng.permutation(len(lengths))
    lengths = [lengths[i] for i in order]
    kept = length - budget
    # k spans need k - 1 kept tokens between them; a budget that leaves fewer merges
    # neighbouring spans (fewer, longer ones) and keeps the masked count
    while len(lengths) - 1 > kept:
        lengths[-2:] = [lengths[-2] + lengths[-1]]
    # THUDM/GLM blocklm_utils.py `sample_spans`: each span's place among the
    # kept - (k - 1) free kept tokens, uniform (repeats allowed), sorted; one kept token
    # after every span, so two spans never touch
    free = kept - (len(lengths) - 1)
    places = np.sort(rng.integers(0, free + 1, size=len(lengths)))
    spans, offset = [], 0
    for place, span_length in zip(places.tolist(), lengths):
        start = offset + place
        spans.append((start, start + span_length))
        offset += span_length + 1
    return spans


def blank_infill(
    tokens: np.ndarray, spans: list[tuple[int, int]], mask_token: int, specials: Specials, rng: np.random.Generator
) -> BlankInfilling:
    """Build Parts A and B from sorted, non-overlapping spans (GLM §2.1-2.3)."""
    part_a: list[int] = []
    mask_positions: list[int] = []
    cursor = 0
    for start, end in spans:
        part_a.extend(tokens[cursor:start].tolist())
        mask_positions.append(len(part_a))
        part_a.append(mask_token)
        cursor = end
    part_a.extend(tokens[cursor:].tolist())
    inputs, labels = list(part_a), [IGNORE_INDEX] * len(part_a)
    positions, blocks = list(range(len(part_a))), [0] * len(part_a)
    for span_index in rng.permutation(len(spans)):  # Part B in shuffled order (§2.1)
        start, end = spans[span_index]
        span = tokens[start:end].tolist()
        inputs.extend([specials.sop] + span)
        labels.extend(span + [specials.eop])
        positions.extend([mask_positions[span_index]] * (len(span) + 1))
        blocks.extend(range(1, len(span) + 2))
    return BlankInfilling(
        input_ids=np.array(inputs, dtype=np.int64),
        labels=np.array(labels, dtype=np.int64),
        position_ids=np.array(positions, dtype=np.int64),
        block_position_ids=np.array(blocks, dtype=np.int64),
        part_a_len=len(part_a),
    )


def check_arch(settings: ArchConfig) -> None:
    """GLM's rule on its `arch` section (ArchConfig checks the rest)."""
    if settings.prefix_lm:
        raise UserError("arch.prefix_lm applies to decoders; GLM's Part A is always bidirectional")


def build(cfg: ModelConfig, arch: dict) -> GLM:
    ArchConfig.of(arch)  # checked before a model is built
    return GLM(cfg)


def collate(arch: dict, specials: Specials, seq_len: int, seed: int = 0, vocab_size: int | None = None) -> Callable:
    settings = ArchConfig.of(arch)
    # one generator per batch, from (seed, window indices): see batch_rng
    stream = np.random.default_rng(seed)
    mask_rate, poisson_lambda, gmask_ratio = settings.mask_rate, settings.poisson_lambda, settings.gmask_ratio

    def blank_infilling(windows: list[dict]) -> dict:
        rng = batch_rng(seed, windows, stream)
        examples = []
        for window in windows:
            tokens = window["tokens"].numpy()
            length = len(tokens)
            if rng.random() < gmask_ratio:
                # GLM's generation objective: one long span at the end, 50-100% of the text
                # (keeping at least one token of context in Part A)
                span_length = int(rng.integers(math.ceil(length / 2), length))
                examples.append(blank_infill(tokens, [(length - span_length, length)], specials.gmask, specials, rng))
            else:
                spans = sample_spans(rng, length, mask_rate, poisson_lambda)
                examples.append(blank_infill(tokens, spans, specials.mask, specials, rng))
        input_ids = pad_stack([e.input_ids for e in examples], specials.pad)
        lengths = torch.tensor([len(e.input_ids) for e in examples])
        return {
            "input_ids": input_ids,
            "labels": pad_labels([e.labels for e in examples]),
            "position_ids": pad_stack([e.position_ids for e in examples], 0),
            "block_position_ids": pad_stack([e.block_position_ids for e in examples], 0),
            "part_a_len": torch.tensor([e.part_a_len for e in examples], dtype=torch.long),
            "is_real": torch.arange(input_ids.shape[1])[None, :] < lengths[:, None],
        }

    return blank_infilling


def input_len(arch: dict, seq_len: int) -> int:
    # position ids stay inside Part A (< seq_len); block positions reach span length + 1
    return seq_len + 1


# A [MASK] blank may hold a span length that at least this share of training spans
# reaches: block-position rows past it get (almost) no updates. At λ=3 it is 10 tokens
# (P(span >= 10) = 0.1%), while a span of 14 is drawn about once in 500,000.
TRAINED_SPAN_SHARE = 1e-3


def longest_trained_span(arch: dict, seq_len: int) -> int:
    """The longest [MASK] span `sample_spans` draws in at least TRAINED_SPAN_SHARE of
    its spans: lengths are max(1, Poisson(λ)), cut to the masked budget."""
    from scipy.stats import poisson

    settings = ArchConfig.of(arch)
    budget = max(1, round(settings.mask_rate * seq_len))
    length = 1
    while length < budget and poisson.sf(length, settings.poisson_lambda) >= TRAINED_SPAN_SHARE:
        length += 1  # sf(k) = P(X > k) = P(X >= k + 1)
    return length


def trained_lengths(arch: dict, seq_len: int) -> dict[str, int]:
    """`input`: the longest Part A (the window, spans folded into [MASK]s); `mask_span`:
    the longest [MASK] blank it trained (block ids up to one more); with [gMASK]
    windows (`gmask_ratio` > 0), `gmask_span` and `gmask_input`: the longest
    document-level span and the longest Part A beside it."""
    lengths = {"input": seq_len, "mask_span": longest_trained_span(arch, seq_len)}
    if ArchConfig.of(arch).gmask_ratio > 0:
        lengths["gmask_span"] = seq_len - 1
        lengths["gmask_input"] = seq_len - math.ceil(seq_len / 2) + 1
    return lengths


def span_count_probabilities(length: int, mask_rate: float, poisson_lambda: float) -> np.ndarray:
    """P(`sample_spans` makes n spans of `length` tokens), for n = 0..budget (the masked
    count): exact, by dynamic programming over the budget left to cover, as it draws
    lengths max(1, Poisson(λ)) until they cover the budget (the last one cut to it),
    then merges a count past kept + 1 down to kept + 1."""
    from scipy.stats import poisson

    budget = min(length, max(1, round(mask_rate * length)))
    draw = poisson.pmf(np.arange(budget + 1), poisson_lambda)  # P(a draw is j)
    draw[1] += draw[0]  # max(1, ·)
    draw[0] = 0.0
    at_least = poisson.sf(np.arange(budget + 1) - 1, poisson_lambda)  # P(a draw is >= j)
    at_least[:2] = 1.0
    # covers[r, n]: P(n draws are the first to cover a budget of r)
    covers = np.zeros((budget + 1, budget + 1))
    for remaining in range(1, budget + 1):
        covers[remaining, 1] = at_least[remaining]  # the first draw covers it all
        # a first draw of j < remaining, then n - 1 draws to cover remaining - j
        covers[remaining, 2:] = draw[1:remaining] @ covers[remaining - 1 : 0 : -1, 1:-1]
    counts = covers[budget]
    most = length - budget + 1  # with one kept token between neighbouring spans
    if most < budget:
        counts[most] += counts[most + 1 :].sum()
        counts[most + 1 :] = 0.0
    return counts


def flops_per_token(cfg: ModelConfig, arch: dict, seq_len: int) -> float:
    """Training FLOPs per window token (arches.core.flops). Parts A and B run the stack
    together: the window plus a [MASK] and a [sop] per span; the head runs on Part B's
    labels only (GLM.forward): each span's tokens and its [eop] (blank_infill). The
    exact expectation over the span count (`span_count_probabilities`), mixed with the
    `gmask_ratio` of windows that get one [gMASK] span of uniform length instead."""

    def forward(spans: int, masked: int) -> float:
        return stack_forward_flops(cfg, seq_len + 2 * spans) + (masked + spans) * head_flops(cfg)

    settings = ArchConfig.of(arch)
    gmask_ratio = settings.gmask_ratio
    mean = 0.0
    if gmask_ratio < 1:
        probabilities = span_count_probabilities(seq_len, settings.mask_rate, settings.poisson_lambda)
        budget = len(probabilities) - 1  # the spans always mask exactly the budget
        mean += (1 - gmask_ratio) * expected(lambda spans: forward(spans, budget), range(budget + 1), probabilities)
    if gmask_ratio > 0:
        # one span at the end, its length uniform in [ceil(L / 2), L - 1] (collate)
        span_lengths = range(math.ceil(seq_len / 2), seq_len)
        mean += gmask_ratio * expected(lambda span_length: forward(1, span_length), span_lengths)
    return TRAINING_MULTIPLIER * mean / seq_len


# --- scoring (lm-eval): the continuation infills a blank at the end of the context ---

# the scoring formats, and how each lays a prompt out for generation (the report's Samples notes)
SCORING_FORMATS = {
    "mask": "the prompt then `[MASK]`, the blank filled in Part B (Du et al. 2022)",
    "gmask": "the prompt then `[gMASK]`, the blank filled in Part B (Du et al. 2022)",
}
SCORER_OPTIONS = ("format", "stride", "span")
# export-hf's reason (checked against transformers 5.x)
NO_TRANSFORMERS = (
    "transformers has no GLM blank-infilling model (GLM-10B/130B: 2D positions, bidirectional Part A); "
    "its glm and glm4 models are THUDM's later causal GLM-4, another architecture"
)


class GLMScorer(BaseScorer):
    """GLM's cloze scoring (Du et al. 2022, §2.3 and §3): Part A is the context and a
    [MASK] (format `gmask`: [gMASK], GLM's token for long generation); Part B is
    [sop] and the continuation, scored token by token. Position ids run 0..|A|-1 in A
    and stay at the mask's position in B; block position ids are 0 in A and 1..|B|
    in B; A attends bidirectionally, B to all of A and causally within B.

    A blank holds at most the span lengths the checkpoint's objective trained
    (`trained_lengths`: about 10 tokens for Poisson(3) [MASK] spans, the document-level
    span for [gMASK]); a longer continuation is scored, and generated, as successive
    blanks, each after the text before it."""

    family = "glm"
    rolling_margin = 2

    @property
    def mask_token(self) -> int:
        return self.specials.gmask if self.format == "gmask" else self.specials.mask

    @property
    def fills_blanks(self) -> bool:
        return True

    def continuation_room(self) -> int:
        if self.format == "gmask":
            return self.trained.get("gmask_span", self.max_len - 2)
        return self.trained.get("mask_span", self.max_len - 2)

    def part_a_room(self) -> int:
        """The longest Part A (context and blank) this format trained."""
        if self.format == "gmask":
            return self.trained.get("gmask_input", self.max_len - 1)
        return self.max_len if self.trained else self.max_len - 1

    def score_batch(self, requests: list[TokenPair]) -> list[tuple[float, bool]]:
        rows, position_rows, block_rows, part_a_lens = [], [], [], []
        owners, positions, targets = [], [], []
        for index, (context, continuation) in enumerate(requests):
            self.check_fits(continuation, self.continuation_room())
            part_a = context[-(self.part_a_room() - 1) :] + [self.mask_token]
            part_b = [self.specials.sop] + continuation[:-1]
            rows.append(part_a + part_b)
            position_rows.append(list(range(len(part_a))) + [len(part_a) - 1] * len(part_b))
            block_rows.append([0] * len(part_a) + list(range(1, len(part_b) + 1)))
            part_a_lens.append(len(part_a))
            for offset, token in enumerate(continuation):  # [sop] predicts the first token
                owners.append(index)
                positions.append(len(part_a) + offset)
                targets.append(token)
        tokens, is_real = pad_rows(rows, self.specials.pad, self.device)
        position_ids, _ = pad_rows(position_rows, 0, self.device)
        block_position_ids, _ = pad_rows(block_rows, 0, self.device)
        part_a_len = torch.tensor(part_a_lens, device=self.device)
        hidden = self.model.body(
            tokens, mask=two_part_mask(part_a_len, is_real), position_ids=position_ids, block_position_ids=block_position_ids
        )
        logprobs, greedy = score_positions(self.model.head, hidden, owners, positions, targets)
        return sum_by_request(owners, logprobs, greedy, len(requests))

    def probe_pair(self) -> TokenPair:
        return [self.specials.eos] * (self.part_a_room() - 1), [self.specials.eos] * self.continuation_room()

    @torch.inference_mode()
    def generate(self, contexts: list[str], until: list[list[str]], max_tokens: int) -> list[str]:
        """Greedy infilling, one blank of at most `continuation_room` tokens at a time:
        a generation that fills its blank without [eop] goes on in a new blank after the
        context and what it generated so far, until [eop], <eos>, a stop string or
        `max_tokens`."""
        stops = GreedyStops(self.tokenizer, until, {self.specials.eos, self.specials.eop}, max(0, max_tokens))
        contexts_ids = [self.encode(c) if c else [] for c in contexts]
        while not all(stops.done):
            rows = [
                ((ids + stops.generated[row]) or [self.specials.eos])[-(self.part_a_room() - 1) :] + [self.mask_token]
                for row, ids in enumerate(contexts_ids)
            ]
            self.infill(rows, stops, self.continuation_room())
        return stops.results()

    def infill(self, rows: list[list[int]], stops: GreedyStops, steps: int) -> None:
        """Up to `steps` greedy tokens of one blank closing each row's Part A, with the KV
        cache: Part A (left-padded, positions counting real tokens) and [sop] first, then
        one token at a time at the mask's position and the next block position."""
        part_a, is_real = pad_rows(rows, self.specials.pad, self.device, left=True)
        batch, part_a_len = part_a.shape
        a_positions = (is_real.long().cumsum(1) - 1).clamp(min=0)
        mask_position = a_positions[:, -1:]  # the mask closes every row of Part A
        ones = torch.ones((batch, 1), dtype=torch.long, device=self.device)
        tokens = torch.cat([part_a, ones * self.specials.sop], dim=1)
        is_real = torch.cat([is_real, ones.bool()], dim=1)
        mask = masks.combine(masks.glm(part_a_len + 1, ones[:, 0] * part_a_len), masks.padding(is_real))
        cache = KVCache()
        hidden = self.model.body(
            tokens, mask=mask, position_ids=torch.cat([a_positions, mask_position], dim=1),
            block_position_ids=torch.cat([torch.zeros_like(part_a), ones], dim=1), cache=cache,
        )
        for block in range(2, steps + 2):
            next_ids = self.model.head(hidden[:, -1]).float().argmax(-1)  # (B,)
            if stops.push(next_ids.tolist()) or block == steps + 1:
                return
            is_real = torch.cat([is_real, ones.bool()], dim=1)
            hidden = self.model.body(
                next_ids[:, None], mask=masks.padding(is_real), position_ids=mask_position,
                block_position_ids=ones * block, cache=cache,
            )


def trains_gmask(arch: dict, trained: dict | None) -> bool:
    return "gmask_span" in trained if trained else ArchConfig.of(arch).gmask_ratio > 0


def scorer(model: GLM, tokenizer, arch: dict, trained: dict | None = None, **options) -> GLMScorer:
    """Options: `format` (mask | gmask: the blank token closing Part A; gmask only for a
    GLM trained with [gMASK] windows), `stride` (tokens newly scored per rolling
    window), `span` (tokens predicted per rolling window, 0 for whole windows; default
    ROLLING_SPAN with [MASK]: GLM's blanks are Poisson(3) spans, Du et al. 2022
    §2.2.1, so running text is scored as short blanks; [gMASK] is GLM's
    long-generation token and keeps whole windows)."""
    check_options("glm", options, SCORER_OPTIONS)
    chosen = choose_format("glm", options.get("format"), "mask", SCORING_FORMATS)
    if chosen == "gmask" and not trains_gmask(arch, trained):
        raise UserError(
            f"format=gmask asks a GLM trained without [gMASK] windows (arch.gmask_ratio="
            f"{ArchConfig.of(arch).gmask_ratio}) for a document-level blank it never saw; use format=mask"
        )
    span = options.get("span", ROLLING_SPAN if chosen == "mask" else None)
    return GLMScorer(model, tokenizer, arch, chosen, options.get("stride"), span, trained)


SPEC = FamilySpec(
    name="glm",
    build=build,
    collate=collate,
    input_len=input_len,
    flops_per_token=flops_per_token,
    objectives=OBJECTIVES,
    check_arch=check_arch,
    positions=("glm2d",),
    scorer=scorer,
    trained_lengths=trained_lengths,
    formats=SCORING_FORMATS,
    scorer_options=SCORER_OPTIONS,
    alternatives=(AlternativeFormat("mask", "gmask", "[MASK] vs [gMASK] (GLM)"),),
    no_transformers=NO_TRANSFORMERS,  # hf_batch None: the bench compares it with its reference decoder
    bench_shape=(32, 1024),
)
