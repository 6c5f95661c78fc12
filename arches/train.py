"""`train(cfg) -> metrics`: one architecture, trained by Lightning from a Hydra config.

The run folder is created only after the whole config has been validated, so bad
input leaves nothing behind; a run that fails later is recorded as failed.

Resume (`resume: auto`, the default): a run folder of the same name that is not
completed continues from its newest periodic checkpoint
(`checkpoint/lightning/step<N>.ckpt`, every `train.checkpoint_interval` optimizer
steps, the last `train.keep_checkpoints` kept), which holds the weights, the
optimizer, the scheduler, Lightning's loop position, the data position and the
RNG states. Window order is a pure function of (seed, epoch) and each batch's
corruption of (seed, its window indices), so on a CPU the resumed run ends with
the weights an uninterrupted one would have. `resume=never` starts over.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shlex
import shutil
import sys
import tempfile
import time
import warnings
import zipfile
from pathlib import Path

from omegaconf import DictConfig

from arches.config import auto_switch, check_overrides, compose, expand_grid, split_multirun, sweeps_dir, to_container
from arches.errors import ArchesError, RunFailure, UserError, write_failure
from arches.run import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    LIGHTNING_DIR,
    RUN_RECORD,
    TOKENIZER_FILE,
    check_same_model,
    model_identity,
    pause_point,
    read_config,
    read_json,
    save_checkpoint,
    update_record,
    write_config,
    write_model_file,
)
from arches.loggers import quiet_lightning, run_loggers
from arches.progress import shows_bar, training_progress
from arches.provenance import attempt_fields, device_info, provenance
from arches.settings import check_data_settings, check_train_settings

RESUME_MODES = ("auto", "never")
CHECKPOINT_NAME = re.compile(r"^step(\d+)\.ckpt$")
# Keys that may differ between the attempts of one run: where things live, how often
# to checkpoint or log, what to evaluate. Everything else must match to resume.
FREE_KEYS = (
    "results_dir", "cache_dir", "run_name", "resume", "run", "eval", "tune", "experiment", "quick", "compare", "hydra",
    "data.num_workers", "train.checkpoint_interval", "train.keep_checkpoints", "train.log_interval",
    "trainer.accelerator",
    # how a run reports, not what it trains: another logger or progress display may resume it
    "logger", "train.progress", "train.progress_interval_s",
    # how the model computes, not what (arches.core.config.SpeedConfig): a run may resume with other choices
    "trainer.compile", "train.attention_backend", "train.loss_chunk_size", "train.activation_checkpointing",
    "train.fused_adamw", "train.tf32",
)  # fmt: skip
GPU_DETERMINISM_NOTE = (
    "CUDA kernels (SDPA/flash attention, atomic adds in backward, cuBLAS split-K) are not bit-deterministic: "
    "two runs with the same seed agree only to a tolerance; compare variants across seeds, not bit for bit"
)


def config_hash(resolved: dict) -> str:
    """A short hash of every key that shapes training (not FREE_KEYS): two configs share it
    exactly when `check_same_config` lets one resume the other."""
    shaping = {key: value for key, value in _flatten(resolved).items() if not _free(key)}
    text = json.dumps(shaping, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def run_name(cfg: DictConfig) -> str:
    """`run_name`, or one derived from the config (preset, size, data, seed, and a hash of
    the rest), never from the clock: the same command names the same run folder, so it
    resumes an interrupted run (resume=auto) instead of starting a new one."""
    if cfg.get("run_name"):
        return str(cfg.run_name)
    return f"{cfg.arch.name}-{cfg.size.name}-{cfg.data.source}-seed{cfg.seed}-{config_hash(to_container(cfg))}"


def world_size(cfg: DictConfig) -> int:
    """How many processes train together (devices per node x nodes), as Lightning resolves
    trainer.devices for trainer.accelerator (-1 or auto: every visible GPU; under torchrun
    or SLURM, what the launcher says). Nothing is started; a bad choice is one line."""
    from lightning.fabric import Fabric
    from omegaconf import OmegaConf

    devices = cfg.trainer.devices
    devices = OmegaConf.to_container(devices) if OmegaConf.is_list(devices) else devices
    try:
        # DDP's resolution of the devices: the count is the same under every strategy
        fabric = Fabric(accelerator=cfg.trainer.accelerator, devices=devices,
                        num_nodes=int(cfg.trainer.get("num_nodes") or 1), strategy="ddp")  # fmt: skip
    except Exception as error:  # Lightning's MisconfigurationException, TypeError, ValueError, ...
        raise UserError(
            f"trainer.accelerator={cfg.trainer.accelerator} trainer.devices={cfg.trainer.devices}: {_first_line(error)}"
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
    import torch

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
    import torch

    return isinstance(error, (torch.OutOfMemoryError, MemoryError)) or (
        isinstance(error, RuntimeError) and "can't allocate memory" in str(error)  # the CPU allocator
    )


def compile_wanted(setting, gpu: bool) -> bool:
    """trainer.compile: `auto` compiles the model (torch.compile, inductor) on a GPU
    only, where it pays; on a CPU the first steps would spend longer compiling than
    a small run trains. true/false force it."""
    return auto_switch("trainer.compile", setting, gpu)


def _resume_mode(cfg: DictConfig) -> str:
    mode = str(cfg.get("resume", "auto"))
    if mode not in RESUME_MODES:
        raise UserError(f"resume={mode} is not one of {', '.join(RESUME_MODES)}; auto continues a killed run, never starts over")
    return mode


# ---------------------------------------------------------------- checkpoints


def _atomic_checkpoint_io(run: str):
    """Lightning's TorchCheckpointIO, writing through a temp file of ours, fsync and a rename.

    Lightning 2.6 already saves through an fsspec transaction (a temp file moved into
    place), but without an fsync, so a machine crash can leave a renamed, empty file;
    ours is fsynced before and after the rename, its temp files (`.step<N>.ckpt.*.tmp`)
    are recognisable and removed on resume, a full disk is reported as one line, and
    loading always uses torch.load(weights_only=True): only tensors and plain values."""
    import torch
    from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

    class AtomicCheckpointIO(TorchCheckpointIO):
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
                pause_point(f"checkpoint-write:{run}:{checkpoint.get('global_step')}")  # a test hook
                os.replace(tmp, path)
                _fsync_dir(path.parent)
            except BaseException as error:
                Path(tmp).unlink(missing_ok=True)
                failed_write = _as_os_error(error, path)  # torch.save wraps it in a RuntimeError
                if failed_write is not None:
                    raise write_failure(failed_write) from error
                raise
            pause_point(f"checkpoint:{run}:{checkpoint.get('global_step')}")

        def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict:
            try:
                return super().load_checkpoint(path, map_location=map_location or "cpu", weights_only=True)
            except Exception as error:
                raise UserError(
                    f"{path} could not be loaded ({_first_line(error)}); delete it to resume from an earlier "
                    f"checkpoint, or resume=never to start over"
                ) from None

    return AtomicCheckpointIO()


def _periodic_checkpoint(interval: int, **kwargs):
    """ModelCheckpoint every `interval` optimizer steps (never mid-accumulation), taken
    after the step's validation when one follows the step's last batch: Lightning,
    resuming from a checkpoint saved at the end of a training batch, skips the
    validation that was due right after it (its val loss would be lost)."""
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.trainer.states import TrainerFn

    class PeriodicCheckpoint(ModelCheckpoint):
        def _due(self, trainer) -> bool:
            step = trainer.global_step
            return step % interval == 0 and step != self._last_global_step_saved and not trainer.fit_loop._should_accumulate()

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

    return PeriodicCheckpoint(**kwargs)


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


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """The run's periodic Lightning checkpoints as (step, path), oldest first."""
    folder = Path(run_dir) / CHECKPOINT_DIR / LIGHTNING_DIR
    if not folder.is_dir():
        return []
    found = [(int(m[1]), p) for p in folder.iterdir() if (m := CHECKPOINT_NAME.match(p.name))]
    return sorted(found)


