# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False
"""Hot loops of the predictors: fixed polynomial, interpolation, NLMS cascade, TAAF fusion.

All arithmetic is integer. The one rounding rule for a right shift by k of a product or sum is
``rsr(a, k) = (a + 2**(k-1)) >> k`` (round to nearest, ties toward +infinity, arithmetic shift).
Integer divisions (only in step normalisation and softmax) truncate toward zero, as C does.
Residual arithmetic wraps modulo 2**64 so any int64 input round-trips. docs/predictors.md holds
the full specification; the plain-Python reference in tests/test_predictors.py follows it.
"""

from libc.stdint cimport int32_t, int64_t, uint64_t
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memcpy


cdef extern from "_lms_simd.h" nogil:
    # One adaptive stage: see the struct's comments in the header.
    ctypedef struct Stage "qres_stage":
        int32_t n
        int32_t shift
        int32_t pos
        int32_t cap
        int32_t nlms
        int32_t* w
        int32_t* hist
        int32_t* dirs
        int64_t level
        int64_t pred
        int64_t count
    int qres_lms_use_avx2
    void qres_lms_init()
    int64_t qres_stages_update(Stage* s, int nst, int64_t e)
    void qres_cascade_lossless(Stage* s, int nst, const int64_t* src, int64_t* dst, int64_t n,
                               int fixed_order, int bias_shift, int decode, int64_t lo,
                               int64_t hi)

qres_lms_init()


def simd(enabled=None):
    """Whether the LMS tap loops run their AVX2 version (chosen at import from the CPU).

    ``simd(False)`` switches to the portable version and ``simd(True)`` back, if the CPU has
    AVX2, so tests can check that both give the same bits; returns the setting now in use."""
    global qres_lms_use_avx2
    if enabled is not None:
        qres_lms_init()
        if not enabled:
            qres_lms_use_avx2 = 0
    return bool(qres_lms_use_avx2)


cdef enum:
    # History values entering an adaptive stage are clamped to +-VLIM and weights to +-WLIM, so
    # a dot product of MAX_TAPS terms stays below 2**62 and never overflows int64.
    VLIM = 1073741823          # 2**30 - 1
    WLIM = 8388608             # 2**23 (128.0 in Q16.16)
    MAX_TAPS = 512
    MAX_CROSS = 32
    LEVEL_SHIFT = 4            # running mean |input| forgets with weight 2**-4
    TLIM = 1048575             # 2**20 - 1: clamp of innovations fed to the TAAF trackers
    SCORE_MAX = 4096           # attention scores saturate at variance ratio 16 (Q8)
    MIN_SLIDE = 16             # history buffers slide (memmove) at most every 16 samples


cdef inline int64_t rsr(int64_t a, int k) noexcept nogil:
    """Round-to-nearest (ties toward +inf) arithmetic right shift by k >= 1."""
    return (a + ((<int64_t>1) << (k - 1))) >> k


include "_residuals.pxi"


cdef inline int64_t iabs64(int64_t v) noexcept nogil:
    return -v if v < 0 else v


cdef inline int64_t wsub(int64_t a, int64_t b) noexcept nogil:
    """a - b modulo 2**64 (no signed-overflow undefined behaviour)."""
    return <int64_t>(<uint64_t>a - <uint64_t>b)


cdef inline int64_t wadd(int64_t a, int64_t b) noexcept nogil:
    return <int64_t>(<uint64_t>a + <uint64_t>b)


cdef inline int64_t fixed_pred(int64_t* xh, int order) noexcept nogil:
    """FLAC fixed predictor of the given order from xh[0]=x[t-1], xh[1]=x[t-2], ... (wrapping)."""
    cdef uint64_t a = <uint64_t>xh[0]
    cdef uint64_t b = <uint64_t>xh[1]
    cdef uint64_t c = <uint64_t>xh[2]
    cdef uint64_t d = <uint64_t>xh[3]
    if order == 0:
        return 0
    if order == 1:
        return <int64_t>a
    if order == 2:
        return <int64_t>(2 * a - b)
    if order == 3:
        return <int64_t>(3 * a - 3 * b + c)
    return <int64_t>(4 * a - 6 * b + 4 * c - d)


cdef inline void push_x(int64_t* xh, int64_t x) noexcept nogil:
    xh[3] = xh[2]
    xh[2] = xh[1]
    xh[1] = xh[0]
    xh[0] = x


