"""The comparison report: tables (pandas), statistics, plots (matplotlib) and findings.

`write_report(folder)` reads only the recorded run folders (`harness.store`), never
the live config, and writes into the folder, each file atomically:

    report.md  report.html     the report; the HTML is self-contained (plots as base64 PNG)
    runs.csv                   one row per run (raw numbers) plus the unigram baseline
    scores.csv                 task × shots × variant: mean, 95% interval, bold / ★ / †, Holm p against the best
    *.png                      training curves, score against FLOPs, score against shots, tokens/s
    index.parquet              the store's index, rebuilt
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from arches.errors import UserError
from harness import provenance, report_marks, store
from harness.report_marks import CHANCE_FLAG, cell_text, marks_text

ALPHA = 0.05
CONFIDENCE = 0.95
RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
MIN_SEEDS_ALONE = 5  # fewest seeds whose scores alone (no per-example outcomes) are bootstrapped
MISSING = "—"

MULTIPLE_CHOICE_METRICS = ("acc_norm", "acc")  # acc_norm preferred: length-normalised (lm-eval)
LIKELIHOOD_METRICS = ("bits_per_byte", "byte_perplexity", "word_perplexity", "perplexity")  # lower is better
HELD_OUT_TASK = "corpus_ppl"  # the held-out split of the training corpus, scored by lm-eval
PLL_FAMILIES = ("encoder",)  # scored by pseudo-log-likelihood (Salazar et al. 2020), not a true likelihood
FLOPS_MATCHED_WITHIN = 0.10  # variants further apart in FLOPs/token from the first are not FLOPs-matched

USAGE = "usage: arches report <results folder>   (e.g. arches report results/families)"

# Wang et al. 2022, "What Language Model Architecture and Pretraining Objective Work Best
# for Zero-Shot Generalization?": the orderings after unsupervised pretraining only.
WANG2022 = "wang2022"
WANG2022_NAMES = {
    "cd_flm": "causal decoder, full LM",
    "nd_plm": "non-causal decoder, prefix LM",
    "ed_plm": "encoder-decoder, prefix LM",
    "cd_mlm": "causal decoder, MLM",
    "nd_mlm": "non-causal decoder, MLM",
    "ed_mlm": "encoder-decoder, MLM (span corruption)",
}
WANG2022_CLAIMS = (
    (
        "(a) Causal decoder FLM > non-causal decoder PLM > encoder-decoder PLM",
        "the EAI-harness zero-shot averages are 44.2 / 43.5 / 39.9 after 168B tokens "
        "(4.8B-parameter decoders, 11B-parameter encoder-decoder)",
        (("cd_flm", "nd_plm"), ("nd_plm", "ed_plm")),
    ),
    (
        "(b) Models trained with the MLM objective are behind LM-trained ones zero-shot",
        "the MLM-trained (span corruption) models trail the LM-trained ones zero-shot; here each architecture's "
        "MLM model is compared with its own LM-trained model",
        (("cd_flm", "cd_mlm"), ("nd_plm", "nd_mlm"), ("ed_plm", "ed_mlm")),
    ),
)


# ---------------------------------------------------------------- formatting


def _number(value: Any) -> bool:
    return isinstance(value, (int, float, np.number)) and not isinstance(value, bool) and math.isfinite(value)


def sig3(value: Any) -> str:
    """Three significant digits, trailing zeros kept (0.500, 1.23, 123)."""
    if not _number(value):
        return MISSING
    if value == 0:
        return "0.00"
    if abs(float(f"{value:.3g}")) >= 1000:
        return si(value)
    return f"{value:#.3g}".rstrip(".")


_SI = ((1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))


def si(value: Any) -> str:
    """SI suffix with three significant digits: 1234567 -> 1.23M, 4.2e15 -> 4.20P."""
    if not _number(value):
        return MISSING
    rounded = float(f"{value:.3g}")
    for scale, suffix in _SI:
        if abs(rounded) >= scale:
            return f"{rounded / scale:#.3g}".rstrip(".") + suffix
    return sig3(value)


def duration(seconds: Any) -> str:
    if not _number(seconds):
        return MISSING
    if seconds < 60:
        return f"{sig3(seconds)} s"
    if seconds < 3600:
        return f"{sig3(seconds / 60)} min"
    return f"{sig3(seconds / 3600)} h"


def _decimals(text: str) -> int:
    return len(text.split(".")[1]) if "." in text else 0


def p_text(p: float | None) -> str:
    if p is None:
        return "not tested"
    return f"p < {1 / RESAMPLES:g}" if p == 0 else f"p = {p:.2g}"


def signed(value: float) -> str:
    return ("+" if value >= 0 else "−") + sig3(abs(value))


# ---------------------------------------------------------------- statistics


def _two_sided_p(boot: np.ndarray) -> float:
    # the smallest alpha at which the percentile interval of the difference excludes 0
    boot = np.where(np.abs(boot) <= 1e-12, 0.0, boot)
    return float(min(1.0, 2 * min(np.mean(boot <= 0), np.mean(boot >= 0))))


def paired_bootstrap(
    differences: Any, resamples: int = RESAMPLES, seed: int = BOOTSTRAP_SEED
) -> tuple[float, float]:
    """(observed, p): a paired bootstrap of the mean difference, two-sided.

    `differences` is one array of paired differences (a_i - b_i, one per example or seed)
    or a list of such arrays, one per stratum (task): the statistic is then the average
    over strata of the within-stratum mean difference, and each stratum is resampled on
    its own. Each resample draws n pairs with replacement; p = 2·min(P*(Δ ≤ 0), P*(Δ ≥ 0)),
    capped at 1, over the `resamples` bootstrap means Δ. Drawing the counts of each
    distinct difference from a multinomial is the same distribution as resampling the
    pairs themselves, and costs resamples × distinct values instead of resamples × n.
    """
    strata = [differences] if np.ndim(differences[0]) == 0 else list(differences)
    rng = np.random.default_rng(seed)
    observed = 0.0
    boot = np.zeros(resamples)
    for stratum in strata:
        stratum = np.asarray(stratum, dtype=float)
        if stratum.size == 0:
            raise ValueError("a bootstrap stratum has no pairs")
        values, counts = np.unique(stratum, return_counts=True)
        draws = rng.multinomial(stratum.size, counts / stratum.size, size=resamples)  # (resamples, distinct)
        boot += draws @ values / stratum.size
        observed += stratum.mean()
    return observed / len(strata), _two_sided_p(boot / len(strata))


def seeds_examples_bootstrap(
    strata: list[np.ndarray], resamples: int = RESAMPLES, seed: int = BOOTSTRAP_SEED
) -> tuple[float, float]:
    """(observed, p): a paired bootstrap over seeds and examples together, two-sided.

    Each stratum (task) is a (seeds, examples) matrix of per-example differences a - b,
    rows paired by seed, columns by doc_id. Each resample draws the seeds with replacement
    (once, shared by all strata) and each stratum's examples with replacement (shared by all
    seeds), so both the training-seed and the test-set variance enter; this is the
    Multi-Bootstrap of Sellam et al. 2022 ("The MultiBERTs", §3). The statistic is the
    average over strata of the mean difference; p as in `paired_bootstrap`.
    """
    rng = np.random.default_rng(seed)
    seeds = strata[0].shape[0]
    seed_counts = rng.multinomial(seeds, np.full(seeds, 1 / seeds), size=resamples)  # (resamples, seeds)
    observed = 0.0
    boot = np.zeros(resamples)
    for matrix in strata:
        matrix = np.asarray(matrix, dtype=float)
        n = matrix.shape[1]
        observed += matrix.mean()
        chunk = max(1, 2_000_000 // n)
        for start in range(0, resamples, chunk):
            stop = min(resamples, start + chunk)
            example_counts = rng.multinomial(n, np.full(n, 1 / n), size=stop - start)  # (chunk, n)
            per_example = seed_counts[start:stop] @ matrix / seeds  # (chunk, n): seed-resampled mean per doc
            boot[start:stop] += (per_example * example_counts).sum(axis=1) / n
    return observed / len(strata), _two_sided_p(boot / len(strata))


# ---------------------------------------------------------------- scores


def primary_metric(metrics: set[str]) -> str:
    """acc_norm, else acc (multiple choice); bits_per_byte, else a perplexity; else the first."""
    for metric in (*MULTIPLE_CHOICE_METRICS, *LIKELIHOOD_METRICS):
        if metric in metrics:
            return metric
    return sorted(metrics)[0]


def higher_is_better(metric: str) -> bool:
    return metric not in LIKELIHOOD_METRICS


@dataclass
class Cell:
    """One variant's primary score on one (task, shots): one value per seed."""

    variant: str
    family: str | None
    values: dict = field(default_factory=dict)  # seed -> value
    stderr: dict = field(default_factory=dict)  # seed -> lm-eval stderr
    samples: dict = field(default_factory=dict)  # seed -> samples file (or None)
    n: dict = field(default_factory=dict)  # seed -> examples scored (or None)

    @property
    def mean(self) -> float:
        return float(np.mean(list(self.values.values())))


