"""The report's plots (matplotlib, drawn off-screen to PNG bytes)."""

from __future__ import annotations

import io
import math
from collections import Counter
from typing import Any

import numpy as np
import pandas as pd

from harness.report.formatting import _number
from harness.report.runs import held_out_bpb, objective_of
from harness.report.scores import pseudo_likelihood


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


def _seed_dots(axis, x: float, values, color, horizontal: bool = False, spread: float = 0.06) -> None:
    """Each seed's value as a small dot beside the mean it makes (issue 16, item 8), spread a
    little across the category so equal values stay countable."""
    values = [float(v) for v in values if _number(v)]
    if len(values) < 2:
        return  # one seed: the dot is the mean itself
    xs, ys = x + np.linspace(-spread, spread, len(values)), values
    axis.scatter(*((ys, xs) if horizontal else (xs, ys)), s=14, color=color, alpha=0.55, edgecolors="none", zorder=3)


def _means_with_intervals(axis, xs: list[float], means: list[float], lows: list, highs: list, color) -> bool:
    """The means, with an error bar only where an interval exists (a missing one is not a zero-width
    bar: its mean is drawn hollow); True if some interval is missing."""
    bounded = [_number(lo) and _number(hi) for lo, hi in zip(lows, highs)]
    axis.plot(xs, means, color=color, linewidth=1)
    for x, mean, low, high, ok in zip(xs, means, lows, highs, bounded):
        if ok:
            axis.errorbar([x], [mean], yerr=[[mean - low], [high - mean]], marker="o", capsize=3, color=color)
        else:
            axis.plot([x], [mean], marker="o", markerfacecolor="white", color=color, linestyle="none")
    return not all(bounded)


SEED_DOT = ("seed values", {"color": "black", "marker": ".", "linestyle": "none", "alpha": 0.55})
NO_INTERVAL = ("mean, no interval", {"color": "black", "marker": "o", "markerfacecolor": "white", "linestyle": "none"})


def plot_score_vs_shots(table: pd.DataFrame, colors: dict, seeds: pd.DataFrame | None = None) -> bytes | None:
    """Each variant's mean score per shots with its interval (the score table's low/high), and
    each seed's value as a dot (`seeds`: harness.report.seeds.seed_values)."""
    shot_counts = table.groupby("task")["shots"].nunique() if len(table) else pd.Series(dtype=int)
    tasks = sorted(shot_counts[shot_counts >= 2].index)
    if not tasks:
        return None
    figure, axes = _figure(len(tasks))
    missing = False
    for axis, task in zip(axes, tasks):
        rows = table[table["task"] == task]
        metric = rows["metric"].iloc[0]
        shots = sorted(rows["shots"].unique())
        variants = sorted(rows["variant"].unique(), key=list(colors).index)
        for position, variant in enumerate(variants):
            group = rows[rows["variant"] == variant].sort_values("shots")
            jitter = 0.04 * (position - (len(variants) - 1) / 2)  # overlapping error bars stay readable
            xs = [shots.index(s) + jitter for s in group["shots"]]
            missing |= _means_with_intervals(axis, xs, list(group["mean"]), list(group["low"]), list(group["high"]),
                                             colors[variant])
            if seeds is not None and len(seeds):
                mine = seeds[(seeds["task"] == task) & (seeds["metric"] == metric) & (seeds["variant"] == variant)]
                for x, s in zip(xs, group["shots"]):
                    _seed_dots(axis, x, mine[mine["shots"] == s]["value"], colors[variant])
        if _number(rows["chance"].iloc[0]):
            axis.axhline(float(rows["chance"].iloc[0]), color="grey", linestyle="--", linewidth=1)
        axis.set_xticks(range(len(shots)), [f"{s}-shot" for s in shots])
        axis.set(title=f"{task} ({metric})", ylabel=metric)
    extra = [("chance", {"color": "grey", "linestyle": "--"}), ("mean, 95% interval", {"color": "black", "marker": "|"}),
             SEED_DOT] + ([NO_INTERVAL] if missing else [])
    _figure_legend(figure, colors, sorted(table["variant"].unique(), key=list(colors).index), extra)
    return _png(figure)


