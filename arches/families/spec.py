"""`FamilySpec`: what a family file exports (DESIGN.md, "Interfaces")."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from arches.core.config import ModelConfig


@dataclass(frozen=True)
class FamilySpec:
    """A family's bundle: its model, its objective and its scorer.

    - `build(model_cfg, arch)` -> the model, whose `forward(batch) -> (logits, loss)`;
      `arch` is the preset's mapping (objective settings). Without labels the logits
      are (B, T, V); with labels a family may run the head on the labelled positions
      only (logits (N, V)), and a chunked loss (`SpeedConfig.loss_chunk_size`) returns
      None for them.
    - `collate(arch, specials, seq_len)` -> the objective: list of windows -> batch.
    - `scorer(model, tokenizer, arch, **options)` -> a Scorer for lm-eval (`arches.families.scoring`).
    - `input_len(arch, seq_len)` -> the longest sequence the model sees for a window,
      which `max_len` must cover.
    - `trained_lengths(arch, seq_len)` -> the longest lengths training on `seq_len`-token
      windows feeds the model (`input` always; a family adds its own, e.g. an
      encoder-decoder's `target`): recorded in model.json, and no scorer exceeds them.
    - `flops_per_token(model_cfg, arch, seq_len)` -> analytic training FLOPs per window token.
    - `objectives`: the objective names this family accepts; `positions` the allowed positions.
    """

    name: str
    build: Callable[[ModelConfig, dict], nn.Module]
    collate: Callable[..., Callable[[list[dict]], dict]]
    input_len: Callable[[dict, int], int]
    flops_per_token: Callable[[ModelConfig, dict, int], float]
    objectives: tuple[str, ...]
    positions: tuple[str, ...] = ("learned", "rope", "alibi", "none", "t5_relative")
    scorer: Callable[..., Any] | None = None
    trained_lengths: Callable[[dict, int], dict[str, int]] = lambda arch, seq_len: {"input": seq_len}
