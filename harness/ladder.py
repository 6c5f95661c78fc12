"""An experiment's scaling ladder (`experiment.ladder`): the sizes every variant x seed
trains at, and each rung's token budget.

    experiment:
      ladder:
        sizes: [ladder_xs, ladder_s, ladder_m]  # rung 0, 1, 2
        tokens_per_param: 20                    # or tokens: [a, b, c], one budget per size

`arches compare` plans each rung as an experiment folder of its own, `<experiment>/<size>/`,
whose run folders `<variant>-seed<N>` train with `size=<size>` and `train.max_tokens=<budget>`,
so each is resumed and skipped when complete like any other run, and each rung is reported. The ladder is read and checked (one line for bad input)
before anything is trained.
"""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import DictConfig, OmegaConf

from arches.config import compose, group_choices
from arches.errors import UserError, unknown

# what a ladder sets for each rung: the user's own value would give every rung one size (or
# budget) while its folder name says another
RUNG_KEYS = ("size", "train.max_tokens")


@dataclass(frozen=True)
class Ladder:
    sizes: tuple[str, ...]
    tokens_per_param: float | None = None
    tokens: tuple[int, ...] | None = None

    def rung_overrides(self, rung: int, run_overrides: list[str], quick: bool) -> list[str]:
        """The overrides that make a run of these overrides one rung: its size, and (except in a
        smoke check, `quick=true`, which keeps quick's budget at every rung) its token budget."""
        size = self.sizes[rung]
        if quick:
            return [f"size={size}"]
        return [f"size={size}", f"train.max_tokens={self.budget(rung, [*run_overrides, f'size={size}'])}"]

    def budget(self, rung: int, run_overrides: list[str]) -> int:
        """The rung's token budget: its explicit one, else round(tokens_per_param x N)."""
        if self.tokens is not None:
            return self.tokens[rung]
        return max(1, round(self.tokens_per_param * parameters(run_overrides)))


def ladder_of(cfg: DictConfig, user: list[str]) -> Ladder | None:
    """The experiment's ladder (None without `experiment.ladder`); bad input is one line."""
    settings = OmegaConf.select(cfg, "experiment.ladder", default=None)
    if settings is None:
        return None
    settings = OmegaConf.to_container(settings, resolve=True)  # its kinds: arches.settings
    sizes = settings.get("sizes")
    if not sizes:
        raise UserError("experiment.ladder needs its sizes, e.g. experiment.ladder.sizes=[ladder_xs,ladder_s,ladder_m]")
    valid = group_choices("size")
    for size in sizes:
        if size not in valid:
            raise UserError(f"experiment.ladder.sizes: {unknown('size', str(size), valid)}")
    if len(set(sizes)) < len(sizes):
        raise UserError(f"experiment.ladder.sizes={sizes} names a size twice; each rung is one size")
    per_param, tokens = settings.get("tokens_per_param"), settings.get("tokens")
    if (per_param is None) == (tokens is None):
        raise UserError(
            f"experiment.ladder needs one budget rule, {'not both' if tokens is not None else 'and has none'}: "
            f"tokens_per_param (e.g. experiment.ladder.tokens_per_param=20) or tokens (one budget per size)"
        )
    if tokens is not None and len(tokens) != len(sizes):
        raise UserError(
            f"experiment.ladder.tokens={tokens} has {len(tokens)} budgets for {len(sizes)} sizes ({', '.join(sizes)}); "
            f"give one budget per size"
        )
    fixed = [o for o in user if o.split("=", 1)[0].lstrip("+~") in RUNG_KEYS]
    if fixed:
        raise UserError(
            f"{fixed[0]}: experiment.ladder sets size and train.max_tokens for each rung; change "
            f"experiment.ladder.sizes, tokens_per_param or tokens instead"
        )
    return Ladder(tuple(map(str, sizes)), per_param, None if tokens is None else tuple(int(t) for t in tokens))


def parameters(overrides: list[str]) -> int:
    """N of the budget rule: the total parameters of the model these overrides train, counted
    on a model built on the meta device (no memory, no training).

    Total, not non-embedding. Hoffmann et al. 2022 count every parameter; Kaplan et al. 2020
    leave the embedding out. At the CPU ladder's sizes the embedding is most of a model (the
    decoder at ladder_xs, vocabulary 2048: 107k parameters, 25k outside the embedding), and
    the output head it ties to is most of each token's FLOPs (6 d_model vocab): 6 x total N
    is within 16% of the decoder's counted FLOPs/token at every rung, 6 x non-embedding N is
    5x short at ladder_xs. Budgets from the non-embedding count would also give ladder_xs
    1/31 of ladder_m's tokens (a few steps); the total gives it a tenth."""
    import torch

    from arches.core.stack import parameter_counts
    from arches.registry import family, model_config, plain
    from arches.settings import check_data_settings

    cfg = compose(overrides)
    check_data_settings(cfg)  # data.vocab_size=abc: one line, not a traceback
    arch = plain(cfg.arch)
    model_cfg = model_config(arch, cfg.size, vocabulary_size(cfg), int(cfg.data.seq_len))
    with torch.device("meta"):
        model = family(arch["family"]).build(model_cfg, arch)
    return parameter_counts(model)["total"]


def vocabulary_size(cfg: DictConfig) -> int:
    """The vocabulary a run's tokenizer will have: a given tokenizer's own, else the one asked
    for (a tokenizer trained on a tiny corpus may learn fewer; the run records its real N)."""
    path = cfg.data.get("tokenizer_path")
    if path is None:
        return int(cfg.data.vocab_size)
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(path)).get_vocab_size()
