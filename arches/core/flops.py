"""Analytic training FLOPs per window token, counted as the model computes them.

Matmul FLOPs only, a multiply-add being 2 FLOPs, and training costing 3x the forward
pass (forward + 2x backward), as Kaplan et al. 2020 (Table 1) and Hoffmann et al. 2022
(Appendix F) count them. Norms, activations, softmax and embedding lookups are left out.

Attention follows the same two papers: a query is counted against the FULL length of
what it attends to, whatever the mask (Kaplan: 2·n_layer·n_ctx·d_attn per token for
QK^T, as much again for AV; Hoffmann: 2·seq_len·key_size·num_heads per token and
layer for each). So every query of a self-attended sequence of length T sees T keys,
under causal, prefix and GLM masks alike, and a decoder query sees the whole encoder
memory. SDPA with a dense mask (prefix, GLM, document and padding masks) computes
the masked scores too, and `torch.utils.flop_counter` counts SDPA this way
(tests/test_flops.py checks every preset against it). A causal flash kernel (on a
GPU, and torch's CPU kernel for a plain causal batch) and FlexAttention's block masks
(`train.attention_backend`, on a GPU) skip the fully masked blocks, about half the
scores of a causal mask: this count does not credit that saving.

The LM head (and BERT's head transform) is counted on the positions that reach it:
every position where a family runs it whole, only the labelled ones where it runs
`LMHead.logits_and_loss(..., labelled_only=True)`. Where an objective's lengths or
labelled count are random (a prefix split, GLM's spans), the count is their exact
expectation over the objective's distribution (`expected`). It is per example:
the padding a batch adds to its longest example is not counted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

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


def stack_forward_flops(cfg: ModelConfig, length: float, cross_attended: float = 0.0) -> float:
    """Forward FLOPs of a sequence of `length` tokens through every block, each token
    attending to all `length` of them (and to `cross_attended` memory positions)."""
    return length * cfg.n_layers * layer_forward_flops(cfg, length, cross_attended)


def memory_kv_flops(cfg: ModelConfig) -> float:
    """Per memory (encoder) token and per decoder layer: its cross-attention K and V."""
    return float(2 * 2 * cfg.d_model * cfg.n_kv_heads * cfg.head_dim)


def head_flops(cfg: ModelConfig) -> float:
    """Per position that reaches the head: the output projection, after BERT's
    dense head transform where the model has one."""
    transform = 2 * cfg.d_model * cfg.d_model if cfg.head_transform else 0
    return float(2 * cfg.d_model * cfg.vocab_size + transform)


def expected(
    cost: Callable[[int], float], outcomes: Iterable[int], probabilities: Iterable[float] | None = None
) -> float:
    """E[cost(X)], exactly, for X over `outcomes` with `probabilities` (uniform if None)."""
    outcomes = list(outcomes)
    if probabilities is None:
        return sum(cost(x) for x in outcomes) / len(outcomes)
    return sum(float(p) * cost(x) for x, p in zip(outcomes, probabilities, strict=True) if p)