def latest_checkpoint(run_dir: Path, remove_temps: bool = True) -> Path | None:
    """The newest periodic checkpoint, checked whole (zip CRCs), after removing the temp
    files of a killed save. A damaged one is an error naming it, never skipped silently."""
    folder = Path(run_dir) / CHECKPOINT_DIR / LIGHTNING_DIR
    if folder.is_dir() and remove_temps:
        for leftover in folder.glob(".*.tmp"):
            leftover.unlink(missing_ok=True)
    found = checkpoints(run_dir)
    if not found:
        return None
    path = found[-1][1]
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        bad = str(error) or "unreadable"
    if bad is not None:
        raise UserError(
            f"{path} is truncated or corrupted ({bad}); delete it to resume from an earlier checkpoint, "
            f"or resume=never to start over"
        )
    return path


# ---------------------------------------------------------------- resume


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _free(key: str) -> bool:
    return any(key == free or key.startswith(f"{free}.") for free in FREE_KEYS)


def config_differences(saved: dict, wanted: dict) -> str | None:
    """The first keys that shape training and differ between two resolved configs, as
    one phrase ("train.max_tokens=4096 there, 400000 here; ..."), or None when none does."""
    old, new = _flatten(saved), _flatten(wanted)
    differs = sorted(k for k in set(old) | set(new) if not _free(k) and old.get(k) != new.get(k))
    if not differs:
        return None
    shown = "; ".join(f"{k}={old.get(k, '(unset)')} there, {new.get(k, '(unset)')} here" for k in differs[:3])
    return shown + (f" and {len(differs) - 3} more" if len(differs) > 3 else "")


