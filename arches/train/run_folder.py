"""The run folder: one folder per run is the source of truth (its layout, and writing
and reading its files; run.json itself is arches.train.record's).

Layout:
    <results_dir>/<run_name>/
      config.yaml                 the resolved Hydra config
      run.json                    the run's record (arches.train.record.RunRecord): status, error,
                                  family, preset, tokenizer hash, compute accounting, timings, metrics
      tokenizer.json              the tokenizer the run was trained with
      checkpoint/model.safetensors  weights (written when training completes)
      checkpoint/model.json       family, preset (arch) and ModelConfig: enough to rebuild the model,
                                  and the weights' sha256 (written when training starts, sealed at the end)
      checkpoint/lightning/       while training: the last K Lightning checkpoints (step<N>.ckpt:
                                  weights, optimizer, scheduler, loop and data position, RNG states)
      logs/                       CSV (metrics.csv) and TensorBoard logs
Every file is written atomically (a temporary file, then a rename); config.yaml and
model.json carry a sha256 of their content, so a truncated or corrupted one is refused.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from arches.errors import UserError, first_line

if TYPE_CHECKING:  # torch is imported where a model is built or saved: reading records stays light
    from torch import nn

    from arches.core import ModelConfig

CONFIG_FILE = "config.yaml"
CHECKPOINT_DIR = "checkpoint"
LIGHTNING_DIR = "lightning"  # under CHECKPOINT_DIR: the periodic training checkpoints
WEIGHTS_FILE = "model.safetensors"
MODEL_FILE = "model.json"
TOKENIZER_FILE = "tokenizer.json"
CONFIG_SEAL = "# arches config sha256="  # the first line of config.yaml: a hash of the rest
PAUSE_ENV = "ARCHES_TEST_PAUSE_AT"
CHECKPOINT_NAME = re.compile(r"^step(\d+)\.ckpt$")  # the periodic checkpoints under LIGHTNING_DIR


def pause_point(name: str) -> None:
    """A test hook: with `ARCHES_TEST_PAUSE_AT=<pattern>[@<flag file>]` and `name` matching
    the pattern (fnmatch), create the flag file and sleep, so a test can SIGKILL the
    process at a known point: `checkpoint-write:<run>:<step>` (before a checkpoint's
    rename), `checkpoint:<run>:<step>` (after it), `eval-cached:<run>` (after a batch
    of evaluation results is cached), `write:<file name>` (a report file, before its
    rename). Unset, it costs one environment lookup."""
    wanted = os.environ.get(PAUSE_ENV)
    if not wanted:
        return
    pattern, _, flag = wanted.partition("@")
    if not fnmatch.fnmatchcase(name, pattern):
        return
    if flag:
        Path(flag).write_text(f"{name}\n")
    print(f"arches: paused at {name} ({PAUSE_ENV})", file=sys.stderr, flush=True)
    while True:
        # short sleeps: a signal the kernel hands to another thread (TensorBoard's writer) sets Python's
        # pending flag without waking the main thread, whose one long sleep then never sees a Ctrl-C
        time.sleep(0.05)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()


def write_atomic(path: Path, data: str | bytes) -> Path:
    """Write text or bytes to `path` via a temporary file in the same folder, an fsync
    and a rename, so a reader sees the old file or the new one, never a partial one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, _FILE_MODE)  # mkstemp makes 0600; results are shared like any written file
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode("utf-8") if isinstance(data, str) else data)
            handle.flush()
            os.fsync(handle.fileno())
        if os.environ.get(PAUSE_ENV):  # a test hook: kill between write and rename
            pause_point(f"write:{path.name}")
        os.replace(tmp, path)
    except BaseException as error:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(error, OSError) and error.filename is None:
            error.filename = str(path)  # a failed write names its file (and so its folder)
        raise
    return path


