"""The data model: per-example outcomes by seed and doc_id, the metric kinds, and their alignment.

`Outcomes` is one variant's scores on one task: {seed: {doc_id: value}}, where a value is
0/1 (accuracy), a float (a per-example mean metric) or a (loglikelihood, weight) pair (a
corpus-level ratio metric such as bits/byte, whose weight is the document's bytes). Every
test and interval in this package reads outcomes through `align`, which keeps the doc_ids
shared by every seed of every variant compared, so comparisons are paired by doc_id.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass

import numpy as np

from arches.errors import UserError, unknown

ALPHA = 0.05
CONFIDENCE = 0.95
POWER = 0.80
RESAMPLES = 10_000
BOOTSTRAP_SEED = 0

Outcomes = Mapping[int, Mapping[Hashable, object]]  # seed -> doc_id -> value


@dataclass(frozen=True)
class MetricKind:
    """How per-example values aggregate into the task's score.

    Mean kinds average the values. Ratio kinds sum (loglikelihood, weight) pairs over the
    documents and map r = Σ loglik / Σ weight through `transform`, as lm-eval aggregates
    bits_per_byte (-r / ln 2) and the perplexities (exp(-r)); `slope` is d transform / dr,
    for the delta-method (linearised) per-document contributions used by the crossed test.
    """

    name: str
    higher_is_better: bool
    proportion: bool = False  # values are 0/1: Wilson intervals and binomial tests apply
    ratio: bool = False
    transform: Callable = lambda r: r  # noqa: E731 - stored on the instance, so never bound as a method
    slope: Callable = lambda r: np.ones_like(r)  # noqa: E731


LN2 = math.log(2)
KINDS = {
    "accuracy": MetricKind("accuracy", higher_is_better=True, proportion=True),
    "mean": MetricKind("mean", higher_is_better=True),
    "mean_lower_better": MetricKind("mean_lower_better", higher_is_better=False),
    "bits_per_byte": MetricKind("bits_per_byte", False, ratio=True, transform=lambda r: -r / LN2,
                                slope=lambda r: np.full_like(r, -1 / LN2)),
    "byte_perplexity": MetricKind("byte_perplexity", False, ratio=True, transform=lambda r: np.exp(-r),
                                  slope=lambda r: -np.exp(-r)),
    "word_perplexity": MetricKind("word_perplexity", False, ratio=True, transform=lambda r: np.exp(-r),
                                  slope=lambda r: -np.exp(-r)),
}
# lm-eval metric names -> kind (what the report holds); anything else is named explicitly
METRIC_KINDS = {"acc": "accuracy", "acc_norm": "accuracy", "exact_match": "accuracy",
                "bits_per_byte": "bits_per_byte", "byte_perplexity": "byte_perplexity",
                "word_perplexity": "word_perplexity"}


def metric_kind(kind: str | MetricKind) -> MetricKind:
    """A kind by name (`accuracy`, `mean`, `bits_per_byte`, ...) or an lm-eval metric name (`acc_norm`)."""
    if isinstance(kind, MetricKind):
        return kind
    name = METRIC_KINDS.get(kind, kind)
    if name not in KINDS:
        raise unknown("metric kind", kind, [*KINDS, *METRIC_KINDS])
    return KINDS[name]


@dataclass(frozen=True)
class Table:
    """One variant's outcomes on the aligned doc_ids: (seeds, docs) arrays.

    `numerator` holds the values (mean kinds) or the logliks (ratio kinds); `weight` is 1
    for mean kinds and the pair's weight (bytes, words) for ratio kinds, so every statistic
    is transform(Σ numerator / Σ weight) per seed.
    """

    variant: str
    seeds: tuple
    numerator: np.ndarray  # (k, n)
    weight: np.ndarray  # (k, n)

    @property
    def k(self) -> int:
        return len(self.seeds)

    @property
    def n(self) -> int:
        return self.numerator.shape[1]

    def seed_scores(self, kind: MetricKind) -> np.ndarray:
        """(k,) each seed's task score: transform(Σ numerator / Σ weight)."""
        return kind.transform(self.numerator.sum(axis=1) / self.weight.sum(axis=1))

    def pooled(self) -> Table:
        """The seeds averaged per document: one pseudo-seed (for examples-only tests).

        For bits/byte (same bytes in every seed) its score is exactly the mean of the seeds'
        scores; for the perplexities it is the perplexity of the mean loglik.
        """
        return Table(self.variant, ("pooled",), self.numerator.mean(axis=0, keepdims=True),
                     self.weight.mean(axis=0, keepdims=True))

    def pseudo_values(self, kind: MetricKind) -> np.ndarray:
        """(k, n) per-document contributions whose mean over docs is each seed's score.

        Mean kinds: the values themselves. Ratio kinds: the delta-method linearisation
        T(r_s) + T'(r_s) · (loglik - r_s · weight) / mean(weight), the standard variance
        approximation of a ratio estimator (Cochran 1977, §6.4), so the crossed test sees
        each document's share of the corpus-level score.
        """
        if not kind.ratio:
            return self.numerator
        rate = self.numerator.sum(axis=1, keepdims=True) / self.weight.sum(axis=1, keepdims=True)  # (k, 1)
        mean_weight = self.weight.mean(axis=1, keepdims=True)
        return kind.transform(rate) + kind.slope(rate) * (self.numerator - rate * self.weight) / mean_weight


