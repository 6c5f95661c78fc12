"""run.json as one typed record (arches.train.record.RunRecord): a round trip keeps every
key (unknown ones, explicit nulls) and adds none; a record written before schema_version
existed (tests/fixtures/run_record_v0.json, a real one) still reads, through harness.store
too; and what each writer leaves (training's start, resume, failure and completion,
`arches import-hf`) is a record the reader accepts. Also: a training checkpoint files the
periodic checkpoint's state under the key checkpoints of the old train.py used."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import local_corpus

from arches.config import compose
from arches.train.record import RUN_RECORD, SCHEMA_VERSION, RunRecord, read_record, update_record, write_record
from arches.train.run_folder import CHECKPOINT_DIR, LIGHTNING_DIR
from harness import store

OLD_RECORD = Path(__file__).parent / "fixtures" / "run_record_v0.json"
# PeriodicCheckpoint's state key in a checkpoint written at commit ae6fd88, when a factory
# function defined the class (read from checkpoint/lightning/step<N>.ckpt's "callbacks")
OLD_STATE_KEY = (
    "_periodic_checkpoint.<locals>.PeriodicCheckpoint{'monitor': 'step', 'mode': 'max', "
    "'every_n_train_steps': 0, 'every_n_epochs': 1, 'train_time_interval': None}"
)


def test_a_round_trip_keeps_unknown_keys_and_explicit_nulls(tmp_path):
    record = RunRecord(status="completed", run_name="r", seed=3, val_history=[{"step": 1, "val_loss": 2.0}])
    record.update(error=None)  # cleared on purpose: written as null
    record.extra["note"] = "written by hand"
    written = write_record(tmp_path, record)

    again = read_record(tmp_path)
    assert again == record and again.extra == {"note": "written by hand"}
    assert written == json.loads((tmp_path / RUN_RECORD).read_text()) == again.to_dict()
    assert written["schema_version"] == SCHEMA_VERSION and written["error"] is None
    assert "steps" not in written  # never recorded: left out, as before the record was typed


def test_an_unknown_field_is_refused_by_the_writer(tmp_path):
    with pytest.raises(TypeError, match="no field 'stepz'"):
        update_record(tmp_path, stepz=3)
    assert not (tmp_path / RUN_RECORD).exists()


def test_an_old_record_reads_as_it_was_and_updates_to_the_current_version(tmp_path):
    old = json.loads(OLD_RECORD.read_text())
    assert "schema_version" not in old
    record = RunRecord.from_dict(old)
    assert record.schema_version == 0 and record.extra == {}  # every key of the old record is a field
    assert record.to_dict() == old  # nothing lost, nothing added
    assert record.status == "completed" and record.steps == 30 and record.evals["corpus_next|0"]["n"] == 20

    run = tmp_path / "exp" / "gpt"
    run.mkdir(parents=True)
    shutil.copyfile(OLD_RECORD, run / RUN_RECORD)
    (loaded,) = store.load_runs(tmp_path / "exp")
    assert loaded["run_name"] == "gpt" and loaded["final_val_loss"] == old["final_val_loss"]
    assert loaded["run_dir"] == str(run)

    updated = update_record(run, compared_shots=[0])
    assert updated == {**old, "compared_shots": [0], "schema_version": SCHEMA_VERSION}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """A debug gpt run that crashed after its step-2 checkpoint, then resumed to completion."""
    import lightning as L

    from arches.train.loop import train

    root = tmp_path_factory.mktemp("record")
    overrides = [*local_corpus(root), f"results_dir={root / 'results'}", "run_name=gpt", "size=debug",
                 "train.micro_batch_size=4", "train.checkpoint_interval=2", "train.val_interval=2",
                 "trainer.max_steps=3", "train.progress=none"]  # fmt: skip

    class CrashAfterStep2(L.Callback):
        def on_train_batch_start(self, trainer, *args) -> None:
            if trainer.global_step == 2:
                raise RuntimeError("the machine went away")

    run = root / "results" / "gpt"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.raises(RuntimeError):
            train(compose(overrides), callbacks=[CrashAfterStep2()])
        failed = read_record(run)
        checkpoint = torch.load(run / CHECKPOINT_DIR / LIGHTNING_DIR / "step00000002.ckpt", weights_only=True)
        completed = train(compose(overrides))
    finally:
        torch.set_num_threads(threads)
    return {"run": run, "failed": failed, "checkpoint": checkpoint, "completed": completed}


def test_training_writes_records_the_reader_accepts(trained):
    failed = trained["failed"]  # the start record, then the failure
    assert failed.schema_version == SCHEMA_VERSION and failed.status == "failed"
    assert failed.error == "the machine went away" and failed.planned_steps == 3 and failed.family == "decoder"
    assert failed.provenance is not None and failed.steps is None

    record = read_record(trained["run"])  # the resumed attempt's start, its resume, its completion
    assert record.to_dict() == trained["completed"]
    assert record.status == "completed" and record.error is None and record.steps == 3
    assert [attempt["from_step"] for attempt in record.resumed] == [2]
    assert record.val_history[-1]["step"] == 3 and record.extra == {}
    # what each `auto` speed setting chose on this CPU: eager, the loss in 16 MiB chunks
    assert record.speed == {
        "compile": False, "attention_backend": "auto", "loss_chunk_size": 16 * 2**20 // (4 * record.vocab_size),
        "activation_checkpointing": False, "fused_adamw": False, "tf32": False,
    }  # fmt: skip


def test_the_periodic_checkpoint_keeps_the_state_key_of_old_checkpoints(trained):
    # so a checkpoint written before the class moved restores the top-k bookkeeping (which
    # checkpoints to keep, which to delete) when it is resumed
    assert list(trained["checkpoint"]["callbacks"]) == [OLD_STATE_KEY]


def test_import_hf_writes_a_record_the_reader_accepts(tmp_path):
    pytest.importorskip("transformers")
    from hf_checkpoints import save_hf

    from arches.interop import import_hf

    save_hf(tmp_path / "gpt2", "gpt2")
    run = import_hf(str(tmp_path / "gpt2"), overrides=[f"results_dir={tmp_path / 'results'}"])
    record = read_record(run)
    assert record.schema_version == SCHEMA_VERSION and record.status == "completed"
    assert record.imported_from == str(tmp_path / "gpt2") and record.tokenizer_kind == "hf" and record.extra == {}
    assert record.seed is None and "seed" in record.to_dict()  # recorded as none
