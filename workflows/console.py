"""The two consoles of the CLI (people's output on stdout, errors on stderr) and table printing."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

__all__ = ["console", "errors", "show"]

console = Console(highlight=False)
errors = Console(stderr=True, highlight=False)


def show(table: Table) -> None:
    """Print a table; off a terminal (a pipe, a log) Rich would squeeze it to 80 columns and cut values."""
    target = console if console.is_terminal else Console(highlight=False, width=200)
    target.print(table)
