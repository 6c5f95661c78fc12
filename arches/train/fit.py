"""The fit itself: the devices, the model and its speed settings, Lightning's Trainer, and
the run's outcome (completed or failed) in its record. Imports torch and Lightning."""

from __future__ import annotations

import math
import shutil
import time
import warnings
from typing import NoReturn

import lightning as L
import torch
from lightning.fabric import Fabric
from omegaconf import DictConfig, OmegaConf

from arches.config import auto_switch
from arches.core.config import SpeedConfig
from arches.core.stack import apply_speed, parameter_counts
from arches.errors import ArchesError, RunFailure, UserError, first_line, write_failure
from arches.loggers import quiet_lightning, run_loggers
from arches.progress import shows_bar, training_progress
from arches.registry import plain
from arches.train.checkpoints import AtomicCheckpointIO, PeriodicCheckpoint
from arches.train.lit import LitArches, fused_adamw
from arches.train.loop import Plan
from arches.train.record import update_record
from arches.train.run_folder import CHECKPOINT_DIR, LIGHTNING_DIR, checkpoint_step, save_checkpoint


def world_size(cfg: DictConfig) -> int:
    """How many processes train together (devices per node x nodes), as Lightning resolves
    trainer.devices for trainer.accelerator (-1 or auto: every visible GPU; under torchrun
    or SLURM, what the launcher says). Nothing is started; a bad choice is one line."""
    devices = cfg.trainer.devices
    devices = OmegaConf.to_container(devices) if OmegaConf.is_list(devices) else devices
    try:
        # DDP's resolution of the devices: the count is the same under every strategy
        fabric = Fabric(accelerator=cfg.trainer.accelerator, devices=devices,
                        num_nodes=int(cfg.trainer.get("num_nodes") or 1), strategy="ddp")  # fmt: skip
    except Exception as error:  # Lightning's MisconfigurationException, TypeError, ValueError, ...
        raise UserError(
            f"trainer.accelerator={cfg.trainer.accelerator} trainer.devices={cfg.trainer.devices}: {first_line(error)}"
        ) from None
    return int(fabric.world_size)


def total_steps(cfg: DictConfig, world: int = 1) -> int:
    """Optimizer steps: trainer.max_steps, or those that take train.max_tokens in total
    over the `world` ranks (each takes micro_batch_size x grad_accum windows a step)."""
    if cfg.trainer.get("max_steps"):
        return int(cfg.trainer.max_steps)
    tokens_per_step = cfg.train.micro_batch_size * cfg.train.grad_accum * cfg.data.seq_len * world
    return max(1, math.ceil(cfg.train.max_tokens / tokens_per_step))


def precision(cfg: DictConfig) -> str:
    if cfg.trainer.get("precision"):
        return str(cfg.trainer.precision)
    return "bf16-mixed" if torch.cuda.is_available() and cfg.trainer.accelerator in ("auto", "gpu", "cuda") else "32-true"


