"""The run folder: one folder per run is the source of truth (write and read).

Layout:
    <results_dir>/<run_name>/
      config.yaml                 the resolved Hydra config
      run.json                    status (running | completed | failed), error, family, preset,
                                  tokenizer hash, compute accounting, timings, final metrics
      tokenizer.json              the tokenizer the run was trained with
      checkpoint/model.safetensors  weights
      checkpoint/model.json       family, preset (arch) and ModelConfig: enough to rebuild the model
      logs/                       CSV (metrics.csv) and TensorBoard logs
Every file is written atomically (a temporary file, then a rename).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import yaml
from torch import nn

from arches.core import ModelConfig
from arches.errors import UserError

RUN_RECORD = "run.json"
CONFIG_FILE = "config.yaml"
CHECKPOINT_DIR = "checkpoint"
WEIGHTS_FILE = "model.safetensors"
MODEL_FILE = "model.json"
TOKENIZER_FILE = "tokenizer.json"


def write_atomic(path: Path, text: str) -> None:
    """Write text to `path` via a temporary file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, data: Any) -> None:
    write_atomic(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"{path} does not exist; is this a run folder written by `arches train`?") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"{path} is corrupted ({error}); delete the run folder and train it again") from None


def update_record(run_dir: Path, /, **fields: Any) -> dict:
    path = Path(run_dir) / RUN_RECORD
    record = read_json(path) if path.exists() else {}
    record.update(fields)
    write_json(path, record)
    return record


def write_config(run_dir: Path, config: dict) -> None:
    write_atomic(Path(run_dir) / CONFIG_FILE, yaml.safe_dump(config, sort_keys=False))


def read_config(run_dir: Path) -> dict:
    path = Path(run_dir) / CONFIG_FILE
    try:
        return yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path} does not exist; is {run_dir} a run folder?") from None
    except yaml.YAMLError as error:
        raise UserError(f"{path} is corrupted ({str(error).splitlines()[0]}); train the run again") from None


def save_checkpoint(run_dir: Path, model: nn.Module, family: str, arch: dict, model_cfg: ModelConfig) -> Path:
    """Weights as safetensors plus the model's own config; shared (tied) tensors are stored once."""
    from safetensors.torch import save_model

    folder = Path(run_dir) / CHECKPOINT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{WEIGHTS_FILE}.tmp"
    save_model(model, str(tmp))
    os.replace(tmp, folder / WEIGHTS_FILE)
    write_json(folder / MODEL_FILE, {"family": family, "arch": arch, "model": model_cfg.to_dict()})
    return folder


def load_model(run_dir: Path, device: str = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild a run's model from the checkpoint's own config (never the command line)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_model as load_weights

    from arches.registry import family

    folder = Path(run_dir) / CHECKPOINT_DIR
    weights = folder / WEIGHTS_FILE
    if not weights.exists():
        raise UserError(f"{run_dir} has no checkpoint ({weights} is missing); train it first with `arches train`")
    meta = read_json(folder / MODEL_FILE)
    model_cfg = ModelConfig.from_dict(meta["model"])
    model = family(meta["family"]).build(model_cfg, meta["arch"])
    try:
        load_weights(model, str(weights), strict=True, device=device)
    except (SafetensorError, RuntimeError, OSError) as error:
        raise UserError(f"{weights} could not be loaded ({str(error).splitlines()[0]}); train the run again") from None
    model.eval()
    return model, meta
