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

from arches.core import LMHead, ModelConfig, Transformer, masks
from arches.core.attention import KVCache
from arches.core.flops import TRAINING_MULTIPLIER, expected, head_flops, stack_forward_flops
from arches.core.positions import document_position_ids
from arches.core.stack import IGNORE_INDEX, init_weights
from arches.data.tokenizer import Specials
from arches.errors import UserError
from arches.families.noise import (
    batch_rng,
    check_sentinel_capacity,
    pad_labels,
    pad_stack,
    random_spans_noise_mask,
    span_corrupt,
    span_corrupted_lengths,
)
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
from arches.families.spec import FamilySpec

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


def check_arch(settings: ArchConfig) -> None:
    """The decoder's rule on its `arch` section (ArchConfig checks the rest)."""
    if settings.prefix_lm and settings.objective == "lm":
        raise UserError(
            "arch.prefix_lm=true with arch.objective=lm means nothing: full LM has no prefix; "
            "use arch.objective=prefix_lm (ND:PLM) or span_corruption (ND:MLM)"
        )


def build(cfg: ModelConfig, arch: dict) -> DecoderLM:
    return DecoderLM(cfg, non_causal_prefix=ArchConfig.of(arch).prefix_lm)


def collate(
    arch: dict, specials: Specials, seq_len: int, seed: int = 0, vocab_size: int | None = None
) -> Callable[[list[dict]], dict]:
    """The decoder objectives over fixed windows of `seq_len` tokens."""
    settings = ArchConfig.of(arch)
    # one generator per batch, from (seed, window indices): see batch_rng
    stream = np.random.default_rng(seed)
    with_documents = settings.document_mask

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
            noise = random_spans_noise_mask(rng, len(tokens), settings.noise_density, settings.mean_span_length)
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

    return {"lm": full_lm, "prefix_lm": prefix_lm, "span_corruption": concatenated_span_corruption}[settings.objective]


def input_len(arch: dict, seq_len: int) -> int:
    settings = ArchConfig.of(arch)
    if settings.objective == "span_corruption":
        check_sentinel_capacity(settings, seq_len)
        inputs, targets = span_corrupted_lengths(settings, seq_len)
        return inputs + targets - 1  # the two concatenated, minus the shift
    return seq_len - 1


def trained_lengths(arch: dict, seq_len: int) -> dict[str, int]:
    """`input`: the longest input row; with span corruption also `target`, the
    concatenated targets' length (sentinels, spans and eos), which is all a blank in
    the sentinel format may hold."""
    settings = ArchConfig.of(arch)
    lengths = {"input": input_len(settings, seq_len)}
    if settings.objective == "span_corruption":
        lengths["target"] = span_corrupted_lengths(settings, seq_len)[1]
    return lengths


def flops_per_token(cfg: ModelConfig, arch: dict, seq_len: int) -> float:
    """Training FLOPs per window token (arches.core.flops): every input position runs the
    whole stack; the head runs on every position under full LM, and only on the
    labelled ones under the prefix objectives (DecoderLM.forward)."""
    settings = ArchConfig.of(arch)
    length = input_len(settings, seq_len)
    if settings.objective == "span_corruption":
        labelled = span_corrupted_lengths(settings, seq_len)[1]  # the targets
    elif settings.objective == "prefix_lm":
        # a split p uniform in [1, length - 1] leaves length - p + 1 positions labelled (collate)
        labelled = expected(lambda prefix_len: length - prefix_len + 1, range(1, length))
    else:
        labelled = length
    forward = stack_forward_flops(cfg, length) + labelled * head_flops(cfg)
    return TRAINING_MULTIPLIER * forward / seq_len


# --- scoring (lm-eval): log P(continuation | context), left to right ---