cdef inline int64_t code_sample(int64_t v, int64_t pc, bint decode, int64_t e, int64_t lo,
                                int64_t hi, int64_t* out) noexcept nogil:
    """One sample through the residual map; returns the value the predictor continues on.

    Encoding, ``v`` is the sample and ``out`` receives the residual; decoding, ``v`` is the
    residual and ``out`` receives the sample. Lossless (e == 0): residual = v - pc modulo 2**64.
    """
    cdef int64_t q, xr
    if e == 0:
        if decode:
            xr = wadd(v, pc)
            out[0] = xr
            return xr
        out[0] = wsub(v, pc)
        return v
    if decode:
        xr = dequantise(v, pc, e, lo, hi)
        out[0] = xr
        return xr
    xr = quantise(v, pc, e, lo, hi, &q)
    out[0] = q
    return xr


cdef inline int64_t pred_at(const int64_t* x, Py_ssize_t t, int order) noexcept nogil:
    """fixed_pred of the given order (<= t) from the samples x[t - 1], x[t - 2], ..."""
    cdef uint64_t a, b, c, d
    if order == 0:
        return 0
    a = <uint64_t>x[t - 1]
    if order == 1:
        return <int64_t>a
    b = <uint64_t>x[t - 2]
    if order == 2:
        return <int64_t>(2 * a - b)
    c = <uint64_t>x[t - 3]
    if order == 3:
        return <int64_t>(3 * a - 3 * b + c)
    d = <uint64_t>x[t - 4]
    return <int64_t>(4 * a - 6 * b + 4 * c - d)


cdef inline void polynomial_residuals(const int64_t* x, int64_t* r, Py_ssize_t n, int order,
                                      int64_t lo, int64_t hi) noexcept nogil:
    """Lossless encoding: the predictor runs on the samples themselves, so each residual is
    a function of the input alone and the loop carries no reconstruction from sample to
    sample. One loop per order (a constant there) after the first ``order`` samples."""
    cdef Py_ssize_t t, head = order if order < n else n
    for t in range(head):
        r[t] = wsub(x[t], clamp64(pred_at(x, t, <int>t), lo, hi))
    if order == 0:
        for t in range(head, n):
            r[t] = wsub(x[t], clamp64(0, lo, hi))
    elif order == 1:
        for t in range(head, n):
            r[t] = wsub(x[t], clamp64(pred_at(x, t, 1), lo, hi))
    elif order == 2:
        for t in range(head, n):
            r[t] = wsub(x[t], clamp64(pred_at(x, t, 2), lo, hi))
    elif order == 3:
        for t in range(head, n):
            r[t] = wsub(x[t], clamp64(pred_at(x, t, 3), lo, hi))
    else:
        for t in range(head, n):
            r[t] = wsub(x[t], clamp64(pred_at(x, t, 4), lo, hi))


def polynomial(const int64_t[:, ::1] src, int64_t[:, ::1] dst, int order, bint decode,
               int64_t max_error, int64_t lo, int64_t hi):
    """Fixed polynomial predictor of ``order`` (0..4); sample t uses order min(order, t)."""
    cdef Py_ssize_t channels = src.shape[0], n = src.shape[1], c, t
    cdef int64_t xh[4]
    cdef int64_t pc, xr
    if not decode and max_error == 0 and n > 0 and 0 <= order <= 4:
        with nogil:
            for c in range(channels):
                polynomial_residuals(&src[c, 0], &dst[c, 0], n, order, lo, hi)
        return
    with nogil:
        for c in range(channels):
            xh[0] = 0
            xh[1] = 0
            xh[2] = 0
            xh[3] = 0
            for t in range(n):
                pc = clamp64(fixed_pred(xh, order if t >= order else <int>t), lo, hi)
                xr = code_sample(src[c, t], pc, decode, max_error, lo, hi, &dst[c, t])
                push_x(xh, xr)


# ----------------------------------------------------------------------------- interpolation

cdef inline int64_t interp_pred(const int64_t* xr, Py_ssize_t t, Py_ssize_t s, Py_ssize_t n,
                                bint cubic) noexcept nogil:
    """Prediction of x[t] (t an odd multiple of s) from reconstructions at t +- s, t +- 3s.

    Linear: rsr(L + R, 1); cubic (when t - 3s and t + 3s exist): rsr(9(L + R) - LL - RR, 4);
    without a right neighbour: L. Sums wrap modulo 2**64 (only int64-extreme data wraps).
    """
    cdef uint64_t left = <uint64_t>xr[t - s], right, acc
    if t + s >= n:
        return <int64_t>left
    right = <uint64_t>xr[t + s]
    if cubic and t >= 3 * s and t + 3 * s < n:
        acc = 9 * (left + right) - <uint64_t>xr[t - 3 * s] - <uint64_t>xr[t + 3 * s]
        return rsr(<int64_t>acc, 4)
    return rsr(<int64_t>(left + right), 1)


