"""Output helpers shared by the commands: JSON for scripts, rich tables for people."""

from __future__ import annotations

import json
import sys
from typing import Any


def print_json(value: Any) -> None:
    """Print ``value`` as indented JSON on stdout (stable key order as given)."""
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")


#: Width of a console that is not a terminal: wide enough that nothing is wrapped or cut.
PIPE_WIDTH = 1 << 15


def console(stderr: bool = False):
    """A rich console (imported lazily: rich is only loaded by commands that draw).

    On a terminal it fits the window; piped or redirected, lines are never wrapped or
    truncated (a script or a file gets every character) and tables take their natural width.
    """
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    if stream.isatty():
        return Console(stderr=stderr, highlight=False)
    return Console(stderr=stderr, highlight=False, width=PIPE_WIDTH, soft_wrap=True)


def table(title: str | None, columns: list[str], rows: list[list[Any]]):
    """A rich table with the given columns and rows."""
    from rich.table import Table

    out = Table(title=title, title_justify="left")
    for column in columns:
        out.add_column(column)
    for row in rows:
        out.add_row(*(str(cell) for cell in row))
    return out
