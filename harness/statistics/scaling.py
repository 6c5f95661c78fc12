"""Scaling-ladder fits: a loss power law and an accuracy logistic over compute, with bootstrap intervals.

A ladder trains every variant × seed at each size (a rung); one observation is (x, value, seed),
x being the compute C (or the parameters N). Two forms:

    fit_loss(x, loss, seeds)               L(C) = E + A·C^(−α)                          (Hoffmann et al. 2022)
    fit_accuracy(x, acc, seeds, chance=)   acc(C) = chance + (top − chance)·σ(k·(log C − m))

Both return a `ScalingFit`: the parameters with percentile intervals, and the bootstrap fits
themselves, which `crossover` pairs to put an interval on where two curves cross.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import optimize

from arches.errors import UserError
from harness.statistics.outcomes import BOOTSTRAP_SEED, CONFIDENCE

MIN_RUNGS = 3
LADDER_RESAMPLES = 1000  # bootstrap fits per curve; each is a small optimisation, unlike a document resample
HUBER_DELTA = 1e-3  # Hoffmann et al. 2022, approach 3
LBFGS_ITERATIONS = 20


@dataclass(frozen=True)
class Estimate:
    estimate: float
    low: float
    high: float


@dataclass(frozen=True)
class ScalingFit:
    """One curve fitted over a ladder, `parameters` in the caller's units (A is for unscaled C)."""

    form: str  # "power_law" or "logistic"
    equation: str
    parameters: dict  # name -> Estimate
    rungs: int
    seeds: tuple  # seeds per rung, smallest rung first
    bootstrap: str  # what was resampled, for the report's legend
    resamples: int  # bootstrap fits that converged to a finite curve
    confidence: float
    x_range: tuple  # (smallest x, largest x) observed
    layout: tuple  # per rung, its sorted seeds; two fits with equal layout and seed share their resamples
    bootstrap_seed: int
    scale: float  # geometric mean of x: the fit works in log(x / scale)
    theta: np.ndarray  # the point estimate, internal parameters
    replicates: np.ndarray  # (resamples, parameters) bootstrap fits, internal parameters
    chance: float = math.nan  # logistic only

    def predict(self, x) -> np.ndarray:
        """The fitted curve at x (the caller's units)."""
        return self._curve(self.theta[None, :], x)[0]

    def predict_replicates(self, x) -> np.ndarray:
        """(resamples, len(x)): every bootstrap fit's curve at x, for bands and crossover intervals."""
        return self._curve(self.replicates, x)

    def _curve(self, theta: np.ndarray, x) -> np.ndarray:
        lx = np.log(np.atleast_1d(np.asarray(x, dtype=float))) - math.log(self.scale)
        return FORMS[self.form](self.chance).value(theta, lx)


