"""The bidirectional families' transformers classes: BERT (`BertForMaskedLM`) and T5
(`T5ForConditionalGeneration`). Where transformers computes something our shared
transformer does not, the difference is folded into the weights instead of adding a
knob: T5's unscaled attention (its q is scaled by sqrt(head_dim)), T5's d_model**-0.5
before a tied output projection (its decoder's final norm is scaled), BERT's token-type
0 embedding (added to the position table)."""

from __future__ import annotations

import math
from typing import Any

import torch

from arches.core import ModelConfig
from arches.interop.mapping import Link, hf_activation, link, linear, norm, our_activation, require, scaled, unsupported

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


