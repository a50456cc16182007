"""pytest-benchmark suite of the Q16.16 array ops, each next to its numpy equivalent.

Every op is one benchmark group holding two cases, ``qres`` and ``numpy``, on the same seeded
data (the cases of compare_fixed_numpy.py, which also checks that both sides agree).

Run: .venv/bin/pytest benchmarks/bench_fixed.py --benchmark-group-by=group
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "compare_fixed_numpy", Path(__file__).with_name("compare_fixed_numpy.py")
)
compare = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("compare_fixed_numpy", compare)  # dataclasses look the module up
_spec.loader.exec_module(compare)

CASES = compare.make_cases(1_000_000)


@pytest.mark.parametrize("side", ["qres", "numpy"])
@pytest.mark.parametrize("case", CASES, ids=[f"{c.name}-{c.size}" for c in CASES])
def test_fixed_op(benchmark, case, side):
    """Time one side of one op; the group is the op and its size."""
    benchmark.group = f"{case.name} n={case.size}"
    result = benchmark(getattr(case, side))
    assert result is not None
