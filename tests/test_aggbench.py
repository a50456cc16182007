"""The robustness grid and the speed table behind ``qres bench aggregators``."""

from __future__ import annotations

import io

import numpy as np
import pytest

from qres.kernel.errors import QresError
from qres.robust import bench as aggbench


def folder(tmp_path):
    """Four recordings of different shape and scale, with a MANIFEST."""
    t = np.arange(6000)
    rng = np.random.default_rng(0)
    series = {
        "slow": 3000 * np.sin(2 * np.pi * t / 400),
        "fast": 900 * np.sin(2 * np.pi * t / 23) + rng.normal(0, 40, t.size),
        "walk": np.cumsum(rng.integers(-30, 31, t.size)),
        "saw": (t % 150) * 20.0,
    }
    lines = ["name\tfile\tdtype\tbyteorder\tchannels"]
    for name, values in series.items():
        (tmp_path / f"{name}.bin").write_bytes(np.round(values).astype("<i2").tobytes())
        lines.append(f"{name}\t{name}.bin\tint16\tlittle\t1")
    (tmp_path / "MANIFEST.tsv").write_text("\n".join(lines) + "\n")
    return str(tmp_path)


SMALL = dict(n=24, f=5, rounds=6, shard_len=1024, eval_len=256, window=128)
RULES = [
    ("mean", {"use": "mean"}),
    ("trimmed-mean", {"use": "trimmed-mean"}),
    ("bulyan", {"use": "bulyan"}),
    ("adaptive", {"use": "adaptive"}),
]
ATTACKS = ["none", "extreme", "alie"]


def test_grid_cells_baseline_and_refusals(tmp_path):
    s = aggbench.GridSettings(**SMALL, data=folder(tmp_path))
    g = aggbench.run_grid(s, RULES, ATTACKS)
    assert g["attacks"] == ATTACKS and [r["name"] for r in g["rules"]] == [n for n, _ in RULES]
    rows = {r["name"]: r for r in g["rules"]}
    assert rows["mean"]["cells"]["none"] == pytest.approx(1.0)  # the baseline itself
    assert g["baseline_error"] > 0
    # saturated rows wreck the mean but not the trimmed mean
    assert rows["mean"]["cells"]["extreme"] > 5
    assert rows["trimmed-mean"]["cells"]["extreme"] < 2
    # Bulyan needs n >= 4f + 3 = 23 <= 24: it runs; with f = 6 it is refused
    assert rows["bulyan"]["refused"] is None
    g2 = aggbench.run_grid(
        aggbench.GridSettings(**{**SMALL, "f": 6}, data=s.data), RULES[2:3], ATTACKS[:1]
    )
    assert "4f + 3" in g2["rules"][0]["refused"] and g2["rules"][0]["cells"]["none"] is None
    # the tracker catches the saturated cartel (a group of 5 identical far rows)
    assert rows["adaptive"]["distrusted"]["extreme"] == [0, 5]
    assert rows["adaptive"]["cells"]["extreme"] < 1.5
    assert g["default_worst"] == max(rows["adaptive"]["cells"].values())
    assert g["target_holds"] == (g["default_worst"] <= 1.10)


def test_grid_is_deterministic(tmp_path):
    s = aggbench.GridSettings(**{**SMALL, "rounds": 3}, data=folder(tmp_path))
    a = aggbench.run_grid(s, RULES[:2], ["none", "gaussian"])
    b = aggbench.run_grid(s, RULES[:2], ["none", "gaussian"])
    assert a == b
    c = aggbench.run_grid(
        aggbench.GridSettings(**{**SMALL, "rounds": 3, "seed": 1}, data=s.data),
        RULES[:2],
        ["none", "gaussian"],
    )
    assert c["byzantine"] != a["byzantine"]


def test_grid_settings_are_checked(tmp_path):
    with pytest.raises(QresError, match="n > 2f"):
        aggbench.GridSettings(n=10, f=5)
    with pytest.raises(QresError, match="training samples"):
        aggbench.GridSettings(shard_len=300, eval_len=100)


def test_speed_table_side_by_side_with_flower():
    pytest.importorskip("flwr")
    r = aggbench.run_speed(aggbench.SpeedSettings(n=60, d=8, flower_krum_n=30, bulyan_n=23))
    rows = {row["rule"]: row for row in r["rows"]}
    assert r["flower_version"]
    for name in ("mean", "median", "trimmed-mean", "krum", "multi-krum", "bulyan"):
        assert rows[name]["flower_s"] > 0 and rows[name]["ratio"] > 0, name
    assert rows["krum"]["flower_scaled"] and rows["krum"]["flower_n"] == 30
    assert rows["bulyan"]["n"] == 23 and rows["bulyan"]["f"] == 5
    assert rows["geometric-median"]["flower_s"] is None
    assert all(row["target_s"] is None for row in r["rows"])  # targets are for 10k x 1k
    plain = aggbench.run_speed(aggbench.SpeedSettings(n=60, d=8, flower=False, bulyan_n=23))
    assert plain["flower_version"] is None and all(x["ratio"] is None for x in plain["rows"])


def test_same_values_for_flower_and_qres():
    """Flower's median on the float copy equals the Q16.16 median (to one unit)."""
    fl = pytest.importorskip("flwr.server.strategy.aggregate")
    from qres.kernel.config import Location
    from qres.kernel.plugins import create

    rng = np.random.default_rng(0)
    x = np.floor(rng.standard_normal((50, 6)) * 65536 + 0.5).astype(np.int32)
    ours = create("aggregator", {"use": "median"}, Location("<t>")).aggregate(x, f=0)
    theirs = fl.aggregate_median([([row], 1) for row in x / 65536.0])[0]
    assert np.abs(ours / 65536.0 - theirs).max() <= 1 / 65536


def test_png(tmp_path):
    pytest.importorskip("matplotlib")
    g = aggbench.run_grid(
        aggbench.GridSettings(**{**SMALL, "rounds": 2}, data=folder(tmp_path)),
        RULES[:2],
        ATTACKS[:2],
    )
    sp = aggbench.run_speed(aggbench.SpeedSettings(n=40, d=4, flower=False, bulyan_n=23))
    buf = io.BytesIO()
    aggbench.write_png({"grid": g, "speed": sp}, buf)
    assert buf.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"
