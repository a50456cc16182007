"""``qres aggregate``: one rule on an .npy of Q16.16 updates, as scripts use it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import run_qres


@pytest.mark.real_process  # the installed console script, as a user runs it
def test_aggregate_writes_the_rule_result(tmp_path):
    rng = np.random.default_rng(3)
    updates = rng.integers(-(1 << 17), 1 << 17, (40, 12)).astype(np.int32)
    updates[:5] = np.iinfo(np.int32).max  # five saturated liars
    path = tmp_path / "u.npy"
    np.save(path, updates)
    out = run_qres(
        "aggregate",
        str(path),
        "--rule",
        "median",
        "--f",
        "5",
        "-o",
        str(tmp_path / "m.npy"),
        "--json",
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["n"] == 40
    result = np.load(tmp_path / "m.npy")
    assert result.dtype == np.int32 and result.shape == (12,)
    honest = updates[5:]
    assert np.all(result >= honest.min(axis=0)) and np.all(result <= honest.max(axis=0))
    # Same bits whatever the row order.
    np.save(path, updates[::-1].copy())
    again = run_qres(
        "aggregate", str(path), "--rule", "median", "--f", "5", "-o", str(tmp_path / "m2.npy")
    )
    assert again.returncode == 0
    assert np.load(tmp_path / "m2.npy").tobytes() == result.tobytes()


def test_aggregate_errors_are_one_line(tmp_path):
    np.save(tmp_path / "f.npy", np.zeros((10, 3), dtype=np.float64))
    np.save(tmp_path / "i.npy", np.zeros((10, 3), dtype=np.int32))
    cases = [
        (["aggregate", str(tmp_path / "f.npy"), "--rule", "mean"], 1, b"expected int32"),
        (["aggregate", str(tmp_path / "i.npy"), "--rule", "nope"], 3, b"unknown aggregator"),
        (["aggregate", str(tmp_path / "i.npy"), "--rule", "bulyan", "--f", "3"], 1, b"4f + 3"),
        (["aggregate", str(tmp_path / "missing.npy"), "--rule", "mean"], 1, b"no such file"),
    ]
    for args, code, message in cases:
        out = run_qres(*args)
        assert out.returncode == code, (args, out.stderr)
        assert message in out.stderr and b"Traceback" not in out.stderr
        assert len(out.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "i.agg.npy").exists()
