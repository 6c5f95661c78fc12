"""Where two fitted scaling curves cross, and how early a ladder's ordering of the variants is decided.

    crossover(a, b, within=None)                 -> Crossover(estimate, low, high, share, status, note)
    rank_agreement({rung: {variant: score}})     -> RankAgreement(taus, orders, decided_from)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

from arches.errors import UserError
from harness.statistics.scaling import ScalingFit

EXTRAPOLATION = 10.0  # the default range: a decade below the smallest and above the largest observed x
NOT_WITHIN_RANGE = "not within range"
GRID = 512  # log-spaced points on which sign changes are looked for, then refined by Brent's method


@dataclass(frozen=True)
class Crossover:
    """Where curve a meets curve b. estimate is None when the fitted curves do not cross in range.

    The interval is the percentile interval of the bootstrap fits' crossings, a bootstrap fit
    that does not cross in range counting as a crossing beyond the edge its curves point to, so
    a bound at ±inf says the interval is open on that side ("open above/below").
    """

    estimate: float | None
    low: float
    high: float
    share: float  # share of bootstrap pairs that cross within range
    status: str  # "within range", "open above", "open below", "open both sides" or NOT_WITHIN_RANGE
    within: tuple  # (lowest, highest) x searched
    paired: bool  # the two fits resampled the same seeds (same layout and bootstrap seed)
    note: str


def _roots(difference: np.ndarray, grid: np.ndarray, refine) -> list[float]:
    """The x where a difference sampled on a log grid changes sign, each refined on its bracket."""
    sign = np.sign(difference)
    roots = [float(grid[i]) for i in np.flatnonzero(sign == 0)]
    for i in np.flatnonzero(sign[:-1] * sign[1:] < 0):
        roots.append(math.exp(optimize.brentq(refine, math.log(grid[i]), math.log(grid[i + 1]), xtol=1e-12)))
    return sorted(roots)


def crossover(a: ScalingFit, b: ScalingFit, within: tuple | None = None, confidence: float | None = None) -> Crossover:
    """The x at which fits a and b predict the same value, searched within `within` (default: a
    decade beyond the observed x of both), with a percentile interval from their bootstrap fits
    taken pair by pair. Curves of these forms can meet twice; the crossing nearest the middle of
    the observed range is reported. No crossing of the fitted curves: NOT_WITHIN_RANGE, no estimate.
    """
    if a.form != b.form:
        raise UserError(f"a crossover compares two fits of one form, got {a.form} and {b.form}")
    confidence = a.confidence if confidence is None else confidence
    if within is None:
        within = (min(a.x_range[0], b.x_range[0]) / EXTRAPOLATION, max(a.x_range[1], b.x_range[1]) * EXTRAPOLATION)
    low_x, high_x = float(within[0]), float(within[1])
    if not 0 < low_x < high_x:
        raise UserError(f"a crossover range needs 0 < low < high, got {within}")
    grid = np.geomspace(low_x, high_x, GRID)
    middle = math.sqrt(max(a.x_range[0], b.x_range[0]) * min(a.x_range[1], b.x_range[1]))
    point = a.predict(grid) - b.predict(grid)
    roots = _roots(point, grid, lambda t: float(a.predict(math.exp(t))[0] - b.predict(math.exp(t))[0]))
    paired = a.layout == b.layout and a.bootstrap_seed == b.bootstrap_seed and "seeds" in a.bootstrap
    pairs = min(len(a.replicates), len(b.replicates))
    boot = a.predict_replicates(grid)[:pairs] - b.predict_replicates(grid)[:pairs]
    if not roots:
        crossing = float(np.mean(np.any(np.sign(boot[:, :-1]) * np.sign(boot[:, 1:]) <= 0, axis=1)))
        return Crossover(None, math.nan, math.nan, float(crossing), NOT_WITHIN_RANGE, (low_x, high_x), paired,
                         f"the fitted curves do not cross between {low_x:.3g} and {high_x:.3g}; "
                         f"{crossing:.0%} of the bootstrap pairs do")
    estimate = min(roots, key=lambda root: abs(math.log(root / middle)))
    start_sign = np.sign(point[0]) if estimate > grid[0] else -np.sign(point[-1])
    logs = np.array([_replicate_crossing(row, grid, estimate, start_sign) for row in boot])
    share = float(np.mean(np.isfinite(logs)))
    tail = 100 * (1 - confidence) / 2
    # a finite stand-in for ±inf, so that a percentile between a crossing and no crossing lies beyond the edge
    bounds = np.percentile(np.clip(logs, -1e6, 1e6), (tail, 100 - tail))
    open_below, open_above = bool(bounds[0] < math.log(low_x)), bool(bounds[1] > math.log(high_x))
    low = 0.0 if open_below else float(np.exp(bounds[0]))
    high = math.inf if open_above else float(np.exp(bounds[1]))
    status = {(False, False): "within range", (True, False): "open below", (False, True): "open above",
              (True, True): "open both sides"}[(open_below, open_above)]
    note = (f"{int(np.isfinite(logs).sum())} of {pairs} bootstrap pairs{' (paired by seed)' if paired else ''} "
            "cross within range")
    if len(roots) > 1:
        note += f"; the fitted curves meet {len(roots)} times ({', '.join(f'{r:.3g}' for r in roots)})"
    return Crossover(estimate, low, high, share, status, (low_x, high_x), paired, note)


def _replicate_crossing(row: np.ndarray, grid: np.ndarray, estimate: float, start_sign: float) -> float:
    """log of one bootstrap pair's crossing nearest the estimate; ±inf when it does not cross in
    range: +inf when it keeps the sign the fitted difference starts with (it would cross later)."""
    sign = np.sign(row)
    changes = np.flatnonzero(sign[:-1] * sign[1:] <= 0)
    if not len(changes):
        return math.inf if sign[0] == start_sign else -math.inf
    # linear interpolation in log x on the bracket: the grid is fine enough for an interval's percentiles
    lx = np.log(grid)
    candidates = [lx[i] + (lx[i + 1] - lx[i]) * row[i] / (row[i] - row[i + 1]) if row[i] != row[i + 1] else lx[i]
                  for i in changes]
    return float(min(candidates, key=lambda v: abs(v - math.log(estimate))))


@dataclass(frozen=True)
class RankAgreement:
    """Kendall's τ between each rung's ordering of the variants and the largest rung's (DataDecide)."""

    rungs: tuple  # smallest first
    taus: tuple  # τ per rung (1.0 at the largest)
    p_values: tuple  # scipy's test of τ = 0 per rung (nan where it cannot be computed)
    orders: tuple  # per rung, the variants best first
    decided_from: object  # the smallest rung from which every larger rung orders as the largest does


