"""The crossed seeds × examples variance of a score or a difference, with its t reference.

Every seed of every variant scores the same documents, so training seeds and documents are
crossed random factors: x[s, d] = μ + a_s + b_d + e_sd. The variance of the mean is
σ_a²/k + σ_b²/n + σ_e²/(kn), estimated without bias from the two-way ANOVA mean squares,
the language-as-fixed-effect correction of Clark (1973) that psycholinguistics uses for
subjects × items:

    v_seeds = var_s(row means) / k            (σ_a²/k + σ_e²/(kn))
    v_docs  = var_d(column means) / n − MS_residual / (kn)    (σ_b²/n, clipped at 0)

The reference is t with the seeds' degrees of freedom (k − 1, or Welch's for unpaired
seeds). That is what holds the level at 3 seeds: a bootstrap over 3 seeds shrinks their
variance by (k − 1)/k and has normal tails where t with 2 df has 4.30 at 97.5%, so the
Multi-Bootstrap's percentile test rejects about 24% of null bits/byte pairs at nominal 5%
when seed variance dominates, where this test stays under 5% (tests/test_stats.py).
Satterthwaite's df for the sum, as in Clark's F', simulated at 7-9% at 3 seeds, so the
documents' share rides on the seeds' df: conservative when the documents dominate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import special

from harness.statistics.outcomes import MetricKind, Table, paired_seeds


def t_quantile(q: float, df: float) -> float:
    """Student's t quantile (the normal one at df = inf). scipy.special's ufunc, not scipy.stats.t.ppf:
    the same numbers at a hundredth of the call overhead, which a table of rows pays per comparison."""
    return float(special.stdtrit(df, q))


def t_sf(x: float, df: float) -> float:
    """P(T > x) for Student's t with df degrees of freedom (normal at df = inf)."""
    return float(special.stdtr(df, -x))


@dataclass(frozen=True)
class CrossedVariance:
    estimate: float  # the mean score over seeds, or the difference a − b
    seeds_part: float  # variance of the estimate from seeds (with their own example noise)
    docs_part: float  # variance from the documents shared by all seeds (≥ 0)
    df: float  # degrees of freedom of the t reference
    paired: bool | None  # paired seeds (two samples), None for one sample

    @property
    def se(self) -> float:
        return math.sqrt(self.seeds_part + self.docs_part)


def _parts(x: np.ndarray) -> tuple[float, float, float]:
    """(var of row means / k, var of column means / n, MS_residual / (kn)) of a (k, n) matrix."""
    k, n = x.shape
    rows, columns = x.mean(axis=1), x.mean(axis=0)
    residual = x - rows[:, None] - columns[None, :] + x.mean()
    ms_residual = float((residual**2).sum()) / ((k - 1) * (n - 1)) if n > 1 else 0.0
    return float(rows.var(ddof=1)) / k, (float(columns.var(ddof=1)) / n if n > 1 else 0.0), ms_residual / (k * n)


def _seeds_floor(seeds_part: float, interaction: float) -> float:
    """var(row means)/k estimates σ_a²/k + σ_e²/(kn), so its expectation is never below the
    interaction's share σ_e²/(kn). On discrete outcomes it can read exactly 0 by coincidence (three
    seeds each 1 of 100 apart, on different documents), which would make t infinite (p = 3e-307);
    there, and only there, the residual's estimate of that share stands in. Flooring it always would
    cut off the lower tail that t with k − 1 df allows for and make the test far too conservative
    (2% instead of 25% of uncorrected null rows marked, tests/test_stats.py)."""
    return interaction if seeds_part <= 1e-12 * interaction else seeds_part


def one_sample(table: Table, kind: MetricKind) -> CrossedVariance:
    """The variance of a variant's mean score over k ≥ 2 seeds and its n documents."""
    if table.k < 2:
        raise ValueError("the crossed variance needs at least two seeds")
    x = table.pseudo_values(kind)
    seeds_part, docs_part, interaction = _parts(x)
    return CrossedVariance(float(table.seed_scores(kind).mean()), _seeds_floor(seeds_part, interaction),
                           max(0.0, docs_part - interaction),
                           table.k - 1, None)


def two_sample(a: Table, b: Table, kind: MetricKind) -> CrossedVariance:
    """The variance of a − b, paired by doc_id, with paired seeds when both ran the same seed ids."""
    if a.k < 2 or b.k < 2:
        raise ValueError("the crossed variance needs at least two seeds of each variant")
    xa, xb = a.pseudo_values(kind), b.pseudo_values(kind)
    estimate = float(a.seed_scores(kind).mean() - b.seed_scores(kind).mean())
    if paired_seeds(a, b):
        seeds_part, docs_part, interaction = _parts(xa - xb)
        return CrossedVariance(estimate, _seeds_floor(seeds_part, interaction), max(0.0, docs_part - interaction),
                               a.k - 1, True)
    seeds_a, _, interaction_a = _parts(xa)
    seeds_b, _, interaction_b = _parts(xb)
    seeds_a, seeds_b = _seeds_floor(seeds_a, interaction_a), _seeds_floor(seeds_b, interaction_b)
    columns = xa.mean(axis=0) - xb.mean(axis=0)  # per document: a's seed mean − b's
    docs_part = float(columns.var(ddof=1)) / a.n if a.n > 1 else 0.0
    # Welch-Satterthwaite over the two seed samples; both spreads 0 leaves the pooled df
    denominator = seeds_a**2 / (a.k - 1) + seeds_b**2 / (b.k - 1)
    df = (seeds_a + seeds_b) ** 2 / denominator if denominator > 0 else a.k + b.k - 2
    return CrossedVariance(estimate, seeds_a + seeds_b, max(0.0, docs_part - interaction_a - interaction_b), df, False)
