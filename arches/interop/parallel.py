"""The parallel-block decoders (attention and MLP side by side on the same input) with
transformers classes of their own: GPT-J (`GPTJForCausalLM`) and Falcon
(`FalconForCausalLM`). Their differences from our parallel block, which is GPT-NeoX's
(two LayerNorms, biases on every linear layer or none), are handled in the weights:

- GPT-J rotates interleaved pairs of dims (rotate_every_two), ours the two halves
  (rotate_half): the rows of q and k are permuted, which leaves q . k unchanged.
- GPT-J and Falcon-7B read one LayerNorm for attention and MLP: ours both copy it on
  import; on export to GPT-J our two norms' scales are folded into the projections they
  feed, so one plain norm serves both (`gptj_fold`).
- GPT-J has no attention biases, Falcon with bias=false no linear biases (but LayerNorm
  biases): ours are imported as zeros, and a run whose query or key biases are not zero
  is refused on export (`zeros` links), as no weights compute what it does.
"""

from __future__ import annotations

from typing import Any

import torch

from arches.core import ModelConfig
from arches.interop.mapping import (
    Convert,
    Link,
    Tensors,
    grouped_qkv,
    hf_activation,
    link,
    linear,
    norm,
    our_activation,
    require,
    rope_settings,
    shared,
    unsupported,
    zeros,
)

# --------------------------------------------------------------------------- GPT-J

GPTJ_ROPE_BASE = 10000.0  # hard-coded in transformers' GPT-J (create_sinusoidal_positions)
GPTJ_NO_ATTENTION_BIAS = (
    "GPTJForCausalLM has no query or key bias (this run trained them: model.bias=true); "
    "export it with --as GPTNeoXForCausalLM, which has them, or train with model.bias=false"
)


def interleaved_rotary(n_heads: int, head_dim: int, rotary_dim: int) -> tuple[Convert, Convert]:
    """GPT-J rotates pairs (0, 1), (2, 3), ... of each head's first rotary_dim dims; ours
    pair (i, i + rotary_dim / 2) with the same frequency i (Su et al. 2021 eq. 34 both).
    Our dim i is their 2i and our i + rotary_dim / 2 their 2i + 1. The permutation applies
    to the first n_heads * head_dim rows (q, or the k of a fused [k | v]); the rest pass."""
    order = [*range(0, rotary_dim, 2), *range(1, rotary_dim, 2), *range(rotary_dim, head_dim)]  # ours[i] = theirs[order[i]]
    index = torch.tensor([head * head_dim + i for head in range(n_heads) for i in order])
    inverse = torch.argsort(index)
    rows = n_heads * head_dim

    def to_ours(t: torch.Tensor) -> torch.Tensor:
        return torch.cat([t[:rows][index], t[rows:]])

    def to_theirs(t: torch.Tensor) -> torch.Tensor:
        return torch.cat([t[:rows][inverse], t[rows:]])

    return to_ours, to_theirs


def gptj_knobs(c: Any) -> dict:
    head_dim = c.n_embd // c.n_head
    if c.rotary_dim is None or c.rotary_dim % 2 or not 2 <= c.rotary_dim <= head_dim:
        raise unsupported("rotary_dim", c.rotary_dim, f"arches rotates an even number of a head's {head_dim} dims, at least 2")
    knobs = dict(
        vocab_size=c.vocab_size, d_model=c.n_embd, n_layers=c.n_layer, n_heads=c.n_head, d_ff=c.n_inner or 4 * c.n_embd,
        max_len=c.n_positions, position="rope", rotary_pct=c.rotary_dim / head_dim, rope_base=GPTJ_ROPE_BASE,
        norm="layernorm", norm_placement="pre", parallel_block=True, embed_norm=False,
        bias=True, head_bias=True,  # its MLP and output projection have biases (its attention none: zeros here)
        tie_embeddings=bool(c.tie_word_embeddings), norm_eps=c.layer_norm_epsilon,
        **hf_activation("activation_function", c.activation_function),
    )
    if ModelConfig(**knobs).rotary_dim != c.rotary_dim:
        raise unsupported("rotary_dim", c.rotary_dim, f"arches cannot rotate exactly {c.rotary_dim} of {head_dim} head dims")
    return knobs


