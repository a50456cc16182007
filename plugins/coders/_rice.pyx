# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False
"""Compiled hot loops of the adaptive Rice coder; the bitstream is specified in docs/coders.md.

Only :func:`encode` and :func:`decode` are public; both run their loops without the GIL and
touch no Python object per sample.
"""

from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy

import numpy as np

include "_bits.pxi"

# Quotients at or above LIMIT are escaped: LIMIT zeros, a one, 6 bits of (bit length - 1),
# then the bits below the leading one. Bounds every codeword to LIMIT + 1 + 6 + 63 bits.
cdef enum:
    LIMIT = 32
# Worst-case bits one sample can add: an escaped codeword plus a run interruption (1 + 15).
cdef enum:
    MAX_SAMPLE_BITS = 118
# Zero bytes after the payload so the decoder may read ahead one whole sample unchecked.
cdef enum:
    PAD = 32

# Run-length code orders (JPEG-LS, ITU-T T.87 table J): a run segment of 2**J[i] zeros costs
# one bit; the index climbs while runs continue and falls back at each interruption.
cdef int J[32]
J[:] = [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3,
        4, 4, 5, 5, 6, 6, 7, 7, 8, 9, 10, 11, 12, 13, 14, 15]

# Error codes returned from the nogil loops.
cdef enum:
    OK = 0
    E_TRUNCATED = 1
    E_UNARY = 2
    E_ESCAPE = 3
    E_RUN = 4
    E_TAIL = 5


cdef struct Writer:
    uint8_t* buf
    Py_ssize_t pos
    uint64_t acc
    int nacc


cdef inline void put(Writer* w, uint64_t v, int nb) noexcept nogil:
    # Append the nb low bits of v (nb <= 32, v < 2**nb), most significant first.
    cdef uint32_t word
    w.acc = (w.acc << nb) | v
    w.nacc += nb
    if w.nacc >= 32:
        w.nacc -= 32
        word = <uint32_t>(w.acc >> w.nacc)
        w.buf[w.pos] = <uint8_t>(word >> 24)
        w.buf[w.pos + 1] = <uint8_t>(word >> 16)
        w.buf[w.pos + 2] = <uint8_t>(word >> 8)
        w.buf[w.pos + 3] = <uint8_t>word
        w.pos += 4


cdef inline void put_long(Writer* w, uint64_t v, int nb) noexcept nogil:
    # Append nb <= 64 bits.
    if nb > 32:
        put(w, v >> 32, nb - 32)
        put(w, v & <uint64_t>0xFFFFFFFF, 32)
    else:
        put(w, v, nb)


cdef inline void put_zeros(Writer* w, int count) noexcept nogil:
    while count > 32:
        put(w, 0, 32)
        count -= 32
    put(w, 0, count)


cdef inline void flush(Writer* w) noexcept nogil:
    # Pad the last partial byte with zero bits.
    if w.nacc & 7:
        put(w, 0, 8 - (w.nacc & 7))
    while w.nacc > 0:
        w.nacc -= 8
        w.buf[w.pos] = <uint8_t>(w.acc >> w.nacc)
        w.pos += 1


cdef inline int rice_k(uint64_t mean_acc, int shift) noexcept nogil:
    # floor(log2(mean)) for mean = mean_acc / 2**shift, and 0 below a mean of 2.
    cdef int k = qres_bitlen64(mean_acc) - shift - 1
    return k if k > 0 else 0


cdef inline uint64_t adapt(uint64_t mean_acc, uint64_t u, int shift) noexcept nogil:
    # Exponential running mean kept as mean * 2**shift, unsigned and exact; values are clamped
    # to 2**(63 - shift) so the accumulator never exceeds 2**63.
    if u > (<uint64_t>1 << (63 - shift)):
        u = <uint64_t>1 << (63 - shift)
    return mean_acc - (mean_acc >> shift) + u


cdef inline uint64_t decay(uint64_t mean_acc, Py_ssize_t zeros, int shift) noexcept nogil:
    # The running mean after `zeros` zero samples; stops once it no longer moves.
    cdef uint64_t floor_ = <uint64_t>1 << shift
    while zeros > 0 and mean_acc >= floor_:
        mean_acc -= mean_acc >> shift
        zeros -= 1
    return mean_acc