def check_same_config(run_dir: Path, saved: dict, wanted: dict) -> None:
    """Refuse to resume a run folder into a different run (the keys that shape training)."""
    differences = config_differences(saved, wanted)
    if differences:
        raise UserError(
            f"{run_dir} was trained with another config ({differences}); resume it with the same config, "
            f"use another run_name, or resume=never to start over"
        )


def _env_rank() -> int:
    """This process's global rank as the launchers set it (Lightning's own rule), 0 alone."""
    for key in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        if os.environ.get(key) is not None:
            return int(os.environ[key])
    return 0


def existing_run(
    run_dir: Path, resolved: dict, family_name: str, arch: dict, model_cfg, tokenizer_hash: str, lead: bool = True
) -> dict:
    """The state of an existing run folder this config may resume, checked: {record, checkpoint}."""
    record_path, config_path = run_dir / RUN_RECORD, run_dir / CONFIG_FILE
    if not record_path.exists() and not config_path.exists():
        if any(run_dir.iterdir()):
            raise UserError(
                f"{run_dir} exists and is not a run folder (no {RUN_RECORD}, no {CONFIG_FILE}); "
                f"choose another run_name or results_dir"
            )
        return {"record": {}, "checkpoint": None}
    saved = read_config(run_dir)
    record = read_json(record_path) if record_path.exists() else {}
    check_same_model(run_dir, family_name, arch, model_cfg)
    if record.get("tokenizer_hash") and record["tokenizer_hash"] != tokenizer_hash:
        raise UserError(
            f"{record_path} was trained with tokenizer {record['tokenizer_hash'][:12]} but this config's is "
            f"{tokenizer_hash[:12]}; use the run's own data, another run_name, or resume=never to start over"
        )
    check_same_config(run_dir, saved, resolved)
    completed = record.get("status") == "completed" and (run_dir / CHECKPOINT_DIR / "model.safetensors").exists()
    checkpoint = None if completed else latest_checkpoint(run_dir, remove_temps=lead)
    return {"record": record, "checkpoint": checkpoint, "completed": completed}


# ---------------------------------------------------------------- train


