"""The BIG-bench source archive: fetched once, never installed, its tasks read in place.

PyPI carries BIG-bench (Srivastava et al. 2022) in the `bigbench==1.0.0` source
archive (358 MB), whose JSON tasks are `task.json` files of `{"input",
"target_scores"}` examples. `fetch_archive` gets it with `pip download` into
`<cache_dir>/downloads/` (its install would need tensorflow) and checks its pinned
sha256; `read_task_files` reads the chosen tasks' `task.json` members from it.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
from pathlib import Path, PurePosixPath

from arches.errors import UserError
from arches.train.run_folder import file_sha256

REQUIREMENT = "bigbench==1.0.0"
ARCHIVE_NAME = "bigbench-1.0.0.tar.gz"
ARCHIVE_SHA256 = "1bb398a5512c6d798cdebe0dfa0ac03f67f6033fa6b39c6ef71df978c7cbc5c2"
ARCHIVE_MB = 358
TASKS_ROOT = "bigbench/benchmark_tasks"
# pip 26.3 refuses a PyPI sdist whose metadata declares a direct-URL dependency, even
# with --no-deps, and bigbench 1.0.0 declares `bleurt @ file://...`; pip 25.0.1 (run
# from its wheel, never installed) downloads the same archive.
FALLBACK_PIP = "pip==25.0.1"
FALLBACK_PIP_WHEEL = "pip-25.0.1-py3-none-any.whl"

# lm-eval task name -> the task's folder under bigbench/benchmark_tasks/
BIGBENCH_TASKS: dict[str, str] = {
    "hyperbaton": "hyperbaton",
    "winowhy": "winowhy",
    "social_iqa": "social_iqa",
    "strategyqa": "strategyqa",
    "timedial": "timedial",
    "date_understanding": "date_understanding",
    "logical_deduction_three_objects": "logical_deduction/three_objects",
    "cause_and_effect_one_sentence": "cause_and_effect/one_sentence",
    "cause_and_effect_two_sentences": "cause_and_effect/two_sentences",
}


def archive_path(cache_dir: str | Path) -> Path:
    return Path(cache_dir).expanduser() / "downloads" / ARCHIVE_NAME


# ---------------------------------------------------------------- fetching


def _pip_download(pip: list[str], requirement: str, folder: Path, *extra: str) -> subprocess.CompletedProcess:
    # --retries/--timeout: fail within seconds offline rather than after pip's minutes of retries
    command = [*pip, "download", "--no-deps", *extra, requirement, "-d", str(folder),
               "--disable-pip-version-check", "--quiet", "--retries", "1", "--timeout", "30"]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True)


def offline_error(downloads: Path) -> UserError:
    return UserError(
        f"cannot fetch {REQUIREMENT} from PyPI (offline?); where PyPI is reachable run `pip download --no-deps "
        f"--no-binary :all: {REQUIREMENT}` (with pip 25 or older) and copy {ARCHIVE_NAME} ({ARCHIVE_MB} MB) into "
        f"{downloads}, then run `arches data bigbench` again"
    )


def _pip_refuses_direct_urls() -> bool:
    """Whether this environment's pip refuses bigbench's metadata (pip 26.3's check, in this module)."""
    import importlib.util

    try:
        return importlib.util.find_spec("pip._internal.metadata.direct_references") is not None
    except (ImportError, ValueError):
        return False


def fetch_archive(cache_dir: str | Path) -> Path:
    """The BIG-bench source archive in `<cache_dir>/downloads/`, fetched with pip if missing, hash checked."""
    path = archive_path(cache_dir)
    downloads = path.parent
    if not path.is_file():
        downloads.mkdir(parents=True, exist_ok=True)
        from rich.console import Console

        pip = [sys.executable, "-m", "pip"]
        with Console(stderr=True).status(f"fetching {REQUIREMENT} ({ARCHIVE_MB} MB) from PyPI"):
            refuses = _pip_refuses_direct_urls()  # then skip a 358 MB download that pip would throw away
            if not refuses:
                result = _pip_download(pip, REQUIREMENT, downloads, "--no-binary", ":all:")
            if not path.is_file() and (refuses or "direct URL" in result.stderr):
                tools = downloads / "tools"
                _pip_download(pip, FALLBACK_PIP, tools, "--only-binary", ":all:")
                if (tools / FALLBACK_PIP_WHEEL).is_file():
                    fallback = [sys.executable, str(tools / FALLBACK_PIP_WHEEL / "pip")]
                    _pip_download(fallback, REQUIREMENT, downloads, "--no-binary", ":all:")
        if not path.is_file():
            raise offline_error(downloads)
    actual = file_sha256(path)
    if actual != ARCHIVE_SHA256:
        raise UserError(
            f"{path} has sha256 {actual}, not the pinned {ARCHIVE_SHA256} of {REQUIREMENT}; "
            "refusing to read it: delete the file and run `arches data bigbench` again"
        )
    return path


# ---------------------------------------------------------------- reading the archive


def _escapes(name: str) -> bool:
    parts = PurePosixPath(name).parts
    return name.startswith(("/", "\\")) or ".." in parts or bool(re.match(r"^[A-Za-z]:", name))


def read_task_files(archive: Path, tasks: list[str]) -> dict[str, bytes]:
    """The `task.json` bytes of each task, read in one pass over the archive.

    Members are read straight from the archive, never extracted to disk, and
    the whole archive is refused if any member path could escape a target folder
    (absolute, or with `..`). One pass in archive order: a gzip stream cannot
    seek backwards without decompressing again from the start.
    """
    wanted = {f"{TASKS_ROOT}/{BIGBENCH_TASKS[name]}/task.json": name for name in tasks}
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                if _escapes(member.name):
                    raise UserError(
                        f"archive {archive} has a member path escaping its folder ('{member.name}'); "
                        "refusing it: delete the file and fetch it again"
                    )
                parts = PurePosixPath(member.name).parts
                inner = "/".join(parts[1:])  # strip `bigbench-1.0.0/`
                if member.isfile() and inner in wanted:
                    handle = tar.extractfile(member)
                    if handle is not None:
                        found[wanted[inner]] = handle.read()
    except (tarfile.TarError, EOFError, OSError) as error:
        raise UserError(f"{archive} is not a readable tar.gz ({error}); delete it and fetch it again") from error
    missing = [name for name in tasks if name not in found]
    if missing:
        paths = ", ".join(f"{TASKS_ROOT}/{BIGBENCH_TASKS[name]}/task.json" for name in missing)
        raise UserError(f"archive {archive} has no {paths}; delete it and fetch {REQUIREMENT} again")
    return found
