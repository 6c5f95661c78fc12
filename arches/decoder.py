"""The decoder family: GPT-style causal LMs, and the non-causal (prefix-LM) decoder.

Objectives (Wang et al. 2022, "What Language Model Architecture and Pretraining
Objective Work Best for Zero-Shot Generalization?", §3):
- `lm`: full language modeling, next-token loss everywhere (CD:FLM).
- `prefix_lm`: a random split point; loss only after it. With `prefix_lm: true`
  attention is bidirectional over the prefix (ND:PLM, Raffel et al. 2020 §3.2.1).
- `span_corruption`: T5's inputs and targets concatenated, loss on the targets
  (CD:MLM; with `prefix_lm: true`, bidirectional over the inputs: ND:MLM).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from arches.core import FamilySpec, LMHead, ModelConfig, Transformer, masks
from arches.core.attention import KVCache
from arches.core.flops import (
    TRAINING_MULTIPLIER,
    causal_mean_context,
    head_flops,
    layer_forward_flops,
    prefix_mean_context,
)
from arches.core.noise import batch_rng, pad_labels, pad_stack, random_spans_noise_mask, span_corrupt, span_counts
from arches.core.positions import document_position_ids
from arches.core.scoring import BaseScorer, GreedyStops, TokenPair, check_options, choose_format, pad_rows, score_positions, sum_by_request
from arches.core.stack import IGNORE_INDEX, init_weights
from arches.errors import UserError
from arches.tokenizer import Specials

OBJECTIVES = ("lm", "prefix_lm", "span_corruption")


class DecoderLM(nn.Module):
    def __init__(self, cfg: ModelConfig, non_causal_prefix: bool = False) -> None:
        super().__init__()
        self.cfg = cfg
        self.non_causal_prefix = non_causal_prefix
        # t5_relative: a causal decoder never sees later keys, so they need no buckets (T5's decoder)
        self.body = Transformer(cfg, bidirectional_buckets=non_causal_prefix)
        self.head = LMHead(cfg, self.body.embed)
        init_weights(self, cfg)

    def attention_mask(self, batch: dict[str, torch.Tensor]) -> masks.AttentionMask:
        """The causal mask (or the prefix mask for the non-causal decoder), with document
        boundaries and padding when the batch carries them. A plain causal batch keeps
        SDPA's fast path."""
        prefix_len = batch["prefix_len"] if self.non_causal_prefix and "prefix_len" in batch else None
        return masks.AttentionMask(causal=True, prefix_len=prefix_len, doc_ids=batch.get("doc_ids"), is_real=batch.get("is_real"))

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        tokens = batch["input_ids"]  # (B, T)
        hidden = self.body(tokens, mask=self.attention_mask(batch), position_ids=batch.get("position_ids"))
        if "labels" not in batch:
            return self.head(hidden), None  # (B, T, V)
        # the prefix objectives (prefix LM, concatenated span corruption) leave the prefix
        # unlabelled: only the labelled positions go through the head
        return self.head.logits_and_loss(hidden, batch["labels"], labelled_only="prefix_len" in batch)


def check_arch(arch: dict) -> None:
    objective = arch.get("objective", "lm")
    if objective not in OBJECTIVES:
        raise UserError(f"arch.objective={objective!r} is not a decoder objective; choose one of: {', '.join(OBJECTIVES)}")
    if arch.get("prefix_lm") and objective == "lm":
        raise UserError(
            "arch.prefix_lm=true with arch.objective=lm means nothing: full LM has no prefix; "
            "use arch.objective=prefix_lm (ND:PLM) or span_corruption (ND:MLM)"
        )


def build(cfg: ModelConfig, arch: dict) -> DecoderLM:
    check_arch(arch)
    return DecoderLM(cfg, non_causal_prefix=bool(arch.get("prefix_lm", False)))


