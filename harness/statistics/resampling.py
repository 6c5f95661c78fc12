"""Resampling: document and seed bootstraps (Sellam et al. 2022's Multi-Bootstrap), sign flips, p-values.

Every resampling p-value counts the observed arrangement as one of the resamples,
p = (1 + b) / (1 + R) (Davison & Hinkley 1997, eq. 4.11; North et al. 2002), so it is never
0 and never below what R resamples can resolve.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import numpy as np

from harness.statistics.outcomes import BOOTSTRAP_SEED, CONFIDENCE, RESAMPLES, MetricKind, Table

CELLS_PER_CHUNK = 2_000_000  # resamples × documents drawn at once: bounds memory at ~16 MB a matrix
EXACT_FLIPS_UP_TO = 16  # all 2^k sign flips (65,536 at k = 16); beyond, random flips


def counts(size: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """(size, n) how often each of n items is drawn in each of `size` resamples with replacement.

    The same distribution as numpy's multinomial with equal probabilities, at a third of its
    cost: one bincount over row-offset indices instead of `size` multinomial draws.
    """
    picks = rng.integers(0, n, size=(size, n)) + n * np.arange(size)[:, None]
    return np.bincount(picks.ravel(), minlength=size * n).reshape(size, n)


def _chunks(resamples: int, n: int) -> Iterator[int]:
    step = max(1, CELLS_PER_CHUNK // n)
    for start in range(0, resamples, step):
        yield min(step, resamples - start)


def _seed_scores(table: Table, kind: MetricKind, doc_counts: np.ndarray) -> np.ndarray:
    """(chunk, k) each seed's score on the resampled documents: transform(Σ w·numerator / Σ w·weight)."""
    return kind.transform((doc_counts @ table.numerator.T) / (doc_counts @ table.weight.T))


def replicates(
    a: Table,
    b: Table | None,
    kind: MetricKind,
    *,
    seeds: str = "fixed",
    resamples: int = RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> np.ndarray:
    """(resamples,) bootstrap replicates of a's score (or of a - b), a variant's score being the
    mean over its seeds of each seed's corpus-level score.

    Each resample draws the documents with replacement, once for both variants (paired by
    doc_id), and then, per `seeds`:
      - "fixed": keeps every seed (examples only: test-set uncertainty alone);
      - "paired": draws seed ids with replacement, the same ids for a and b (they ran the same seeds);
      - "unpaired": draws each variant's seeds on its own.
    "paired"/"unpaired" is the Multi-Bootstrap of Sellam et al. (ICLR 2022, "The MultiBERTs"):
    seeds, then examples, designed there for 25 pre-training seeds.
    """
    if seeds not in ("fixed", "paired", "unpaired"):
        raise ValueError(f"seeds must be fixed, paired or unpaired, not {seeds!r}")
    if seeds == "paired" and b is not None and a.seeds != b.seeds:
        raise ValueError("paired seeds need the same seed ids in both variants")
    rng = np.random.default_rng(seed)
    if seeds == "fixed" and not kind.ratio:
        return _linear_replicates(a, b, resamples, rng)
    out = []
    for size in _chunks(resamples, a.n):
        doc_counts = counts(size, a.n, rng)  # (size, n), shared by both variants
        seed_counts_a = counts(size, a.k, rng) if seeds != "fixed" else None
        stat = _mean_over_seeds(_seed_scores(a, kind, doc_counts), seed_counts_a)
        if b is not None:
            # "paired": a's seed draws (the same seed ids); "fixed": none (None)
            seed_counts_b = counts(size, b.k, rng) if seeds == "unpaired" else seed_counts_a
            stat = stat - _mean_over_seeds(_seed_scores(b, kind, doc_counts), seed_counts_b)
        out.append(stat)
    return np.concatenate(out)


def _linear_replicates(a: Table, b: Table | None, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Examples only, mean metric: the statistic is linear in the document counts, Σ_d w_d x_d / n with
    x_d the per-document value (a's seed mean minus b's), so drawing how often each distinct x
    is drawn from a multinomial is the same distribution as resampling documents, at
    resamples × distinct values (3 for a 0/1 difference) instead of resamples × n."""
    per_doc = a.numerator.mean(axis=0) - (b.numerator.mean(axis=0) if b is not None else 0.0)
    values, frequency = np.unique(per_doc, return_counts=True)
    draws = rng.multinomial(a.n, frequency / a.n, size=resamples)  # (resamples, distinct)
    return draws @ values / a.n


def _mean_over_seeds(scores: np.ndarray, seed_counts: np.ndarray | None) -> np.ndarray:
    if seed_counts is None:
        return scores.mean(axis=1)
    return (scores * seed_counts).sum(axis=1) / scores.shape[1]


def percentile_interval(boot: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    low, high = np.quantile(boot, [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(low), float(high)


def _ties(boot: np.ndarray, at: float) -> np.ndarray:
    # replicates equal to `at` up to rounding (sums of floats) count on both sides
    return np.abs(boot - at) <= 1e-12 * max(1.0, abs(at), float(np.max(np.abs(boot))))


def two_sided_p(boot: np.ndarray, null: float = 0.0) -> float:
    """p = 2 (1 + b) / (1 + R), b the replicates on the far side of `null` (ties on both), capped at 1.

    It inverts the percentile interval: p ≤ α exactly when the (1 - α) percentile interval
    (with the +1 count) excludes `null`, so the p and the interval a table shows agree.
    """
    tied = _ties(boot, null)
    below = int(np.sum((boot < null) | tied))
    above = int(np.sum((boot > null) | tied))
    return float(min(1.0, 2 * (1 + min(below, above)) / (1 + boot.size)))


def one_sided_p_above(boot: np.ndarray, null: float) -> float:
    """p = (1 + b) / (1 + R) for "the score exceeds `null`", b the replicates at or below it."""
    return float((1 + np.sum((boot < null) | _ties(boot, null))) / (1 + boot.size))


def sign_flip_p(differences, resamples: int = RESAMPLES, seed: int = BOOTSTRAP_SEED) -> float:
    """Two-sided p of the paired sign-flip (randomisation) test of the mean difference over seeds.

    Under H0 the two runs of a seed are exchangeable, so each seed's difference is equally
    likely to carry either sign. Up to EXACT_FLIPS_UP_TO seeds every one of the 2^k sign
    patterns is enumerated and p = #{|mean*| ≥ |mean|} / 2^k exactly (the identity and the
    all-flipped pattern always count: the smallest p is 2 / 2^k). Beyond, R random patterns
    and p = (1 + b) / (1 + R). Written here because scipy's `permutation_test` draws at
    random once 2^k exceeds its resample count and hides whether the p is exact.
    """
    differences = np.asarray(differences, dtype=float)
    k = differences.size
    if k == 0:
        raise ValueError("a sign-flip test needs at least one difference")
    observed = abs(differences.mean())
    tolerance = 1e-12 * max(1.0, observed)
    if k <= EXACT_FLIPS_UP_TO:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=k)))  # (2^k, k)
        flipped = np.abs(signs @ differences) / k
        return float(np.mean(flipped >= observed - tolerance))
    rng = np.random.default_rng(seed)
    signs = rng.choice((1.0, -1.0), size=(resamples, k))
    b = int(np.sum(np.abs(signs @ differences) / k >= observed - tolerance))
    return float((1 + b) / (1 + resamples))


def smallest_sign_flip_p(k: int) -> float:
    """The smallest two-sided p an exact sign-flip test over k seeds can give: 2 / 2^k."""
    return 2.0 / 2.0**k
