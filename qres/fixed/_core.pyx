# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False
"""Q16.16 fixed-point core (compiled).

Q16.16 numbers are int32 values v standing for v / 65536. One rounding rule everywhere: round
to nearest, ties toward +infinity, i.e. floor(v / 2**s + 1/2) (add half, then arithmetic shift
or floor division). Results saturate to [INT32_MIN, INT32_MAX]. Products and sums are taken in
int64 (dot products exactly), then rounded and saturated once.

The Python functions here validate their arguments and raise FixedPointError (one line: what,
where, what to do); the array loops run without the GIL on the inline primitives of _core.pxd,
which never raise (division by zero saturates there). docs/fixed-point.md is the full contract.
"""

import operator

import numpy as np

from libc.math cimport floor
from libc.stdlib cimport free, malloc

from qres.kernel.errors import FixedPointError

# ONE, FRAC_BITS, Q_MIN and Q_MAX for Python code live in qres/fixed/q16.py (pure Python, so
# importable without this extension); here they are the C constants of _core.pxd.

# A float y (already scaled by 2**16) converts to floor(y + 1/2); that lands in the int32
# range exactly when FLOAT_LO <= y < FLOAT_HI (both exactly representable doubles).
cdef double FLOAT_LO = -2147483648.5
cdef double FLOAT_HI = 2147483647.5


# ---------------------------------------------------------------------------------------------
# argument checking (Python level, before any nogil loop)

cdef int64_t _q(object v, str fn, str name) except? -1:
    """A Python int in the int32 range, or FixedPointError naming the function and argument."""
    try:
        i = operator.index(v)
    except TypeError:
        raise FixedPointError(
            f"{fn}: {name}={v!r} is not an integer; pass a raw Q16.16 int "
            f"(convert floats with q_from_float)"
        ) from None
    if i < INT32_MIN or i > INT32_MAX:
        raise FixedPointError(
            f"{fn}: {name}={i} is outside the int32 range of Q16.16 "
            f"[{INT32_MIN}, {INT32_MAX}]; saturate or rescale it first"
        )
    return <int64_t>i


cdef str _describe(object a):
    if isinstance(a, np.ndarray):
        return f"a {a.ndim}-D {a.dtype} array"
    return type(a).__name__


cdef object _array(object a, str fn, str name, bint one_d=True):
    """An int32 ndarray (C-contiguous copy if needed), or FixedPointError."""
    if not isinstance(a, np.ndarray) or a.dtype != np.int32 or (one_d and a.ndim != 1):
        shape = "1-D " if one_d else ""
        raise FixedPointError(
            f"{fn}: {name} must be a {shape}numpy int32 array of Q16.16 values, got "
            f"{_describe(a)}; convert floats with to_fixed() or cast with .astype(np.int32)"
        )
    return np.ascontiguousarray(a)


cdef object _same_length(object a, object b, str fn, str na, str nb):
    if a.shape != b.shape:
        raise FixedPointError(
            f"{fn}: {na} has shape {a.shape} but {nb} has shape {b.shape}; "
            f"pass arrays of the same shape"
        )


# ---------------------------------------------------------------------------------------------
# scalars

def q_add(a, b):
    """Saturating Q16.16 sum a + b (exact, then clamped to int32)."""
    return fx_add(<int32_t>_q(a, "q_add", "a"), <int32_t>_q(b, "q_add", "b"))


def q_sub(a, b):
    """Saturating Q16.16 difference a - b (exact, then clamped to int32)."""
    return fx_sub(<int32_t>_q(a, "q_sub", "a"), <int32_t>_q(b, "q_sub", "b"))


def q_mul(a, b):
    """Q16.16 product: floor(a * b / 2**16 + 1/2), clamped to int32."""
    return fx_mul(<int32_t>_q(a, "q_mul", "a"), <int32_t>_q(b, "q_mul", "b"))


def q_div(a, b):
    """Q16.16 quotient: floor(a * 2**16 / b + 1/2), clamped to int32; b == 0 raises."""
    cdef int32_t qa = <int32_t>_q(a, "q_div", "a")
    cdef int32_t qb = <int32_t>_q(b, "q_div", "b")
    if qb == 0:
        raise FixedPointError(
            f"q_div: division of {qa} by zero; check the divisor before dividing"
        )
    return fx_div(qa, qb)


