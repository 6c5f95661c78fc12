"""`arches tune [-m] arch=<preset> tune=<space> [overrides]`: parse, then run or resume each study."""

from __future__ import annotations

import os

from arches.config import check_overrides, expand_grid, split_multirun
from arches.errors import UserError
from arches.tune.best import best_table, write_best
from arches.tune.ranks import launched_rank, ranks_for
from arches.tune.run import prepare_job, run_job


def grid(argv: list[str]) -> list[list[str]]:
    """The overrides of each study the command line names: one, or with -m one per job of
    its grid (`arches.config.expand_grid`, the expansion of `arches train -m`)."""
    multirun, overrides = split_multirun(argv)
    check_overrides(overrides)
    jobs = expand_grid(overrides)
    if multirun:
        return jobs
    if len(jobs) > 1:
        swept = next(text for text in overrides if len(expand_grid([text])) > 1)
        raise UserError(f"{swept} lists several values; add -m to tune each in turn")
    return [overrides]


def tune_command(argv: list[str]) -> None:
    """`arches tune [-m] arch=<preset> tune=<space> [overrides]`.

    -m runs one study per job of the grid (`grid`: Hydra's expansion), one after another,
    each with the same budget. The jobs run here rather than in Hydra's multirun: a study
    composes a fresh config per trial with Hydra's compose API, which would reset the
    global state of a running Hydra app, and parallelism comes from workers instead:
    several `arches tune` processes or machines on one tune.storage share a study."""
    import optuna

    if not os.environ.get("ARCHES_DEBUG"):
        # one line per trial comes from here; Optuna would add a traceback per failed trial
        optuna.logging.set_verbosity(optuna.logging.ERROR)
    # every job validated before any study is touched
    jobs = [prepare_job(overrides) for overrides in grid(argv)]
    with ranks_for([job for job in jobs if not job.settings.best]) as ranks:
        if ranks is not None and ranks.follower:  # trains rank 0's trials; rank 0 reports
            ranks.follow()
            return
        for job in jobs:
            if job.settings.best:
                if launched_rank() == 0:  # under torchrun or srun, every rank runs this command
                    result, path = write_best(job)
                    print(best_table(result))
                    print(path)
                continue
            result = run_job(job, ranks=ranks)
            best = "no complete trial"
            if result["best_value"] is not None:
                best = f"best {result['metric']} {result['best_value']:.4f}"
            print(f"{result['study']}\t{result['n_trials']} trials\t{best}\t{result['storage']}", flush=True)
