"""``qres swarm simulate``: reports, plots, determinism and one-line errors."""

from __future__ import annotations

import json

import pytest
from conftest import run_qres


def profile(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text('[profile]\nextends = "swarm-100"\n[swarm]\nnodes = 30\nrounds = 8\n')
    return str(path)


def test_simulate_writes_report_and_plot(tmp_path):
    report, plot = tmp_path / "r.json", tmp_path / "r.png"
    out = run_qres(
        "swarm",
        "simulate",
        "--profile",
        profile(tmp_path),
        "--attack",
        "alie",
        "--byzantine",
        "0.3",
        "--rounds",
        "6",
        "--seed",
        "3",
        "--report",
        str(report),
        "--plot",
        str(plot),
    )
    assert out.returncode == 0, out.stderr
    data = json.loads(report.read_text())
    assert data["attack"] == "alie" and data["byzantine_nodes"] == 9 and data["rounds"] == 6
    assert len(data["honest_error"]) == 6
    assert len(data["attack_free"]["honest_error"]) == 6
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    again = run_qres(
        "swarm",
        "simulate",
        "--profile",
        profile(tmp_path),
        "--attack",
        "alie",
        "--byzantine",
        "0.3",
        "--rounds",
        "6",
        "--seed",
        "3",
        "--json",
    )
    assert again.returncode == 0, again.stderr
    assert again.stdout == report.read_bytes()


@pytest.mark.real_process  # the installed console script, as a user runs it
def test_simulate_errors_are_one_line_and_leave_nothing(tmp_path):
    report = tmp_path / "r.json"
    bad = run_qres(
        "swarm",
        "simulate",
        "--profile",
        profile(tmp_path),
        "--attack",
        "nope",
        "--report",
        str(report),
    )
    assert bad.returncode == 3
    assert bad.stderr.count(b"\n") == 1 and b"unknown attack 'nope'" in bad.stderr
    assert not report.exists()
    wrong = run_qres("swarm", "simulate", "--profile", profile(tmp_path), "--byzantine", "0.7")
    assert wrong.returncode == 2 and wrong.stderr.startswith(b"qres: error: swarm settings")
    report.write_text("keep")
    exists = run_qres("swarm", "simulate", "--profile", profile(tmp_path), "--report", str(report))
    assert exists.returncode == 1 and b"already exists" in exists.stderr
    assert report.read_text() == "keep"
    nodata = run_qres(
        "swarm", "simulate", "--profile", profile(tmp_path), "--data", str(tmp_path / "missing")
    )
    assert nodata.returncode == 1 and b"not a folder" in nodata.stderr


def test_record_is_a_stream_qres_audit_verifies(tmp_path):
    rec = tmp_path / "s.qrps"
    out = run_qres(
        "swarm",
        "simulate",
        "--profile",
        profile(tmp_path),
        "--nodes",
        "12",
        "--rounds",
        "3",
        "--record",
        str(rec),
        "--json",
    )
    assert out.returncode == 0, out.stderr
    assert rec.read_bytes()[:4] == b"QRPS"
    audit = run_qres("audit", str(rec), "--json")
    assert audit.returncode == 0, audit.stderr
    data = json.loads(audit.stdout)
    assert data["packets"] == 36
