"""The report's plots (matplotlib, drawn off-screen to PNG bytes)."""

from __future__ import annotations

import io
import math
from collections import Counter
from typing import Any

import numpy as np
import pandas as pd

from harness.report.formatting import _number
from harness.report.runs import objective_of


def colors_for(variants: list[str]) -> dict[str, Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if len(variants) <= 10 else "tab20"]
    return {v: cmap(i % cmap.N) for i, v in enumerate(variants)}


def _figure(panels: int, width: float = 4.5, height: float = 3.4):
    from matplotlib.figure import Figure

    cols = min(3, panels)
    rows = math.ceil(panels / cols)
    figure = Figure(figsize=(width * cols, height * rows), layout="constrained")
    axes = figure.subplots(rows, cols, squeeze=False).ravel()
    for extra in axes[panels:]:
        extra.set_visible(False)
    return figure, axes[:panels]


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def _label(run: dict, seeds_per_variant: Counter) -> str:
    return f"{run['variant']} (seed {run.get('seed')})" if seeds_per_variant[run["variant"]] > 1 else run["variant"]


_SEED_STYLES = ("-", "--", ":", "-.")


def plot_training_curves(runs: list[dict], baseline: dict | None, colors: dict) -> bytes | None:
    from matplotlib.ticker import EngFormatter

    curves = [r for r in runs if r.get("val_history")]
    if not curves:
        return None
    objectives = sorted({str(objective_of(r)) for r in curves})
    seeds = Counter(r["variant"] for r in curves)
    seed_rank = {}
    for run in curves:  # the first seed of each variant solid, the next dashed, ...
        seed_rank.setdefault((run["variant"], run.get("seed")), sum(k[0] == run["variant"] for k in seed_rank))
    unigram = ((baseline or {}).get("unigram") or {}).get("val_loss_nats")
    figure, axes = _figure(len(objectives))
    for axis, objective in zip(axes, objectives):
        for run in (r for r in curves if str(objective_of(r)) == objective):
            history = run["val_history"]
            style = _SEED_STYLES[seed_rank[(run["variant"], run.get("seed"))] % len(_SEED_STYLES)]
            axis.plot([h["tokens_seen"] for h in history], [h["val_loss"] for h in history], marker=".",
                      linestyle=style, color=colors[run["variant"]], label=_label(run, seeds))
        if _number(unigram):
            axis.axhline(unigram, color="grey", linestyle="--", linewidth=1, label="unigram baseline")
        axis.set(title=f"objective: {objective}", xlabel="tokens seen", ylabel="validation loss (nats/token)")
        axis.xaxis.set_major_formatter(EngFormatter())
        axis.legend(fontsize="small")
    return _png(figure)


def _figure_legend(figure, colors: dict, variants: list[str], extra: list[tuple[str, dict]] = ()) -> None:
    """One legend for all panels: a colour per variant, then extra (label, line style) entries."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=colors[v], marker="o", linestyle="-", label=v) for v in variants]
    handles += [Line2D([], [], label=label, **style) for label, style in extra]
    figure.legend(handles=handles, loc="outside right upper", fontsize="small")


def plot_score_vs_flops(runs: list[dict], long: pd.DataFrame, table: pd.DataFrame, colors: dict) -> bytes | None:
    if table.empty:
        return None
    flops = {r["run_name"]: r.get("train_flops") for r in runs}
    tasks = sorted(table["task"].unique())
    all_shots = sorted(table["shots"].unique())
    markers = dict(zip(all_shots, "osD^v<>p*h"))
    figure, axes = _figure(len(tasks))
    for axis, task in zip(axes, tasks):
        metric = table[table["task"] == task]["metric"].iloc[0]
        rows = long[(long["task"] == task) & (long["metric"] == metric)]
        for row in rows.itertuples(index=False):
            if _number(flops.get(row.run_name)):
                axis.scatter(flops[row.run_name], row.value, color=colors[row.variant], marker=markers[row.shots])
        chance = rows["chance"].dropna()
        if len(chance):
            axis.axhline(float(chance.iloc[0]), color="grey", linestyle="--", linewidth=1)
        axis.set_xscale("log")
        axis.set(title=f"{task} ({metric})", xlabel="training FLOPs", ylabel=metric)
    shots_styles = [(f"{s}-shot", {"color": "black", "marker": markers[s], "linestyle": "none"}) for s in all_shots]
    _figure_legend(figure, colors, sorted(table["variant"].unique(), key=list(colors).index),
                   [*shots_styles, ("chance", {"color": "grey", "linestyle": "--"})])
    return _png(figure)


def plot_score_vs_shots(table: pd.DataFrame, colors: dict) -> bytes | None:
    shot_counts = table.groupby("task")["shots"].nunique() if len(table) else pd.Series(dtype=int)
    tasks = sorted(shot_counts[shot_counts >= 2].index)
    if not tasks:
        return None
    figure, axes = _figure(len(tasks))
    for axis, task in zip(axes, tasks):
        rows = table[table["task"] == task]
        shots = sorted(rows["shots"].unique())
        variants = sorted(rows["variant"].unique(), key=list(colors).index)
        for position, variant in enumerate(variants):
            group = rows[rows["variant"] == variant].sort_values("shots")
            jitter = 0.04 * (position - (len(variants) - 1) / 2)  # overlapping error bars stay readable
            axis.errorbar([shots.index(s) + jitter for s in group["shots"]], group["mean"],
                          yerr=group["ci95"].fillna(0), marker="o", capsize=3, color=colors[variant])
        if _number(rows["chance"].iloc[0]):
            axis.axhline(float(rows["chance"].iloc[0]), color="grey", linestyle="--", linewidth=1)
        axis.set_xticks(range(len(shots)), [f"{s}-shot" for s in shots])
        axis.set(title=f"{task} ({rows['metric'].iloc[0]})", ylabel=rows["metric"].iloc[0])
    _figure_legend(figure, colors, sorted(table["variant"].unique(), key=list(colors).index),
                   [("chance", {"color": "grey", "linestyle": "--"}), ("95% CI", {"color": "black", "marker": "|"})])
    return _png(figure)


def plot_throughput(runs: list[dict], colors: dict) -> bytes | None:
    speeds: dict[str, list[float]] = {}
    for run in runs:
        if _number(run.get("tokens_per_s")):
            speeds.setdefault(run["variant"], []).append(float(run["tokens_per_s"]))
    if not speeds:
        return None
    figure, (axis,) = _figure(1, width=max(4.5, 0.8 * len(speeds)))
    names = sorted(speeds, key=list(colors).index)
    means = [np.mean(speeds[n]) for n in names]
    several = any(len(speeds[n]) > 1 for n in names)
    errors = [np.std(speeds[n], ddof=1) if len(speeds[n]) > 1 else 0 for n in names] if several else None
    axis.bar(names, means, yerr=errors, capsize=3, color=[colors[n] for n in names])
    axis.set(title="training throughput" + (" (mean ± sd over seeds)" if several else ""), ylabel="tokens/s")
    axis.tick_params(axis="x", labelrotation=30)
    return _png(figure)