cdef inline void put_value(Writer* w, uint64_t u, int k) noexcept nogil:
    # One Rice codeword (quotient in unary as zeros closed by a one, then k low bits) or an escape.
    cdef uint64_t q = u >> k
    cdef int b
    if q < LIMIT:
        if q + 1 + k <= 32:
            put(w, (<uint64_t>1 << k) | (u & ((<uint64_t>1 << k) - 1)), <int>q + 1 + k)
        else:
            put_zeros(w, <int>q)
            put(w, 1, 1)
            put_long(w, u & ((<uint64_t>1 << k) - 1), k)
    else:
        put_zeros(w, LIMIT)
        put(w, 1, 1)
        b = qres_bitlen64(u) - 1
        put(w, <uint64_t>b, 6)
        if b:
            put_long(w, u ^ (<uint64_t>1 << b), b)


cdef Py_ssize_t encode_loop(const int64_t[::1] res, uint8_t* out, int shift) noexcept nogil:
    cdef Writer w
    cdef Py_ssize_t n = res.shape[0], i = 0, j, run
    cdef uint64_t mean_acc = 0, u
    cdef int idx = 0, prev_zero = 0
    w.buf = out
    w.pos = 0
    w.acc = 0
    w.nacc = 0
    while i < n:
        if prev_zero:
            # Run mode: code the length of the zero run that starts here.
            j = i
            while j < n and res[j] == 0:
                j += 1
            run = j - i
            mean_acc = decay(mean_acc, run, shift)
            while run >= (<Py_ssize_t>1 << J[idx]):
                put(&w, 1, 1)
                run -= <Py_ssize_t>1 << J[idx]
                if idx < 31:
                    idx += 1
            if j == n:
                if run > 0:
                    put(&w, 1, 1)  # a partial segment closes the block
                break
            put(&w, 0, 1)
            put(&w, <uint64_t>run, J[idx])
            # The interruption is known to be non-zero: code zigzag - 1.
            u = zigzag(res[j])
            put_value(&w, u - 1, rice_k(mean_acc, shift))
            mean_acc = adapt(mean_acc, u, shift)
            if idx > 0:
                idx -= 1
            prev_zero = 0
            i = j + 1
            continue
        u = zigzag(res[i])
        put_value(&w, u, rice_k(mean_acc, shift))
        mean_acc = adapt(mean_acc, u, shift)
        prev_zero = u == 0
        i += 1
    flush(&w)
    return w.pos


def encode(const int64_t[::1] res, int shift):
    """Rice-code ``res`` with running-mean shift ``shift``; the payload bytes."""
    cdef Py_ssize_t n = res.shape[0]
    cdef Py_ssize_t cap = (n * MAX_SAMPLE_BITS + 7) // 8 + 16
    cdef uint8_t[::1] buf = np.empty(cap, dtype=np.uint8)
    cdef Py_ssize_t size
    with nogil:
        size = encode_loop(res, &buf[0], shift)
    return bytes(buf[:size])


cdef struct Reader:
    const uint8_t* buf
    Py_ssize_t bitpos


cdef inline uint64_t window(Reader* r) noexcept nogil:
    # The next 57+ bits, left-aligned (missing low bits read as zero).
    cdef const uint8_t* p = r.buf + (r.bitpos >> 3)
    cdef uint64_t v = ((<uint64_t>p[0] << 56) | (<uint64_t>p[1] << 48) | (<uint64_t>p[2] << 40)
                       | (<uint64_t>p[3] << 32) | (<uint64_t>p[4] << 24) | (<uint64_t>p[5] << 16)
                       | (<uint64_t>p[6] << 8) | <uint64_t>p[7])
    return v << (r.bitpos & 7)


cdef inline uint64_t get(Reader* r, int nb) noexcept nogil:
    # Read nb <= 57 bits.
    cdef uint64_t v
    if nb == 0:
        return 0
    v = window(r) >> (64 - nb)
    r.bitpos += nb
    return v


