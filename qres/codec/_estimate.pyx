# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False
"""Compiled size estimate that ranks the per-channel predictor candidates of a block.

:func:`estimated_bits` is the order-0 entropy of the signed bit-length classes the range coder
models plus the bits below each leading one, in integer arithmetic only (a ranking decides
bytes, so it must give the same number on every machine). The plain-Python reference it must
match exactly lives in tests/test_channel_ranking.py; it ran in Python per candidate and was a
quarter of the compress time of short multichannel files.
"""

from libc.math cimport fabs
from libc.stdint cimport int64_t, uint64_t
from libc.string cimport memcpy

include "../../plugins/coders/_bits.pxi"

cdef enum:
    CLASSES = 131  # 65 + bit length for r >= 0, 65 - bit length for r < 0 (bit lengths 0..64)


cdef inline int bit_length(uint64_t v) noexcept nogil:
    cdef int k = 0
    while v:
        v >>= 1
        k += 1
    return k


cdef inline uint64_t square_q32(uint64_t x) noexcept nogil:
    """``(x * x) >> 32`` for ``x < 2**34`` without a 128-bit product (exact: the low word's
    square is the only term with bits below 2**32)."""
    cdef uint64_t hi = x >> 32, lo = x & ((<uint64_t>1 << 32) - 1)
    return ((hi * hi) << 32) + 2 * hi * lo + ((lo * lo) >> 32)


cdef int64_t log2_q16_c(uint64_t v) noexcept nogil:
    """log2(v) for v >= 1 in Q16 by integer squaring: 16 fraction bits, each the carry of a
    squaring of the mantissa (Q32, in [1, 2))."""
    cdef int exp = bit_length(v) - 1, bit
    cdef uint64_t x = v << (32 - exp) if exp <= 32 else v >> (exp - 32)
    cdef int64_t frac = 0
    for bit in range(15, -1, -1):
        x = square_q32(x)
        if x >= (<uint64_t>2) << 32:
            x >>= 1
            frac |= (<int64_t>1) << bit
    return ((<int64_t>exp) << 16) | frac


cdef inline int float_class(int64_t r) noexcept nogil:
    """The binary exponent ``frexp`` gives ``|binary64(r)|`` (0 for 0): the bit length of
    ``|r|`` after the conversion's rounding to 53 bits, read from the exponent field (every
    nonzero integer converts to a normal float)."""
    cdef double m = fabs(<double>r)
    cdef uint64_t bits
    if m == 0:
        return 0
    memcpy(&bits, &m, sizeof(double))
    return <int>((bits >> 52) & 0x7FF) - 1022


def log2_q16(uint64_t v):
    """``log2(v)`` in Q16 (``v >= 1``), exactly as the estimate computes it."""
    if v < 1:
        raise ValueError("log2_q16 needs v >= 1")
    return log2_q16_c(v)


cdef extern from *:
    """
    static inline int qres_est_bitlen(unsigned long long x) {
        /* 64 - clz without a branch on zero: x | 1 has a leading one, and 0 takes one off */
        return 64 - __builtin_clzll(x | 1ULL) - (x == 0);
    }
    """
    int qres_est_bitlen(unsigned long long x) nogil


cdef inline int exact_class(int64_t r) noexcept nogil:
    """:func:`float_class` of ``r``: the bit length of ``|r|`` below 2**53 (where the
    conversion to binary64 is exact), else read from the converted float. No branch on the
    sign or on zero (residual signs and zeros are random: a branch mispredicts half the time)."""
    cdef uint64_t s = <uint64_t>(r >> 63)
    cdef uint64_t m = (<uint64_t>r ^ s) - s
    if m < (<uint64_t>1 << 53):
        return qres_est_bitlen(m)
    return float_class(r)


def estimated_bits(const int64_t[::1] residuals):
    """A cheap size estimate in bits of coded residuals, enough to rank candidates: the order-0
    entropy (Q16, truncated) of the signed bit-length classes plus the bits below each leading
    one. A class is the binary exponent of ``|float64(r)|``, as numpy's ``frexp`` gives it."""
    cdef Py_ssize_t n = residuals.shape[0], i, lanes
    # Four histograms, filled in turn: runs of one class (zeros above all) would otherwise
    # make every increment wait for the one before it.
    cdef int64_t counts[4][CLASSES]
    cdef int64_t total[CLASSES]
    cdef int64_t mantissa = 0, entropy, r
    cdef int cls, c, k
    cdef int64_t s
    if n == 0:
        return 0
    with nogil:
        for k in range(4):
            for c in range(CLASSES):
                counts[k][c] = 0
        lanes = n - n % 4
        i = 0
        while i < lanes:
            for k in range(4):
                r = residuals[i + k]
                cls = exact_class(r)
                mantissa += cls
                s = r >> 63  # -1 for a negative residual, else 0
                counts[k][65 + ((cls ^ s) - s)] += 1
            i += 4
        while i < n:
            r = residuals[i]
            cls = exact_class(r)
            mantissa += cls
            s = r >> 63
            counts[0][65 + ((cls ^ s) - s)] += 1
            i += 1
        for c in range(CLASSES):
            total[c] = counts[0][c] + counts[1][c] + counts[2][c] + counts[3][c]
        # Each nonzero residual sends its class minus the leading one.
        mantissa -= n - total[65]
        entropy = n * log2_q16_c(<uint64_t>n)
        for c in range(CLASSES):
            if total[c]:
                entropy -= total[c] * log2_q16_c(<uint64_t>total[c])
    return (entropy >> 16) + mantissa