cdef inline int64_t level_proxy(const int64_t[:, ::1] src, const int64_t* xr, Py_ssize_t channels,
                                Py_ssize_t n, Py_ssize_t s, bint cubic, int64_t e, int64_t lo,
                                int64_t hi) noexcept nogil:
    """Cost estimate of coding one level with one interpolator: per residual q, 0 for a zero,
    else 2 + 2 * bitlen(|q|) (a stand-in for the coder's bits, compared between kinds)."""
    cdef Py_ssize_t c, t
    cdef int64_t pc, q, total = 0
    cdef uint64_t mag
    for c in range(channels):
        t = s
        while t < n:
            pc = clamp64(interp_pred(xr + c * n, t, s, n, cubic), lo, hi)
            if e == 0:
                q = wsub(src[c, t], pc)
            else:
                quantise(src[c, t], pc, e, lo, hi, &q)
            if q != 0:
                mag = <uint64_t>0 - <uint64_t>q if q < 0 else <uint64_t>q
                total += 2
                while mag:
                    total += 2
                    mag >>= 1
            t += 2 * s
    return total


def interpolate(const int64_t[:, ::1] src, int64_t[:, ::1] dst, int64_t cubic_levels,
                int anchor_shift, bint decode, int64_t max_error, int64_t lo, int64_t hi,
                bint choose=False):
    """Multilevel interpolation: anchors every 2**anchor_shift samples (each predicted by the
    previous one), then the odd multiples of each stride 2**(anchor_shift-1), ..., 1, predicted
    from reconstructed neighbours on both sides; the level of stride 2**k is cubic if bit k of
    ``cubic_levels`` is set, else linear. Residuals are stored in that coding order.

    With ``choose`` (encoding only) each level's kind is instead the one with the smaller
    :func:`level_proxy` summed over the channels (cubic on a tie), and the function returns
    the bitmask of cubic levels it chose; otherwise it returns ``cubic_levels``."""
    cdef Py_ssize_t channels = src.shape[0], n = src.shape[1], c, t, k, k0, s
    cdef Py_ssize_t stride
    cdef int64_t pc, prev, v, used = 0
    cdef int level
    cdef bint cubic
    if anchor_shift < 0 or anchor_shift > 30:
        raise ValueError("anchor_shift must be in [0, 30]")
    if choose and decode:
        raise ValueError("choose is for encoding only")
    stride = (<Py_ssize_t>1) << anchor_shift
    if channels == 0 or n == 0:
        return 0 if choose else cubic_levels
    cdef int64_t* xr = <int64_t*>malloc(channels * n * sizeof(int64_t))
    if xr == NULL:
        raise MemoryError()
    with nogil:
        k0 = 0
        for c in range(channels):
            k = 0
            prev = 0
            t = 0
            while t < n:
                pc = clamp64(prev, lo, hi)
                v = src[c, k] if decode else src[c, t]
                prev = code_sample(v, pc, decode, max_error, lo, hi, &dst[c, k])
                xr[c * n + t] = prev
                k += 1
                t += stride
            k0 = k
        s = stride >> 1
        level = anchor_shift - 1
        while s >= 1:
            if choose:
                cubic = level_proxy(src, xr, channels, n, s, True, max_error, lo, hi) <= \
                    level_proxy(src, xr, channels, n, s, False, max_error, lo, hi)
            else:
                cubic = (cubic_levels >> level) & 1
            if cubic:
                used |= (<int64_t>1) << level
            for c in range(channels):
                k = k0
                t = s
                while t < n:
                    pc = clamp64(interp_pred(xr + c * n, t, s, n, cubic), lo, hi)
                    v = src[c, k] if decode else src[c, t]
                    xr[c * n + t] = code_sample(v, pc, decode, max_error, lo, hi, &dst[c, k])
                    k += 1
                    t += 2 * s
            k0 = k
            s >>= 1
            level -= 1
        if decode:
            for c in range(channels):
                memcpy(&dst[c, 0], xr + c * n, n * sizeof(int64_t))
    free(xr)
    return used if choose else cubic_levels