class Comparer:
    """Per-example outcomes (lm-eval samples files), loaded once per file and metric, and aligned by doc_id."""

    def __init__(self) -> None:
        self._samples: dict[tuple[str, str], dict] = {}

    def samples(self, path: str | None, metric: str) -> dict | None:
        if not isinstance(path, str) or not Path(path).exists():
            return None
        key = (path, metric)
        if key not in self._samples:
            self._samples[key] = store.load_samples(path, metric)
        return self._samples[key] or None

    def aligned(self, a: Cell, b: Cell, metric: str, seed_pairs: list) -> list[tuple[list, list]] | None:
        """Per seed pair, the per-example values of a and b on the doc_ids that all of them share."""
        tables = []
        for seed_a, seed_b in seed_pairs:
            outcomes_a = self.samples(a.samples.get(seed_a), metric)
            outcomes_b = self.samples(b.samples.get(seed_b), metric)
            if outcomes_a is None or outcomes_b is None:
                return None
            tables.append((outcomes_a, outcomes_b))
        if not tables:
            return None
        docs = [d for d in tables[0][0] if all(d in oa and d in ob for oa, ob in tables)]
        if not docs:
            return None
        return [([oa[d] for d in docs], [ob[d] for d in docs]) for oa, ob in tables]

    def difference_matrix(self, a: Cell, b: Cell, metric: str, seed_pairs: list) -> np.ndarray | None:
        """(seeds, examples) per-example differences a - b, or None without numeric outcomes."""
        aligned = self.aligned(a, b, metric, seed_pairs)
        if aligned is None or not all(_scalar(v) for va, vb in aligned for v in va + vb):
            return None
        return np.array([np.asarray(va, float) - np.asarray(vb, float) for va, vb in aligned])

    def outcomes(self, cells: list[Cell], metric: str) -> dict | None:
        """{variant: {seed: {doc_id: value}}} (harness.statistics' Outcomes), or None unless every
        seed of every cell has its samples file."""
        out: dict = {}
        for cell in cells:
            for seed in cell.values:
                loaded = self.samples(cell.samples.get(seed), metric)
                if loaded is None:
                    return None
                out.setdefault(cell.variant, {})[0 if seed is None else int(seed)] = loaded
        return out


