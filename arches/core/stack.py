"""Embeddings, the stack of blocks, and the LM head: the model body every family shares.

A family differs only by the tokens, mask and position ids it feeds in
(`forward(tokens, mask=..., position_ids=..., ...)`), never by a mode flag here.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from arches.core import masks
from arches.core.attention import AttentionInputs, KVCache, flex_available
from arches.core.block import Block, make_norm
from arches.core.config import BIASED_POSITIONS, ModelConfig, SpeedConfig
from arches.core.positions import RelativePositionBias, alibi_bias, alibi_slopes, rope_cos_sin
from arches.errors import UserError

IGNORE_INDEX = -100


class Embeddings(nn.Module):
    """Token embedding, plus learned absolute positions (GPT, BERT) or GLM's 2D
    positions (Du et al. 2022 §2.3: a position id and a block position id, each with
    its own learned table), then BLOOM's optional embedding LayerNorm."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.max_len = cfg.max_len
        self.tokens = nn.Embedding(cfg.vocab_size, cfg.d_model)
        learned = cfg.position in ("learned", "glm2d")
        self.positions = nn.Embedding(cfg.max_len, cfg.d_model) if learned else None
        self.block_positions = nn.Embedding(cfg.max_len, cfg.d_model) if cfg.position == "glm2d" else None
        self.norm = make_norm(cfg) if cfg.embed_norm else None  # BLOOM (Scao et al. 2022 §3.2.3)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(
        self, tokens: torch.Tensor, position_ids: torch.Tensor, block_position_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        x = self.tokens(tokens)  # (B, T, D)
        if self.positions is not None:
            # the check reads a number off the device: skipped inside torch.compile, where it
            # would break the graph (training windows are checked against max_len up front)
            if not torch.compiler.is_compiling() and int(position_ids.max()) >= self.max_len:
                raise UserError(
                    f"position {int(position_ids.max())} is past the model's max_len={self.max_len}; "
                    f"use shorter inputs or a size with a larger max_len"
                )
            x = x + self.positions(position_ids)
        if self.block_positions is not None:
            if block_position_ids is None:
                block_position_ids = torch.zeros_like(position_ids)
            x = x + self.block_positions(block_position_ids)
        if self.norm is not None:
            x = self.norm(x)
        return self.dropout(x)


