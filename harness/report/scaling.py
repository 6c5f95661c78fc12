"""The Scaling section of a ladder's report: each variant's fitted curve per metric, where the
curves cross, how far down the ladder the ordering is decided, and what that does and does not show.

The statistics are harness.statistics (fit_loss, fit_accuracy, crossover, rank_agreement); this
module chooses what to fit, lays the results out as tables and writes the reading. The x axis
is the training compute each run spent (its train_flops), so variants of different FLOPs per
token are compared at equal compute, not at equal size.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from arches.errors import UserError, first_line
from harness import statistics as st
from harness.report.formatting import MISSING, p_text, si, sig3
from harness.report.scaling_points import METRICS, Rung, ScalingMetric

# Measured on synthetic ladders (a known L = E + A·C^−α, noise sd 5e-4 on log L, 200 ladders
# each, B = 200, the CPU ladder's 3 seeds per rung): the share of 95% intervals covering the
# truth. The bootstrap holds the rungs fixed, so with few rungs its intervals are too narrow.
COVERAGE = ((3, "0.88-0.89 for E, A and α, 0.78 for the curve at the largest rung"),
            (5, "0.88-0.90, 0.87 for the curve"),
            (8, "0.93 (4 seeds per rung)"))


FLAT = 0.01  # a logistic whose ceiling is within this of chance never left chance
TIE = 1e-12
NO_FLOOR = "without a floor in these rungs (E → 0)"
FLAT_AT_CHANCE = "flat at chance"


@dataclass(frozen=True)
class MetricFits:
    metric: ScalingMetric
    points: pd.DataFrame  # this metric's rows of scaling_points
    fits: dict  # variant -> ScalingFit
    refused: dict  # variant -> the fit's one-line refusal
    flags: dict  # variant -> what the fit cannot tell (a curve flat at chance, a step between rungs, no floor)
    crossovers: dict  # (variant, variant) -> Crossover, for the pairs whose curves are identified
    withheld: dict  # (variant, variant) -> why no crossing is estimated
    agreement: Any  # RankAgreement or None
    agreement_note: str | None


def fit_metrics(points: pd.DataFrame, variants: list[str], rungs: list[Rung]) -> list[MetricFits]:
    """Every metric the ladder has, fitted per variant; a variant short of rungs is refused in one line."""
    sizes = {rung.index: rung.size for rung in rungs}
    out = []
    for metric in METRICS:
        mine = points[points["metric"] == metric.key]
        if mine.empty:
            continue
        fits, refused, flags = {}, {}, {}
        for variant in [v for v in variants if v in set(mine["variant"])]:
            rows = _rung_compute(mine[mine["variant"] == variant])
            try:
                fits[variant] = _fit(metric, rows)
            except UserError as error:
                refused[variant] = first_line(error)
                continue
            flag = fit_flag(fits[variant], rows)
            if flag:
                flags[variant] = flag
        pairs, withheld = {}, {}
        for a, b in itertools.combinations(fits, 2):
            # a power law without a floor still has its shape, so its crossings stand
            unidentified = [f"{v}'s curve is {flags[v]}" for v in (a, b) if flags.get(v) not in (None, NO_FLOOR)]
            if unidentified:
                withheld[(a, b)] = "; ".join(unidentified)
            else:
                pairs[(a, b)] = st.crossover(fits[a], fits[b])
        agreement, note = _agreement(mine, variants, sizes, metric)
        out.append(MetricFits(metric, mine, fits, refused, flags, pairs, withheld, agreement, note))
    return out


def fit_flag(fit, rows: pd.DataFrame) -> str | None:
    """What a fitted curve cannot tell, or None. An accuracy that never left chance crosses any
    other curve at chance everywhere; a logistic that rises from one rung to the next (its
    rise, 4/k in log C from 12% to 88%, shorter than the gap between those rungs) could rise
    anywhere in that gap; a power law whose floor E falls to 0 shows no floor here."""
    if fit.form == "logistic":
        if fit.parameters["top"].estimate - fit.chance < FLAT:
            return FLAT_AT_CHANCE
        gaps = np.diff(np.log(np.unique(rows["x"])))
        k = fit.parameters["k"].estimate
        if k > 0 and 4 / k < gaps.min():
            return "a step between two rungs (where it rises, the rungs cannot tell)"
        return None
    if fit.parameters["E"].estimate < 1e-3 * float(rows["value"].min()):
        return NO_FLOOR
    return None


def _rung_compute(rows: pd.DataFrame) -> pd.DataFrame:
    """One x per rung: the median spent FLOPs of its seeds (equal but for a run stopped short),
    so that the fit groups the seeds of a rung as one rung."""
    rows = rows.copy()
    rows["x"] = rows.groupby("rung")["flops"].transform("median")
    return rows


def _fit(metric: ScalingMetric, rows: pd.DataFrame):
    if metric.form == "power_law":
        return st.fit_loss(rows["x"], rows["value"], rows["seed"])
    chance = rows["chance"].dropna()
    if chance.empty:
        raise UserError(f"{metric.task} records no chance level, which the accuracy fit needs as its floor")
    return st.fit_accuracy(rows["x"], rows["value"], rows["seed"], chance=float(chance.iloc[0]))


def rung_means(points: pd.DataFrame, variants: list[str]) -> dict[int, dict[str, float]]:
    """{rung: {variant: mean over its seeds}}, rungs smallest first, variants in report order."""
    means = points.groupby(["rung", "variant"])["value"].mean()
    return {int(rung): {v: float(means[(rung, v)]) for v in variants if (rung, v) in means.index}
            for rung in sorted(points["rung"].unique())}


def _agreement(points: pd.DataFrame, variants: list[str], sizes: dict, metric: ScalingMetric):
    means = {sizes[rung]: scores for rung, scores in rung_means(points, variants).items() if len(scores) >= 2}
    try:
        return st.rank_agreement(means, metric.higher_is_better), None
    except UserError as error:
        return None, first_line(error)


def fits_table(results: list[MetricFits]) -> pd.DataFrame:
    """One row per metric x variant: the form, each parameter with its interval, the data behind it."""
    rows = []
    for result in results:
        for variant, fit in result.fits.items():
            params = "; ".join(f"{name} {_estimate(e)}" for name, e in fit.parameters.items() if name != "chance")
            rows.append({"metric": result.metric.label, "variant": variant, "form": fit.equation,
                         "parameters (95% interval)": params, "rungs": fit.rungs,
                         "seeds per rung": ", ".join(map(str, fit.seeds)), "resamples": fit.resamples,
                         "note": result.flags.get(variant, "")})
        for variant, why in result.refused.items():
            rows.append({"metric": result.metric.label, "variant": variant, "form": "not fitted",
                         "parameters (95% interval)": why, "rungs": result.points.loc[
                             result.points["variant"] == variant, "rung"].nunique(),
                         "seeds per rung": MISSING, "resamples": 0, "note": "refused"})
    return pd.DataFrame(rows)


def fits_csv(results: list[MetricFits]) -> pd.DataFrame:
    """scaling_fits.csv: metric, variant, parameter, estimate, low, high and how it was fitted."""
    rows = [{"metric": r.metric.key, "variant": variant, "form": fit.form, "parameter": name,
             "estimate": e.estimate, "low": e.low, "high": e.high, "rungs": fit.rungs,
             "seeds": ",".join(map(str, fit.seeds)), "resamples": fit.resamples, "bootstrap": fit.bootstrap}
            for r in results for variant, fit in r.fits.items() for name, e in fit.parameters.items()]
    return pd.DataFrame(rows, columns=["metric", "variant", "form", "parameter", "estimate", "low", "high", "rungs",
                                       "seeds", "resamples", "bootstrap"])


def _estimate(estimate) -> str:
    if estimate.low == estimate.high == estimate.estimate:
        return sig3(estimate.estimate)
    return f"{sig3(estimate.estimate)} [{sig3(estimate.low)}, {sig3(estimate.high)}]"


def crossover_table(results: list[MetricFits]) -> pd.DataFrame:
    rows = []
    for result in results:
        for (a, b), cross in result.crossovers.items():
            if cross.estimate is None:
                at, interval = "not within range", MISSING
            else:
                at = f"{si(cross.estimate)} FLOPs"
                interval = f"[{si(cross.low) if cross.low > 0 else 'open'}, " \
                           f"{si(cross.high) if math.isfinite(cross.high) else 'open'}]"
            rows.append({"metric": result.metric.label, "pair": f"{a} – {b}", "crossing": at,
                         "95% interval": interval, "status": cross.status,
                         "searched (FLOPs)": f"{si(cross.within[0])} – {si(cross.within[1])}",
                         "bootstrap pairs crossing": f"{cross.share:.0%}"})
        for (a, b), why in result.withheld.items():
            rows.append({"metric": result.metric.label, "pair": f"{a} – {b}", "crossing": "not identified",
                         "95% interval": MISSING, "status": why, "searched (FLOPs)": MISSING,
                         "bootstrap pairs crossing": MISSING})
    return pd.DataFrame(rows)


def crossovers_csv(results: list[MetricFits]) -> pd.DataFrame:
    return pd.DataFrame([{"metric": r.metric.key, "a": a, "b": b, "estimate": c.estimate, "low": c.low,
                          "high": c.high, "status": c.status, "within_low": c.within[0],
                          "within_high": c.within[1], "share": c.share, "paired": c.paired, "note": c.note}
                         for r in results for (a, b), c in r.crossovers.items()],
                        columns=["metric", "a", "b", "estimate", "low", "high", "status", "within_low", "within_high",
                                 "share", "paired", "note"])


def agreement_table(results: list[MetricFits]) -> pd.DataFrame:
    rows = []
    for result in results:
        agreement = result.agreement
        if agreement is None:
            continue
        means = _means_by_size(result)
        for rung, tau, p in zip(agreement.rungs, agreement.taus, agreement.p_values):
            rows.append({"metric": result.metric.label, "rung": rung,
                         "order (best first)": order_text(means[rung], result.metric.higher_is_better),
                         "Kendall τ vs the largest": sig3(tau) if math.isfinite(tau) else MISSING,
                         "p (τ = 0)": p_text(p) if math.isfinite(p) else MISSING})
    return pd.DataFrame(rows)


def _means_by_size(result: MetricFits) -> dict[str, dict[str, float]]:
    sizes = dict(zip(result.points["rung"], result.points["size"]))
    return {sizes[rung]: scores
            for rung, scores in rung_means(result.points, list(dict.fromkeys(result.points["variant"]))).items()}


def order_text(scores: dict[str, float], higher_is_better: bool) -> str:
    """'gpt > glm = t5': best first, equal means (a tie, e.g. every variant at chance) joined by '='."""
    ranked = sorted(scores, key=lambda v: -scores[v] if higher_is_better else scores[v])
    text = ranked[0]
    for before, variant in itertools.pairwise(ranked):
        text += (" = " if abs(scores[before] - scores[variant]) <= TIE else " > ") + variant
    return text


def agreement_csv(results: list[MetricFits]) -> pd.DataFrame:
    return pd.DataFrame([{"metric": r.metric.key, "rung": rung, "tau": tau, "p": p, "order": ">".join(order),
                          "decided_from": r.agreement.decided_from}
                         for r in results if r.agreement is not None
                         for rung, tau, p, order in zip(r.agreement.rungs, r.agreement.taus, r.agreement.p_values,
                                                        r.agreement.orders)],
                        columns=["metric", "rung", "tau", "p", "order", "decided_from"])


def reading(results: list[MetricFits], rungs: list[Rung]) -> list[tuple[str, list[str]]]:
    """The honest reading, per metric: who leads, where the order flips, from which rung it is
    decided, where the fitted curves cross; then what the ladder's shape lets it claim."""
    sizes = {rung.index: rung.size for rung in rungs}
    out = [(result.metric.label.rstrip(" ↑↓"), _order_reading(result, sizes) + _crossover_reading(result))
           for result in results]
    seeds = sorted({int(n) for r in results for n in r.points.groupby(["variant", "rung"]).size()})
    return out + [("What this ladder can claim", _caveats(len(rungs), seeds))]