class _PowerLaw:
    """log L = logsumexp(a − α·log x̃, e) with x̃ = C / scale, so E = eᵉ and A = eᵃ·scale^α.

    Fitted in log space with a Huber loss (approach 3 of Hoffmann et al. 2022): the log puts the
    small and the large rungs on one footing and the Huber loss keeps one bad run from
    dragging the curve. The loss is divided by δ so that the optimiser's tolerances are not
    under its scale (a Huber loss at δ = 1e-3 is of order 1e-6).
    """

    names = ("E", "A", "alpha")

    def __init__(self, chance: float = math.nan, delta: float = HUBER_DELTA):  # chance: the logistic's signature
        self.delta = delta

    def value(self, theta, lx):  # natural units, (S, n)
        return np.exp(self.predict(theta, lx))

    def target(self, y):  # the scale the residuals live on
        return np.log(y)

    def predict(self, theta, lx):  # on the target scale
        return np.logaddexp(theta[:, 0:1] - theta[:, 2:3] * lx[None, :], theta[:, 1:2])

    def residuals(self, theta, lx, z):  # (S, n) and their Jacobian (S, n, 3)
        power = theta[:, 0:1] - theta[:, 2:3] * lx[None, :]
        log_pred = np.logaddexp(power, theta[:, 1:2])
        share = np.exp(power - log_pred)  # ∂ log L / ∂a; the E term takes the rest
        return log_pred - z, np.stack([share, 1 - share, -lx[None, :] * share], axis=2)

    def rho(self, r):
        small = np.abs(r) <= self.delta
        return np.where(small, 0.5 * r**2, self.delta * (np.abs(r) - 0.5 * self.delta)) / self.delta

    def psi(self, r):  # rho'
        return np.clip(r, -self.delta, self.delta) / self.delta

    def starts(self, lx, z):
        # a small grid around the data, as Hoffmann et al. start L-BFGS from a grid and keep the best
        lowest, middle = float(np.exp(z.min())), float(np.exp(np.mean(z)))
        return np.array([(math.log(max(excess * (middle - floor * lowest), 1e-12 * middle)),
                          math.log(floor * lowest), alpha)
                         for floor in (0.3, 0.9) for excess in (0.5, 2.0) for alpha in (0.15, 0.5, 1.0)])

    def bounds(self, lx, z):
        centre = float(np.mean(z))
        return np.array([(centre - 30, centre + 30), (centre - 30, centre + 30), (0.0, 5.0)])

    def natural(self, theta, scale):  # (S, 3) -> E, A, alpha for unscaled C
        a, e, alpha = theta[:, 0], theta[:, 1], theta[:, 2]
        return {"E": np.exp(e), "A": np.exp(a + alpha * math.log(scale)), "alpha": alpha}


class _Logistic:
    """acc = chance + (top − chance)·σ(k·(log x̃ − m)), x̃ = C / scale, midpoint = eᵐ·scale.

    Accuracy is bounded: it starts at the task's chance level (0.5 for minimal pairs, 1/choices
    for multiple choice) and cannot pass 1, so a power law in C, which is unbounded, fits neither
    end. A sigmoid in log compute is the link that observational scaling laws use for such
    metrics (Ruan et al. 2024) and the shape that "emergent" multiple-choice scores trace
    (Wei et al. 2022; Schaeffer et al. 2023); DataDecide (Magnusson et al. 2025) maps loss to
    accuracy with one too. Least squares on the accuracy scale, with top in [chance, 1] and k ≥ 0.
    """

    names = ("top", "k", "midpoint")

    def __init__(self, chance: float):
        self.chance = chance

    def value(self, theta, lx):
        return self.chance + (theta[:, 0:1] - self.chance) * _sigmoid(theta[:, 1:2] * (lx[None, :] - theta[:, 2:3]))

    def target(self, y):
        return np.asarray(y, dtype=float)

    predict = value

    def residuals(self, theta, lx, z):
        top, k, m = theta[:, 0:1], theta[:, 1:2], theta[:, 2:3]
        centred = lx[None, :] - m
        sig = _sigmoid(k * centred)
        slope = (top - self.chance) * sig * (1 - sig)
        return self.chance + (top - self.chance) * sig - z, np.stack([sig, slope * centred, -slope * k], axis=2)

    def rho(self, r):
        return r**2

    def psi(self, r):
        return 2 * r

    def starts(self, lx, z):
        span = float(lx.max() - lx.min())
        tops = sorted({min(1.0, max(self.chance + 1e-3, float(z.max()))), min(1.0, (float(z.max()) + 1) / 2)})
        return np.array([(top, k / span, m) for top in tops for k in (1.0, 4.0, 12.0)
                         for m in np.quantile(lx, (0.0, 0.5, 1.0))])

    def bounds(self, lx, z):
        low, high = float(lx.min()), float(lx.max())
        span = high - low
        return np.array([(self.chance, 1.0), (0.0, 100.0 / span), (low - 2 * span, high + 2 * span)])

    def natural(self, theta, scale):
        return {"top": theta[:, 0], "k": theta[:, 1], "midpoint": np.exp(theta[:, 2] + math.log(scale))}


