# cython: language_level=3
"""C-level Q16.16 primitives, inlined into every Cython module that cimports them.

Usage from another Cython module::

    from qres.fixed._core cimport fx_mul, fx_dot, fx_lms_update, fx_welford, fx_welford_push

Every function here is ``noexcept nogil`` and never raises: results saturate to
[INT32_MIN, INT32_MAX], and division by zero saturates (see fx_div). The single rounding rule is
round to nearest, ties toward +infinity: ``floor(v / 2**s + 1/2)``. docs/fixed-point.md has the
exact definition of each operation; tests/fixed_reference.py is its pure-Python twin.

Right shifts of negative int64 values are assumed arithmetic (true for GCC, Clang and MSVC, and
required by C23); no expression here overflows a signed type.
"""

cimport cython
from libc.stdint cimport INT32_MAX, INT32_MIN, INT64_MAX, INT64_MIN, int32_t, int64_t, uint64_t

cdef enum:
    FX_FRAC_BITS = 16
    FX_ONE = 65536
    FX_HALF = 32768


cdef struct fx_welford:
    # Running count, mean and sum of squared deviations (Welford's algorithm).
    int64_t count
    int64_t mean  # Q16.40 (24 bits finer than Q16.16 so rounding cannot pile up)
    int64_t m2    # Q16.16; saturates at INT64_MAX instead of wrapping


cdef class Welford:
    cdef fx_welford state


cdef inline int32_t fx_sat32(int64_t v) noexcept nogil:
    """Clamp an int64 to the int32 range."""
    if v > INT32_MAX:
        return INT32_MAX
    if v < INT32_MIN:
        return INT32_MIN
    return <int32_t>v


cdef inline int64_t fx_round_shift(int64_t v, int s) noexcept nogil:
    """floor(v / 2**s + 1/2) for 1 <= s <= 62, without the overflow of (v + 2**(s-1)) >> s."""
    return (v >> s) + ((v >> (s - 1)) & 1)


@cython.cdivision(True)
cdef inline int64_t fx_floor_div(int64_t num, int64_t den) noexcept nogil:
    """floor(num / den) for den > 0 (C division truncates toward zero, so fix negatives)."""
    cdef int64_t q = num // den
    if num % den < 0:
        q -= 1
    return q


@cython.cdivision(True)
cdef inline int64_t fx_round_div(int64_t num, int64_t den) noexcept nogil:
    """floor(num / den + 1/2) for den > 0: round to nearest, ties toward +infinity."""
    cdef int64_t q = num // den
    cdef int64_t r = num % den
    if r < 0:
        q -= 1
        r += den
    # r >= den / 2, written without the overflow of 2 * r
    if r >= den - r:
        q += 1
    return q


cdef inline int32_t fx_add(int32_t a, int32_t b) noexcept nogil:
    """Saturating Q16.16 addition."""
    return fx_sat32(<int64_t>a + b)


cdef inline int32_t fx_sub(int32_t a, int32_t b) noexcept nogil:
    """Saturating Q16.16 subtraction."""
    return fx_sat32(<int64_t>a - b)


cdef inline int32_t fx_mul(int32_t a, int32_t b) noexcept nogil:
    """Q16.16 product: exact int64 product (Q32.32), rounded by the rule, saturated."""
    return fx_sat32(fx_round_shift(<int64_t>a * b, FX_FRAC_BITS))


cdef inline int32_t fx_div(int32_t a, int32_t b) noexcept nogil:
    """Q16.16 quotient round(a * 2**16 / b), saturated; b == 0 gives MAX, MIN or 0 by a's sign."""
    cdef int64_t num = <int64_t>a * FX_ONE
    if b == 0:
        if a > 0:
            return INT32_MAX
        if a < 0:
            return INT32_MIN
        return 0
    if b < 0:
        # a / b == (-a) / (-b): keep the denominator positive for fx_round_div
        return fx_sat32(fx_round_div(-num, -(<int64_t>b)))
    return fx_sat32(fx_round_div(num, b))


cdef inline uint64_t fx_isqrt_u64(uint64_t n) noexcept nogil:
    """floor(sqrt(n)), exact for every uint64 (bit-by-bit method: no floating point)."""
    cdef uint64_t res = 0
    cdef uint64_t bit = (<uint64_t>1) << 62
    while bit > n:
        bit >>= 2
    while bit != 0:
        if n >= res + bit:
            n -= res + bit
            res = (res >> 1) + bit
        else:
            res >>= 1
        bit >>= 2
    return res


