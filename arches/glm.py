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

from arches.core import FamilySpec, LMHead, ModelConfig, Transformer, masks
from arches.core.attention import KVCache
from arches.core.flops import TRAINING_MULTIPLIER, head_flops, layer_forward_flops, prefix_mean_context
from arches.core.noise import batch_rng, pad_labels, pad_stack
from arches.core.scoring import ROLLING_SPAN, BaseScorer, GreedyStops, TokenPair, check_options, choose_format, pad_rows, score_positions, sum_by_request
from arches.core.stack import IGNORE_INDEX, init_weights
from arches.errors import UserError
from arches.tokenizer import Specials

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
    """Non-overlapping (start, end) spans covering round(mask_rate * length) tokens, with
    lengths from Poisson(λ) (at least 1; the last one cut to the budget), placed uniformly."""
    budget = max(1, round(mask_rate * length))
    lengths: list[int] = []
    while sum(lengths) < budget:
        lengths.append(min(max(1, int(rng.poisson(poisson_lambda))), budget - sum(lengths)))
    order = rng.permutation(len(lengths))
    lengths = [lengths[i] for i in order]
    kept = length - budget
    # stars and bars: where the spans fall among the kept tokens
    slots = np.sort(rng.choice(kept + len(lengths), size=len(lengths), replace=False))
    spans, cursor = [], 0
    for index, (slot, span_length) in enumerate(zip(slots, lengths)):
        start = int(slot) - index + cursor
        spans.append((start, start + span_length))
        cursor += span_length
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


def check_arch(arch: dict) -> None:
    objective = arch.get("objective", "blank_infilling")
    if objective not in OBJECTIVES:
        raise UserError(f"arch.objective={objective!r} is not a glm objective; choose one of: {', '.join(OBJECTIVES)}")
    if not 0.0 <= arch.get("gmask_ratio", 0.0) <= 1.0:
        raise UserError(f"arch.gmask_ratio={arch.get('gmask_ratio')} must be in [0, 1]")
    if arch.get("prefix_lm"):
        raise UserError("arch.prefix_lm applies to decoders; GLM's Part A is always bidirectional")


def build(cfg: ModelConfig, arch: dict) -> GLM:
    check_arch(arch)
    return GLM(cfg)


def collate(arch: dict, specials: Specials, seq_len: int, seed: int = 0, vocab_size: int | None = None) -> Callable:
    check_arch(arch)
    # one generator per batch, from (seed, window indices): see batch_rng
    stream = np.random.default_rng(seed)
    mask_rate, poisson_lambda = arch.get("mask_rate", 0.15), arch.get("poisson_lambda", 3.0)
    gmask_ratio = arch.get("gmask_ratio", 0.0)

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


def flops_per_token(cfg: ModelConfig, arch: dict, seq_len: int) -> float:
    masked = round(arch.get("mask_rate", 0.15) * seq_len)
    spans = max(1, round(masked / arch.get("poisson_lambda", 3.0)))
    part_a = seq_len - masked + spans
    length = seq_len + 2 * spans
    attended = prefix_mean_context(length, part_a)
    forward = length * (cfg.n_layers * layer_forward_flops(cfg, attended) + head_flops(cfg))
    return TRAINING_MULTIPLIER * forward / seq_len


# --- scoring (lm-eval): the continuation infills a blank at the end of the context ---

SCORING_FORMATS = ("mask", "gmask")


class GLMScorer(BaseScorer):
    """GLM's cloze scoring (Du et al. 2022, §2.3 and §3): Part A is the context and a
    [MASK] (format `gmask`: [gMASK], GLM's token for long generation); Part B is
    [sop] and the continuation, scored token by token. Position ids run 0..|A|-1 in A
    and stay at the mask's position in B; block position ids are 0 in A and 1..|B|
    in B; A attends bidirectionally, B to all of A and causally within B."""

    family = "glm"
    rolling_margin = 2

    @property
    def mask_token(self) -> int:
        return self.specials.gmask if self.format == "gmask" else self.specials.mask

    def score_batch(self, requests: list[TokenPair]) -> list[tuple[float, bool]]:
        rows, position_rows, block_rows, part_a_lens = [], [], [], []
        owners, positions, targets = [], [], []
        for index, (context, continuation) in enumerate(requests):
            self.check_fits(continuation, self.max_len - 2)
            part_a = context[-(self.max_len - 1 - len(continuation)) :] + [self.mask_token]
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
        half = self.max_len // 2  # Part A (context + mask) and Part B fill max_len
        return [self.specials.eos] * (self.max_len - 1 - half), [self.specials.eos] * half

    @torch.inference_mode()
    def generate(self, contexts: list[str], until: list[list[str]], max_tokens: int) -> list[str]:
        """Greedy infilling in Part B with the KV cache: Part A (left-padded, positions
        counting real tokens) and [sop] first, then one token at a time at the mask's
        position and the next block position, until [eop], <eos> or a stop string."""
        max_tokens = max(0, min(max_tokens, self.max_len - 2))
        stops = GreedyStops(self.tokenizer, until, {self.specials.eos, self.specials.eop}, max_tokens)
        if max_tokens == 0:
            return stops.results()
        rows = [self.generation_context(c, self.max_len - 1 - max_tokens) + [self.mask_token] for c in contexts]
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
        block = 2
        while True:
            next_ids = self.model.head(hidden[:, -1]).float().argmax(-1)  # (B,)
            if stops.push(next_ids.tolist()):
                return stops.results()
            is_real = torch.cat([is_real, ones.bool()], dim=1)
            hidden = self.model.body(
                next_ids[:, None], mask=masks.padding(is_real), position_ids=mask_position,
                block_position_ids=ones * block, cache=cache,
            )
            block += 1


def scorer(model: GLM, tokenizer, arch: dict, **options) -> GLMScorer:
    """Options: `format` (mask | gmask: the blank token closing Part A), `stride`
    (tokens newly scored per rolling window), `span` (tokens predicted per rolling
    window, 0 for whole windows; default ROLLING_SPAN with [MASK]: GLM's blanks are
    Poisson(3) spans, Du et al. 2022 §2.2.1, so running text is scored as short
    blanks; [gMASK] is GLM's long-generation token and keeps whole windows)."""
    check_options("glm", options, ("format", "stride", "span"))
    chosen = choose_format("glm", options.get("format"), "mask", SCORING_FORMATS)
    span = options.get("span", ROLLING_SPAN if chosen == "mask" else None)
    return GLMScorer(model, tokenizer, arch, chosen, options.get("stride"), span)


SPEC = FamilySpec(
    name="glm",
    build=build,
    collate=collate,
    input_len=input_len,
    flops_per_token=flops_per_token,
    objectives=OBJECTIVES,
    positions=("glm2d",),
    scorer=scorer,
)
