# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False
"""The multichannel linear predictor's loop: every channel's next sample from every channel's
last ``p`` samples, ``W`` (C x C*p, Q16.16) adapted online by normalised LMS.

All arithmetic is integer and exact in int64 (the clamps below bound every product and sum);
a value that drops bits is rounded by the project's one rule, to nearest with ties toward
+infinity: ``rsr(a, 16) = (a + 2**15) >> 16`` and, for a positive divisor ``d``,
``div_round(n, d) = floor(n / d + 1/2)``. docs/predictors.md specifies the loop and
tests/test_mclinear.py holds a plain-Python reference.
"""

from libc.stdint cimport int32_t, int64_t, uint64_t
from libc.stdlib cimport calloc, free

cdef enum:
    SLIM = 16777216            # 2**24: samples entering the history are clamped to +-SLIM
    ELIM = 16777216            # 2**24: errors entering the update are clamped to +-ELIM
    WLIM = 8388608             # 2**23 = 128.0: weights are clamped to +-WLIM
    MAX_INPUTS = 1024          # C*p: |sum W*h| <= 2**10 * 2**23 * 2**24 = 2**57

cdef int64_t DLIM = (<int64_t>1) << 40   # clamp before subtracting a prediction
cdef int64_t PLIM = (<int64_t>1) << 62   # clamp of the last sample before adding a delta


include "_residuals.pxi"


cdef inline int64_t div_round(int64_t n, int64_t d) noexcept nogil:
    """floor(n / d + 1/2) for d > 0 (C division truncates, so floor it first)."""
    cdef int64_t q = n / d
    cdef int64_t r = n - q * d
    if r < 0:
        q -= 1
        r += d
    if r >= d - r:
        q += 1
    return q


def max_inputs():
    """The largest C*p the loop accepts."""
    return MAX_INPUTS


def run(const int64_t[:, ::1] src, int64_t[:, ::1] dst, const int32_t[:, ::1] w0, int order,
        int shift, bint adapt, bint diff, bint decode, int64_t max_error, int64_t lo, int64_t hi):
    """One pass over a (C, n) block from the initial weights ``w0`` (C x C*order).

    Encoding, ``src`` holds samples and ``dst`` receives residuals; decoding, the reverse.
    Lossless (max_error == 0): residual = x - prediction modulo 2**64. With ``diff`` the model
    sees first differences and predicts the next difference, added to the last sample.
    """
    cdef Py_ssize_t channels = src.shape[0], n = src.shape[1]
    cdef Py_ssize_t d = channels * order
    cdef Py_ssize_t c, t, j, k
    cdef int64_t acc, pc, xr, v, err, energy, gain, q
    cdef int64_t scale = (<int64_t>1) << (16 - shift)
    cdef int64_t* hist
    cdef int64_t* w
    cdef int64_t* xnew
    cdef int64_t* last
    cdef int64_t base
    if w0.shape[0] != channels or w0.shape[1] != d:
        raise ValueError("initial weights do not match the block")
    if d > MAX_INPUTS:
        raise ValueError("channels * order is too large")
    if shift < 2 or shift > 16:
        raise ValueError("shift must be in [2, 16]")
    if channels == 0 or n == 0:
        return
    hist = <int64_t*>calloc(d, sizeof(int64_t))
    w = <int64_t*>calloc(channels * d, sizeof(int64_t))
    xnew = <int64_t*>calloc(channels, sizeof(int64_t))
    last = <int64_t*>calloc(channels, sizeof(int64_t))
    if hist == NULL or w == NULL or xnew == NULL or last == NULL:
        free(hist)
        free(w)
        free(xnew)
        free(last)
        raise MemoryError()
    with nogil:
        for c in range(channels):
            for j in range(d):
                w[c * d + j] = clamp64(w0[c, j], -WLIM, WLIM)
        for t in range(n):
            energy = 1
            if adapt:
                for j in range(d):
                    energy += hist[j] * hist[j]
            for c in range(channels):
                acc = 0
                for j in range(d):
                    acc += w[c * d + j] * hist[j]
                pc = (acc + 32768) >> 16
                if diff:
                    pc = clamp64(last[c], -PLIM, PLIM) + pc
                pc = clamp64(pc, lo, hi)
                v = src[c, t]
                if max_error == 0:
                    if decode:
                        xr = <int64_t>(<uint64_t>v + <uint64_t>pc)
                        dst[c, t] = xr
                    else:
                        dst[c, t] = <int64_t>(<uint64_t>v - <uint64_t>pc)
                        xr = v
                elif decode:
                    xr = dequantise(v, pc, max_error, lo, hi)
                    dst[c, t] = xr
                else:
                    xr = quantise(v, pc, max_error, lo, hi, &q)
                    dst[c, t] = q
                if diff:
                    xnew[c] = clamp64(clamp64(xr, -DLIM, DLIM) - clamp64(last[c], -DLIM, DLIM),
                                      -SLIM, SLIM)
                    last[c] = xr
                else:
                    xnew[c] = clamp64(xr, -SLIM, SLIM)
                if adapt:
                    err = clamp64(clamp64(xr, -DLIM, DLIM) - clamp64(pc, -DLIM, DLIM),
                                  -ELIM, ELIM)
                    if err != 0:
                        for j in range(d):
                            gain = div_round(err * hist[j] * scale, energy)
                            w[c * d + j] = clamp64(w[c * d + j] + gain, -WLIM, WLIM)
            for c in range(channels):
                k = c * order
                for j in range(order - 1, 0, -1):
                    hist[k + j] = hist[k + j - 1]
                hist[k] = xnew[c]
    free(hist)
    free(w)
    free(xnew)
    free(last)
