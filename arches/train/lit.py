"""One LightningModule for every family: it calls `model(batch) -> (logits, loss)`
and accounts for the compute honestly (tokens seen, loss-bearing tokens, FLOPs)."""

from __future__ import annotations

import math
import random
import time

import lightning as L
import numpy as np
import torch
from torch import nn

from arches.config import auto_switch
from arches.core.stack import IGNORE_INDEX
from arches.errors import RunFailure


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, min_ratio: float) -> float:
    """The learning-rate multiplier: linear warmup, then cosine decay to `min_ratio`."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def fused_adamw(setting, device: torch.device) -> bool:
    """train.fused_adamw: `auto` fuses on a GPU only (one kernel for the whole update
    instead of a loop of foreach ops: torch.optim.AdamW's `fused`), so a CPU run keeps
    the foreach update it has always had; true fuses on a CPU too (torch >= 2.4)."""
    return auto_switch("train.fused_adamw", setting, device.type == "cuda")


def adamw(model: nn.Module, cfg: dict, fused: bool) -> torch.optim.AdamW:
    """AdamW with no weight decay on biases, norms and embeddings (the usual GPT/nanoGPT grouping)."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        (decay if parameter.dim() >= 2 and "embed" not in name else no_decay).append(parameter)
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg["lr"],
        betas=tuple(cfg["betas"]),
        eps=cfg["eps"],
        fused=fused,
    )


