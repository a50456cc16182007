"""The shared corpus (``../shared/data``): its MANIFEST, read into sample specs and arrays."""

from __future__ import annotations

import pytest

from qres.learning.corpus import MANIFEST, default_data_dir, read_manifest

DATA = default_data_dir()


def manifest() -> list[dict[str, str]]:
    """Rows of ``MANIFEST.tsv`` (empty if the corpus is not beside the project)."""
    if not (DATA / MANIFEST).is_file():
        return []
    return [entry.row for entry in read_manifest(DATA)]


def spec_of(row: dict[str, str]):
    """The qres stream spec of a corpus file."""
    from qres.codec.samples import StreamSpec

    channels = int(row["channels"])
    layout = "planar" if channels > 1 else "interleaved"
    return StreamSpec(row["dtype"], channels, layout, row["byteorder"])


FILES = [pytest.param(row, id=row["name"]) for row in manifest()]
needs_corpus = pytest.mark.skipif(not FILES, reason=f"corpus not found at {DATA}")
