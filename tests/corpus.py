"""The shared corpus (``../shared/data``): its MANIFEST, read into sample specs and arrays."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def manifest() -> list[dict[str, str]]:
    """Rows of ``MANIFEST.tsv`` (empty if the corpus is not beside the project)."""
    path = DATA / "MANIFEST.tsv"
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def spec_of(row: dict[str, str]):
    """The qres stream spec of a corpus file."""
    from qres.samples import StreamSpec

    channels = int(row["channels"])
    layout = "planar" if channels > 1 else "interleaved"
    return StreamSpec(row["dtype"], channels, layout, row["byteorder"])


FILES = [pytest.param(row, id=row["name"]) for row in manifest()]
needs_corpus = pytest.mark.skipif(not FILES, reason=f"corpus not found at {DATA}")