def write_json(path: Path, data: Any) -> None:
    write_atomic(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"{path} does not exist; is this a run folder written by `arches train`?") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"{path} is corrupted ({error}); delete the run folder and train it again") from None


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def write_config(run_dir: Path, config: dict) -> None:
    """The resolved config as YAML, its first line a sha256 of the rest (a truncated or
    corrupted file then fails to load instead of giving a different run)."""
    body = yaml.safe_dump(config, sort_keys=False)
    write_atomic(Path(run_dir) / CONFIG_FILE, f"{CONFIG_SEAL}{sha256_text(body)}\n{body}")


def read_config(run_dir: Path) -> dict:
    path = Path(run_dir) / CONFIG_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path} does not exist; is {run_dir} a run folder?") from None
    except UnicodeDecodeError:
        raise UserError(f"{path} is corrupted (not UTF-8 text); train the run again") from None
    first, _, body = text.partition("\n")
    if first.startswith(CONFIG_SEAL):  # files written before the seal existed have none
        if sha256_text(body) != first[len(CONFIG_SEAL) :].strip():
            raise UserError(f"{path} is truncated or corrupted (its sha256 does not match); train the run again")
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise UserError(f"{path} is corrupted ({first_line(error)}); train the run again") from None
    if not isinstance(config, dict):
        raise UserError(f"{path} is corrupted (not a mapping of config keys); train the run again")
    return config


def model_identity(family: str, arch: dict, model_cfg: ModelConfig, trained_lengths: dict | None = None) -> dict:
    """What checkpoint/model.json holds: enough to rebuild the model, and the lengths it
    trained on (the family's `trained_lengths`), which its scorer never exceeds."""
    identity = {"family": family, "arch": arch, "model": model_cfg.to_dict()}
    if trained_lengths is not None:
        identity["trained_lengths"] = {key: int(value) for key, value in trained_lengths.items()}
    return identity


def _seal(meta: dict) -> dict:
    body = {k: v for k, v in meta.items() if k != "sha256"}
    return {**body, "sha256": sha256_text(json.dumps(body, sort_keys=True, default=str))}


def write_model_file(run_dir: Path, meta: dict) -> None:
    write_json(Path(run_dir) / CHECKPOINT_DIR / MODEL_FILE, _seal(meta))


def read_model_file(run_dir: Path) -> dict:
    """checkpoint/model.json, checked: its own sha256 and the keys a model needs."""
    path = Path(run_dir) / CHECKPOINT_DIR / MODEL_FILE
    meta = read_json(path)
    if not isinstance(meta, dict) or not {"family", "arch", "model"} <= set(meta):
        raise UserError(f"{path} is corrupted (it lacks family, arch or model); train the run again")
    if "sha256" in meta and _seal(meta)["sha256"] != meta["sha256"]:
        raise UserError(f"{path} is truncated or corrupted (its sha256 does not match); train the run again")
    return meta


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_checkpoint(
    run_dir: Path, model: nn.Module, family: str, arch: dict, model_cfg: ModelConfig, trained_lengths: dict | None = None
) -> Path:
    """Weights as safetensors plus the model's own config; shared (tied) tensors are stored once.

    model.json (with the weights' sha256) is written before the weights are renamed into
    place, so a weights file present is always one that model.json vouches for."""
    from safetensors.torch import save_model

    folder = Path(run_dir) / CHECKPOINT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{WEIGHTS_FILE}.tmp"
    try:
        save_model(model, str(tmp))
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        identity = model_identity(family, arch, model_cfg, trained_lengths)
        write_model_file(run_dir, {**identity, "weights_sha256": file_sha256(tmp)})
        os.replace(tmp, folder / WEIGHTS_FILE)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return folder