def collate(
    arch: dict, specials: Specials, seq_len: int, seed: int = 0, vocab_size: int | None = None
) -> Callable[[list[dict]], dict]:
    """The decoder objectives over fixed windows of `seq_len` tokens."""
    check_arch(arch)
    objective = arch.get("objective", "lm")
    # one generator per batch, from (seed, window indices): see batch_rng
    stream = np.random.default_rng(seed)
    with_documents = bool(arch.get("document_mask", False))

    def full_lm(windows: list[dict]) -> dict:
        tokens = torch.stack([w["tokens"] for w in windows])  # (B, T)
        batch = {"input_ids": tokens[:, :-1], "labels": tokens[:, 1:].clone()}
        if with_documents:
            # packing: each document sees only itself and counts its positions from 0, so a
            # packed window computes what its documents would alone (tests/test_speed_paths.py)
            batch["doc_ids"] = torch.stack([w["doc_ids"] for w in windows])[:, :-1]
            batch["position_ids"] = document_position_ids(batch["doc_ids"])
        return batch

    def prefix_lm(windows: list[dict]) -> dict:
        rng = batch_rng(seed, windows, stream)
        batch = full_lm(windows)
        length = batch["input_ids"].shape[1]
        # split uniformly so both the prefix and the predicted part are non-empty
        prefix_len = torch.as_tensor(rng.integers(1, length, size=len(windows)), dtype=torch.long)
        # input position p predicts token p+1; the loss starts at the first token after the prefix
        predicts_prefix = torch.arange(length)[None, :] + 1 < prefix_len[:, None]
        batch["labels"][predicts_prefix] = IGNORE_INDEX
        batch["prefix_len"] = prefix_len
        return batch

    def concatenated_span_corruption(windows: list[dict]) -> dict:
        rng = batch_rng(seed, windows, stream)
        sequences, labels, prefix_lens = [], [], []
        for window in windows:
            tokens = window["tokens"].numpy()
            noise = random_spans_noise_mask(
                rng, len(tokens), arch.get("noise_density", 0.15), arch.get("mean_span_length", 3.0)
            )
            inputs, targets = span_corrupt(tokens, noise, specials.sentinels, specials.eos)
            sequence = np.concatenate([inputs, targets])
            label = np.full(len(sequence), IGNORE_INDEX, dtype=np.int64)
            label[len(inputs) - 1 : -1] = targets  # predict each target token from what precedes it
            sequences.append(sequence[:-1])
            labels.append(label[:-1])
            prefix_lens.append(len(inputs))
        return {
            "input_ids": pad_stack(sequences, specials.pad),
            "labels": pad_labels(labels),
            "prefix_len": torch.tensor(prefix_lens, dtype=torch.long),
        }

    return {"lm": full_lm, "prefix_lm": prefix_lm, "span_corruption": concatenated_span_corruption}[objective]


def input_len(arch: dict, seq_len: int) -> int:
    if arch.get("objective", "lm") == "span_corruption":
        _, spans = span_counts(arch, seq_len)
        return seq_len + 2 * spans + 1  # a sentinel per span on each side, two eos, minus the shift
    return seq_len - 1


def flops_per_token(cfg: ModelConfig, arch: dict, seq_len: int) -> float:
    """Training FLOPs per window token: every input position runs the whole stack and the head."""
    length = input_len(arch, seq_len)
    attended = causal_mean_context(length)
    if arch.get("prefix_lm"):
        if arch.get("objective") == "span_corruption":
            noise, spans = span_counts(arch, seq_len)
            prefixes = [seq_len - noise + spans + 1]  # the corrupted inputs
        else:
            prefixes = list(range(1, length))  # the split point is uniform
        attended = sum(prefix_mean_context(length, p) for p in prefixes) / len(prefixes)
    forward = length * (cfg.n_layers * layer_forward_flops(cfg, attended) + head_flops(cfg))
    return TRAINING_MULTIPLIER * forward / seq_len


# --- scoring (lm-eval): log P(continuation | context), left to right ---

SCORING_FORMATS = ("causal", "prefix_lm")