# the scoring formats, and how each lays a prompt out for generation (the report's Samples notes)
SCORING_FORMATS = {
    "causal": "left to right",
    "prefix_lm": "the prompt as a bidirectional prefix, then left to right",
    "sentinel": "the prompt and a sentinel, the blank filled left to right",
}
SCORER_OPTIONS = ("format", "stride", "span")


class DecoderScorer(BaseScorer):
    """log P(continuation | context), left to right, one forward per right-padded batch
    (causal attention never looks right, so padding is harmless).

    Formats, the default following the checkpoint's objective:
    - `causal` (full LM): context then continuation.
    - `prefix_lm` (the prefix-LM objective on a non-causal decoder): the context is the
      bidirectional prefix it was in training (Wang et al. 2022, ND:PLM); the
      continuation stays causal.
    - `sentinel` (span corruption, Wang et al.'s CD:MLM and ND:MLM): the layout of its
      training rows, T5's inputs then targets (Raffel et al. 2020 §3.1.4): `context
      <extra_id_0> <eos>` as the inputs (the bidirectional prefix on a non-causal
      decoder), then `<extra_id_0> continuation` as the targets, so the continuation
      fills the blank; a continuation longer than the trained targets is scored as
      successive blanks."""

    family = "decoder"

    @property
    def rolling_margin(self) -> int:
        """The tokens a rolling window leaves for this format's markers."""
        closing, opening = self.markers()
        return len(closing) + len(opening)

    @property
    def fills_blanks(self) -> bool:
        return self.format == "sentinel"

    def continuation_room(self) -> int:
        if self.format == "sentinel":
            return min(self.trained.get("target", self.max_len) - 1, self.max_len - self.rolling_margin)
        return self.max_len

    def markers(self) -> tuple[list[int], list[int]]:
        """(tokens closing the context, tokens opening the continuation) in this format."""
        if self.format == "sentinel":
            blank = self.specials.sentinels[0]
            return [blank, self.specials.eos], [blank]
        return [], []

    def attention(self, tokens: torch.Tensor, prefix_lens: list[int]) -> dict:
        if not self.model.non_causal_prefix or self.format == "causal":
            return {"mask": None, "is_causal": True}
        batch = {"input_ids": tokens, "prefix_len": torch.tensor(prefix_lens, device=tokens.device)}
        return {"mask": self.model.attention_mask(batch)}

    def score_batch(self, requests: list[TokenPair]) -> list[tuple[float, bool]]:
        closing, opening = self.markers()
        rows, prefix_lens, owners, positions, targets = [], [], [], [], []
        for index, (context, continuation) in enumerate(requests):
            self.check_fits(continuation, self.continuation_room())
            # the row: context (cut from the left), markers, continuation; the last token is never input
            room = self.max_len + 1 - self.rolling_margin - len(continuation)
            ids = context[-room:] + closing + opening + continuation
            prefix_lens.append(len(ids) - len(opening) - len(continuation))
            first = len(ids) - len(continuation)
            rows.append(ids[:-1])
            for offset, token in enumerate(continuation):  # input position p predicts token p + 1
                owners.append(index)
                positions.append(first - 1 + offset)
                targets.append(token)
        tokens, _ = pad_rows(rows, self.specials.pad, self.device)
        hidden = self.model.body(tokens, **self.attention(tokens, prefix_lens))  # (B, T, D)
        logprobs, greedy = score_positions(self.model.head, hidden, owners, positions, targets)
        return sum_by_request(owners, logprobs, greedy, len(requests))

    @torch.inference_mode()
    def generate(self, contexts: list[str], until: list[list[str]], max_tokens: int) -> list[str]:
        """Greedy decoding with the KV cache. Contexts are left-padded; learned and
        rotary positions count real tokens only, while ALiBi (relative) keeps the
        default positions its cached keys were built with."""
        closing, opening = self.markers()
        # generation stays inside the trained input (and, for sentinels, the trained targets)
        max_tokens = max(0, min(max_tokens, self.continuation_room(), self.max_len - 1 - self.rolling_margin))
        stop_ids = {self.specials.eos} | (set(self.specials.sentinels) if self.format == "sentinel" else set())
        stops = GreedyStops(self.tokenizer, until, stop_ids, max_tokens)
        if max_tokens == 0:
            return stops.results()
        room = self.max_len - max_tokens - self.rolling_margin
        rows = [self.generation_context(c, room) + closing + opening for c in contexts]
        tokens, is_real = pad_rows(rows, self.specials.pad, self.device, left=True)
        length = tokens.shape[1]
        counted = self.model.cfg.position in ("learned", "rope")
        positions = (is_real.long().cumsum(1) - 1).clamp(min=0)
        if self.model.non_causal_prefix and self.format != "causal":
            # the context (with the sentinel format's closing markers) is the bidirectional prefix
            prefix_len = torch.full((tokens.shape[0],), length - len(opening), device=self.device)
            base = masks.prefix(length, prefix_len)
        else:
            base = masks.causal(length, self.device)
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