def gptj_config(cfg: ModelConfig) -> dict:
    require(cfg, "GPT-J", position="rope", rope_base=GPTJ_ROPE_BASE, norm="layernorm", norm_placement="pre",
            parallel_block=True, embed_norm=False, n_kv_heads=cfg.n_heads, head_transform=False)
    return dict(
        vocab_size=cfg.vocab_size, n_positions=cfg.max_len, n_embd=cfg.d_model, n_layer=cfg.n_layers, n_head=cfg.n_heads,
        rotary_dim=cfg.rotary_dim, n_inner=cfg.d_ff, activation_function=our_activation(cfg, "GPT-J"),
        layer_norm_epsilon=cfg.norm_eps, tie_word_embeddings=cfg.tie_embeddings,
        resid_pdrop=cfg.dropout, embd_pdrop=cfg.dropout, attn_pdrop=cfg.dropout,
    )


def gptj_fold(cfg: ModelConfig, ours: Tensors) -> Tensors:
    """Our tensors as GPT-J can hold them, computing the same function:

    - where a block's two norms differ, each norm's affine moves into the projections it
      feeds: W (n * w + b) + c = (W diag(w)) n + (W b + c), and both norms become (1, 0);
    - the value and output-projection biases move into the MLP's output bias: each
      attention row sums to 1, so they add W_o b_v + b_o at every position.
    What is left in the attention biases (query, key) GPT-J cannot hold (see its links)."""
    ours = dict(ours)
    kinds = ("weight", "bias") if cfg.bias else ("weight",)
    for i in range(cfg.n_layers):
        p = {name[len(f"body.blocks.{i}.") :]: name for name in ours if name.startswith(f"body.blocks.{i}.")}  # short names
        if not all(torch.equal(ours[p[f"attn_norm.{k}"]], ours[p[f"mlp_norm.{k}"]]) for k in kinds):
            for norm_name, projections in (("attn_norm", ("attn.q_proj", "attn.kv_proj")), ("mlp_norm", ("mlp.up",))):
                scale = ours[p[f"{norm_name}.weight"]]
                for projection in projections:
                    weight = ours[p[f"{projection}.weight"]]
                    if cfg.bias:
                        ours[p[f"{projection}.bias"]] = ours[p[f"{projection}.bias"]] + weight @ ours[p[f"{norm_name}.bias"]]
                    ours[p[f"{projection}.weight"]] = weight * scale
                ours[p[f"{norm_name}.weight"]] = torch.ones_like(scale)
                if cfg.bias:
                    ours[p[f"{norm_name}.bias"]] = torch.zeros_like(scale)
        if cfg.bias:
            kv_bias, keys = ours[p["attn.kv_proj.bias"]], cfg.n_kv_heads * cfg.head_dim
            moved = ours[p["attn.out_proj.weight"]] @ kv_bias[keys:] + ours[p["attn.out_proj.bias"]]
            ours[p["mlp.down.bias"]] = ours[p["mlp.down.bias"]] + moved
            ours[p["attn.kv_proj.bias"]] = torch.cat([kv_bias[:keys], torch.zeros_like(kv_bias[keys:])])
            ours[p["attn.out_proj.bias"]] = torch.zeros_like(ours[p["attn.out_proj.bias"]])
    return ours


