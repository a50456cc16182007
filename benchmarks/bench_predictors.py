"""pytest-benchmark cases for the predictors' hot loops (one 64K-sample block per call).

Run: .venv/bin/pytest benchmarks/bench_predictors.py --benchmark-only -q
Samples/s = 65536 / mean time. benchmarks/predictor_entropy.py measures ratio and speed on
the shared corpus.
"""

from __future__ import annotations

import numpy as np
import pytest

from qres.kernel.config import Location
from qres.kernel.plugins import create

N = 65536
TABLES = {
    "polynomial-2": {"use": "polynomial", "order": 2},
    "nlms-8": {"use": "nlms", "order": 8},
    "nlms-default": {"use": "nlms"},
    "nlms-256+32+16": {"use": "nlms", "stages": [256, 32, 16]},
    "taaf-default": {"use": "taaf"},
    "interp-linear": {"use": "interp", "kind": "linear"},
    "interp-cubic": {"use": "interp"},
}


def signal(channels: int) -> np.ndarray:
    rng = np.random.default_rng(7)
    t = np.arange(N // channels)
    tri = np.abs((t * 37) % 4000 - 2000) * 9
    return np.stack([tri + rng.integers(-40, 41, t.size) for _ in range(channels)])


@pytest.mark.parametrize("name", list(TABLES))
@pytest.mark.parametrize("direction", ["encode", "decode"])
def test_predictor_speed(benchmark, name, direction):
    pred = create("predictor", TABLES[name], Location("bench", name))
    x = signal(4 if name.startswith("taaf") else 1)
    res = pred.encode(x)
    if direction == "encode":
        out = benchmark(pred.encode, x)
        assert np.array_equal(out, res)
    else:
        out = benchmark(pred.decode, res)
        assert np.array_equal(out, x)


@pytest.mark.parametrize("bound", [0, 64])
def test_interp_choosing_speed(benchmark, bound):
    """The encoder's per-level choice (block code 3): three passes over each level."""
    pred = create("predictor", {"use": "interp"}, Location("bench", "interp"))
    x = signal(1)
    res, mask = benchmark(pred.encode_choosing, x, bound)
    back = create("predictor", {"use": "interp", "cubic_levels": mask}, Location("bench", "i"))
    assert np.abs(back.decode(res, bound) - x).max() <= bound
