"""Trials on several devices (trainer=ddp, fsdp): rank 0 asks the study for trials, the
other ranks follow it (see `Ranks`)."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from typing import TYPE_CHECKING, Any, Iterator

from omegaconf import DictConfig, OmegaConf

from arches.config import compose
from arches.errors import RunFailure, UserError, first_line
from arches.tune.trials import pruning_callback

if TYPE_CHECKING:
    from arches.tune.run import Job


EXIT = "exit"
# how long the other ranks wait for rank 0's next trial: it may wait hours for other
# workers' trials to finish (the training collectives keep Lightning's own timeout)
COMMAND_TIMEOUT_S = 7 * 24 * 3600


def one_device(cfg: DictConfig) -> bool:
    devices = cfg.trainer.get("devices")
    one = devices in (1, "1") or (OmegaConf.is_list(devices) and len(devices) == 1)
    return one and int(cfg.trainer.get("num_nodes") or 1) == 1


def launched_rank() -> int:
    """The rank a launcher gave this process before it started (0 when none did): Lightning's
    rerun of the command sets LOCAL_RANK (and NODE_RANK on other machines), torchrun RANK,
    srun SLURM_PROCID."""
    from arches.train.resume import env_rank as _env_rank

    return _env_rank() or int(os.environ.get("NODE_RANK") or os.environ.get("GROUP_RANK") or 0)


class Ranks:
    """The processes that train each trial of a multi-device study (trainer=ddp, fsdp).

    DDP and Optuna have a known trap (lightning-hydra-template #639): every rank runs the
    same command, and each would ask the study for a trial of its own, with its own
    hyperparameters. Here only rank 0 opens the study. Before its first trial it starts the
    ranks with Lightning Fabric's launcher, the one `arches train trainer=ddp` uses: on one
    machine Lightning reruns this command line once per extra device (with LOCAL_RANK set);
    under torchrun or srun they are started already and join. The ranks share a
    process group, which each trial's Trainer then reuses, and a gloo group for commands:
    rank 0 broadcasts each trial's full list of overrides (its sampled values included);
    the others compose that config and call the same `train(cfg)` until rank 0 says exit.
    Pruning and failures: see `pruning_callback`."""

    def __init__(self, trainer: Any) -> None:
        self.trainer = trainer
        self.rank = launched_rank()
        self.fabric = None
        self.group = None

    @property
    def follower(self) -> bool:
        return self.rank != 0

    @classmethod
    def for_jobs(cls, jobs: list[Job]) -> Ranks | None:
        """None when every trial trains in this one process."""
        spread = [job for job in jobs if not one_device(job.cfg)]
        if not spread:
            return None
        placement = [_placement(job.cfg) for job in jobs]
        if len(set(placement)) > 1:
            raise UserError(
                "arches tune -m trains every study's trials on the same devices: keep trainer.accelerator, "
                "trainer.devices and trainer.num_nodes the same in each"
            )
        ranks = cls(spread[0].cfg.trainer)
        return ranks if ranks.world_size() > 1 else None

    def _fabric(self):
        if self.fabric is None:
            from lightning.fabric import Fabric

            from arches.loggers import quiet_lightning

            quiet_lightning()
            devices = self.trainer.devices
            devices = OmegaConf.to_container(devices) if OmegaConf.is_list(devices) else devices
            try:
                # DDP's launcher and process group serve FSDP as well: it only starts the ranks
                self.fabric = Fabric(
                    accelerator=self.trainer.accelerator,
                    devices=devices,
                    num_nodes=int(self.trainer.get("num_nodes") or 1),
                    strategy="ddp",
                )
            except Exception as error:  # Lightning's MisconfigurationException, ValueError, ...
                raise UserError(
                    f"trainer.accelerator={self.trainer.accelerator} trainer.devices={self.trainer.devices}: "
                    f"{first_line(error)}"
                ) from None
        return self.fabric

    def world_size(self) -> int:
        return int(self._fabric().world_size)

    def launch(self) -> None:
        """Start or join the other ranks (once per process)."""
        if self.group is not None:
            return
        import datetime

        import torch.distributed as distributed

        fabric = self._fabric()
        fabric.launch()
        if (fabric.global_rank == 0) == self.follower:
            raise RunFailure(
                f"this process was started as rank {self.rank} but Lightning made it rank {fabric.global_rank}; "
                f"start `arches tune` once per machine (Lightning starts its ranks) or once per device "
                f"(torchrun, srun)"
            )
        self.group = distributed.new_group(
            backend="gloo", timeout=datetime.timedelta(seconds=COMMAND_TIMEOUT_S)
        )

    def send(self, message: Any) -> None:
        """Rank 0: a trial's overrides (or EXIT) to every other rank."""
        import torch.distributed as distributed

        distributed.broadcast_object_list([message], src=0, group=self.group)

    def receive(self) -> Any:
        import torch.distributed as distributed

        box = [None]
        distributed.broadcast_object_list(box, src=0, group=self.group)
        return box[0]

    def close(self, failed: bool = False) -> None:
        """Rank 0, at the end: the other ranks exit, and this returns once they have
        finished their last trial. Ranks that were never started need no word, unless a
        launcher (torchrun, srun) started them, waiting to join.

        After a failure of rank 0 the others may be gone, or stuck in a training
        collective: exit is sent without waiting for them (when this process ends,
        its connections close and theirs fail)."""
        if failed:
            if self.group is not None:
                sender = threading.Thread(target=self._send_quietly, args=(EXIT,), daemon=True)
                sender.start()
                sender.join(timeout=10)
            return
        if self.group is None and not self._fabric().strategy.cluster_environment.creates_processes_externally:
            return
        import torch.distributed as distributed

        self.launch()
        self.send(EXIT)
        distributed.barrier(group=self.group)

    def _send_quietly(self, message: Any) -> None:
        try:
            self.send(message)
        except Exception:
            pass

    def follow(self) -> None:
        """A rank other than 0: train the trials rank 0 sends, until it says exit."""
        import traceback

        import optuna

        from arches.errors import ArchesError
        from arches.train.loop import train

        self.launch()
        while True:
            message = self.receive()
            if message == EXIT:
                import torch.distributed as distributed

                distributed.barrier(group=self.group)
                return
            try:
                train(compose(message["overrides"]), callbacks=[pruning_callback(None)])
            except Exception as error:  # rank 0 records the trial's outcome; this rank waits for the next
                if isinstance(error, (ArchesError, optuna.TrialPruned)):
                    continue  # rank 0 stopped the same way, and says so
                print(f"arches: rank {self.rank}, trial {message.get('trial')}: {type(error).__name__}: "
                      f"{first_line(error)}", file=sys.stderr, flush=True)
                if os.environ.get("ARCHES_DEBUG"):
                    traceback.print_exc()


def _placement(cfg: DictConfig) -> tuple:
    trainer = cfg.trainer
    return (str(trainer.accelerator), str(trainer.devices), int(trainer.get("num_nodes") or 1))


@contextlib.contextmanager
def ranks_for(jobs: list[Job]) -> Iterator[Ranks | None]:
    """The ranks that train these studies' trials (None: this process alone). On rank 0,
    leaving the block tells the other ranks to exit and waits until they have."""
    ranks = Ranks.for_jobs(jobs)
    if ranks is None or ranks.follower:
        yield ranks
        return
    try:
        yield ranks
    except BaseException:
        ranks.close(failed=True)
        raise
    ranks.close()
