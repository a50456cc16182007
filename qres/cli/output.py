"""Output helpers shared by the commands: JSON for scripts, rich tables for people."""

from __future__ import annotations

import json
import sys
from typing import Any


def print_json(value: Any) -> None:
    """Print ``value`` as indented JSON on stdout (stable key order as given)."""
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")


def console(stderr: bool = False):
    """A rich console (imported lazily: rich is only loaded by commands that draw)."""
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


def table(title: str | None, columns: list[str], rows: list[list[Any]]):
    """A rich table with the given columns and rows."""
    from rich.table import Table

    out = Table(title=title, title_justify="left")
    for column in columns:
        out.add_column(column)
    for row in rows:
        out.add_row(*(str(cell) for cell in row))
    return out
