"""Multi-head (grouped/multi-query) attention through `scaled_dot_product_attention`,
so the flash and memory-efficient kernels apply when no dense bias is needed, or
through FlexAttention when the stack hands it a block mask (`arches.core.masks.AttentionMask`)."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from arches.core.config import ModelConfig
from arches.core.positions import apply_rope

SDPA_SHARES_KV_HEADS = torch.torch_version.TorchVersion(torch.__version__) >= "2.5"  # SDPA's enable_gqa


@dataclass
class KVCache:
    """Keys and values seen so far, one (k, v) per layer, for incremental decoding."""

    layers: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)

    def update(self, layer: int, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if layer in self.layers:
            old_keys, old_values = self.layers[layer]
            keys = torch.cat([old_keys, keys], dim=2)
            values = torch.cat([old_values, values], dim=2)
        self.layers[layer] = (keys, values)
        return keys, values

    @property
    def length(self) -> int:
        return next(iter(self.layers.values()))[0].shape[2] if self.layers else 0


@dataclass
class AttentionInputs:
    """What a self-attention layer needs besides x, computed once per forward."""

    # bool (B|1, 1, T, S), True = attend; or additive float (B|1, H|1, T, S), -inf = hidden,
    # where the stack has merged a position bias (ALiBi, T5's) into the mask
    mask: torch.Tensor | None = None
    is_causal: bool = False  # use SDPA's causal kernel instead of a mask
    rope: tuple[torch.Tensor, torch.Tensor] | None = None  # cos, sin for the queries (B, 1, T, r)
    rope_keys: tuple[torch.Tensor, torch.Tensor] | None = None  # for the new keys; = rope if None
    cache: KVCache | None = None
    block_mask: Any = None  # a FlexAttention BlockMask: attention runs through flex_attention instead of SDPA

    def for_queries(self, positions: torch.Tensor, key_length: int, dense_mask: torch.Tensor | None = None) -> AttentionInputs:
        """These inputs for one query per row, at `positions` (B,), over all `key_length`
        keys: the mask's and the RoPE tables' rows of those queries. A block mask, which
        cannot be cut by rows, is replaced by `dense_mask`, the same mask as a tensor."""
        if self.cache is not None:
            raise ValueError("one query per row is a fresh pass's; it takes no KV cache")
        rows = torch.arange(len(positions), device=positions.device)

        def pick(table: torch.Tensor) -> torch.Tensor:  # (B|1, X, T|1, Y) -> (B|1, X, 1, Y)
            if table.shape[-2] == 1:
                return table
            # advanced indices on dims 0 and 2 put the row dim first: (B, X, Y)
            return table.expand(len(positions), *table.shape[1:])[rows, :, positions][:, :, None]

        mask = dense_mask if self.block_mask is not None else self.mask
        mask = pick(mask) if mask is not None else None
        if self.is_causal:  # SDPA's causal flag: each query sees the keys up to its own position
            keys = torch.arange(key_length, device=positions.device)
            mask = (keys[None, :] <= positions[:, None])[:, None, None, :]  # (B, 1, 1, S)
        rope = tuple(pick(table) for table in self.rope) if self.rope is not None else None
        return AttentionInputs(mask=mask, rope=rope, rope_keys=self.rope_keys or self.rope)


def flex_available() -> bool:
    """FlexAttention ships with torch >= 2.5."""
    try:
        import torch.nn.attention.flex_attention  # noqa: F401
    except ImportError:
        return False
    return True


@functools.lru_cache(maxsize=1)
def _compiled_flex_attention():
    # The FlexAttention docs: flex_attention is fast only under torch.compile, which
    # generates one fused kernel from the mask; called eagerly it runs an unfused reference.
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention)


def flex_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_mask: Any) -> torch.Tensor:
    """flex_attention, compiled on a GPU (inlined when the whole model is being compiled);
    eager elsewhere, which is correct but slow (and, in torch 2.13, forward-only on a CPU)."""
    from torch.nn.attention.flex_attention import flex_attention as eager

    if q.device.type == "cuda" and not torch.compiler.is_compiling():
        return _compiled_flex_attention()(q, k, v, block_mask=block_mask)
    return eager(q, k, v, block_mask=block_mask)


def biased_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor, dropout: float) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + bias) v for an additive mask (ALiBi's, T5's) on a CPU. SDPA
    has no CPU kernel for a bias that takes a gradient and falls back to this same math,
    plus a pass that zeroes fully masked rows, which `masks.with_self` rules out here
    (measured on T5's tiny step: 9.5 against 12.7 ms for a (8, 2, 232, 64) layer)."""
    scores = torch.matmul(q, k.transpose(-1, -2)) * q.shape[-1] ** -0.5 + bias
    weights = torch.softmax(scores, dim=-1)
    if dropout:
        weights = F.dropout(weights, dropout)
    return torch.matmul(weights, v)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_index: int = 0, cross: bool = False) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.layer_index = layer_index
        self.cross = cross
        self.q_proj = nn.Linear(cfg.d_model, cfg.n_heads * cfg.head_dim, bias=cfg.bias)
        self.kv_proj = nn.Linear(cfg.d_model, 2 * cfg.n_kv_heads * cfg.head_dim, bias=cfg.bias)
        self.out_proj = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.d_model, bias=cfg.bias)
        self.dropout = cfg.dropout

    def forward(
        self, x: torch.Tensor, inputs: AttentionInputs, memory: torch.Tensor | None = None, keys: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x (B, T, D) -> (B, T, D). Cross-attention takes its keys and values from
        `memory`; self-attention from x, or from `keys` when x holds only some queries."""
        batch, length, _ = x.shape
        source = memory if self.cross else x if keys is None else keys
        q = self.q_proj(x).view(batch, length, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, hd)
        k, v = self.kv_proj(source).view(batch, source.shape[1], 2, self.n_kv_heads, self.head_dim).unbind(2)
        k, v = k.transpose(1, 2), v.transpose(1, 2)  # (B, Hkv, S, hd)
        if inputs.rope is not None and not self.cross:
            q = apply_rope(q, *inputs.rope)
            k = apply_rope(k, *(inputs.rope_keys or inputs.rope))
        if inputs.cache is not None and not self.cross:
            k, v = inputs.cache.update(self.layer_index, k, v)
        grouped = self.n_kv_heads != self.n_heads  # grouped / multi-query: each kv head serves several
        uses_flex = inputs.block_mask is not None and not self.cross
        mask = inputs.mask
        biased_on_cpu = mask is not None and mask.dtype != torch.bool and q.device.type == "cpu"
        # SDPA shares the kv heads itself (enable_gqa) in its CPU kernels and CUDA's flash
        # kernel, without the copies; with a mask on CUDA its memory-efficient kernel, which
        # takes no GQA, would give way to the math one, so the heads are repeated there
        sdpa_shares = grouped and SDPA_SHARES_KV_HEADS and not uses_flex and not biased_on_cpu and (
            mask is None or q.device.type == "cpu"
        )
        if grouped and not sdpa_shares:
            repeat = self.n_heads // self.n_kv_heads
            k, v = k.repeat_interleave(repeat, dim=1), v.repeat_interleave(repeat, dim=1)
        if uses_flex:  # the mask and any padding are in the block mask
            out = flex_attention(q, k, v, inputs.block_mask)  # (B, H, T, hd)
            return self.out_proj(out.transpose(1, 2).reshape(batch, length, self.n_heads * self.head_dim))
        if mask is not None and mask.dtype != torch.bool:
            mask = mask.to(q.dtype)  # an additive mask in the attention's dtype (bf16 under autocast)
        if biased_on_cpu:
            out = biased_attention(q, k, v, mask, self.dropout if self.training else 0.0)
            return self.out_proj(out.transpose(1, 2).reshape(batch, length, self.n_heads * self.head_dim))
        is_causal = inputs.is_causal and mask is None
        gqa = {"enable_gqa": True} if sdpa_shares else {}
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=is_causal, dropout_p=self.dropout if self.training else 0.0, **gqa
        )  # (B, H, T, hd)
        return self.out_proj(out.transpose(1, 2).reshape(batch, length, self.n_heads * self.head_dim))
