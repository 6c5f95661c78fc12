"""One way to name several presets: `train -m` (Hydra's multirun), `tune -m` and `bench arch=a,b`
read `arch=a,b size=x,y` as one grid, `arches.config.expand_grid` (Hydra's own override grammar and
its basic sweeper's cartesian product), in the same order; a grid Hydra cannot read is one line."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from arches.config import expand_grid
from arches.errors import UserError

GRID = ["arch=gpt,bert", "size=debug,tiny"]
ROWS = [["arch=gpt", "size=debug"], ["arch=gpt", "size=tiny"], ["arch=bert", "size=debug"], ["arch=bert", "size=tiny"]]


def test_the_grid_is_every_combination_in_order():
    assert expand_grid(GRID) == ROWS
    assert expand_grid([]) == [[]]
    # brackets are one value, range() sweeps, a key given twice keeps its first place and its last value
    rows = expand_grid(["arch=gpt", "data.paths=[/a,/b]", "seed=range(1,3)", "arch=t5,glm"])
    assert rows == [["arch=t5", "data.paths=[/a,/b]", "seed=1"], ["arch=t5", "data.paths=[/a,/b]", "seed=2"],
                    ["arch=glm", "data.paths=[/a,/b]", "seed=1"], ["arch=glm", "data.paths=[/a,/b]", "seed=2"]]


def test_train_multirun_launches_the_grid(tmp_path):
    """The real `arches train -m`: Hydra's multirun launches each job, which fails its settings check at once."""
    argv = [*GRID, "run_name=${arch.name}-${size.name}", "train.micro_batch_size=0", f"results_dir={tmp_path}"]
    done = subprocess.run([sys.executable, "-m", "arches.cli", "train", "-m", *argv], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)  # fmt: skip
    launched = [line.split()[:2] for line in re.findall(r"#\d+ : (.*)", done.stdout + done.stderr)]
    assert launched == ROWS, done.stdout + done.stderr
    assert done.returncode == 2
    assert "(gpt-debug, gpt-tiny, bert-debug, bert-tiny)" in done.stderr.strip().splitlines()[-1]


def test_tune_multirun_runs_one_study_per_job_of_the_grid():
    from arches.tune.command import grid
    from arches.tune.run import prepare_job

    jobs = grid(["-m", *GRID, "tune=lr_wd"])
    assert jobs == expand_grid([*GRID, "tune=lr_wd"]) and [job[:2] for job in jobs] == ROWS
    studies = [prepare_job(job).study for job in jobs]
    assert [study.split("-")[:2] for study in studies] == [[a[5:], s[5:]] for a, s in ROWS]
    with pytest.raises(UserError, match="arch=gpt,bert lists several values; add -m"):
        grid([*GRID, "tune=lr_wd"])


def test_bench_measures_the_presets_of_the_grid_in_order():
    from harness import bench

    presets = [row[0].removeprefix("arch=") for row in expand_grid(["arch=t5,gpt,bert", "size=tiny"])]
    assert presets == ["t5", "gpt", "bert"]
    assert bench.parse(["arch=t5,gpt,bert", "size=tiny"])[:2] == (presets, "tiny")
    assert bench.parse(["arch=gpt, bert"])[0] == ["gpt", "bert"]
    with pytest.raises(UserError, match="one size at a time"):  # bench measures the grid's presets at one size
        bench.parse(GRID)


@pytest.mark.parametrize(
    ("command", "bad", "message"),
    [
        (["train", "-m"], "arch=gpt,", "bad override: mismatched input"),
        (["tune", "-m", "tune=lr_wd"], "arch=gpt,", "bad override: mismatched input"),
        (["bench", "--quick"], "arch=gpt,", "bad override: mismatched input"),
        (["train", "-m"], "train.lr=interval(0,1)", "train.lr=interval(0,1): a grid takes lists and ranges"),
        (["tune", "-m", "tune=lr_wd"], "train.lr=interval(0,1)", "a grid takes lists and ranges, not intervals"),
    ],
)
def test_a_bad_grid_is_one_line(command, bad, message, capsys):
    from arches.cli import main

    with pytest.raises(SystemExit) as exit_:
        main([*command, bad])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("arches: error: ") and message in err, err
