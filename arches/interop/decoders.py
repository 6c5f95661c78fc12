"""The causal decoders that map onto one transformers class each, one section per class:
GPT-2, OPT, GPT-NeoX (Pythia), BLOOM and LLaMA. Each has its config -> our knobs
(`*_knobs`), the reverse (`*_config`) and the tensor links (`*_links`); see `mapping`."""

from __future__ import annotations

from typing import Any

import torch

from arches.core import ModelConfig
from arches.interop.mapping import (
    Link,
    hf_activation,
    link,
    linear,
    norm,
    our_activation,
    per_head_qkv,
    require,
    rope_settings,
    transposed,
    unsupported,
)

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