def train(cfg: DictConfig, callbacks: list | None = None) -> dict:
    """Train the configured architecture; returns the run's record (metrics, run_dir).

    `callbacks` are extra Lightning callbacks (e.g. Optuna's pruning callback)."""
    # the settings first: checking them needs no torch (seconds to import)
    check_train_settings(cfg)
    check_data_settings(cfg)
    resume = _resume_mode(cfg)
    # checked by check_train_settings (arches.settings): positive integers
    interval = int(cfg.train.get("checkpoint_interval", 100))
    keep = int(cfg.train.get("keep_checkpoints", 2))

    from arches.data.cache import prepare
    from arches.registry import family, model_config, plain

    arch = plain(cfg.arch)
    spec = family(arch.get("family", ""))
    seq_len = int(cfg.data.seq_len)
    spec.input_len(arch, seq_len)  # the objective's own limits (T5's sentinels) before the data is prepared
    prepared = prepare(cfg)
    model_cfg = model_config(arch, cfg.size, prepared.vocab_size, seq_len)  # validates before any folder exists
    specials = prepared.specials()
    # the token budget and every count the run records are totals over its ranks
    world = world_size(cfg)
    steps = total_steps(cfg, world)
    resolved = to_container(cfg)

    run_dir = Path(cfg.results_dir) / run_name(cfg)
    # Under DDP every rank runs this function; only rank 0 writes the run folder, the
    # others read it (to resume from the same checkpoint) and train.
    lead = _env_rank() == 0
    state: dict = {"record": {}, "checkpoint": None, "completed": False}
    if run_dir.exists() and resume == "auto":
        state = existing_run(run_dir, resolved, spec.name, arch, model_cfg, prepared.tokenizer_hash, lead)
        if state.get("completed"):
            print(f"arches: {run_dir} is already completed; resume=never trains it again", file=sys.stderr)
            return {**state["record"], "run_dir": str(run_dir)}
    # everything is checked: only now the heavy imports (Lightning takes seconds)
    import lightning as L
    import torch

    from arches.core.stack import parameter_counts
    from arches.data.windows import ArchesDataModule
    from arches.lit import LitArches

    quiet_lightning()
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    try:
        model = spec.build(model_cfg, arch)  # before any folder exists: a model too large leaves none
    except Exception as error:
        if _is_oom(error):
            raise RunFailure(
                f"out of memory building the {arch.get('name')} model at size {cfg.size.name}; choose a smaller size"
            ) from error
        raise
    counts = parameter_counts(model)
    flops_per_token = spec.flops_per_token(model_cfg, arch, seq_len)
    gpu = torch.cuda.is_available() and cfg.trainer.accelerator in ("auto", "gpu", "cuda")
    _speed(cfg, model_cfg, model, gpu)  # checked before any folder exists

    ckpt_path = state["checkpoint"]
    try:
        if lead and ckpt_path is None:  # a fresh start (nothing to keep from an attempt without a checkpoint)
            if run_dir.exists():
                shutil.rmtree(run_dir)
            run_dir.mkdir(parents=True)
            write_config(run_dir, resolved)
            shutil.copyfile(prepared.tokenizer_path, run_dir / TOKENIZER_FILE)
            write_model_file(run_dir, model_identity(spec.name, arch, model_cfg, spec.trained_lengths(arch, seq_len)))
        if lead and ckpt_path is not None:
            print(f"arches: resuming {run_dir.name} from {ckpt_path.name}", file=sys.stderr)
        if lead:
            _record_start(run_dir, cfg, arch, spec, prepared, counts, flops_per_token, steps, seq_len, gpu, world)
    except OSError as error:
        raise write_failure(error, str(run_dir)) from error

    # Each batch's corruption is a pure function of (seed, its window indices): validation
    # scores the same corruption at every pass, and a resumed run continues the same stream.
    train_collate = spec.collate(arch, specials, seq_len, seed=int(cfg.seed), vocab_size=prepared.vocab_size)
    val_collate = spec.collate(arch, specials, seq_len, seed=int(cfg.seed) + 1, vocab_size=prepared.vocab_size)

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
    resume_step = _checkpoint_step(ckpt_path)
    periodic = _periodic_checkpoint(
        interval,
        dirpath=run_dir / CHECKPOINT_DIR / LIGHTNING_DIR,
        filename="step{step:08d}",
        auto_insert_metric_name=False,
        # the last K by step: "step" is always among Lightning's monitor candidates
        monitor="step",
        mode="max",
        save_top_k=keep,
        save_last=False,
        enable_version_counter=False,
    )
    progress = training_progress(cfg, run_dir.name, steps, world)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*exists and is not empty.*")
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
            logger=run_loggers(cfg, logs, run_dir.name, lit, ckpt_path is not None),
            callbacks=progress + list(callbacks or []) + [periodic],
            plugins=[_atomic_checkpoint_io(run_dir.name)],
            # the training sampler splits windows across ranks itself (arches.data.WindowOrder)
            use_distributed_sampler=False,
            enable_progress_bar=shows_bar(progress),
            enable_checkpointing=True,
            enable_model_summary=False,
            deterministic=bool(cfg.trainer.get("deterministic", False)),
        )
    if ckpt_path is not None and lead:
        attempts = list(state["record"].get("resumed") or [])
        attempts.append({"from_step": resume_step, "at": time.strftime("%Y-%m-%dT%H:%M:%S")})
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
                save_checkpoint(run_dir, model, spec.name, arch, model_cfg, spec.trained_lengths(arch, seq_len))
    except BaseException as error:
        if isinstance(error, SystemExit):  # Lightning's answer to Ctrl-C: a graceful shutdown, then exit(1)
            error = KeyboardInterrupt("interrupted")
        failure = _failure(error, cfg, run_dir, trainer.global_step)
        try:
            if lead:
                message = _first_line(failure or error)
                update_record(run_dir, status="failed", error=message, wall_time_s=lit.wall_seconds())
        except OSError:
            pass  # the disk that failed the run may not take the record either; the message says so
        if failure is not None:
            raise failure from error
        if isinstance(error, KeyboardInterrupt):
            raise error from None
        raise
    if not trainer.is_global_zero:
        return {"run_dir": str(run_dir), "rank": trainer.global_rank}
    tokens_seen = int(lit.tokens_seen)
    try:
        record = update_record(
            run_dir,
            status="completed",
            run_dir=str(run_dir),
            steps=int(trainer.global_step),
            tokens_seen=tokens_seen,
            loss_tokens_seen=int(lit.loss_tokens_seen),
            train_flops=tokens_seen * flops_per_token,
            wall_time_s=lit.wall_seconds(),
            train_seconds=lit.train_seconds,
            tokens_per_s=tokens_seen / lit.train_seconds if lit.train_seconds > 0 else None,
            final_val_loss=lit.val_history[-1]["val_loss"] if lit.val_history else None,
            val_history=lit.val_history,
            loss_objective=arch.get("objective"),
            precision=precision(cfg),
            device=str(torch.cuda.get_device_name(0)) if torch.cuda.is_available() else "cpu",
        )
    except OSError as error:
        raise write_failure(error) from error
    # the weights are saved and the run recorded: the training checkpoints have done their job
    shutil.rmtree(run_dir / CHECKPOINT_DIR / LIGHTNING_DIR, ignore_errors=True)
    return record


