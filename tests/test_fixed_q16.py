"""The pure-Python Q16.16 vocabulary (qres.fixed.q16) against the reference and the core."""

from __future__ import annotations

import subprocess
import sys

import fixed_reference as ref
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from qres import fixed
from qres.fixed import q16

q32 = st.integers(ref.Q_MIN, ref.Q_MAX)
wide = st.integers(-(1 << 40), 1 << 40)


def test_constants_agree_with_the_reference_and_the_compiled_core():
    assert (q16.ONE, q16.Q_MIN, q16.Q_MAX) == (ref.ONE, ref.Q_MIN, ref.Q_MAX)
    assert q16.ONE == 1 << q16.FRAC_BITS and q16.HALF * 2 == q16.ONE
    # The core takes its constants from _core.pxd: check them through its behaviour.
    assert fixed.q_from_float(1.0) == q16.ONE
    assert fixed.q_add(q16.Q_MAX, 1) == q16.Q_MAX
    assert fixed.q_sub(q16.Q_MIN, 1) == q16.Q_MIN
    assert fixed.q_mul(q16.ONE, q16.ONE) == q16.ONE
    assert (fixed.ONE, fixed.Q_MIN, fixed.Q_MAX) == (q16.ONE, q16.Q_MIN, q16.Q_MAX)


def test_importing_it_loads_neither_numpy_nor_the_compiled_core():
    code = (
        "import sys, qres.fixed.q16, qres.fixed;"
        "print('numpy' in sys.modules, 'qres.fixed._core' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(q32, wide), min_size=1, max_size=16))
def test_sat_add_matches_the_reference(pairs):
    a = np.array([p[0] for p in pairs], np.int32)
    b = np.array([p[1] for p in pairs], np.int64)
    got = q16.sat_add(a, b)
    assert got.dtype == np.int32
    assert got.tolist() == [ref.sat32(x + y) for x, y in pairs]
    assert a.dtype == np.int32  # the inputs are not widened in place


def test_sat_add_of_two_int32_arrays_never_wraps():
    a = np.array([q16.Q_MAX, q16.Q_MIN, 5], np.int32)
    assert q16.sat_add(a, a).tolist() == [q16.Q_MAX, q16.Q_MIN, 10]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(-(1 << 62), 1 << 62), max_size=16))
def test_saturate_matches_the_reference(values):
    got = q16.saturate(np.array(values, np.int64))
    assert got.dtype == np.int32 and got.tolist() == [ref.sat32(v) for v in values]


def test_round_units_rounds_ties_up_and_tames_nan_and_infinities():
    units = [0.5, -0.5, 1.49, -1.5, np.nan, np.inf, -np.inf, 3e12]
    assert q16.round_units(units).tolist() == [1, 0, 1, -1, 0, q16.Q_MAX, q16.Q_MIN, q16.Q_MAX]


@given(st.floats(-40000.0, 40000.0, allow_nan=False))
def test_scalar_helpers_follow_the_rounding_rule(x):
    from fractions import Fraction

    assert q16.from_float(x) == ref.sat32(ref.round_rule(Fraction(x) * ref.ONE))
    assert q16.sat(1 << 40) == q16.Q_MAX and q16.sat(-(1 << 40)) == q16.Q_MIN
