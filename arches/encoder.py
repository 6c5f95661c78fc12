"""The encoder family: a bidirectional stack with a masked-LM head (BERT,
Devlin et al. 2019, §3.1): 15% of positions are chosen; of those, 80% become
[MASK], 10% a random token and 10% stay the same; the loss is on the chosen ones."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from arches.core import FamilySpec, LMHead, ModelConfig, Transformer, masks
from arches.core.flops import TRAINING_MULTIPLIER, head_flops, layer_forward_flops
from arches.core.stack import IGNORE_INDEX, init_weights, lm_loss
from arches.errors import UserError
from arches.tokenizer import SPECIAL_TOKENS, Specials

OBJECTIVES = ("mlm",)


class EncoderMLM(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.body = Transformer(cfg)
        self.head = LMHead(cfg, self.body.embed)
        init_weights(self, cfg)

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        tokens = batch["input_ids"]  # (B, T)
        mask = masks.combine(
            masks.padding(batch["is_real"]) if "is_real" in batch else None,
            masks.documents(batch["doc_ids"]) if "doc_ids" in batch else None,
        )
        hidden = self.body(tokens, mask=mask, position_ids=batch.get("position_ids"))
        logits = self.head(hidden)  # (B, T, V)
        loss = lm_loss(logits, batch["labels"]) if "labels" in batch else None
        return logits, loss


def check_arch(arch: dict) -> None:
    objective = arch.get("objective", "mlm")
    if objective not in OBJECTIVES:
        raise UserError(f"arch.objective={objective!r} is not an encoder objective; choose one of: {', '.join(OBJECTIVES)}")
    rate = arch.get("mask_rate", 0.15)
    if not 0.0 < rate < 1.0:
        raise UserError(f"arch.mask_rate={rate} must be in (0, 1)")


def build(cfg: ModelConfig, arch: dict) -> EncoderMLM:
    check_arch(arch)
    return EncoderMLM(cfg)


def mask_tokens(
    tokens: np.ndarray, rng: np.random.Generator, specials: Specials, vocab_size: int, mask_rate: float = 0.15
) -> tuple[np.ndarray, np.ndarray]:
    """BERT's corruption of one sequence: (corrupted inputs, labels with IGNORE_INDEX
    where no loss is taken). Exactly round(mask_rate * T) positions are chosen, so the
    rate does not vary from batch to batch."""
    length = len(tokens)
    chosen = rng.choice(length, size=max(1, round(mask_rate * length)), replace=False)
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
    check_arch(arch)
    rng = np.random.default_rng(seed)
    mask_rate = arch.get("mask_rate", 0.15)
    with_documents = bool(arch.get("document_mask", False))

    def masked_lm(windows: list[dict]) -> dict:
        inputs, labels = [], []
        for window in windows:
            tokens = window["tokens"].numpy()
            corrupted, label = mask_tokens(tokens, rng, specials, vocab_size or int(tokens.max()) + 1, mask_rate)
            inputs.append(torch.from_numpy(corrupted))
            labels.append(torch.from_numpy(label))
        batch = {"input_ids": torch.stack(inputs), "labels": torch.stack(labels)}
        if with_documents:
            batch["doc_ids"] = torch.stack([w["doc_ids"] for w in windows])
        return batch

    return masked_lm


def input_len(arch: dict, seq_len: int) -> int:
    return seq_len


def flops_per_token(cfg: ModelConfig, arch: dict, seq_len: int) -> float:
    forward = cfg.n_layers * layer_forward_flops(cfg, seq_len) + head_flops(cfg)
    return TRAINING_MULTIPLIER * forward


SPEC = FamilySpec(
    name="encoder",
    build=build,
    collate=collate,
    input_len=input_len,
    flops_per_token=flops_per_token,
    objectives=OBJECTIVES,
)
