"""The Scaling section's figure: one axis per metric, each variant's observed points, fitted curve and band."""

from __future__ import annotations

import numpy as np

from harness.report.plots import _figure, _png
from harness.report.scaling import MetricFits, band


def plot_scaling(results: list[MetricFits], colors: dict) -> bytes | None:
    """Per metric: every run's value against its training FLOPs (dots), each rung's mean over
    seeds (larger dots), the fitted curve extrapolated a decade past the ladder (solid within
    the observed range, dashed beyond) and its 95% bootstrap band."""
    if not results:
        return None
    figure, axes = _figure(len(results), width=5.0, height=3.8)
    for axis, result in zip(axes, results):
        points = result.points
        for variant in dict.fromkeys(points["variant"]):
            mine = points[points["variant"] == variant]
            color = colors.get(variant)
            axis.scatter(mine["flops"], mine["value"], s=10, alpha=0.45, color=color)
            means = mine.groupby("rung").agg(flops=("flops", "median"), value=("value", "mean"))
            axis.scatter(means["flops"], means["value"], s=36, color=color, edgecolor="black", linewidth=0.5,
                         label=variant if variant not in result.fits else None, zorder=3)
            fit = result.fits.get(variant)
            if fit is None:
                continue
            low, high = fit.x_range
            inside = np.geomspace(low, high, 100)
            curve, lower, upper = band(fit, inside)
            axis.plot(inside, curve, color=color, label=variant)
            axis.fill_between(inside, lower, upper, color=color, alpha=0.15, linewidth=0)
            for stretch in (np.geomspace(low / 10, low, 30), np.geomspace(high, high * 10, 30)):
                curve, lower, upper = band(fit, stretch)
                axis.plot(stretch, curve, color=color, linestyle="--", linewidth=0.8)
                axis.fill_between(stretch, lower, upper, color=color, alpha=0.07, linewidth=0)
        axis.set_xscale("log")
        if not result.metric.higher_is_better:
            axis.set_yscale("log")
        else:
            chance = points["chance"].dropna()
            if not chance.empty:
                axis.axhline(float(chance.iloc[0]), color="grey", linewidth=0.8, linestyle=":", label="chance")
        axis.set_xlabel("training FLOPs")
        axis.set_ylabel(result.metric.label)
        axis.legend(fontsize=7)
    return _png(figure)