def q_exp(x):
    """Q16.16 exp(x): saturates at Q_MAX for x >= ln(32768), 0 for very negative x.

    All-integer (reduction by ln2/32, a 32-entry table of 2**(j/32), a degree-4 polynomial);
    at most one unit (2**-16) away from the correctly rounded result, and monotonic.
    """
    return fx_exp(<int32_t>_q(x, "q_exp", "x"))


def q_sqrt(x):
    """Q16.16 square root, rounded to nearest; negative x raises."""
    cdef int32_t qx = <int32_t>_q(x, "q_sqrt", "x")
    if qx < 0:
        raise FixedPointError(
            f"q_sqrt: x={qx} is negative; the square root is only defined for x >= 0"
        )
    return fx_sqrt(qx)


def isqrt_u64(n):
    """floor(sqrt(n)) for an integer 0 <= n <= 2**64 - 1, exact."""
    try:
        i = operator.index(n)
    except TypeError:
        raise FixedPointError(
            f"isqrt_u64: n={n!r} is not an integer; pass an int in [0, 2**64 - 1]"
        ) from None
    if i < 0 or i > 0xFFFFFFFFFFFFFFFF:
        raise FixedPointError(
            f"isqrt_u64: n={i} is outside [0, 2**64 - 1]; use math.isqrt for other integers"
        )
    return fx_isqrt_u64(<uint64_t>i)


cdef int64_t _float_to_q(double v, str fn) except? -1:
    cdef double y = v * 65536.0
    cdef double f
    if not (y >= FLOAT_LO and y < FLOAT_HI):
        raise FixedPointError(_float_message(fn, v, ""))
    f = floor(y)
    # y - f is exact here (|y| < 2**32), unlike y + 0.5 which can round up near .5
    return <int64_t>f + (1 if y - f >= 0.5 else 0)


cdef str _float_message(str fn, double v, str where):
    if v != v or v in (float("inf"), float("-inf")):
        return (f"{fn}: value {v!r}{where} is not finite; "
                f"replace NaN/inf before converting to Q16.16")
    return (f"{fn}: value {v!r}{where} is outside the Q16.16 range "
            f"[-32768, 32767.99998]; scale or clip the input first")