class Transformer(nn.Module):
    """Embeddings -> blocks -> final norm. With `cross_attention` each block also
    attends to `memory` (T5's decoder); `embeddings` may be shared (T5 shares them).
    `bidirectional_buckets` (t5_relative only): whether keys after the query get
    distance buckets of their own, as in T5's encoder, or share the query's, as in its
    decoder, which never attends to them.

    `mask` is a boolean tensor, or an `AttentionMask` (its parts), which the stack turns
    into a FlexAttention block mask or a dense mask as `attention_backend` says (see
    `SpeedConfig`); `activation_checkpointing` recomputes each block in the backward pass.
    Both are set by `apply_speed` and change no result beyond float rounding."""

    attention_backend: str = "auto"
    activation_checkpointing: bool = False

    def __init__(
        self,
        cfg: ModelConfig,
        cross_attention: bool = False,
        embeddings: Embeddings | None = None,
        bidirectional_buckets: bool = True,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = embeddings if embeddings is not None else Embeddings(cfg)
        self.blocks = nn.ModuleList(Block(cfg, i, cross_attention) for i in range(cfg.n_layers))
        # post-norm blocks end in a norm already
        self.final_norm = make_norm(cfg) if cfg.norm_placement == "pre" else nn.Identity()
        if cfg.position == "alibi":
            self.register_buffer("alibi_slopes", alibi_slopes(cfg.n_heads), persistent=False)
        if cfg.position == "t5_relative":
            self.relative_bias = RelativePositionBias(
                cfg.n_heads, cfg.relative_buckets, cfg.relative_max_distance, bidirectional_buckets
            )

    def forward(
        self,
        tokens: torch.Tensor,
        *,
        mask: torch.Tensor | None = None,
        is_causal: bool = False,
        position_ids: torch.Tensor | None = None,
        block_position_ids: torch.Tensor | None = None,
        memory: torch.Tensor | None = None,
        memory_mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
        only_positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The final hidden states (B, T, D); with `only_positions` (B,), those of one
        position per row, (B, D): the last block then computes only those queries (a
        scorer reading one position per row, as pseudo-log-likelihood's masked copies
        do, needs no more), and the earlier blocks every position, as they must."""
        batch, length = tokens.shape
        offset = cache.length if cache is not None else 0
        block_mask, parts = None, None
        if isinstance(mask, masks.AttentionMask):
            parts, mask = mask, None
            if offset and parts.causal:
                raise ValueError("an AttentionMask describes a fresh pass; with cached keys pass a boolean mask")
            if self.uses_flex(parts, tokens.device, cache):
                block_mask = parts.block_mask(batch, length, tokens.device)
            elif parts.is_plain_causal:
                is_causal = True
            else:
                mask = parts.dense(length, tokens.device)
        # every row's positions are the default ones unless given: the RoPE tables and the
        # ALiBi and T5 biases are then computed for one row and broadcast over the batch
        # (T5's relative bias per row made its table's backward a fifth of a CPU step)
        shared_positions = position_ids is None
        if shared_positions:
            position_ids = torch.arange(offset, offset + length, device=tokens.device).expand(batch, length)
        table_positions = position_ids[:1] if shared_positions else position_ids
        if is_causal and (offset or mask is not None):
            # SDPA's is_causal aligns to the top-left and is not combined with a mask:
            # with cached keys or a mask, spell the causal mask out
            mask = masks.combine(mask, masks.causal(offset + length, tokens.device)[offset:])
            is_causal = False
        if mask is not None:
            mask = masks.with_self(mask)
        inputs = AttentionInputs(mask=mask, is_causal=is_causal, cache=cache, block_mask=block_mask)
        if self.cfg.position == "rope":
            inputs.rope = rope_cos_sin(table_positions, self.cfg.rotary_dim, self.cfg.rope_base)
        elif self.cfg.position in ("alibi", "t5_relative"):
            key_positions = table_positions
            if offset:  # cached keys sit at the default positions before this chunk
                key_positions = torch.arange(offset + length, device=tokens.device).expand(len(table_positions), -1)
            if self.cfg.position == "alibi":
                bias = alibi_bias(self.alibi_slopes, table_positions, key_positions)
            elif shared_positions:  # computed once, added in every layer (T5's layer 0 computes it and passes it on)
                bias = self.relative_bias.consecutive(length, key_positions.shape[-1], offset)
            else:
                bias = self.relative_bias(table_positions, key_positions)
            # the bias and the mask become one additive mask, once for every layer
            inputs.mask, inputs.is_causal = masks.with_bias(bias, mask, is_causal, key_positions.shape[-1]), False
        memory_inputs = AttentionInputs(mask=memory_mask) if memory is not None else None
        x = self.embed(tokens, position_ids, block_position_ids)
        recompute = self.activation_checkpointing and self.training and torch.is_grad_enabled()
        for index, block in enumerate(self.blocks):
            if only_positions is not None and index == len(self.blocks) - 1:
                dense = masks.with_self(parts.dense(length, tokens.device)) if block_mask is not None else None
                queries = x[torch.arange(batch, device=x.device), only_positions][:, None]  # (B, 1, D)
                query_inputs = inputs.for_queries(only_positions, x.shape[1], dense)
                return self.final_norm(block(queries, query_inputs, memory, memory_inputs, keys=x))[:, 0]
            if recompute:
                # non-reentrant checkpointing (the PyTorch docs' recommendation): keyword-free
                # inputs of any type, and the RNG state is replayed so dropout matches
                x = checkpoint(block, x, inputs, memory, memory_inputs, use_reentrant=False)
            else:
                x = block(x, inputs, memory, memory_inputs)
        return self.final_norm(x)

    def uses_flex(self, parts: masks.AttentionMask, device: torch.device, cache: KVCache | None) -> bool:
        """Whether this pass runs its self-attention through FlexAttention (see SpeedConfig)."""
        if self.attention_backend == "sdpa" or cache is not None or parts.is_plain_causal or parts.is_empty:
            return False
        if self.cfg.position in BIASED_POSITIONS or (self.training and self.cfg.dropout > 0):
            return False
        if self.attention_backend == "flex":
            return True
        # auto: the GPU kernels, for the power-of-two head sizes they are tuned for (16..256)
        head_dim = self.cfg.head_dim
        return device.type == "cuda" and 16 <= head_dim <= 256 and head_dim & (head_dim - 1) == 0 and flex_available()


class HeadTransform(nn.Module):
    """BERT's MLM head transform (Devlin et al. 2019, the released code's
    `cls/predictions/transform`): dense -> GELU -> LayerNorm, before the output projection."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.d_model, cfg.d_model)
        self.gelu_approximate = cfg.gelu_approximate
        self.norm = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.norm(F.gelu(self.dense(hidden), approximate=self.gelu_approximate))


class LMHead(nn.Module):
    """Hidden states -> vocabulary logits, tied to the token embedding unless asked not to
    be; with `head_transform` and `head_bias`, BERT's MLM head."""

    loss_chunk_size: int | None = None  # set by apply_speed: see logits_and_loss

    def __init__(self, cfg: ModelConfig, embeddings: Embeddings) -> None:
        super().__init__()
        self.embeddings = [embeddings]  # a list, so the tied weight is not registered twice
        self.transform = HeadTransform(cfg) if cfg.head_transform else None
        self.proj = None if cfg.tie_embeddings else nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(cfg.vocab_size)) if cfg.head_bias else None

    @property
    def weight(self) -> torch.Tensor:
        return self.embeddings[0].tokens.weight if self.proj is None else self.proj.weight

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.transform is not None:
            hidden = self.transform(hidden)
        return F.linear(hidden, self.weight, self.bias)

    def logits_and_loss(
        self, hidden: torch.Tensor, labels: torch.Tensor, labelled_only: bool = False
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """(logits, mean cross-entropy) for hidden (B, T, D) and labels (B, T).

        `labelled_only`: only the positions with a label go through the head (an MLM
        predicts ~15% of its positions, GLM only Part B), so the logits are (N, V) for
        those N positions in row-major order; the loss is the same. With
        `loss_chunk_size` the logits are never formed whole and None is returned."""
        if labelled_only:
            has_label = labels != IGNORE_INDEX
            hidden, labels = hidden[has_label], labels[has_label]  # (N, D), (N,)
        if self.loss_chunk_size is None:
            logits = self(hidden)
            return logits, lm_loss(logits, labels)
        if self.transform is not None:
            hidden = self.transform(hidden)
        flat_hidden, flat_labels = hidden.reshape(-1, hidden.shape[-1]), labels.reshape(-1)
        loss = ChunkedCrossEntropy.apply(flat_hidden, self.weight, self.bias, flat_labels, self.loss_chunk_size)
        return None, loss


def lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the positions whose label is not IGNORE_INDEX (in fp32)."""
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE_INDEX)


class ChunkedCrossEntropy(torch.autograd.Function):
    """The output projection and mean cross-entropy over `chunk_size` positions at a
    time, so the float32 logits exist for one chunk only (a (T, V) block for a 32k vocab
    is most of a small model's activation memory). The forward pass also computes the
    gradients (softmax - one-hot, times W and times h) chunk by chunk, as Liger
    Kernel's fused linear cross-entropy does (Hsu et al. 2024), so nothing is
    recomputed: the backward pass only scales them by the incoming gradient.

    hidden (N, D), weight (V, D), bias (V,) or None, labels (N,) -> the loss; labels
    equal to IGNORE_INDEX count neither in the sum nor in the mean, as in lm_loss."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, labels, chunk_size):
        needs_hidden, needs_weight, needs_bias = ctx.needs_input_grad[:3]
        has_label = labels != IGNORE_INDEX
        count = has_label.sum()
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_hidden = torch.zeros_like(hidden) if needs_hidden else None
        grad_weight = torch.zeros_like(weight, dtype=torch.float32) if needs_weight else None
        grad_bias = torch.zeros_like(bias, dtype=torch.float32) if needs_bias else None
        for start in range(0, hidden.shape[0], chunk_size):
            rows = slice(start, start + chunk_size)
            chunk, chunk_labels, chunk_has_label = hidden[rows], labels[rows], has_label[rows]
            # (n, V): log_softmax is one fused pass on a CPU, where logsumexp takes four
            # (max, subtract, exp, sum: measured 9.7 against 13.7 ms for 512 x 8192)
            log_probs = torch.log_softmax(F.linear(chunk, weight, bias).float(), dim=-1)
            targets = chunk_labels.clamp(min=0)[:, None]
            token_loss = -log_probs.gather(1, targets)[:, 0]
            total = total + torch.where(chunk_has_label, token_loss, 0.0).sum()
            if not (needs_hidden or needs_weight or needs_bias):
                continue
            # d(sum of token losses)/d(logits) = softmax - one_hot, zero on unlabelled rows
            grad_logits = log_probs.exp_()  # in place: the softmax, no further block
            grad_logits.scatter_add_(1, targets, torch.full_like(targets, -1.0, dtype=grad_logits.dtype))
            grad_logits.mul_(chunk_has_label[:, None])
            if needs_hidden:
                grad_hidden[rows] = (grad_logits.to(weight.dtype) @ weight).to(hidden.dtype)
            if needs_weight:
                grad_weight += grad_logits.t().to(chunk.dtype) @ chunk
            if needs_bias:
                grad_bias += grad_logits.sum(0)
        # the mean, as F.cross_entropy takes it (0/0 = nan when no position has a label)
        scale = 1.0 / count.to(torch.float32)
        ctx.save_for_backward(
            *(g * scale if g is not None else None for g in (grad_hidden, grad_weight, grad_bias))
        )
        ctx.dtypes = (weight.dtype, bias.dtype if bias is not None else None)
        return total * scale

    @staticmethod
    def backward(ctx, grad_loss):
        grad_hidden, grad_weight, grad_bias = ctx.saved_tensors
        weight_dtype, bias_dtype = ctx.dtypes
        return (
            grad_hidden * grad_loss.to(grad_hidden.dtype) if grad_hidden is not None else None,
            (grad_weight * grad_loss).to(weight_dtype) if grad_weight is not None else None,
            (grad_bias * grad_loss).to(bias_dtype) if grad_bias is not None else None,
            None,
            None,
        )


def apply_speed(model: nn.Module, speed: SpeedConfig, gpu: bool = False) -> nn.Module:
    """Set how every Transformer stack and LM head of `model` computes (see SpeedConfig),
    for training on a GPU or (`gpu=False`) a CPU."""
    for module in model.modules():
        if isinstance(module, Transformer):
            module.attention_backend = speed.attention_backend
            module.activation_checkpointing = speed.activation_checkpointing
        elif isinstance(module, LMHead):
            module.loss_chunk_size = speed.loss_chunk_rows(module.weight.shape[0], gpu)
    return model


def init_weights(model: nn.Module, cfg: ModelConfig) -> None:
    """N(0, 0.02) everywhere; residual output projections scaled by 1/sqrt(2 n_layers)
    (Radford et al. 2019, GPT-2 §2.3)."""
    residual_std = cfg.init_std / math.sqrt(2 * cfg.n_layers)
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            is_residual_out = name.endswith("out_proj") or name.endswith("mlp.down")
            nn.init.normal_(module.weight, std=residual_std if is_residual_out else cfg.init_std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=cfg.init_std)


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """Total and non-embedding parameters (Kaplan et al. 2020 count the latter):
    token and position tables, and an untied output projection, are embeddings."""
    total = sum(p.numel() for p in model.parameters())
    embedding = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Embedding))
    embedding += sum(m.proj.weight.numel() for m in model.modules() if isinstance(m, LMHead) and m.proj is not None)
    return {"total": total, "non_embedding": total - embedding}