def seed_bootstrap(differences: list[float]) -> tuple[float | None, str | None]:
    """(p, test) of a paired bootstrap over seeds' scores alone, or (None, None) below MIN_SEEDS_ALONE.

    With k seeds that all favour one variant every resample does too (p = 0) whatever k is;
    an exact sign-flip test over 2 or 3 seeds could never reach p < 0.05. Below
    MIN_SEEDS_ALONE seeds the scores alone cannot support a significance mark.
    """
    if len(differences) < MIN_SEEDS_ALONE:
        return None, None
    return paired_bootstrap(differences)[1], f"seeds (n={len(differences)})"


def _scalar(value: Any) -> bool:
    return _number(value) or isinstance(value, bool)


def _is_pll(metric: str, family: str | None) -> bool:
    return metric in LIKELIHOOD_METRICS and family in PLL_FAMILIES


def score_cells(long: pd.DataFrame) -> dict[tuple[str, int], tuple[str, dict[str, Cell]]]:
    """(task, shots) -> (primary metric, {variant: Cell}) from the store's long score table."""
    cells: dict[tuple[str, int], tuple[str, dict[str, Cell]]] = {}
    for task, task_rows in long.groupby("task", sort=True):
        metric = primary_metric(set(task_rows["metric"]))
        chosen = task_rows[task_rows["metric"] == metric]
        for shots, rows in chosen.groupby("shots", sort=True):
            by_variant: dict[str, Cell] = {}
            for row in rows.itertuples(index=False):
                cell = by_variant.setdefault(row.variant, Cell(row.variant, row.family))
                cell.values[row.seed] = row.value
                cell.stderr[row.seed] = row.stderr
                cell.samples[row.seed] = row.samples_file
                cell.n[row.seed] = getattr(row, "n", None)
            cells[(task, int(shots))] = (metric, dict(sorted(by_variant.items())))
    return cells


def score_table(long: pd.DataFrame, comparer: Comparer | None = None) -> pd.DataFrame:
    """task × shots × variant: mean, 95% interval, chance, and the row's marks (harness.report_marks).

    Pseudo-log-likelihood figures (encoder) are shown but not ranked against true likelihoods.
    """
    comparer = comparer or Comparer()
    chance = long.groupby("task")["chance"].first().to_dict() if len(long) else {}
    rows = []
    for (task, shots), (metric, cells) in score_cells(long).items():
        rows += marked_rows(task, shots, metric, cells, chance.get(task), comparer)
    return pd.DataFrame(rows, columns=SCORE_COLUMNS)


SCORE_COLUMNS = ["task", "shots", "metric", "higher_is_better", "chance", "variant", "n_seeds", "mean", "low", "high",
                 "ci95", "interval", "pll", "bold", "best", "p_vs_best", "significant", "test", "at_chance"]


