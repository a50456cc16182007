"""The project's error types: each carries a one-line message and the exit code the CLI uses.

Exit codes (stable, scripts rely on them):

* 0 success
* 1 bad input or a failed operation (:class:`QresError`)
* 2 command-line usage error (raised by click/typer, or :class:`UsageError` for option
  combinations and values the parser cannot check)
* 3 bad profile or plugin configuration (:class:`ProfileError`)
* 4 plugin loading or registration problem (:class:`PluginError`)
* 5 data failed an integrity check: corrupt, truncated or foreign file (:class:`IntegrityError`)
"""

from __future__ import annotations

import re


class QresError(Exception):
    """Base of every error qres reports to a user: one line, what, where and what to do."""

    exit_code = 1


class UsageError(QresError):
    """The command line asks for something impossible: a bad option value or combination."""

    exit_code = 2


class ProfileError(QresError):
    """A profile or plugin setting is wrong: names the file, key path, value and what is allowed."""

    exit_code = 3


class PluginError(QresError):
    """A plugin could not be loaded, is unknown, or clashes with another plugin."""

    exit_code = 4


class IntegrityError(QresError):
    """Bytes failed a check: truncated, corrupted, foreign or out-of-bounds data.

    ``block`` is the number of the damaged block (counting from 0), or None when the damage is
    not in one block (the header, the index, the trailer, the whole-stream checksum). Messages
    about a block start with ``block N:``; ``block`` defaults to that N.
    """

    exit_code = 5

    def __init__(self, message: str = "", *, block: int | None = None):
        super().__init__(message)
        if block is None:
            found = _BLOCK.match(message)
            block = int(found.group(1)) if found else None
        self.block = block


_BLOCK = re.compile(r"block (\d+)\b")


class FixedPointError(QresError, ValueError):
    """A value cannot be represented in Q16.16 (out of range, not finite)."""
