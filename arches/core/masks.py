"""Attention masks as small composable functions.

Convention (as in `scaled_dot_product_attention`): a boolean tensor where True
means "query i may attend to key j". Shapes broadcast to (B, 1, T, S).

`AttentionMask` names a self-attention mask by these parts instead, so the stack can
hand it to FlexAttention as a block mask or to SDPA as the dense tensor built here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


def bidirectional(length: int, device: torch.device | None = None) -> torch.Tensor:
    """Every position sees every position (BERT, T5's encoder, GLM's Part A)."""
    return torch.ones(length, length, dtype=torch.bool, device=device)


def causal(length: int, device: torch.device | None = None) -> torch.Tensor:
    """Position i sees positions <= i (GPT)."""
    return torch.ones(length, length, dtype=torch.bool, device=device).tril()


def prefix(length: int, prefix_len: torch.Tensor) -> torch.Tensor:
    """Bidirectional over the first `prefix_len[b]` tokens, causal after
    (the non-causal decoder of Raffel et al. 2020 §3.2.1 and Wang et al. 2022). (B, 1, T, T)"""
    positions = torch.arange(length, device=prefix_len.device)
    in_prefix = positions[None, :] < prefix_len[:, None]  # (B, S): key j lies in the prefix
    mask = causal(length, prefix_len.device)[None] | in_prefix[:, None, :]
    return mask[:, None]


def glm(length: int, part_a_len: torch.Tensor) -> torch.Tensor:
    """GLM's two-part mask (Du et al. 2022, Fig. 2d): Part A attends bidirectionally
    within A; Part B attends to all of A and causally within B. This is exactly the
    prefix mask with the prefix being Part A."""
    return prefix(length, part_a_len)


def padding(is_real: torch.Tensor) -> torch.Tensor:
    """Keys that are padding are hidden from every query: (B, S) -> (B, 1, 1, S)."""
    return is_real[:, None, None, :]


def documents(doc_ids: torch.Tensor) -> torch.Tensor:
    """Packed windows: a token sees only tokens of its own document. (B, T) -> (B, 1, T, T)"""
    return (doc_ids[:, :, None] == doc_ids[:, None, :])[:, None]


def combine(*masks: torch.Tensor | None) -> torch.Tensor | None:
    """Logical AND of the given masks, broadcasting; None entries are ignored."""
    result = None
    for mask in masks:
        if mask is None:
            continue
        result = mask if result is None else result & mask
    return result


def with_self(mask: torch.Tensor) -> torch.Tensor:
    """Let every query see itself, so a padded query's row is never all-False
    (which would make softmax NaN). Real queries always see themselves already."""
    length = mask.shape[-1]
    if mask.shape[-2] != length:
        return mask
    return mask | torch.eye(length, dtype=torch.bool, device=mask.device)


def with_bias(bias: torch.Tensor, mask: torch.Tensor | None, is_causal: bool, key_length: int) -> torch.Tensor:
    """An additive bias (ALiBi, T5's relative bias) and the boolean mask as one additive
    mask: -inf where the mask hides a key. Built once per forward pass, not per layer."""
    if mask is None and is_causal:  # the last T rows of the causal mask: T queries after S - T cached keys
        mask = causal(key_length, bias.device)[key_length - bias.shape[-2] :]
    return bias if mask is None else bias.masked_fill(~mask, float("-inf"))


@dataclass
class AttentionMask:
    """A self-attention mask described by its parts rather than as a T x T tensor, so it
    can become either the dense boolean mask SDPA takes (`dense`) or a FlexAttention
    block mask (`block_mask`) that skips whole blocks and is never materialized per
    head (Dong et al. 2024, "Flex Attention: A Programming Model for Generating
    Optimized Attention Kernels"; torch.nn.attention.flex_attention).

    Parts, ANDed: `causal` (with `prefix_len`: bidirectional over each row's first
    `prefix_len[b]` keys, the non-causal decoder and GLM's Part A), `doc_ids` (packed
    documents, (B, T)) and `is_real` (padding keys, (B, S)). Every query also sees
    itself (`with_self`), in both forms."""

    causal: bool = False
    prefix_len: torch.Tensor | None = None  # (B,)
    doc_ids: torch.Tensor | None = None  # (B, T)
    is_real: torch.Tensor | None = None  # (B, S)

    def __post_init__(self) -> None:
        if self.prefix_len is not None and not self.causal:
            raise ValueError("a prefix mask is causal after the prefix: pass causal=True with prefix_len")

    @property
    def is_plain_causal(self) -> bool:
        """Nothing but causal: SDPA's own causal kernel (flash) serves it best."""
        return self.causal and self.prefix_len is None and self.doc_ids is None and self.is_real is None

    @property
    def is_empty(self) -> bool:
        """Nothing masked at all (bidirectional, unpadded): no mask is needed."""
        return not self.causal and self.doc_ids is None and self.is_real is None

    def dense(self, length: int, device: torch.device | None = None) -> torch.Tensor | None:
        """The boolean mask, (B|1, 1, T, T) or (T, T), from the functions above (None if empty)."""
        if self.prefix_len is not None:
            base = prefix(length, self.prefix_len)
        else:
            base = causal(length, device) if self.causal else None
        return combine(
            base,
            documents(self.doc_ids) if self.doc_ids is not None else None,
            padding(self.is_real) if self.is_real is not None else None,
        )

    def mask_mod(self) -> Callable:
        """The same mask as a FlexAttention `mask_mod(b, h, q_idx, kv_idx) -> bool`."""
        from torch.nn.attention.flex_attention import and_masks, or_masks

        prefix_len, doc_ids, is_real = self.prefix_len, self.doc_ids, self.is_real

        def causal_mod(b, h, q_idx, kv_idx):
            return kv_idx <= q_idx

        def prefix_mod(b, h, q_idx, kv_idx):
            return kv_idx < prefix_len[b]

        def document_mod(b, h, q_idx, kv_idx):
            return doc_ids[b, q_idx] == doc_ids[b, kv_idx]

        def padding_mod(b, h, q_idx, kv_idx):
            return is_real[b, kv_idx]

        def self_mod(b, h, q_idx, kv_idx):
            return q_idx == kv_idx

        parts = []
        if self.causal:
            parts.append(or_masks(causal_mod, prefix_mod) if prefix_len is not None else causal_mod)
        if doc_ids is not None:
            parts.append(document_mod)
        if is_real is not None:
            parts.append(padding_mod)
        return or_masks(and_masks(*parts), self_mod)

    def block_mask(self, batch: int, length: int, device: torch.device):
        """A FlexAttention BlockMask for (batch, any head, length, length); built once per
        forward and shared by every layer, as the FlexAttention docs advise."""
        from torch.nn.attention.flex_attention import create_block_mask

        return create_block_mask(self.mask_mod(), batch, None, length, length, device=device)
