"""Position schemes that act inside attention: RoPE, ALiBi and T5's relative bias.

Learned absolute positions (and GLM's 2D ones) are embeddings; see `stack.py`.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def rope_cos_sin(position_ids: torch.Tensor, rotary_dim: int, base: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables for RoPE (Su et al. 2021, eq. 34), shape (B, 1, T, rotary_dim)."""
    inv_freq = 1.0 / (base ** (torch.arange(0, rotary_dim, 2, device=position_ids.device, dtype=torch.float32) / rotary_dim))
    angles = position_ids.to(torch.float32)[..., None] * inv_freq  # (B, T, rotary_dim/2)
    angles = torch.cat([angles, angles], dim=-1)  # (B, T, rotary_dim), GPT-NeoX rotate-half layout
    return angles.cos()[:, None], angles.sin()[:, None]


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat([-second, first], dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the first `rotary_dim` dims of each head of x (B, H, T, hd); the rest pass
    through unchanged (GPT-NeoX's partial rotary, `rotary_pct`)."""
    rotary_dim = cos.shape[-1]
    rotated, passed = x[..., :rotary_dim], x[..., rotary_dim:]
    rotated = rotated * cos.to(x.dtype) + _rotate_half(rotated) * sin.to(x.dtype)
    return torch.cat([rotated, passed], dim=-1)


def alibi_slopes(n_heads: int) -> torch.Tensor:
    """Per-head slopes, the geometric sequence of Press et al. 2022 (§3), extended for
    head counts that are not a power of two as in their reference code."""

    def power_of_two_slopes(n: int) -> list[float]:
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start * start**i for i in range(n)]

    if math.log2(n_heads).is_integer():
        slopes = power_of_two_slopes(n_heads)
    else:
        closest = 2 ** math.floor(math.log2(n_heads))
        slopes = power_of_two_slopes(closest) + power_of_two_slopes(2 * closest)[0::2][: n_heads - closest]
    return torch.tensor(slopes, dtype=torch.float32)


def alibi_bias(slopes: torch.Tensor, query_positions: torch.Tensor, key_positions: torch.Tensor) -> torch.Tensor:
    """-slope * |i - j|, shape (B, H, T, S). The symmetric distance serves causal
    (where j > i is masked anyway) and bidirectional attention alike."""
    distance = (query_positions[:, :, None] - key_positions[:, None, :]).abs().to(torch.float32)  # (B, T, S)
    return -slopes.to(distance.device)[None, :, None, None] * distance[:, None]


def t5_relative_buckets(relative_position: torch.Tensor, bidirectional: bool, buckets: int, max_distance: int) -> torch.Tensor:
    """T5's bucket of each key - query distance (Raffel et al. 2020 §2.1; Mesh TensorFlow's
    `_relative_position_bucket`): half the buckets hold one small distance each, the other
    half log-spaced distances up to `max_distance`, beyond which all share the last one.
    Bidirectional: keys before and after the query get separate halves; otherwise later
    keys share bucket 0 with the query itself."""
    bucket = torch.zeros_like(relative_position)
    if bidirectional:
        buckets //= 2
        bucket = bucket + (relative_position > 0).long() * buckets
        distance = relative_position.abs()
    else:
        distance = (-relative_position).clamp(min=0)
    max_exact = buckets // 2
    # the float log of a distance below max_exact is never used (torch.where), only kept finite
    log_ratio = torch.log(distance.float().clamp(min=1) / max_exact) / math.log(max_distance / max_exact)
    large = (max_exact + (log_ratio * (buckets - max_exact)).long()).clamp(max=buckets - 1)
    return bucket + torch.where(distance < max_exact, distance, large)


class RelativePositionBias(nn.Module):
    """T5's learned bias per head and distance bucket, added to the attention logits.
    As in T5, one table per stack is computed once and added in every layer."""

    def __init__(self, n_heads: int, buckets: int, max_distance: int, bidirectional: bool) -> None:
        super().__init__()
        self.buckets, self.max_distance, self.bidirectional = buckets, max_distance, bidirectional
        self.table = nn.Embedding(buckets, n_heads)

    def forward(self, query_positions: torch.Tensor, key_positions: torch.Tensor) -> torch.Tensor:
        """(B, T) and (B, S) positions -> additive bias (B, H, T, S)."""
        relative = key_positions[:, None, :] - query_positions[:, :, None]  # (B, T, S)
        bucket = t5_relative_buckets(relative, self.bidirectional, self.buckets, self.max_distance)
        return self.table(bucket).permute(0, 3, 1, 2)  # (B, H, T, S)

    def consecutive(self, length: int, key_length: int, offset: int = 0) -> torch.Tensor:
        """The bias of queries at positions offset..offset+length-1 over keys at
        0..key_length-1, (1, H, T, S), as `forward` gives it. It depends on the distance
        j - i only, so the table is looked up once per distance (T + S - 1 of them) and
        laid out along the diagonals (`unfold`), whose backward sums them natively: the
        table's gradient no longer goes through an embedding backward over T x S indices."""
        device = self.table.weight.device
        distances = torch.arange(-(length - 1) - offset, key_length - offset, device=device)  # (T + S - 1,)
        bucket = t5_relative_buckets(distances, self.bidirectional, self.buckets, self.max_distance)
        per_distance = self.table(bucket).t()  # (H, T + S - 1): element k is distance k - (T - 1) - offset
        # windows[h, k, j] = per_distance[h, k + j]; query i takes window k = T - 1 - i
        return per_distance.unfold(1, key_length, 1).flip(1)[None]  # (1, H, T, S)


def document_position_ids(doc_ids: torch.Tensor) -> torch.Tensor:
    """Positions that restart at 0 where each packed document starts: (B, T) document
    numbers, non-decreasing along a row -> (B, T) positions. With the document mask this
    makes a packed window compute what its documents would alone (learned absolute
    positions would otherwise see a later document at an offset it never has alone)."""
    index = torch.arange(doc_ids.shape[-1], device=doc_ids.device).expand_as(doc_ids)
    starts = torch.ones_like(doc_ids, dtype=torch.bool)
    starts[..., 1:] = doc_ids[..., 1:] != doc_ids[..., :-1]
    start_index = torch.cummax(torch.where(starts, index, 0), dim=-1).values  # each position's document start
    return index - start_index