def _sigmoid(t):
    return 0.5 * (1 + np.tanh(0.5 * t))  # tanh form: no overflow warning at large |t|


FORMS = {"power_law": _PowerLaw, "logistic": _Logistic}
EQUATIONS = {"power_law": "L(C) = E + A·C^(−α)",
             "logistic": "acc(C) = chance + (top − chance)·σ(k·(log C − m))"}


def _loss(form, theta, lx, z) -> np.ndarray:  # (S,): each problem's objective
    return form.rho(form.residuals(theta, lx, z)[0]).sum(1)


def _lbfgsb(form, lx: np.ndarray, z: np.ndarray, start: np.ndarray) -> np.ndarray:
    """L-BFGS-B, the optimiser of Hoffmann et al. (2022), at most `LBFGS_ITERATIONS` steps (see `_best_fit`)."""

    def fun(theta):
        r, jacobian = form.residuals(theta[None, :], lx, z[None, :])
        return float(form.rho(r).sum()), (form.psi(r)[0, :, None] * jacobian[0]).sum(0)

    return optimize.minimize(fun, start, jac=True, method="L-BFGS-B", bounds=form.bounds(lx, z),
                             options={"maxiter": LBFGS_ITERATIONS, "maxfun": 3 * LBFGS_ITERATIONS}).x


def _best_fit(form, lx: np.ndarray, z: np.ndarray) -> np.ndarray:
    """L-BFGS-B from each start of the grid, every result polished by `_refit`, the best kept.

    On a Huber loss at small δ, which is nearly |r| wherever the noise exceeds δ, L-BFGS-B
    crawls along the kinks for thousands of steps; it is stopped after `LBFGS_ITERATIONS`,
    by which it has found its basin, and the Gauss-Newton polish finishes each start there.
    """
    fits = np.array([_lbfgsb(form, lx, z, start) for start in form.starts(lx, z)])
    repeated = np.repeat(z[None, :], len(fits), axis=0)
    fits = _refit(form, lx, repeated, fits)
    return fits[int(np.nanargmin(_loss(form, fits, lx, repeated)))]


def _refit(form, lx: np.ndarray, z: np.ndarray, start: np.ndarray, iterations: int = 1000) -> np.ndarray:
    """Fit S data sets (z: (S, n)) at once, each from its start (S, p), by damped Gauss-Newton.

    The same objective as `_lbfgsb`, minimised by Levenberg–Marquardt with the Huber loss as
    iteratively reweighted least squares (weights ψ(r)/r, a majoriser of the loss), steps kept
    inside the bounds and kept only where they lower the loss. Vectorised over the problems,
    and each stops when its steps do, so a thousand bootstrap fits cost about one L-BFGS-B fit.
    """
    bounds = form.bounds(lx, z[0])
    theta = start.astype(float).copy()
    damping = np.full(len(theta), 1e-3)
    loss = _loss(form, theta, lx, z)
    active = np.arange(len(theta))
    eye = np.eye(theta.shape[1])
    for _ in range(iterations):
        if not len(active):
            break
        r, jacobian = form.residuals(theta[active], lx, z[active])
        tiny = np.where(np.abs(r) < 1e-300, 1e-300, r)
        weighted = jacobian * (form.psi(tiny) / tiny)[:, :, None]  # (S, n, p)
        hessian = weighted.transpose(0, 2, 1) @ jacobian
        gradient = (weighted * r[:, :, None]).sum(1)
        diagonal = np.einsum("spp->sp", hessian) + 1e-12
        system = hessian + (damping[active][:, None] * diagonal)[:, :, None] * eye
        step = np.linalg.solve(system, -gradient[:, :, None])[:, :, 0]
        trial = np.clip(theta[active] + step, bounds[:, 0], bounds[:, 1])
        trial_loss = _loss(form, trial, lx, z[active])
        better = trial_loss < loss[active]
        moved = np.abs(trial - theta[active]).max(1)
        theta[active[better]], loss[active[better]] = trial[better], trial_loss[better]
        damping[active] = np.where(better, damping[active] / 3, damping[active] * 4)
        done = (better & (moved < 1e-9)) | (~better & (moved < 1e-12)) | (damping[active] > 1e12)
        active = active[~done]
    return theta


