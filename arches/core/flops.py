"""Analytic FLOPs, including attention (as Kaplan et al. 2020, Table 1, and
Hoffmann et al. 2022, Appendix F, count them): a multiply-add is 2 FLOPs and
training costs 3x the forward pass (forward + 2x backward)."""

from __future__ import annotations

from arches.core.config import GATED_ACTIVATIONS, ModelConfig

TRAINING_MULTIPLIER = 3


def layer_forward_flops(cfg: ModelConfig, attended: float, cross_attended: float = 0.0) -> float:
    """Forward FLOPs of one block for one token attending to `attended` keys
    (and `cross_attended` memory positions, if the block has cross-attention).
    The memory's key/value projections are counted with `memory_kv_flops`."""
    q_and_out = 2 * 2 * cfg.d_model * cfg.n_heads * cfg.head_dim
    kv = 2 * 2 * cfg.d_model * cfg.n_kv_heads * cfg.head_dim
    scores_and_mix = 2 * 2 * attended * cfg.n_heads * cfg.head_dim  # QK^T and AV
    mlp_matrices = 3 if cfg.activation in GATED_ACTIVATIONS else 2
    mlp = 2 * mlp_matrices * cfg.d_model * cfg.d_ff
    flops = q_and_out + kv + scores_and_mix + mlp
    if cross_attended:
        flops += q_and_out + 2 * 2 * cross_attended * cfg.n_heads * cfg.head_dim
    return float(flops)


def memory_kv_flops(cfg: ModelConfig) -> float:
    """Per memory (encoder) token and per decoder layer: its cross-attention K and V."""
    return float(2 * 2 * cfg.d_model * cfg.n_kv_heads * cfg.head_dim)


def head_flops(cfg: ModelConfig) -> float:
    return float(2 * cfg.d_model * cfg.vocab_size)


def causal_mean_context(length: int) -> float:
    """A causal token at position i attends to i+1 keys; the mean over a sequence."""
    return (length + 1) / 2


def prefix_mean_context(length: int, prefix_len: int) -> float:
    """Mean keys attended under a prefix mask: the prefix sees itself whole, the rest causally."""
    after = (length * (length + 1) - prefix_len * (prefix_len + 1)) / 2
    return (prefix_len * prefix_len + after) / length
