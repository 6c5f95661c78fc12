"""Printing rich tables whole: no name is cut to "prefix…" in a pipe, a file or a narrow terminal.

rich sizes a table to the console, and a console that is not a terminal is 80 columns
wide (or $COLUMNS), so `arches list > file` used to cut names. Here a pipe or a file
gets the table at its natural width (a file has no width to respect), and a terminal
folds a cell onto more lines where it must rather than ending it with an ellipsis.
"""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

# as wide as any table of the harness can measure; a file or a pipe has no width of its own
UNBOUNDED = 10_000


def whole(table: Table, console: Console) -> Table:
    """The table with every ellipsis overflow turned into a fold, and at its natural width
    where the console is not a terminal."""
    for column in table.columns:
        if column.overflow == "ellipsis":
            column.overflow = "fold"
    if not console.is_terminal:
        table.expand = False
    return table


def console_for(table: Table, console: Console | None = None) -> Console:
    """A console that prints this table whole: the given one (stdout's by default) on a
    terminal, or one as wide as the table's natural width on a pipe or a file."""
    console = console or Console()
    if console.is_terminal:
        return console
    natural = console.measure(table, options=console.options.update_width(UNBOUNDED)).maximum
    return Console(file=console.file, width=max(console.width, natural), no_color=console.no_color)


def print_table(table: Table, console: Console | None = None) -> None:
    console = console or Console()
    whole(table, console)
    console_for(table, console).print(table)
