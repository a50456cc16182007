"""pytest-benchmark suite of the aggregators at n = 10,000, d = 1,000, next to Flower's.

Each rule is one benchmark group with a ``qres`` case and, where Flower has the rule, a
``flower`` case on exactly the same values as float64 (Flower's Krum is a Python double loop:
it runs here on 1,000 rows only, in a group of its own). ``qres bench aggregators`` prints the
same comparison as one table with ratios and the targets.

Run: .venv/bin/pytest benchmarks/bench_aggregators.py --benchmark-only --benchmark-group-by=group
"""

from __future__ import annotations

import numpy as np
import pytest

from qres.kernel import plugins
from qres.kernel.config import Location

N, D, F = 10_000, 1_000, 3_000
RULES = ["mean", "median", "trimmed-mean", "krum", "multi-krum", "geometric-median"]


@pytest.fixture(scope="module")
def updates():
    """Q16.16 rows drawn from N(0, 1), and the same values as float64 for Flower."""
    rng = np.random.default_rng(0)
    x = np.floor(rng.standard_normal((N, D)) * 65536.0 + 0.5).astype(np.int32)
    return x, x.astype(np.float64) / 65536.0


def _flower():
    return pytest.importorskip("flwr.server.strategy.aggregate")


@pytest.mark.parametrize("rule", RULES)
def test_qres(benchmark, updates, rule):
    """One qres rule on the full array; the result is a (d,) int32 vector."""
    benchmark.group = f"{rule} n={N} d={D}"
    x, _ = updates
    agg = plugins.create("aggregator", {"use": rule}, Location("<bench>"))
    rounds = 1 if rule in ("krum", "multi-krum") else 3
    out = benchmark.pedantic(agg.aggregate, args=(x,), kwargs={"f": F}, rounds=rounds)
    assert out.shape == (D,) and out.dtype == np.int32


@pytest.mark.parametrize("rule", ["mean", "median", "trimmed-mean"])
def test_flower(benchmark, updates, rule):
    """Flower's implementation of the same rule on the same values."""
    fl = _flower()
    benchmark.group = f"{rule} n={N} d={D}"
    _, real = updates
    results = [([row], 1) for row in real]
    call = {
        "mean": lambda: fl.aggregate(results),
        "median": lambda: fl.aggregate_median(results),
        "trimmed-mean": lambda: fl.aggregate_trimmed_avg(results, F / N),
    }[rule]
    out = benchmark.pedantic(call, rounds=3)
    assert out[0].shape == (D,)


@pytest.mark.parametrize("side", ["qres", "flower"])
def test_krum_1000_rows(benchmark, updates, side):
    """Krum on the first 1,000 rows, where Flower's double loop still runs in seconds."""
    x, real = updates
    n, f = 1_000, 300
    benchmark.group = f"krum n={n} d={D}"
    if side == "qres":
        agg = plugins.create("aggregator", {"use": "krum"}, Location("<bench>"))
        out = benchmark.pedantic(agg.aggregate, args=(x[:n],), kwargs={"f": f}, rounds=3)
        assert out.shape == (D,)
    else:
        fl = _flower()
        results = [([row], 1) for row in real[:n]]
        out = benchmark.pedantic(lambda: fl.aggregate_krum(results, f, 0), rounds=1)
        assert out[0].shape == (D,)