class LitArches(L.LightningModule):
    def __init__(
        self,
        model: nn.Module,
        train_cfg: dict,
        total_steps: int,
        window_tokens: int,
        flops_per_token: float,
    ) -> None:
        super().__init__()
        self.model = model
        self.train_cfg = train_cfg
        self.total_steps = total_steps
        self.window_tokens = window_tokens  # tokens of one data window (seq_len)
        self.flops_per_token = flops_per_token
        # Running totals; buffers so they are saved and restored with a checkpoint.
        self.register_buffer("tokens_seen", torch.zeros((), dtype=torch.long), persistent=True)
        self.register_buffer("loss_tokens_seen", torch.zeros((), dtype=torch.long), persistent=True)
        # seconds inside training batches (forward, backward, optimizer step): the
        # throughput figure, free of start-up, validation and logging time
        self.train_seconds = 0.0
        self._batch_started = 0.0
        self.val_history: list[dict] = []
        # wall-clock seconds of earlier attempts, up to the checkpoint this one resumed from
        self.earlier_wall_seconds = 0.0
        self._started = time.perf_counter()
        self._rng_to_restore: dict | None = None
        self.resumed_log: dict | None = None  # where logs/metrics.csv continues after a resume

    def wall_seconds(self) -> float:
        return self.earlier_wall_seconds + time.perf_counter() - self._started

    # ---- resume: what Lightning does not save itself. Plain tensors, numbers, strings,
    # lists and dicts only, so the checkpoint loads with torch.load(weights_only=True).

    def pending_log_row(self) -> dict | None:
        """The CSV row of the step being checkpointed: Lightning writes a step's metrics
        after the checkpoint callbacks ran, so a run killed right after saving would lose
        it. Values as the CSV logger writes them (float32 tensors, then .item())."""
        trainer = self.trainer
        loop = trainer.fit_loop.epoch_loop
        row = getattr(self, "_step_row", None)
        if row is None or (loop._batches_that_stepped + 1) % trainer.log_every_n_steps:
            return None
        values = {k: torch.as_tensor(v, dtype=torch.float32).item() for k, v in row.items()}
        return {"epoch": int(trainer.current_epoch), "step": int(loop._batches_that_stepped), **values}

    def _log_position(self) -> dict:
        step = int(self.trainer.fit_loop.epoch_loop._batches_that_stepped)
        if self.trainer.validating:  # saved after the step's validation: its rows are written
            return {"log_step": step + 1, "log_row": None}
        return {"log_step": step, "log_row": self.pending_log_row()}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        for logger in self.trainer.loggers:
            logger.save()  # every row before this step is on disk with the checkpoint
        numpy_state = np.random.get_state()
        checkpoint["arches"] = {
            # logs/metrics.csv rows up to here belong to the checkpoint (see arches.train)
            **self._log_position(),
            "train_seconds": float(self.train_seconds),
            "wall_seconds": float(self.wall_seconds()),
            "val_history": [dict(entry) for entry in self.val_history],
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
                "numpy": [numpy_state[0], torch.from_numpy(numpy_state[1].astype(np.int64)), *map(float, numpy_state[2:])],
                "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
            },
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("arches") or {}
        self.train_seconds = float(state.get("train_seconds", 0.0))
        self.earlier_wall_seconds = float(state.get("wall_seconds", 0.0))
        self._started = time.perf_counter()
        self.val_history = [dict(entry) for entry in state.get("val_history", [])]
        self._rng_to_restore = state.get("rng")
        self.resumed_log = {"step": state.get("log_step"), "row": state.get("log_row")}

    def on_train_start(self) -> None:
        # Restored here, after the dataloaders are set up and right before the next
        # training batch: from this point the resumed run draws (dropout) exactly
        # what the uninterrupted one drew after saving.
        rng, self._rng_to_restore = self._rng_to_restore, None
        if not rng:
            return
        torch.set_rng_state(rng["torch"])
        if rng.get("cuda") and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        name, keys, position, has_gauss, cached = rng["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), int(position), int(has_gauss), float(cached)))
        version, internal, gauss = rng["python"]
        random.setstate((version, tuple(internal), gauss))

    def forward(self, batch: dict[str, torch.Tensor]):
        return self.model(batch)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        _, loss = self.model(batch)
        if not torch.isfinite(loss):
            raise RunFailure(
                f"loss became {loss.item()} at step {self.global_step}; lower train.lr or raise train.warmup_fraction"
            )
        labels = batch["labels"]
        # this micro-batch's window tokens and labelled positions summed over every rank:
        # the run's counts are totals, as its token budget is (arches.train.total_steps).
        # Each rank adds the same sums, so every rank's buffers (and a checkpoint) hold them.
        counts = torch.stack([
            torch.as_tensor(batch["input_ids"].shape[0] * self.window_tokens, device=labels.device),
            (labels != IGNORE_INDEX).sum(),
        ])  # fmt: skip
        if self.trainer.world_size > 1:
            torch.distributed.all_reduce(counts, op=torch.distributed.ReduceOp.SUM)
        self.tokens_seen += counts[0]
        self.loss_tokens_seen += counts[1]
        tokens_per_s = float(self.tokens_seen) / self.train_seconds if self.train_seconds > 0 else 0.0
        self.log("train/loss", loss, prog_bar=True)
        self.log("tok/s", tokens_per_s, prog_bar=True)
        self.log("train/tokens_seen", self.tokens_seen.float())
        self.log("train/loss_tokens_seen", self.loss_tokens_seen.float())
        self.log("train/flops", self.tokens_seen.float() * self.flops_per_token)
        lr = self.trainer.optimizers[0].param_groups[0]["lr"]
        self.log("train/lr", lr)
        # what this step logs, in case a checkpoint is saved before Lightning writes it
        self._step_row = {
            "train/loss": loss.detach(), "tok/s": tokens_per_s, "train/tokens_seen": self.tokens_seen.float(),
            "train/loss_tokens_seen": self.loss_tokens_seen.float(),
            "train/flops": self.tokens_seen.float() * self.flops_per_token, "train/lr": lr,
        }  # fmt: skip
        return loss

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        self._batch_started = time.perf_counter()

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.train_seconds += time.perf_counter() - self._batch_started

    def on_validation_epoch_start(self) -> None:
        self._val_loss_sum = 0.0
        self._val_loss_tokens = 0

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        _, loss = self.model(batch)
        count = int((batch["labels"] != IGNORE_INDEX).sum())
        self._val_loss_sum += float(loss) * count  # weighted by loss-bearing tokens
        self._val_loss_tokens += count

    def on_validation_epoch_end(self) -> None:
        if not self._val_loss_tokens:
            return
        val_loss = self._val_loss_sum / self._val_loss_tokens
        self.log("val/loss", val_loss, prog_bar=True)
        if not self.trainer.sanity_checking:
            self.val_history.append(
                {"step": int(self.global_step), "tokens_seen": int(self.tokens_seen), "val_loss": val_loss}
            )

    def configure_optimizers(self):
        cfg = self.train_cfg
        device = next(self.model.parameters()).device  # Lightning has moved the model by now
        optimizer = adamw(self.model, cfg, fused_adamw(cfg.get("fused_adamw", "auto"), device))
        warmup_steps = max(1, round(cfg["warmup_fraction"] * self.total_steps))
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: warmup_cosine(step, self.total_steps, warmup_steps, cfg["min_lr_ratio"])
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