def marked_rows(task: str, shots: int, metric: str, cells: dict[str, Cell], chance: Any, comparer: Comparer,
                outcomes: dict | None = None) -> list[dict]:
    """score_table's rows of one (task, shots): each variant's interval and marks. `outcomes`
    replaces the cells' samples files (a group's mean pools its tasks')."""
    higher = higher_is_better(metric)
    ranked = [v for v, c in cells.items() if not _is_pll(metric, c.family)]
    if outcomes is None:
        outcomes = comparer.outcomes(list(cells.values()), metric)
    n = {v: next((k for k in c.n.values() if isinstance(k, (int, np.integer))), None) for v, c in cells.items()}
    stats = report_marks.row_stats({v: c.values for v, c in cells.items()}, outcomes, metric, higher, ranked,
                                   chance if _number(chance) else None, {v: int(k) if k is not None else None
                                                                         for v, k in n.items()})
    rows = []
    for variant, cell in cells.items():
        low, high = stats.low[variant], stats.high[variant]
        p = stats.p_vs_best.get(variant)
        rows.append({
            "task": task, "shots": shots, "metric": metric, "higher_is_better": higher, "chance": chance,
            "variant": variant, "n_seeds": len(cell.values), "mean": cell.mean, "low": low, "high": high,
            "ci95": max(cell.mean - low, high - cell.mean) if _number(low) else math.nan,  # plots' error bars
            "interval": stats.interval[variant], "pll": _is_pll(metric, cell.family),
            "bold": variant in stats.bold, "best": variant == stats.star, "p_vs_best": p,
            "significant": variant in stats.dagger, "test": stats.test if p is not None else None,
            "at_chance": stats.at_chance,
        })
    return rows


def score_display(table: pd.DataFrame, variants: list[str]) -> pd.DataFrame:
    """The human table: one row per (task, shots), one column per variant, marks on the cells."""
    rows = []
    for (task, shots), group in table.groupby(["task", "shots"], sort=True):
        first = group.iloc[0]
        chance = sig3(first["chance"]) if _number(first["chance"]) else MISSING
        row = {
            "task": task,
            "shots": int(shots),
            "metric": f"{first['metric']} {'↑' if first['higher_is_better'] else '↓'}",
            "chance": f"{chance} ({CHANCE_FLAG})" if first["at_chance"] in (True,) else chance,  # None: untested
        }
        for variant in variants:
            match = group[group["variant"] == variant]
            if match.empty:
                row[variant] = MISSING
                continue
            cell = match.iloc[0]
            text = cell_text(cell["mean"], cell["low"], cell["high"], bool(cell["bold"]), sig3)
            row[variant] = text + (" (PLL)" if cell["pll"] else marks_text(bool(cell["best"]), bool(cell["significant"])))
        rows.append(row)
    return pd.DataFrame(rows, columns=["task", "shots", "metric", "chance", *variants])


# ---------------------------------------------------------------- runs


def objective_of(run: dict) -> str | None:
    return run.get("loss_objective") or run.get("objective")


def held_out_bpb(run: dict) -> float | None:
    """bits_per_byte of the held-out corpus eval (zero-shot preferred), if the run has one."""
    entries = [e for key, e in run["evals"].items() if (e.get("task") or key.split("|")[0]).startswith(HELD_OUT_TASK)]
    for entry in sorted(entries, key=lambda e: int(e.get("shots", 0))):
        value = (entry.get("metrics") or {}).get("bits_per_byte")
        if _number(value):
            return float(value)
    return None


def _knob_text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return str(value)


def varying_knobs(runs: list[dict]) -> tuple[list[str], dict[str, Any]]:
    """(knobs that differ between runs, {knob: value} shared by all runs)."""
    knobs = [run.get("knobs") or {} for run in runs]
    names = sorted({name for k in knobs for name in k})
    varying = [n for n in names if len({_knob_text(k.get(n, MISSING)) for k in knobs}) > 1]
    shared = {n: knobs[0][n] for n in names if n not in varying}
    return varying, shared


def flops_ratios(runs: list[dict]) -> dict[str, float]:
    """Each variant's FLOPs/token over the first variant's (the first, in table order, that records one)."""
    per_variant: dict[str, float] = {}
    for run in runs:
        if _number(run.get("flops_per_token")):
            per_variant.setdefault(run["variant"], float(run["flops_per_token"]))
    first = next(iter(per_variant.values()), None)
    return {variant: flops / first for variant, flops in per_variant.items()} if first else {}


def flops_matching(runs: list[dict]) -> str | None:
    """One sentence: whether the variants are FLOPs-matched, naming any more than
    FLOPS_MATCHED_WITHIN apart from the first variant in FLOPs/token."""
    ratios = flops_ratios(runs)
    if len(ratios) < 2:
        return None
    first = next(iter(ratios))
    apart = [f"{variant} ({ratio:.2f}×)" for variant, ratio in ratios.items() if abs(ratio - 1) > FLOPS_MATCHED_WITHIN]
    if not apart:
        return (f"FLOPs-matched: every variant's FLOPs/token is within {FLOPS_MATCHED_WITHIN:.0%} of the first "
                f"variant's ({first}).")
    return (f"Not FLOPs-matched: {', '.join(apart)} more than {FLOPS_MATCHED_WITHIN:.0%} apart from the first "
            f"variant ({first}) in FLOPs/token.")


