"""The coders' before/after timer: identical builds compare as the same bytes, and a "before"
coder built from changed sources is caught by ``--require-same``."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from bench_scripts import load

REPO = Path(__file__).resolve().parents[1]


def test_same_build_compares_equal():
    ab = load("coder_ab")
    rice = ab.after_modules(["rice"])["rice"]
    r = np.random.default_rng(3).integers(-300, 300, 5000).astype(np.int64)
    row = ab.compare("rice", rice, rice, "noise", r, repeats=1)
    assert row["same"] and row["bytes"][0] == row["bytes"][1]
    assert ab.summary([row])["rice"]["same"]


def test_a_changed_before_build_is_caught(tmp_path, capsys):
    t = np.arange(3000)
    (900 * np.sin(t / 40) + 7 * np.cos(t)).astype("<i2").tofile(tmp_path / "a.bin")
    (tmp_path / "MANIFEST.tsv").write_text(
        "name\tfile\tdtype\tchannels\tlayout\na\ta.bin\tint16\t1\tmono\n"
    )
    sources = tmp_path / "src"
    sources.mkdir()
    for name in ("_arith.pyx", "_rice.pyx", "_bits.pxi"):
        shutil.copy(REPO / "plugins" / "coders" / name, sources / name)
    # A "before" Rice coder whose running mean forgets everything but the last value.
    rice = (sources / "_rice.pyx").read_text()
    changed = rice.replace("return mean_acc - (mean_acc >> shift) + u", "return u << shift")
    assert changed != rice
    (sources / "_rice.pyx").write_text(changed)
    ab = load("coder_ab")
    argv = [str(tmp_path), "--from", str(sources), "--coders", "rice", "--repeats", "1"]
    assert ab.main([*argv, "--require-same"]) == 1
    out = capsys.readouterr().out
    assert "bytes differ" in out and "rice: time after/before" in out
