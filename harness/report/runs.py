"""The runs tables: what each run trained (parameters, FLOPs, tokens, losses) and its knobs."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from arches.errors import UserError
from harness import store
from harness.report.formatting import MISSING, _number, duration, si, sig3
from harness.report.scores import pseudo_likelihood
from harness.report.wang2022 import WANG2022, WANG2022_NAMES

HELD_OUT_TASK = "corpus_ppl"  # the held-out split of the training corpus, scored by lm-eval
FLOPS_MATCHED_WITHIN = 0.10  # variants further apart in FLOPs/token from the first are not FLOPs-matched


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


def knob_text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return str(value)


def varying_knobs(runs: list[dict]) -> tuple[list[str], dict[str, Any]]:
    """(knobs that differ between runs, {knob: value} shared by all runs)."""
    knobs = [run.get("knobs") or {} for run in runs]
    names = sorted({name for k in knobs for name in k})
    varying = [n for n in names if len({knob_text(k.get(n, MISSING)) for k in knobs}) > 1]
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
    """The format(s) the run's recorded scores were computed in (harness/eval/command.py records one per entry)."""
    return ", ".join(sorted({str(e["format"]) for e in run["evals"].values() if e.get("format")})) or MISSING


def baseline_scored(unigram: dict) -> str:
    """What the unigram baseline was scored on: "the val split (loss) and the N corpus_ppl passages (bits
    per byte)"; a baseline written before that named a split."""
    scored = unigram.get("split") or "held-out"
    return scored if scored.startswith("the ") else f"the {scored} split"


def runs_display(runs: list[dict], baseline: dict | None) -> pd.DataFrame:
    """The human runs table, with the unigram baseline row last."""
    ratios = flops_ratios(runs)
    rows = []
    for run in runs:
        loss = run.get("final_val_loss")
        bpb = held_out_bpb(run)
        pll = pseudo_likelihood(run.get("family"))
        rows.append({  # the comparison's numbers first (issue 16, item 9); the knobs have their own table
            "variant": run["variant"],
            "seed": MISSING if run.get("seed") is None else str(run["seed"]),
            "params": si(run.get("params_total")),
            "FLOPs/token": si(run.get("flops_per_token")),
            "FLOPs/token vs first": f"{ratios[run['variant']]:.2f}×" if run["variant"] in ratios else MISSING,
            "tokens seen": si(run.get("tokens_seen")),
            "train FLOPs": si(run.get("train_flops")),
            "val loss (objective)": f"{sig3(loss)} ({objective_of(run)})" if _number(loss) else MISSING,
            "held-out bits/byte": (f"{sig3(bpb)} (PLL)" if pll else sig3(bpb)) if bpb is not None else MISSING,
            "status": run["status"],
            "family": run.get("family") or MISSING,
            "preset": run.get("preset") or MISSING,
            "non-emb. params": si(run.get("params_non_embedding")),
            "loss tokens seen": si(run.get("loss_tokens_seen")),
            "wall time": duration(run.get("wall_time_s")),
            "tokens/s": si(run.get("tokens_per_s")),
            "scoring format": scoring_formats(run),
            "tuned": f"yes ({run.get('tuned_trials')} trials)" if run.get("tuned") else "no",
            "error": run.get("error") or "",
        })
    unigram = (baseline or {}).get("unigram")
    if unigram:
        row = dict.fromkeys(rows[0] if rows else [], MISSING)
        loss = unigram.get("val_loss_nats")
        scored = baseline_scored(unigram)
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
    table["held_out_is_pll"] = [pseudo_likelihood(run.get("family")) for run in runs]
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


def check_duplicates(runs: list[dict]) -> None:
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