def scoring_formats(run: dict) -> str:
    """The format(s) the run's recorded scores were computed in (harness/evaluate.py records one per entry)."""
    return ", ".join(sorted({str(e["format"]) for e in run["evals"].values() if e.get("format")})) or MISSING


def runs_display(runs: list[dict], baseline: dict | None) -> pd.DataFrame:
    """The human runs table, with the unigram baseline row last."""
    varying, _ = varying_knobs(runs)
    ratios = flops_ratios(runs)
    rows = []
    for run in runs:
        knobs = run.get("knobs") or {}
        loss = run.get("final_val_loss")
        bpb = held_out_bpb(run)
        pll = run.get("family") in PLL_FAMILIES
        rows.append({
            "variant": run["variant"],
            "seed": MISSING if run.get("seed") is None else str(run["seed"]),
            "status": run["status"],
            "family": run.get("family") or MISSING,
            "preset": run.get("preset") or MISSING,
            "knobs": ", ".join(f"{n}={_knob_text(knobs[n])}" for n in varying if n in knobs) or MISSING,
            "params": si(run.get("params_total")),
            "non-emb. params": si(run.get("params_non_embedding")),
            "FLOPs/token": si(run.get("flops_per_token")),
            "FLOPs/token vs first": f"{ratios[run['variant']]:.2f}×" if run["variant"] in ratios else MISSING,
            "tokens seen": si(run.get("tokens_seen")),
            "loss tokens seen": si(run.get("loss_tokens_seen")),
            "train FLOPs": si(run.get("train_flops")),
            "wall time": duration(run.get("wall_time_s")),
            "tokens/s": si(run.get("tokens_per_s")),
            "val loss (objective)": f"{sig3(loss)} ({objective_of(run)})" if _number(loss) else MISSING,
            "held-out bits/byte": (f"{sig3(bpb)} (PLL)" if pll else sig3(bpb)) if bpb is not None else MISSING,
            "scoring format": scoring_formats(run),
            "tuned": f"yes ({run.get('tuned_trials')} trials)" if run.get("tuned") else "no",
            "error": run.get("error") or "",
        })
    unigram = (baseline or {}).get("unigram")
    if unigram:
        row = dict.fromkeys(rows[0] if rows else [], MISSING)
        loss = unigram.get("val_loss_nats")
        # what was scored: "the val split (loss) and the N corpus_ppl passages (bits per byte)";
        # a baseline written before that named a split
        scored = unigram.get("split") or "held-out"
        scored = scored if scored.startswith("the ") else f"the {scored} split"
        row.update({
            "variant": "unigram baseline",
            "status": "baseline",
            "val loss (objective)": f"{sig3(loss)} (unigram)" if _number(loss) else MISSING,
            "held-out bits/byte": sig3(unigram.get("bits_per_byte")),
            "error": f"token frequencies of the training split, scored on {scored}",
        })
        rows.append(row)
    return pd.DataFrame(rows)


def runs_raw(runs: list[dict], baseline: dict | None) -> pd.DataFrame:
    """runs.csv: the store's index with the held-out bits/byte, and the unigram baseline row."""
    table = store.index(None, runs)
    table["held_out_bits_per_byte"] = [held_out_bpb(run) for run in runs]
    table["held_out_is_pll"] = [run.get("family") in PLL_FAMILIES for run in runs]
    unigram = (baseline or {}).get("unigram")
    if unigram:
        row = {"variant": "unigram baseline", "status": "baseline", "final_val_loss": unigram.get("val_loss_nats"),
               "loss_objective": "unigram", "held_out_bits_per_byte": unigram.get("bits_per_byte"),
               "held_out_is_pll": False}
        table = pd.concat([table, pd.DataFrame([row])], ignore_index=True)
    return table


def variant_order(runs: list[dict], experiment: str) -> list[str]:
    """The variants in the order the report shows them: the paper's grid for wang2022, else by name."""
    names = sorted({r["variant"] for r in runs})
    if experiment == WANG2022:
        grid = list(WANG2022_NAMES)
        names.sort(key=lambda v: (grid.index(v) if v in grid else len(grid), v))
    return names


def _check_duplicates(runs: list[dict]) -> None:
    seen: dict[tuple, str] = {}
    for run in runs:
        if run["status"] != "completed":
            continue
        key = (run["variant"], run.get("seed"))
        if key in seen:
            raise UserError(
                f"runs {seen[key]} and {run['run_name']} are both variant {key[0]} seed {key[1]}; "
                "remove one of the two folders"
            )
        seen[key] = run["run_name"]


