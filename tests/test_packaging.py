"""The package builds quietly and ships what it runs on: every module, every config YAML.

`make demo` starts with `pip install -e .`; setuptools used to print walls of warnings there
(a `project.license` table, each sweeps/ config group missing from a hand-written package list).
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_wheel_builds_without_warnings_and_holds_every_module_and_config(tmp_path):
    # the venv's own setuptools, no build isolation: nothing is downloaded
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w",
                           str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Warning" not in done.stdout + done.stderr.replace("WARNING: Location", "")  # pip's index notes aside
    names = set(zipfile.ZipFile(next(tmp_path.glob("arches-*.whl"))).namelist())
    sources = {str(p.relative_to(ROOT)) for top in ("arches", "harness") for p in (ROOT / top).rglob("*.py")}
    configs = {str(p.relative_to(ROOT)) for p in (ROOT / "sweeps").rglob("*.yaml")}
    assert sources - names == set() and configs - names == set()
