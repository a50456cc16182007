"""The held-out corpus builder (benchmarks/heldout_corpus.py) writes a MANIFEST folder that the
project's readers take like the shared corpus's: checked on matplotlib's installed sample data
(no network), with a source that cannot be had skipped and a shared file left out."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from bench_scripts import load

from qres.learning.corpus import read_entry
from qres.learning.corpus import read_manifest as qres_manifest


@pytest.fixture(scope="module")
def hc():
    return load("heldout_corpus")


def _matplotlib(hc):
    return next(s for s in hc.SOURCES if s.installed and s.package == "matplotlib")


def test_matplotlib_sample_data_becomes_a_manifest_folder(hc, tmp_path):
    said = []
    rows = hc.build(tmp_path, sources=[_matplotlib(hc)], say=said.append)
    assert [r["name"] for r in rows] == ["mpl_eeg_4ch_float64", "mpl_membrane_float32"]
    header = (tmp_path / "MANIFEST.tsv").read_text().splitlines()[0].split("\t")
    assert tuple(header) == hc.COLUMNS
    # The builder's own reader and the project's read the same rows back.
    assert hc.read_manifest(tmp_path) == rows
    entries = {e.name: e for e in qres_manifest(tmp_path)}
    assert set(entries) == {r["name"] for r in rows}
    for row in rows:
        data = (tmp_path / row["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == row["sha256"]
        assert len(data) == int(row["bytes"])
        assert row["group"] == "heldout" and row["source_package"].startswith("matplotlib==")
    # eeg.dat holds 800 frames x 4 channels interleaved; the file is planar.
    import matplotlib

    root = Path(matplotlib.__file__).parent / "mpl-data" / "sample_data"
    eeg = np.fromfile(root / "eeg.dat", "<f8").reshape(800, 4)
    planar = np.fromfile(tmp_path / "mpl_eeg_4ch_float64.bin", "<f8").reshape(4, 800)
    assert np.array_equal(planar, eeg.T)
    assert entries["mpl_eeg_4ch_float64"].channels == 4
    frames = read_entry(tmp_path, entries["mpl_eeg_4ch_float64"])
    assert np.asarray(frames).size == 3200


def test_unavailable_source_is_skipped_and_shared_files_left_out(hc, tmp_path):
    missing = hc.Source("no_such_package_qres", ("x.dat",), lambda files, pkg: [], installed=True)
    first = hc.build(tmp_path / "a", sources=[_matplotlib(hc)], say=lambda _: None)
    said = []
    rows = hc.build(
        tmp_path / "b",
        sources=[missing, _matplotlib(hc)],
        patterns=["mpl_membrane_*", "mpl_eeg_*"],
        shared=tmp_path / "a",
        say=said.append,
    )
    assert rows == []  # both files are in the "shared" folder already
    assert any(line.startswith("skipped no_such_package_qres") for line in said)
    assert sum("the shared corpus holds the same samples" in line for line in said) == len(first)
    assert (tmp_path / "b" / "MANIFEST.tsv").read_text().splitlines() == ["\t".join(hc.COLUMNS)]


def test_recording_refuses_an_inexact_cast(hc):
    rec = hc.Recording("x", "int16", [np.array([1.5, 2.0])], "mono", "1", "", "", "")
    with pytest.raises(ValueError, match="do not fit int16"):
        rec.samples()
    rec = hc.Recording("y", "float32", [np.array([0.1])], "mono", "1", "", "", "")
    with pytest.raises(ValueError, match="not exact"):
        rec.samples()
    nan = hc.Recording("z", "float32", [np.array([np.nan, 0.5])], "mono", "1", "", "", "")
    assert np.isnan(nan.samples()[0])
