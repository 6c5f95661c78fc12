"""Every training number is checked before anything is prepared or written (issue 14,
item 2): a wrong type or a value out of range is one line naming the key, what it must
be and an example; `arches train` exits 2 and leaves no run folder, and `arches
compare` refuses before it trains anything."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from arches.config import compose
from arches.errors import UserError
from arches.settings import check_train_settings

BAD = [
    ("train.lr=abc", "train.lr='abc' must be a number > 0"),
    ("train.lr=-1e-3", "train.lr=-0.001 must be a number > 0"),
    ("train.lr=0", "train.lr=0 must be a number > 0"),
    ("trainer.max_steps=-5", "trainer.max_steps=-5 must be an integer >= 1 or null"),
    ("trainer.max_steps=2.5", "trainer.max_steps=2.5 must be an integer >= 1 or null"),
    ("train.max_tokens=-100", "train.max_tokens=-100 must be an integer >= 1"),
    ("train.max_tokens=null", "train.max_tokens=None must be an integer >= 1"),
    ("seed=abc", "seed='abc' must be an integer >= 0"),
    ("seed=true", "seed=True must be an integer >= 0"),
    ("train.micro_batch_size=0", "train.micro_batch_size=0 must be an integer >= 1"),
    ("train.grad_accum=1.5", "train.grad_accum=1.5 must be an integer >= 1"),
    ("train.weight_decay=-0.1", "train.weight_decay=-0.1 must be a number >= 0"),
    ("train.eps=0", "train.eps=0 must be a number > 0"),
    ("train.warmup_fraction=1", "train.warmup_fraction=1 must be a number in [0, 1)"),
    ("train.min_lr_ratio=1.5", "train.min_lr_ratio=1.5 must be a number in [0, 1]"),
    ("train.grad_clip=-1", "train.grad_clip=-1 must be a number >= 0 or null"),
    ("train.val_interval=0", "train.val_interval=0 must be an integer >= 1"),
    ("train.val_windows=-2", "train.val_windows=-2 must be an integer >= 1 or null"),
    ("train.log_interval=abc", "train.log_interval='abc' must be an integer >= 1"),
    ("train.checkpoint_interval=0", "train.checkpoint_interval=0 must be an integer >= 1"),
    ("train.keep_checkpoints=-1", "train.keep_checkpoints=-1 must be an integer >= 1"),
    ("train.betas=[0.9]", "train.betas=[0.9] must be two numbers in [0, 1)"),
    ("train.betas=[0.9,1.0]", "train.betas=[0.9, 1.0] must be two numbers in [0, 1)"),
    ("train.betas=abc", "train.betas='abc' must be two numbers in [0, 1)"),
    ("train.lr=inf", "train.lr=inf must be a number > 0"),
]


@pytest.mark.parametrize("override,message", BAD, ids=[o for o, _ in BAD])
def test_a_bad_training_number_is_refused_before_any_folder(override, message, tmp_path):
    from arches.train import train

    cfg = compose(["size=debug", f"results_dir={tmp_path / 'results'}", f"cache_dir={tmp_path / 'cache'}", override])
    with pytest.raises(UserError) as raised:
        train(cfg)
    assert str(raised.value).startswith(message), str(raised.value)
    assert "e.g." in str(raised.value) and "\n" not in str(raised.value)
    assert not (tmp_path / "results").exists() and not (tmp_path / "cache").exists()


def test_the_defaults_and_the_shipped_experiments_pass():
    from arches.config import group_choices

    check_train_settings(compose([]))
    for experiment in group_choices("experiment"):
        check_train_settings(compose([f"experiment={experiment}"]))


def env() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


@pytest.mark.parametrize("command", [
    ["train", "size=debug", "train.lr=abc"],
    ["train", "size=debug", "trainer.max_steps=-5"],
    ["compare", "experiment=families", "quick=true", "train.lr=-1e-3"],
])  # fmt: skip
def test_the_cli_prints_one_line_exits_2_and_writes_nothing(command, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "arches.cli", *command, f"results_dir={tmp_path / 'results'}",
         f"cache_dir={tmp_path / 'cache'}"], capture_output=True, text=True, env=env(), timeout=300,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "must be" in lines[0], result.stderr[-2000:]
    assert not (tmp_path / "results").exists() and not (tmp_path / "cache").exists()
