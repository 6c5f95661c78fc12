"""The kinds of a setting in `arches.settings`' tables: a number with its range, a strict
true/false, a choice, a text, a list of one kind. Each `check(key, value)` passes or raises
one line in the harness's style: `key=value must be ..., e.g. key=example`.

(Hydra's structured configs would type the sections too, but they report a bad value as
a multi-line OmegaConf ValidationError, know no ranges, and coerce `yes` into a string
where a boolean was meant; these few classes are shorter than working around that.)
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from arches.errors import UserError, closest


def shown(value: Any) -> str:
    """A value as it is typed in an override: true, false, null, auto."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _one_of(alternatives: list[str]) -> str:
    return alternatives[0] if len(alternatives) == 1 else f"{', '.join(alternatives[:-1])} or {alternatives[-1]}"


def _same(value: Any, literal: Any) -> bool:
    # 1 == True in Python: `auto`, true and false are told apart by type too
    return type(value) is type(literal) and value == literal


@dataclass(frozen=True)
class Number:
    """A numeric setting: integer or real, its bounds, whether null (or a word such as
    `auto`, in `also`) is allowed, an example, and a note on where a bound comes from."""

    integer: bool
    minimum: float
    example: str
    maximum: float = math.inf
    above_minimum: bool = False  # the minimum itself is refused (a learning rate of 0)
    below_maximum: bool = False
    nullable: bool = False
    also: tuple = ()
    note: str = ""

    def accepts(self, value: Any) -> bool:
        if (value is None and self.nullable) or any(_same(value, word) for word in self.also):
            return True
        accepted = int if self.integer else (int, float)
        if not isinstance(value, accepted) or isinstance(value, bool):
            return False
        low_ok = value > self.minimum if self.above_minimum else value >= self.minimum
        high_ok = value < self.maximum if self.below_maximum else value <= self.maximum
        return low_ok and high_ok and (self.integer or math.isfinite(value))

    def describe(self) -> str:
        kind = "an integer" if self.integer else "a number"
        low = f"> {self.minimum:g}" if self.above_minimum else f">= {self.minimum:g}"
        bounds = low if self.maximum == math.inf else (
            f"in {'(' if self.above_minimum else '['}{self.minimum:g}, {self.maximum:g}{')' if self.below_maximum else ']'}"
        )  # fmt: skip
        return _one_of([f"{kind} {bounds}{self.note}", *(["null"] if self.nullable else []), *map(shown, self.also)])

    def check(self, key: str, value: Any) -> None:
        if not self.accepts(value):
            raise UserError(f"{key}={value!r} must be {self.describe()}, e.g. {key}={self.example}")


@dataclass(frozen=True)
class Flag:
    """true or false only: `no`, `yes`, 0 or 'false' as text are refused (each would be truthy or
    silently mean something else)."""

    example: str = "true"
    nullable: bool = False

    def accepts(self, value: Any) -> bool:
        return isinstance(value, bool) or (value is None and self.nullable)

    def check(self, key: str, value: Any) -> None:
        if self.accepts(value):
            return
        raise UserError(f"{key}={value!r} must be true or false{' or null' if self.nullable else ''}, e.g. {key}={self.example}")


@dataclass(frozen=True)
class Choice:
    """One of a few values (words, or true/false beside a word such as `auto`); `what` says
    it in words where the list is too long for one line."""

    choices: tuple
    example: str
    what: str = ""

    def accepts(self, value: Any) -> bool:
        return any(_same(value, choice) for choice in self.choices)

    def names(self) -> list[str]:
        return list(dict.fromkeys(shown(choice) for choice in self.choices))  # 16 and "16" read alike

    def hint(self, value: Any) -> str:
        """' Did you mean X?' for a value that is not a choice, or ''."""
        return "" if self.accepts(value) else closest(shown(value), self.names())

    def check(self, key: str, value: Any) -> None:
        if self.accepts(value):
            return
        hint = self.hint(value)
        must = self.what or f"one of: {', '.join(self.names())}"
        raise UserError(f"{key}={value!r} must be {must}, e.g. {key}={self.example}{'.' + hint if hint else ''}")


@dataclass(frozen=True)
class Text:
    """A name, path or URL: text that is not blank (a number is taken as its text, as
    Hydra parses `tune.study=2024` as one), optionally of a pattern."""

    example: str
    nullable: bool = False
    pattern: str | None = None
    what: str = "a non-blank text"

    def accepts(self, value: Any) -> bool:
        if value is None:
            return self.nullable
        if isinstance(value, bool) or not isinstance(value, (str, int, float)) or not str(value).strip():
            return False
        return self.pattern is None or re.fullmatch(self.pattern, str(value)) is not None

    def check(self, key: str, value: Any) -> None:
        if not self.accepts(value):
            raise UserError(f"{key}={value!r} must be {self.what}{' or null' if self.nullable else ''}, e.g. {key}={self.example}")


@dataclass(frozen=True)
class Entry:
    """A mapping (a search-space parameter); what it holds is checked by its consumer."""

    def accepts(self, value: Any) -> bool:
        return isinstance(value, dict)


@dataclass(frozen=True)
class Items:
    """A list of one kind of item: `must` says what in words (e.g. "a non-empty list of
    integers >= 0"); `single` also takes one bare item, `count` an exact length."""

    item: Any
    must: str
    example: str
    min_items: int = 1
    count: int | None = None
    single: bool = False
    nullable: bool = False

    def accepts(self, value: Any) -> bool:
        if value is None:
            return self.nullable
        if not isinstance(value, (list, tuple)):
            return self.single and self.item.accepts(value)
        if len(value) < self.min_items or (self.count is not None and len(value) != self.count):
            return False
        return all(self.item.accepts(item) for item in value)

    def hint(self, value: Any) -> str:
        """The closest choice to the first item that is not one (a list of choices), or ''."""
        suggest = getattr(self.item, "hint", None)
        items = value if isinstance(value, (list, tuple)) else [value]
        return next((h for h in (suggest(item) for item in items) if h), "") if suggest else ""

    def check(self, key: str, value: Any) -> None:
        if not self.accepts(value):
            hint = self.hint(value)
            raise UserError(f"{key}={value!r} must be {self.must}, e.g. {key}={self.example}{'.' + hint if hint else ''}")


@dataclass(frozen=True)
class Mapping:
    """A section whose keys are the user's own names (an experiment's variants), each value of one kind."""

    value: Any
    must: str
    example: str

    def check(self, key: str, value: Any) -> None:
        if not isinstance(value, dict) or not value or not all(self.value.accepts(v) for v in value.values()):
            raise UserError(f"{key}={value!r} must be {self.must}, e.g. {key}={self.example}")
