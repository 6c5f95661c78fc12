"""`experiment.ladder`: `arches compare` plans every variant x seed at each size, one ordinary
run folder a rung with its size and token budget; bad ladders are one line before anything
is trained; experiments without a ladder plan what they always did."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import local_corpus

from arches.config import compose
from arches.core.stack import parameter_counts
from arches.errors import UserError
from arches.registry import family, model_config, plain
from harness.compare import QUICK_OVERRIDES, PlannedRun, experiment_dir, plan

LADDER = ["ladder_xs", "ladder_s", "ladder_m"]


def local_overrides(tmp_path: Path) -> list[str]:
    return [*local_corpus(tmp_path), f"results_dir={tmp_path / 'results'}"]


def total_parameters(overrides: list[str]) -> int:
    """N of a run, from a model built on the CPU (the plan counts on the meta device)."""
    cfg = compose(overrides)
    arch = plain(cfg.arch)
    model = family(arch["family"]).build(model_config(arch, cfg.size, int(cfg.data.vocab_size)), arch)
    return parameter_counts(model)["total"]


@pytest.mark.parametrize("experiment", ["families", "wang2022"])
@pytest.mark.parametrize("quick", [False, True])
def test_without_a_ladder_the_plan_is_what_it_always_was(experiment, quick, tmp_path):
    user = [*local_overrides(tmp_path), *(["quick=true"] if quick else [])]
    cfg, runs, _ = plan([f"experiment={experiment}", *user])
    common = [f"experiment={experiment}", *(QUICK_OVERRIDES if quick else [])]
    shared = list(cfg.experiment.get("common") or [])
    expected = [
        PlannedRun(variant, int(seed), [*common, *shared, *overrides, *user, f"seed={seed}", f"variant={variant}"],
                   experiment_dir(cfg) / f"{variant}-seed{seed}")
        for variant, overrides in cfg.experiment.variants.items() for seed in cfg.experiment.seeds
    ]  # fmt: skip
    assert runs == expected
    assert all(run.size is None and run.rung is None for run in runs)


def test_the_shipped_ladder_plans_every_rung_at_its_budget(tmp_path):
    cfg, runs, _ = plan(["experiment=ladder", *local_overrides(tmp_path)])
    variants, seeds = list(cfg.experiment.variants), list(cfg.experiment.seeds)
    assert list(cfg.experiment.ladder.sizes) == LADDER and variants == ["gpt", "bert", "t5", "glm"]
    assert seeds == [0, 1, 2]
    # a ladder climbs: every variant and seed at one rung before the next
    # each rung an experiment folder of its own, reported on its own
    assert [f"{run.run_dir.parent.name}/{run.run_dir.name}" for run in runs] == [
        f"{size}/{variant}-seed{seed}" for size in LADDER for variant in variants for seed in seeds
    ]
    assert {run.run_dir.parent for run in runs} == {tmp_path / "results" / "ladder" / size for size in LADDER}
    per_param = cfg.experiment.ladder.tokens_per_param
    budgets = {}
    for run in runs:
        assert run.rung == LADDER.index(run.size) and run.overrides[-2] == f"size={run.size}"
        run_cfg = compose(run.overrides)
        assert run_cfg.size.name == run.size and run_cfg.seed == run.seed and run_cfg.variant == run.variant
        budgets[run.variant, run.size] = run_cfg.train.max_tokens
    for variant in variants:
        run = next(r for r in runs if r.variant == variant and r.size == "ladder_m" and r.seed == 0)
        assert budgets[variant, "ladder_m"] == round(per_param * total_parameters(run.overrides))
        assert budgets[variant, "ladder_xs"] < budgets[variant, "ladder_s"] < budgets[variant, "ladder_m"]


def test_explicit_budgets_and_quick(tmp_path):
    ladder = "+experiment.ladder={sizes:[debug,ladder_xs],tokens:[3000,5000]}"
    cfg, runs, _ = plan(["experiment=families", *local_overrides(tmp_path), ladder, "experiment.seeds=[1]"])
    assert [(f"{run.run_dir.parent.name}/{run.run_dir.name}", run.rung) for run in runs] == [
        *[(f"debug/{variant}-seed1", 0) for variant in ("gpt", "bert", "t5", "glm")],
        *[(f"ladder_xs/{variant}-seed1", 1) for variant in ("gpt", "bert", "t5", "glm")],
    ]
    assert [compose(run.overrides).train.max_tokens for run in runs] == [3000] * 4 + [5000] * 4
    # a smoke check keeps the rungs' sizes, at one seed and quick's budget
    _, quick, _ = plan(["experiment=ladder", *local_overrides(tmp_path), "quick=true"])
    assert len(quick) == 12 and {run.seed for run in quick} == {0}
    assert [compose(run.overrides).size.name for run in quick] == [size for size in LADDER for _ in range(4)]
    assert {compose(run.overrides).train.max_tokens for run in quick} == {4096}


@pytest.mark.parametrize(
    "overrides, says",
    [
        (["experiment.ladder.sizes=[ladder_xs,ladder_mm]"], ["unknown size 'ladder_mm'", "ladder_m, ladder_s"]),
        (["experiment.ladder.sizes=[ladder_xs,ladder_xs]"], ["names a size twice"]),
        (["experiment.ladder.sizes=[]"], ["experiment.ladder.sizes"]),
        (["+experiment.ladder.tokens=[1000,2000,3000]"], ["one budget rule, not both"]),
        (["experiment.ladder.tokens_per_param=null"], ["one budget rule, and has none"]),
        (["experiment.ladder.tokens_per_param=null", "+experiment.ladder.tokens=[1000,2000]"], ["2 budgets for 3"]),
        (["experiment.ladder.tokens_per_param=-1"], ["experiment.ladder.tokens_per_param=-1 must be"]),
        (["+experiment.ladder.budget=1"], ["unknown setting 'experiment.ladder.budget'"]),
        (["size=tiny"], ["size=tiny: experiment.ladder sets size and train.max_tokens"]),
        (["train.max_tokens=1000"], ["train.max_tokens=1000: experiment.ladder sets"]),
    ],
)
def test_a_bad_ladder_is_one_line(overrides, says, tmp_path):
    with pytest.raises(UserError) as error:
        plan(["experiment=ladder", *local_overrides(tmp_path), *overrides])
    message = str(error.value)
    assert len(message.splitlines()) == 1
    for text in says:
        assert text in message


def env() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def ladder_cmd(tmp_path: Path, *extra: str) -> list[str]:
    """The families experiment cut to gpt alone, at two debug-sized rungs, scored on one cheap task."""
    return [sys.executable, "-m", "arches.cli", "compare", "experiment=families", "quick=true",
            *local_overrides(tmp_path), "~experiment.variants.bert=['arch=bert']",
            "~experiment.variants.t5=['arch=t5']", "~experiment.variants.glm=['arch=glm']",
            "+experiment.ladder={sizes:[debug,ladder_xs],tokens_per_param:1}", "train.micro_batch_size=2",
            "eval.tasks=[corpus_cloze]", "eval.limit=4", *extra]  # fmt: skip


def test_a_bad_ladder_stops_compare_before_any_work(tmp_path):
    result = subprocess.run(ladder_cmd(tmp_path, "experiment.ladder.sizes=[debug,huge]"), capture_output=True,
                            text=True, env=env(), timeout=120)  # fmt: skip
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown size 'huge'" in lines[0]
    assert not (tmp_path / "results").exists()


def finished(result: subprocess.CompletedProcess, folder: Path) -> None:
    """compare did all its work and wrote one report per rung, then the ladder's, printed last (two
    rungs: the Scaling section says why it fits nothing)."""
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == str(folder / "report.md")
    assert (folder / "debug" / "report.md").exists() and (folder / "ladder_xs" / "report.md").exists()
    assert f"compare: {folder / 'ladder_xs' / 'report.md'}" in result.stderr.replace("\n", "")
    assert "## Scaling" in (folder / "report.md").read_text()


def test_a_ladder_trains_each_rung_once_then_skips_it(tmp_path):
    # one rung first, as one job of a cluster would (compare.rungs), keeping its place in the ladder
    one = subprocess.run(ladder_cmd(tmp_path, "compare.rungs=[ladder_xs]"), capture_output=True, text=True,
                         env=env(), timeout=300)
    folder = tmp_path / "results" / "families-quick"
    assert one.returncode == 0, one.stderr[-3000:]
    assert [p.parent.parent.name for p in folder.glob("*/*/run.json")] == ["ladder_xs"]
    assert json.loads((folder / "ladder_xs" / "gpt-seed0" / "run.json").read_text())["ladder_rung"] == 1
    first = subprocess.run(ladder_cmd(tmp_path), capture_output=True, text=True, env=env(), timeout=300)
    finished(first, folder)
    assert "training gpt debug" in first.stderr and "training gpt ladder_xs" not in first.stderr
    records = {f"{p.parent.parent.name}/{p.parent.name}": json.loads(p.read_text()) for p in folder.glob("*/*/run.json")}
    assert set(records) == {"debug/gpt-seed0", "ladder_xs/gpt-seed0"}
    for name, rung, size in (("debug/gpt-seed0", 0, "debug"), ("ladder_xs/gpt-seed0", 1, "ladder_xs")):
        record = records[name]
        assert record["status"] == "completed" and record["compared_shots"] == [0]
        assert record["ladder_rung"] == rung and record["size"] == size and record["planned_tokens"] == 4096

    before = {name: (folder / name / "run.json").stat().st_mtime_ns for name in records}
    second = subprocess.run(ladder_cmd(tmp_path), capture_output=True, text=True, env=env(), timeout=300)
    finished(second, folder)
    assert "] training" not in second.stderr and "] evaluating" not in second.stderr
    assert before == {name: (folder / name / "run.json").stat().st_mtime_ns for name in records}


def test_compare_rungs_plans_only_those_rungs_in_their_places(tmp_path):
    _, runs, _ = plan(["experiment=ladder", "compare.rungs=[ladder_m,ladder_xs]", *local_overrides(tmp_path)])
    assert {(run.size, run.rung) for run in runs} == {("ladder_xs", 0), ("ladder_m", 2)}
    assert len(runs) == 2 * 4 * 3  # every variant and seed of the two rungs


@pytest.mark.parametrize("overrides, says", [
    (["experiment=ladder", "compare.rungs=[ladder_l]"], "compare.rungs: unknown rung 'ladder_l'; valid: ladder_m"),
    (["experiment=families", "compare.rungs=[ladder_xs]"], "experiment families has no experiment.ladder"),
    (["experiment=ladder", "compare.rungs=ladder_xs"], "compare.rungs"),
])
def test_bad_compare_rungs_are_one_line(overrides, says, tmp_path):
    with pytest.raises(UserError) as error:
        plan([*overrides, *local_overrides(tmp_path)])
    assert says in str(error.value) and "\n" not in str(error.value)
