"""The report's first tables: one row per variant (mean ± sd over its seeds) and the knobs that differ.

The per-run table (runs.runs_display) has every recorded field and is wide; a reader comparing
architectures wants the comparison's columns first (issue 16, item 9): what each variant is
(parameters, FLOPs), what it was trained on (tokens) and how well it fits held-out text (loss,
bits/byte), with the spread over training seeds beside each mean. The knobs that tell the
variants apart go in their own narrow table, and those every run shares in one sentence.
"""

from __future__ import annotations

import statistics as stats
from typing import Any

import pandas as pd

from harness.report.formatting import MISSING, _number, sd_text, si, sig3
from harness.report.runs import (
    flops_ratios,
    held_out_bpb,
    knob_text,
    objective_of,
    varying_knobs,
)
from harness.report.scores import pseudo_likelihood


def mean_sd_text(values: list[float]) -> str:
    """'2.47 ± 0.02 (3 seeds)': the mean and the sample standard deviation over seeds; one value alone."""
    values = [float(v) for v in values if _number(v)]
    if not values:
        return MISSING
    if len(values) == 1:
        return sig3(values[0])
    mean = stats.fmean(values)
    return sig3(mean) + sd_text(stats.stdev(values), mean)


def _first(runs: list[dict], key: str) -> Any:
    return next((r.get(key) for r in runs if _number(r.get(key))), None)


def variants_display(runs: list[dict], variants: list[str], baseline: dict | None) -> pd.DataFrame:
    """One row per variant over its completed runs: the comparison's columns, seeds' spread as ± sd."""
    ratios = flops_ratios(runs)
    rows = []
    for variant in variants:
        done = [r for r in runs if r["variant"] == variant and r["status"] == "completed"]
        mine = done or [r for r in runs if r["variant"] == variant]
        if not mine:
            continue
        family = mine[0].get("family")
        bpb = mean_sd_text([held_out_bpb(r) for r in done])
        objective = objective_of(mine[0])
        loss = mean_sd_text([r.get("final_val_loss") for r in done])
        rows.append({
            "variant": variant,
            "family": family or MISSING,
            "seeds": f"{len(done)} of {len(mine)}" if len(done) != len(mine) else str(len(done)),
            "params": si(_first(mine, "params_total")),
            "FLOPs/token": si(_first(mine, "flops_per_token")),
            "vs first": f"{ratios[variant]:.2f}×" if variant in ratios else MISSING,
            "tokens seen": si(_first(mine, "tokens_seen")),
            "train FLOPs": si(_first(mine, "train_flops")),
            "val loss (objective)": f"{loss} ({objective})" if loss != MISSING else MISSING,
            "held-out bits/byte": f"{bpb} (PLL)" if bpb != MISSING and pseudo_likelihood(family) else bpb,
        })
    unigram = (baseline or {}).get("unigram")
    if unigram and rows:
        row = dict.fromkeys(rows[0], MISSING)
        loss = unigram.get("val_loss_nats")
        row.update({"variant": "unigram baseline",
                    "val loss (objective)": f"{sig3(loss)} (unigram)" if _number(loss) else MISSING,
                    "held-out bits/byte": sig3(unigram.get("bits_per_byte"))})
        rows.append(row)
    return pd.DataFrame(rows)


def knobs_display(runs: list[dict], variants: list[str]) -> tuple[pd.DataFrame | None, str | None]:
    """(one row per variant: its preset and the knobs that differ between variants, or None where none
    differ; a sentence naming the knobs every run shares, or None)."""
    varying, shared = varying_knobs(runs)
    rows = []
    for variant in variants:
        mine = [r for r in runs if r["variant"] == variant]
        if not mine:
            continue
        knobs = mine[0].get("knobs") or {}
        row = {"variant": variant, "preset": mine[0].get("preset") or MISSING}
        row.update({name: knob_text(knobs[name]) if name in knobs else MISSING for name in varying})
        rows.append(row)
    table = pd.DataFrame(rows) if varying and rows else None
    sentence = (f"Knobs shared by every run: {', '.join(f'{k}={knob_text(v)}' for k, v in shared.items())}."
                if shared else None)
    return table, sentence
