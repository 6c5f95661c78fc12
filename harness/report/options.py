"""`arches report <folder> [report.key=value ...]`: the report's options, parsed and checked in one line each."""

from __future__ import annotations

from dataclasses import dataclass

from arches.errors import UserError, unknown

# the pairwise tests a report may ask for (harness.statistics.significance): "auto" picks by the seeds there are
REPORT_TESTS = ("auto", "crossed", "multi_bootstrap", "sign_flip", "examples")
BOOLEANS = {"true": True, "false": False}
KEYS = ("report.allow_mismatch", "report.test")


@dataclass(frozen=True)
class ReportOptions:
    allow_mismatch: bool = False  # show rows whose runs were not scored alike, with a warning (harness.report.mismatch)
    test: str = "auto"  # the rows' pairwise test


def parse_options(arguments: list[str]) -> ReportOptions:
    """ReportOptions from `key=value` arguments; an unknown key or a bad value is one line naming the valid ones."""
    values: dict = {}
    for argument in arguments:
        key, equals, value = argument.partition("=")
        if not equals:
            raise UserError(f"expected report.key=value after the results folder, got '{argument}'; valid keys: "
                            + ", ".join(KEYS))
        key, value = key.strip(), value.strip()
        if key not in KEYS:
            raise unknown("report option", key, KEYS)
        if key == "report.allow_mismatch":
            if value.lower() not in BOOLEANS:
                raise UserError(f"report.allow_mismatch={value} is not valid; choose one of: true, false")
            values["allow_mismatch"] = BOOLEANS[value.lower()]
        else:
            if value not in REPORT_TESTS:
                raise UserError(f"report.test={value} is not valid; choose one of: {', '.join(REPORT_TESTS)}")
            values["test"] = value
    return ReportOptions(**values)