@dataclass(frozen=True)
class _Ladder:
    """Observations sorted by (x, seed), grouped into rungs (one distinct x each)."""

    x: np.ndarray
    y: np.ndarray
    rungs: tuple  # per rung, the indices of its observations
    layout: tuple  # per rung, its seeds


def _ladder(x, y, seeds, what: str) -> _Ladder:
    x, y = np.asarray(x, dtype=float).ravel(), np.asarray(y, dtype=float).ravel()
    if seeds is None:  # each rung's observations are its seeds, in the order given
        seeds = np.zeros(len(x), dtype=int)
        for value in np.unique(x):
            seeds[x == value] = np.arange(int((x == value).sum()))
    seeds = np.asarray(seeds).ravel()
    if not len(x) == len(y) == len(seeds):
        raise UserError(f"a scaling fit needs one x, one {what} and one seed per observation, "
                        f"got {len(x)}, {len(y)} and {len(seeds)}")
    if not (np.all(np.isfinite(x)) and np.all(x > 0)):
        raise UserError("a scaling fit needs positive, finite compute (or parameter) values on the x axis")
    order = np.lexsort((seeds, x))
    x, y, seeds = x[order], y[order], seeds[order]
    values = np.unique(x)
    if len(values) < MIN_RUNGS:
        raise UserError(f"a scaling fit needs at least {MIN_RUNGS} rungs (distinct sizes), got {len(values)}; "
                        f"add sizes to the ladder so it has {MIN_RUNGS} or more")
    rungs = tuple(np.flatnonzero(x == value) for value in values)
    layout = tuple(tuple(seeds[index].tolist()) for index in rungs)
    if any(len(set(seeds_)) < len(seeds_) for seeds_ in layout):
        raise UserError("a scaling fit has one observation per rung and seed; a rung repeats a seed")
    return _Ladder(x, y, rungs, layout)


def _resample(ladder: _Ladder, z: np.ndarray, fitted: np.ndarray, parameters: int, resamples: int,
              seed: int) -> tuple[np.ndarray, str]:
    """(resamples, n) bootstrap data sets on the fitting scale, and what was resampled.

    Rungs are fixed by design; with two or more seeds in every rung the seeds are resampled
    with replacement within each rung (a hierarchical bootstrap). A resample of k values has
    (k − 1)/k of their variance, which at the 2–5 seeds of a ladder shrinks the intervals, so
    each seed's deviation from its rung mean is inflated by √(k/(k − 1)) first, as Davison &
    Hinkley (1997, ch. 6) inflate regression residuals. With one seed in some rung there is
    nothing to resample there, so the fit's residuals are resampled instead (inflated by
    √(n/(n − p))).
    """
    rng = np.random.default_rng(seed)
    counts = [len(index) for index in ladder.rungs]
    out = np.empty((resamples, len(z)))
    if min(counts) >= 2:
        for index in ladder.rungs:
            k = len(index)
            mean = z[index].mean()
            draws = rng.integers(0, k, size=(resamples, k))
            out[:, index] = mean + math.sqrt(k / (k - 1)) * (z[index][draws] - mean)
        return out, "seeds resampled within each rung (hierarchical bootstrap; rungs fixed)"
    n = len(z)
    residual = z - fitted
    residual = (residual - residual.mean()) * (math.sqrt(n / (n - parameters)) if n > parameters else 1.0)
    out[:] = fitted + residual[rng.integers(0, n, size=(resamples, n))]
    note = "one seed in some rung: the fit's residuals resampled (seed variance not measured"
    if n <= parameters:
        note += f"; {n} observations for {parameters} parameters leave no residual, so the intervals are points"
    return out, note + ")"


