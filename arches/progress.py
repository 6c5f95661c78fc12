"""Progress that reads well where it lands: a bar on a terminal, plain lines in a log.

A bar redraws itself with carriage returns; a log file (SLURM, nohup, CI, a pipe) keeps
every redraw, or, with the bar turned off, nothing until the end. So where stderr is not
a terminal, training and evaluation print one plain line every `interval_s` seconds,
and always at the first and the last step:

    train gpt-debug-local-seed0-1a2b3c4d step 120/500 tokens 491k/2.05M loss 4.83 tok/s 21.3k eta 3m12s
    eval gpt-debug-local-seed0-1a2b3c4d hellaswag 320/1000 requests 41.2 req/s eta 9s

On a terminal training keeps Lightning's Rich bar, counting the run's optimizer steps
(not the batches of an epoch: with max_epochs=-1 Lightning describes it "Epoch 0/-2")
and without the logger's version ("v_num: oard", the tail of TensorBoard's version
"tensorboard"); evaluation keeps a tqdm bar labelled with the run and the task.

`train.progress` (auto | bar | lines | none) chooses for training; auto asks
`sys.stderr.isatty()`. Only rank 0 prints.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from contextlib import contextmanager

from omegaconf import DictConfig

PROGRESS_MODES = ("auto", "bar", "lines", "none")
DEFAULT_INTERVAL_S = 30.0  # train.progress_interval_s; evaluation's lines


def progress_mode(setting: str | None, stream=None) -> str:
    """bar, lines or none: `auto` (or unset) is a bar on a terminal, lines elsewhere."""
    if setting in (None, "auto"):
        stream = sys.stderr if stream is None else stream
        return "bar" if stream.isatty() else "lines"
    return str(setting)


# ---------------------------------------------------------------- numbers as a log shows them


def compact(value: float) -> str:
    """3 significant digits with a k/M/G/T suffix: 491k, 2.05M; integers below 1000 as they are."""
    value = float(value)
    for factor, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g}{suffix}"
    return f"{value:.0f}" if value == int(value) else f"{value:.3g}"


def duration(seconds: float) -> str:
    """45s, 3m12s, 2h05m."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Pacer:
    """When the next line is due: the first, the last, and one every `interval_s` between."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self.last: float | None = None

    def due(self, final: bool) -> bool:
        now = time.monotonic()
        if final or self.last is None or now - self.last >= self.interval_s:
            self.last = now
            return True
        return False


# ---------------------------------------------------------------- training


def training_progress(cfg: DictConfig, run: str, total_steps: int, world: int = 1) -> list:
    """The Lightning callbacks that show training's progress under `train.progress`:
    the step bar, the plain-line printer, or none. Trainer(enable_progress_bar=...) must
    be true exactly when the bar is among them (`shows_bar`)."""
    mode = progress_mode(cfg.train.get("progress", "auto"))
    if mode == "bar":
        return [step_progress_bar(run)]
    if mode == "lines":
        tokens_per_step = int(cfg.train.micro_batch_size) * int(cfg.train.grad_accum) * int(cfg.data.seq_len) * world
        interval = float(cfg.train.get("progress_interval_s", DEFAULT_INTERVAL_S))
        return [plain_progress(run, total_steps, total_steps * tokens_per_step, interval)]
    return []


def shows_bar(callbacks: Iterable) -> bool:
    from lightning.pytorch.callbacks import ProgressBar

    return any(isinstance(callback, ProgressBar) for callback in callbacks)


def step_progress_bar(run: str):
    """Lightning's RichProgressBar over the run's optimizer steps, described by the run."""
    from lightning.pytorch.callbacks import RichProgressBar

    class StepProgressBar(RichProgressBar):
        @property
        def total_train_batches(self) -> int:
            return int(self.trainer.max_steps)

        def _get_train_description(self, current_epoch: int) -> str:
            return f"train {run}"

        def on_train_epoch_start(self, trainer, pl_module) -> None:
            # one bar for the whole run: a new epoch (another pass over the windows) goes on counting
            if self.train_progress_bar_id is None:
                super().on_train_epoch_start(trainer, pl_module)

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            if not self.is_disabled and self.train_progress_bar_id is None:
                self._initialize_train_progress_bar_id()  # a resumed run starts mid-epoch
            self._update(self.train_progress_bar_id, trainer.global_step)
            self._update_metrics(trainer, pl_module)
            self.refresh()

        def get_metrics(self, trainer, pl_module) -> dict:
            metrics = super().get_metrics(trainer, pl_module)
            metrics.pop("v_num", None)  # the logger's version says nothing about the run
            return metrics

    return StepProgressBar()


def plain_progress(run: str, total_steps: int, total_tokens: int, interval_s: float, stream=None):
    """A Lightning callback printing one line per `interval_s` seconds of training (and the
    first and last step): step, tokens, the last step's loss, tokens/s and the time left,
    both from this attempt's wall clock (validation included, as the time left is)."""
    from lightning.pytorch.callbacks import Callback

    class PlainProgress(Callback):
        def __init__(self) -> None:
            self.pacer = Pacer(interval_s)
            self.started: tuple[float, int, int] | None = None  # (time, step, tokens) at the attempt's start
            self.printed_step = -1

        def on_train_start(self, trainer, pl_module) -> None:
            self.started = (time.monotonic(), int(trainer.global_step), int(getattr(pl_module, "tokens_seen", 0)))

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            step = int(trainer.global_step)
            if not trainer.is_global_zero or step == self.printed_step or self.started is None:
                return  # mid-accumulation (no optimizer step yet), or another rank
            if not self.pacer.due(final=step >= total_steps or self.printed_step < 0):
                return
            self.printed_step = step
            print(self.line(trainer, pl_module, step), file=stream or sys.stderr, flush=True)

        def line(self, trainer, pl_module, step: int) -> str:
            began, first_step, first_tokens = self.started
            elapsed = time.monotonic() - began
            tokens = int(getattr(pl_module, "tokens_seen", 0))
            parts = [f"train {run} step {step}/{total_steps}", f"tokens {compact(tokens)}/{compact(total_tokens)}"]
            metrics = trainer.callback_metrics
            if "train/loss" in metrics:
                parts.append(f"loss {float(metrics['train/loss']):.3g}")
            if "val/loss" in metrics:
                parts.append(f"val_loss {float(metrics['val/loss']):.3g}")
            done = step - first_step
            if elapsed > 0 and done > 0:
                parts.append(f"tok/s {compact((tokens - first_tokens) / elapsed)}")
                parts.append(f"eta {duration(elapsed / done * max(0, total_steps - step))}")
            return " ".join(parts)

    return PlainProgress()