# ---------------------------------------------------------------- findings (Wang et al. 2022)


@dataclass
class Verdict:
    better: str
    worse: str
    difference: float | None  # better - worse, in the average zero-shot score
    p: float | None
    test: str | None
    word: str  # reproduced | contradicted | not significant at this scale | not tested


def _average_scores(runs: list[dict], long: pd.DataFrame) -> tuple[list[str], dict[str, dict]]:
    """(multiple-choice tasks every Wang variant has at 0 shots, {variant: {seed: average}})."""
    zero = long[long["shots"] == 0]
    metric_of = {task: primary_metric(set(rows["metric"])) for task, rows in long.groupby("task")}
    keep = [metric_of[t] == m and m in MULTIPLE_CHOICE_METRICS for t, m in zip(zero["task"], zero["metric"])]
    zero = zero.loc[np.array(keep, dtype=bool)]
    present = [v for v in WANG2022_NAMES if v in set(zero["variant"])]
    tasks = sorted(set.intersection(*(set(zero[zero["variant"] == v]["task"]) for v in present))) if present else []
    zero = zero[zero["task"].isin(tasks)]
    averages: dict[str, dict] = {}
    for (variant, seed), rows in zero.groupby(["variant", "seed"]):
        if len(rows) == len(tasks):
            averages.setdefault(variant, {})[seed] = float(rows["value"].mean())
    return tasks, averages


def _verdict(
    better: str, worse: str, tasks: list[str], averages: dict, long: pd.DataFrame, comparer: Comparer
) -> Verdict:
    if better not in averages or worse not in averages or not tasks:
        return Verdict(better, worse, None, None, None, "not tested")
    a, b = averages[better], averages[worse]
    difference = float(np.mean(list(a.values())) - np.mean(list(b.values())))
    cells = score_cells(long[(long["shots"] == 0) & long["task"].isin(tasks)])
    pairs = [(seed, seed) for seed in a if seed in b]
    if not pairs and len(a) == 1 and len(b) == 1:
        pairs = [(next(iter(a)), next(iter(b)))]
    strata = []
    for task in tasks:
        metric, by_variant = cells[(task, 0)]
        matrix = comparer.difference_matrix(by_variant[better], by_variant[worse], metric, pairs)
        strata.append(matrix)
    if all(m is not None for m in strata) and strata:
        n = sum(m.shape[1] for m in strata)
        if len(pairs) >= 2:
            p = seeds_examples_bootstrap(strata)[1]
            test = f"seeds × examples pooled over {len(tasks)} tasks (k={len(pairs)}, n={n})"
        else:
            p = paired_bootstrap([m[0] for m in strata])[1]
            test = f"examples pooled over {len(tasks)} tasks (n={n})"
    elif len(pairs) >= 2:
        p, test = seed_bootstrap([a[s] - b[s] for s, _ in pairs])
    else:
        p, test = None, None
    if p is None:
        return Verdict(better, worse, difference, None, None, "not tested")
    if p >= ALPHA:
        word = "not significant at this scale"
    else:
        word = "reproduced" if difference > 0 else "contradicted"
    return Verdict(better, worse, difference, p, test, word)