cdef inline int32_t fx_sqrt(int32_t a) noexcept nogil:
    """Q16.16 square root rounded to nearest; 0 for a <= 0."""
    cdef uint64_t m, r
    if a <= 0:
        return 0
    m = (<uint64_t>a) << FX_FRAC_BITS
    r = fx_isqrt_u64(m)
    # sqrt(m) is never exactly r + 1/2 for integer m, so no tie: round up iff m > r*r + r
    if m - r * r > r:
        r += 1
    return <int32_t>r


cdef extern from *:
    """
    /* round(2**(j/32) * 2**32) for j = 0..31: the table of fx_exp (all below 2**33) */
    static const uint64_t qres_fx_exp2_32[32] = {
        4294967296ull, 4389014833ull, 4485121744ull, 4583333121ull,
        4683695048ull, 4786254615ull, 4891059943ull, 4998160210ull,
        5107605667ull, 5219447668ull, 5333738689ull, 5450532358ull,
        5569883475ull, 5691848042ull, 5816483285ull, 5943847684ull,
        6074001000ull, 6207004303ull, 6342919999ull, 6481811861ull,
        6623745059ull, 6768786189ull, 6917003306ull, 7068465956ull,
        7223245206ull, 7381413680ull, 7543045592ull, 7708216783ull,
        7877004752ull, 8049488696ull, 8225749546ull, 8405870007ull,
    };
    """
    const uint64_t* FX_EXP2_32 "qres_fx_exp2_32"


cdef inline int32_t fx_exp(int32_t x) noexcept nogil:
    """Q16.16 exp(x), saturating at INT32_MAX; at most 1 unit from the correctly rounded value.

    x = (32k + j) * ln2/32 + r with 0 <= r < ln2/32 (ln2/32 in Q48: the reduction error is
    below 2**-39), and exp(x) = 2**k * 2**(j/32) * exp(r): 2**(j/32) from a Q32 table, exp(r)
    by Horner on the degree-4 Taylor polynomial in Q33 (truncation error below 2**-34).
    """
    cdef int64_t big_x, k32, k, r, p
    cdef uint64_t t, e
    if x >= 16 * FX_ONE:
        return INT32_MAX
    if x <= -12 * FX_ONE:
        return 0  # exp(-12) * 2**16 = 0.4 rounds to 0; this also keeps k >= -18
    big_x = <int64_t>x * 4294967296LL  # Q48; |x| < 2**20 so this stays below 2**52
    k32 = fx_floor_div(big_x, 6096987078286LL)  # round(ln2 / 32 * 2**48)
    k = k32 >> 5
    if k >= 15:
        return INT32_MAX  # exp(x) >= 2**15, beyond Q16.16
    r = fx_round_shift(big_x - k32 * 6096987078286LL, 15)  # Q33, below 2**28
    # coefficients round(2**33 / i!); p stays below 1.03 * 2**33 and p * r below 2**62
    p = 357913941
    p = 1431655765 + fx_round_shift(p * r, 33)
    p = 4294967296LL + fx_round_shift(p * r, 33)
    p = 8589934592LL + fx_round_shift(p * r, 33)
    p = 8589934592LL + fx_round_shift(p * r, 33)
    # e = table * exp(r) in Q62, split as t * 2**33 + t * (p - 2**33) so that the partial
    # products fit: t << 30 < 2**63 and t * (p - 2**33) < 2**61; e stays below 2**63 + 2**59
    t = FX_EXP2_32[k32 & 31]
    e = t * (<uint64_t>(p - 8589934592LL))
    e = (t << 30) + (((e >> 2) + 1) >> 1)  # round(e / 2**3): Q65 -> Q62
    # exp(x) in Q16.16 is e * 2**k / 2**46, rounded by the rule: ((e >> (s-1)) + 1) >> 1
    # equals floor(e / 2**s + 1/2), here with s - 1 = 45 - k in [31, 63]
    return fx_sat32(<int64_t>(((e >> (45 - k)) + 1) >> 1))