# ----------------------------------------------------------------------------- LMS stages

cdef inline int32_t direction(int64_t v, int64_t level, int shift) noexcept nogil:
    """Normalised step of one input: v / (level + 1) * 2**(16 - shift), clamped to 4x."""
    cdef int64_t lim = (<int64_t>4) << (16 - shift)
    cdef int64_t d = (v * ((<int64_t>1) << (32 - shift))) // (level + 65536)
    return <int32_t>clamp64(d, -lim, lim)


cdef inline int32_t stage_cap(int32_t n) noexcept nogil:
    return n + (n if n > MIN_SLIDE else MIN_SLIDE)


# ----------------------------------------------------------------------------- TAAF

cdef struct Tracker:
    # Exponentially weighted Welford trackers of a channel's innovation (Q8 mean and variance)
    int64_t mean_s
    int64_t var_s
    int64_t mean_l
    int64_t var_l
    int64_t level       # running mean |innovation|, Q16
    int64_t latest      # latest innovation, clamped to +-VLIM


cdef inline void welford(int64_t* mean, int64_t* var, int64_t u8, int k) noexcept nogil:
    cdef int64_t old = mean[0]
    mean[0] += rsr(u8 - old, k)
    var[0] += rsr(rsr((u8 - old) * (u8 - mean[0]), 8) - var[0], k)


cdef inline int64_t exp2_neg_q16(int64_t y) noexcept nogil:
    """2**(-y/256) in Q16 for y >= 0 (Q8): a quadratic on the fraction, a shift for the rest."""
    cdef int64_t ip = y >> 8, f = y & 255
    if ip >= 17:
        return 0
    return (65536 - rsr(43025 * f, 8) + rsr(10257 * f * f, 16)) >> ip