def wang2022_findings(runs: list[dict], long: pd.DataFrame, comparer: Comparer | None = None) -> list[tuple[str, Any]]:
    """The report's findings section: each claim with its pairwise verdicts and an overall verdict."""
    comparer = comparer or Comparer()
    tasks, averages = _average_scores(runs, long)
    blocks: list[tuple[str, Any]] = [("h2", "Findings: Wang et al. 2022")]
    multi = any(len(seeds) >= 2 for seeds in averages.values())
    test = (
        "a paired bootstrap over seeds and examples together (Multi-Bootstrap, Sellam et al. 2022: seeds paired "
        "by seed, examples matched by doc_id and resampled within each task)"
        if multi
        else "a paired bootstrap over the per-example outcomes matched by doc_id, resampled within each task"
    )
    blocks.append(("p", (
        "Wang et al. (2022), *What Language Model Architecture and Pretraining Objective Work Best for "
        "Zero-Shot Generalization?*, report these orderings after unsupervised pretraining. Each is checked "
        f"here on the average zero-shot score over the {len(tasks)} multiple-choice tasks that every variant "
        f"was evaluated on ({', '.join(tasks) or 'none'}), with {test} ({RESAMPLES:,} resamples, seed "
        f"{BOOTSTRAP_SEED}, two-sided, α = {ALPHA}). A claim is *reproduced* only when every pairwise difference "
        "goes the paper's way and is significant, *contradicted* when any significant difference goes the other "
        "way, and otherwise *not significant at this scale*."
    )))
    for title, paper, pairs in WANG2022_CLAIMS:
        variants = list(dict.fromkeys(v for pair in pairs for v in pair))
        here = ", ".join(
            f"{v} {sig3(np.mean(list(averages[v].values())))}" if v in averages else f"{v} {MISSING}" for v in variants
        )
        blocks.append(("p", f"**{title}.** In the paper, {paper}. Here (average zero-shot score): {here}."))
        verdicts = [_verdict(better, worse, tasks, averages, long, comparer) for better, worse in pairs]
        items = []
        for v in verdicts:
            if v.difference is None:
                items.append(f"{v.better} vs {v.worse}: not tested (no zero-shot multiple-choice scores for both).")
            elif v.p is None:
                items.append(
                    f"{v.better} − {v.worse} = {signed(v.difference)}: not tested (no per-example outcomes recorded, "
                    f"and fewer than {MIN_SEEDS_ALONE} seeds to test their scores alone)."
                )
            elif v.word == "not significant at this scale":
                items.append(
                    f"{v.better} − {v.worse} = {signed(v.difference)} ({p_text(v.p)}, {v.test}): not significant "
                    "at this scale; this report cannot tell the two apart."
                )
            else:
                items.append(f"{v.better} − {v.worse} = {signed(v.difference)} ({p_text(v.p)}, {v.test}): {v.word}.")
        blocks.append(("ul", items))
        words = {v.word for v in verdicts}
        if "contradicted" in words:
            overall = "contradicted"
        elif words == {"reproduced"}:
            overall = "reproduced"
        elif "not significant at this scale" in words:
            overall = "not significant at this scale"
            if "reproduced" in words:
                overall += " (only part of the ordering is significant)"
        else:
            overall = "not tested (some of the variants or outcomes it needs are missing)"
        blocks.append(("p", f"**Verdict: {overall}.**"))
    return blocks


# ---------------------------------------------------------------- plots


def _colors(variants: list[str]) -> dict[str, Any]:
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


# ---------------------------------------------------------------- rendering