def plot_throughput(runs: list[dict], colors: dict) -> bytes | None:
    """Mean tokens/s per variant, ± the sd over seeds where there are two or more, each seed a dot."""
    speeds: dict[str, list[float]] = {}
    for run in runs:
        if _number(run.get("tokens_per_s")):
            speeds.setdefault(run["variant"], []).append(float(run["tokens_per_s"]))
    if not speeds:
        return None
    figure, (axis,) = _figure(1, width=max(4.5, 0.8 * len(speeds)))
    names = sorted(speeds, key=list(colors).index)
    axis.bar(names, [np.mean(speeds[n]) for n in names], color=[colors[n] for n in names], alpha=0.8)
    for position, name in enumerate(names):
        if len(speeds[name]) > 1:  # one seed has no spread: no bar rather than a zero-width one
            axis.errorbar([position], [np.mean(speeds[name])], yerr=[np.std(speeds[name], ddof=1)], color="black",
                          capsize=3)
            _seed_dots(axis, position, speeds[name], "black", spread=0.2)
    several = [n for n in names if len(speeds[n]) > 1]
    single = [n for n in names if len(speeds[n]) == 1]
    title = "training throughput"
    if several:
        title += "\n(mean ± sd over seeds; dots: seeds)"
        if single:
            title += f"\none seed, no interval: {', '.join(single)}"
    axis.set(title=title, ylabel="tokens/s")
    axis.tick_params(axis="x", labelrotation=30)
    return _png(figure)


def plot_held_out_bpb(runs: list[dict], baseline: dict | None, colors: dict) -> bytes | None:
    """Held-out bits/byte against tokens seen and against training FLOPs (log x), one dot per run and
    each variant's mean marked, for the families with a true likelihood only: a pseudo-log-likelihood
    (the encoder's, Salazar et al. 2020; FamilySpec.likelihood) is not on the same scale and is left out."""
    points = [(r, held_out_bpb(r)) for r in runs if not pseudo_likelihood(r.get("family"))]
    points = [(r, bpb) for r, bpb in points if bpb is not None]
    if not points:
        return None
    left_out = sorted({r["variant"] for r in runs if pseudo_likelihood(r.get("family")) and held_out_bpb(r) is not None})
    unigram = ((baseline or {}).get("unigram") or {}).get("bits_per_byte")
    figure, axes = _figure(2)
    for axis, (field, label) in zip(axes, (("tokens_seen", "tokens seen"), ("train_flops", "training FLOPs"))):
        by_variant: dict[str, list[tuple[float, float]]] = {}
        for run, bpb in points:
            if _number(run.get(field)) and run[field] > 0:  # a log axis has no place for 0
                by_variant.setdefault(run["variant"], []).append((float(run[field]), bpb))
        for variant, xy in by_variant.items():
            xs, ys = zip(*xy)
            axis.scatter(xs, ys, s=18, color=colors[variant], alpha=0.7, edgecolors="none", zorder=3)
            # the mean over seeds: geometric in x, as the axis is logarithmic
            axis.scatter([math.exp(np.mean(np.log(xs)))], [np.mean(ys)], s=90, marker="D", facecolors="none",
                         edgecolors=colors[variant], linewidths=1.5, zorder=4)
        if by_variant:
            _log_x(axis, [x for xy in by_variant.values() for x, _ in xy])
        else:
            axis.text(0.5, 0.5, f"no run records its {label}", ha="center", va="center", transform=axis.transAxes)
        axis.set(title=f"against {label}", xlabel=f"{label} (log scale)", ylabel="held-out bits/byte (lower is better)")
    # the unigram baseline is said, not drawn: a line at its height would flatten the gaps between families
    notes = [f"unigram baseline {unigram:.3g} bits/byte"] if _number(unigram) else []
    notes += [f"{', '.join(left_out)} left out (pseudo-log-likelihood, not a true likelihood)"] if left_out else []
    if notes:
        figure.suptitle("; ".join(notes), fontsize="small")
    variants = sorted({r["variant"] for r, _ in points}, key=list(colors).index)
    _figure_legend(figure, colors, variants, [
        ("run (one per seed)", {"color": "black", "marker": "o", "linestyle": "none", "alpha": 0.7}),
        ("variant mean", {"color": "black", "marker": "D", "markerfacecolor": "none", "linestyle": "none"})])
    return _png(figure)


def _log_x(axis, xs: list[float]) -> None:
    """A log x axis in SI units (1M, 2M, ...); the minor ticks are labelled too when the points span
    less than a decade, where the major ticks alone would leave one label or none."""
    from matplotlib.ticker import EngFormatter, LogLocator, NullFormatter

    axis.set_xscale("log")
    axis.xaxis.set_major_formatter(EngFormatter())
    if max(xs) / min(xs) < 10:
        axis.xaxis.set_minor_locator(LogLocator(subs=(2.0, 3.0, 5.0)))  # 7, 8, 9 would crowd into one label
        axis.xaxis.set_minor_formatter(EngFormatter())
    else:
        axis.xaxis.set_minor_formatter(NullFormatter())
    axis.tick_params(axis="x", which="minor", labelsize="x-small")
