"""``qres bench aggregators`` as a user runs it: table, --json, --png, errors."""

from __future__ import annotations

import json

import pytest
from conftest import run_qres
from test_aggbench import folder


def test_quick_json(tmp_path):
    out = run_qres("bench", "aggregators", "--quick", "--json", "--data", folder(tmp_path))
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    grid, speed = report["grid"], report["speed"]
    assert grid["settings"]["n"] == 20 and grid["settings"]["rounds"] == 5
    assert grid["default_rule"] == "adaptive" and isinstance(grid["target_holds"], bool)
    names = [r["name"] for r in grid["rules"]]
    assert {"mean", "krum", "bulyan", "adaptive", "nnm+trimmed-mean"} <= set(names)
    assert grid["attacks"][0] == "none" and "drift" in grid["attacks"]
    assert speed["settings"]["n"] == 500 and speed["rows"][0]["rule"] == "mean"


def test_table_and_png(tmp_path):
    png = tmp_path / "bench.png"
    out = run_qres(
        "bench", "aggregators", "--quick", "--no-speed", "--rounds", "2",
        "--data", folder(tmp_path), "--png", str(png),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    text = out.stdout.decode()
    assert "Robustness" in text and "adaptive" in text and "target:" in text
    assert "Speed" not in text
    assert png.read_bytes()[:4] == b"\x89PNG"
    again = run_qres("bench", "aggregators", "--quick", "--no-speed", "--png", str(png))
    assert again.returncode == 1 and b"already exists" in again.stderr


@pytest.mark.real_process  # the installed console script, as a user runs it
def test_errors_are_one_line(tmp_path):
    out = run_qres("bench", "aggregators", "--no-grid", "--no-speed")
    assert out.returncode == 2 and out.stderr.count(b"\n") == 1
    out = run_qres("bench", "aggregators", "--n", "10", "--f", "5", "--no-speed")
    assert out.returncode == 1 and b"n > 2f" in out.stderr and b"Traceback" not in out.stderr
    out = run_qres("bench", "aggregators", "--quick", "--data", str(tmp_path))
    assert out.returncode == 1 and b"MANIFEST" in out.stderr and out.stderr.count(b"\n") == 1