cdef inline int64_t fx_dot_acc(const int32_t* x, const int32_t* w, Py_ssize_t n) noexcept nogil:
    """Sum of x[i] * w[i] in Q32.32: the exact sum clamped to int64 (order-independent).

    Each product is split into its high 32 bits (signed) and low 32 bits (unsigned); the two
    parts are summed separately, which cannot overflow for fewer than 2**33 elements, so the
    sum is exact and the loop has no branches.
    """
    cdef int64_t hi = 0
    cdef uint64_t lo = 0
    cdef int64_t p
    cdef Py_ssize_t i, start, stop
    start = 0
    while start < n:
        # fold lo into hi every 2**31 terms so the unsigned low sum never wraps
        stop = start + 2147483648LL if n - start > 2147483648LL else n
        for i in range(start, stop):
            p = <int64_t>x[i] * w[i]
            hi += p >> 32
            lo += <uint64_t>(p & 0xFFFFFFFFLL)
        hi += <int64_t>(lo >> 32)
        lo &= 0xFFFFFFFFLL
        start = stop
    # exact sum = hi * 2**32 + lo with 0 <= lo < 2**32
    if hi >= 2147483648LL:
        return INT64_MAX
    if hi < -2147483648LL:
        return INT64_MIN
    return <int64_t>((<uint64_t>hi << 32) | lo)


cdef inline int32_t fx_dot(const int32_t* x, const int32_t* w, Py_ssize_t n) noexcept nogil:
    """Q16.16 dot product: fx_dot_acc rounded from Q32.32 by the rule and saturated."""
    return fx_sat32(fx_round_shift(fx_dot_acc(x, w, n), FX_FRAC_BITS))


cdef inline void fx_lms_update(int32_t* w, const int32_t* x, Py_ssize_t n,
                               int32_t mu, int32_t err) noexcept nogil:
    """w[i] = fx_add(w[i], fx_mul(fx_mul(mu, err), x[i])): the gain is rounded once first."""
    cdef int64_t g = fx_mul(mu, err)
    cdef Py_ssize_t i
    if g == 0:
        return
    for i in range(n):
        w[i] = fx_sat32(<int64_t>w[i] + fx_sat32(fx_round_shift(g * x[i], FX_FRAC_BITS)))


cdef inline void fx_sign_sign_lms_update(int32_t* w, const int32_t* x, Py_ssize_t n,
                                         int32_t mu, int32_t err) noexcept nogil:
    """w[i] = sat(w[i] + mu * sign(err) * sign(x[i])), computed in int64 (mu may be INT32_MIN)."""
    cdef int64_t step
    cdef Py_ssize_t i
    if err == 0 or mu == 0:
        return
    step = mu if err > 0 else -(<int64_t>mu)
    for i in range(n):
        # branch-free: the signs of sensor data are unpredictable
        w[i] = fx_sat32(<int64_t>w[i] + ((x[i] > 0) - (x[i] < 0)) * step)


cdef inline void fx_welford_reset(fx_welford* s) noexcept nogil:
    """Forget every sample."""
    s.count = 0
    s.mean = 0
    s.m2 = 0


cdef inline void fx_welford_push(fx_welford* s, int32_t x) noexcept nogil:
    """Add one Q16.16 sample (the rounding steps are in docs/fixed-point.md).

    mean += round((x - mean) / n) in Q16.40; then m2 += round(d1 * d2 / 2**16) with
    d1 = x - mean_old and d2 = x - mean_new, both means rounded to Q16.16. d1 and d2 never
    differ in sign, so the product is taken on magnitudes in uint64 (each below 2**32).
    """
    cdef int64_t d1, d2
    cdef uint64_t prod, term
    s.count += 1
    d1 = <int64_t>x - fx_round_shift(s.mean, 24)
    s.mean += fx_round_div(<int64_t>x * 16777216 - s.mean, s.count)
    d2 = <int64_t>x - fx_round_shift(s.mean, 24)
    prod = (<uint64_t>(d1 if d1 >= 0 else -d1)) * (<uint64_t>(d2 if d2 >= 0 else -d2))
    term = (prod >> 16) + ((prod >> 15) & 1)
    if s.m2 > INT64_MAX - <int64_t>term:
        s.m2 = INT64_MAX
    else:
        s.m2 += <int64_t>term


cdef inline int32_t fx_welford_mean(const fx_welford* s) noexcept nogil:
    """Running mean rounded to Q16.16 (0 when empty)."""
    return <int32_t>fx_round_shift(s.mean, 24)


cdef inline int64_t fx_welford_variance(const fx_welford* s) noexcept nogil:
    """Population variance round(m2 / count) in Q16.16 (may exceed int32); 0 when empty."""
    if s.count < 1:
        return 0
    return fx_round_div(s.m2, s.count)


cdef inline int64_t fx_welford_sample_variance(const fx_welford* s) noexcept nogil:
    """Sample variance round(m2 / (count - 1)) in Q16.16; 0 with fewer than two samples."""
    if s.count < 2:
        return 0
    return fx_round_div(s.m2, s.count - 1)


cdef int fx_softmax(const int32_t* x, int32_t* out, Py_ssize_t n) noexcept nogil