class DecoderScorer(BaseScorer):
    """log P(continuation | context), left to right, one forward per right-padded batch
    (causal attention never looks right, so padding is harmless). Format `prefix_lm`,
    the default for a non-causal decoder, makes the context the bidirectional prefix it
    was in training (Wang et al. 2022, ND:PLM); the continuation stays causal."""

    family = "decoder"

    def attention(self, tokens: torch.Tensor, context_lens: list[int]) -> dict:
        if self.format != "prefix_lm":
            return {"mask": None, "is_causal": True}
        batch = {"input_ids": tokens, "prefix_len": torch.tensor(context_lens, device=tokens.device)}
        return {"mask": self.model.attention_mask(batch)}

    def score_batch(self, requests: list[TokenPair]) -> list[tuple[float, bool]]:
        rows, context_lens, owners, positions, targets = [], [], [], [], []
        for index, (context, continuation) in enumerate(requests):
            self.check_fits(continuation, self.max_len)
            ids = (context + continuation)[-(self.max_len + 1) :]  # context cut from the left
            kept_context = len(ids) - len(continuation)
            rows.append(ids[:-1])
            context_lens.append(kept_context)
            for offset, token in enumerate(continuation):  # input position p predicts token p + 1
                owners.append(index)
                positions.append(kept_context - 1 + offset)
                targets.append(token)
        tokens, _ = pad_rows(rows, self.specials.pad, self.device)
        hidden = self.model.body(tokens, **self.attention(tokens, context_lens))  # (B, T, D)
        logprobs, greedy = score_positions(self.model.head, hidden, owners, positions, targets)
        return sum_by_request(owners, logprobs, greedy, len(requests))

    @torch.inference_mode()
    def generate(self, contexts: list[str], until: list[list[str]], max_tokens: int) -> list[str]:
        """Greedy decoding with the KV cache. Contexts are left-padded; learned and
        rotary positions count real tokens only, while ALiBi (relative) keeps the
        default positions its cached keys were built with."""
        max_tokens = max(0, min(max_tokens, self.max_len - 1))
        stops = GreedyStops(self.tokenizer, until, {self.specials.eos}, max_tokens)
        if max_tokens == 0:
            return stops.results()
        rows = [self.generation_context(c, self.max_len - max_tokens) for c in contexts]
        tokens, is_real = pad_rows(rows, self.specials.pad, self.device, left=True)
        length = tokens.shape[1]
        counted = self.model.cfg.position in ("learned", "rope")
        positions = (is_real.long().cumsum(1) - 1).clamp(min=0)
        base = masks.bidirectional(length, self.device) if self.format == "prefix_lm" else masks.causal(length, self.device)
        cache = KVCache()
        hidden = self.model.body(
            tokens, mask=masks.combine(base, masks.padding(is_real)), position_ids=positions if counted else None, cache=cache
        )
        next_positions = positions[:, -1:] + 1
        while True:
            next_ids = self.model.head(hidden[:, -1]).float().argmax(-1)  # (B,)
            if stops.push(next_ids.tolist()):
                return stops.results()
            is_real = torch.cat([is_real, torch.ones_like(is_real[:, :1])], dim=1)
            hidden = self.model.body(
                next_ids[:, None], mask=masks.padding(is_real), position_ids=next_positions if counted else None, cache=cache
            )
            next_positions = next_positions + 1


def scorer(model: DecoderLM, tokenizer, arch: dict, **options) -> DecoderScorer:
    """Options: `format` (causal | prefix_lm; default from the arch), `stride` (tokens
    newly scored per rolling window; default max_len // 2)."""
    check_options("decoder", options, ("format", "stride"))
    default = "prefix_lm" if arch.get("prefix_lm") else "causal"
    chosen = choose_format("decoder", options.get("format"), default, SCORING_FORMATS)
    if chosen == "prefix_lm" and not model.non_causal_prefix:
        raise UserError("format=prefix_lm needs a non-causal decoder (arch.prefix_lm: true); this one is causal: use format=causal")
    return DecoderScorer(model, tokenizer, arch, chosen, options.get("stride"))


SPEC = FamilySpec(
    name="decoder",
    build=build,
    collate=collate,
    input_len=input_len,
    flops_per_token=flops_per_token,
    objectives=OBJECTIVES,
    scorer=scorer,
)
