"""harness.statistics scaling fits on synthetic ladders with known curves: recovery, interval coverage,
crossovers and rank agreement. No training and no files; every draw seeded."""

from __future__ import annotations

import contextlib
import math

import numpy as np
import pytest

from arches.errors import UserError
from harness import statistics as st

try:  # one BLAS thread: OpenBLAS threads on 3-parameter fits cost ~100× on a busy machine, give nothing
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
    threadpool_limits = None


@pytest.fixture(autouse=True)
def one_blas_thread():
    with threadpool_limits(1) if threadpool_limits else contextlib.nullcontext():
        yield


def power_law(x, E, A, alpha):
    return E + A * np.asarray(x, dtype=float) ** -alpha


def ladder(low, high, rungs, seeds):
    x = np.repeat(np.geomspace(low, high, rungs), seeds)
    return x, np.tile(np.arange(seeds), rungs)


# (E, A, α, x range): compute in FLOPs, and parameters N
CURVES = [(1.7, 400.0, 0.3, (1e12, 1e16)), (2.5, 60.0, 0.5, (1e6, 1e9)), (0.9, 2e3, 0.2, (1e15, 1e19))]


@pytest.mark.parametrize("E, A, alpha, span", CURVES)
def test_power_law_recovers_known_curve(E, A, alpha, span):
    """Noise of sd 5e-4 on log L, 6 rungs × 4 seeds: E within 0.5 %, α within 0.03, A within a
    factor 2 (A and α trade off along the curve) and the curve itself within 0.1 % at every rung."""
    rng = np.random.default_rng(7)
    x, seeds = ladder(*span, 6, 4)
    loss = power_law(x, E, A, alpha) * np.exp(rng.normal(0, 5e-4, len(x)))
    fit = st.fit_loss(x, loss, seeds, resamples=200)
    got = fit.parameters
    assert abs(got["E"].estimate / E - 1) < 0.005
    assert abs(got["alpha"].estimate - alpha) < 0.03
    assert 0.5 < got["A"].estimate / A < 2
    rungs = np.unique(x)
    assert np.max(np.abs(fit.predict(rungs) / power_law(rungs, E, A, alpha) - 1)) < 1e-3
    assert all(p.low <= p.estimate <= p.high for p in got.values())
    assert (fit.rungs, fit.seeds, fit.resamples) == (6, (4,) * 6, 200)
    assert "seeds resampled within each rung" in fit.bootstrap


def test_power_law_exact_without_noise_and_residual_bootstrap_at_one_seed():
    x, _ = ladder(1e12, 1e16, 5, 1)
    fit = st.fit_loss(x, power_law(x, 1.7, 400.0, 0.3), resamples=50)
    assert fit.parameters["E"].estimate == pytest.approx(1.7, rel=1e-7)
    assert fit.parameters["A"].estimate == pytest.approx(400.0, rel=1e-5)
    assert fit.parameters["alpha"].estimate == pytest.approx(0.3, rel=1e-6)
    assert "residuals resampled" in fit.bootstrap and "seed variance not measured" in fit.bootstrap


def test_power_law_intervals_cover_truth_at_nominal_rate():
    """200 seeded ladders (8 rungs × 4 seeds, sd 5e-4 on log L), B = 200: each parameter's 95 %
    interval covers the truth within three Monte-Carlo standard errors of 0.95 (measured: 0.925–0.935)."""
    E, A, alpha = 1.7, 400.0, 0.3
    rng = np.random.default_rng(0)
    x, seeds = ladder(1e12, 1e16, 8, 4)
    trials, covered = 200, {"E": 0, "A": 0, "alpha": 0}
    for trial in range(trials):
        loss = power_law(x, E, A, alpha) * np.exp(rng.normal(0, 5e-4, len(x)))
        fit = st.fit_loss(x, loss, seeds, resamples=200, seed=trial)
        for name, truth in (("E", E), ("A", A), ("alpha", alpha)):
            covered[name] += fit.parameters[name].low <= truth <= fit.parameters[name].high
    bound = 3 * math.sqrt(0.95 * 0.05 / trials)
    for name, hits in covered.items():
        assert abs(hits / trials - 0.95) <= bound, (name, hits / trials)


def logistic(x, chance, top, k, midpoint):
    return chance + (top - chance) / (1 + np.exp(-k * (np.log(x) - math.log(midpoint))))