def rank_agreement(scores: Mapping, higher_is_better: bool = True) -> RankAgreement:
    """{rung: {variant: score}}, rungs in ladder order (smallest first), a score per variant and
    rung (e.g. its mean over seeds). Variants missing from a rung are left out of its τ."""
    rungs = list(scores)
    if len(rungs) < 2:
        raise UserError(f"rank agreement compares rungs with the largest; got {len(rungs)} rung(s), give 2 or more")
    largest = scores[rungs[-1]]
    taus, p_values, orders = [], [], []
    for rung in rungs:
        common = [v for v in largest if v in scores[rung]]
        if len(common) < 2:
            raise UserError(f"rung {rung!r} shares {len(common)} variant(s) with the largest rung; "
                            "rank agreement needs 2 or more")
        tau, p = stats.kendalltau([scores[rung][v] for v in common], [largest[v] for v in common])
        taus.append(float(tau))
        p_values.append(float(p))
        orders.append(tuple(sorted(scores[rung], key=lambda v: -scores[rung][v] if higher_is_better
                                   else scores[rung][v])))
    decided = len(rungs) - 1
    while decided > 0 and _same_order(orders[decided - 1], orders[-1]):
        decided -= 1
    return RankAgreement(tuple(rungs), tuple(taus), tuple(p_values), tuple(orders), rungs[decided])


def _same_order(order: tuple, reference: tuple) -> bool:
    return [v for v in order if v in reference] == [v for v in reference if v in order]
