"""`arches report <folder> [report.key=value ...]`: the report's options, parsed and checked in one line each."""

from __future__ import annotations

from dataclasses import dataclass

from arches.errors import UserError, unknown
from arches.settings_kinds import Choice, Flag

# the pairwise tests a report may ask for (harness.statistics.significance): "auto" picks by the seeds there are
REPORT_TESTS = ("auto", "crossed", "multi_bootstrap", "sign_flip", "examples")
# the same kinds, and so the same one-line messages, as every other command's settings (arches.settings)
KINDS = {
    "report.allow_mismatch": Flag(),
    "report.test": Choice(REPORT_TESTS, example="crossed"),
}
KEYS = tuple(KINDS)


@dataclass(frozen=True)
class ReportOptions:
    allow_mismatch: bool = False  # show rows whose runs were not scored alike, with a warning (harness.report.mismatch)
    test: str = "auto"  # the rows' pairwise test


def _value(text: str):
    return {"true": True, "false": False}.get(text.lower(), text)  # as Hydra reads a bare true / false


def parse_options(arguments: list[str]) -> ReportOptions:
    """ReportOptions from `key=value` arguments; an unknown key or a bad value is one line naming the valid ones."""
    values: dict = {}
    for argument in arguments:
        key, equals, text = argument.partition("=")
        if not equals:
            raise UserError(f"expected report.key=value after the results folder, got '{argument}'; valid keys: "
                            + ", ".join(KEYS))
        key, value = key.strip(), _value(text.strip())
        if key not in KINDS:
            raise unknown("report option", key, KEYS)
        KINDS[key].check(key, value)
        values[key.removeprefix("report.")] = value
    return ReportOptions(**values)
