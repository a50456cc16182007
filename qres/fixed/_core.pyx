# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Q16.16 fixed-point core (compiled). See qres.fixed for the documented rules."""

from libc.stdint cimport int32_t, int64_t

cdef int64_t Q_MAX = 2147483647
cdef int64_t Q_MIN = -2147483648


cdef inline int32_t sat32(int64_t v) noexcept nogil:
    if v > Q_MAX:
        return <int32_t>Q_MAX
    if v < Q_MIN:
        return <int32_t>Q_MIN
    return <int32_t>v


def q_add(int32_t a, int32_t b):
    """Saturating Q16.16 addition."""
    return sat32(<int64_t>a + b)