@pytest.mark.parametrize("chance, top, k, midpoint", [(0.25, 0.9, 1.5, 1e14), (0.5, 0.8, 0.8, 3e13)])
def test_logistic_recovers_known_curve(chance, top, k, midpoint):
    rng = np.random.default_rng(3)
    x, seeds = ladder(1e12, 1e16, 7, 3)
    acc = np.clip(logistic(x, chance, top, k, midpoint) + rng.normal(0, 0.005, len(x)), 0, 1)
    fit = st.fit_accuracy(x, acc, seeds, chance=chance, resamples=200)
    got = fit.parameters
    assert got["chance"].estimate == chance
    assert abs(got["top"].estimate - top) < 0.02
    assert abs(got["k"].estimate / k - 1) < 0.15
    assert abs(math.log(got["midpoint"].estimate / midpoint)) < 0.15
    for name, truth in (("top", top), ("k", k), ("midpoint", midpoint)):
        assert got[name].low <= truth <= got[name].high, name
    assert got["top"].high <= 1.0


def test_fewer_than_three_rungs_is_one_line():
    x, seeds = ladder(1e12, 1e14, 2, 3)
    for fit in (lambda: st.fit_loss(x, power_law(x, 1.7, 400.0, 0.3), seeds),
                lambda: st.fit_accuracy(x, np.full(len(x), 0.6), seeds, chance=0.5)):
        with pytest.raises(UserError) as error:
            fit()
        message = str(error.value)
        assert "\n" not in message and "at least 3 rungs" in message and "got 2" in message


def meeting(a, E, alpha, at):
    """The power law with floor E and exponent alpha that meets curve a at x = at."""
    return E, float((power_law(at, *a) - E) * at**alpha), alpha


def noisy_fit(params, x, seeds, rng):
    loss = power_law(x, *params) * np.exp(rng.normal(0, 1e-3, len(x)))
    return st.fit_loss(x, loss, seeds, resamples=300)


def test_crossover_inside_range_found_with_interval():
    """A steeper curve that starts higher overtakes a flatter one at 1e14, inside the observed range."""
    rng = np.random.default_rng(11)
    x, seeds = ladder(1e12, 1e16, 6, 4)
    steep = (1.6, 2000.0, 0.3)
    flat = meeting(steep, 1.7, 0.15, at=1e14)
    result = st.crossover(noisy_fit(steep, x, seeds, rng), noisy_fit(flat, x, seeds, rng))
    assert result.status == "within range" and result.paired and result.share == 1.0
    assert abs(math.log10(result.estimate / 1e14)) < 0.1  # within a tenth of a decade
    assert result.low <= 1e14 <= result.high
    assert result.within == (1e11, 1e17)


def test_crossover_not_within_range():
    rng = np.random.default_rng(12)
    x, seeds = ladder(1e12, 1e16, 6, 4)
    result = st.crossover(noisy_fit((1.7, 400.0, 0.3), x, seeds, rng), noisy_fit((2.0, 400.0, 0.3), x, seeds, rng))
    assert result.status == st.NOT_WITHIN_RANGE and result.estimate is None
    assert math.isnan(result.low) and math.isnan(result.high)
    assert "do not cross" in result.note and result.share == 0.0


def test_crossover_extrapolated_near_the_edge_is_open():
    """Curves fitted on 1e12–1e14 that meet at 3e15, searched up to 4e15: some bootstrap pairs
    cross beyond the edge, so the interval is open above and the share crossing is below 1."""
    rng = np.random.default_rng(13)
    x, seeds = ladder(1e12, 1e14, 5, 3)
    steep = (1.6, 2000.0, 0.3)
    flat = meeting(steep, 1.5, 0.2, at=3e15)
    result = st.crossover(noisy_fit(steep, x, seeds, rng), noisy_fit(flat, x, seeds, rng), within=(1e11, 4e15))
    assert result.estimate is not None and result.status == "open above"
    assert math.isinf(result.high) and result.low < 3e15 and 0.5 < result.share < 1
    assert "bootstrap pairs (paired by seed) cross within range" in result.note


def test_rank_agreement_identical_and_reversed():
    order = {"causal": 1.0, "prefix": 0.8, "t5": 0.6, "glm": 0.4}
    same = st.rank_agreement({"s": order, "m": order, "l": order})
    assert same.taus == (1.0, 1.0, 1.0) and same.decided_from == "s"
    assert same.orders[0] == ("causal", "prefix", "t5", "glm")
    reversed_ = {v: -s for v, s in order.items()}
    flipped = st.rank_agreement({"s": reversed_, "m": order, "l": order})
    assert flipped.taus[0] == pytest.approx(-1.0) and flipped.decided_from == "m"
    lower = st.rank_agreement({"s": order, "l": reversed_}, higher_is_better=False)
    assert lower.orders[-1] == ("causal", "prefix", "t5", "glm") and lower.taus[0] == pytest.approx(-1.0)
    with pytest.raises(UserError):
        st.rank_agreement({"l": order})
