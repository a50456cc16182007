"""Limits that keep decoding a hostile file from hurting the machine: how much output a run may
produce (``--max-output``) and how much memory one block may take to decode.

A ``.qres`` file says how large its blocks are; a file of a few kilobytes can honestly declare
terabytes of zeros (an entropy coder codes a run of zeros in almost nothing). The decoder
therefore checks each block's declared size against these limits *before* decoding it, so a
bomb stops with one line before it fills a disk or the memory.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import stat
import sys
from pathlib import Path

from qres.kernel.errors import QresError, UsageError

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(?:i?b)?\s*$", re.IGNORECASE)
#: Spellings of "no limit" for ``--max-output``.
UNLIMITED = ("none", "unlimited")
#: Bytes of working memory per decoded sample beyond the sample itself: the residual stream
#: (int64), the residuals stacked by channel (int64), the predictor's integers (int64) and
#: the match tables of format 6 (three int64 values per match, a match per 4 samples or fewer).
DECODE_BYTES_PER_SAMPLE = 30
#: Share of the memory available now that one run of the decoder may use.
MEMORY_SHARE = 0.75


def parse_size(text: str, option: str = "--max-output") -> int | None:
    """Bytes for a size such as ``512M``, ``1.5G``, ``10GiB`` or ``4096``; ``None`` for
    ``none``/``unlimited``. Units are powers of 1024."""
    if text.strip().lower() in UNLIMITED:
        return None
    match = _SIZE.match(text)
    if match is None:
        raise UsageError(
            f"{option} {text!r}: not a size; give bytes with an optional unit (K, M, G, T), "
            "e.g. 512M, or 'none'"
        )
    value = float(match.group(1)) * _UNITS[match.group(2).lower()]
    if not math.isfinite(value) or value >= 1 << 63:
        raise UsageError(f"{option} {text!r}: too large; give at most 8E or 'none'")
    return int(value)


def format_size(n: int) -> str:
    """``n`` bytes for people: 1.5 GiB, 20.0 KiB, 512 bytes."""
    for unit, size in (("PiB", 1 << 50), ("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n / 1024:.1f} KiB" if n >= 1024 else f"{n} bytes"


def free_space_of(target: str) -> int | None:
    """Free bytes on the filesystem an output goes to: the target's folder, or stdout's
    filesystem when it is redirected to a regular file; ``None`` for pipes, terminals and
    device nodes (nothing to fill) or when the system cannot say."""
    try:
        if target == "-":
            fd = sys.stdout.fileno()
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None
            vfs = os.fstatvfs(fd)
            return vfs.f_bavail * vfs.f_frsize
        try:
            mode = os.stat(target).st_mode  # follows symlinks, like the write will
        except FileNotFoundError:
            return shutil.disk_usage(Path(target).resolve().parent).free
        if not stat.S_ISREG(mode):
            return None  # a device, FIFO or /dev/stdout on a terminal: written in place
        vfs = os.statvfs(target)
        return vfs.f_bavail * vfs.f_frsize
    except (OSError, ValueError, AttributeError):
        return None


def default_max_output(target: str | None) -> int | None:
    """The output limit when ``--max-output`` is not given: the free space where the output
    goes (more could never be written, and stopping before it keeps the disk usable); no
    limit when nothing is written to a disk (``verify``, pipes, terminals)."""
    if target is None:
        return None
    return free_space_of(target)


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return None


def _address_space_left() -> int | None:
    """Room left under this process's address-space limit (``ulimit -v``), if one is set."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft == resource.RLIM_INFINITY:
            return None
        with open("/proc/self/statm", encoding="ascii") as fh:
            used = int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        return max(0, soft - used)
    except (ImportError, OSError, ValueError, IndexError):
        return None


def memory_available() -> int | None:
    """Bytes this process may still allocate: the system's available memory, or the room
    under its address-space limit if that is smaller; ``None`` when unknown."""
    known = [m for m in (_meminfo_available(), _address_space_left()) if m is not None]
    return min(known) if known else None


def block_memory(frames: int, channels: int, itemsize: int, payload: int) -> int:
    """Bytes it takes to decode a block: its samples, their working integers, its payload."""
    return frames * channels * (itemsize + DECODE_BYTES_PER_SAMPLE) + 2 * payload


class OutputLimit(QresError):
    """Decoding stopped: the output would pass ``--max-output`` or the memory available.

    ``limit`` is the output limit that was passed (``None`` when memory stopped it)."""

    def __init__(self, message: str, limit: int | None = None):
        super().__init__(message)
        self.limit = limit