def _leaders(scores: dict[str, float], better: bool) -> str:
    best = max(scores.values()) if better else min(scores.values())
    tied = [v for v in scores if abs(scores[v] - best) <= TIE]
    return tied[0] if len(tied) == 1 else " = ".join(tied) + " (tied)"


def _order_reading(result: MetricFits, sizes: dict) -> list[str]:
    better = result.metric.higher_is_better
    means = rung_means(result.points, list(dict.fromkeys(result.points["variant"])))
    leaders = {rung: _leaders(scores, better) for rung, scores in means.items() if scores}
    items = []
    flat = [v for v in dict.fromkeys(result.points["variant"]) if result.flags.get(v) == FLAT_AT_CHANCE]
    if flat and len(flat) == result.points["variant"].nunique():
        items.append(f"Every variant stays at chance ({', '.join(flat)}: each fit is flat), so the orders below are "
                     f"noise, not findings.")
    elif flat:
        items.append(f"{', '.join(flat)} {'stays' if len(flat) == 1 else 'stay'} at chance (a flat fit): "
                     f"{'its' if len(flat) == 1 else 'their'} place in each order is noise.")
    if len(set(leaders.values())) == 1:
        items.append(f"{next(iter(leaders.values()))} leads at every rung ({', '.join(sizes[r] for r in leaders)}; "
                     f"means over seeds).")
    else:
        items.append("The lead changes: " + ", ".join(f"{v} at {sizes[r]}" for r, v in leaders.items())
                     + " (means over seeds).")
    flips = []
    ordered = sorted(means)
    for low, high in itertools.pairwise(ordered):
        for a, b in itertools.combinations(sorted(set(means[low]) & set(means[high])), 2):
            if (means[low][a] - means[low][b]) * (means[high][a] - means[high][b]) < 0:
                flips.append(f"{a}–{b} between {sizes[low]} and {sizes[high]}")
    if flips:
        items.append("The order flips: " + "; ".join(flips) + ".")
    agreement = result.agreement
    if agreement is not None:
        largest = agreement.rungs[-1]
        if agreement.decided_from == largest:
            items.append(f"No smaller rung orders the variants as {largest} does.")
        else:
            tau = agreement.taus[list(agreement.rungs).index(agreement.decided_from)]
            items.append(f"The order at {largest} is already the order from {agreement.decided_from} up "
                         f"(Kendall τ = {sig3(tau)} there).")
    elif result.agreement_note:
        items.append(f"No rank agreement: {result.agreement_note}.")
    return items