def check_same_model(run_dir: Path, family: str, arch: dict, model_cfg: ModelConfig) -> None:
    """Refuse a run folder whose model (checkpoint/model.json) is not the one the config asks for."""
    path = Path(run_dir) / CHECKPOINT_DIR / MODEL_FILE
    if not path.exists():
        return
    meta = read_model_file(run_dir)
    held, asked = meta["arch"].get("name"), arch.get("name")
    if meta["family"] != family or held != asked:
        raise UserError(
            f"{path} is a checkpoint of preset '{held}' ({meta['family']} family) but the config asks for preset "
            f"'{asked}' ({family} family); use another run_name, or resume=never to start over"
        )
    held_vocab, asked_vocab = meta["model"].get("vocab_size"), model_cfg.vocab_size
    if held_vocab != asked_vocab:
        raise UserError(
            f"{path} has vocab_size {held_vocab} but the config's tokenizer has {asked_vocab}; use the run's own "
            f"data and tokenizer, another run_name, or resume=never to start over"
        )
    wanted = json.loads(json.dumps(model_cfg.to_dict(), default=str))  # as model.json stores them
    differs = sorted(k for k in set(wanted) | set(meta["model"]) if meta["model"].get(k) != wanted.get(k))
    if differs or meta["arch"] != json.loads(json.dumps(arch, default=str)):
        shown = ", ".join(f"model.{k}: {meta['model'].get(k)} vs {wanted.get(k)}" for k in differs[:3]) or "arch knobs"
        raise UserError(
            f"{path} holds a different {asked} model than the config asks for ({shown}); "
            f"use the same config, another run_name, or resume=never to start over"
        )


def _check_shapes(weights: Path, model: nn.Module, meta: dict) -> None:
    """Compare the stored tensor shapes with the model's before loading: a checkpoint of
    another vocabulary or size is named with both shapes, not a wall of state-dict errors."""
    from safetensors import safe_open

    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    with safe_open(str(weights), framework="pt") as handle:
        for name in handle.keys():
            stored = tuple(handle.get_slice(name).get_shape())
            if name in expected and stored != expected[name]:
                vocab = meta["model"].get("vocab_size")
                hint = f" (model.json says vocab_size {vocab})" if vocab in expected[name] else ""
                raise UserError(
                    f"{weights} stores {name} with shape {list(stored)} but {Path(weights).parent / MODEL_FILE} "
                    f"describes {list(expected[name])}{hint}; the two files come from different models: train again"
                )


def load_model(run_dir: Path, device: str = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild a run's model from the checkpoint's own config (never the command line).

    Refused with one line naming the file: a missing, truncated or corrupted
    model.json or model.safetensors, weights whose sha256 differs from the one
    model.json recorded, or tensors of other shapes (another vocabulary or size)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_model as load_weights

    from arches.core import ModelConfig
    from arches.registry import family

    folder = Path(run_dir) / CHECKPOINT_DIR
    weights = folder / WEIGHTS_FILE
    if not weights.exists():
        raise UserError(f"{run_dir} has no checkpoint ({weights} is missing); train it first with `arches train`")
    meta = read_model_file(run_dir)
    if meta.get("weights_sha256") and file_sha256(weights) != meta["weights_sha256"]:
        raise UserError(
            f"{weights} is truncated or corrupted (its sha256 differs from the one in {MODEL_FILE}); train the run again"
        )
    try:
        model_cfg = ModelConfig.from_dict(meta["model"])
        model = family(meta["family"]).build(model_cfg, meta["arch"])
    except (UserError, TypeError, ValueError) as error:
        raise UserError(f"{folder / MODEL_FILE} is corrupted ({first_line(error)}); train the run again") from None
    try:
        _check_shapes(weights, model, meta)
        load_weights(model, str(weights), strict=True, device=device)
    except (SafetensorError, RuntimeError, OSError) as error:
        raise UserError(f"{weights} could not be loaded ({first_line(error)}); train the run again") from None
    model.eval()
    return model, meta


def checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """The run's periodic Lightning checkpoints as (step, path), oldest first."""
    folder = Path(run_dir) / CHECKPOINT_DIR / LIGHTNING_DIR
    if not folder.is_dir():
        return []
    found = [(int(m[1]), p) for p in folder.iterdir() if (m := CHECKPOINT_NAME.match(p.name))]
    return sorted(found)


def checkpoint_step(path: Path | None) -> int | None:
    """The optimizer step a periodic checkpoint was saved at (from its name), None for none."""
    if path is None:
        return None
    match = CHECKPOINT_NAME.match(path.name)
    return int(match[1]) if match else None


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
