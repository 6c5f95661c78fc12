"""Interoperability with HF transformers: published checkpoints in, our runs out.

    arches import-hf <model folder or hub name> [--preset P] [results_dir=...] [run_name=...]
    arches export-hf <run folder> <out folder>

`import_hf` turns a transformers checkpoint into a run folder of this harness
(checkpoint, model.json, the model's own tokenizer.json, config.yaml, run.json),
which `arches eval` and the reports then treat like any trained run; `export_hf`
writes a run back as a folder that `AutoModelFor{CausalLM,MaskedLM,Seq2SeqLM}
.from_pretrained` loads with the same logits.

One `Architecture` per supported transformers class holds the whole mapping: its
config -> our `ModelConfig` knobs (`knobs`), the reverse (`hf_config`), and the
tensor links between the two state dicts (`links`). A `Link` says that our
tensors, concatenated on dim 0, equal a conversion of theirs, concatenated on dim
0 (GPT-2's fused c_attn is our q_proj and kv_proj, transposed), so one table
serves both directions. Where transformers computes something our shared
transformer does not, the difference is folded into the weights instead of
adding a knob: T5's unscaled attention (its q is scaled by sqrt(head_dim)), T5's
d_model**-0.5 before a tied output projection (its decoder's final norm is
scaled), BERT's token-type 0 embedding (added to the position table), OPT's two
unused position rows (sliced off).

The imported tokenizer does not carry arches' special tokens; the tokens that
play their roles (pad, bos, eos, mask, sentinels) are recorded in the
checkpoint's `arch.special_tokens`, which the scorers read
(`arches.tokenizer.Specials.from_tokenizer`), and run.json says
`tokenizer_kind: hf`.

transformers is an optional extra (`pip install arches[interop]`); nothing else
in the harness imports it.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import socket
import tempfile
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from arches.core import ModelConfig
from arches.errors import UserError

# --------------------------------------------------------------------------- the mapping machinery

Convert = Callable[[torch.Tensor], torch.Tensor]


def same(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


def transposed(tensor: torch.Tensor) -> torch.Tensor:
    # GPT-2's Conv1D stores a linear layer as (in, out); a bias (1-D) is left alone
    return tensor.t().contiguous()


def scaled(factor: float) -> tuple[Convert, Convert]:
    return (lambda t: t * factor), (lambda t: t / factor)


def per_head_qkv(n_heads: int) -> tuple[Convert, Convert]:
    """GPT-NeoX and BLOOM fuse q, k, v per head ([q0 k0 v0 q1 k1 v1 ...]); ours are
    q_proj then kv_proj ([q0 q1 ... k0 k1 ... v0 v1 ...])."""

    def to_ours(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(n_heads, 3, -1, *t.shape[1:]).transpose(0, 1).reshape(t.shape)

    def to_theirs(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(3, n_heads, -1, *t.shape[1:]).transpose(0, 1).reshape(t.shape)

    return to_ours, to_theirs


@dataclass(frozen=True)
class Link:
    """Our tensors `ours` (concatenated on dim 0) == to_ours(their tensors `theirs`
    concatenated on dim 0); `to_theirs` is the inverse."""

    ours: tuple[str, ...]
    theirs: tuple[str, ...]
    to_ours: Convert = same
    to_theirs: Convert = same


def link(ours: str | tuple[str, ...], theirs: str | tuple[str, ...], convert: tuple[Convert, Convert] | None = None) -> Link:
    ours = (ours,) if isinstance(ours, str) else tuple(ours)
    theirs = (theirs,) if isinstance(theirs, str) else tuple(theirs)
    to_ours, to_theirs = convert or (same, same)
    return Link(ours, theirs, to_ours, to_theirs)


def linear(ours: str, theirs: str | tuple[str, ...], bias: bool, convert: tuple[Convert, Convert] | None = None) -> list[Link]:
    """A linear layer (or a fused group of them): its weight, and its bias if it has one."""
    theirs = (theirs,) if isinstance(theirs, str) else tuple(theirs)
    links = [link(f"{ours}.weight", tuple(f"{t}.weight" for t in theirs), convert)]
    if bias:
        links.append(link(f"{ours}.bias", tuple(f"{t}.bias" for t in theirs), convert))
    return links


def norm(ours: str, theirs: str, bias: bool) -> list[Link]:
    return [link(f"{ours}.weight", f"{theirs}.weight")] + ([link(f"{ours}.bias", f"{theirs}.bias")] if bias else [])


class UnsupportedOption(UserError):
    """A transformers config option (or one of our knobs) that the other side cannot express."""


def unsupported(option: str, value: Any, why: str) -> UnsupportedOption:
    return UnsupportedOption(f"unsupported config option {option}={value!r}: {why}")


def hf_activation(option: str, name: str) -> dict:
    """A transformers activation name -> our `activation` and `gelu_approximate`."""
    known = {
        "gelu": {"activation": "gelu", "gelu_approximate": "none"},
        "gelu_new": {"activation": "gelu", "gelu_approximate": "tanh"},
        "gelu_pytorch_tanh": {"activation": "gelu", "gelu_approximate": "tanh"},
        "relu": {"activation": "relu", "gelu_approximate": "none"},
    }
    if name not in known:
        raise unsupported(option, name, f"arches has the activations {', '.join(known)}")
    return dict(known[name])


def our_activation(cfg: ModelConfig, option: str) -> str:
    """Our (non-gated) activation -> the transformers name."""
    if cfg.activation == "relu":
        return "relu"
    if cfg.activation == "gelu":
        return "gelu_new" if cfg.gelu_approximate == "tanh" else "gelu"
    raise unsupported("activation", cfg.activation, f"{option} takes a plain (not gated) activation: gelu or relu")


def require(cfg: ModelConfig, target: str, **wanted: Any) -> None:
    """Each of our knobs must have the value the target architecture hard-codes."""
    for key, value in wanted.items():
        if getattr(cfg, key) != value:
            raise unsupported(key, getattr(cfg, key), f"{target} always has {key}={value!r}")


def rope_settings(config: Any) -> dict:
    """transformers 5's `rope_parameters` (4's `rope_scaling` and `rope_theta`): only plain RoPE is ours."""
    params = dict(getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {})
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type != "default":
        raise unsupported("rope_type", rope_type, "arches implements plain RoPE only (rope_parameters / rope_scaling)")
    base = params.get("rope_theta", getattr(config, "rope_theta", None))
    return {"rope_base": float(base if base is not None else 10000.0)}


@dataclass(frozen=True)
class Architecture:
    """One transformers class and how it maps onto ours."""

    hf_class: str  # e.g. GPT2LMHeadModel
    model_type: str  # its config's model_type, e.g. gpt2
    auto_class: str  # AutoModelForCausalLM | AutoModelForMaskedLM | AutoModelForSeq2SeqLM
    preset: str  # the preset an import is recorded under
    family: str
    knobs: Callable[[Any], dict]  # their config -> ModelConfig values
    hf_config: Callable[[ModelConfig], dict]  # ModelConfig -> their config values
    links: Callable[[ModelConfig, Any], list[Link]]  # (ModelConfig, their config) -> tensor links
    legacy_names: tuple[tuple[str, str], ...] = ()  # (regex, replacement) for old checkpoints' tensor names


# --------------------------------------------------------------------------- GPT-2


def gpt2_knobs(c: Any) -> dict:
    if getattr(c, "scale_attn_by_inverse_layer_idx", False):
        raise unsupported("scale_attn_by_inverse_layer_idx", True, "arches scales attention by 1/sqrt(head_dim) in every layer")
    if not getattr(c, "scale_attn_weights", True):
        raise unsupported("scale_attn_weights", False, "arches scales attention by 1/sqrt(head_dim)")
    if getattr(c, "add_cross_attention", False):
        raise unsupported("add_cross_attention", True, "a GPT-2 decoder with cross-attention is not a language model")
    return dict(
        vocab_size=c.vocab_size, d_model=c.n_embd, n_layers=c.n_layer, n_heads=c.n_head, d_ff=c.n_inner or 4 * c.n_embd,
        max_len=c.n_positions, position="learned", norm="layernorm", norm_placement="pre", parallel_block=False,
        embed_norm=False, bias=True, tie_embeddings=bool(c.tie_word_embeddings), norm_eps=c.layer_norm_epsilon,
        **hf_activation("activation_function", c.activation_function),
    )


def gpt2_config(cfg: ModelConfig) -> dict:
    require(cfg, "GPT-2", position="learned", norm="layernorm", norm_placement="pre", parallel_block=False,
            embed_norm=False, bias=True, n_kv_heads=cfg.n_heads, head_transform=False, head_bias=False)
    return dict(
        vocab_size=cfg.vocab_size, n_positions=cfg.max_len, n_embd=cfg.d_model, n_layer=cfg.n_layers, n_head=cfg.n_heads,
        n_inner=cfg.d_ff, activation_function=our_activation(cfg, "GPT-2"), layer_norm_epsilon=cfg.norm_eps,
        tie_word_embeddings=cfg.tie_embeddings, resid_pdrop=cfg.dropout, embd_pdrop=cfg.dropout, attn_pdrop=cfg.dropout,
    )


def gpt2_links(cfg: ModelConfig, c: Any) -> list[Link]:
    conv1d = (transposed, transposed)
    links = [link("body.embed.tokens.weight", "transformer.wte.weight"),
             link("body.embed.positions.weight", "transformer.wpe.weight")]
    for i in range(cfg.n_layers):
        ours, theirs = f"body.blocks.{i}", f"transformer.h.{i}"
        links += norm(f"{ours}.attn_norm", f"{theirs}.ln_1", True)
        # c_attn is [q | k | v] along its output: our q_proj then kv_proj
        links.append(link((f"{ours}.attn.q_proj.weight", f"{ours}.attn.kv_proj.weight"), f"{theirs}.attn.c_attn.weight", conv1d))
        links.append(link((f"{ours}.attn.q_proj.bias", f"{ours}.attn.kv_proj.bias"), f"{theirs}.attn.c_attn.bias"))
        links += linear(f"{ours}.attn.out_proj", f"{theirs}.attn.c_proj", True, conv1d)
        links += norm(f"{ours}.mlp_norm", f"{theirs}.ln_2", True)
        links += linear(f"{ours}.mlp.up", f"{theirs}.mlp.c_fc", True, conv1d)
        links += linear(f"{ours}.mlp.down", f"{theirs}.mlp.c_proj", True, conv1d)
    links += norm("body.final_norm", "transformer.ln_f", True)
    if not cfg.tie_embeddings:
        links.append(link("head.proj.weight", "lm_head.weight"))
    return links


# --------------------------------------------------------------------------- OPT

OPT_POSITION_OFFSET = 2  # OPT's position table starts two rows in (a fairseq padding-index leftover)
OPT_NORM_EPS = 1e-5  # OPT's LayerNorms use torch's default eps


def opt_knobs(c: Any) -> dict:
    if not c.do_layer_norm_before:
        raise unsupported("do_layer_norm_before", False, "arches imports the pre-LN OPT models only")
    if c.word_embed_proj_dim != c.hidden_size:
        raise unsupported("word_embed_proj_dim", c.word_embed_proj_dim,
                          f"arches has no projection between embeddings and the hidden size {c.hidden_size}")
    if getattr(c, "_remove_final_layer_norm", False):
        raise unsupported("_remove_final_layer_norm", True, "arches' pre-LN stacks end in a norm")
    if not getattr(c, "enable_bias", True) or not getattr(c, "layer_norm_elementwise_affine", True):
        raise unsupported("enable_bias", False, "arches' OPT preset has biases everywhere")
    return dict(
        vocab_size=c.vocab_size, d_model=c.hidden_size, n_layers=c.num_hidden_layers, n_heads=c.num_attention_heads,
        d_ff=c.ffn_dim, max_len=c.max_position_embeddings, position="learned", norm="layernorm", norm_placement="pre",
        parallel_block=False, embed_norm=False, bias=True, tie_embeddings=bool(c.tie_word_embeddings), norm_eps=OPT_NORM_EPS,
        **hf_activation("activation_function", c.activation_function),
    )


def opt_config(cfg: ModelConfig) -> dict:
    require(cfg, "OPT", position="learned", norm="layernorm", norm_placement="pre", parallel_block=False, embed_norm=False,
            bias=True, n_kv_heads=cfg.n_heads, head_transform=False, head_bias=False, norm_eps=OPT_NORM_EPS)
    return dict(
        vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, num_hidden_layers=cfg.n_layers, ffn_dim=cfg.d_ff,
        num_attention_heads=cfg.n_heads, max_position_embeddings=cfg.max_len, word_embed_proj_dim=cfg.d_model,
        activation_function=our_activation(cfg, "OPT"), do_layer_norm_before=True, enable_bias=True,
        tie_word_embeddings=cfg.tie_embeddings, dropout=cfg.dropout, attention_dropout=cfg.dropout,
    )


def opt_links(cfg: ModelConfig, c: Any) -> list[Link]:
    def drop_offset(t: torch.Tensor) -> torch.Tensor:
        return t[OPT_POSITION_OFFSET:]

    def add_offset(t: torch.Tensor) -> torch.Tensor:
        return torch.cat([t.new_zeros(OPT_POSITION_OFFSET, t.shape[1]), t])

    links = [link("body.embed.tokens.weight", "model.decoder.embed_tokens.weight"),
             link("body.embed.positions.weight", "model.decoder.embed_positions.weight", (drop_offset, add_offset))]
    for i in range(cfg.n_layers):
        ours, theirs = f"body.blocks.{i}", f"model.decoder.layers.{i}"
        links += norm(f"{ours}.attn_norm", f"{theirs}.self_attn_layer_norm", True)
        links += linear(f"{ours}.attn.q_proj", f"{theirs}.self_attn.q_proj", True)
        links += linear(f"{ours}.attn.kv_proj", (f"{theirs}.self_attn.k_proj", f"{theirs}.self_attn.v_proj"), True)
        links += linear(f"{ours}.attn.out_proj", f"{theirs}.self_attn.out_proj", True)
        links += norm(f"{ours}.mlp_norm", f"{theirs}.final_layer_norm", True)
        links += linear(f"{ours}.mlp.up", f"{theirs}.fc1", True)
        links += linear(f"{ours}.mlp.down", f"{theirs}.fc2", True)
    links += norm("body.final_norm", "model.decoder.final_layer_norm", True)
    if not cfg.tie_embeddings:
        links.append(link("head.proj.weight", "lm_head.weight"))
    return links


# --------------------------------------------------------------------------- GPT-NeoX (Pythia)


def neox_knobs(c: Any) -> dict:
    head_dim = c.hidden_size // c.num_attention_heads
    params = dict(getattr(c, "rope_parameters", None) or {})
    factor = params.get("partial_rotary_factor", getattr(c, "rotary_pct", 0.25))
    rotary_dim = int(head_dim * factor)
    if rotary_dim % 2 or rotary_dim < 2:
        raise unsupported("rotary_pct", factor, f"it rotates {rotary_dim} of {head_dim} head dims; arches rotates an even number")
    if not getattr(c, "attention_bias", True):
        raise unsupported("attention_bias", False, "arches' bias knob covers attention and MLP together")
    knobs = dict(
        vocab_size=c.vocab_size, d_model=c.hidden_size, n_layers=c.num_hidden_layers, n_heads=c.num_attention_heads,
        d_ff=c.intermediate_size, max_len=c.max_position_embeddings, position="rope", rotary_pct=rotary_dim / head_dim,
        norm="layernorm", norm_placement="pre", parallel_block=bool(c.use_parallel_residual), embed_norm=False, bias=True,
        tie_embeddings=bool(c.tie_word_embeddings), norm_eps=c.layer_norm_eps,
        **rope_settings(c), **hf_activation("hidden_act", c.hidden_act),
    )
    if ModelConfig(**knobs).rotary_dim != rotary_dim:
        raise unsupported("rotary_pct", factor, f"arches cannot rotate exactly {rotary_dim} of {head_dim} head dims")
    return knobs


def neox_config(cfg: ModelConfig) -> dict:
    require(cfg, "GPT-NeoX", position="rope", norm="layernorm", norm_placement="pre", embed_norm=False, bias=True,
            n_kv_heads=cfg.n_heads, head_transform=False, head_bias=False)
    factor = cfg.rotary_dim / cfg.head_dim
    if int(cfg.head_dim * factor) != cfg.rotary_dim:
        raise unsupported("rotary_pct", cfg.rotary_pct, f"GPT-NeoX cannot rotate exactly {cfg.rotary_dim} of {cfg.head_dim} dims")
    return dict(
        vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads,
        intermediate_size=cfg.d_ff, hidden_act=our_activation(cfg, "GPT-NeoX"), max_position_embeddings=cfg.max_len,
        layer_norm_eps=cfg.norm_eps, use_parallel_residual=cfg.parallel_block, attention_bias=True,
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_base, "partial_rotary_factor": factor},
        tie_word_embeddings=cfg.tie_embeddings, attention_dropout=cfg.dropout, hidden_dropout=cfg.dropout,
    )


def neox_links(cfg: ModelConfig, c: Any) -> list[Link]:
    links = [link("body.embed.tokens.weight", "gpt_neox.embed_in.weight")]
    for i in range(cfg.n_layers):
        ours, theirs = f"body.blocks.{i}", f"gpt_neox.layers.{i}"
        links += norm(f"{ours}.attn_norm", f"{theirs}.input_layernorm", True)
        for kind in ("weight", "bias"):
            links.append(link((f"{ours}.attn.q_proj.{kind}", f"{ours}.attn.kv_proj.{kind}"),
                              f"{theirs}.attention.query_key_value.{kind}", per_head_qkv(cfg.n_heads)))
        links += linear(f"{ours}.attn.out_proj", f"{theirs}.attention.dense", True)
        links += norm(f"{ours}.mlp_norm", f"{theirs}.post_attention_layernorm", True)
        links += linear(f"{ours}.mlp.up", f"{theirs}.mlp.dense_h_to_4h", True)
        links += linear(f"{ours}.mlp.down", f"{theirs}.mlp.dense_4h_to_h", True)
    links += norm("body.final_norm", "gpt_neox.final_layer_norm", True)
    if not cfg.tie_embeddings:
        links.append(link("head.proj.weight", "lm_head.weight"))
    return links


# --------------------------------------------------------------------------- BLOOM

BLOOM_MAX_LEN = 2048  # ALiBi has no position table; BLOOM trained on 2048-token sequences


def bloom_knobs(c: Any) -> dict:
    if getattr(c, "apply_residual_connection_post_layernorm", False):
        raise unsupported("apply_residual_connection_post_layernorm", True, "arches' residual adds the block's input")
    return dict(
        vocab_size=c.vocab_size, d_model=c.hidden_size, n_layers=c.n_layer, n_heads=c.n_head, d_ff=4 * c.hidden_size,
        max_len=BLOOM_MAX_LEN, position="alibi", norm="layernorm", norm_placement="pre", parallel_block=False,
        embed_norm=True, bias=True, tie_embeddings=bool(c.tie_word_embeddings), norm_eps=c.layer_norm_epsilon,
        activation="gelu", gelu_approximate="tanh",  # BLOOM's bloom_gelu_forward is the tanh approximation
    )


def bloom_config(cfg: ModelConfig) -> dict:
    require(cfg, "BLOOM", position="alibi", norm="layernorm", norm_placement="pre", parallel_block=False, embed_norm=True,
            bias=True, n_kv_heads=cfg.n_heads, activation="gelu", gelu_approximate="tanh", d_ff=4 * cfg.d_model,
            head_transform=False, head_bias=False)
    return dict(
        vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, n_layer=cfg.n_layers, n_head=cfg.n_heads,
        layer_norm_epsilon=cfg.norm_eps, tie_word_embeddings=cfg.tie_embeddings,
        hidden_dropout=cfg.dropout, attention_dropout=cfg.dropout,
    )


def bloom_links(cfg: ModelConfig, c: Any) -> list[Link]:
    links = [link("body.embed.tokens.weight", "transformer.word_embeddings.weight")]
    links += norm("body.embed.norm", "transformer.word_embeddings_layernorm", True)
    for i in range(cfg.n_layers):
        ours, theirs = f"body.blocks.{i}", f"transformer.h.{i}"
        links += norm(f"{ours}.attn_norm", f"{theirs}.input_layernorm", True)
        for kind in ("weight", "bias"):
            links.append(link((f"{ours}.attn.q_proj.{kind}", f"{ours}.attn.kv_proj.{kind}"),
                              f"{theirs}.self_attention.query_key_value.{kind}", per_head_qkv(cfg.n_heads)))
        links += linear(f"{ours}.attn.out_proj", f"{theirs}.self_attention.dense", True)
        links += norm(f"{ours}.mlp_norm", f"{theirs}.post_attention_layernorm", True)
        links += linear(f"{ours}.mlp.up", f"{theirs}.mlp.dense_h_to_4h", True)
        links += linear(f"{ours}.mlp.down", f"{theirs}.mlp.dense_4h_to_h", True)
    links += norm("body.final_norm", "transformer.ln_f", True)
    if not cfg.tie_embeddings:
        links.append(link("head.proj.weight", "lm_head.weight"))
    return links


# --------------------------------------------------------------------------- LLaMA


def llama_knobs(c: Any) -> dict:
    head_dim = c.hidden_size // c.num_attention_heads
    if getattr(c, "head_dim", None) not in (None, head_dim):
        raise unsupported("head_dim", c.head_dim, f"arches' head_dim is hidden_size / num_attention_heads = {head_dim}")
    for option in ("attention_bias", "mlp_bias"):
        if getattr(c, option, False):
            raise unsupported(option, True, "arches' LLaMA has no biases")
    if c.hidden_act != "silu":
        raise unsupported("hidden_act", c.hidden_act, "arches' gated units are SwiGLU (silu) and GeGLU")
    return dict(
        vocab_size=c.vocab_size, d_model=c.hidden_size, n_layers=c.num_hidden_layers, n_heads=c.num_attention_heads,
        n_kv_heads=c.num_key_value_heads or c.num_attention_heads, d_ff=c.intermediate_size, max_len=c.max_position_embeddings,
        position="rope", rotary_pct=1.0, norm="rmsnorm", norm_placement="pre", parallel_block=False, embed_norm=False,
        bias=False, activation="swiglu", tie_embeddings=bool(c.tie_word_embeddings), norm_eps=c.rms_norm_eps, **rope_settings(c),
    )


def llama_config(cfg: ModelConfig) -> dict:
    require(cfg, "LLaMA", position="rope", rotary_pct=1.0, norm="rmsnorm", norm_placement="pre", parallel_block=False,
            embed_norm=False, bias=False, activation="swiglu", head_transform=False, head_bias=False)
    return dict(
        vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, intermediate_size=cfg.d_ff, num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.n_kv_heads, head_dim=cfg.head_dim, hidden_act="silu",
        max_position_embeddings=cfg.max_len, rms_norm_eps=cfg.norm_eps, tie_word_embeddings=cfg.tie_embeddings,
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_base}, attention_bias=False, mlp_bias=False,
        attention_dropout=cfg.dropout,
    )


def llama_links(cfg: ModelConfig, c: Any) -> list[Link]:
    links = [link("body.embed.tokens.weight", "model.embed_tokens.weight")]
    for i in range(cfg.n_layers):
        ours, theirs = f"body.blocks.{i}", f"model.layers.{i}"
        links += norm(f"{ours}.attn_norm", f"{theirs}.input_layernorm", False)
        links += linear(f"{ours}.attn.q_proj", f"{theirs}.self_attn.q_proj", False)
        links += linear(f"{ours}.attn.kv_proj", (f"{theirs}.self_attn.k_proj", f"{theirs}.self_attn.v_proj"), False)
        links += linear(f"{ours}.attn.out_proj", f"{theirs}.self_attn.o_proj", False)
        links += norm(f"{ours}.mlp_norm", f"{theirs}.post_attention_layernorm", False)
        # our gated unit's up is [gate | up]: silu(gate) * up
        links += linear(f"{ours}.mlp.up", (f"{theirs}.mlp.gate_proj", f"{theirs}.mlp.up_proj"), False)
        links += linear(f"{ours}.mlp.down", f"{theirs}.mlp.down_proj", False)
    links += norm("body.final_norm", "model.norm", False)
    if not cfg.tie_embeddings:
        links.append(link("head.proj.weight", "lm_head.weight"))
    return links


# --------------------------------------------------------------------------- BERT

BERT_TOKEN_TYPES = 2  # what BertConfig defaults to; exported rows are zeros (our inputs are all type 0)


def bert_knobs(c: Any) -> dict:
    if getattr(c, "position_embedding_type", "absolute") != "absolute":
        raise unsupported("position_embedding_type", c.position_embedding_type, "arches imports absolute positions only")
    if getattr(c, "is_decoder", False) or getattr(c, "add_cross_attention", False):
        raise unsupported("is_decoder", True, "arches imports BERT as the bidirectional encoder it is")
    act = hf_activation("hidden_act", c.hidden_act)
    if act["activation"] != "gelu":  # the MLM head's transform uses the same activation
        raise unsupported("hidden_act", c.hidden_act, "arches' BERT head transform uses GELU")
    return dict(
        vocab_size=c.vocab_size, d_model=c.hidden_size, n_layers=c.num_hidden_layers, n_heads=c.num_attention_heads,
        d_ff=c.intermediate_size, max_len=c.max_position_embeddings, position="learned", norm="layernorm",
        norm_placement="post", parallel_block=False, embed_norm=True, bias=True, tie_embeddings=bool(c.tie_word_embeddings),
        norm_eps=c.layer_norm_eps, head_transform=True, head_bias=True, **act,
    )


def bert_config(cfg: ModelConfig) -> dict:
    require(cfg, "BertForMaskedLM", position="learned", norm="layernorm", norm_placement="post", parallel_block=False,
            embed_norm=True, bias=True, n_kv_heads=cfg.n_heads, activation="gelu", head_transform=True, head_bias=True)
    return dict(
        vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads,
        intermediate_size=cfg.d_ff, hidden_act=our_activation(cfg, "BERT"), max_position_embeddings=cfg.max_len,
        type_vocab_size=BERT_TOKEN_TYPES, layer_norm_eps=cfg.norm_eps, tie_word_embeddings=cfg.tie_embeddings,
        hidden_dropout_prob=cfg.dropout, attention_probs_dropout_prob=cfg.dropout,
    )


def bert_links(cfg: ModelConfig, c: Any) -> list[Link]:
    positions = cfg.max_len

    def fold_token_type(t: torch.Tensor) -> torch.Tensor:
        # rows [positions | token types]: every input of ours is token type 0
        return t[:positions] + t[positions]

    def zero_token_types(t: torch.Tensor) -> torch.Tensor:
        return torch.cat([t, t.new_zeros(c.type_vocab_size, t.shape[1])])

    links = [
        link("body.embed.tokens.weight", "bert.embeddings.word_embeddings.weight"),
        link("body.embed.positions.weight",
             ("bert.embeddings.position_embeddings.weight", "bert.embeddings.token_type_embeddings.weight"),
             (fold_token_type, zero_token_types)),
    ]
    links += norm("body.embed.norm", "bert.embeddings.LayerNorm", True)
    for i in range(cfg.n_layers):
        ours, theirs = f"body.blocks.{i}", f"bert.encoder.layer.{i}"
        links += linear(f"{ours}.attn.q_proj", f"{theirs}.attention.self.query", True)
        links += linear(f"{ours}.attn.kv_proj", (f"{theirs}.attention.self.key", f"{theirs}.attention.self.value"), True)
        links += linear(f"{ours}.attn.out_proj", f"{theirs}.attention.output.dense", True)
        links += norm(f"{ours}.attn_norm", f"{theirs}.attention.output.LayerNorm", True)  # post-norm
        links += linear(f"{ours}.mlp.up", f"{theirs}.intermediate.dense", True)
        links += linear(f"{ours}.mlp.down", f"{theirs}.output.dense", True)
        links += norm(f"{ours}.mlp_norm", f"{theirs}.output.LayerNorm", True)
    links += linear("head.transform.dense", "cls.predictions.transform.dense", True)
    links += norm("head.transform.norm", "cls.predictions.transform.LayerNorm", True)
    links.append(link("head.bias", "cls.predictions.bias"))
    if not cfg.tie_embeddings:
        links.append(link("head.proj.weight", "cls.predictions.decoder.weight"))
    return links


# --------------------------------------------------------------------------- T5

T5_ACTIVATIONS = {  # (is gated, dense_act_fn) -> our activation knobs
    (False, "relu"): {"activation": "relu", "gelu_approximate": "none"},
    (False, "gelu"): {"activation": "gelu", "gelu_approximate": "none"},
    (False, "gelu_new"): {"activation": "gelu", "gelu_approximate": "tanh"},
    (True, "gelu_new"): {"activation": "geglu", "gelu_approximate": "tanh"},  # T5 v1.1's "gated-gelu"
    (True, "gelu_pytorch_tanh"): {"activation": "geglu", "gelu_approximate": "tanh"},
    (True, "silu"): {"activation": "swiglu", "gelu_approximate": "none"},
}


def t5_scales_output(c: Any) -> bool:
    # T5 (1.0) scales the decoder's output by d_model**-0.5 before its tied projection; T5 v1.1 does not
    return bool(getattr(c, "scale_decoder_outputs", getattr(c, "tie_word_embeddings", True)))


def t5_knobs(c: Any) -> dict:
    if c.d_kv * c.num_heads != c.d_model:
        raise unsupported("d_kv", c.d_kv, f"arches' heads split d_model: d_kv * num_heads must be d_model={c.d_model}")
    if (c.num_decoder_layers or c.num_layers) != c.num_layers:
        raise unsupported("num_decoder_layers", c.num_decoder_layers, f"arches' T5 has as many decoder as encoder layers ({c.num_layers})")
    key = (bool(c.is_gated_act), c.dense_act_fn)
    if key not in T5_ACTIVATIONS:
        raise unsupported("feed_forward_proj", c.feed_forward_proj, "arches has relu, gelu, gated-gelu and gated-silu")
    return dict(
        vocab_size=c.vocab_size, d_model=c.d_model, n_layers=c.num_layers, n_heads=c.num_heads, d_ff=c.d_ff,
        max_len=getattr(c, "n_positions", None) or 512, position="t5_relative",
        relative_buckets=c.relative_attention_num_buckets, relative_max_distance=c.relative_attention_max_distance,
        norm="rmsnorm", norm_placement="pre", parallel_block=False, embed_norm=False, bias=False,
        tie_embeddings=t5_scales_output(c), norm_eps=c.layer_norm_epsilon, **T5_ACTIVATIONS[key],
    )


def t5_config(cfg: ModelConfig) -> dict:
    require(cfg, "T5", position="t5_relative", norm="rmsnorm", norm_placement="pre", parallel_block=False,
            embed_norm=False, bias=False, n_kv_heads=cfg.n_heads, head_transform=False, head_bias=False)
    if not cfg.tie_embeddings:
        raise unsupported("tie_embeddings", False, "transformers 5 always ties T5's output projection to its embedding")
    names = {("relu", "none"): "relu", ("gelu", "none"): "gelu", ("gelu", "tanh"): "gelu_new",
             ("geglu", "tanh"): "gated-gelu", ("swiglu", "none"): "gated-silu", ("swiglu", "tanh"): "gated-silu"}
    if (cfg.activation, cfg.gelu_approximate) not in names:
        raise unsupported("activation", cfg.activation, "T5 takes relu, gelu, geglu with gelu_approximate=tanh, or swiglu")
    return dict(
        vocab_size=cfg.vocab_size, d_model=cfg.d_model, d_kv=cfg.head_dim, d_ff=cfg.d_ff, num_layers=cfg.n_layers,
        num_decoder_layers=cfg.n_layers, num_heads=cfg.n_heads, relative_attention_num_buckets=cfg.relative_buckets,
        relative_attention_max_distance=cfg.relative_max_distance, layer_norm_epsilon=cfg.norm_eps,
        feed_forward_proj=names[(cfg.activation, cfg.gelu_approximate)], dropout_rate=cfg.dropout, n_positions=cfg.max_len,
        is_encoder_decoder=True,
    )


def t5_links(cfg: ModelConfig, c: Any) -> list[Link]:
    # T5 does not divide attention logits by sqrt(head_dim) (Mesh TensorFlow folds it into
    # the initialization); scaling q by sqrt(head_dim) makes our SDPA compute the same logits
    unscaled_q = scaled(math.sqrt(cfg.head_dim))
    gated = cfg.activation in ("geglu", "swiglu")

    def attention(ours: str, theirs: str) -> list[Link]:
        return [link(f"{ours}.q_proj.weight", f"{theirs}.q.weight", unscaled_q),
                link(f"{ours}.kv_proj.weight", (f"{theirs}.k.weight", f"{theirs}.v.weight")),
                link(f"{ours}.out_proj.weight", f"{theirs}.o.weight")]

    def feed_forward(ours: str, theirs: str) -> list[Link]:
        up = (f"{theirs}.wi_0.weight", f"{theirs}.wi_1.weight") if gated else f"{theirs}.wi.weight"  # [gate | up]
        return [link(f"{ours}.up.weight", up), link(f"{ours}.down.weight", f"{theirs}.wo.weight")]

    links = [link("encoder.embed.tokens.weight", "shared.weight")]
    for stack in ("encoder", "decoder"):
        # T5 computes the relative bias in layer 0 and adds it in every layer
        links.append(link(f"{stack}.relative_bias.table.weight", f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"))
        for i in range(cfg.n_layers):
            ours, theirs = f"{stack}.blocks.{i}", f"{stack}.block.{i}.layer"
            links += norm(f"{ours}.attn_norm", f"{theirs}.0.layer_norm", False)
            links += attention(f"{ours}.attn", f"{theirs}.0.SelfAttention")
            if stack == "decoder":
                links += norm(f"{ours}.cross_norm", f"{theirs}.1.layer_norm", False)
                links += attention(f"{ours}.cross_attn", f"{theirs}.1.EncDecAttention")
            ff = 2 if stack == "decoder" else 1
            links += norm(f"{ours}.mlp_norm", f"{theirs}.{ff}.layer_norm", False)
            links += feed_forward(f"{ours}.mlp", f"{theirs}.{ff}.DenseReluDense")
    links.append(link("encoder.final_norm.weight", "encoder.final_layer_norm.weight"))
    # the d_model**-0.5 before a tied projection, folded into the (RMS) norm before it
    output_scale = scaled(cfg.d_model**-0.5) if t5_scales_output(c) else None
    links.append(link("decoder.final_norm.weight", "decoder.final_layer_norm.weight", output_scale))
    if not cfg.tie_embeddings:
        links.append(link("head.proj.weight", "lm_head.weight"))
    return links


# --------------------------------------------------------------------------- the table

ARCHITECTURES: dict[str, Architecture] = {
    a.hf_class: a
    for a in (
        Architecture("GPT2LMHeadModel", "gpt2", "AutoModelForCausalLM", "gpt", "decoder", gpt2_knobs, gpt2_config, gpt2_links),
        Architecture("OPTForCausalLM", "opt", "AutoModelForCausalLM", "opt", "decoder", opt_knobs, opt_config, opt_links),
        Architecture("GPTNeoXForCausalLM", "gpt_neox", "AutoModelForCausalLM", "neox", "decoder", neox_knobs, neox_config, neox_links,
                     legacy_names=((r"^embed_out\.", "lm_head."),)),
        Architecture("BloomForCausalLM", "bloom", "AutoModelForCausalLM", "bloom", "decoder", bloom_knobs, bloom_config, bloom_links),
        Architecture("LlamaForCausalLM", "llama", "AutoModelForCausalLM", "llama", "decoder", llama_knobs, llama_config, llama_links),
        Architecture("BertForMaskedLM", "bert", "AutoModelForMaskedLM", "bert", "encoder", bert_knobs, bert_config, bert_links),
        Architecture("T5ForConditionalGeneration", "t5", "AutoModelForSeq2SeqLM", "t5", "encoder_decoder", t5_knobs, t5_config, t5_links),
    )
}
BY_MODEL_TYPE = {a.model_type: a for a in ARCHITECTURES.values()}  # a config.json without `architectures`
BY_PRESET = {a.preset: a for a in ARCHITECTURES.values()}
# LayerNorm parameters in checkpoints written before transformers renamed them (BERT's gamma and beta)
LEGACY_NAMES = ((r"LayerNorm\.gamma$", "LayerNorm.weight"), (r"LayerNorm\.beta$", "LayerNorm.bias"))
SIZE_KEYS = ("d_model", "n_layers", "n_heads", "n_kv_heads", "d_ff", "max_len", "dropout")


def supported() -> str:
    return ", ".join(sorted(ARCHITECTURES))


# --------------------------------------------------------------------------- moving tensors through the links


def their_shapes(architecture: Architecture, config: Any) -> tuple[dict[str, tuple[int, ...]], set[str], str]:
    """Their state dict's tensor shapes for this config, from a model on the meta device
    (nothing allocated), the names of their tied copies, and their base-model prefix."""
    import transformers

    with torch.device("meta"):
        model = getattr(transformers, architecture.auto_class).from_config(config)
    tied = set(getattr(model, "all_tied_weights_keys", None) or getattr(model, "_tied_weights_keys", None) or {})
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}, tied, model.base_model_prefix


def check_links(links: list[Link], ours: dict[str, torch.Tensor], theirs: set[str], tied: set[str]) -> None:
    """Every tensor of ours linked exactly once, and every one of theirs too unless it is a tied copy."""
    seen_ours = [name for l in links for name in l.ours]
    seen_theirs = {name for l in links for name in l.theirs}
    problems = {
        "ours linked twice": sorted({n for n in seen_ours if seen_ours.count(n) > 1}),
        "ours not linked": sorted(set(ours) - set(seen_ours)),
        "ours unknown": sorted(set(seen_ours) - set(ours)),
        "theirs unknown": sorted(seen_theirs - theirs),
        "theirs not linked": sorted(theirs - seen_theirs - tied),
    }
    problems = {k: v for k, v in problems.items() if v}
    if problems:  # a mapping bug, not the user's input
        raise RuntimeError(f"arches.interop mapping is incomplete: {problems}")


def split_like(tensor: torch.Tensor, names: tuple[str, ...], shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    pieces = tensor.split([shapes[n][0] for n in names]) if len(names) > 1 else (tensor,)
    return {name: piece.reshape(shapes[name]).contiguous() for name, piece in zip(names, pieces)}


def our_parameters(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    # named_parameters drops the shared copies (T5's decoder embedding is the encoder's)
    return dict(model.named_parameters())


def read_checkpoint(folder: Path) -> dict[str, torch.Tensor]:
    """All tensors of a transformers checkpoint folder (safetensors or PyTorch, one file or sharded)."""
    from safetensors.torch import load_file

    for single, index, safe in (("model.safetensors", "model.safetensors.index.json", True),
                                ("pytorch_model.bin", "pytorch_model.bin.index.json", False)):
        if (folder / single).is_file():
            files = [folder / single]
        elif (folder / index).is_file():
            weight_map = json.loads((folder / index).read_text()).get("weight_map", {})
            files = [folder / name for name in sorted(set(weight_map.values()))]
        else:
            continue
        tensors: dict[str, torch.Tensor] = {}
        for file in files:
            if not file.is_file():
                raise UserError(f"{file} is missing (listed in {folder / index}); download the whole checkpoint")
            try:
                tensors.update(load_file(str(file)) if safe else torch.load(file, map_location="cpu", weights_only=True))
            except Exception as error:  # safetensors and torch raise several kinds
                raise UserError(f"{file} cannot be read ({str(error).splitlines()[0] if str(error) else type(error).__name__})") from None
        return tensors
    raise UserError(f"{folder} has no weights (model.safetensors or pytorch_model.bin); save the model there with save_pretrained")


def rename_legacy(tensors: dict[str, torch.Tensor], architecture: Architecture) -> dict[str, torch.Tensor]:
    renamed = {}
    for name, tensor in tensors.items():
        for pattern, replacement in (*LEGACY_NAMES, *architecture.legacy_names):
            name = re.sub(pattern, replacement, name)
        renamed[name] = tensor
    return renamed


def import_weights(
    model: torch.nn.Module, architecture: Architecture, config: Any, cfg: ModelConfig, tensors: dict[str, torch.Tensor]
) -> None:
    """Copy a checkpoint's tensors into our model through the links, checking every tensor's
    presence and shape against what the config implies."""
    shapes, tied, prefix = their_shapes(architecture, config)
    ours = our_parameters(model)
    links = architecture.links(cfg, config)
    check_links(links, ours, set(shapes), tied)

    def take(name: str) -> torch.Tensor:
        # checkpoints of the base model (the Hub's gpt2) leave out the prefix (transformer.)
        for candidate in (name, name[len(prefix) + 1 :] if name.startswith(f"{prefix}.") else None):
            if candidate is not None and candidate in tensors:
                found = tensors[candidate]
                if tuple(found.shape) != shapes[name]:
                    raise UserError(
                        f"tensor {candidate} has shape {tuple(found.shape)}, but the config implies {shapes[name]}; "
                        "the weights do not match config.json"
                    )
                return found.to(torch.float32)
        raise UserError(f"missing weight {name}: the checkpoint has no such tensor; is it complete and of this architecture?")

    with torch.no_grad():
        for l in links:
            joined = torch.cat([take(name) for name in l.theirs]) if len(l.theirs) > 1 else take(l.theirs[0])
            for name, tensor in split_like(l.to_ours(joined), l.ours, {n: tuple(ours[n].shape) for n in l.ours}).items():
                ours[name].copy_(tensor)


def export_weights(model: torch.nn.Module, architecture: Architecture, config: Any, cfg: ModelConfig) -> dict[str, torch.Tensor]:
    shapes, tied, _ = their_shapes(architecture, config)
    ours = our_parameters(model)
    links = architecture.links(cfg, config)
    check_links(links, ours, set(shapes), tied)
    converted: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for l in links:
            joined = torch.cat([ours[name] for name in l.ours]) if len(l.ours) > 1 else ours[l.ours[0]]
            converted.update(split_like(l.to_theirs(joined.detach().float()), l.theirs, shapes))
    return converted


# --------------------------------------------------------------------------- finding a checkpoint


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hub answers a TCP connection (huggingface_hub would retry for a long
    time before failing). Behind a proxy, the download decides."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")):
        return True
    endpoint = urllib.parse.urlsplit(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        with socket.create_connection((endpoint.hostname or "huggingface.co", endpoint.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def resolve_source(source: str) -> Path:
    """A local checkpoint folder as it is, or a Hub name downloaded (config, tokenizer, weights)."""
    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir():
            raise UserError(f"{source} is a file; pass the checkpoint's folder (with config.json and the weights)")
        return path
    if not HUB_NAME.match(source):
        raise UserError(f"{source} does not exist; pass a checkpoint folder or a Hugging Face Hub model name")
    if _offline() or not _hub_reachable():
        why = "HF_HUB_OFFLINE is set" if _offline() else "the Hugging Face Hub cannot be reached"
        raise UserError(f"'{source}' is not a local folder and {why}; pass a local folder saved with save_pretrained")
    from huggingface_hub import snapshot_download

    try:
        # the top-level config, tokenizer and weights only (repos also hold ONNX, Flax, TF copies)
        common = ["*config.json", "tokenizer*", "special_tokens_map.json", "vocab*", "merges.txt", "*.model"]
        folder = Path(snapshot_download(source, allow_patterns=[*common, "model*.safetensors", "model.safetensors.index.json"]))
        if not any(folder.glob("model*.safetensors")):
            folder = Path(snapshot_download(source, allow_patterns=[*common, "pytorch_model*.bin", "pytorch_model.bin.index.json"]))
    except Exception as error:  # huggingface_hub's errors (not found, gated, network) say what happened
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"could not fetch '{source}' from the Hugging Face Hub ({first}); pass a local folder instead") from None
    return folder


def architecture_of(folder: Path) -> Architecture:
    path = folder / "config.json"
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{folder} has no config.json; is it a transformers checkpoint folder?") from None
    except json.JSONDecodeError as error:
        raise UserError(f"{path} is not valid JSON ({error})") from None
    if not raw.get("architectures") and raw.get("model_type") in BY_MODEL_TYPE:
        return BY_MODEL_TYPE[raw["model_type"]]
    name = (raw.get("architectures") or [f"model_type={raw.get('model_type')}"])[0]
    if name not in ARCHITECTURES:
        raise UserError(f"unsupported architecture {name}; arches import-hf supports: {supported()}")
    return ARCHITECTURES[name]


def special_tokens(architecture: Architecture, tokenizer: Any, config: Any) -> dict:
    """The imported tokenizer's tokens for arches' special roles (see `Specials`)."""

    def token_of(token_id: Any) -> str | None:
        return tokenizer.convert_ids_to_tokens(int(token_id)) if isinstance(token_id, int) else None

    eos = tokenizer.eos_token or token_of(getattr(config, "eos_token_id", None))
    if architecture.family == "encoder":  # BERT: [SEP] ends a segment, [CLS] starts one
        eos = tokenizer.sep_token or eos
        bos = tokenizer.cls_token or tokenizer.bos_token or eos
    elif architecture.family == "encoder_decoder":  # T5's decoder starts from decoder_start_token_id (its <pad>)
        bos = token_of(getattr(config, "decoder_start_token_id", None)) or tokenizer.pad_token
    else:
        bos = tokenizer.bos_token or eos
    names = {"pad": tokenizer.pad_token or eos, "bos": bos, "eos": eos, "mask": tokenizer.mask_token,
             "sop": None, "eop": None, "gmask": None, "sentinels": []}
    for role in ("pad", "bos", "eos") + (("mask",) if architecture.family == "encoder" else ()):
        if names[role] is None:
            raise UserError(f"the model's tokenizer has no {role} token, which arches' {architecture.family} scoring needs")
    if architecture.family == "encoder_decoder":  # T5's span-corruption sentinels, if it has them
        vocab = tokenizer.get_vocab()
        while f"<extra_id_{len(names['sentinels'])}>" in vocab:
            names["sentinels"].append(f"<extra_id_{len(names['sentinels'])}>")
    return names


# --------------------------------------------------------------------------- import


def _replace_folder(built: Path, final: Path) -> None:
    if final.exists():
        shutil.rmtree(final)  # a re-import of the same name starts over, as a re-run of `arches train` does
    os.replace(built, final)


def import_hf(source: str, preset: str | None = None, overrides: list[str] | None = None) -> Path:
    """A transformers checkpoint (folder or Hub name) -> a completed run folder; returns its path.
    `overrides` are Hydra overrides for the recorded config (results_dir=, run_name=)."""
    from arches.config import compose, group_choices, to_container
    from arches.core.stack import parameter_counts
    from arches.registry import family, plain
    from arches.run import TOKENIZER_FILE, save_checkpoint, update_record, write_config
    from arches.tokenizer import tokenizer_hash

    folder = resolve_source(source)
    architecture = architecture_of(folder)
    preset = preset or architecture.preset
    if preset not in group_choices("arch"):
        from arches.errors import unknown

        raise unknown("preset", preset, group_choices("arch"))
    cfg = compose([f"arch={preset}", *(overrides or [])])
    arch = plain(cfg.arch)
    if arch.get("family") != architecture.family:
        raise UserError(
            f"--preset {preset} is a {arch.get('family')} preset, but {architecture.hf_class} is a {architecture.family}; "
            f"use a {architecture.family} preset such as {architecture.preset}"
        )
    try:
        import transformers
    except ImportError:
        raise UserError("import-hf needs transformers: pip install 'arches[interop]'") from None

    try:
        config = transformers.AutoConfig.from_pretrained(str(folder))
    except Exception as error:
        raise UserError(f"{folder / 'config.json'} cannot be read by transformers ({str(error).splitlines()[0]})") from None
    knobs = architecture.knobs(config)
    model_cfg = ModelConfig.from_dict(knobs)
    try:
        hf_tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder))
    except Exception as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"{folder} has no usable tokenizer ({first}); save the model's tokenizer there too") from None
    if not getattr(hf_tokenizer, "is_fast", False):
        raise UserError(f"the tokenizer in {folder} is not a fast (tokenizers) one; arches needs its tokenizer.json")
    backend = hf_tokenizer.backend_tokenizer
    backend.no_truncation()  # scoring truncates by itself, from the left
    backend.no_padding()
    if backend.get_vocab_size() > model_cfg.vocab_size:
        raise UserError(f"the tokenizer has {backend.get_vocab_size()} tokens but the model only {model_cfg.vocab_size} embeddings")

    arch["model"] = {k: v for k, v in model_cfg.to_dict().items() if k not in SIZE_KEYS and k != "vocab_size"}
    arch["special_tokens"] = special_tokens(architecture, hf_tokenizer, config)
    arch["hf_architecture"] = architecture.hf_class
    model = family(architecture.family).build(model_cfg, arch)
    import_weights(model, architecture, config, model_cfg, rename_legacy(read_checkpoint(folder), architecture))
    model.eval()

    name = str(cfg.get("run_name") or f"hf-{Path(source.rstrip('/')).name}")
    results = Path(str(cfg.results_dir))
    results.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(dir=results, prefix=f".{name}.importing-"))
    try:
        # an imported model was trained on its own context, max_len (its n_positions)
        save_checkpoint(build, model, architecture.family, arch, model_cfg, {"input": model_cfg.max_len})
        (build / TOKENIZER_FILE).write_text(backend.to_str(pretty=True))
        resolved = to_container(cfg)
        resolved.update(arch=arch, run_name=name, size={"name": "imported", **{k: getattr(model_cfg, k) for k in SIZE_KEYS}})
        write_config(build, resolved)
        counts = parameter_counts(model)
        update_record(
            build, status="completed", error=None, run_name=name, run_dir=str(results / name), experiment=None,
            variant=name, family=architecture.family, preset=preset, objective=arch.get("objective"), size="imported",
            seed=None, data=None, imported_from=source, hf_architecture=architecture.hf_class,
            tokenizer_kind="hf", tokenizer_hash=tokenizer_hash(build / TOKENIZER_FILE), vocab_size=model_cfg.vocab_size,
            params_total=counts["total"], params_non_embedding=counts["non_embedding"], knobs=arch["model"],
        )
        _replace_folder(build, results / name)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    return results / name


# --------------------------------------------------------------------------- export


def export_hf(run_dir: str | Path, out_dir: str | Path) -> Path:
    """A run folder -> a transformers checkpoint folder (config, safetensors, tokenizer)."""
    from arches.run import TOKENIZER_FILE, load_model
    from arches.tokenizer import Specials, load_tokenizer

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise UserError(f"{out_dir} exists and is not an empty folder; choose a new output folder")
    model, meta = load_model(run_dir)
    arch, model_cfg = meta["arch"], model.cfg
    architecture = ARCHITECTURES.get(arch.get("hf_architecture", "")) or BY_PRESET.get(arch.get("name", ""))
    if architecture is None:
        raise UserError(f"export-hf supports the presets {', '.join(sorted(BY_PRESET))}; {run_dir} is a '{arch.get('name')}' run")
    if architecture.family != meta["family"] or arch.get("prefix_lm"):
        raise UserError(f"{run_dir} is a {meta['family']} run that {architecture.hf_class} cannot express")
    try:
        import transformers
    except ImportError:
        raise UserError("export-hf needs transformers: pip install 'arches[interop]'") from None

    tokenizer = load_tokenizer(run_dir / TOKENIZER_FILE)
    specials = Specials.from_tokenizer(tokenizer, arch.get("special_tokens"))
    values = architecture.hf_config(model_cfg)
    values.update(bos_token_id=specials.bos, eos_token_id=specials.eos, pad_token_id=specials.pad)
    if architecture.family == "encoder_decoder":
        values["decoder_start_token_id"] = specials.bos  # the decoder input starts with <bos> (seq2seq_batch)
    config = transformers.AutoConfig.for_model(architecture.model_type, **values)
    config.architectures = [architecture.hf_class]
    weights = export_weights(model, architecture, config, model_cfg)

    hf_model = getattr(transformers, architecture.auto_class).from_config(config)
    missing, unexpected = hf_model.load_state_dict(weights, strict=False)
    tied = set(getattr(hf_model, "all_tied_weights_keys", None) or {})
    if unexpected or set(missing) - tied:
        raise RuntimeError(f"arches.interop export mapping is incomplete: missing {sorted(set(missing) - tied)}, unexpected {unexpected}")
    hf_model.tie_weights()

    names = {role: tokenizer.id_to_token(getattr(specials, role)) for role in ("bos", "eos", "pad")}
    if specials.mask is not None:
        names["mask"] = tokenizer.id_to_token(specials.mask)
    sentinels = [tokenizer.id_to_token(s) for s in specials.sentinels]
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token=names["bos"], eos_token=names["eos"], pad_token=names["pad"],
        mask_token=names.get("mask"), **({"additional_special_tokens": sentinels} if sentinels else {}),
    )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.exporting-"))
    try:
        hf_model.save_pretrained(str(build))
        fast.save_pretrained(str(build))
        if out_dir.exists():
            out_dir.rmdir()  # empty, checked above
        os.replace(build, out_dir)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    return out_dir


# --------------------------------------------------------------------------- CLI entry points

IMPORT_USAGE = "usage: arches import-hf <model folder or hub name> [--preset P] [results_dir=...] [run_name=...]"
EXPORT_USAGE = "usage: arches export-hf <run folder> <out folder>"


def import_command(argv: list[str]) -> None:
    source, preset, overrides = None, None, []
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg == "--preset":
            if not args:
                raise UserError(f"--preset needs a value; {IMPORT_USAGE}")
            preset = args.pop(0)
        elif arg.startswith("--preset="):
            preset = arg.split("=", 1)[1]
        elif arg.startswith("-"):
            raise UserError(f"unknown option {arg}; {IMPORT_USAGE}")
        elif "=" in arg:
            overrides.append(arg)
        elif source is None:
            source = arg
        else:
            raise UserError(f"one model at a time ({source!r} and {arg!r}); {IMPORT_USAGE}")
    if source is None:
        raise UserError(f"which model? {IMPORT_USAGE}")
    print(import_hf(source, preset, overrides))


def export_command(argv: list[str]) -> None:
    if len(argv) != 2 or any(a.startswith("-") for a in argv):
        raise UserError(EXPORT_USAGE)
    print(export_hf(argv[0], argv[1]))
