"""The harness's one error style.

User mistakes (bad overrides, unknown names, bad paths) raise `UserError` and
exit with code 2; runtime failures (NaN loss, out of memory, disk full) raise
`RunFailure` and exit with code 1. Both print one line; `ARCHES_DEBUG=1` (or
`HYDRA_FULL_ERROR=1`) shows the traceback instead.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class ArchesError(Exception):
    """Base class: the message is one line that says what was wrong and what to do."""

    exit_code = 1


class UserError(ArchesError, ValueError):
    """Bad input from the user: exit code 2."""

    exit_code = 2


class RunFailure(ArchesError, RuntimeError):
    """A run failed at runtime (NaN loss, OOM, disk full): exit code 1."""

    exit_code = 1


def closest(name: str, valid: Iterable[str]) -> str:
    """' Did you mean X?' for the closest valid name, or ''."""
    match = difflib.get_close_matches(str(name), [str(v) for v in valid], n=1, cutoff=0.5)
    return f" Did you mean '{match[0]}'?" if match else ""


def unknown(kind: str, name: str, valid: Iterable[str]) -> UserError:
    """The loud-lookup error: names the miss, lists what exists, suggests the closest."""
    valid = sorted(str(v) for v in valid)
    return UserError(f"unknown {kind} '{name}'; valid: {', '.join(valid)}.{closest(name, valid)}")


def first_line(error: BaseException | str) -> str:
    """The first line of an error's message (or of a text), else the error's type name:
    the one line an error message quotes from a library's multi-line exception."""
    text = str(error).strip()
    if text:
        return text.splitlines()[0]
    return type(error).__name__ if isinstance(error, BaseException) else ""


def write_failure(error: OSError, what: str | None = None) -> ArchesError:
    """An OSError as one line: a failed write (disk full, quota, file size limit,
    read-only or forbidden folder) names the folder that could not take it and is a
    RunFailure; a path that does not exist or is not a folder is a UserError."""
    import errno
    import os

    path = str(error.filename or what or "?")
    folder = os.path.dirname(os.path.abspath(path)) if error.filename and not os.path.isdir(path) else path
    if error.errno in (errno.ENOENT, errno.ENOTDIR, errno.EISDIR):
        return UserError(f"{path}: {error.strerror or error}; check the path (results_dir, cache_dir, data.paths, run)")
    reason = {
        errno.ENOSPC: f"the disk holding {folder} is full; free space there or point results_dir (or cache_dir) elsewhere",
        errno.EDQUOT: f"the disk quota for {folder} is used up; free space or point results_dir (or cache_dir) elsewhere",
        errno.EFBIG: f"a file in {folder} hit the file size limit (ulimit -f); raise it or write elsewhere",
        errno.EROFS: f"{folder} is on a read-only file system; point results_dir (or cache_dir) elsewhere",
        errno.EACCES: f"{folder} is not writable (permission denied); fix its permissions or write elsewhere",
        errno.EPERM: f"{folder} is not writable (operation not permitted); fix its permissions or write elsewhere",
    }.get(error.errno)
    if reason is None:
        return RunFailure(f"{error.strerror or error} ({path}); ARCHES_DEBUG=1 shows where")
    return RunFailure(f"could not write {path}: {reason}")
