"""`arches train [overrides]` and `arches train -m` (a Hydra grid): the command around
`arches.train.loop.train`, its grid's outcome and the hint an interrupted run prints."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from omegaconf import DictConfig

from arches.config import check_overrides, compose, expand_grid, split_multirun, sweeps_dir
from arches.errors import ArchesError, RunFailure, UserError
from arches.train.loop import train
from arches.train.resume import run_name
from arches.train.run_folder import checkpoints

# the jobs of this process's `arches train -m` grid that failed: (run name, error)
GRID_FAILURES: list[tuple[str, ArchesError]] = []


def _hydra_task(cfg: DictConfig) -> None:
    """One job of `arches train -m`: a failed run is reported and the grid goes on (the
    command still exits non-zero at the end, naming the failed jobs)."""
    try:
        record = train(cfg)
        print(record["run_dir"])
    except ArchesError as error:
        print(f"arches: error: {error}", file=sys.stderr)
        GRID_FAILURES.append((run_name(cfg), error))


def _grid_outcome(jobs_failed: list[tuple[str, ArchesError]]) -> None:
    """After a grid: one line naming the failed jobs, with exit 2 when every failure was bad
    input, else 1 (a scheduler or script must not read a failed grid as a success)."""
    if not jobs_failed:
        return
    names = ", ".join(name for name, _ in jobs_failed[:4]) + (" and more" if len(jobs_failed) > 4 else "")
    message = f"{len(jobs_failed)} run(s) of the grid failed ({names}); each error is printed above"
    if all(isinstance(error, UserError) for _, error in jobs_failed):
        raise UserError(message)
    raise RunFailure(message)


def resume_hint(cfg: DictConfig, argv: list[str]) -> str:
    """What an interrupted `arches train` prints: the exact command that continues the run."""
    run_dir = Path(cfg.results_dir) / run_name(cfg)
    found = checkpoints(run_dir)
    step = found[-1][0] if found else None
    command = shlex.join(["arches", "train", *[a for a in argv if a not in ("resume=never",)]])
    if step is None:
        return f"arches: {run_dir} has no checkpoint yet; `{command}` starts it again"
    return f"arches: {run_dir} stopped; `{command}` resumes it from step {step} (resume=never starts over)"


def train_command(argv: list[str]) -> None:
    multirun, overrides = split_multirun(argv)
    check_overrides(overrides)
    if not multirun:
        cfg = compose(overrides)
        try:
            record = train(cfg)
        except KeyboardInterrupt:
            print(resume_hint(cfg, argv), file=sys.stderr)
            raise
        print(record["run_dir"])
        return
    expand_grid(overrides)  # a bad grid is one line here, not Hydra's traceback
    import hydra

    app = hydra.main(config_path=str(sweeps_dir()), config_name="config", version_base=None)(_hydra_task)
    saved = sys.argv
    sys.argv = ["arches-train", *argv]
    GRID_FAILURES.clear()
    try:
        app()
    finally:
        sys.argv = saved
    _grid_outcome(list(GRID_FAILURES))
