"""`ModelConfig`: the typed, self-validating shape and knobs of every model.

Derivations and validation happen in `__post_init__` (as litgpt's Config does),
so an impossible model fails at construction with a message that names the key
and the valid values.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from arches.errors import UserError, closest

POSITIONS = ("learned", "rope", "alibi", "none", "glm2d", "t5_relative")
NORMS = ("layernorm", "rmsnorm")
NORM_PLACEMENTS = ("pre", "post")
ACTIVATIONS = ("gelu", "relu", "swiglu", "geglu")
GATED_ACTIVATIONS = ("swiglu", "geglu")
GELU_APPROXIMATIONS = ("none", "tanh")  # torch.nn.functional.gelu's `approximate`
# The ModelConfig fields a size preset (sweeps/size/) sets; the arch preset sets the rest.
SIZE_KEYS = ("d_model", "n_layers", "n_heads", "n_kv_heads", "d_ff", "max_len", "dropout")


def _choice(key: str, value: Any, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise UserError(f"model.{key}={value!r} is not valid; choose one of: {', '.join(valid)}.{closest(str(value), valid)}")


@dataclass
class ModelConfig:
    vocab_size: int = 8192
    d_model: int = 256
    n_layers: int = 4
    n_heads: int = 4
    n_kv_heads: int | None = None  # None: = n_heads (multi-head); 1: multi-query (Falcon)
    d_ff: int | None = None  # None: 4*d_model, or 2/3 of that for gated units (Shazeer 2020)
    max_len: int = 512
    dropout: float = 0.0
    bias: bool = True
    tie_embeddings: bool = True
    # --- the seed's knobs, orthogonal to family ---
    position: str = "learned"  # learned | rope | alibi | none | glm2d (GLM only) | t5_relative
    rotary_pct: float = 1.0  # fraction of each head rotated by RoPE (GPT-NeoX: 0.25)
    rope_base: float = 10000.0
    relative_buckets: int = 32  # t5_relative: distance buckets per head (Raffel et al. 2020 §2.1)
    relative_max_distance: int = 128  # t5_relative: distances from here on share the last bucket
    parallel_block: bool = False  # GPT-J / GPT-NeoX: attention and MLP side by side
    embed_norm: bool = False  # BLOOM: LayerNorm right after the embedding
    norm: str = "layernorm"
    norm_placement: str = "pre"
    activation: str = "gelu"
    gelu_approximate: str = "none"  # none: exact (erf) GELU | tanh: GPT-2's and BLOOM's approximation
    head_transform: bool = False  # BERT's MLM head: dense -> GELU -> LayerNorm before the output projection
    head_bias: bool = False  # a bias on the vocabulary logits (BERT's MLM head)
    norm_eps: float = 1e-5
    init_std: float = 0.02

    def __post_init__(self) -> None:
        _choice("position", self.position, POSITIONS)
        _choice("norm", self.norm, NORMS)
        _choice("norm_placement", self.norm_placement, NORM_PLACEMENTS)
        _choice("activation", self.activation, ACTIVATIONS)
        _choice("gelu_approximate", self.gelu_approximate, GELU_APPROXIMATIONS)
        for key in ("vocab_size", "d_model", "n_layers", "n_heads", "max_len", "relative_buckets", "relative_max_distance"):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < 1:
                raise UserError(f"model.{key}={getattr(self, key)!r} must be a positive integer")
        if self.d_model % self.n_heads:
            raise UserError(
                f"model.n_heads={self.n_heads} does not divide model.d_model={self.d_model}; "
                f"pick n_heads among the divisors of d_model"
            )
        if self.n_kv_heads is None:
            self.n_kv_heads = self.n_heads
        if self.n_kv_heads < 1 or self.n_heads % self.n_kv_heads:
            raise UserError(f"model.n_kv_heads={self.n_kv_heads} must divide model.n_heads={self.n_heads}")
        if not 0.0 < self.rotary_pct <= 1.0:
            raise UserError(f"model.rotary_pct={self.rotary_pct} must be in (0, 1]")
        if self.position == "rope" and self.rotary_dim < 2:
            raise UserError(f"model.rotary_pct={self.rotary_pct} rotates fewer than 2 of {self.head_dim} head dims; raise it")
        if self.position == "t5_relative" and self.relative_buckets < 4:
            raise UserError(
                f"model.relative_buckets={self.relative_buckets} is too few: t5_relative splits the buckets between "
                f"the two directions and between exact and log-spaced distances; use 4 or more (T5: 32)"
            )
        if self.position == "t5_relative" and self.relative_max_distance <= self.relative_buckets // 2:
            raise UserError(
                f"model.relative_max_distance={self.relative_max_distance} must exceed relative_buckets // 2 = "
                f"{self.relative_buckets // 2}, the distances that get a bucket each (T5: 128)"
            )
        for key in ("head_transform", "head_bias"):
            if not isinstance(getattr(self, key), bool):
                raise UserError(f"model.{key}={getattr(self, key)!r} must be true or false")
        if not 0.0 <= self.dropout < 1.0:
            raise UserError(f"model.dropout={self.dropout} must be in [0, 1)")
        if self.d_ff is None:
            hidden = 4 * self.d_model
            if self.activation in GATED_ACTIVATIONS:
                # keep the MLP's parameters equal to the ungated 4d one (Shazeer 2020, §2)
                hidden = 8 * ((2 * hidden // 3 + 7) // 8)
            self.d_ff = hidden

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def rotary_dim(self) -> int:
        # an even number of dims, as rotate-half pairs them
        return int(self.head_dim * self.rotary_pct) // 2 * 2

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelConfig:
        names = [f.name for f in dataclasses.fields(cls)]
        for key in values:
            if key not in names:
                raise UserError(f"unknown model key '{key}'; valid: {', '.join(names)}.{closest(key, names)}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


ATTENTION_BACKENDS = ("auto", "sdpa", "flex")
# positions that add a dense bias inside attention: they stay on SDPA (see SpeedConfig)
BIASED_POSITIONS = ("alibi", "t5_relative")


CPU_LOSS_CHUNK_BYTES = 16 * 2**20  # float32 logits per chunk of the loss on a CPU (see SpeedConfig)


@dataclass(frozen=True)
class SpeedConfig:
    """How a model computes, never what: every choice gives the plain path's loss and
    gradients to float tolerance (tests/test_speed_paths.py). Not part of a model's
    identity: a checkpoint trained one way is evaluated or resumed another.

    - `attention_backend`: `sdpa` builds dense boolean masks for
      `scaled_dot_product_attention`; `flex` runs every structured self-attention mask
      (prefix LM, GLM's two parts, packed documents, padding) through FlexAttention with
      a block mask, which skips fully masked blocks and keeps a fused kernel where a
      dense mask forces SDPA off flash attention; `auto` is flex on a GPU for those
      masks, sdpa otherwise. A plain causal mask always takes SDPA's causal (flash)
      kernel, and cross-attention and cached decoding always SDPA. Positions that add a
      bias inside attention (ALiBi, T5's relative buckets) stay on SDPA with the dense
      bias, which its memory-efficient kernel accepts; `flex` refuses them.
    - `loss_chunk_size`: positions per chunk of the head and cross-entropy, so the
      float32 logits of the whole batch never exist at once (null: in one piece); `auto`
      is chunks of 16 MiB of logits on a CPU and one piece on a GPU. On a CPU the chunked
      loss is the faster one (measured in the CPU speed issue: GPT's step at `tiny`,
      8x256 tokens, vocabulary 8192, 0.27 -> 0.20 s): it forms the softmax gradient in
      place while the chunk is in cache, and a chunk stays below glibc's 32 MiB mmap
      threshold, so its memory is reused instead of page-faulted afresh at every step.
    - `activation_checkpointing`: recompute each block in the backward pass instead of
      storing its activations (torch.utils.checkpoint; Chen et al. 2016).
    """

    attention_backend: str = "auto"
    loss_chunk_size: int | str | None = "auto"
    activation_checkpointing: bool = False

    def __post_init__(self) -> None:
        if self.attention_backend not in ATTENTION_BACKENDS:
            raise UserError(
                f"train.attention_backend={self.attention_backend!r} is not valid; choose one of: "
                f"{', '.join(ATTENTION_BACKENDS)}.{closest(str(self.attention_backend), ATTENTION_BACKENDS)}"
            )
        chunk = self.loss_chunk_size
        if chunk is not None and chunk != "auto" and (isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1):
            raise UserError(
                f"train.loss_chunk_size={chunk!r} must be a positive number of positions (e.g. 4096), auto or null"
            )
        if not isinstance(self.activation_checkpointing, bool):
            raise UserError(f"train.activation_checkpointing={self.activation_checkpointing!r} must be true or false")

    def loss_chunk_rows(self, vocab_size: int, gpu: bool) -> int | None:
        """The positions per chunk of a head over `vocab_size` logits (None: one piece)."""
        if self.loss_chunk_size != "auto":
            return self.loss_chunk_size
        return None if gpu else max(1, CPU_LOSS_CHUNK_BYTES // (4 * vocab_size))

    @classmethod
    def from_train(cls, train: Any) -> SpeedConfig:
        """The speed keys of a `train` config section (missing keys take the defaults)."""
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{key: train[key] for key in fields if key in train})

    def check(self, cfg: ModelConfig, training_on_cpu: bool = False) -> None:
        """Refuse a forced `flex` that this torch, model or device cannot run."""
        if self.attention_backend != "flex":
            return
        from arches.core.attention import flex_available

        if not flex_available():
            raise UserError("train.attention_backend=flex needs torch >= 2.5 (FlexAttention); use sdpa or auto")
        if cfg.position in BIASED_POSITIONS:
            raise UserError(
                f"train.attention_backend=flex does not carry model.position={cfg.position}'s attention bias; "
                f"use auto (flex where it applies, sdpa with the dense bias here) or sdpa"
            )
        if cfg.dropout > 0:
            raise UserError(f"train.attention_backend=flex has no attention dropout (model.dropout={cfg.dropout}); use auto or sdpa")
        if training_on_cpu:
            raise UserError(
                "train.attention_backend=flex cannot train on a CPU: FlexAttention has no CPU backward pass; "
                "use auto (sdpa on a CPU) or train on a GPU"
            )