def default_format(arch: dict) -> str:
    """The format a checkpoint's objective trained it for."""
    settings = ArchConfig.of(arch)
    if settings.objective == "span_corruption":
        return "sentinel"
    return "prefix_lm" if settings.prefix_lm else "causal"


def scorer(model: DecoderLM, tokenizer, arch: dict, trained: dict | None = None, **options) -> DecoderScorer:
    """Options: `format` (causal | prefix_lm | sentinel; default from the objective),
    `stride` (tokens newly scored per rolling window; default half a window), `span`
    (tokens predicted per rolling window, 0 for whole windows; default ROLLING_SPAN
    in the sentinel format, whose blanks are T5's short spans)."""
    check_options("decoder", options, SCORER_OPTIONS)
    settings = ArchConfig.of(arch)
    chosen = choose_format("decoder", options.get("format"), default_format(settings), SCORING_FORMATS)
    if chosen == "prefix_lm" and not model.non_causal_prefix:
        raise UserError("format=prefix_lm needs a non-causal decoder (arch.prefix_lm: true); this one is causal: use format=causal")
    if chosen == "sentinel" and settings.objective != "span_corruption":
        raise UserError(
            f"format=sentinel asks a decoder trained with arch.objective={settings.objective} to fill a "
            f"T5 sentinel blank it never saw; use format={default_format(settings)} (its objective's format)"
        )
    if chosen == "sentinel" and not Specials.from_tokenizer(tokenizer, settings.special_tokens).sentinels:
        raise UserError("format=sentinel needs sentinel tokens (<extra_id_0>), which this tokenizer lacks")
    span = options.get("span", ROLLING_SPAN if chosen == "sentinel" else None)
    return DecoderScorer(model, tokenizer, arch, chosen, options.get("stride"), span, trained)


def _takes_shift_labels() -> bool:
    try:
        import inspect

        from transformers.loss.loss_utils import ForCausalLMLoss
    except ImportError:
        return False
    return "shift_labels" in inspect.signature(ForCausalLMLoss).parameters


def hf_batch(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our batch as a transformers *ForCausalLM's keyword arguments, predicting the same targets."""
    labels = batch["labels"].contiguous()
    if _takes_shift_labels():  # our labels are already the next tokens: no shift
        return {"input_ids": batch["input_ids"], "labels": labels, "shift_labels": labels}
    return {"input_ids": batch["input_ids"], "labels": batch["input_ids"]}  # older transformers: it shifts


SPEC = FamilySpec(
    name="decoder",
    build=build,
    collate=collate,
    input_len=input_len,
    flops_per_token=flops_per_token,
    objectives=OBJECTIVES,
    check_arch=check_arch,
    scorer=scorer,
    trained_lengths=trained_lengths,
    formats=SCORING_FORMATS,
    scorer_options=SCORER_OPTIONS,
    hf_batch=hf_batch,
    bench_shape=(32, 1024),
)
