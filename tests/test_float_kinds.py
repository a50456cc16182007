"""benchmarks/float_kinds.py: its cases are what they say, and every qres result it reports is
checked by decoding."""

from __future__ import annotations

import json

import numpy as np
from bench_scripts import load


def test_cases_hold_what_their_names_say():
    kinds = load("float_kinds")
    found = dict(kinds.cases(4000))
    assert len(found) == 12
    for name, x in found.items():
        assert len(x) == 4000 and x.dtype.byteorder in "<="
        if "NaN" in name:
            assert np.isnan(x).any()
        if "float32" in name and "as float64" in name:
            assert np.array_equal(x.astype(np.float32).astype(np.float64), x)
        if "cut to 30 bits" in name:
            assert not np.any(x.view(np.uint64) & np.uint64((1 << 22) - 1))


def test_the_report_gives_every_codec_a_ratio(tmp_path, capsys):
    kinds = load("float_kinds")
    out = tmp_path / "rows.json"
    assert kinds.main(["--samples", "3000", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert len(rows) == 12 and "server / best other" in capsys.readouterr().out
    for row in rows:
        assert row["qres-server"] > 1 and row["xz-9"] > 0 and row["zstd-19"] > 0
    # the format-11 mappings at work: dropouts and narrow floats ahead of xz
    wide = next(r for r in rows if "2-decimal float32 as float64" in r["case"])
    assert wide["qres-server"] > wide["xz-9"]