def _inline_html(text: str) -> str:
    text = html.escape(text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    text = re.sub(r"\*(.+?)\*", r"<em>\1</em>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


def _markdown_table(table: pd.DataFrame) -> str:
    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(c) for c in table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)


def render_markdown(blocks: list[tuple[str, Any]]) -> str:
    parts = []
    for kind, content in blocks:
        if kind in ("h1", "h2"):
            parts.append(f"{'#' * int(kind[1])} {content}")
        elif kind == "p":
            parts.append(content)
        elif kind == "ul":
            parts.append("\n".join(f"- {item}" for item in content))
        elif kind == "table":
            parts.append(_markdown_table(content))
        elif kind == "img":
            title, name, _ = content
            parts.append(f"![{title}]({name})")
    return "\n\n".join(parts) + "\n"


CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1400px; padding: 0 1em; color: #222; }
table { border-collapse: collapse; font-size: 0.85em; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; white-space: nowrap; }
th { background: #f2f2f2; }
tr:nth-child(even) td { background: #fafafa; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
.scroll { overflow-x: auto; }
code { background: #f4f4f4; padding: 0 0.2em; }
"""


def render_html(blocks: list[tuple[str, Any]], title: str) -> str:
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>",
    ]
    for kind, content in blocks:
        if kind in ("h1", "h2"):
            parts.append(f"<{kind}>{_inline_html(content)}</{kind}>")
        elif kind == "p":
            parts.append(f"<p>{_inline_html(content)}</p>")
        elif kind == "ul":
            parts.append("<ul>" + "".join(f"<li>{_inline_html(item)}</li>" for item in content) + "</ul>")
        elif kind == "table":
            table_html = content.to_html(index=False, border=0, escape=True)
            table_html = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", table_html)  # a cell's bold best estimate
            parts.append('<div class="scroll">' + table_html + "</div>")
        elif kind == "img":
            alt, _, png = content
            data = base64.b64encode(png).decode("ascii")
            parts.append(f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"></figure>')
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


# ---------------------------------------------------------------- the report


def scores_legend(table: pd.DataFrame) -> str:
    """The mark rule, the correction and the interval types of a score table (harness.report_marks)."""
    ranked = table[~table["pll"]]
    untested = ranked.groupby(["task", "shots"])["test"].apply(lambda t: t.isna().all() and len(t) >= 2).any()
    # a cell's tests are joined by "; ", which the one-seed caveat itself contains: keep it whole
    tests = {t for text in table["test"].dropna() for t in re.split(r"; (?!training-seed)", str(text))}
    return report_marks.legend(set(table["interval"]), tests, bool((table["n_seeds"] <= 1).all()), bool(untested))


def write_report(folder: Path | str) -> Path:
    """Build the report of a results folder from its run folders; return the path of report.md."""
    folder = Path(folder)
    runs = store.require_runs(folder)
    _check_duplicates(runs)
    baseline = store.load_baseline(folder)
    long = store.scores(folder, runs)
    groups, long = long[long["subtasks"].notna()], long[long["subtasks"].isna()]  # a group's mean: its own section
    comparer = Comparer()
    table = provenance.with_n(score_table(long, comparer), long)  # n per score: scores.csv and the table
    experiment = Counter(r["experiment"] for r in runs).most_common(1)[0][0]
    variants = variant_order(runs, experiment)
    runs = sorted(runs, key=lambda r: variants.index(r["variant"]))  # stable: seeds stay in order
    colors = _colors(variants)
    status = Counter(r["status"] for r in runs)
    tokenizer = store.check_one_tokenizer(runs)
    _, shared_knobs = varying_knobs(runs)
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")

    blocks: list[tuple[str, Any]] = [("h1", f"arches report: {experiment}")]
    data = ", ".join(sorted({str(r.get("data")) for r in runs}))
    sizes = ", ".join(sorted({str(r.get("size")) for r in runs}))
    blocks.append(("p", (
        f"Generated {when} by `arches report {folder}` from {len(runs)} run folder(s): "
        + ", ".join(f"{n} {s}" for s, n in sorted(status.items()))
        + f". Tokenizer `{str(tokenizer or MISSING)[:12]}`; data {data}; size {sizes}."
    )))
    blocks += provenance.header_blocks(runs)
    blocks.append(("h2", "Runs"))
    blocks.append(("table", runs_display(runs, baseline)))
    matching = flops_matching(runs)
    if matching:
        blocks.append(("p", matching))
    blocks.append(("p", (
        "Validation loss is labelled with its objective: losses of different objectives (e.g. lm and mlm) are "
        "not comparable. Held-out bits/byte come from the corpus_ppl evaluation; encoder figures are "
        "pseudo-log-likelihoods (PLL, Salazar et al. 2020), not comparable to true likelihoods."
        + (f" Knobs shared by every run: {', '.join(f'{k}={_knob_text(v)}' for k, v in shared_knobs.items())}."
           if shared_knobs else "")
    )))
    blocks.append(("h2", "Scores"))
    if table.empty:
        blocks.append(("p", "No evaluation scores are recorded in these runs yet."))
    else:
        display = score_display(table, [v for v in variants if v in set(table["variant"])])
        blocks.append(("table", provenance.n_column(display, table)))
        blocks.append(("p", (
            "Primary metric per task: acc_norm where the task has it, else acc (multiple choice, higher is "
            "better ↑); bits_per_byte for perplexity tasks (lower is better ↓); n: the examples scored, of those "
            "the task holds. " + scores_legend(table)
        )))
    from harness.report_groups import group_blocks  # it builds on this module's statistics

    blocks += group_blocks(groups, long, [v for v in variants if v in set(groups["variant"])], comparer)
    if experiment == WANG2022:
        blocks += wang2022_findings(runs, long, comparer)

    plots = [
        ("Training curves: validation loss against tokens seen, one panel per objective", "training_curves.png",
         plot_training_curves(runs, baseline, colors)),
        ("Each task's score against training FLOPs", "score_vs_flops.png",
         plot_score_vs_flops(runs, long, table, colors)),
        ("Zero-shot against few-shot score per variant", "score_vs_shots.png", plot_score_vs_shots(table, colors)),
        ("Training throughput (tokens/s) per variant", "throughput.png", plot_throughput(runs, colors)),
    ]
    blocks.append(("h2", "Plots"))
    for title, name, png in plots:
        if png is None:
            (folder / name).unlink(missing_ok=True)  # a plot of an earlier report that no longer applies
            continue
        store.write_bytes_atomic(folder / name, png)
        blocks += [("p", f"**{title}.**"), ("img", (title, name, png))]
    if all(png is None for _, _, png in plots):
        blocks.append(("p", "No plots yet: no run has a validation history, scores or a throughput."))

    store.write_text_atomic(folder / "runs.csv", runs_raw(runs, baseline).to_csv(index=False))
    store.write_text_atomic(folder / "scores.csv", table.to_csv(index=False))
    store.write_index(folder)
    store.write_text_atomic(folder / "report.html", render_html(blocks, f"arches report: {experiment}"))
    return store.write_text_atomic(folder / "report.md", render_markdown(blocks))


def report_command(argv: list[str]) -> None:
    """`arches report <results folder>`: write the report and print its path as the last line."""
    if argv in (["-h"], ["--help"]):
        print(USAGE)
        return
    if len(argv) != 1 or argv[0].startswith("-"):
        raise UserError(f"expected one results folder, got {' '.join(argv) or 'nothing'}; {USAGE}")
    if "=" in argv[0] and not Path(argv[0]).exists():
        raise UserError(f"arches report takes a results folder, not an override ({argv[0]}); {USAGE}")
    print(write_report(argv[0]))