def gptj_links(cfg: ModelConfig, c: Any) -> list[Link]:
    rotary = interleaved_rotary(cfg.n_heads, cfg.head_dim, cfg.rotary_dim)
    one_norm = "GPTJForCausalLM has one LayerNorm for attention and MLP"
    links = [link("body.embed.tokens.weight", "transformer.wte.weight")]
    for i in range(cfg.n_layers):
        ours, theirs = f"body.blocks.{i}", f"transformer.h.{i}"
        for kind in ("weight", "bias") if cfg.bias else ("weight",):
            both = (f"{ours}.attn_norm.{kind}", f"{ours}.mlp_norm.{kind}")
            links.append(link(both, f"{theirs}.ln_1.{kind}", shared(2, one_norm)))
        links.append(link(f"{ours}.attn.q_proj.weight", f"{theirs}.attn.q_proj.weight", rotary))
        key_value = (f"{theirs}.attn.k_proj.weight", f"{theirs}.attn.v_proj.weight")
        links.append(link(f"{ours}.attn.kv_proj.weight", key_value, rotary))  # rotary permutes the keys only
        links.append(link(f"{ours}.attn.out_proj.weight", f"{theirs}.attn.out_proj.weight"))
        links += linear(f"{ours}.mlp.up", f"{theirs}.mlp.fc_in", cfg.bias)
        links += linear(f"{ours}.mlp.down", f"{theirs}.mlp.fc_out", cfg.bias)
        if cfg.bias:
            attention_biases = tuple(f"{ours}.attn.{p}.bias" for p in ("q_proj", "kv_proj", "out_proj"))
            links.append(zeros(ours=attention_biases, why=GPTJ_NO_ATTENTION_BIAS))
        else:
            links.append(zeros(theirs=(f"{theirs}.ln_1.bias", f"{theirs}.mlp.fc_in.bias", f"{theirs}.mlp.fc_out.bias")))
    links += norm("body.final_norm", "transformer.ln_f", cfg.bias)
    if not cfg.bias:
        links.append(zeros(theirs=("transformer.ln_f.bias",)))
    if not cfg.tie_embeddings:
        links.append(link("head.proj.weight", "lm_head.weight"))
    links.append(link("head.bias", "lm_head.bias") if cfg.head_bias else zeros(theirs=("lm_head.bias",)))
    return links


# --------------------------------------------------------------------------- Falcon


def falcon_layout(c: Any) -> tuple[int, str]:
    """(key/value heads, norms) of a Falcon config; norms: `two` (ln_attn, ln_mlp: Falcon-40B's
    new_decoder_architecture), `shared` (one input_layernorm for both: Falcon-7B), or
    `sequential` (parallel_attn=false: input_layernorm, then post_attention_layernorm)."""
    if c.alibi:
        raise unsupported("alibi", True, "arches imports rotary Falcon models (Falcon's ALiBi is computed in bfloat16)")
    if c.new_decoder_architecture:
        if not c.parallel_attn:
            raise unsupported("parallel_attn", False, "transformers runs new_decoder_architecture with parallel attention only")
        return c.num_kv_heads, "two" if (c.num_ln_in_parallel_attn or 2) == 2 else "shared"
    if c.parallel_attn and c.num_ln_in_parallel_attn == 2:
        raise unsupported("num_ln_in_parallel_attn", 2, "transformers reads two norms only with new_decoder_architecture=true")
    if not c.multi_query and c.num_kv_heads != c.num_attention_heads:
        raise unsupported("num_kv_heads", c.num_kv_heads, "without new_decoder_architecture Falcon has 1 or num_attention_heads")
    return 1 if c.multi_query else c.num_attention_heads, "shared" if c.parallel_attn else "sequential"


def falcon_knobs(c: Any) -> dict:
    n_kv_heads, norms = falcon_layout(c)
    return dict(
        vocab_size=c.vocab_size, d_model=c.hidden_size, n_layers=c.num_hidden_layers, n_heads=c.num_attention_heads,
        n_kv_heads=n_kv_heads, d_ff=c.ffn_hidden_size, max_len=c.max_position_embeddings, position="rope", rotary_pct=1.0,
        norm="layernorm", norm_placement="pre", parallel_block=norms != "sequential", embed_norm=False,
        bias=True,  # its LayerNorms always have biases; with bias=false its linear layers do not (zeros here)
        tie_embeddings=bool(c.tie_word_embeddings), norm_eps=c.layer_norm_epsilon,
        **rope_settings(c), **hf_activation("activation", c.activation),
    )


