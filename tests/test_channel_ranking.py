"""The cheap size estimate that ranks per-channel polynomial candidates: integer-only (the
same on every machine), and ordered like real coded sizes on clear cases."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from qres.codec import pipeline
from qres.kernel import plugins
from qres.kernel.config import Location


@given(st.integers(1, 2**62))
def test_log2_q16_is_within_one_step_of_the_true_logarithm(v):
    got = pipeline._log2_q16(v)
    assert isinstance(got, int)
    assert abs(got / 65536 - math.log2(v)) <= 2 / 65536


def test_log2_q16_is_exact_on_powers_of_two():
    assert [pipeline._log2_q16(1 << k) for k in range(40)] == [k << 16 for k in range(40)]


@given(st.lists(st.integers(-(2**62), 2**62), max_size=300))
def test_estimate_is_a_nonnegative_integer_bounded_by_a_plain_code(values):
    r = np.array(values, dtype=np.int64)
    est = pipeline._estimated_bits(r)
    assert isinstance(est, int) and est >= 0
    # never more than a sign, a class among 131 (< 8 bits) and the mantissa bits per value
    assert est <= sum(8 + max(abs(v).bit_length() - 1, 0) for v in values)


def test_estimate_orders_residuals_like_the_coder():
    rng = np.random.default_rng(7)
    coder = plugins.create("coder", {"use": "arith"}, Location("<test>", "coder"))
    small = rng.laplace(0, 3, 4096).round().astype(np.int64)
    large = rng.laplace(0, 300, 4096).round().astype(np.int64)
    sparse = np.where(rng.random(4096) < 0.9, 0, small)
    est = [pipeline._estimated_bits(r) for r in (sparse, small, large)]
    coded = [len(coder.encode(r)) for r in (sparse, small, large)]
    assert est == sorted(est) and coded == sorted(coded)
    assert pipeline._estimated_bits(np.zeros(0, dtype=np.int64)) == 0