def oom_advice(micro_batch_size: int, grad_accum: int) -> str:
    """The smaller micro batch and the accumulation that keep the optimizer's batch."""
    divisors = [d for d in range(micro_batch_size // 2, 0, -1) if micro_batch_size % d == 0]
    if not divisors:
        return "train.micro_batch_size is already 1: choose a smaller size or data.seq_len"
    smaller = divisors[0]
    accum = grad_accum * micro_batch_size // smaller
    return (
        f"set train.micro_batch_size={smaller} and train.grad_accum={accum} "
        f"(the same {micro_batch_size * grad_accum} windows per optimizer step)"
    )


def _is_oom(error: BaseException) -> bool:
    return isinstance(error, (torch.OutOfMemoryError, MemoryError)) or (
        isinstance(error, RuntimeError) and "can't allocate memory" in str(error)  # the CPU allocator
    )


def compile_wanted(setting, gpu: bool) -> bool:
    """trainer.compile: `auto` compiles the model (torch.compile, inductor) on a GPU
    only, where it pays; on a CPU the first steps would spend longer compiling than
    a small run trains. true/false force it."""
    return auto_switch("trainer.compile", setting, gpu)


def build_model(plan: Plan):
    """The seeded model of the plan (Lightning's banners quieted first)."""
    quiet_lightning()
    L.seed_everything(int(plan.cfg.seed), workers=True, verbose=False)
    try:
        return plan.spec.build(plan.model_cfg, plan.arch)
    except Exception as error:
        if _is_oom(error):
            raise RunFailure(
                f"out of memory building the {plan.arch.get('name')} model at size {plan.cfg.size.name}; "
                f"choose a smaller size"
            ) from error
        raise


def model_facts(plan: Plan, model) -> tuple[dict, float, bool]:
    """The model's parameter counts, its FLOPs per token, and whether it trains on a GPU."""
    counts = parameter_counts(model)
    flops_per_token = plan.spec.flops_per_token(plan.model_cfg, plan.arch, plan.seq_len)
    gpu = torch.cuda.is_available() and plan.cfg.trainer.accelerator in ("auto", "gpu", "cuda")
    return counts, flops_per_token, gpu


def apply_speed_settings(cfg: DictConfig, model_cfg, model, gpu: bool) -> dict:
    """Checks and applies the speed settings (arches.core.config.SpeedConfig, trainer.compile,
    train.fused_adamw, train.tf32) to the built model; returns what each `auto` chose on
    this device, for run.json's `speed`."""
    speed = SpeedConfig.from_train(cfg.train)
    speed.check(model_cfg, training_on_cpu=not gpu)
    fused = fused_adamw(cfg.train.get("fused_adamw", "auto"), torch.device("cuda" if gpu else "cpu"))  # validates
    compiled = compile_wanted(cfg.trainer.get("compile", "auto"), gpu)
    tf32 = cfg.train.get("tf32", True)  # a strict boolean (check_train_settings)
    apply_speed(model, speed, gpu)
    if gpu and tf32:
        # float32 matmuls (those outside bf16 autocast) on TF32 tensor cores: the
        # torch.set_float32_matmul_precision docs' "high"
        torch.set_float32_matmul_precision("high")
    if compiled:
        # nn.Module.compile compiles in place: the state_dict keeps its keys (no `_orig_mod.`),
        # so checkpoints load into a compiled or an eager model alike
        model.compile()
    return {
        "compile": compiled,
        "attention_backend": speed.attention_backend,
        "loss_chunk_size": speed.loss_chunk_rows(model_cfg.vocab_size, gpu),
        "activation_checkpointing": speed.activation_checkpointing,
        "fused_adamw": fused,
        "tf32": bool(gpu and tf32),
    }


def _datamodule(plan: Plan):
    """The windows and their collation. Each batch's corruption is a pure function of (seed,
    its window indices): validation scores the same corruption at every pass, and a resumed
    run continues the same stream."""
    from arches.data.windows import ArchesDataModule

    cfg, prepared, seq_len = plan.cfg, plan.prepared, plan.seq_len
    specials = prepared.specials()
    train_collate = plan.spec.collate(plan.arch, specials, seq_len, seed=int(cfg.seed), vocab_size=prepared.vocab_size)
    val_collate = plan.spec.collate(plan.arch, specials, seq_len, seed=int(cfg.seed) + 1, vocab_size=prepared.vocab_size)
    return ArchesDataModule(
        prepared,
        seq_len=seq_len,
        micro_batch_size=int(cfg.train.micro_batch_size),
        collate_fn=train_collate,
        val_collate_fn=val_collate,
        seed=int(cfg.seed),
        num_workers=int(cfg.data.get("num_workers", 0)),
        eval_windows=cfg.train.get("val_windows"),
    )


def _trainer(plan: Plan, lit: LitArches, callbacks: list | None) -> L.Trainer:
    cfg, run_dir, steps = plan.cfg, plan.run_dir, plan.steps
    periodic = PeriodicCheckpoint(
        plan.interval,
        dirpath=run_dir / CHECKPOINT_DIR / LIGHTNING_DIR,
        filename="step{step:08d}",
        auto_insert_metric_name=False,
        # the last K by step: "step" is always among Lightning's monitor candidates
        monitor="step",
        mode="max",
        save_top_k=plan.keep,
        save_last=False,
        enable_version_counter=False,
    )
    progress = training_progress(cfg, run_dir.name, steps, plan.world)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*exists and is not empty.*")
        return L.Trainer(
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
            logger=run_loggers(cfg, run_dir / "logs", run_dir.name, lit, plan.checkpoint is not None),
            callbacks=progress + list(callbacks or []) + [periodic],
            plugins=[AtomicCheckpointIO(run_dir.name)],
            # the training sampler splits windows across ranks itself (arches.data.WindowOrder)
            use_distributed_sampler=False,
            enable_progress_bar=shows_bar(progress),
            enable_checkpointing=True,
            enable_model_summary=False,
            deterministic=bool(cfg.trainer.get("deterministic", False)),
        )


def fit(plan: Plan, model, flops_per_token: float, callbacks: list | None = None) -> dict:
    """Train the built model in the opened run folder; returns the completed record (rank 0)."""
    cfg, run_dir, ckpt_path = plan.cfg, plan.run_dir, plan.checkpoint
    datamodule = _datamodule(plan)
    lit = LitArches(model, plain(cfg.train), plan.steps, plan.seq_len, flops_per_token)
    trainer = _trainer(plan, lit, callbacks)
    if ckpt_path is not None and plan.lead:
        attempts = list(plan.state["record"].get("resumed") or [])
        attempts.append({"from_step": checkpoint_step(ckpt_path), "at": time.strftime("%Y-%m-%dT%H:%M:%S")})
        update_record(run_dir, resumed=attempts)
    try:
        with warnings.catch_warnings():
            # torch 2.13 deprecates a pytree class that Lightning 2.6 still uses: noise, not news
            warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
            warnings.filterwarnings("ignore", message=".*exists and is not empty.*")
            trainer.fit(lit, datamodule=datamodule, ckpt_path=str(ckpt_path) if ckpt_path else None, weights_only=True)
            if not lit.val_history or lit.val_history[-1]["step"] != trainer.global_step:
                trainer.validate(lit, datamodule=datamodule, verbose=False)
            if trainer.is_global_zero:
                model.cpu()
                lengths = plan.spec.trained_lengths(plan.arch, plan.seq_len)
                save_checkpoint(run_dir, model, plan.spec.name, plan.arch, plan.model_cfg, lengths)
    except BaseException as error:
        _record_failure(plan, error, trainer.global_step, lit)
    if not trainer.is_global_zero:
        return {"run_dir": str(run_dir), "rank": trainer.global_rank}
    try:
        record = update_record(run_dir, **_completed_fields(plan, trainer, lit, flops_per_token))
    except OSError as error:
        raise write_failure(error) from error
    # the weights are saved and the run recorded: the training checkpoints have done their job
    shutil.rmtree(run_dir / CHECKPOINT_DIR / LIGHTNING_DIR, ignore_errors=True)
    return record


def _completed_fields(plan: Plan, trainer: L.Trainer, lit: LitArches, flops_per_token: float) -> dict:
    tokens_seen = int(lit.tokens_seen)
    return dict(
        status="completed",
        run_dir=str(plan.run_dir),
        steps=int(trainer.global_step),
        tokens_seen=tokens_seen,
        loss_tokens_seen=int(lit.loss_tokens_seen),
        train_flops=tokens_seen * flops_per_token,
        wall_time_s=lit.wall_seconds(),
        train_seconds=lit.train_seconds,
        tokens_per_s=tokens_seen / lit.train_seconds if lit.train_seconds > 0 else None,
        final_val_loss=lit.val_history[-1]["val_loss"] if lit.val_history else None,
        val_history=lit.val_history,
        loss_objective=plan.arch.get("objective"),
        precision=precision(plan.cfg),
        device=str(torch.cuda.get_device_name(0)) if torch.cuda.is_available() else "cpu",
    )


def _record_failure(plan: Plan, error: BaseException, step: int, lit: LitArches) -> NoReturn:
    """Record a failed fit in run.json and raise its one-line error (or the error as it is)."""
    if isinstance(error, SystemExit):  # Lightning's answer to Ctrl-C: a graceful shutdown, then exit(1)
        error = KeyboardInterrupt("interrupted")
    failure = _failure(error, plan.cfg, plan.run_dir, step)
    try:
        if plan.lead:
            message = first_line(failure or error)
            update_record(plan.run_dir, status="failed", error=message, wall_time_s=lit.wall_seconds())
    except OSError:
        pass  # the disk that failed the run may not take the record either; the message says so
    if failure is not None:
        raise failure from error
    if isinstance(error, KeyboardInterrupt):
        raise error from None
    raise error


def _failure(error: BaseException, cfg: DictConfig, run_dir, step: int) -> ArchesError | None:
    """The one-line error for a failed fit (None: re-raise as it is)."""
    if isinstance(error, ArchesError):
        return error
    if isinstance(error, KeyboardInterrupt):
        return None
    if _is_oom(error):
        advice = oom_advice(int(cfg.train.micro_batch_size), int(cfg.train.grad_accum))
        return RunFailure(f"out of memory training {run_dir.name} at step {step}; {advice}")
    if isinstance(error, OSError):
        return write_failure(error, str(run_dir))
    return None
