"""`train(cfg) -> metrics`: one architecture, trained by Lightning from a Hydra config.

The run folder is created only after the whole config has been validated, so bad
input leaves nothing behind; a run that fails later is recorded as failed.
"""

from __future__ import annotations

import math
import shutil
import sys
import time
from pathlib import Path

from omegaconf import DictConfig

from arches.config import check_overrides, compose, sweeps_dir, to_container
from arches.errors import ArchesError, RunFailure, UserError
from arches.registry import family, model_config, plain
from arches.run import TOKENIZER_FILE, save_checkpoint, update_record, write_config


def run_name(cfg: DictConfig) -> str:
    if cfg.get("run_name"):
        return str(cfg.run_name)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return f"{cfg.arch.name}-{cfg.size.name}-{cfg.data.source}-seed{cfg.seed}-{stamp}"


def total_steps(cfg: DictConfig) -> int:
    if cfg.trainer.get("max_steps"):
        return int(cfg.trainer.max_steps)
    tokens_per_step = cfg.train.micro_batch_size * cfg.train.grad_accum * cfg.data.seq_len
    return max(1, math.ceil(cfg.train.max_tokens / tokens_per_step))


def precision(cfg: DictConfig) -> str:
    import torch

    if cfg.trainer.get("precision"):
        return str(cfg.trainer.precision)
    return "bf16-mixed" if torch.cuda.is_available() and cfg.trainer.accelerator in ("auto", "gpu", "cuda") else "32-true"


