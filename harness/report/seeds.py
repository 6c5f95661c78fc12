"""The seed values behind every mean over seeds: seeds.csv and the plots' dots (issue 16, item 1)."""

from __future__ import annotations

import pandas as pd

from harness.report.scores import primary_metric

SEED_COLUMNS = ["task", "shots", "metric", "primary", "variant", "seed", "run_name", "value", "n"]


def seed_values(*longs: pd.DataFrame) -> pd.DataFrame:
    """One row per (task, shots, metric, variant, seed) of the store's long score tables
    (`harness.store.scores`): the seed's value and n, the examples it was scored on.
    `primary` marks the metric the score table shows for the task (acc_norm, else acc, ...)."""
    long = pd.concat([frame for frame in longs if len(frame)] or [pd.DataFrame(columns=SEED_COLUMNS)],
                     ignore_index=True)
    if long.empty:
        return pd.DataFrame(columns=SEED_COLUMNS)
    primary = {task: primary_metric(set(rows["metric"])) for task, rows in long.groupby("task")}
    table = pd.DataFrame({
        "task": long["task"], "shots": long["shots"].astype(int), "metric": long["metric"],
        "primary": [primary[t] == m for t, m in zip(long["task"], long["metric"])],
        "variant": long["variant"], "seed": pd.array(long["seed"].tolist(), dtype="Int64"),
        "run_name": long["run_name"], "value": long["value"].astype(float),
        # counts stay integers next to missing ones (a plain column would write 100 as 100.0)
        "n": pd.array([int(n) if pd.notna(n) else None for n in long["n"]], dtype="Int64"),
    })
    return table.sort_values(["task", "shots", "metric", "variant", "seed"], ignore_index=True)
