"""Folders of recordings described by a ``MANIFEST.tsv``: reading the manifest and the files.

A data folder (the shared corpus ``../shared/data`` by default) holds raw sample files and a
tab-separated ``MANIFEST.tsv`` with at least the columns ``name``, ``file``, ``dtype``,
``byteorder`` and ``channels``. Files with several channels are planar (channel after channel).

API:

* :func:`default_data_dir` -- the shared corpus beside the project checkout.
* :func:`read_manifest(folder)` -- the manifest as a list of :class:`Entry`.
* :func:`read_entry(folder, entry)` -- one file as a ``(channels, frames)`` numpy array in
  its own dtype (native byte order).

Errors are :class:`qres.kernel.errors.QresError` with one-line messages. numpy is imported inside
the functions that need it.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import attrs

from qres.kernel.errors import QresError

MANIFEST = "MANIFEST.tsv"
#: Columns every manifest must have.
REQUIRED = ("name", "file", "dtype", "byteorder", "channels")
_DTYPES = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "float32", "float64")


def default_data_dir() -> Path:
    """The shared corpus: ``$QRES_DATA``, else ``../shared/data`` from the working directory.

    Falls back to ``shared/data`` beside the source checkout (an editable install run from
    elsewhere); an installed package has no checkout, so the working directory comes first.
    """
    env = os.environ.get("QRES_DATA")
    if env:
        return Path(env)
    here = Path.cwd().parent / "shared" / "data"
    if here.is_dir():
        return here
    return Path(__file__).resolve().parents[2] / "shared" / "data"


@attrs.frozen
class Entry:
    """One manifest row: a file's name, path within the folder and sample layout."""

    name: str
    file: str
    dtype: str
    byteorder: str
    channels: int
    #: Every column of the row as written (sample rate, licence, ...).
    row: dict = attrs.field(factory=dict, eq=False, repr=False)

    @property
    def synthetic(self) -> bool:
        """Whether the manifest marks the file as generated rather than recorded."""
        return self.name.upper().startswith("SYNTHETIC")


def read_manifest(folder: str | Path | None = None) -> list[Entry]:
    """The entries of ``folder/MANIFEST.tsv`` in file order (default: the shared corpus)."""
    folder = Path(folder) if folder is not None else default_data_dir()
    path = folder / MANIFEST
    if not path.is_file():
        raise QresError(f"{path}: no {MANIFEST} found; pass a data folder holding one (--data DIR)")
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise QresError(f"{path}: cannot read the manifest ({exc}); check the file") from exc
    entries = []
    for line, row in enumerate(rows, start=2):
        missing = [c for c in REQUIRED if not (row.get(c) or "").strip()]
        if missing:
            raise QresError(
                f"{path}:{line}: missing column(s) {', '.join(missing)}; "
                f"every row needs {', '.join(REQUIRED)}"
            )
        dtype = row["dtype"].strip()
        order = row["byteorder"].strip()
        if dtype not in _DTYPES or order not in ("little", "big"):
            raise QresError(
                f"{path}:{line}: dtype {dtype!r} / byteorder {order!r} not supported; "
                f"use one of {', '.join(_DTYPES)} and little or big"
            )
        try:
            channels = int(row["channels"])
        except ValueError:
            channels = 0
        if channels < 1:
            raise QresError(
                f"{path}:{line}: channels {row['channels']!r} must be a positive integer"
            )
        entries.append(
            Entry(row["name"].strip(), row["file"].strip(), dtype, order, channels, dict(row))
        )
    return entries


def read_entry(folder: str | Path | None, entry: Entry) -> Any:
    """The samples of one manifest entry as a ``(channels, frames)`` array (native order)."""
    import numpy as np

    folder = Path(folder) if folder is not None else default_data_dir()
    path = folder / entry.file
    dtype = np.dtype(entry.dtype).newbyteorder("<" if entry.byteorder == "little" else ">")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise QresError(f"{path}: cannot read ({exc.strerror}); check the MANIFEST") from exc
    frame = dtype.itemsize * entry.channels
    if len(raw) % frame:
        raise QresError(
            f"{path}: {len(raw)} bytes is not a whole number of {entry.channels}-channel "
            f"{entry.dtype} frames; check the MANIFEST row {entry.name!r}"
        )
    values = np.frombuffer(raw, dtype=dtype).astype(dtype.newbyteorder("="))
    return values.reshape(entry.channels, -1)
