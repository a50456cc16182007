# Integer helpers shared by the predictor kernels (included, not cimported, so that they stay
# inline): a clamp and the bounded-error quantiser of docs/predictors.md with its decoder side.

cdef inline int64_t clamp64(int64_t v, int64_t lo, int64_t hi) noexcept nogil:
    if v < lo:
        return lo
    if v > hi:
        return hi
    return v


cdef inline int64_t quantise(int64_t x, int64_t pc, int64_t e, int64_t lo, int64_t hi,
                             int64_t* q_out) noexcept nogil:
    """Bounded-error step of the encoder: q = round((x - pc) / (2e+1)); returns x'.

    pc is already inside [lo, hi]. (2e+1) is odd, so a quotient is never exactly half-way and
    rounding to nearest is unambiguous. x' = pc + q*(2e+1), clamped to [lo, hi]: as x lies in
    [lo, hi], the clamp moves x' toward x and never breaks |x - x'| <= e.
    """
    cdef uint64_t m = <uint64_t>(2 * e + 1)
    cdef uint64_t d, q, room
    if x >= pc:
        d = <uint64_t>x - <uint64_t>pc
        q = d / m
        if d - q * m > <uint64_t>e:
            q += 1
        q_out[0] = <int64_t>q
        room = <uint64_t>hi - <uint64_t>pc
        if q > room / m:
            return hi
        return <int64_t>(<uint64_t>pc + q * m)
    d = <uint64_t>pc - <uint64_t>x
    q = d / m
    if d - q * m > <uint64_t>e:
        q += 1
    q_out[0] = -<int64_t>q
    room = <uint64_t>pc - <uint64_t>lo
    if q > room / m:
        return lo
    return <int64_t>(<uint64_t>pc - q * m)


cdef inline int64_t dequantise(int64_t q, int64_t pc, int64_t e, int64_t lo,
                               int64_t hi) noexcept nogil:
    """Decoder side of :func:`quantise`: x' from q (any int64, even a corrupted one)."""
    cdef uint64_t m = <uint64_t>(2 * e + 1)
    cdef uint64_t qa, room
    if q >= 0:
        qa = <uint64_t>q
        room = <uint64_t>hi - <uint64_t>pc
        if qa > room / m:
            return hi
        return <int64_t>(<uint64_t>pc + qa * m)
    qa = <uint64_t>(-(q + 1)) + 1
    room = <uint64_t>pc - <uint64_t>lo
    if qa > room / m:
        return lo
    return <int64_t>(<uint64_t>pc - qa * m)
