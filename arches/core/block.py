"""The transformer block: norms, attention, (cross-attention), MLP, in the
placement the config asks for."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from arches.core.attention import Attention, AttentionInputs
from arches.core.config import GATED_ACTIVATIONS, ModelConfig


class RMSNorm(nn.Module):
    """Zhang & Sennrich 2019; LLaMA's norm."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        variance = x.float().pow(2).mean(-1, keepdim=True)
        return (x.float() * torch.rsqrt(variance + self.eps)).to(x.dtype) * self.weight


def make_norm(cfg: ModelConfig) -> nn.Module:
    if cfg.norm == "rmsnorm":
        return RMSNorm(cfg.d_model, cfg.norm_eps)
    return nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps, bias=cfg.bias)


class MLP(nn.Module):
    """Two-layer MLP, or a gated unit (SwiGLU / GeGLU, Shazeer 2020)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.activation = cfg.activation
        self.gelu_approximate = cfg.gelu_approximate
        self.gated = cfg.activation in GATED_ACTIVATIONS
        self.up = nn.Linear(cfg.d_model, cfg.d_ff * (2 if self.gated else 1), bias=cfg.bias)
        self.down = nn.Linear(cfg.d_ff, cfg.d_model, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.up(x)
        if self.gated:
            gate, hidden = hidden.chunk(2, dim=-1)
            gate = F.silu(gate) if self.activation == "swiglu" else F.gelu(gate, approximate=self.gelu_approximate)
            hidden = gate * hidden
        elif self.activation == "relu":
            hidden = F.relu(hidden)
        else:
            hidden = F.gelu(hidden, approximate=self.gelu_approximate)
        return self.dropout(self.down(hidden))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_index: int, cross_attention: bool = False) -> None:
        super().__init__()
        self.pre_norm = cfg.norm_placement == "pre"
        self.parallel = cfg.parallel_block
        self.attn_norm = make_norm(cfg)
        self.attn = Attention(cfg, layer_index)
        self.cross_norm = make_norm(cfg) if cross_attention else None
        self.cross_attn = Attention(cfg, layer_index, cross=True) if cross_attention else None
        self.mlp_norm = make_norm(cfg)
        self.mlp = MLP(cfg)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(
        self,
        x: torch.Tensor,
        inputs: AttentionInputs,
        memory: torch.Tensor | None = None,
        memory_inputs: AttentionInputs | None = None,
        keys: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """`keys`: the states the self-attention reads when x holds only some of the
        queries (Transformer's `only_positions`); None: x itself."""

        def cross(h: torch.Tensor) -> torch.Tensor:
            return self.dropout(self.cross_attn(h, memory_inputs or AttentionInputs(), memory))

        def attend(h: torch.Tensor, norm: nn.Module | None) -> torch.Tensor:
            context = None if keys is None else norm(keys) if norm is not None else keys
            return self.dropout(self.attn(h, inputs, keys=context))

        if self.parallel:
            # GPT-J / GPT-NeoX (Wang & Komatsuzaki 2021): x + attn(norm1 x) + mlp(norm2 x)
            if self.pre_norm:
                out = x + attend(self.attn_norm(x), self.attn_norm) + self.mlp(self.mlp_norm(x))
                if self.cross_attn is not None:
                    out = out + cross(self.cross_norm(x))
                return out
            out = x + attend(x, None) + self.mlp(x)
            if self.cross_attn is not None:
                out = out + cross(x)
            return self.attn_norm(out)
        if self.pre_norm:  # GPT-2 onwards
            x = x + attend(self.attn_norm(x), self.attn_norm)
            if self.cross_attn is not None:
                x = x + cross(self.cross_norm(x))
            return x + self.mlp(self.mlp_norm(x))
        # post-norm, as in the original Transformer and BERT
        x = self.attn_norm(x + attend(x, None))
        if self.cross_attn is not None:
            x = self.cross_norm(x + cross(x))
        return self.mlp_norm(x + self.mlp(x))
