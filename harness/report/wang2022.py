"""Findings for the wang2022 experiment (Wang et al. 2022): each published ordering with its verdict."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from harness.report.formatting import MISSING, p_text, sig3, signed
from harness.report.scores import (
    MULTIPLE_CHOICE_METRICS,
    Comparer,
    primary_metric,
    score_cells,
)

ALPHA = 0.05
RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
MIN_SEEDS_ALONE = 5  # fewest seeds whose scores alone (no per-example outcomes) are bootstrapped

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


def seed_bootstrap(differences: list[float]) -> tuple[float | None, str | None]:
    """(p, test) of a paired bootstrap over seeds' scores alone, or (None, None) below MIN_SEEDS_ALONE.

    With k seeds that all favour one variant every resample does too (p = 0) whatever k is;
    an exact sign-flip test over 2 or 3 seeds could never reach p < 0.05. Below
    MIN_SEEDS_ALONE seeds the scores alone cannot support a significance mark.
    """
    if len(differences) < MIN_SEEDS_ALONE:
        return None, None
    return paired_bootstrap(differences)[1], f"seeds (n={len(differences)})"



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
