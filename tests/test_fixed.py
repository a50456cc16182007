"""The compiled Q16.16 core against the pure-Python reference (hypothesis), plus examples."""

from __future__ import annotations

import math

import fixed_reference as ref
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from qres import fixed
from qres.kernel.errors import FixedPointError, QresError

ONE, Q_MIN, Q_MAX = ref.ONE, ref.Q_MIN, ref.Q_MAX
EDGES = [Q_MIN, Q_MIN + 1, -ONE, -(ONE // 2), -1, 0, 1, ONE // 2, ONE, Q_MAX - 1, Q_MAX]

# Biased toward the saturation edges so overflowing products and sums come up often.
q32 = st.one_of(st.integers(Q_MIN, Q_MAX), st.sampled_from(EDGES), st.integers(-4 * ONE, 4 * ONE))
vectors = st.lists(q32, max_size=24)
extreme_vectors = st.lists(st.sampled_from([Q_MIN, Q_MIN + 1, Q_MAX - 1, Q_MAX]), max_size=12)

FAST = settings(max_examples=300, deadline=None)
SLOW = settings(max_examples=100, deadline=None)


def arr(values) -> np.ndarray:
    return np.array(values, dtype=np.int32)


def pairs(length_strategy=vectors):
    """Two vectors of the same length."""
    return length_strategy.flatmap(
        lambda xs: st.tuples(st.just(xs), st.lists(q32, min_size=len(xs), max_size=len(xs)))
    )


# --- scalars ------------------------------------------------------------------------------


@FAST
@given(q32, q32)
def test_add_sub_match_reference(a, b):
    assert fixed.q_add(a, b) == ref.add(a, b)
    assert fixed.q_sub(a, b) == ref.sub(a, b)


@FAST
@given(q32, q32)
@example(Q_MIN, Q_MIN)  # (-2**31)**2 = 2**62: the largest product
@example(Q_MIN, Q_MAX)
@example(1, ONE // 2)  # an exact tie
@example(-1, ONE // 2)
def test_mul_matches_reference(a, b):
    assert fixed.q_mul(a, b) == ref.mul(a, b)


@FAST
@given(q32, q32.filter(lambda b: b != 0))
@example(Q_MIN, -1)  # overflows: -2**31 / -2**-16
@example(Q_MAX, 1)
@example(1, -2)  # -0.5 exactly: ties go toward +infinity
@example(Q_MIN, Q_MIN)
def test_div_matches_reference(a, b):
    assert fixed.q_div(a, b) == ref.div(a, b)


def test_div_by_zero_raises_in_python_face():
    with pytest.raises(FixedPointError, match="by zero"):
        fixed.q_div(ONE, 0)
    with pytest.raises(FixedPointError):
        fixed.q_div(0, 0)


def test_rounding_rule_examples():
    # 1.5 * 2.0 = 3.0 exactly
    assert fixed.q_mul(3 * ONE // 2, 2 * ONE) == 3 * ONE
    # 2**-16 * 0.5 is a tie: +0.5 units rounds up to 1, -0.5 units rounds up to 0
    assert fixed.q_mul(1, ONE // 2) == 1
    assert fixed.q_mul(-1, ONE // 2) == 0
    assert fixed.q_mul(-3, ONE // 2) == -1  # -1.5 units -> -1
    assert fixed.q_div(ONE, 3 * ONE) == 21845  # 1/3 = 21845.33 units
    assert fixed.q_div(2 * ONE, 3 * ONE) == 43691  # 2/3 = 43690.67 units
    assert fixed.q_div(1, 2 * ONE) == 1  # 0.5 units -> 1
    assert fixed.q_div(-1, 2 * ONE) == 0  # -0.5 units -> 0
    assert fixed.q_add(Q_MAX, 1) == Q_MAX
    assert fixed.q_sub(Q_MIN, 1) == Q_MIN
    assert fixed.q_mul(Q_MIN, Q_MIN) == Q_MAX
    assert fixed.q_div(Q_MIN, -1) == Q_MAX


@pytest.mark.parametrize(
    "call",
    [
        lambda: fixed.q_add(1.5, 1),
        lambda: fixed.q_mul(1, Q_MAX + 1),
        lambda: fixed.q_sub(Q_MIN - 1, 0),
        lambda: fixed.q_exp("1"),
        lambda: fixed.Welford().update(2**40),
    ],
)
def test_scalar_arguments_are_checked(call):
    with pytest.raises(FixedPointError) as info:
        call()
    assert "\n" not in str(info.value)
    assert isinstance(info.value, QresError)


perfect_square_neighbours = st.builds(
    lambda k, d: min(max(k * k + d, 0), 2**64 - 1),
    st.integers(0, 2**32 - 1) | st.sampled_from([0, 1, 2**32 - 1, 2**31, 2**16]),
    st.integers(-2, 2),
)


@FAST
@given(st.integers(0, 2**64 - 1) | perfect_square_neighbours)
@example(2**64 - 1)
@example((2**32 - 1) ** 2)
@example((2**32 - 1) ** 2 - 1)
@example(0)
def test_isqrt_u64_matches_reference(n):
    r = fixed.isqrt_u64(n)
    assert r == ref.isqrt_u64(n)
    assert r * r <= n < (r + 1) * (r + 1)


def test_isqrt_u64_rejects_out_of_range():
    with pytest.raises(FixedPointError):
        fixed.isqrt_u64(-1)
    with pytest.raises(FixedPointError):
        fixed.isqrt_u64(2**64)


@FAST
@given(st.integers(0, Q_MAX) | st.sampled_from([0, 1, 2, ONE, Q_MAX]))
def test_sqrt_matches_reference(x):
    assert fixed.q_sqrt(x) == ref.sqrt(x)


def test_sqrt_examples_and_negative():
    assert fixed.q_sqrt(4 * ONE) == 2 * ONE
    assert fixed.q_sqrt(2 * ONE) == 92682  # 1.41421356 * 65536 = 92681.9
    with pytest.raises(FixedPointError, match="negative"):
        fixed.q_sqrt(-1)


# --- exp and softmax ----------------------------------------------------------------------

exp_inputs = st.one_of(
    st.integers(Q_MIN, Q_MAX),
    st.integers(-17 * ONE, 17 * ONE),
    st.sampled_from([Q_MIN, Q_MAX, 0, 16 * ONE, -16 * ONE, 16 * ONE - 1, -16 * ONE + 1]),
)
# 65536 * ln((2**31 - 1/2) / 65536) = 681391.4: the largest input whose exp fits in Q16.16
X_SAT = 681391


@FAST
@given(exp_inputs)
def test_exp_matches_reference(x):
    assert fixed.q_exp(x) == ref.exp(x)


@FAST
@given(st.integers(-12 * ONE, X_SAT))
def test_exp_is_within_one_unit_of_the_true_value(x):
    exact = ref.round_rule(math.exp(x / ONE) * ONE) if x > -12 * ONE else 0
    assert abs(fixed.q_exp(x) - min(exact, Q_MAX)) <= 1


def test_exp_ends_of_range():
    assert fixed.q_exp(0) == ONE
    assert fixed.q_exp(ONE) == 178145  # e * 65536 = 178145.08
    assert fixed.q_exp(-ONE) == 24109  # 65536 / e = 24109.3
    assert fixed.q_exp(Q_MAX) == Q_MAX
    assert fixed.q_exp(Q_MIN) == 0
    assert fixed.q_exp(X_SAT + 1000) == Q_MAX
    assert Q_MAX - 70000 < fixed.q_exp(X_SAT) <= Q_MAX
    assert fixed.q_exp(-12 * ONE) == 0  # 6e-6 * 65536 = 0.4 -> 0
    assert fixed.q_exp(-11 * ONE) == 1  # 1.67e-5 * 65536 = 1.1 -> 1


@SLOW
@given(st.lists(q32, min_size=1, max_size=24))
@example([0, 0, 0])
@example([Q_MIN, Q_MAX])
@example([Q_MAX] * 5)
def test_softmax_matches_reference_and_sums_to_one(xs):
    got = fixed.softmax(arr(xs))
    assert got.dtype == np.int32
    assert got.tolist() == ref.softmax(xs)
    assert int(got.sum()) == ONE
    assert (got >= 0).all()


@settings(max_examples=30, deadline=None)
@given(
    st.lists(
        st.sampled_from([-3 * ONE, -ONE, -7, 0, 5, ONE // 3, 2 * ONE]), min_size=1, max_size=400
    )
)
def test_softmax_leftover_units_on_long_vectors_with_ties(xs):
    # many equal remainders and hundreds of leftover units: exercises the selection by
    # (remainder, index) that hands them out
    assert fixed.softmax(arr(xs)).tolist() == ref.softmax(xs)


@SLOW
@given(st.lists(st.integers(-8 * ONE, 8 * ONE), min_size=1, max_size=16))
def test_softmax_is_close_to_float_softmax(xs):
    v = np.array(xs, dtype=np.float64) / ONE
    e = np.exp(v - v.max())
    expected = e / e.sum() * ONE
    got = fixed.softmax(arr(xs))
    # Proven bound (docs/fixed-point.md, Softmax): apportionment is within 1 unit of the share
    # of the integer exps; each exp is within 1 unit and the sum S >= 65536, so the share moves
    # by at most 1 + (n - 1) * share units. 1e-6 absorbs float64 rounding in the reference.
    bound = 2 + (len(xs) - 1) * expected / ONE + 1e-6
    assert (np.abs(got - expected) <= bound).all()


def test_softmax_examples_and_errors():
    # equal inputs: 21845.33 each; the one leftover unit goes to the lowest index
    assert fixed.softmax(arr([0, 0, 0])).tolist() == [21846, 21845, 21845]
    assert fixed.softmax(arr([5 * ONE])).tolist() == [ONE]
    assert fixed.softmax(arr([0, 40 * ONE])).tolist() == [0, ONE]
    with pytest.raises(FixedPointError, match="empty"):
        fixed.softmax(arr([]))


# --- conversions --------------------------------------------------------------------------

floats = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(-32769.0, 32769.0),
    st.integers(Q_MIN - 2, Q_MAX + 2).map(lambda q: q / ONE),
    st.integers(Q_MIN - 2, Q_MAX + 2).map(lambda q: (q + 0.5) / ONE),  # exact ties
)


@FAST
@given(floats)
@example(0.49999999999999994 / ONE)  # y + 0.5 would round up to 1.0 in floating point
@example(-32768.0 - 2**-17)  # -2**31 - 0.5 rounds up into range
@example(32768.0 - 2**-17)  # 2**31 - 0.5 rounds up out of range
@example(-0.0)
def test_from_float_matches_reference(x):
    try:
        expected = ref.from_float(x)
    except ValueError:
        with pytest.raises(FixedPointError):
            fixed.q_from_float(x)
        with pytest.raises(FixedPointError):
            fixed.to_fixed([x])
        return
    assert fixed.q_from_float(x) == expected
    assert fixed.to_fixed(np.array([x])).tolist() == [expected]


@FAST
@given(q32)
def test_to_float_is_exact(q):
    assert fixed.q_to_float(q) == ref.to_float(q)
    assert fixed.to_float(arr([q])).tolist() == [ref.to_float(q)]
    assert fixed.q_from_float(fixed.q_to_float(q)) == q


def test_to_fixed_names_the_first_bad_index():
    with pytest.raises(FixedPointError, match=r"value nan at index 2 is not finite"):
        fixed.to_fixed([0.0, 1.0, float("nan"), 1e9])
    with pytest.raises(FixedPointError, match=r"1000000000.0 at index 3 is outside"):
        fixed.to_fixed([0.0, 1.0, 2.0, 1e9, float("inf")])
    with pytest.raises(FixedPointError, match=r"at index 1, 0 "):
        fixed.to_fixed(np.array([[1.0, 2.0], [-40000.0, 0.0]]))
    with pytest.raises(FixedPointError, match="cannot read"):
        fixed.to_fixed(["a"])


def test_to_fixed_keeps_shape_and_rounds():
    got = fixed.to_fixed(np.array([[1.5, -0.25], [3.0, 0.5 / ONE]]))
    assert got.dtype == np.int32 and got.shape == (2, 2)
    assert got.tolist() == [[98304, -16384], [196608, 1]]
    assert fixed.to_float(got).tolist() == [[1.5, -0.25], [3.0, 1 / ONE]]
    assert fixed.to_fixed(np.array([0.1, -2.5], dtype=np.float32)).tolist() == [6554, -163840]


# --- arrays -------------------------------------------------------------------------------


@SLOW
@given(pairs())
def test_dot_matches_reference(xw):
    x, w = xw
    assert fixed.dot(arr(x), arr(w)) == ref.dot(x, w)
    assert fixed.dot_acc(arr(x), arr(w)) == ref.dot_acc(x, w)


@SLOW
@given(pairs(extreme_vectors))
def test_dot_with_sums_beyond_int64(xw):
    x, w = xw
    assert fixed.dot_acc(arr(x), arr(w)) == ref.dot_acc(x, w)
    assert fixed.dot(arr(x), arr(w)) == ref.dot(x, w)


def test_dot_examples():
    assert fixed.dot(arr([ONE, 2 * ONE]), arr([3 * ONE, ONE // 2])) == 4 * ONE
    assert fixed.dot(arr([]), arr([])) == 0
    # three products of +2**62 and three of -2**62 + 2**31: the partial sums leave int64, but the
    # exact total is 3 * 2**31 (1.5 in Q16.16). A saturating running sum would end at Q_MIN.
    x = arr([Q_MIN] * 6)
    w = arr([Q_MIN] * 3 + [Q_MAX] * 3)
    assert fixed.dot_acc(x, w) == 3 * 2**31
    assert fixed.dot(x, w) == 3 * 2**15
    assert fixed.dot(arr([Q_MIN] * 3), arr([Q_MIN] * 3)) == Q_MAX
    assert fixed.dot_acc(arr([Q_MIN] * 3), arr([Q_MIN] * 3)) == 2**63 - 1
    assert fixed.dot_acc(arr([Q_MIN] * 3), arr([Q_MAX] * 3)) == -(2**63)


@SLOW
@given(pairs(), q32, q32)
def test_lms_update_matches_reference(xw, mu, err):
    x, w = xw
    weights = arr(w)
    fixed.lms_update(weights, arr(x), mu, err)
    assert weights.tolist() == ref.lms_update(w, x, mu, err)


@SLOW
@given(pairs(), q32, q32)
def test_sign_sign_lms_update_matches_reference(xw, mu, err):
    x, w = xw
    weights = arr(w)
    fixed.sign_sign_lms_update(weights, arr(x), mu, err)
    assert weights.tolist() == ref.sign_sign_lms_update(w, x, mu, err)


def test_lms_examples_and_errors():
    w = arr([0, ONE, Q_MAX])
    fixed.lms_update(w, arr([ONE, -ONE, ONE]), ONE // 2, 2 * ONE)  # gain 1.0
    assert w.tolist() == [ONE, 0, Q_MAX]
    fixed.sign_sign_lms_update(w, arr([5, 0, -5]), 7, -3)
    assert w.tolist() == [ONE - 7, 0, Q_MAX]
    with pytest.raises(FixedPointError, match="shape"):
        fixed.lms_update(w, arr([1, 2]), 1, 1)
    with pytest.raises(FixedPointError, match="in place"):
        fixed.lms_update(w.astype(np.int64), arr([1, 2, 3]), 1, 1)
    frozen = arr([1, 2, 3])
    frozen.setflags(write=False)
    with pytest.raises(FixedPointError, match="writable"):
        fixed.sign_sign_lms_update(frozen, arr([1, 2, 3]), 1, 1)


OPS = [
    (fixed.array_add, ref.add),
    (fixed.array_sub, ref.sub),
    (fixed.array_mul, ref.mul),
    (fixed.array_div, ref.div),  # includes zero divisors: saturation, never an exception
]


@SLOW
@pytest.mark.parametrize(("op", "ref_op"), OPS)
@given(xw=pairs())
def test_elementwise_ops_match_reference(op, ref_op, xw):
    a, b = xw
    got = op(arr(a), arr(b))
    assert got.dtype == np.int32
    assert got.tolist() == [ref_op(p, q) for p, q in zip(a, b, strict=True)]


def test_elementwise_shapes_out_and_errors():
    a = arr([[1, 2], [3, Q_MAX]])
    out = np.zeros((2, 2), dtype=np.int32)
    assert fixed.array_add(a, a, out=out) is out
    assert out.tolist() == [[2, 4], [6, Q_MAX]]
    assert fixed.array_div(arr([ONE, -ONE, 0]), arr([0, 0, 0])).tolist() == [Q_MAX, Q_MIN, 0]
    with pytest.raises(FixedPointError, match="shape"):
        fixed.array_sub(a, arr([1, 2]))
    with pytest.raises(FixedPointError, match="int32 array"):
        fixed.array_mul(a.astype(np.float64), a)
    with pytest.raises(FixedPointError, match="int32 array"):
        fixed.dot([1, 2], arr([1, 2]))
    with pytest.raises(FixedPointError, match="out must be"):
        fixed.array_add(a, a, out=np.zeros(4, dtype=np.int64))


# --- Welford ------------------------------------------------------------------------------


@SLOW
@given(st.lists(q32, max_size=40))
def test_welford_matches_reference(xs):
    w = fixed.Welford()
    r = ref.Welford()
    for x in xs:
        w.update(x)
        r.update(x)
        assert (w.count, w.mean, w.m2) == (r.count, r.mean, r.m2)
    assert w.variance == r.variance
    assert w.sample_variance == r.sample_variance
    batch = fixed.welford(arr(xs))
    assert (batch.count, batch.mean, batch.m2) == (w.count, w.mean, w.m2)


def test_welford_examples():
    w = fixed.welford(fixed.to_fixed([1.0, 2.0, 3.0, 4.0]))
    assert w.count == 4
    assert w.mean == 5 * ONE // 2  # 2.5
    assert w.variance == 5 * ONE // 4  # 1.25
    assert w.sample_variance == fixed.q_div(5 * ONE, 3 * ONE)  # 5/3
    w.reset()
    assert (w.count, w.mean, w.variance, w.sample_variance) == (0, 0, 0, 0)
    assert "count=0" in repr(w)


def test_welford_m2_saturates_instead_of_wrapping():
    # alternating extremes add ~2**46 to m2 per sample: 2**17 samples pass 2**63
    xs = [Q_MIN, Q_MAX] * (2**16 + 100)
    w = fixed.welford(arr(xs))
    r = ref.Welford()
    for x in xs:
        r.update(x)
    assert w.m2 == r.m2 == 2**63 - 1
    assert w.variance == r.variance
    assert w.mean == r.mean


# --- the C-level API ----------------------------------------------------------------------

CIMPORT_USER = """
# cython: language_level=3
from libc.stdint cimport int32_t
from qres.fixed._core cimport (
    Welford, fx_dot, fx_exp, fx_mul, fx_softmax, fx_welford, fx_welford_mean, fx_welford_push,
    fx_welford_reset, fx_welford_variance,
)

def run(int32_t a, int32_t b):
    cdef fx_welford s
    cdef Welford w = Welford()
    cdef int32_t x[3]
    cdef int32_t o[3]
    cdef int status
    x[0] = a
    x[1] = b
    x[2] = 0
    fx_welford_reset(&s)
    with nogil:
        fx_welford_push(&s, a)
        fx_welford_push(&s, b)
        fx_welford_push(&w.state, b)
        status = fx_softmax(x, o, 3)
    return (fx_mul(a, b), fx_dot(x, x, 3), fx_exp(a), fx_welford_mean(&s),
            fx_welford_variance(&s), w.mean, status, [o[0], o[1], o[2]])
"""


def test_primitives_can_be_cimported_from_another_cython_module(tmp_path):
    """The .pxd is the API the predictors' Cython loops use: compile a module against it."""
    import subprocess
    import sys
    from pathlib import Path

    pytest.importorskip("Cython")
    repo = Path(fixed.__file__).resolve().parents[2]
    (tmp_path / "fx_user.pyx").write_text(CIMPORT_USER)
    setup = (
        "from setuptools import setup\n"
        "from Cython.Build import cythonize\n"
        f"setup(ext_modules=cythonize('fx_user.pyx', include_path=[{str(repo)!r}], quiet=True))\n"
    )
    (tmp_path / "setup.py").write_text(setup)
    build = subprocess.run(
        [sys.executable, "setup.py", "-q", "build_ext", "--inplace"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    check = subprocess.run(
        [sys.executable, "-c", f"import fx_user; print(fx_user.run({3 * ONE}, {ONE // 2}))"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stderr[-2000:]
    a, b = 3 * ONE, ONE // 2
    w = ref.Welford()
    w.update(a)
    w.update(b)
    expected = (
        ref.mul(a, b),
        ref.dot([a, b, 0], [a, b, 0]),
        ref.exp(a),
        w.mean,
        w.variance,
        b,
        0,
        ref.softmax([a, b, 0]),
    )
    assert check.stdout.strip() == str(expected)