def _crossover_reading(result: MetricFits) -> list[str]:
    items = []
    better = result.metric.higher_is_better
    outside = [f"{a}–{b}" for (a, b), c in result.crossovers.items() if c.estimate is None]
    for (a, b), cross in result.crossovers.items():
        if cross.estimate is None:
            continue
        where = ("beyond the largest rung" if cross.estimate > max(cross.within) / 10
                 else "below the smallest rung" if cross.estimate < min(cross.within) * 10 else "within the ladder")
        above = cross.estimate * 3
        gap = float(result.fits[a].predict(above)[0] - result.fits[b].predict(above)[0])
        ahead = a if (gap > 0) == better else b
        if cross.status == "within range":
            span = f"its interval spans {math.log10(cross.high / cross.low):.1f} orders of magnitude"
        else:
            span = f"its interval is {cross.status} (some bootstrap pairs do not cross within the searched range)"
        items.append(f"The fitted curves of {a} and {b} cross at {si(cross.estimate)} FLOPs, {where}, {ahead} "
                     f"ahead above it; {span}.")
    if outside:
        items.append(f"The fitted curves of {', '.join(outside)} do not cross within a decade of the ladder: "
                     f"not within range, so no crossing is claimed.")
    flagged = sorted({v for v, flag in result.flags.items() if flag != NO_FLOOR})
    if flagged:
        items.append(f"No crossing is estimated for {', '.join(flagged)}: "
                     + "; ".join(f"{v}'s curve is {result.flags[v]}" for v in flagged) + ".")
    if result.refused:
        items.append("Not fitted: " + "; ".join(f"{v}: {why}" for v, why in result.refused.items()) + ".")
    return items


def _caveats(rungs: int, seeds: list[int]) -> list[str]:
    measured = next((text for n, text in COVERAGE if rungs <= n), COVERAGE[-1][1])
    items = [(f"{rungs} rungs with {'/'.join(map(str, seeds))} seed(s) each. The bootstrap holds the rungs fixed; "
              f"on synthetic ladders of this shape its 95% intervals covered the truth at {measured}, so read them "
              f"as lower bounds on the uncertainty.")]
    if rungs <= 3:
        items.append(f"With {rungs} rungs each curve has as many parameters as rungs: it passes through the rung "
                     f"means, so between rungs it interpolates, and beyond them no rung checks its extrapolation.")
    items.append("Orders are means over seeds at one size; each rung's own report tests the differences at that "
                 "rung, with the multiplicity correction. The curves compare the variants at equal compute instead, "
                 "so the two can disagree where one family spends more FLOPs per token than another.")
    return items


def band(fit, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(curve, low, high) of a fit over grid: the point fit and its bootstrap fits' 95% percentiles."""
    replicates = fit.predict_replicates(grid)
    tail = 100 * (1 - fit.confidence) / 2
    return fit.predict(grid), np.percentile(replicates, tail, axis=0), np.percentile(replicates, 100 - tail, axis=0)