cdef inline uint64_t get_long(Reader* r, int nb) noexcept nogil:
    # Read nb <= 64 bits.
    cdef uint64_t hi
    if nb > 32:
        hi = get(r, nb - 32)
        return (hi << 32) | get(r, 32)
    return get(r, nb)


cdef inline int get_value(Reader* r, int k, uint64_t* out) noexcept nogil:
    # Inverse of put_value; rejects over-long unary codes and non-canonical escapes.
    cdef int z = qres_clz64(window(r))
    cdef int b
    cdef uint64_t u
    if z > LIMIT:
        return E_UNARY
    r.bitpos += z + 1
    if k > 58 and (<uint64_t>z >> (64 - k)) != 0:
        return E_UNARY  # the quotient would overflow 64 bits
    if z < LIMIT:
        out[0] = (<uint64_t>z << k) | get_long(r, k)
        return OK
    b = <int>get(r, 6)
    u = (<uint64_t>1 << b) | get_long(r, b)
    if (u >> k) < LIMIT:
        return E_ESCAPE
    out[0] = u
    return OK


cdef int decode_loop(const uint8_t* buf, Py_ssize_t nbytes, int64_t[::1] out,
                     int shift) noexcept nogil:
    cdef Reader r
    cdef Py_ssize_t n = out.shape[0], i = 0, seg, run, t
    cdef Py_ssize_t limit_bits = nbytes * 8
    cdef uint64_t mean_acc = 0, u
    cdef int idx = 0, prev_zero = 0, err
    r.buf = buf
    r.bitpos = 0
    while i < n:
        if r.bitpos > limit_bits:
            return E_TRUNCATED
        if prev_zero:
            if get(&r, 1):
                seg = <Py_ssize_t>1 << J[idx]
                if seg > n - i:
                    seg = n - i
                for t in range(seg):
                    out[i + t] = 0
                i += seg
                mean_acc = decay(mean_acc, seg, shift)
                if idx < 31:
                    idx += 1
                continue
            run = <Py_ssize_t>get(&r, J[idx])
            if run >= n - i:
                return E_RUN  # no room left for the interrupting sample
            for t in range(run):
                out[i + t] = 0
            i += run
            mean_acc = decay(mean_acc, run, shift)
            err = get_value(&r, rice_k(mean_acc, shift), &u)
            if err:
                return err
            if u == ~(<uint64_t>0):
                return E_ESCAPE
            u += 1
            out[i] = unzigzag(u)
            mean_acc = adapt(mean_acc, u, shift)
            if idx > 0:
                idx -= 1
            prev_zero = 0
            i += 1
            continue
        err = get_value(&r, rice_k(mean_acc, shift), &u)
        if err:
            return err
        out[i] = unzigzag(u)
        mean_acc = adapt(mean_acc, u, shift)
        prev_zero = u == 0
        i += 1
    # The stream must end exactly in its last byte, padded with zero bits.
    if r.bitpos > limit_bits:
        return E_TRUNCATED
    if (r.bitpos + 7) >> 3 != nbytes:
        return E_TAIL
    if r.bitpos & 7 and (buf[nbytes - 1] & ((1 << (8 - (r.bitpos & 7))) - 1)):
        return E_TAIL
    return OK


_ERRORS = {
    E_TRUNCATED: "the bitstream ends before the last sample (truncated)",
    E_UNARY: "a unary code is longer than the escape limit",
    E_ESCAPE: "an escape code holds a value that needs no escape",
    E_RUN: "a zero run overflows the sample count",
    E_TAIL: "bytes or bits are left over after the last sample",
}


def decode(const uint8_t[::1] data, Py_ssize_t n, int shift):
    """Decode ``n`` residuals; ``(array, None)`` or ``(None, reason)`` when the data is bad."""
    cdef Py_ssize_t nbytes = data.shape[0]
    cdef uint8_t[::1] padded = np.zeros(nbytes + PAD, dtype=np.uint8)
    out = np.empty(n, dtype=np.int64)
    cdef int64_t[::1] view = out
    cdef int err
    if nbytes:
        memcpy(&padded[0], &data[0], nbytes)
    with nogil:
        err = decode_loop(&padded[0], nbytes, view, shift)
    if err:
        return None, _ERRORS[err]
    return out, None
