"""The training settings checked before anything is prepared or written: every number of
the `train` section (and `seed`, `trainer.max_steps`) with its type and range, so a bad
value is one line naming the key, what it must be and an example, with no run folder.

(Hydra's structured configs would type the section too, but they report a bad value
as a multi-line OmegaConf ValidationError and know no ranges; a table is shorter.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from arches.errors import UserError


@dataclass(frozen=True)
class Number:
    """A numeric setting: integer or real, its bounds, whether null is allowed, an example."""

    integer: bool
    minimum: float
    example: str
    maximum: float = math.inf
    above_minimum: bool = False  # the minimum itself is refused (a learning rate of 0)
    below_maximum: bool = False
    nullable: bool = False

    def check(self, key: str, value: Any) -> None:
        if value is None and self.nullable:
            return
        kind = "an integer" if self.integer else "a number"
        accepted = int if self.integer else (int, float)
        well_typed = isinstance(value, accepted) and not isinstance(value, bool)
        low_ok = well_typed and (value > self.minimum if self.above_minimum else value >= self.minimum)
        high_ok = well_typed and (value < self.maximum if self.below_maximum else value <= self.maximum)
        if well_typed and low_ok and high_ok and (self.integer or math.isfinite(value)):
            return
        low = f"> {self.minimum:g}" if self.above_minimum else f">= {self.minimum:g}"
        bounds = low if self.maximum == math.inf else f"in {'(' if self.above_minimum else '['}{self.minimum:g}, {self.maximum:g}{')' if self.below_maximum else ']'}"
        null = " or null" if self.nullable else ""
        raise UserError(f"{key}={value!r} must be {kind} {bounds}{null}, e.g. {key}={self.example}")


POSITIVE_INT = dict(integer=True, minimum=1)
TRAIN_NUMBERS: dict[str, Number] = {
    "seed": Number(integer=True, minimum=0, example="0"),
    "trainer.max_steps": Number(**POSITIVE_INT, example="200", nullable=True),
    "train.max_tokens": Number(**POSITIVE_INT, example="1000000"),
    "train.micro_batch_size": Number(**POSITIVE_INT, example="16"),
    "train.grad_accum": Number(**POSITIVE_INT, example="1"),
    "train.lr": Number(integer=False, minimum=0, above_minimum=True, example="1e-3"),
    "train.weight_decay": Number(integer=False, minimum=0, example="0.1"),
    "train.eps": Number(integer=False, minimum=0, above_minimum=True, example="1e-8"),
    "train.warmup_fraction": Number(integer=False, minimum=0, maximum=1, below_maximum=True, example="0.05"),
    "train.min_lr_ratio": Number(integer=False, minimum=0, maximum=1, example="0.1"),
    "train.grad_clip": Number(integer=False, minimum=0, example="1.0", nullable=True),
    "train.val_interval": Number(**POSITIVE_INT, example="100"),
    "train.val_windows": Number(**POSITIVE_INT, example="64", nullable=True),
    "train.log_interval": Number(**POSITIVE_INT, example="10"),
    "train.checkpoint_interval": Number(**POSITIVE_INT, example="100"),
    "train.keep_checkpoints": Number(**POSITIVE_INT, example="2"),
}
BETA = Number(integer=False, minimum=0, maximum=1, below_maximum=True, example="[0.9,0.95]")


def check_train_settings(cfg: DictConfig) -> None:
    """Refuse a bad training setting in one line (arches.train calls this first)."""
    for key, number in TRAIN_NUMBERS.items():
        value = OmegaConf.select(cfg, key, default=None)
        if value is None and not number.nullable and OmegaConf.select(cfg, key, default="missing") == "missing":
            continue  # a section without the key keeps the code's default
        number.check(key, value)
    betas = OmegaConf.select(cfg, "train.betas", default=None)
    if betas is not None:
        betas = list(betas) if OmegaConf.is_list(betas) or isinstance(betas, (list, tuple)) else betas
        if not isinstance(betas, list) or len(betas) != 2:
            raise UserError(f"train.betas={betas!r} must be two numbers in [0, 1), e.g. train.betas=[0.9,0.95]")
        for beta in betas:
            try:
                BETA.check("train.betas", beta)
            except UserError:
                raise UserError(f"train.betas={betas!r} must be two numbers in [0, 1), e.g. train.betas=[0.9,0.95]") from None
