"""Lightning's training checkpoints, made safe to resume from: atomic checkpoint IO and
the periodic checkpoint callback (the files themselves: arches.train.run_folder.checkpoints).

Every `train.checkpoint_interval` optimizer steps a checkpoint (`checkpoint/lightning/
step<N>.ckpt`, the last `train.keep_checkpoints` kept) holds the weights, the optimizer,
the scheduler, Lightning's loop position, the data position and the RNG states.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn

from arches.errors import UserError, first_line, write_failure
from arches.train.run_folder import pause_point

# The key Lightning files PeriodicCheckpoint's state (its top-k bookkeeping) under in a
# checkpoint is the class's __qualname__ plus its settings. Checkpoints written before the
# class moved to module level (up to commit ae6fd88) name it by the factory that defined it;
# the key stays that name so those checkpoints resume with their state (the checkpoints to
# keep and to delete) instead of Lightning's "callbacks ... need to be provided" warning.
PERIODIC_STATE_NAME = "_periodic_checkpoint.<locals>.PeriodicCheckpoint"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's TorchCheckpointIO, writing through a temp file of ours, fsync and a rename.

    Lightning 2.6 already saves through an fsspec transaction (a temp file moved into
    place), but without an fsync, so a machine crash can leave a renamed, empty file;
    ours is fsynced before and after the rename, its temp files (`.step<N>.ckpt.*.tmp`)
    are recognisable and removed on resume, a full disk is reported as one line, and
    loading always uses torch.load(weights_only=True): only tensors and plain values."""

    def __init__(self, run: str) -> None:
        super().__init__()
        self.run = run  # the run's name, for the test hooks (arches.train.run_folder.pause_point)

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        except OSError as error:
            raise write_failure(error) from error
        try:
            with os.fdopen(fd, "wb") as handle:
                torch.save(checkpoint, handle)
                handle.flush()
                os.fsync(handle.fileno())
            pause_point(f"checkpoint-write:{self.run}:{checkpoint.get('global_step')}")  # a test hook
            os.replace(tmp, path)
            _fsync_dir(path.parent)
        except BaseException as error:
            Path(tmp).unlink(missing_ok=True)
            failed_write = _as_os_error(error, path)  # torch.save wraps it in a RuntimeError
            if failed_write is not None:
                raise write_failure(failed_write) from error
            raise
        pause_point(f"checkpoint:{self.run}:{checkpoint.get('global_step')}")

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict:
        try:
            return super().load_checkpoint(path, map_location=map_location or "cpu", weights_only=True)
        except Exception as error:
            raise UserError(
                f"{path} could not be loaded ({first_line(error)}); delete it to resume from an earlier "
                f"checkpoint, or resume=never to start over"
            ) from None


class PeriodicCheckpoint(ModelCheckpoint):
    """ModelCheckpoint every `interval` optimizer steps (never mid-accumulation), taken
    after the step's validation when one follows the step's last batch: Lightning,
    resuming from a checkpoint saved at the end of a training batch, skips the
    validation that was due right after it (its val loss would be lost)."""

    def __init__(self, interval: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.interval = interval

    @property
    def state_key(self) -> str:
        # Lightning's key (Callback._generate_state_key) with the name older checkpoints use
        key = super().state_key
        return PERIODIC_STATE_NAME + key[len(type(self).__qualname__) :]

    def _due(self, trainer) -> bool:
        step = trainer.global_step
        return step % self.interval == 0 and step != self._last_global_step_saved and not trainer.fit_loop._should_accumulate()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not self._due(trainer):
            return
        batches = trainer.fit_loop.epoch_loop.total_batch_idx + 1
        validation_follows = trainer.val_check_batch and batches % trainer.val_check_batch == 0
        if not validation_follows:
            self._save_topk_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking and trainer.state.fn == TrainerFn.FITTING and self._due(trainer):
            self._save_topk_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        return


def _as_os_error(error: BaseException, path: Path) -> OSError | None:
    """The OSError behind a failed write (in the exception's chain), naming the file; None if none."""
    cause: BaseException | None = error
    while cause is not None and not isinstance(cause, OSError):
        cause = cause.__cause__ or cause.__context__
    if cause is None:
        return None
    return OSError(cause.errno, cause.strerror, cause.filename or str(path))


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
