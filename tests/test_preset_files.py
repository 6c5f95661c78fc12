"""A broken preset file is named with its line (issue 14, item 2): a YAML syntax error
or an unknown model key is one line naming the file, exit 2; `arches list` still lists
every other preset and marks the broken one. Each test runs the real CLI over a copy
of the config tree (put first on PYTHONPATH), so the shipped tree is never touched."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from arches.config import sweeps_dir


def tree_with(tmp_path: Path, preset_text: str) -> Path:
    shutil.copytree(sweeps_dir(), tmp_path / "sweeps", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "sweeps" / "arch" / "opt.yaml").write_text(preset_text)
    return tmp_path


def cli(root: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root), "COLUMNS": "400", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "arches.cli", *args, f"results_dir={root / 'results'}"],
                          capture_output=True, text=True, env=env, cwd=root, timeout=300)  # fmt: skip


SYNTAX_ERROR = "name: opt\nfamily: decoder\nobjective: lm\nmodel: {position: learned\n  bias: [true\n"
UNKNOWN_KEY = "name: opt\nfamily: decoder\nobjective: lm\nmodel: {positon: learned}\n"


def test_a_preset_that_does_not_parse_is_named_with_its_line(tmp_path):
    root = tree_with(tmp_path, SYNTAX_ERROR)
    result = cli(root, "train", "arch=opt", "size=debug")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{root / 'sweeps' / 'arch' / 'opt.yaml'}:" in lines[0] and "fix the YAML" in lines[0]
    assert not (root / "results").exists()


def test_an_unknown_model_key_names_the_preset_file(tmp_path):
    root = tree_with(tmp_path, UNKNOWN_KEY)
    result = cli(root, "train", "arch=opt", "size=debug", "trainer.max_steps=1")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "opt.yaml: unknown model key 'positon'" in lines[0] and "position" in lines[0]


def first_cells(stdout: str) -> list[tuple[str, str]]:
    """(first cell, whole line) of each table row rich printed."""
    return [(line.split("│")[1].strip(), line) for line in stdout.splitlines() if line.count("│") > 2]


def test_list_marks_a_broken_preset_and_lists_the_others(tmp_path):
    for index, text in enumerate((SYNTAX_ERROR, UNKNOWN_KEY)):
        root = tree_with(tmp_path / str(index), text)
        result = cli(root, "list")
        assert result.returncode == 0, result.stderr[-2000:]
        rows = first_cells(result.stdout)
        assert any(cell == "opt" and "broken" in line and "opt.yaml" in line for cell, line in rows), result.stdout[-3000:]
        for preset in ("gpt", "bert", "t5", "glm", "llama"):
            assert preset in {cell for cell, _ in rows}
        assert "1 preset(s) could not be read: opt" in result.stderr
