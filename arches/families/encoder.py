"""The encoder family: a bidirectional stack with a masked-LM head (BERT,
Devlin et al. 2019, §3.1): 15% of the positions holding ordinary (not special)
tokens are chosen; of those, 80% become
[MASK], 10% a random token and 10% stay the same; the loss is on the chosen ones."""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from arches.core import LMHead, ModelConfig, Transformer, masks
from arches.core.flops import TRAINING_MULTIPLIER, head_flops, stack_forward_flops
from arches.core.positions import document_position_ids
from arches.core.stack import IGNORE_INDEX, init_weights
from arches.data.tokenizer import SPECIAL_ROLES, SPECIAL_TOKENS, Specials
from arches.errors import UserError
from arches.families.noise import batch_rng
from arches.families.objective import ArchConfig
from arches.families.scoring import (
    BaseScorer,
    TokenPair,
    UnsupportedRequest,
    batches,
    check_options,
    choose_format,
    pad_rows,
    score_positions,
    sum_by_request,
    word_byte_tables,
    word_ends,
)
from arches.families.spec import AlternativeFormat, FamilySpec, hf_eos, special_roles

OBJECTIVES = ("mlm",)


class EncoderMLM(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.body = Transformer(cfg)
        self.head = LMHead(cfg, self.body.embed)
        init_weights(self, cfg)

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        tokens = batch["input_ids"]  # (B, T)
        mask = masks.AttentionMask(doc_ids=batch.get("doc_ids"), is_real=batch.get("is_real"))
        hidden = self.body(tokens, mask=mask, position_ids=batch.get("position_ids"))
        if "labels" not in batch:
            return self.head(hidden), None  # (B, T, V)
        # only the ~15% chosen positions go through the MLM head: logits (N, V) for them
        return self.head.logits_and_loss(hidden, batch["labels"], labelled_only=True)


def check_arch(settings: ArchConfig) -> None:
    """The encoder's rule on its `arch` section (ArchConfig checks the rest): MLM masks some
    positions and keeps some as context (GLM's mask_rate may reach 1)."""
    if not 0.0 < settings.mask_rate < 1.0:
        raise UserError(f"arch.mask_rate={settings.mask_rate} must be in (0, 1)")


def build(cfg: ModelConfig, arch: dict) -> EncoderMLM:
    ArchConfig.of(arch)  # checked before a model is built
    return EncoderMLM(cfg)


@functools.cache
def special_ids(specials: Specials) -> np.ndarray:
    """The ids of every special token the tokenizer has (roles and sentinels)."""
    roles = [getattr(specials, role) for role in SPECIAL_ROLES]
    return np.array(sorted({i for i in [*roles, *specials.sentinels] if i is not None}), dtype=np.int64)


def mask_tokens(
    tokens: np.ndarray, rng: np.random.Generator, specials: Specials, vocab_size: int, mask_rate: float
) -> tuple[np.ndarray, np.ndarray]:
    """BERT's corruption of one sequence: (corrupted inputs, labels with IGNORE_INDEX
    where no loss is taken). Only positions holding ordinary tokens are chosen, exactly
    round(mask_rate * N) of the N there are (at least one), so the rate does not vary
    from batch to batch."""
    length = len(tokens)
    # a special token (<eos> between packed documents, padding) is never a target, as
    # BERT's create_pretraining_data.py never chooses [CLS] or [SEP]; on short documents
    # <eos> would otherwise be some 5% of the targets
    eligible = np.flatnonzero(~np.isin(tokens, special_ids(specials)))
    count = min(len(eligible), max(1, round(mask_rate * len(eligible))))
    chosen = rng.choice(eligible, size=count, replace=False)
    labels = np.full(length, IGNORE_INDEX, dtype=np.int64)
    labels[chosen] = tokens[chosen]
    inputs = tokens.copy()
    fate = rng.random(len(chosen))
    inputs[chosen[fate < 0.8]] = specials.mask
    random_positions = chosen[(fate >= 0.8) & (fate < 0.9)]
    # random replacements come from ordinary tokens, never from the special ones
    inputs[random_positions] = rng.integers(len(SPECIAL_TOKENS), vocab_size, size=len(random_positions))
    return inputs, labels


def collate(arch: dict, specials: Specials, seq_len: int, seed: int = 0, vocab_size: int | None = None) -> Callable:
    settings = ArchConfig.of(arch)
    # one generator per batch, from (seed, window indices): see batch_rng
    stream = np.random.default_rng(seed)
    mask_rate = settings.mask_rate
    with_documents = settings.document_mask

    def masked_lm(windows: list[dict]) -> dict:
        rng = batch_rng(seed, windows, stream)
        inputs, labels = [], []
        for window in windows:
            tokens = window["tokens"].numpy()
            corrupted, label = mask_tokens(tokens, rng, specials, vocab_size or int(tokens.max()) + 1, mask_rate)
            inputs.append(torch.from_numpy(corrupted))
            labels.append(torch.from_numpy(label))
        batch = {"input_ids": torch.stack(inputs), "labels": torch.stack(labels)}
        if with_documents:
            # packing: each document sees only itself and counts its positions from 0
            batch["doc_ids"] = torch.stack([w["doc_ids"] for w in windows])
            batch["position_ids"] = document_position_ids(batch["doc_ids"])
        return batch

    return masked_lm


def input_len(arch: dict, seq_len: int) -> int:
    return seq_len


def flops_per_token(cfg: ModelConfig, arch: dict, seq_len: int) -> float:
    """Training FLOPs per window token (arches.core.flops): the whole window runs the
    stack; only the chosen positions run the MLM head (EncoderMLM.forward), as many as
    `mask_tokens` chooses in a window of ordinary tokens (one holding special tokens,
    <eos> between packed documents, has a few fewer)."""
    chosen = min(seq_len, max(1, round(ArchConfig.of(arch).mask_rate * seq_len)))
    forward = stack_forward_flops(cfg, seq_len) + chosen * head_flops(cfg)
    return TRAINING_MULTIPLIER * forward / seq_len


# --- scoring (lm-eval): pseudo-log-likelihood ---

SCORING_FORMATS = {"pll_word_l2r": "", "pll": ""}  # neither generates: no layout for the Samples notes
SCORER_OPTIONS = ("format", "stride")


class EncoderScorer(BaseScorer):
    """Pseudo-log-likelihood (Salazar et al. 2020, "Masked Language Model Scoring"):
    each continuation token is scored by one copy of the sequence with that token
    replaced by [MASK], and the copies are batched. Format `pll_word_l2r` (the
    default) is Kauf & Ivanova 2023's PLL-word-l2r: the later tokens of the same word
    are masked too (see `arches.families.scoring.word_ends`), which removes plain PLL's
    inflated scores for multi-token words; `pll` masks only the scored token.

    `batch_size` counts masked copies (forward rows), not requests. No marker is
    added after the continuation: the text simply ends there."""

    family = "encoder"
    rolling_margin = 1

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.specials.mask is None:
            raise UserError("pseudo-log-likelihood needs a mask token, and this model's tokenizer names none (arch.special_tokens.mask)")
        self.starts_word, self.ends_word = word_byte_tables(self.tokenizer)

    def masked_copies(self, context: list[int], continuation: list[int]) -> list[tuple[list[int], int, int]]:
        """(masked row, scored position, true token) for each continuation token."""
        self.check_fits(continuation, self.max_len - 1)
        sequence = context[-(self.max_len - len(continuation)) :] + continuation
        start = len(sequence) - len(continuation)
        ends = word_ends(continuation, self.starts_word, self.ends_word)
        copies = []
        for offset, token in enumerate(continuation):
            last = ends[offset] if self.format == "pll_word_l2r" else offset
            row = list(sequence)
            row[start + offset : start + last + 1] = [self.specials.mask] * (last - offset + 1)
            copies.append((row, start + offset, token))
        return copies

    def score_tokens(self, requests: list[TokenPair], batch_size: int) -> list[tuple[float, bool]]:
        copies, owners = [], []
        for index, (context, continuation) in enumerate(requests):
            for copy in self.masked_copies(context, continuation):
                copies.append(copy)
                owners.append(index)
        logprobs = torch.zeros(len(copies))
        greedy = torch.zeros(len(copies), dtype=torch.bool)
        with torch.inference_mode():
            for chunk in batches([len(row) for row, _, _ in copies], batch_size):
                tokens, is_real = pad_rows([copies[i][0] for i in chunk], self.specials.pad, self.device)
                scored = torch.tensor([copies[i][1] for i in chunk], device=self.device)
                # each copy is read at one position: the last block computes that query only
                hidden = self.model.body(tokens, mask=masks.AttentionMask(is_real=is_real), only_positions=scored)  # (B, D)
                chunk_logprobs, chunk_greedy = score_positions(
                    self.model.head, hidden[:, None], list(range(len(chunk))), [0] * len(chunk), [copies[i][2] for i in chunk]
                )
                logprobs[chunk], greedy[chunk] = chunk_logprobs, chunk_greedy
        return sum_by_request(owners, logprobs, greedy, len(requests))

    def probe_pair(self) -> TokenPair:
        return [self.specials.eos] * (self.max_len - 1), [self.specials.eos]

    def generate(self, contexts: list[str], until: list[list[str]], max_tokens: int) -> list[str]:
        raise UnsupportedRequest(
            "encoder models do not generate: a masked LM (the encoder family) answers loglikelihood and "
            "loglikelihood_rolling requests only (as pseudo-log-likelihood); choose multiple-choice or perplexity tasks"
        )


def scorer(model: EncoderMLM, tokenizer, arch: dict, trained: dict | None = None, **options) -> EncoderScorer:
    """Options: `format` (pll_word_l2r | pll), `stride` (tokens newly scored per rolling window)."""
    check_options("encoder", options, SCORER_OPTIONS)
    chosen = choose_format("encoder", options.get("format"), "pll_word_l2r", SCORING_FORMATS)
    return EncoderScorer(model, tokenizer, arch, chosen, options.get("stride"), trained=trained)


def trained_lengths(arch: dict, seq_len: int) -> dict[str, int]:
    return {"input": seq_len}


def hf_batch(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our batch as a transformers *ForMaskedLM's keyword arguments (the same labels)."""
    return {"input_ids": batch["input_ids"], "labels": batch["labels"]}


def import_specials(tokenizer, config) -> dict:
    """BERT: [SEP] ends a segment, [CLS] starts one."""
    eos = tokenizer.sep_token or hf_eos(tokenizer, config)
    return special_roles(tokenizer, eos, tokenizer.cls_token or tokenizer.bos_token or eos)


SPEC = FamilySpec(
    name="encoder",
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
    likelihood="pseudo",
    alternatives=(AlternativeFormat("pll_word_l2r", "pll", "PLL-word-l2r vs PLL (encoder)"),),
    hf_batch=hf_batch,
    import_specials=import_specials,
    required_specials=("pad", "bos", "eos", "mask"),  # PLL masks each scored token
    bench_shape=(64, 512),
)
