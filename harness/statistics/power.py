"""The minimum detectable difference: what a comparison at this n and number of seeds could have seen.

For a two-sided test at level α with power 1 − β, a true difference δ is detected when
δ ≥ (q_{1−α/2} + q_{1−β}) · SE, the usual normal-approximation sample-size formula
(e.g. Chow, Shao & Wang, "Sample Size Calculations in Clinical Research", §3.1), q the
normal quantile, or Student's t with the test's degrees of freedom where the test is a
t-test (a common approximation to the non-central t power of a t-test).
At α = 0.05 and 80% power the factor is 1.960 + 0.842 = 2.80 (normal) and 4.30 + 1.06 = 5.36
at 2 df (three seeds). A "no significant difference" whose interval is narrower than the
effect in question means "none that large"; one whose MDE exceeds it means "could not have seen it".
"""

from __future__ import annotations

import math

from harness.statistics.crossed import t_quantile
from harness.statistics.outcomes import ALPHA, POWER


def minimum_detectable_difference(se: float, alpha: float = ALPHA, power: float = POWER,
                                  df: float = math.inf) -> float:
    """(q_{1−α/2} + q_{power}) · se, q from t with `df` degrees of freedom (normal when df is inf)."""
    if not math.isfinite(se):
        return math.nan
    return (t_quantile(1 - alpha / 2, df) + t_quantile(power, df)) * se


def accuracy_difference_se(n: int, rate: float, discordance: float | None = None) -> float:
    """SE of a paired difference of two accuracies on the same n examples, at one seed.

    With the discordance known (the share of examples that exactly one variant gets right,
    p01 + p10) it is McNemar's sqrt(discordance / n) under no difference; without it, the
    binomial variance at the observed rate for two independent samples, sqrt(2 r (1 − r) / n),
    an upper bound whenever the variants tend to get the same examples right.
    """
    if n <= 0:
        raise ValueError("n must be positive")
    if discordance is not None:
        return math.sqrt(discordance / n)
    return math.sqrt(2 * rate * (1 - rate) / n)


def seeds_difference_se(seed_sd: float, seeds: int) -> float:
    """SE of a difference of two variants' means over k seeds each, from one variant's seed sd:
    sd · sqrt(2 / k) (independent training runs)."""
    if seeds < 1:
        raise ValueError("seeds must be at least 1")
    return seed_sd * math.sqrt(2 / seeds)


def accuracy_mde(n: int, seeds: int, rate: float, discordance: float | None = None, seed_sd: float | None = None,
                 alpha: float = ALPHA, power: float = POWER) -> float:
    """The MDE of an accuracy difference at n examples and k seeds per variant.

    SE² = SE_examples² + SE_seeds², SE_examples from `accuracy_difference_se` at one seed (an
    upper bound at k seeds, which average some example noise away), SE_seeds from the seed sd;
    the t quantiles have k − 1 df once seeds are counted, as the crossed test does.
    """
    se = accuracy_difference_se(n, rate, discordance)
    df = math.inf
    if seed_sd is not None and seeds >= 2:
        se = math.sqrt(se**2 + seeds_difference_se(seed_sd, seeds) ** 2)
        df = seeds - 1
    return minimum_detectable_difference(se, alpha, power, df)