cdef inline int64_t fused_signal(Tracker* tr, int channels, int c, int64_t spike_q8,
                                 int64_t* att) noexcept nogil:
    """Attention-weighted sum of the other channels' latest innovations, in channel c's scale."""
    cdef int j
    cdef int64_t ratio, best = -1, total = 0, f = 0, u, scale_c, scale_j
    for j in range(channels):
        att[j] = -1
        if j == c:
            continue
        ratio = ((tr[j].var_s) << 8) // (tr[j].var_l + 1)
        if ratio > spike_q8:
            att[j] = ratio if ratio < SCORE_MAX else SCORE_MAX
            if att[j] > best:
                best = att[j]
    if best < 0:
        return 0
    for j in range(channels):
        if att[j] >= 0:
            att[j] = exp2_neg_q16(best - att[j])
            total += att[j]
    scale_c = tr[c].level >> 8
    for j in range(channels):
        if att[j] >= 0:
            scale_j = (tr[j].level >> 8) + 1
            u = clamp64(tr[j].latest, -TLIM, TLIM) * scale_c // scale_j
            u = clamp64(u, -VLIM, VLIM)
            f += ((att[j] << 16) + total // 2) // total * u
    return clamp64(rsr(f, 16), -VLIM, VLIM)


cdef struct Channel:
    int64_t xh[4]
    int64_t t
    int64_t bias        # Q16 running mean of the bias stage input
    int32_t* tw         # TAAF weights: cross inputs then the fused input, Q16.16
    int64_t* tu         # TAAF inputs of the current sample
    int32_t* td         # their update directions
    int64_t flevel      # running mean |fused|, Q16
    int64_t tpred


cdef struct CascadeSpec:
    # The cascade's settings as the loop reads them (see CascadeParams).
    int fixed_order     # order of the polynomial first stage, 0..4
    bint nlms           # normalised (True) or sign-sign (False) stage updates
    int bias_shift      # forgetting shift of the bias stage; 0 turns it off
    bint taaf           # run the cross-channel TAAF stage
    int cross           # cross-channel inputs of the TAAF stage, 0..MAX_CROSS
    int taaf_shift      # step shift of the TAAF stage
    int short_shift     # forgetting shifts of the short- and long-term innovation trackers
    int long_shift
    int64_t spike_q8    # short/long variance ratio (Q8) above which a channel is spiking


cdef class CascadeParams:
    """The settings of one NLMS cascade (and its optional TAAF stage), checked and packed once.

    Built by the ``nlms`` and ``taaf`` predictors from their attrs configs and handed to
    :func:`cascade` whole, instead of a dozen positional numbers. The TAAF fields keep their
    neutral defaults when ``taaf`` is false (the loop never reads them then).
    """

    cdef CascadeSpec spec
    cdef readonly object taps
    cdef readonly object shifts

    def __init__(self, *, taps, shifts, int fixed_order, bint nlms, int bias_shift,
                 bint taaf=False, int cross=0, int taaf_shift=1, int short_shift=1,
                 int long_shift=1, int64_t spike_q8=0):
        import numpy as np

        t = np.ascontiguousarray(taps, dtype=np.int32)
        sh = np.ascontiguousarray(shifts, dtype=np.int32)
        if t.ndim != 1 or t.shape[0] < 1 or sh.shape != t.shape:
            raise ValueError("taps and shifts must be two 1-D lists of the same length >= 1")
        if (t < 1).any() or (t > MAX_TAPS).any() or (sh < 1).any() or (sh > 16).any():
            raise ValueError("stage taps must be in [1, 512] and shifts in [1, 16]")
        if fixed_order < 0 or fixed_order > 4:
            raise ValueError("fixed_order must be in [0, 4]")
        if bias_shift < 0 or bias_shift > 16:
            raise ValueError("bias_shift must be in [0, 16]")
        if cross < 0 or cross > MAX_CROSS:
            raise ValueError("cross must be in [0, 32]")
        for name, value, top in (("taaf_shift", taaf_shift, 16), ("short_shift", short_shift, 16),
                                 ("long_shift", long_shift, 24)):
            if value < 1 or value > top:
                raise ValueError(f"{name} must be in [1, {top}]")
        t.flags.writeable = False
        sh.flags.writeable = False
        self.taps, self.shifts = t, sh
        self.spec.fixed_order = fixed_order
        self.spec.nlms = nlms
        self.spec.bias_shift = bias_shift
        self.spec.taaf = taaf
        self.spec.cross = cross
        self.spec.taaf_shift = taaf_shift
        self.spec.short_shift = short_shift
        self.spec.long_shift = long_shift
        self.spec.spike_q8 = spike_q8

    @property
    def weight_count(self):
        """Initial weights :func:`cascade` expects: every stage's taps, then the TAAF stage's."""
        return int(self.taps.sum()) + (self.spec.cross + 1 if self.spec.taaf else 0)


def cascade(const int64_t[:, ::1] src, int64_t[:, ::1] dst, bint decode,
            CascadeParams params not None, const int32_t[::1] weights, int64_t max_error,
            int64_t lo, int64_t hi):
    """Run the NLMS cascade (and the TAAF stage if ``params`` asks) over a block; see the docs."""
    cdef CascadeSpec sp = params.spec
    cdef const int32_t[::1] taps = params.taps
    cdef const int32_t[::1] shifts = params.shifts
    # Locals with the loop's names, so the nogil loop below reads plain C variables.
    cdef int fixed_order = sp.fixed_order, bias_shift = sp.bias_shift, cross = sp.cross
    cdef int taaf_shift = sp.taaf_shift, short_shift = sp.short_shift, long_shift = sp.long_shift
    cdef bint nlms = sp.nlms, taaf = sp.taaf
    cdef int64_t spike_q8 = sp.spike_q8
    cdef Py_ssize_t channels = src.shape[0], n = src.shape[1], t
    cdef int nst = taps.shape[0], k, c, i, j, m, nin
    cdef Py_ssize_t wtotal = 0, buf_len = 0
    for k in range(nst):
        wtotal += taps[k]
        buf_len += taps[k] + 2 * stage_cap(taps[k])
    if weights.shape[0] != wtotal + (cross + 1 if taaf else 0):
        raise ValueError("initial weights have the wrong length")
    if channels == 0 or n == 0:
        return
    cdef Stage* stages = <Stage*>calloc(channels * max(nst, 1), sizeof(Stage))
    cdef Channel* chans = <Channel*>calloc(channels, sizeof(Channel))
    cdef Tracker* tr = <Tracker*>calloc(channels, sizeof(Tracker))
    cdef int64_t* att = <int64_t*>calloc(channels, sizeof(int64_t))
    cdef int32_t* pool = <int32_t*>calloc(channels * (buf_len + 2 * (cross + 1)) + 1,
                                          sizeof(int32_t))
    cdef int64_t* upool = <int64_t*>calloc(channels * (cross + 1) + 1, sizeof(int64_t))
    if not stages or not chans or not tr or not att or not pool or not upool:
        free(stages); free(chans); free(tr); free(att); free(pool); free(upool)
        raise MemoryError()
    cdef int32_t* p = pool
    cdef Stage* s
    cdef Channel* ch
    cdef Py_ssize_t woff
    for c in range(channels):
        woff = 0
        for k in range(nst):
            s = &stages[c * nst + k]
            s.n = taps[k]
            s.shift = shifts[k]
            s.nlms = nlms
            s.cap = stage_cap(s.n)
            s.pos = s.n
            s.w = p
            p += s.n
            memcpy(s.w, &weights[woff], s.n * sizeof(int32_t))
            woff += s.n
            s.hist = p
            p += s.cap
            s.dirs = p
            p += s.cap
        ch = &chans[c]
        ch.tw = p
        p += cross + 1
        ch.td = p
        p += cross + 1
        ch.tu = upool + c * (cross + 1)
        if taaf:
            memcpy(ch.tw, &weights[wtotal], (cross + 1) * sizeof(int32_t))

    cdef int64_t fp, pred, pc, e, e_out, xr, acc, inno
    if not taaf and max_error == 0:
        # Channels independent and the residual map a subtraction: one native loop per channel.
        with nogil:
            for c in range(channels):
                qres_cascade_lossless(&stages[c * nst], nst, &src[c, 0], &dst[c, 0], n,
                                      fixed_order, bias_shift, decode, lo, hi)
        free(stages); free(chans); free(tr); free(att); free(pool); free(upool)
        return
    with nogil:
        for t in range(n):
            for c in range(channels):
                ch = &chans[c]
                s = &stages[c * nst]
                # 1. predictions of every stage, from history only
                fp = fixed_pred(ch.xh, fixed_order if t >= fixed_order else <int>t)
                pred = fp
                for k in range(nst):
                    # each stage's prediction from its current window, made by its last update
                    pred = wadd(pred, s[k].pred)
                m = c if c < cross else cross
                nin = 0
                if taaf:
                    for i in range(m):
                        j = c - 1 - i
                        ch.tu[i] = tr[j].latest
                        ch.td[i] = direction(tr[j].latest, tr[j].level, taaf_shift)
                    ch.tu[m] = fused_signal(tr, <int>channels, c, spike_q8, att)
                    ch.td[m] = direction(ch.tu[m], ch.flevel, taaf_shift)
                    acc = 0
                    for i in range(m):
                        acc += <int64_t>ch.tw[i] * ch.tu[i]
                    acc += <int64_t>ch.tw[cross] * ch.tu[m]
                    ch.tpred = rsr(acc, 16)
                    pred = wadd(pred, ch.tpred)
                if bias_shift:
                    pred = wadd(pred, rsr(ch.bias, 16))
                pc = clamp64(pred, lo, hi)
                # 2. the residual map; xr is the value every stage learns from
                xr = code_sample(src[c, t], pc, decode, max_error, lo, hi, &dst[c, t])
                # 3. updates, in stage order, each on its own input and output
                e = qres_stages_update(s, nst, wsub(xr, fp))
                if taaf:
                    inno = clamp64(e, -VLIM, VLIM)
                    e_out = wsub(e, ch.tpred)
                    if e_out != 0:
                        for i in range(m):
                            ch.tw[i] = <int32_t>clamp64(
                                ch.tw[i] + (ch.td[i] if e_out > 0 else -ch.td[i]), -WLIM, WLIM)
                        ch.tw[cross] = <int32_t>clamp64(
                            ch.tw[cross] + (ch.td[m] if e_out > 0 else -ch.td[m]), -WLIM, WLIM)
                    ch.flevel += rsr(iabs64(ch.tu[m]) * 65536 - ch.flevel, LEVEL_SHIFT)
                    tr[c].latest = inno
                    tr[c].level += rsr(iabs64(inno) * 65536 - tr[c].level, LEVEL_SHIFT)
                    welford(&tr[c].mean_s, &tr[c].var_s, clamp64(inno, -TLIM, TLIM) * 256,
                            short_shift)
                    welford(&tr[c].mean_l, &tr[c].var_l, clamp64(inno, -TLIM, TLIM) * 256,
                            long_shift)
                    e = e_out
                if bias_shift:
                    ch.bias += rsr(clamp64(e, -VLIM, VLIM) * 65536 - ch.bias, bias_shift)
                push_x(ch.xh, xr)
    free(stages)
    free(chans)
    free(tr)
    free(att)
    free(pool)
    free(upool)