def _fit(form_name: str, form, ladder: _Ladder, confidence: float, resamples: int, seed: int,
         chance: float = math.nan) -> ScalingFit:
    if not 0 < confidence < 1:
        raise UserError(f"confidence must lie in (0, 1), got {confidence}")
    if resamples < 1:
        raise UserError(f"resamples must be at least 1, got {resamples}")
    scale = float(np.exp(np.mean(np.log(ladder.x))))
    lx = np.log(ladder.x) - math.log(scale)
    z = form.target(ladder.y)
    theta = _best_fit(form, lx, z)
    data, method = _resample(ladder, z, form.predict(theta[None, :], lx)[0], len(theta), resamples, seed)
    if form_name == "logistic":
        data = np.clip(data, 0.0, 1.0)
    replicates = _refit(form, lx, data, np.repeat(theta[None, :], resamples, axis=0))
    replicates = replicates[np.all(np.isfinite(form.value(replicates, lx)), axis=1)]
    point, boot = form.natural(theta[None, :], scale), form.natural(replicates, scale)
    tail = 100 * (1 - confidence) / 2
    parameters = {name: Estimate(float(point[name][0]),
                                 *(float(v) for v in np.percentile(boot[name], (tail, 100 - tail))))
                  for name in form.names}
    if form_name == "logistic":
        parameters = {"chance": Estimate(chance, chance, chance), **parameters}
    return ScalingFit(form_name, EQUATIONS[form_name], parameters, len(ladder.rungs),
                      tuple(len(index) for index in ladder.rungs),
                      f"percentile bootstrap {confidence:.0%}, {method}", len(replicates), confidence,
                      (float(ladder.x.min()), float(ladder.x.max())), ladder.layout, seed, scale, theta, replicates,
                      chance)


def fit_loss(x: Sequence[float], loss: Sequence[float], seeds: Sequence[int] | None = None, *,
             delta: float = HUBER_DELTA, confidence: float = CONFIDENCE, resamples: int = LADDER_RESAMPLES,
             seed: int = BOOTSTRAP_SEED) -> ScalingFit:
    """L(C) = E + A·C^(−α) over a ladder: one (x, loss, seed) per run, x the compute C or parameters N.

    Hoffmann et al. (2022) approach 3: minimise the Huber loss (δ) of log L_pred − log L over
    (log A, log E, α), log L_pred a log-sum-exp, by L-BFGS-B from a small grid of starts,
    keeping the best. x is scaled to its geometric mean inside the fit; A is reported for
    unscaled x. Loss or bits/byte: any positive metric that falls towards a floor E.
    """
    ladder = _ladder(x, loss, seeds, "loss")
    if not (np.all(np.isfinite(ladder.y)) and np.all(ladder.y > 0)):
        raise UserError("a power-law fit needs positive, finite losses (a loss or bits/byte)")
    return _fit("power_law", _PowerLaw(delta=delta), ladder, confidence, resamples, seed)


def fit_accuracy(x: Sequence[float], accuracy: Sequence[float], seeds: Sequence[int] | None = None, *,
                 chance: float, confidence: float = CONFIDENCE, resamples: int = LADDER_RESAMPLES,
                 seed: int = BOOTSTRAP_SEED) -> ScalingFit:
    """acc(C) = chance + (top − chance)·σ(k·(log C − m)) over a ladder, top ≤ 1 (see `_Logistic`
    for why a logistic); chance is the task's floor (0.5 for minimal pairs, 1/choices otherwise)."""
    if not 0 <= chance < 1:
        raise UserError(f"chance must lie in [0, 1), got {chance}")
    ladder = _ladder(x, accuracy, seeds, "accuracy")
    if not (np.all(np.isfinite(ladder.y)) and np.all((ladder.y >= 0) & (ladder.y <= 1))):
        raise UserError("an accuracy fit needs accuracies in [0, 1]")
    return _fit("logistic", _Logistic(chance), ladder, confidence, resamples, seed, chance)
