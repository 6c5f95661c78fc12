"""`FamilySpec`: what a family file exports (DESIGN.md, "Interfaces"), and the default of its
special-token roles for an imported tokenizer. Light: no torch here, so the workflows may name
the fields' types without importing a model."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from arches.core.config import ModelConfig
from arches.families.objective import ArchConfig

if TYPE_CHECKING:
    from torch import nn

    from arches.data.tokenizer import Specials

LIKELIHOODS = ("exact", "pseudo")
REQUIRED_SPECIALS = ("pad", "bos", "eos")


# --------------------------------------------------------------------------- special tokens of an import


def token_of(tokenizer: Any, token_id: Any) -> str | None:
    """The token a transformers config's id names (None: it names none)."""
    return tokenizer.convert_ids_to_tokens(int(token_id)) if isinstance(token_id, int) else None


def hf_eos(tokenizer: Any, config: Any) -> str | None:
    """The imported tokenizer's end of text: its own, else the one config.json names."""
    return tokenizer.eos_token or token_of(tokenizer, getattr(config, "eos_token_id", None))


def special_roles(tokenizer: Any, eos: str | None, bos: str | None) -> dict:
    """Every role of arches' `Specials` (the `arch.special_tokens` an import records), with
    this end of text and start: pad falls back to eos; GLM's roles and the sentinels are none."""
    return {"pad": tokenizer.pad_token or eos, "bos": bos, "eos": eos, "mask": tokenizer.mask_token,
            "sop": None, "eop": None, "gmask": None, "sentinels": []}  # fmt: skip


def hf_specials(tokenizer: Any, config: Any) -> dict:
    """The default `import_specials` (the decoders): bos is the tokenizer's, else eos."""
    eos = hf_eos(tokenizer, config)
    return special_roles(tokenizer, eos, tokenizer.bos_token or eos)


# --------------------------------------------------------------------------- the spec


@dataclass(frozen=True)
class AlternativeFormat:
    """A scoring format asked beside a checkpoint's default one (`eval.alternative_formats`,
    harness/eval/alternatives.py), and the report's ranking-robustness rule comparing the two."""

    default: str  # the checkpoint's default format
    alternative: str  # the one scored beside it
    title: str  # the rule's row in the report, e.g. "PLL-word-l2r vs PLL (encoder)"


@dataclass(frozen=True)
class FamilySpec:
    """A family's bundle: its model, its objective and its scorer, and every fact about the
    family that the workflows (train, eval, bench, interop, report, tests) read.

    The model and its objective:
    - `build(model_cfg, arch)` -> the model, whose `forward(batch) -> (logits, loss)`;
      `arch` is the preset's mapping (objective settings). Without labels the logits
      are (B, T, V); with labels a family may run the head on the labelled positions
      only (logits (N, V)), and a chunked loss (`SpeedConfig.loss_chunk_size`) returns
      None for them.
    - `collate(arch, specials, seq_len)` -> the objective: list of windows -> batch.
    - `input_len(arch, seq_len)` -> the longest sequence the model sees for a window,
      which `max_len` must cover.
    - `trained_lengths(arch, seq_len)` -> the longest lengths training on `seq_len`-token
      windows feeds the model (`input` always; a family adds its own, e.g. an
      encoder-decoder's `target`): recorded in model.json, and no scorer exceeds them.
    - `flops_per_token(model_cfg, arch, seq_len)` -> analytic training FLOPs per window token.
    - `objectives`: the objective names this family accepts, its default first; `positions`
      the allowed positions.
    - `arch_config`: the typed `arch` section (arches.families.objective), a subclass where
      the family reads keys of its own; `check_arch(settings)` the family's own rule on it
      (e.g. prefix_lm means nothing with objective=lm), run by `ArchConfig.of`.

    Scoring (lm-eval, `arches.families.scoring`):
    - `scorer(model, tokenizer, arch, **options)` -> a Scorer for lm-eval.
    - `formats`: the scoring formats the scorer accepts (`format=`), each with how it lays a
      prompt out for generation (the report's Samples notes; "" where it does not generate).
    - `scorer_options`: the option names the scorer accepts.
    - `likelihood`: "exact", or "pseudo" where the family's log-likelihoods are
      pseudo-log-likelihoods (Salazar et al. 2020: the encoder's), which the report labels
      and keeps apart from true likelihoods.
    - `alternatives`: the other format scored beside a default one, per default format.

    The transformers twin (arches.bench's HF column; interop's export):
    - `hf_batch(batch)` -> our training batch as the twin's keyword arguments, predicting the
      same targets; None: the family has no twin (the bench compares it with its reference).
    - `hf_config_ids(specials)` -> token ids the twin's config needs besides pad, bos and eos
      (T5's decoder_start_token_id).
    - `no_transformers`: why no transformers class computes this family, for export-hf's
      error; None where its presets' classes are in arches.interop's table.
    - `import_specials(hf_tokenizer, hf_config)` -> the imported tokenizer's token for each
      of arches' special roles (`Specials`); `required_specials` the roles scoring needs.

    The bench (`arches bench`):
    - `bench_shape`: (windows per step, tokens per window), unless `bench.shapes.<family>`
      says otherwise.
    """

    name: str
    build: Callable[[ModelConfig, dict], nn.Module]
    collate: Callable[..., Callable[[list[dict]], dict]]
    input_len: Callable[[dict, int], int]
    flops_per_token: Callable[[ModelConfig, dict, int], float]
    objectives: tuple[str, ...]
    arch_config: type[ArchConfig] = ArchConfig
    check_arch: Callable[[ArchConfig], None] | None = None
    positions: tuple[str, ...] = ("learned", "rope", "alibi", "none", "t5_relative")
    scorer: Callable[..., Any] | None = None
    trained_lengths: Callable[[dict, int], dict[str, int]] = lambda arch, seq_len: {"input": seq_len}
    formats: Mapping[str, str] = field(default_factory=dict)
    scorer_options: tuple[str, ...] = ("format", "stride", "span")
    likelihood: str = "exact"
    alternatives: tuple[AlternativeFormat, ...] = ()
    hf_batch: Callable[[dict], dict] | None = None
    hf_config_ids: Callable[[Specials], dict] = lambda specials: {}
    no_transformers: str | None = None
    import_specials: Callable[[Any, Any], dict] = hf_specials
    required_specials: tuple[str, ...] = REQUIRED_SPECIALS
    bench_shape: tuple[int, int] = (32, 1024)

    def __post_init__(self) -> None:
        if self.likelihood not in LIKELIHOODS:
            raise ValueError(f"FamilySpec.likelihood={self.likelihood!r}: choose one of {', '.join(LIKELIHOODS)}")

    @property
    def pseudo_likelihood(self) -> bool:
        return self.likelihood == "pseudo"

    def alternative_of(self, default_format: str) -> str | None:
        """The format scored beside `default_format` (None: none)."""
        return next((a.alternative for a in self.alternatives if a.default == default_format), None)