def _speed(cfg: DictConfig, model_cfg, model, gpu: bool):
    """Checks and applies the speed settings (arches.core.config.SpeedConfig, trainer.compile,
    train.fused_adamw, train.tf32) to the built model; returns the SpeedConfig."""
    import torch

    from arches.core.config import SpeedConfig
    from arches.core.stack import apply_speed
    from arches.lit import fused_adamw

    speed = SpeedConfig.from_train(cfg.train)
    speed.check(model_cfg, training_on_cpu=not gpu)
    fused_adamw(cfg.train.get("fused_adamw", "auto"), torch.device("cuda" if gpu else "cpu"))  # validates
    compiled = compile_wanted(cfg.trainer.get("compile", "auto"), gpu)
    tf32 = cfg.train.get("tf32", True)  # a strict boolean (check_train_settings)
    apply_speed(model, speed)
    if gpu and tf32:
        # float32 matmuls (those outside bf16 autocast) on TF32 tensor cores: the
        # torch.set_float32_matmul_precision docs' "high"
        torch.set_float32_matmul_precision("high")
    if compiled:
        # nn.Module.compile compiles in place: the state_dict keeps its keys (no `_orig_mod.`),
        # so checkpoints load into a compiled or an eager model alike
        model.compile()
    return speed


def _record_start(run_dir: Path, cfg: DictConfig, arch: dict, spec, prepared, counts: dict, flops_per_token: float,
                  steps: int, seq_len: int, gpu: bool, world: int = 1) -> None:
    """run.json at the start of an attempt: what is trained, on what, and how (the
    planned tokens, like every count, over all `world` ranks) and the code, libraries and
    device it runs under (arches.provenance: a resume under others is kept in the history)."""
    record_path = run_dir / RUN_RECORD
    current = {**provenance(), "device": device_info("cuda" if gpu else "cpu", precision(cfg), count=world)}
    update_record(
        run_dir,
        **attempt_fields(read_json(record_path) if record_path.exists() else {}, current),
        status="running",
        error=None,
        run_name=run_dir.name,
        experiment=(cfg.get("experiment") or {}).get("name"),
        variant=cfg.get("variant") or arch.get("name"),
        tuned=bool(cfg.get("tuned_study")),
        tuned_study=cfg.get("tuned_study"),
        tuned_trials=cfg.get("tuned_trials"),
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
        planned_tokens=steps * int(cfg.train.micro_batch_size) * int(cfg.train.grad_accum) * seq_len * world,
        world_size=world,
        knobs=arch.get("model", {}),
        # on a CPU the same seed gives the same run bit for bit; on a GPU it does not
        deterministic_kernels=bool(cfg.trainer.get("deterministic", False)) if gpu else True,
        determinism_note=GPU_DETERMINISM_NOTE if gpu else None,
    )


def _checkpoint_step(path: Path | None) -> int | None:
    if path is None:
        return None
    match = CHECKPOINT_NAME.match(path.name)
    return int(match[1]) if match else None


def _failure(error: BaseException, cfg: DictConfig, run_dir: Path, step: int) -> ArchesError | None:
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
