"""Position schemes that act inside attention: RoPE and ALiBi.

Learned absolute positions (and GLM's 2D ones) are embeddings; see `stack.py`.
"""

from __future__ import annotations

import math

import torch


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
