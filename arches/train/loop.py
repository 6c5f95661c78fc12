"""`train(cfg) -> metrics`: one architecture, trained by Lightning from a Hydra config.

It reads as plan -> open run -> fit -> record: `plan_run` checks the whole config and
resolves what is trained where (nothing is written), `open_run` creates or reopens the
run folder, `arches.train.fit` trains and records the outcome. The run folder is created
only after the whole config has been validated, so bad input leaves nothing behind; a
run that fails later is recorded as failed.

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

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from arches.config import to_container
from arches.errors import write_failure
from arches.settings import check_data_settings, check_train_settings
from arches.train.record import record_start, start_fields
from arches.train.resume import env_rank, existing_run, resume_mode, run_name
from arches.train.run_folder import TOKENIZER_FILE, model_identity, write_config, write_model_file


@dataclass
class Plan:
    """What a checked config trains, and where: everything `train` decides before it writes."""

    cfg: DictConfig
    arch: dict
    spec: Any  # the family's FamilySpec
    seq_len: int
    prepared: Any  # arches.data's prepared corpus
    model_cfg: Any  # arches.core.ModelConfig
    world: int  # processes training together; the token budget and every count are totals over them
    steps: int
    resolved: dict
    run_dir: Path
    lead: bool  # rank 0: the one process that writes the run folder
    state: dict  # an existing run's {record, checkpoint, completed} (arches.train.resume.existing_run)
    interval: int  # train.checkpoint_interval
    keep: int  # train.keep_checkpoints

    @property
    def checkpoint(self) -> Path | None:
        return self.state["checkpoint"]


def plan_run(cfg: DictConfig) -> Plan:
    """Check the config and resolve the run; the data is prepared, nothing else is written."""
    # the settings first: checking them needs no torch (seconds to import)
    check_train_settings(cfg)
    check_data_settings(cfg)
    resume = resume_mode(cfg)
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
    # Lightning resolves the devices: from here on its import (seconds) is paid
    from arches.train.fit import total_steps, world_size

    world = world_size(cfg)
    steps = total_steps(cfg, world)
    resolved = to_container(cfg)

    run_dir = Path(cfg.results_dir) / run_name(cfg)
    # Under DDP every rank runs this function; only rank 0 writes the run folder, the
    # others read it (to resume from the same checkpoint) and train.
    lead = env_rank() == 0
    state: dict = {"record": {}, "checkpoint": None, "completed": False}
    if run_dir.exists() and resume == "auto":
        state = existing_run(run_dir, resolved, spec.name, arch, model_cfg, prepared.tokenizer_hash, lead)
    return Plan(cfg, arch, spec, seq_len, prepared, model_cfg, world, steps, resolved, run_dir, lead, state, interval, keep)


def open_run(plan: Plan, counts: dict, flops_per_token: float, gpu: bool, precision: str, speed: dict | None = None) -> None:
    """Create the run folder (a fresh start) or reopen it (a resume), and record the attempt's
    start, with `speed`: what the speed settings chose on this device (fit.apply_speed_settings)."""
    run_dir, ckpt_path = plan.run_dir, plan.checkpoint
    spec, arch, cfg = plan.spec, plan.arch, plan.cfg
    try:
        if plan.lead and ckpt_path is None:  # a fresh start (nothing to keep from an attempt without a checkpoint)
            if run_dir.exists():
                shutil.rmtree(run_dir)
            run_dir.mkdir(parents=True)
            write_config(run_dir, plan.resolved)
            shutil.copyfile(plan.prepared.tokenizer_path, run_dir / TOKENIZER_FILE)
            lengths = spec.trained_lengths(arch, plan.seq_len)
            write_model_file(run_dir, model_identity(spec.name, arch, plan.model_cfg, lengths))
        if plan.lead and ckpt_path is not None:
            print(f"arches: resuming {run_dir.name} from {ckpt_path.name}", file=sys.stderr)
        if plan.lead:
            fields = start_fields(cfg, arch, spec, plan.prepared, counts, flops_per_token, plan.steps, plan.seq_len,
                                  gpu, plan.world, run_dir.name) | {"speed": speed}  # fmt: skip
            record_start(run_dir, fields, precision, gpu, plan.world)
    except OSError as error:
        raise write_failure(error, str(run_dir)) from error


def train(cfg: DictConfig, callbacks: list | None = None) -> dict:
    """Train the configured architecture; returns the run's record (metrics, run_dir).

    `callbacks` are extra Lightning callbacks (e.g. Optuna's pruning callback)."""
    plan = plan_run(cfg)
    if plan.state.get("completed"):
        print(f"arches: {plan.run_dir} is already completed; resume=never trains it again", file=sys.stderr)
        return {**plan.state["record"], "run_dir": str(plan.run_dir)}
    # everything is checked: only now the model and Lightning's loop (arches.train.fit imports them)
    from arches.train import fit

    model = fit.build_model(plan)  # before any folder exists: a model too large leaves none
    counts, flops_per_token, gpu = fit.model_facts(plan, model)
    speed = fit.apply_speed_settings(cfg, plan.model_cfg, model, gpu)  # checked before any folder exists
    open_run(plan, counts, flops_per_token, gpu, fit.precision(cfg), speed)
    return fit.fit(plan, model, flops_per_token, callbacks)
