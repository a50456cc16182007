"""`qres llm bench --json --png` end to end, at its smallest (real model, real servers)."""

from __future__ import annotations

import json

import pytest
from conftest import run_qres

pytest.importorskip("llama_cpp")
pytest.importorskip("psutil")


def test_bench_reports_every_figure(tmp_path):
    png = tmp_path / "llm.png"
    args = ["--runs", "1", "--max-tokens", "4", "--clients", "3", "--batch", "2"]
    done = run_qres("llm", "bench", "--json", "--png", str(png), *args)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    rates = report["throughput"]["tokens_per_s"]
    assert set(rates) == {"raw", "backend", "http"} and min(rates.values()) > 0
    assert report["cache"]["hits"] == report["cache"]["requests"] == 200
    assert 0 < report["cache"]["p50_ms"] <= report["cache"]["p99_ms"]
    load = report["load"]
    assert load["ok"] + load["rejected_429"] == load["requests"] == 6 and load["other"] == 0
    assert load["rss_after_mb"] > 50
    for key in ("batching", "batching_flash_attn"):
        assert report[key]["sequences"] == 2 and report[key]["batched_tokens_per_s"] > 0
    assert png.read_bytes().startswith(b"\x89PNG")
    again = run_qres("llm", "bench", "--png", str(png), *args)
    assert again.returncode == 1 and b"already exists" in again.stderr
