"""The digest pin of the codec's output bytes: written once, it checks clean against the same
code, and a changed digest or a missing entry fails the check."""

from __future__ import annotations

import json

import numpy as np
from bench_scripts import load


def test_digests_written_then_checked(tmp_path):
    t = np.arange(2000)
    (700 * np.sin(t / 25)).astype("<i2").tofile(tmp_path / "a.bin")
    (tmp_path / "MANIFEST.tsv").write_text(
        "name\tfile\tdtype\tchannels\tlayout\na\ta.bin\tint16\t1\tmono\n"
    )
    pins = tmp_path / "pins.json"
    digests = load("codec_digests")
    argv = [str(tmp_path), "--profiles", "fast,esp32", "--max-error", "3"]
    assert digests.main([*argv, "--write", str(pins)]) == 0
    recorded = json.loads(pins.read_text())
    assert set(recorded) == {"a.bin fast", "a.bin esp32", "a.bin fast E=3", "a.bin esp32 E=3"}
    assert all(rec["exact"] for rec in recorded.values())
    assert digests.main([*argv, "--check", str(pins)]) == 0
    recorded["a.bin fast"]["qres"] = "0" * 64
    pins.write_text(json.dumps(recorded))
    assert digests.main([*argv, "--check", str(pins)]) == 1
    del recorded["a.bin fast"]
    pins.write_text(json.dumps(recorded))
    assert digests.main([*argv, "--check", str(pins)]) == 1
