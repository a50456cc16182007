"""The side-by-side benchmark runs with every rival codec the ``bench`` extra installs: each
round trip is checked (exact, or within the bound), none is skipped for a missing library, and
its JSON and PNG outputs are written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from bench_scripts import load


def _folder(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    t = np.arange(3000)
    (800 * np.sin(t / 40) + rng.normal(0, 10, t.size)).astype("<i2").tofile(tmp_path / "a.bin")
    (np.sin(t / 30) + rng.normal(0, 0.01, t.size)).astype("<f4").tofile(tmp_path / "b.bin")
    (tmp_path / "MANIFEST.tsv").write_text(
        "name\tfile\tdtype\tchannels\tlayout\n"
        "a\ta.bin\tint16\t1\tmono\n"
        "b\tb.bin\tfloat32\t1\tmono\n"
    )
    return tmp_path


def test_every_rival_runs_and_every_round_trip_is_checked(tmp_path):
    data = _folder(tmp_path)
    out, png = tmp_path / "out.json", tmp_path / "out.png"
    argv = [str(data), "--repeats", "1", "--profiles", "fast", "--max-error", "4"]
    assert load("compare_codecs").main([*argv, "--json", str(out), "--png", str(png)]) == 0
    rows = json.loads(out.read_text())["rows"]
    codecs = {r["codec"] for r in rows}
    assert {"qres-fast", "flac-8", "pcodec-8", "xz-9", "zstd-19", "sz3", "zfp"} <= codecs
    assert {"blosc2-bitshuffle", "delta+zstd-19"} <= codecs
    for row in rows:
        # FLAC takes integers only: its float row is the one documented skip
        if row["status"] == "skipped":
            assert row["codec"] == "flac-8" and row["dtype"] == "float32", row
            continue
        assert row["status"] == "ok", row
        if row["mode"] == "lossless":
            assert row["ratio"] > 1
        else:
            assert row["max_abs_error"] <= row["bound"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_speed_targets_name_the_slowest_file_each_way():
    bench = load("compare_codecs")

    def row(file, comp, decomp):
        r = bench.Row(file, "int16", 1, 100, 200, "qres-server", "lossless", None)
        r.status, r.comp_MBps, r.decomp_MBps = "ok", comp, decomp
        return r

    rows = [row("a", 30.0, 19.0), row("b", 18.0, 40.0), row("c", 50.0, 50.0)]
    per_file = [t for t in bench.speed_targets(rows) if "file" in t]
    assert [(t["file"], t["value"], t["met"]) for t in per_file] == [
        ("b", 18.0, False),
        ("a", 19.0, False),
    ]
    assert "slowest: b" in per_file[0]["target"]
