"""run.json, the run's record: one typed dataclass (`RunRecord`), written and read here only.

Writers: training (at the start of every attempt, then resumed / failed / completed),
`arches import-hf` (a completed record), evaluation (`evals`, `alternatives`), compare
(`compared_shots`) and tune (`status=pruned`), all through `update_record`; readers
(harness.store, evaluation, the resume check) through `read_record`. Every write is atomic
(a temporary file, an fsync and a rename: arches.train.run_folder.write_json).

Old records still read: one written before `schema_version` existed reads as version 0,
keys this dataclass does not name are kept in `extra` and written back (nothing is lost),
and a key is written only when it has a value or was set to null explicitly, so a record
keeps the keys it had (readers tell "never recorded" from "recorded as none").
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arches.errors import UserError
from arches.provenance import attempt_fields, device_info, provenance
from arches.train.run_folder import read_json, write_json

RUN_RECORD = "run.json"
# 1: the first typed record (the fields below). Records without the key are 0: the same
# fields, written before the record had a version.
SCHEMA_VERSION = 1
GPU_DETERMINISM_NOTE = (
    "CUDA kernels (SDPA/flash attention, atomic adds in backward, cuBLAS split-K) are not bit-deterministic: "
    "two runs with the same seed agree only to a tolerance; compare variants across seeds, not bit for bit"
)


@dataclass
class RunRecord:
    """Every field run.json may hold; None where the run has not recorded it (yet)."""

    schema_version: int = SCHEMA_VERSION
    # what the run is, written when an attempt starts
    status: str | None = None  # running | completed | failed | pruned
    error: str | None = None  # the one-line error of a failed attempt
    run_name: str | None = None
    experiment: str | None = None
    variant: str | None = None
    ladder_rung: int | None = None  # index of the run's size in experiment.ladder.sizes (harness.ladder)
    tuned: bool | None = None
    tuned_study: str | None = None
    tuned_trials: int | None = None
    family: str | None = None
    preset: str | None = None
    objective: str | None = None
    size: str | None = None
    seed: int | None = None
    data: str | None = None
    tokenizer_hash: str | None = None
    vocab_size: int | None = None
    seq_len: int | None = None
    params_total: int | None = None
    params_non_embedding: int | None = None
    flops_per_token: float | None = None
    planned_steps: int | None = None
    planned_tokens: int | None = None
    world_size: int | None = None
    knobs: dict | None = None
    deterministic_kernels: bool | None = None
    determinism_note: str | None = None
    # how the model computed on this device: what trainer.compile and each `auto` speed
    # setting chose (arches.train.fit.apply_speed_settings); never what it computes
    speed: dict | None = None
    # the code, libraries and device of the latest attempt, and each change (arches.provenance)
    provenance: dict | None = None
    provenance_history: list[dict] | None = None
    resumed: list[dict] | None = None  # one {from_step, at} per resumed attempt
    # what the run did, written when it completes (wall_time_s also when it fails)
    run_dir: str | None = None
    steps: int | None = None
    tokens_seen: int | None = None
    loss_tokens_seen: int | None = None
    train_flops: float | None = None
    wall_time_s: float | None = None
    train_seconds: float | None = None
    tokens_per_s: float | None = None
    final_val_loss: float | None = None
    val_history: list[dict] | None = None
    loss_objective: str | None = None
    precision: str | None = None
    device: str | None = None
    # an imported transformers checkpoint (arches.interop)
    imported_from: str | None = None
    tokenizer_from: str | None = None
    hf_architecture: str | None = None
    tokenizer_kind: str | None = None
    # evaluation and comparison (harness.eval.command, harness.eval.alternatives, harness.compare)
    evals: dict | None = None
    alternatives: dict | None = None
    compared_shots: list[int] | None = None
    # keys of the file that no field names (a newer writer's, a hand-added note): kept as they are
    extra: dict[str, Any] = field(default_factory=dict)
    # fields set to null on purpose (written as null; other None fields are left out)
    nulls: set[str] = field(default_factory=set, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: dict) -> RunRecord:
        names = _field_names()
        record = cls(schema_version=int(data.get("schema_version", 0)))
        record.extra = {key: value for key, value in data.items() if key not in names}
        record.update(**{key: value for key, value in data.items() if key in names and key != "schema_version"})
        return record

    def update(self, **values: Any) -> RunRecord:
        names = _field_names()
        for name, value in values.items():
            if name not in names or name == "schema_version":
                raise TypeError(f"run.json has no field {name!r}; declare it in RunRecord (arches/train/record.py)")
            setattr(self, name, value)
            if value is None:
                self.nulls.add(name)
            else:
                self.nulls.discard(name)
        return self

    def to_dict(self) -> dict:
        """The record as run.json holds it; an old record (version 0) as it was read."""
        data = dict(self.extra)
        for name in _field_names() - {"schema_version"}:
            value = getattr(self, name)
            if value is not None or name in self.nulls:
                data[name] = value
        if self.schema_version:
            data["schema_version"] = self.schema_version
        return data


def _field_names() -> set[str]:
    return {f.name for f in dataclasses.fields(RunRecord)} - {"extra", "nulls"}


def record_path(run_dir: Path) -> Path:
    return Path(run_dir) / RUN_RECORD


def read_record(run_dir: Path) -> RunRecord:
    """`<run_dir>/run.json`; a missing, corrupted or non-object file is one line naming it."""
    path = record_path(run_dir)
    data = read_json(path)
    if not isinstance(data, dict):
        raise UserError(f"{path} is corrupted (not a JSON object); delete that run folder and run it again")
    return RunRecord.from_dict(data)


def write_record(run_dir: Path, record: RunRecord) -> dict:
    """Write the record (atomically) as one of the current schema version; returns it as written."""
    record.schema_version = SCHEMA_VERSION  # an old record's fields are this version's, same meaning
    data = record.to_dict()
    write_json(record_path(run_dir), data)
    return data


def update_record(run_dir: Path, /, **values: Any) -> dict:
    """Set these fields of the run's record (a new one if it has none) in one atomic write;
    returns the record as written."""
    path = record_path(run_dir)
    record = read_record(run_dir) if path.exists() else RunRecord()
    return write_record(run_dir, record.update(**values))


def start_fields(cfg, arch: dict, spec, prepared, counts: dict, flops_per_token: float, steps: int, seq_len: int,
                 gpu: bool, world: int, run_name: str) -> dict:
    """What an attempt records when it starts: what is trained, on what, and how (the planned
    tokens, like every count, over all `world` ranks)."""
    return dict(
        status="running",
        error=None,
        run_name=run_name,
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


def record_start(run_dir: Path, fields: dict, precision: str, gpu: bool, world: int) -> dict:
    """run.json at the start of an attempt: `fields` (start_fields) and the code, libraries and
    device it runs under (arches.provenance: a resume under others is kept in the history)."""
    path = record_path(run_dir)
    current = {**provenance(), "device": device_info("cuda" if gpu else "cpu", precision, count=world)}
    earlier = read_record(run_dir).to_dict() if path.exists() else {}
    return update_record(run_dir, **attempt_fields(earlier, current), **fields)
