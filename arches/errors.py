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
