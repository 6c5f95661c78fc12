"""Where a number came from: the arches version and commit, the library versions, the device.

Training records `provenance()` with the device it trains on in run.json at every
attempt, evaluation with every score it writes, and the report shows them in its
header, so a result can be traced to the code and the machine that made it. Nothing
here imports torch at module level (reading records stays light), and nothing here
fails: what cannot be found is None.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path

import arches

# distribution names, as pip knows them: the libraries whose versions change the numbers
LIBRARIES = ("torch", "lightning", "lm-eval", "transformers", "tokenizers", "optuna", "hydra-core")
# variables that point git at another repository than the one holding the package
GIT_REDIRECTS = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY", "GIT_COMMON_DIR")
GIT_TIMEOUT_S = 10


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git(folder: Path, *args: str) -> str | None:
    """git's stdout in `folder`, or None (git missing, not a checkout, a timeout, any failure)."""
    env = {k: v for k, v in os.environ.items() if k not in GIT_REDIRECTS}
    try:
        done = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, check=False,
                              timeout=GIT_TIMEOUT_S, env=env)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


@functools.lru_cache(maxsize=None)
def git_state(package_dir: str) -> tuple[str | None, bool | None]:
    """(commit, dirty) of the git checkout holding `package_dir`, or (None, None) when the
    package does not come from one (an installed wheel, a copied tree, no git). Cached: one
    look per process, whatever records it."""
    folder = Path(package_dir)
    # an installed copy may sit inside some other repository (a venv in a checkout):
    # only a package whose own files that repository tracks comes from its commit
    if not (_git(folder, "ls-files", "--", "__init__.py") or "").strip():
        return None, None
    commit = (_git(folder, "rev-parse", "HEAD") or "").strip() or None
    status = _git(folder, "status", "--porcelain")
    # untracked files count: an untracked module is code the commit does not hold
    return commit, (None if commit is None or status is None else bool(status.strip()))


def provenance() -> dict:
    """The code that ran: arches version, git commit and dirty flag of its source tree,
    Python, platform and the versions of the libraries that shape the numbers (None if absent)."""
    commit, dirty = git_state(str(Path(arches.__file__).resolve().parent))
    return {
        "arches_version": _version("arches") or arches.__version__,
        "git_commit": commit,
        "git_dirty": dirty,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "libraries": {name: _version(name) for name in LIBRARIES},
    }


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux), else what `platform` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def device_info(kind: str, dtype: str | None, count: int | None = None, index: int = 0) -> dict:
    """The device that computed: `kind` (cuda | cpu | mps ...), its name (the GPU's, or the
    CPU model), how many took part, the CUDA version torch was built with, and the dtype
    (training: Lightning's precision, e.g. bf16-mixed; evaluation: the weights' dtype)."""
    info = {"kind": kind, "name": None, "count": count, "cuda": None, "dtype": dtype}
    if kind == "cuda":
        import torch

        info["name"] = torch.cuda.get_device_name(index)
        info["count"] = count if count is not None else torch.cuda.device_count()
        info["cuda"] = torch.version.cuda
    else:
        info["name"] = cpu_name()
        info["count"] = count if count is not None else 1
    return info


def attempt_fields(record: dict, current: dict) -> dict:
    """run.json's provenance fields for an attempt that runs under `current`, given the
    record so far: `provenance` is the latest attempt's (like `device` and `precision`);
    once a resumed attempt runs under other code, libraries or device than the one before,
    `provenance_history` lists each change, oldest first, as {attempt, provenance}:
    attempt 0 started the run, attempt k is the k-th resume (`resumed[k-1]`)."""
    previous = record.get("provenance")
    history = list(record.get("provenance_history") or [])
    if previous is not None and previous != current:
        attempt = len(record.get("resumed") or []) + 1
        history = (history or [{"attempt": 0, "provenance": previous}]) + [{"attempt": attempt, "provenance": current}]
    return {"provenance": current, **({"provenance_history": history} if history else {})}