def q_from_float(x):
    """Q16.16 nearest to the float x: floor(x * 2**16 + 1/2); out of range or not finite raises."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        raise FixedPointError(
            f"q_from_float: {x!r} is not a number; pass a float or an int"
        ) from None
    except OverflowError:
        raise FixedPointError(_float_message("q_from_float", float("inf"), "")) from None
    return _float_to_q(v, "q_from_float")


def q_to_float(q):
    """The exact float value q / 2**16 of a Q16.16 int."""
    return <double>_q(q, "q_to_float", "q") / 65536.0


# ---------------------------------------------------------------------------------------------
# conversions of arrays

def to_fixed(values):
    """Convert a float array (any shape) to Q16.16 int32 with the rounding rule.

    Raises FixedPointError naming the first bad index (in C order) when a value is NaN,
    infinite or outside [-32768, 32768 - 2**-17).
    """
    try:
        src = np.ascontiguousarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise FixedPointError(
            f"to_fixed: cannot read {_describe(values)} as floats; pass a numeric array"
        ) from None
    out = np.empty(src.shape, dtype=np.int32)
    cdef const double[::1] v = src.reshape(-1)
    cdef int32_t[::1] o = out.reshape(-1)
    cdef Py_ssize_t n = v.shape[0]
    cdef Py_ssize_t i, bad = -1
    cdef double y, f
    with nogil:
        for i in range(n):
            y = v[i] * 65536.0
            if not (y >= FLOAT_LO and y < FLOAT_HI):
                bad = i
                break
            f = floor(y)
            o[i] = <int32_t>(<int64_t>f + (1 if y - f >= 0.5 else 0))
    if bad >= 0:
        where = np.unravel_index(bad, src.shape) if src.ndim > 1 else (bad,)
        where = ", ".join(str(int(j)) for j in where)
        raise FixedPointError(_float_message("to_fixed", v[bad], f" at index {where}"))
    return out


def to_float(q):
    """The exact float64 values q / 2**16 of a Q16.16 int32 array (any shape)."""
    arr = _array(q, "to_float", "q", one_d=False)
    # int32 -> float64 is exact and so is dividing by a power of two: one numpy pass
    return np.true_divide(arr, 65536.0, dtype=np.float64)


# ---------------------------------------------------------------------------------------------
# element-wise array arithmetic

cdef enum _Op:
    OP_ADD
    OP_SUB
    OP_MUL
    OP_DIV


cdef object _elementwise(object a, object b, object out, _Op op, str fn):
    a = _array(a, fn, "a", one_d=False)
    b = _array(b, fn, "b", one_d=False)
    _same_length(a, b, fn, "a", "b")
    if out is None:
        out = np.empty(a.shape, dtype=np.int32)
    else:
        if (not isinstance(out, np.ndarray) or out.dtype != np.int32
                or not out.flags.c_contiguous or not out.flags.writeable):
            raise FixedPointError(
                f"{fn}: out must be a writable C-contiguous int32 array, got {_describe(out)}; "
                f"omit out to get a new array"
            )
        _same_length(a, out, fn, "a", "out")
    cdef const int32_t[::1] x = a.reshape(-1)
    cdef const int32_t[::1] y = b.reshape(-1)
    cdef int32_t[::1] o = out.reshape(-1)
    cdef Py_ssize_t i, n = x.shape[0]
    with nogil:
        if op == OP_ADD:
            for i in range(n):
                o[i] = fx_add(x[i], y[i])
        elif op == OP_SUB:
            for i in range(n):
                o[i] = fx_sub(x[i], y[i])
        elif op == OP_MUL:
            for i in range(n):
                o[i] = fx_mul(x[i], y[i])
        else:
            for i in range(n):
                o[i] = fx_div(x[i], y[i])
    return out


def array_add(a, b, out=None):
    """Element-wise saturating Q16.16 a + b of two same-shape int32 arrays (into out if given)."""
    return _elementwise(a, b, out, OP_ADD, "array_add")


def array_sub(a, b, out=None):
    """Element-wise saturating Q16.16 a - b of two same-shape int32 arrays (into out if given)."""
    return _elementwise(a, b, out, OP_SUB, "array_sub")


def array_mul(a, b, out=None):
    """Element-wise Q16.16 a * b with the rounding rule and saturation (into out if given)."""
    return _elementwise(a, b, out, OP_MUL, "array_mul")


def array_div(a, b, out=None):
    """Element-wise Q16.16 a / b with the rounding rule and saturation (into out if given).

    Unlike q_div this never raises: a zero divisor gives Q_MAX, Q_MIN or 0 by the sign of a
    (the same rule as the nogil primitive fx_div).
    """
    return _elementwise(a, b, out, OP_DIV, "array_div")


# ---------------------------------------------------------------------------------------------
# dot product and LMS updates

def dot(x, w):
    """Q16.16 dot product of two int32 vectors of equal length.

    The products are exact (Q32.32 in int64) and their exact sum is clamped to int64, then
    rounded to Q16.16 by the rule and clamped to int32. The result does not depend on the order
    of the elements. An empty dot product is 0.
    """
    xa = _array(x, "dot", "x")
    wa = _array(w, "dot", "w")
    _same_length(xa, wa, "dot", "x", "w")
    cdef const int32_t[::1] xv = xa
    cdef const int32_t[::1] wv = wa
    cdef Py_ssize_t n = xv.shape[0]
    cdef int32_t r = 0
    if n == 0:
        return 0
    with nogil:
        r = fx_dot(&xv[0], &wv[0], n)
    return r


def dot_acc(x, w):
    """The int64 accumulator of dot(x, w): the exact sum of x[i]*w[i] (Q32.32), clamped to int64."""
    xa = _array(x, "dot_acc", "x")
    wa = _array(w, "dot_acc", "w")
    _same_length(xa, wa, "dot_acc", "x", "w")
    cdef const int32_t[::1] xv = xa
    cdef const int32_t[::1] wv = wa
    cdef Py_ssize_t n = xv.shape[0]
    cdef int64_t r = 0
    if n == 0:
        return 0
    with nogil:
        r = fx_dot_acc(&xv[0], &wv[0], n)
    return r


cdef int32_t[::1] _weights(object w, str fn) except *:
    if (not isinstance(w, np.ndarray) or w.dtype != np.int32 or w.ndim != 1
            or not w.flags.c_contiguous or not w.flags.writeable):
        raise FixedPointError(
            f"{fn}: w must be a writable C-contiguous 1-D int32 array (it is updated in place), "
            f"got {_describe(w)}; make one with np.ascontiguousarray(w, dtype=np.int32)"
        )
    return w


def lms_update(w, x, mu, err):
    """LMS step in place: w[i] += mu * err * x[i], all Q16.16.

    The gain g = q_mul(mu, err) is rounded first; then w[i] = q_add(w[i], q_mul(g, x[i])).
    Every rounding follows the rule and every result saturates. Returns None.
    """
    cdef int32_t[::1] wv = _weights(w, "lms_update")
    xa = _array(x, "lms_update", "x")
    _same_length(w, xa, "lms_update", "w", "x")
    cdef const int32_t[::1] xv = xa
    cdef int32_t m = <int32_t>_q(mu, "lms_update", "mu")
    cdef int32_t e = <int32_t>_q(err, "lms_update", "err")
    cdef Py_ssize_t n = wv.shape[0]
    if n == 0:
        return
    with nogil:
        fx_lms_update(&wv[0], &xv[0], n, m, e)


def sign_sign_lms_update(w, x, mu, err):
    """Sign-sign LMS step in place: w[i] += mu * sign(err) * sign(x[i]), saturating.

    No multiplication or rounding: each weight moves by exactly mu (or not at all when err or
    x[i] is zero). Returns None.
    """
    cdef int32_t[::1] wv = _weights(w, "sign_sign_lms_update")
    xa = _array(x, "sign_sign_lms_update", "x")
    _same_length(w, xa, "sign_sign_lms_update", "w", "x")
    cdef const int32_t[::1] xv = xa
    cdef int32_t m = <int32_t>_q(mu, "sign_sign_lms_update", "mu")
    cdef int32_t e = <int32_t>_q(err, "sign_sign_lms_update", "err")
    cdef Py_ssize_t n = wv.shape[0]
    if n == 0:
        return
    with nogil:
        fx_sign_sign_lms_update(&wv[0], &xv[0], n, m, e)


# ---------------------------------------------------------------------------------------------
# softmax

cdef struct _Rem:
    int64_t rem
    Py_ssize_t index


cdef inline bint _before(const _Rem* a, const _Rem* b) noexcept nogil:
    # larger remainder first; equal remainders by lower index. This is a total order, so the
    # first k elements are the same set whatever algorithm selects them.
    return a.rem > b.rem or (a.rem == b.rem and a.index < b.index)


cdef void _select_first(_Rem* a, Py_ssize_t n, Py_ssize_t k) noexcept nogil:
    """Reorder a[0:n] so that a[0:k] are its k first elements in _before order (quickselect)."""
    cdef Py_ssize_t lo = 0, hi = n - 1, i, store
    cdef _Rem pivot, tmp
    while lo < hi:
        i = lo + (hi - lo) // 2
        pivot = a[i]
        a[i] = a[hi]
        a[hi] = pivot
        store = lo
        for i in range(lo, hi):
            if _before(&a[i], &pivot):
                tmp = a[i]
                a[i] = a[store]
                a[store] = tmp
                store += 1
        a[hi] = a[store]
        a[store] = pivot
        if store == k:
            return
        if store < k:
            lo = store + 1
        else:
            hi = store - 1


cdef int fx_softmax(const int32_t* x, int32_t* out, Py_ssize_t n) noexcept nogil:
    """Q16.16 softmax of x[0:n] into out; the weights sum to exactly 65536.

    e[i] = fx_exp(sat(x[i] - max(x))), S = sum(e); out[i] = floor(e[i] * 65536 / S); the
    65536 - sum(out) leftover units (fewer than n) go one each to the largest remainders
    e[i] * 65536 mod S, equal remainders by lower index. Returns 0, or -1 if n < 1 or memory
    runs out (out is then unspecified).
    """
    cdef int32_t m
    cdef int64_t s = 0, total = 0, num, q
    cdef Py_ssize_t i, left
    cdef _Rem* rems
    if n < 1:
        return -1
    m = x[0]
    for i in range(1, n):
        if x[i] > m:
            m = x[i]
    for i in range(n):
        out[i] = fx_exp(fx_sat32(<int64_t>x[i] - m))
        s += out[i]
    # s >= 65536 because the maximum contributes exp(0) == 65536 exactly
    rems = <_Rem*>malloc(n * sizeof(_Rem))
    if rems == NULL:
        return -1
    for i in range(n):
        num = <int64_t>out[i] * FX_ONE
        q = num // s
        rems[i].rem = num - q * s
        rems[i].index = i
        out[i] = <int32_t>q
        total += q
    left = <Py_ssize_t>(FX_ONE - total)
    if left > 0:
        _select_first(rems, n, left)
        for i in range(left):
            out[rems[i].index] += 1
    free(rems)
    return 0


def softmax(x):
    """Q16.16 softmax of a non-empty int32 vector: int32 weights that sum to exactly 65536.

    Each weight is floor(65536 * e_i / S) with e_i = q_exp(x_i - max(x)) and S their sum; the
    leftover units go one each to the largest remainders, ties to the lower index.
    """
    xa = _array(x, "softmax", "x")
    cdef const int32_t[::1] xv = xa
    cdef Py_ssize_t n = xv.shape[0]
    if n == 0:
        raise FixedPointError(
            "softmax: x is empty; pass at least one value (the weights must sum to 1)"
        )
    out = np.empty(n, dtype=np.int32)
    cdef int32_t[::1] ov = out
    cdef int status
    with nogil:
        status = fx_softmax(&xv[0], &ov[0], n)
    if status != 0:
        raise MemoryError(f"softmax: cannot allocate the remainders of {n} values")
    return out


# ---------------------------------------------------------------------------------------------
# Welford online mean and variance

cdef class Welford:
    """Online mean and variance of Q16.16 samples (Welford's algorithm), integer-only.

    Each update: n += 1; mean += round((x - mean) / n), the mean kept in Q16.40 so that the
    rounding of small steps does not accumulate; then m2 += round(d1 * d2 / 2**16) with d1, d2
    the distances of x from the old and new mean rounded to Q16.16. round is the project's rule
    (nearest, ties toward +infinity). ``mean`` is Q16.16 (int32 range); ``variance`` =
    round(m2 / n) and
    ``sample_variance`` = round(m2 / (n - 1)) are Q16.16 but may exceed the int32 range.
    m2 saturates at 2**63 - 1. Cython code can push samples without the GIL through
    ``fx_welford_push(&w.state, x)``.
    """

    def __init__(self):
        fx_welford_reset(&self.state)

    def update(self, x):
        """Add one Q16.16 sample."""
        fx_welford_push(&self.state, <int32_t>_q(x, "Welford.update", "x"))

    def update_array(self, values):
        """Add every sample of a 1-D int32 array, in order, without the GIL."""
        arr = _array(values, "Welford.update_array", "values")
        cdef const int32_t[::1] v = arr
        cdef Py_ssize_t i, n = v.shape[0]
        with nogil:
            for i in range(n):
                fx_welford_push(&self.state, v[i])

    def reset(self):
        """Forget every sample."""
        fx_welford_reset(&self.state)

    @property
    def count(self):
        """Number of samples seen."""
        return self.state.count

    @property
    def mean(self):
        """Running mean, Q16.16 (0 before any sample)."""
        return fx_welford_mean(&self.state)

    @property
    def m2(self):
        """Sum of squared deviations from the mean, Q16.16 (saturates at 2**63 - 1)."""
        return self.state.m2

    @property
    def variance(self):
        """Population variance round(m2 / count), Q16.16 (0 before any sample)."""
        return fx_welford_variance(&self.state)

    @property
    def sample_variance(self):
        """Sample variance round(m2 / (count - 1)), Q16.16 (0 with fewer than two samples)."""
        return fx_welford_sample_variance(&self.state)

    def __repr__(self):
        return (f"Welford(count={self.state.count}, mean={fx_welford_mean(&self.state)}, "
                f"variance={fx_welford_variance(&self.state)})")


def welford(values):
    """A new Welford tracker fed with every sample of a 1-D int32 array."""
    w = Welford()
    w.update_array(values)
    return w
