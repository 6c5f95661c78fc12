"""Attention masks as small composable functions.

Convention (as in `scaled_dot_product_attention`): a boolean tensor where True
means "query i may attend to key j". Shapes broadcast to (B, 1, T, S).
"""

from __future__ import annotations

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
