"""The mapping machinery: `Link`s between our state dict and a transformers one, the
`Architecture` record that holds one class's mapping, and moving tensors through the links.

A `Link` says that our tensors, concatenated on dim 0, equal a conversion of theirs,
concatenated on dim 0 (GPT-2's fused c_attn is our q_proj and kv_proj, transposed), so
one table serves both directions. A link with one side empty (`zeros`) is a tensor the
other side lacks and that must be zero there: written as zeros, and checked to be zero
when it is read (GPT-J has no attention biases; Falcon with bias=false has LayerNorm
biases but no linear ones).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from arches.core import ModelConfig
from arches.errors import UserError

Convert = Callable[[torch.Tensor], torch.Tensor]


def same(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


def transposed(tensor: torch.Tensor) -> torch.Tensor:
    # GPT-2's Conv1D stores a linear layer as (in, out); a bias (1-D) is left alone
    return tensor.t().contiguous()


def scaled(factor: float) -> tuple[Convert, Convert]:
    return (lambda t: t * factor), (lambda t: t / factor)


def grouped_qkv(n_heads: int, n_kv_heads: int) -> tuple[Convert, Convert]:
    """A fused query_key_value that groups each key/value head with the query heads sharing
    it, [q_0 .. q_{r-1} k_0 v_0 | q_r .. k_1 v_1 | ...] with r = n_heads / n_kv_heads
    (Falcon; GPT-NeoX and BLOOM are r = 1: [q0 k0 v0 q1 k1 v1 ...]). Ours are q_proj then
    kv_proj, [q_0 .. q_{H-1} | k_0 .. | v_0 ..]; our head h reads kv head h // r, as theirs."""
    per_group = n_heads // n_kv_heads

    def to_ours(t: torch.Tensor) -> torch.Tensor:
        rest = t.shape[1:]
        groups = t.reshape(n_kv_heads, per_group + 2, -1, *rest)  # (G, r + 2, hd, ...)
        q, k, v = groups[:, :per_group], groups[:, per_group], groups[:, per_group + 1]
        return torch.cat([q.reshape(-1, *rest), k.reshape(-1, *rest), v.reshape(-1, *rest)])

    def to_theirs(t: torch.Tensor) -> torch.Tensor:
        rest, head_dim = t.shape[1:], t.shape[0] // (n_heads + 2 * n_kv_heads)
        q, k, v = t.split([n_heads * head_dim, n_kv_heads * head_dim, n_kv_heads * head_dim])
        groups = [q.reshape(n_kv_heads, per_group, head_dim, *rest), k.reshape(n_kv_heads, 1, head_dim, *rest),
                  v.reshape(n_kv_heads, 1, head_dim, *rest)]
        return torch.cat(groups, dim=1).reshape(t.shape)

    return to_ours, to_theirs


def per_head_qkv(n_heads: int) -> tuple[Convert, Convert]:
    """GPT-NeoX and BLOOM fuse q, k, v per head ([q0 k0 v0 q1 k1 v1 ...])."""
    return grouped_qkv(n_heads, n_heads)


def shared(copies: int, what: str) -> tuple[Convert, Convert]:
    """One tensor of theirs that several of ours copy (Falcon-7B's and GPT-J's one LayerNorm
    for attention and MLP, our two): ours must be equal to go back."""

    def to_theirs(t: torch.Tensor) -> torch.Tensor:
        pieces = t.chunk(copies)
        if any(not torch.equal(piece, pieces[0]) for piece in pieces[1:]):
            raise UnsupportedOption(f"{what}, and this model's differ; it cannot be written there")
        return pieces[0]

    return (lambda t: torch.cat([t] * copies)), to_theirs


@dataclass(frozen=True)
class Link:
    """Our tensors `ours` (concatenated on dim 0) == to_ours(their tensors `theirs`
    concatenated on dim 0); `to_theirs` is the inverse. One side empty: the other side's
    tensors exist only there and are zero (`why` says why the empty side has none)."""

    ours: tuple[str, ...]
    theirs: tuple[str, ...]
    to_ours: Convert = same
    to_theirs: Convert = same
    why: str = ""


def link(ours: str | tuple[str, ...], theirs: str | tuple[str, ...], convert: tuple[Convert, Convert] | None = None) -> Link:
    ours = (ours,) if isinstance(ours, str) else tuple(ours)
    theirs = (theirs,) if isinstance(theirs, str) else tuple(theirs)
    to_ours, to_theirs = convert or (same, same)
    return Link(ours, theirs, to_ours, to_theirs)


def zeros(ours: tuple[str, ...] = (), theirs: tuple[str, ...] = (), why: str = "") -> Link:
    """Tensors that only one side has, and that must be zero to mean the same model."""
    assert bool(ours) != bool(theirs), "a zeros link has exactly one side"
    return Link(tuple(ours), tuple(theirs), why=why)


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


Tensors = dict[str, torch.Tensor]


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
    # export only: our tensors -> equal-function tensors in the form the links can write (GPT-J's one norm)
    fold: Callable[[ModelConfig, Tensors], Tensors] | None = None


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


def first_nonzero(tensors: dict[str, torch.Tensor], names: tuple[str, ...]) -> str | None:
    return next((name for name in names if bool(tensors[name].any())), None)


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
            if not l.theirs:  # ours only: theirs computes as if it were zero
                for name in l.ours:
                    ours[name].zero_()
                continue
            if not l.ours:  # theirs only: it must be zero for our model to compute the same
                nonzero = first_nonzero({name: take(name) for name in l.theirs}, l.theirs)
                if nonzero is not None:
                    raise UnsupportedOption(f"tensor {nonzero} is nonzero, but {l.why or 'the arches model has no such tensor'}")
                continue
            joined = torch.cat([take(name) for name in l.theirs]) if len(l.theirs) > 1 else take(l.theirs[0])
            for name, tensor in split_like(l.to_ours(joined), l.ours, {n: tuple(ours[n].shape) for n in l.ours}).items():
                ours[name].copy_(tensor)


def export_weights(model: torch.nn.Module, architecture: Architecture, config: Any, cfg: ModelConfig) -> dict[str, torch.Tensor]:
    shapes, tied, _ = their_shapes(architecture, config)
    ours = {name: tensor.detach().float() for name, tensor in our_parameters(model).items()}
    if architecture.fold is not None:
        ours = architecture.fold(cfg, ours)
    links = architecture.links(cfg, config)
    check_links(links, ours, set(shapes), tied)
    converted: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for l in links:
            if not l.ours:  # theirs only: zeros compute what our model does without them
                converted.update({name: torch.zeros(shapes[name]) for name in l.theirs})
                continue
            if not l.theirs:
                nonzero = first_nonzero(ours, l.ours)
                if nonzero is not None:
                    raise UnsupportedOption(f"{nonzero} is nonzero, but {l.why}")
                continue
            joined = torch.cat([ours[name] for name in l.ours]) if len(l.ours) > 1 else ours[l.ours[0]]
            converted.update(split_like(l.to_theirs(joined), l.theirs, shapes))
    return converted