def seed_ids(variant: str, outcomes: Outcomes) -> list[int]:
    if not isinstance(outcomes, Mapping) or not outcomes:
        raise UserError(f"variant '{variant}' has no seeds (seeds: []); give it at least one seed's outcomes")
    for seed in outcomes:
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
            raise UserError(f"variant '{variant}' has seed {seed!r}, which is not an integer; seeds are integers")
    return sorted(outcomes)


def _convert(variant: str, seed: int, doc, value, kind: MetricKind) -> tuple[float, float]:
    where = f"variant '{variant}', seed {seed}, doc_id {doc!r}"
    if kind.ratio:
        if not (isinstance(value, (list, tuple)) and len(value) == 2):
            raise UserError(f"{where}: {kind.name} needs (loglikelihood, weight) pairs, got {value!r}; "
                            "score the task with per-document loglikelihoods")
        loglik, weight = float(value[0]), float(value[1])
        if not (math.isfinite(loglik) and math.isfinite(weight) and weight > 0):
            raise UserError(f"{where}: ({loglik}, {weight}) is not a finite loglikelihood with a positive weight")
        return loglik, weight
    if isinstance(value, (list, tuple)) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise UserError(f"{where}: {kind.name} needs one finite number per example, got {value!r}")
    if kind.proportion and value not in (0, 1):
        raise UserError(f"{where}: accuracy outcomes are 0 or 1, got {value!r}; use metric kind 'mean' for scores")
    return float(value), 1.0


def align(outcomes: Mapping[str, Outcomes], kind: str | MetricKind) -> dict[str, Table]:
    """{variant: Table} on the doc_ids that every seed of every variant scored, in one order."""
    kind = metric_kind(kind)
    seeds = {variant: seed_ids(variant, per_seed) for variant, per_seed in outcomes.items()}
    shared = None
    for variant, per_seed in outcomes.items():
        for seed in seeds[variant]:
            docs = set(per_seed[seed])
            shared = docs if shared is None else shared & docs
    if not shared:
        raise UserError(f"variants {', '.join(outcomes)} share no doc_id across their seeds; "
                        "evaluate them on the same examples")
    try:
        docs = sorted(shared)
    except TypeError:  # doc_ids of mixed types: any fixed order pairs them
        docs = sorted(shared, key=repr)
    tables = {}
    for variant, per_seed in outcomes.items():
        rows = [_row(variant, seed, per_seed[seed], docs, kind) for seed in seeds[variant]]
        tables[variant] = Table(variant, tuple(seeds[variant]), np.stack([r[0] for r in rows]),
                                np.stack([r[1] for r in rows]))
    return tables


def _row(variant: str, seed: int, by_doc: Mapping, docs: list, kind: MetricKind) -> tuple[np.ndarray, np.ndarray]:
    """(numerator, weight) of one seed on `docs`, checked as whole arrays; a bad value is then
    found one by one, for an error that names it."""
    values = [by_doc[d] for d in docs]
    try:
        array = np.array(values)
    except ValueError:  # ragged pairs
        array = None
    shape = (len(docs), 2) if kind.ratio else (len(docs),)
    ok = array is not None and array.dtype.kind in "biuf" and array.shape == shape
    if ok:
        array = array.astype(float)
        ok = bool(np.isfinite(array).all())
        if ok and kind.ratio:
            ok = bool((array[:, 1] > 0).all())
        if ok and kind.proportion:
            ok = bool(np.isin(array, (0.0, 1.0)).all())
    if not ok:
        for doc, value in zip(docs, values):
            _convert(variant, seed, doc, value, kind)
        raise UserError(f"variant '{variant}', seed {seed}: its {kind.name} values are not all of one form")
    if kind.ratio:
        return array[:, 0], array[:, 1]
    return array, np.ones_like(array)


def mismatched_docs(outcomes: Mapping[str, Outcomes]) -> str | None:
    """One line naming the variants (and seeds) whose doc_ids differ from the first one's, or None.

    `align` pairs on the doc_ids they share; a report that must refuse rows compared on
    different examples (different n or limit) asks this first.
    """
    reference = None
    differing = []
    for variant, per_seed in outcomes.items():
        for seed in seed_ids(variant, per_seed):
            docs = frozenset(per_seed[seed])
            if reference is None:
                reference = (variant, seed, docs)
            elif docs != reference[2]:
                differing.append(f"{variant} seed {seed} ({len(docs)})")
    if not differing:
        return None
    first = f"{reference[0]} seed {reference[1]} ({len(reference[2])})"
    return f"the variants were scored on different examples: {first} vs {', '.join(differing)} doc_ids"


def paired_seeds(a: Table, b: Table) -> bool:
    """Seeds are paired when both variants ran exactly the same seed ids (same data order, same init)."""
    return a.seeds == b.seeds
