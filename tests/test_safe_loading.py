"""Safe loading: no untrusted pickles, no silently different model.

- Every torch.load is weights_only=True (Lightning's resume included); a training
  checkpoint holds only tensors and plain values.
- A truncated or corrupted model.safetensors, model.json, config.yaml, run.json or
  training checkpoint is a one-line UserError naming the file.
- A checkpoint of another preset or vocabulary than the config asks for is refused,
  with both named.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from conftest import TINY_VOCAB, local_corpus

from arches.config import compose
from arches.errors import UserError
from arches.train.run_folder import (
    CHECKPOINT_DIR,
    LIGHTNING_DIR,
    MODEL_FILE,
    WEIGHTS_FILE,
    load_model,
    read_config,
    read_json,
    read_model_file,
    write_model_file,
)

REPO = Path(__file__).resolve().parents[1]


class Crash(Exception):
    pass


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """Two gpt runs at debug size: one completed, one that crashed at step 3 after its
    step-2 training checkpoint (status failed, resumable)."""
    import lightning as L

    from arches.train.loop import train

    root = tmp_path_factory.mktemp("safe")
    base = [*local_corpus(root), f"results_dir={root / 'results'}",
            "size=debug", "train.micro_batch_size=4", "train.checkpoint_interval=2", "train.val_interval=2"]  # fmt: skip

    class CrashAtStep3(L.Callback):
        def on_train_batch_start(self, trainer, *args) -> None:
            if trainer.global_step == 3:
                raise Crash("the machine went away")

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a debug model gains nothing from more; a loaded machine loses much
    try:
        train(compose([*base, "trainer.max_steps=2", "run_name=completed"]))
        with pytest.raises(Crash):
            train(compose([*base, "trainer.max_steps=6", "run_name=crashed"]), callbacks=[CrashAtStep3()])
    finally:
        torch.set_num_threads(threads)
    return {"base": base, "completed": root / "results" / "completed", "crashed": root / "results" / "crashed"}


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


# ---------------------------------------------------------------- no pickles


def test_every_torch_load_in_the_repo_is_weights_only():
    calls = []
    for path in [*REPO.glob("arches/**/*.py"), *REPO.glob("harness/**/*.py")]:
        text = path.read_text()
        for match in re.finditer(r"torch\.load\(", text):
            call = text[match.start() : text.find(")", match.start()) + 1]
            calls.append((path.name, call))
    assert all("weights_only=True" in call for _, call in calls), calls


def test_a_training_checkpoint_holds_only_tensors_and_plain_values(runs):
    crashed = runs["crashed"]
    assert read_json(crashed / "run.json")["status"] == "failed"
    ckpt = crashed / CHECKPOINT_DIR / LIGHTNING_DIR / "step00000002.ckpt"
    state = torch.load(ckpt, weights_only=True, map_location="cpu")  # no custom class to unpickle
    assert state["global_step"] == 2
    assert {"state_dict", "optimizer_states", "lr_schedulers", "loops", "arches"} <= set(state)
    assert {"torch", "numpy", "python"} <= set(state["arches"]["rng"])
    loader = state["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    assert loader == [{"epoch": 0, "batches": 2, "seed": 0}]  # the data position


def test_the_checkpoint_loader_refuses_pickled_objects(runs, tmp_path):
    from arches.train.checkpoints import AtomicCheckpointIO as _atomic_checkpoint_io

    hostile = tmp_path / "hostile.ckpt"
    torch.save({"state_dict": {}, "payload": Crash("arbitrary code could run here")}, hostile)
    with pytest.raises(UserError) as error:
        _atomic_checkpoint_io("test").load_checkpoint(hostile)
    assert str(hostile) in one_line(error)


# ---------------------------------------------------------------- damaged files


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01  # the last byte of model.safetensors is tensor data: safetensors alone would not notice
    path.write_bytes(bytes(data))


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


DAMAGE = {
    "model.safetensors truncated": (f"{CHECKPOINT_DIR}/{WEIGHTS_FILE}", truncate),
    "model.safetensors bit flip": (f"{CHECKPOINT_DIR}/{WEIGHTS_FILE}", flip_last_byte),
    "model.json truncated": (f"{CHECKPOINT_DIR}/{MODEL_FILE}", truncate),
    "model.json edited": (f"{CHECKPOINT_DIR}/{MODEL_FILE}", lambda p: edit(p, '"n_layers": 2', '"n_layers": 1')),
    "config.yaml truncated": ("config.yaml", truncate),
    "config.yaml edited": ("config.yaml", lambda p: edit(p, "seed: 0", "seed: 1")),
    "run.json truncated": ("run.json", truncate),
}


def open_run(run_dir: Path) -> None:
    """What evaluation reads of a run folder: its config, its record and its model."""
    read_config(run_dir)
    read_json(run_dir / "run.json")
    load_model(run_dir)


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_file_is_one_line_naming_it(runs, tmp_path, damage):
    run_dir = tmp_path / "run"
    shutil.copytree(runs["completed"], run_dir)
    open_run(run_dir)  # intact, it loads
    name, spoil = DAMAGE[damage]
    spoil(run_dir / name)
    with pytest.raises(UserError) as error:
        open_run(run_dir)
    assert str(run_dir / name) in one_line(error)


def test_a_damaged_training_checkpoint_is_named_not_skipped(runs, tmp_path):
    from arches.train.loop import train

    run_dir = tmp_path / "crashed"
    shutil.copytree(runs["crashed"], run_dir)
    ckpt = run_dir / CHECKPOINT_DIR / LIGHTNING_DIR / "step00000002.ckpt"
    truncate(ckpt)
    with pytest.raises(UserError) as error:
        train(compose([*runs["base"], f"results_dir={tmp_path}", "trainer.max_steps=6", "run_name=crashed"]))
    message = one_line(error)
    assert str(ckpt) in message and "resume=never" in message


# ---------------------------------------------------------------- another model


def test_resuming_into_a_run_of_another_preset_is_refused(runs):
    from arches.train.loop import train

    before = (runs["crashed"] / "run.json").read_bytes()
    with pytest.raises(UserError) as error:
        train(compose([*runs["base"], "arch=bert", "trainer.max_steps=6", "run_name=crashed"]))
    message = one_line(error)
    assert "preset 'gpt'" in message and "preset 'bert'" in message and MODEL_FILE in message
    assert (runs["crashed"] / "run.json").read_bytes() == before  # refused before touching anything


def test_resuming_with_another_vocabulary_is_refused(runs):
    from arches.train.loop import train

    with pytest.raises(UserError) as error:
        train(compose([*runs["base"], "data.vocab_size=600", "trainer.max_steps=6", "run_name=crashed"]))
    message = one_line(error)
    assert f"vocab_size {TINY_VOCAB}" in message and "the config's tokenizer has" in message


def test_loading_weights_of_another_vocabulary_is_refused(runs, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(runs["completed"], run_dir)
    meta = read_model_file(run_dir)
    meta["model"]["vocab_size"] = 600  # a model.json of another model next to these weights
    write_model_file(run_dir, {k: v for k, v in meta.items() if k not in ("sha256", "weights_sha256")})
    with pytest.raises(UserError) as error:
        load_model(run_dir)
    message = one_line(error)
    assert f"[{TINY_VOCAB}, 32]" in message and "[600, 32]" in message and "vocab_size 600" in message


def test_record_is_json_after_a_refusal(runs):
    # the refusals above leave every record readable
    for run in ("completed", "crashed"):
        assert isinstance(json.loads((runs[run] / "run.json").read_text()), dict)
