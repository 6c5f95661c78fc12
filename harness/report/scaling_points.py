"""A ladder's observations: one row per completed run x scaling metric, read from its rung folders.

`arches compare` lays a ladder out as `<experiment>/<size>/<variant>-seed<N>/` (harness.ladder),
each run recording its rung (`ladder_rung`). The Scaling section fits each variant's curve over
those rows; this module only reads and checks them.

The metrics are the ones comparable across families (issue 18):
- held-out bits/byte (corpus_ppl), for the families with a true likelihood only: the encoder's
  pseudo-log-likelihood (Salazar et al. 2020) is not a likelihood and is not on that axis;
- the minimal-pair accuracy (corpus_pairs' mean over its kinds) and the next-line multiple-choice
  accuracy (corpus_next), for every family, each scored in the family's own format.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from arches.errors import UserError
from arches.train.record import read_record
from harness import store
from harness.report.runs import check_duplicates, held_out_bpb


@dataclass(frozen=True)
class ScalingMetric:
    key: str  # the column and file name
    label: str  # the axis and the tables
    task: str
    metric: str
    form: str  # "power_law" (a loss, falling to a floor) or "logistic" (an accuracy, from chance to a ceiling)
    exact_likelihood_only: bool

    @property
    def higher_is_better(self) -> bool:
        return self.form == "logistic"


METRICS = (
    ScalingMetric("bits_per_byte", "held-out bits/byte ↓", "corpus_ppl", "bits_per_byte", "power_law", True),
    ScalingMetric("minimal_pairs", "minimal-pair accuracy ↑", "corpus_pairs", "acc", "logistic", False),
    ScalingMetric("next_line", "next-line choice accuracy (acc_norm) ↑", "corpus_next", "acc_norm", "logistic",
                  False),
)
POINT_COLUMNS = ("rung", "size", "variant", "family", "seed", "run_name", "params", "tokens", "flops", "metric",
                 "value", "chance")


@dataclass(frozen=True)
class Rung:
    index: int
    size: str
    folder: Path
    runs: tuple  # every run record of the rung, completed or not


def is_ladder_folder(folder: Path | str) -> bool:
    """A folder of rung folders (`<size>/<run>/run.json` with `ladder_rung`), not of runs."""
    folder = Path(folder)
    if not folder.is_dir() or any(folder.glob(f"*/{store.RUN_RECORD}")):
        return False
    return any(read_record(path.parent).to_dict().get("ladder_rung") is not None
               for path in folder.glob(f"*/*/{store.RUN_RECORD}"))


def ladder_rungs(folder: Path | str) -> list[Rung]:
    """The rungs below a ladder's folder, smallest first; one line where the folders disagree."""
    folder = Path(folder)
    by_index: dict[int, list[tuple[Path, list[dict]]]] = defaultdict(list)
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        runs = [r for r in store.load_runs(sub) if r.get("ladder_rung") is not None]
        indices = {int(r["ladder_rung"]) for r in runs}
        if len(indices) > 1:
            raise UserError(f"{sub} holds runs of ladder rungs {sorted(indices)}; a rung folder holds one rung, "
                            f"so move the runs to their own size's folder")
        if runs:
            by_index[indices.pop()].append((sub, runs))
    if not by_index:
        raise UserError(f"{folder} has no ladder rungs (no <size>/<run>/{store.RUN_RECORD} with a ladder_rung); "
                        f"run `arches compare experiment=ladder` to create them")
    rungs = []
    for index in sorted(by_index):
        if len(by_index[index]) > 1:
            names = " and ".join(str(sub) for sub, _ in by_index[index])
            raise UserError(f"{names} both hold ladder rung {index}; remove the stale one")
        sub, runs = by_index[index][0]
        sizes = {str(r.get("size")) for r in runs}
        if len(sizes) > 1:
            raise UserError(f"{sub} holds runs of sizes {sorted(sizes)}; a rung is one size")
        check_duplicates(runs)
        rungs.append(Rung(index, sizes.pop(), sub, tuple(runs)))
    store.check_one_tokenizer([r for rung in rungs for r in rung.runs])  # one tokenizer over the whole ladder
    return rungs


def scaling_points(rungs: list[Rung]) -> pd.DataFrame:
    """One row per completed run x metric it has (POINT_COLUMNS); `flops` is the run's spent
    training FLOPs (its record's train_flops), the fits' x axis."""
    from arches import registry

    rows = []
    for rung in rungs:
        completed = [r for r in rung.runs if r.get("status") == "completed"]
        scores = store.scores(rung.folder, completed) if completed else pd.DataFrame(columns=store.SCORE_COLUMNS)
        scores = scores[scores["shots"] == 0]
        for run in completed:
            base = {"rung": rung.index, "size": rung.size, "variant": run["variant"], "family": run.get("family"),
                    "seed": run.get("seed"), "run_name": run["run_name"], "params": run.get("params_total"),
                    "tokens": run.get("tokens_seen"), "flops": run.get("train_flops")}
            exact = run.get("family") in registry.FAMILIES and not registry.family(run["family"]).pseudo_likelihood
            for metric in METRICS:
                if metric.exact_likelihood_only and not exact:
                    continue
                value, chance = _value(run, scores, metric)
                if value is not None:
                    rows.append({**base, "metric": metric.key, "value": value, "chance": chance})
    return pd.DataFrame(rows, columns=list(POINT_COLUMNS))


def _value(run: dict, scores: pd.DataFrame, metric: ScalingMetric) -> tuple[float | None, float | None]:
    if metric.task == "corpus_ppl":
        return held_out_bpb(run), None
    mine = scores[(scores["run_name"] == run["run_name"]) & (scores["task"] == metric.task)
                  & (scores["metric"] == metric.metric)]
    if mine.empty:
        return None, None
    row = mine.iloc[0]
    chance = row["chance"]
    return float(row["value"]), (float(chance) if pd.notna(chance) else None)