def train(cfg: DictConfig, callbacks: list | None = None) -> dict:
    """Train the configured architecture; returns the run's record (metrics, run_dir).

    `callbacks` are extra Lightning callbacks (e.g. Optuna's pruning callback)."""
    import lightning as L
    import torch
    from lightning.pytorch.callbacks import RichProgressBar
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    from arches.core.stack import parameter_counts
    from arches.data import ArchesDataModule, prepare
    from arches.lit import LitArches

    arch = plain(cfg.arch)
    spec = family(arch.get("family", ""))
    seq_len = int(cfg.data.seq_len)
    for key in ("micro_batch_size", "grad_accum"):
        if int(cfg.train[key]) < 1:
            raise UserError(f"train.{key}={cfg.train[key]} must be a positive integer")
    prepared = prepare(cfg)
    model_cfg = model_config(arch, cfg.size, prepared.vocab_size, seq_len)  # validates before any folder exists
    specials = prepared.specials()
    steps = total_steps(cfg)

    run_dir = Path(cfg.results_dir) / run_name(cfg)
    if run_dir.exists():
        shutil.rmtree(run_dir)  # a re-run of the same name starts over (resume arrives with the reliability work)
    run_dir.mkdir(parents=True)
    resolved = to_container(cfg)
    write_config(run_dir, resolved)
    shutil.copyfile(prepared.tokenizer_path, run_dir / TOKENIZER_FILE)

    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    model = spec.build(model_cfg, arch)
    counts = parameter_counts(model)
    flops_per_token = spec.flops_per_token(model_cfg, arch, seq_len)
    update_record(
        run_dir,
        status="running",
        error=None,
        run_name=run_dir.name,
        experiment=(cfg.get("experiment") or {}).get("name"),
        variant=cfg.get("variant") or arch.get("name"),
        family=spec.name,
        preset=arch.get("name"),
        objective=arch.get("objective"),
        size=cfg.size.name,
        seed=int(cfg.seed),
        data=cfg.data.source,
        tokenizer_hash=prepared.tokenizer_hash,
        vocab_size=prepared.vocab_size,
        seq_len=seq_len,
        params_total=counts["total"],
        params_non_embedding=counts["non_embedding"],
        flops_per_token=flops_per_token,
        planned_steps=steps,
        planned_tokens=steps * int(cfg.train.micro_batch_size) * int(cfg.train.grad_accum) * seq_len,
        knobs=arch.get("model", {}),
    )

    train_collate = spec.collate(arch, specials, seq_len, seed=int(cfg.seed), vocab_size=prepared.vocab_size)

    def val_collate(windows: list[dict]) -> dict:
        # a fresh objective per batch, seeded by the batch's tokens, so every validation
        # pass scores the same corruption and losses are comparable across steps
        seed = int(sum(int(w["tokens"][:8].sum()) for w in windows)) % (2**31)
        return spec.collate(arch, specials, seq_len, seed=seed, vocab_size=prepared.vocab_size)(windows)

    datamodule = ArchesDataModule(
        prepared,
        seq_len=seq_len,
        micro_batch_size=int(cfg.train.micro_batch_size),
        collate_fn=train_collate,
        val_collate_fn=val_collate,
        seed=int(cfg.seed),
        num_workers=int(cfg.data.get("num_workers", 0)),
        eval_windows=cfg.train.get("val_windows"),
    )
    lit = LitArches(model, plain(cfg.train), steps, seq_len, flops_per_token)
    logs = run_dir / "logs"
    trainer = L.Trainer(
        accelerator=cfg.trainer.accelerator,
        devices=cfg.trainer.devices,
        num_nodes=cfg.trainer.get("num_nodes", 1),
        strategy=cfg.trainer.strategy,
        precision=precision(cfg),
        max_steps=steps,
        max_epochs=-1,
        accumulate_grad_batches=int(cfg.train.grad_accum),
        gradient_clip_val=float(cfg.train.grad_clip) or None,
        val_check_interval=min(int(cfg.train.val_interval), steps) * int(cfg.train.grad_accum),
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        log_every_n_steps=int(cfg.train.log_interval),
        logger=[CSVLogger(logs, name="", version=""), TensorBoardLogger(logs, name="", version="tensorboard")],
        callbacks=([RichProgressBar()] if sys.stderr.isatty() else []) + list(callbacks or []),
        enable_progress_bar=sys.stderr.isatty(),
        enable_checkpointing=False,
        enable_model_summary=False,
        deterministic=bool(cfg.trainer.get("deterministic", False)),
    )
    started = time.perf_counter()
    try:
        trainer.fit(lit, datamodule=datamodule)
        if not lit.val_history or lit.val_history[-1]["step"] != trainer.global_step:
            trainer.validate(lit, datamodule=datamodule, verbose=False)
    except BaseException as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        update_record(run_dir, status="failed", error=message, wall_time_s=time.perf_counter() - started)
        if isinstance(error, (ArchesError, KeyboardInterrupt)):
            raise
        if isinstance(error, torch.OutOfMemoryError):
            raise RunFailure(
                f"out of memory in {run_dir.name}; halve train.micro_batch_size and double train.grad_accum"
            ) from error
        raise
    wall = time.perf_counter() - started
    model.cpu()
    save_checkpoint(run_dir, model, spec.name, arch, model_cfg)
    tokens_seen = int(lit.tokens_seen)
    return update_record(
        run_dir,
        status="completed",
        run_dir=str(run_dir),
        steps=int(trainer.global_step),
        tokens_seen=tokens_seen,
        loss_tokens_seen=int(lit.loss_tokens_seen),
        train_flops=tokens_seen * flops_per_token,
        wall_time_s=wall,
        train_seconds=lit.train_seconds,
        tokens_per_s=tokens_seen / lit.train_seconds if lit.train_seconds > 0 else None,
        final_val_loss=lit.val_history[-1]["val_loss"] if lit.val_history else None,
        val_history=lit.val_history,
        loss_objective=arch.get("objective"),
        precision=precision(cfg),
        device=str(torch.cuda.get_device_name(0)) if torch.cuda.is_available() else "cpu",
    )


def _hydra_task(cfg: DictConfig) -> None:
    """One job of `arches train -m`: a failed run is reported and the grid goes on."""
    try:
        record = train(cfg)
        print(record["run_dir"])
    except ArchesError as error:
        print(f"arches: error: {error}", file=sys.stderr)


def train_command(argv: list[str]) -> None:
    multirun = any(arg in ("-m", "--multirun") for arg in argv)
    overrides = [arg for arg in argv if arg not in ("-m", "--multirun")]
    check_overrides(overrides)
    if not multirun:
        record = train(compose(overrides))
        print(record["run_dir"])
        return
    import hydra

    app = hydra.main(config_path=str(sweeps_dir()), config_name="config", version_base=None)(_hydra_task)
    saved = sys.argv
    sys.argv = ["arches-train", *argv]
    try:
        app()
    finally:
        sys.argv = saved
