"""Trial accounting and pruning: which trials count towards `tune.n_trials`, the surplus
trial of a filled budget, trials abandoned before they started, and the Lightning
callback that reports each validation loss to the pruner."""

from __future__ import annotations

import math

from arches.errors import RunFailure, first_line


def counts(trial) -> bool:
    """A trial with an outcome: it counts towards tune.n_trials (see the docstring of `arches.tune`)."""
    from optuna.trial import TrialState

    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return trial.state == TrialState.FAIL and "error" in trial.user_attrs


def progress(study) -> tuple[int, int]:
    """(trials with an outcome, trials running now, here or in other workers)."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    return sum(counts(t) for t in trials), sum(t.state == TrialState.RUNNING for t in trials)


def is_surplus(study, number: int, n_trials: int) -> bool:
    from optuna.trial import TrialState

    earlier = [t for t in study.get_trials(deepcopy=False) if t.number < number]
    return sum(counts(t) or t.state == TrialState.RUNNING for t in earlier) >= n_trials


def fail_abandoned(study, grace_period: int) -> None:
    """FAIL the trials whose process died between asking for them and starting them.

    Optuna's heartbeat only sees a trial once it has recorded one beat; a trial that
    has none is skipped forever and would hold its slot of the budget. One that has
    not marked itself started (the objective's first line; a retry inherits its original's
    user attributes, hence the trial number) after grace_period seconds never will; it
    sampled nothing and ran nothing, so it is not retried."""
    import datetime

    from optuna.trial import TrialState

    cutoff = datetime.datetime.now() - datetime.timedelta(seconds=grace_period)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        started = trial.user_attrs.get("started") == trial.number
        if not started and trial.datetime_start and trial.datetime_start < cutoff:
            study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)


class Surplus(Exception):
    """This trial was asked after the budget had been filled by another worker."""


def pruning_callback(trial):
    """A Lightning callback that reports the validation loss to the trial at each validation
    and stops the run when the pruner says so. optuna-integration's
    PyTorchLightningPruningCallback does the same, but that package is neither installed
    nor a dependency, and pins its own Lightning range; these few lines are the whole job.

    Under DDP every rank has one and only rank 0 has the trial (`trial` is None on the
    others): rank 0 reports and decides, and its verdict (go on, prune, fail) is broadcast,
    so every rank stops at the same validation; the other ranks never touch the study."""
    import lightning as L  # imported here: bad input must not wait for Lightning to import
    import optuna

    class ReportValLoss(L.Callback):
        def __init__(self) -> None:
            self.reported: set[int] = set()

        def on_validation_end(self, trainer, pl_module) -> None:
            if trainer.sanity_checking or "val/loss" not in trainer.callback_metrics:
                return
            error: BaseException | None = None
            verdict = None
            if trial is not None:
                try:
                    verdict = self.verdict(trainer)
                except Exception as raised:  # e.g. the storage: the other ranks must still hear the verdict
                    error, verdict = raised, ("fail", first_line(raised))
            # one process: returns the verdict as it is; DDP: rank 0's, on every rank
            verdict = trainer.strategy.broadcast(verdict, src=0)
            if error is not None:
                raise error
            if verdict is not None:
                kind, message = verdict
                raise optuna.TrialPruned(message) if kind == "prune" else RunFailure(message)

        def verdict(self, trainer) -> tuple[str, str] | None:
            value, step = float(trainer.callback_metrics["val/loss"]), int(trainer.global_step)
            if not math.isfinite(value):
                # a diverged trial fails (FAIL, with its error); reported, the pruner would call it pruned
                return "fail", f"validation loss became {value} at step {step}; lower train.lr"
            if step in self.reported:
                return None
            self.reported.add(step)
            trial.report(value, step)
            if trainer.state.fn == "fit" and trial.should_prune():
                return "prune", f"pruned at step {step} with val_loss {value:.4f}"
            return None

    return ReportValLoss()

