"""Which run folder a config trains, and whether an existing one may be resumed.

Resume (`resume: auto`, the default): a run folder of the same name that is not
completed continues from its newest periodic checkpoint (arches.train.checkpoints),
once its config, model and tokenizer are checked to be the ones asked for. The keys
that may differ between attempts are FREE_KEYS; every other key must match.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from omegaconf import DictConfig

from arches.config import to_container
from arches.errors import UserError
from arches.train.record import RUN_RECORD, RunRecord, read_record
from arches.train.run_folder import CHECKPOINT_DIR, CONFIG_FILE, check_same_model, latest_checkpoint, read_config

RESUME_MODES = ("auto", "never")
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
    # how a corpus is prepared, not what it holds (arches.data.stream: the same shards at any num_proc)
    "data.num_proc", "data.shard_bytes",
)  # fmt: skip
# Keys added after run folders were written, each with the value that does what every run did
# before the key existed: a saved config without the key matches that value, and the key at
# that value is left out of the run name's hash, so the same command still finds its folder.
ADDED_KEYS = {"data.stream": False, "data.tokenizer_sample_bytes": 100_000_000}


def resume_mode(cfg: DictConfig) -> str:
    mode = str(cfg.get("resume", "auto"))
    if mode not in RESUME_MODES:
        raise UserError(f"resume={mode} is not one of {', '.join(RESUME_MODES)}; auto continues a killed run, never starts over")
    return mode


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


def _as_before(key: str, flat: dict) -> bool:
    """The key is one of ADDED_KEYS, absent or at the value that does what runs did before it."""
    return key in ADDED_KEYS and flat.get(key, ADDED_KEYS[key]) == ADDED_KEYS[key]


def config_hash(resolved: dict) -> str:
    """A short hash of every key that shapes training (not FREE_KEYS): two configs share it
    exactly when `check_same_config` lets one resume the other."""
    flat = _flatten(resolved)
    shaping = {key: value for key, value in flat.items() if not _free(key) and not _as_before(key, flat)}
    text = json.dumps(shaping, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def run_name(cfg: DictConfig) -> str:
    """`run_name`, or one derived from the config (preset, size, data, seed, and a hash of
    the rest), never from the clock: the same command names the same run folder, so it
    resumes an interrupted run (resume=auto) instead of starting a new one."""
    if cfg.get("run_name"):
        return str(cfg.run_name)
    return f"{cfg.arch.name}-{cfg.size.name}-{cfg.data.source}-seed{cfg.seed}-{config_hash(to_container(cfg))}"


def config_differences(saved: dict, wanted: dict) -> str | None:
    """The first keys that shape training and differ between two resolved configs, as
    one phrase ("train.max_tokens=4096 there, 400000 here; ..."), or None when none does."""
    old, new = _flatten(saved), _flatten(wanted)
    differs = sorted(k for k in set(old) | set(new)
                     if not _free(k) and old.get(k) != new.get(k) and not (_as_before(k, old) and _as_before(k, new)))
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


def env_rank() -> int:
    """This process's global rank as the launchers set it (Lightning's own rule), 0 alone."""
    for key in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        if os.environ.get(key) is not None:
            return int(os.environ[key])
    return 0


def existing_run(
    run_dir: Path, resolved: dict, family_name: str, arch: dict, model_cfg, tokenizer_hash: str, lead: bool = True
) -> dict:
    """The state of an existing run folder this config may resume, checked: {record, checkpoint, completed}
    (`record` as run.json holds it)."""
    record_path, config_path = run_dir / RUN_RECORD, run_dir / CONFIG_FILE
    if not record_path.exists() and not config_path.exists():
        if any(run_dir.iterdir()):
            raise UserError(
                f"{run_dir} exists and is not a run folder (no {RUN_RECORD}, no {CONFIG_FILE}); "
                f"choose another run_name or results_dir"
            )
        return {"record": {}, "checkpoint": None}
    saved = read_config(run_dir)
    record = read_record(run_dir) if record_path.exists() else RunRecord()
    check_same_model(run_dir, family_name, arch, model_cfg)
    if record.tokenizer_hash and record.tokenizer_hash != tokenizer_hash:
        raise UserError(
            f"{record_path} was trained with tokenizer {record.tokenizer_hash[:12]} but this config's is "
            f"{tokenizer_hash[:12]}; use the run's own data, another run_name, or resume=never to start over"
        )
    check_same_config(run_dir, saved, resolved)
    completed = record.status == "completed" and (run_dir / CHECKPOINT_DIR / "model.safetensors").exists()
    checkpoint = None if completed else latest_checkpoint(run_dir, remove_temps=lead)
    return {"record": record.to_dict() if record_path.exists() else {}, "checkpoint": checkpoint, "completed": completed}