def falcon_config(cfg: ModelConfig) -> dict:
    require(cfg, "Falcon", position="rope", rotary_pct=1.0, norm="layernorm", norm_placement="pre", embed_norm=False,
            head_transform=False, head_bias=False)
    if cfg.parallel_block:  # Falcon-40B's block: two norms and any number of key/value heads
        layout = dict(new_decoder_architecture=True, parallel_attn=True, num_ln_in_parallel_attn=2, num_kv_heads=cfg.n_kv_heads)
    elif cfg.n_kv_heads in (1, cfg.n_heads):
        layout = dict(new_decoder_architecture=False, parallel_attn=False, multi_query=cfg.n_kv_heads == 1,
                      num_kv_heads=cfg.n_kv_heads)
    else:
        why = f"Falcon's sequential block has 1 or n_heads={cfg.n_heads} key/value heads"
        raise unsupported("n_kv_heads", cfg.n_kv_heads, why)
    return dict(
        vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads,
        ffn_hidden_size=cfg.d_ff, activation=our_activation(cfg, "Falcon"), max_position_embeddings=cfg.max_len,
        layer_norm_epsilon=cfg.norm_eps, bias=cfg.bias, alibi=False, tie_word_embeddings=cfg.tie_embeddings,
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_base}, hidden_dropout=cfg.dropout,
        attention_dropout=cfg.dropout, **layout,
    )


def falcon_links(cfg: ModelConfig, c: Any) -> list[Link]:
    _, norms = falcon_layout(c)
    linear_biases = cfg.bias and c.bias
    links = [link("body.embed.tokens.weight", "transformer.word_embeddings.weight")]
    for i in range(cfg.n_layers):
        ours, theirs = f"body.blocks.{i}", f"transformer.h.{i}"
        their_norms = {"two": ("ln_attn", "ln_mlp"), "sequential": ("input_layernorm", "post_attention_layernorm")}.get(norms)
        for kind in ("weight", "bias") if cfg.bias else ("weight",):
            if their_norms is None:  # one norm read by attention and MLP
                one_norm = "FalconForCausalLM with new_decoder_architecture=false has one LayerNorm for attention and MLP"
                links.append(link((f"{ours}.attn_norm.{kind}", f"{ours}.mlp_norm.{kind}"),
                                  f"{theirs}.input_layernorm.{kind}", shared(2, one_norm)))
            else:
                links += [link(f"{ours}.attn_norm.{kind}", f"{theirs}.{their_norms[0]}.{kind}"),
                          link(f"{ours}.mlp_norm.{kind}", f"{theirs}.{their_norms[1]}.{kind}")]
        if not cfg.bias:  # Falcon's LayerNorms always have a bias
            links.append(zeros(theirs=tuple(f"{theirs}.{n}.bias" for n in their_norms or ("input_layernorm",))))
        for kind in ("weight", "bias") if linear_biases else ("weight",):
            links.append(link((f"{ours}.attn.q_proj.{kind}", f"{ours}.attn.kv_proj.{kind}"),
                              f"{theirs}.self_attention.query_key_value.{kind}", grouped_qkv(cfg.n_heads, cfg.n_kv_heads)))
        links += linear(f"{ours}.attn.out_proj", f"{theirs}.self_attention.dense", linear_biases)
        links += linear(f"{ours}.mlp.up", f"{theirs}.mlp.dense_h_to_4h", linear_biases)
        links += linear(f"{ours}.mlp.down", f"{theirs}.mlp.dense_4h_to_h", linear_biases)
        if cfg.bias and not c.bias:
            biases = tuple(f"{ours}.{p}.bias" for p in ("attn.q_proj", "attn.kv_proj", "attn.out_proj", "mlp.up", "mlp.down"))
            links.append(zeros(ours=biases, why="FalconForCausalLM with bias=false has no linear-layer biases"))
    links += norm("body.final_norm", "transformer.ln_f", cfg.bias)
    if not cfg.bias:
        links.append(zeros(theirs=("transformer.ln_f.bias",)))
    if not cfg.tie_embeddings:
        links.append(link("head.proj.weight", "lm_head.weight"))
    return links