# ---------------------------------------------------------------- evaluation


def task_label(requests: Iterable, kind: str) -> str:
    """What a batch of lm-eval requests is for: the task names that lm-eval's Instances
    carry (one, a few, or how many), or else the request kind."""
    names = list(dict.fromkeys(name for r in requests if (name := getattr(r, "task_name", None))))
    if not names:
        return kind
    return ",".join(names) if len(names) <= 3 else f"{names[0]}+{len(names) - 1}_more"


class RequestLines:
    """The plain-line counterpart of a tqdm bar over lm-eval requests (`update(n)`)."""

    def __init__(self, total: int, run: str, label: str, interval_s: float, stream=None) -> None:
        self.total, self.run, self.label, self.stream = total, run, label, stream
        self.done = 0
        self.pacer = Pacer(interval_s)
        self.started = time.monotonic()

    def update(self, count: int) -> None:
        self.done += count
        if self.pacer.due(final=self.done >= self.total):
            print(self.line(), file=self.stream or sys.stderr, flush=True)

    def line(self) -> str:
        elapsed = time.monotonic() - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        text = f"eval {self.run} {self.label} {self.done}/{self.total} requests {compact(rate)} req/s"
        if rate > 0 and self.done < self.total:
            text += f" eta {duration((self.total - self.done) / rate)}"
        return text


@contextmanager
def request_progress(total: int, run: str, label: str, disable: bool = False, interval_s: float = DEFAULT_INTERVAL_S):
    """Progress over `total` lm-eval requests: a labelled tqdm bar on a terminal, plain
    lines elsewhere, nothing when lm-eval says `disable_tqdm`."""
    if disable or total == 0:
        yield _Silent()
    elif sys.stderr.isatty():
        from tqdm import tqdm

        with tqdm(total=total, desc=f"eval {run} {label}") as bar:
            yield bar
    else:
        yield RequestLines(total, run, label, interval_s)


class _Silent:
    def update(self, count: int) -> None:
        pass
