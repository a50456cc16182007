# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False
# distutils: language = c++
"""Compiled lattice search of the float mapping (see qres/codec/mapping.py and docs/mapping.md).

The encoder looks for ~200 lattice segments per block; each look is a handful of short
loops over a window of samples, where numpy spent its time in per-call overhead. These loops do
the same IEEE-754 double operations as the numpy formulation they replace, in the same order
(elementwise ops, left-to-right sums, ``rint`` = round half to even), so the segments found and
the codec's bytes are the same on every machine. The module must be compiled without fused
multiply-add contraction (``-ffp-contract=off``) and without ``-ffast-math``: either would
change float results. The numpy reference in tests/test_mapping.py checks them bit for bit.
"""

from libc.math cimport copysign, fabs, fmod, frexp, isfinite, isinf, rint, sqrt, trunc
from cython cimport floating
from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc, realloc
from libc.string cimport memcpy, memmove
from libcpp.algorithm cimport merge, nth_element, sort

cdef enum:
    NO_ROUNDING = 16  # precision meaning "no rounding to significant digits"
    MAX_DIGITS = 17   # round_P counts digits against 10**0 .. 10**16

# The lattice search thresholds, as in qres/codec/mapping.py (which passes none of them: they are
# part of the format's encoder behaviour and must match the numpy reference).
cdef double MIN_STEP_QUANTA = 4.0
cdef double MAX_CONFLICTS = 0.02

cdef double POW10[23]
for _j in range(23):
    POW10[_j] = 10.0 ** _j  # all exact in float64


# -- scalar helpers ------------------------------------------------------------------------------


cdef inline double quantum(double v, int precision) noexcept nogil:
    """The rounding quantum of round_P at ``v``: 10**max(digits - P, 0), where digits counts
    the powers 10**0..10**16 not above |v| (NaN counts as above all, as numpy sorts it)."""
    cdef double m = fabs(v)
    cdef int digits, e, d
    cdef uint64_t bits
    if precision >= NO_ROUNDING:
        return 1.0
    if m < 1.0:
        digits = 0
    elif m >= 1e16 or m != m:
        digits = MAX_DIGITS
    else:
        # m in [2**e, 2**(e+1)) with 0 <= e <= 53 (read from the exponent bits: m is normal);
        # d = floor(e * log10(2)) (exact in this range), so 10**d <= m < 10**(d+2): one
        # comparison settles the digit count.
        memcpy(&bits, &m, sizeof(double))
        e = <int>((bits >> 52) & 0x7FF) - 1023
        d = (e * 1233) >> 12
        digits = d + 1 + (POW10[d + 1] <= m)
    digits -= precision
    return POW10[digits if digits > 0 else 0]


cdef inline double round_significant(double t, int precision) noexcept nogil:
    """``t`` rounded half-even to ``precision`` significant digits."""
    cdef double q
    if precision >= NO_ROUNDING:
        return rint(t)
    q = quantum(t, precision)
    return rint(t / q) * q


cdef inline bint reproduced(double k, double a, double b, int precision) noexcept nogil:
    """Whether the lattice ``(a, b)`` reproduces the decimal ``k`` exactly."""
    return round_significant(a + b * rint((k - a) / b), precision) == k


cdef inline double py_max(double x, double y) noexcept nogil:
    """Python's ``max(x, y)`` (the first unless the second is larger)."""
    return y if y > x else x


cdef inline double py_mod(double x, double y) noexcept nogil:
    """Python's float ``x % y`` (the sign of the divisor)."""
    cdef double r = fmod(x, y)
    if r != 0:
        if (y < 0) != (r < 0):
            r += y
    else:
        r = copysign(0.0, y)
    return r


cdef inline int64_t gcd_abs(int64_t g, int64_t d) noexcept nogil:
    """gcd(g, |d|) for g >= 0 (Euclid; gcd(0, d) = |d|)."""
    cdef int64_t t
    if d < 0:
        d = -d
    while d:
        t = g % d
        g = d
        d = t
    return g


cdef Py_ssize_t sorted_unique(double* buf, Py_ssize_t n) noexcept nogil:
    """Sort ``buf`` in place and move its distinct values to the front; return their count.
    The values are finite decimal integers without -0.0, so the order is total and the sorted
    array is the same whatever the sort algorithm (std::sort, which inlines the comparisons)."""
    if n == 0:
        return 0
    sort(buf, buf + n)
    return unique_run(buf, n)


cdef Py_ssize_t unique_run(double* buf, Py_ssize_t n) noexcept nogil:
    """Move the distinct values of the sorted ``buf`` to its front; return their count."""
    cdef Py_ssize_t i, count = 0
    if n == 0:
        return 0
    count = 1
    for i in range(1, n):
        if buf[i] != buf[count - 1]:
            buf[count] = buf[i]
            count += 1
    return count


cdef inline Py_ssize_t keep_smallest(double* kept, Py_ssize_t count, Py_ssize_t most,
                                     double v) noexcept nogil:
    """Insert ``v`` into the ascending distinct ``kept`` (``count`` of at most ``most``) when
    it is new and among the ``most`` smallest: the new count."""
    cdef Py_ssize_t i = count
    while i > 0 and kept[i - 1] > v:
        i -= 1
    if i > 0 and kept[i - 1] == v:
        return count
    if i >= most:
        return count
    if count == most:
        count -= 1  # the largest drops out
    memmove(kept + i + 1, kept + i, (count - i) * sizeof(double))
    kept[i] = v
    return count + 1


cdef double approx_gcd(double x, double y, double tol) noexcept nogil:
    """Euclid's algorithm on reals: the largest step both are (nearly) multiples of."""
    cdef double hi = py_max(x, y)
    cdef double lo = y if y < x else x
    cdef int it
    for it in range(64):
        if lo <= tol:
            break
        hi, lo = lo, fabs(hi - lo * rint(hi / lo))
    return hi


# -- step refinement -----------------------------------------------------------------------------


cdef double refine_step(const double* gaps, const double* tol, Py_ssize_t n, double step,
                        double* err_out, char* conflicts) noexcept nogil:
    """Improve ``step`` from the gaps it explains; see qres.codec.mapping._refine_step. Writes the
    step's uncertainty to ``err_out`` and marks the gaps that contradict it in ``conflicts``."""
    cdef double err = tol[0], trusted_m, total_m, total_gaps, total_tol, new, m, m_max
    cdef double entered_err
    cdef bint fits, use, prev_use, m_nan, done, fixed
    cdef Py_ssize_t i
    cdef int it
    for i in range(1, n):
        if tol[i] > err:
            err = tol[i]
    for it in range(16):
        trusted_m = py_max(1.0, 0.25 * step / err)
        total_m = 0.0
        total_gaps = 0.0
        total_tol = 0.0
        prev_use = False
        m_max = 0.0
        m_nan = False
        for i in range(n):
            m = rint(gaps[i] / step)
            if m != m:
                m_nan = True
            elif i == 0 or m > m_max:
                m_max = m
            fits = m >= 1 and fabs(gaps[i] - m * step) <= tol[i] + m * err
            conflicts[i] = not fits
            use = fits and m <= trusted_m
            if use:
                total_m += m
                total_gaps += gaps[i]
                if not prev_use:
                    total_tol += tol[i]
            prev_use = use
        if total_m <= 0:
            err_out[0] = err
            return step
        new = total_gaps / total_m
        entered_err = err
        err = py_max(total_tol / total_m, fabs(new) * 1e-15)
        done = fabs(new - step) <= 1e-13 * step and not m_nan and trusted_m >= m_max
        # A fixed point (the same step and uncertainty as this round started with): every
        # remaining round would repeat this one exactly, so the result is already here.
        fixed = new == step and err == entered_err
        step = new
        if done or fixed:
            break
    for i in range(n):
        m = rint(gaps[i] / step)
        conflicts[i] = not (m >= 1 and fabs(gaps[i] - m * step) <= tol[i] + m * err)
    err_out[0] = err
    return step


cdef int lattice_step_core(const double* values, Py_ssize_t n, int precision, double* step_out,
                           double* err_out, bint presorted) noexcept nogil:
    """The coarsest lattice step the distinct ``values`` (in ascending order when
    ``presorted``) sit on and its uncertainty: 1 when found (written to ``step_out`` and
    ``err_out``), 0 when none, -1 when out of memory."""
    cdef Py_ssize_t count, gap_count, i, seed_count, bad_count, first_bad
    cdef double* u = <double*>malloc((4 * n + 1) * sizeof(double))
    cdef double* gaps = u + n
    cdef double* tol = gaps + n
    cdef double* seeds = tol + n
    cdef char* conflicts = <char*>malloc(n + 1)
    cdef double step = 0.0, err = 0.0, tol_min, g, floor_, q_prev, q, entered
    cdef Py_ssize_t close, s
    cdef int it
    cdef bint found = False
    if u == NULL or conflicts == NULL:
        free(u)
        free(conflicts)
        return -1
    for i in range(n):
        u[i] = values[i]
    count = unique_run(u, n) if presorted else sorted_unique(u, n)
    if count < 3:
        free(u)
        free(conflicts)
        return 0
    gap_count = count - 1
    close = 0
    q_prev = quantum(u[0], precision)
    tol_min = 0.0
    for i in range(gap_count):
        q = quantum(u[i + 1], precision)
        tol[i] = py_max(q, q_prev)
        q_prev = q
        gaps[i] = u[i + 1] - u[i]
        if gaps[i] < 2 * tol[i]:
            close += 1
        if i == 0 or tol[i] < tol_min:
            tol_min = tol[i]
    if close > MAX_CONFLICTS * gap_count:
        free(u)
        free(conflicts)
        return 0
    # The seeds: the three smallest distinct gaps of at least four quanta (one pass, where
    # sorting all the gaps would order them only to read the first three).
    seed_count = 0
    for i in range(gap_count):
        if gaps[i] >= MIN_STEP_QUANTA * tol[i]:
            seed_count = keep_smallest(seeds, seed_count, 3, gaps[i])
    for s in range(seed_count if seed_count < 3 else 3):
        step = seeds[s]
        for it in range(8):
            entered = step
            step = refine_step(gaps, tol, gap_count, step, &err, conflicts)
            bad_count = 0
            for i in range(gap_count):
                bad_count += conflicts[i]
            if step < MIN_STEP_QUANTA * tol_min:
                break
            if bad_count <= MAX_CONFLICTS * gap_count:
                found = True
                break
            first_bad = 0
            while not conflicts[first_bad]:
                first_bad += 1
            g = gaps[first_bad]
            floor_ = MIN_STEP_QUANTA * tol[first_bad]
            step = approx_gcd(step, fabs(g - step * rint(g / step)), floor_ / 2)
            if step < floor_:
                break
            if step == entered:
                break  # a fixed point: the remaining rounds would repeat this one exactly
        if found:
            break
    free(u)
    free(conflicts)
    step_out[0] = step
    err_out[0] = err
    return 1 if found else 0


def lattice_step(const double[:] values, int precision):
    """The coarsest lattice step the distinct ``values`` sit on (up to rounding to
    ``precision`` digits and a few outliers) and its uncertainty, or None; the compiled
    ``qres.codec.mapping._lattice_step``."""
    import numpy as np

    cdef const double[::1] v = np.ascontiguousarray(values, dtype=np.float64)
    cdef double step, err
    cdef int found
    with nogil:
        found = lattice_step_core(&v[0] if v.shape[0] else NULL, v.shape[0], precision, &step,
                                  &err, False)
    if found < 0:
        raise MemoryError("lattice search: out of memory")
    return (step, err) if found else None


# -- least-squares fit ---------------------------------------------------------------------------


cdef Py_ssize_t count_shifted(const double* du, Py_ssize_t n, double ref, double a, double b,
                              int precision) noexcept nogil:
    """How many of the decimals ``du[i] + ref`` the lattice ``(a + ref, b)`` reproduces."""
    cdef Py_ssize_t i, got = 0
    cdef double shifted = a + ref
    for i in range(n):
        got += reproduced(du[i] + ref, shifted, b, precision)
    return got


cdef void center(const double* du, const double* quanta, Py_ssize_t count, double* a_io,
                 double* step_io, double ref, int precision, double* scratch) noexcept nogil:
    """Move ``(a, step)`` into the middle of the region where every value's rounding interval
    holds its lattice point; see qres.codec.mapping._center. ``scratch`` holds 3 * count doubles."""
    cdef double a = a_io[0], step = step_io[0], a_new, step_new, lo_j, hi_i, v, m
    cdef double* ns = scratch
    cdef double* ys = scratch + count
    cdef double* half = scratch + 2 * count
    cdef Py_ssize_t i, j, k, size = 0, wanted, got
    cdef int it
    for i in range(count):
        m = rint((du[i] - a) / step)
        if fabs(du[i] - a - m * step) <= quanta[i]:
            ns[size] = m
            ys[size] = du[i]
            half[size] = quanta[i] / 2
            size += 1
    if size < 2:
        return
    wanted = count_shifted(du, count, ref, a, step, precision)
    if wanted == count:
        return
    a_new = a
    step_new = step
    for it in range(8):
        # j: the first largest lower bound, i: the first smallest upper bound.
        j = 0
        i = 0
        lo_j = ys[0] - half[0] - step_new * ns[0]
        hi_i = ys[0] + half[0] - step_new * ns[0]
        for k in range(1, size):
            v = ys[k] - half[k] - step_new * ns[k]
            if v > lo_j:
                lo_j = v
                j = k
            v = ys[k] + half[k] - step_new * ns[k]
            if v < hi_i:
                hi_i = v
                i = k
        if lo_j <= hi_i:
            a_new = 0.5 * (lo_j + hi_i)
            break
        if ns[j] == ns[i]:
            return
        # The step that makes the two tightest constraints meet.
        step_new = (ys[j] - half[j] - ys[i] - half[i]) / (ns[j] - ns[i])
        if not (isfinite(step_new) and step_new > 0):
            return
    got = count_shifted(du, count, ref, a_new, step_new, precision)
    if got >= wanted:
        a_io[0] = a_new
        step_io[0] = step_new


cdef int fit_core(const double* values, Py_ssize_t n, double step, double err, int precision,
                  double* out, bint presorted) noexcept nogil:
    """Least-squares ``(a, b, uncertainty of b)`` of ``values`` (in ascending order when
    ``presorted``) into ``out[0:3]``: 1 when found, 0 when none, -1 when out of memory."""
    cdef Py_ssize_t count, i, size, used = -1
    cdef double* u = <double*>malloc((7 * n + 1) * sizeof(double))
    cdef double* quanta = u + n
    cdef double* ns = quanta + n
    cdef double* ys = ns + n
    cdef double* ws = ys + n
    cdef double* scratch = ws + n
    cdef double ref = 0.0, a = 0.0, reach, m, slack, total_w, n_mean, dn, dn_mean, y_mean, spread
    cdef double covar, slope, n_min, n_max, t
    cdef bint failed = False
    cdef int it
    if u == NULL:
        return -1
    for i in range(n):
        u[i] = values[i]
    if not presorted:
        sort(u, u + n)
    if n:
        ref = u[n // 2]  # the median sample
    count = unique_run(u, n)
    if step <= 0 or count == 0:
        free(u)
        return 0
    if step == trunc(step) and precision >= NO_ROUNDING and err == 0:
        # An exact integer lattice: keep it exact (the phase of the middle value).
        free(u)
        out[0] = py_mod(ref, step)
        out[1] = step
        out[2] = 0.0
        return 1
    for i in range(count):
        quanta[i] = quantum(u[i], precision)
        u[i] = u[i] - ref  # du
        ws[i] = 1.0 / (quanta[i] * quanta[i])
    for it in range(16):
        reach = 0.25 * step * step / py_max(err, step * 1e-15)
        size = 0
        for i in range(count):
            if fabs(u[i]) <= reach:
                m = rint((u[i] - a) / step)
                slack = 2 * quanta[i] + 2 * fabs(m) * err
                if fabs(u[i] - a - m * step) <= slack:
                    ns[size] = m
                    ys[size] = u[i]
                    scratch[size] = ws[i]
                    size += 1
        if size < 2 or size == used:
            break
        n_min = ns[0]
        n_max = ns[0]
        for i in range(1, size):
            if ns[i] < n_min:
                n_min = ns[i]
            if ns[i] > n_max:
                n_max = ns[i]
        if n_min == n_max:
            break
        used = size
        # Sums left to right, each term as numpy forms it: w*n, w*dn, w*y, w*dn**2...
        total_w = 0.0
        t = 0.0
        for i in range(size):
            total_w += scratch[i]
            t += scratch[i] * ns[i]
        n_mean = rint(t / total_w)
        t = 0.0
        for i in range(size):
            t += scratch[i] * (ns[i] - n_mean)
        dn_mean = t / total_w
        t = 0.0
        for i in range(size):
            t += scratch[i] * ys[i]
        y_mean = t / total_w
        spread = 0.0
        covar = 0.0
        for i in range(size):
            dn = (ns[i] - n_mean) - dn_mean
            spread += scratch[i] * (dn * dn)
            covar += scratch[i] * dn * (ys[i] - y_mean)
        slope = covar / spread
        if not (isfinite(slope) and slope > 0):
            failed = True
            break
        a = y_mean - slope * (dn_mean + n_mean)
        err = py_max(0.5 / sqrt(spread), step * 1e-15)
        step = slope
    if not failed and (precision < NO_ROUNDING or step != trunc(step)):
        center(u, quanta, count, &a, &step, ref, precision, ns)
    free(u)
    if failed:
        return 0
    a += ref
    a -= step * rint(a / step)
    if precision >= NO_ROUNDING and fabs(step - rint(step)) <= 1e-9 * step:
        step = rint(step)
        a = py_mod(rint(a), step)
    out[0] = a
    out[1] = step
    out[2] = err
    return 1


def fit(const double[:] values, double step, double err, int precision):
    """Least-squares ``(a, b, uncertainty of b)`` of ``values ~ a + b*n`` from an approximate
    step, or None; the compiled ``qres.codec.mapping._fit``."""
    import numpy as np

    cdef const double[::1] v = np.ascontiguousarray(values, dtype=np.float64)
    cdef double out[3]
    cdef int found
    with nogil:
        found = fit_core(&v[0] if v.shape[0] else NULL, v.shape[0], step, err, precision, out,
                         False)
    if found < 0:
        raise MemoryError("lattice fit: out of memory")
    return (out[0], out[1], out[2]) if found else None


# -- whole arrays --------------------------------------------------------------------------------


def round_significant_array(const double[:] t, int precision):
    """``t`` rounded half-even to ``precision`` significant digits, as a new float64 array
    (NaN and infinities pass through)."""
    import numpy as np

    out = np.empty(t.shape[0], dtype=np.float64)
    cdef double[:] view = out
    cdef Py_ssize_t i
    with nogil:
        for i in range(t.shape[0]):
            view[i] = round_significant(t[i], precision)
    return out


# -- segment ends --------------------------------------------------------------------------------


def count_reproduced(const double[:] k, double a, double b, int precision):
    """How many decimals of ``k`` the lattice ``(a, b)`` reproduces exactly."""
    cdef Py_ssize_t i, got = 0
    with nogil:
        for i in range(k.shape[0]):
            got += reproduced(k[i], a, b, precision)
    return got


cdef inline bint is_integer(double v) noexcept nogil:
    """Whether ``v`` is an integer below 2**52 in magnitude (so ``v - a``, ``rint`` and
    ``a + 1*m`` are exact for any such integer ``a``)."""
    return fabs(v) < 4503599627370496.0 and <double><int64_t>v == v


cdef bint all_integers(const double* k, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        if not is_integer(k[i]):
            return False
    return True


cdef Py_ssize_t segment_end_core(const double* k, Py_ssize_t n, Py_ssize_t start, double a,
                                  double b, int precision, Py_ssize_t* failures_out,
                                  char* bad, bint integers) noexcept nogil:
    """Where the lattice stops holding from ``start`` (see :func:`segment_end`); ``bad`` holds
    ``n - start`` flags of scratch. Writes the failures before the end. ``integers``: every
    ``k`` is an integer below 2**52 (as decimal_view gives them): then the plain integer
    lattice (``b = 1``, an integer ``a``, no rounding) reproduces every one, with no pass."""
    cdef Py_ssize_t i, j, done = start, failures = 0, end = n, run
    if integers and b == 1.0 and precision >= NO_ROUNDING and is_integer(a):
        failures_out[0] = 0
        return n
    # Failures are evaluated only as far as the scan has looked (segments are short
    # compared with the block).
    for i in range(start, n):
        while done < n and done < i + 4:
            bad[done - start] = not reproduced(k[done], a, b, precision)
            done += 1
        if bad[i - start]:
            run = 0
            for j in range(i, done if done < i + 4 else i + 4):
                run += bad[j - start]
            if run >= 3:
                end = i
                break
            failures += 1
    failures_out[0] = failures
    return end


def segment_end(const double[:] k, Py_ssize_t start, double a, double b, int precision):
    """Where the lattice stops holding from ``start``: the first failure that starts a run of
    three or more failures among four samples. Returns (end, failures before the end)."""
    import numpy as np

    cdef const double[::1] v = np.ascontiguousarray(k, dtype=np.float64)
    cdef Py_ssize_t n = v.shape[0], end, failures
    cdef char* bad
    if start >= n:
        return n, 0
    if start < 0:
        raise ValueError("segment_end: start must not be negative")
    bad = <char*>malloc(n - start)
    if bad == NULL:
        raise MemoryError("lattice segment end: out of memory")
    with nogil:
        end = segment_end_core(&v[0], n, start, a, b, precision, &failures, bad,
                               all_integers(&v[start], n - start))
    free(bad)
    return end, failures


# -- the segment search -----------------------------------------------------------------------
# qres.codec.mapping._reference_segments in C: the same windows, candidates and choices, with
# the kernels above called directly (the Python loop spent more time in window slicing, numpy's
# unique and call overhead than in the kernels themselves).

cdef enum:
    SMALL_WINDOW = 256     # lattice windows tried at a segment start (mapping._WINDOWS)
    LARGE_WINDOW = 1024
    MIN_SEGMENT = 64       # a lattice must hold this long (or to the block's end)
    MIN_WINDOW = 8         # fewer usable samples in a window: no lattice
    REFIT_SAMPLES = 8192   # most samples (evenly spaced) a refit looks at

cdef double REFIT_FAILURES = 0.005
cdef double COARSER = 1.001  # a larger window's lattice must be this much coarser to win


cdef struct Candidate:
    Py_ssize_t end
    Py_ssize_t failures
    double a
    double b
    double err
    bint fallback


cdef struct Window:
    # The usable decimals of k[pos:pos + size] in ascending order (kept from one candidate to
    # the next: the windows of one position share their samples, and the next position after
    # a failure lies 64 samples on).
    double* values  # size doubles
    Py_ssize_t size
    Py_ssize_t pos  # -1: none held
    Py_ssize_t count


cdef struct Search:
    const double* k
    const unsigned char* usable
    const Py_ssize_t* usable_before  # frames + 1 counts: usable samples before each index
    Py_ssize_t frames
    int precision
    bint integers   # every k is an integer below 2**52 (segment_end_core's shortcut)
    Window small    # SMALL_WINDOW
    Window large    # LARGE_WINDOW
    double* moved   # 2 * LARGE_WINDOW doubles: samples leaving and entering a window
    double* window  # the frames of a refit
    char* bad       # frames flags for segment_end_core


cdef int integer_step(const double* values, Py_ssize_t n, double* step) noexcept nogil:
    """The exact gcd of the gaps between the distinct integer-valued decimals (numpy's
    ``gcd.reduce`` of their int64 differences) of the sorted ``values``: 1 when found, 0 when
    fewer than two are distinct."""
    cdef Py_ssize_t count = 0, i
    cdef int64_t g = 0
    for i in range(n):
        if count == 0 or values[i] != values[i - 1]:
            count += 1
        if i == 0 or values[i] == values[i - 1]:
            continue
        g = gcd_abs(g, to_int64(values[i] - values[i - 1]))
        if g == 1:
            break  # gcd(1, d) is 1 for every d, and two values are distinct already
    if count < 2 or g < 1:
        return 0
    step[0] = <double>g
    return 1


cdef Py_ssize_t gather(const Search* s, Py_ssize_t start, Py_ssize_t stop,
                       double* out) noexcept nogil:
    """The usable decimals of ``k[start:stop]`` into ``out``, in ascending order: their count."""
    cdef Py_ssize_t count = 0, i
    for i in range(start, stop):
        if s.usable[i]:
            out[count] = s.k[i]
            count += 1
    sort(out, out + count)
    return count


cdef Py_ssize_t drop_sorted(double* values, Py_ssize_t count, const double* gone,
                            Py_ssize_t gone_count) noexcept nogil:
    """Remove from the ascending ``values`` one occurrence of each of the ascending ``gone``
    (all of which it holds): the remaining count."""
    cdef Py_ssize_t i, j = 0, kept = 0
    for i in range(count):
        if j < gone_count and values[i] == gone[j]:
            j += 1
        else:
            values[kept] = values[i]
            kept += 1
    return kept


cdef void slide(const Search* s, Window* w, Py_ssize_t pos, double* moved) noexcept nogil:
    """Make ``w`` hold the window at ``pos`` (``w.pos < pos < w.pos + w.size``): the samples
    that left and entered it are sorted and merged out and in, the overlap stays sorted (the
    decimals are finite and without -0.0: equal values have one bit pattern, so the result is
    the window sorted afresh)."""
    cdef Py_ssize_t old_stop = w.pos + w.size if w.pos + w.size < s.frames else s.frames
    cdef Py_ssize_t stop = pos + w.size if pos + w.size < s.frames else s.frames
    cdef Py_ssize_t gone, came
    gone = gather(s, w.pos, pos, moved)
    w.count = drop_sorted(w.values, w.count, moved, gone)
    came = gather(s, old_stop, stop, moved)
    if came:
        memcpy(moved + came, w.values, w.count * sizeof(double))
        merge(moved + came, moved + came + w.count, moved, moved + came, w.values)
        w.count += came
    w.pos = pos


cdef double* window_at(Search* s, Py_ssize_t pos, Py_ssize_t size, Py_ssize_t* count) noexcept nogil:
    """The usable decimals of the window of ``size`` at ``pos``, ascending (built once per
    window: from the previous window of that size when it overlaps, the large one from the
    small one at the same position)."""
    cdef Window* w = &s.small if size == SMALL_WINDOW else &s.large
    cdef Py_ssize_t stop = pos + size if pos + size < s.frames else s.frames, head, tail
    if w.pos != pos:
        if w.pos >= 0 and w.pos < pos and pos - w.pos <= size // 2:
            slide(s, w, pos, s.moved)
        elif w == &s.large and s.small.pos == pos:
            head = pos + SMALL_WINDOW if pos + SMALL_WINDOW < s.frames else s.frames
            tail = gather(s, head, stop, s.moved)
            merge(s.small.values, s.small.values + s.small.count, s.moved, s.moved + tail,
                  w.values)
            w.count = s.small.count + tail
            w.pos = pos
        else:
            w.count = gather(s, pos, stop, w.values)
            w.pos = pos
    count[0] = w.count
    return w.values


cdef int candidate(Search* s, Py_ssize_t pos, Py_ssize_t size, bint lattice,
                   Candidate* out) noexcept nogil:
    """The lattice of the usable samples of the window at ``pos`` and where it stops holding
    (mapping._candidate): 1 when found, 0 when none, -1 when out of memory."""
    cdef Py_ssize_t stop = pos + size if pos + size < s.frames else s.frames, count
    cdef Py_ssize_t end, failures, shortest
    cdef double step, err = 0.0
    cdef double found[3]
    cdef double* values
    cdef int r
    if s.usable_before[stop] - s.usable_before[pos] < MIN_WINDOW:
        return 0  # counted, not gathered: channels whose decimals are mostly inexact
    # Sorted once for the step and the fit (both depend only on the window's values).
    values = window_at(s, pos, size, &count)
    if lattice:
        r = lattice_step_core(values, count, s.precision, &step, &err, True)
    else:
        r = integer_step(values, count, &step)
    if r <= 0:
        return r
    r = fit_core(values, count, step, err, s.precision, found, True)
    if r <= 0:
        return r
    end = segment_end_core(s.k, s.frames, pos, found[0], found[1], s.precision, &failures,
                           s.bad, s.integers)
    shortest = s.frames - pos if s.frames - pos < MIN_SEGMENT else MIN_SEGMENT
    if end - pos < shortest:
        return 0
    out.end = end
    out.failures = failures
    out.a = found[0]
    out.b = found[1]
    out.err = found[2]
    out.fallback = False
    return 1


cdef int best_lattice(Search* s, Py_ssize_t pos, int64_t reach, Candidate* best) noexcept nogil:
    """The lattice to open a segment at ``pos`` with (mapping._best_lattice): 1 when found,
    0 when none, -1 when out of memory."""
    cdef Candidate found
    cdef bint have = False
    cdef int r, w
    cdef Py_ssize_t size
    for w in range(2):
        size = SMALL_WINDOW if w == 0 else LARGE_WINDOW
        if have and best.end >= pos + size:
            break  # the larger window lies inside the segment found: same lattice
        r = candidate(s, pos, size, True, &found)
        if r < 0:
            return r
        if r and (not have or found.b > best.b * COARSER):
            best[0] = found
            have = True
    if have:
        return 1
    # Only a fine common lattice fits: use it for a while, then look for a coarser one.
    r = candidate(s, pos, LARGE_WINDOW, False, &found)
    if r <= 0:
        return r
    if found.end > pos + reach:
        found.end = pos + reach
        found.failures = 0
    found.fallback = True
    best[0] = found
    return 1


cdef int refit(Search* s, Py_ssize_t pos, Candidate* c) noexcept nogil:
    """Refit a segment whose window's lattice misses some of its samples on (up to
    REFIT_SAMPLES evenly spaced of) all of them, keeping the refit when it reproduces at least
    as many: 0, or -1 when out of memory."""
    cdef Py_ssize_t count = 0, i, stride, kept = 0, got_new = 0, got_old = 0
    cdef double found[3]
    cdef double* inside = s.window
    cdef int r
    if not c.failures > REFIT_FAILURES * (c.end - pos):
        return 0
    for i in range(pos, c.end):
        if s.usable[i]:
            inside[count] = s.k[i]
            count += 1
    if count > REFIT_SAMPLES:
        stride = count // REFIT_SAMPLES
        i = 0
        while i < count:
            inside[kept] = inside[i]
            kept += 1
            i += stride
        count = kept
    if count == 0:
        return 0
    r = fit_core(inside, count, c.b, c.err, s.precision, found, False)
    if r <= 0:
        return r
    for i in range(count):
        got_new += reproduced(inside[i], found[0], found[1], s.precision)
        got_old += reproduced(inside[i], c.a, c.b, s.precision)
    if got_new >= got_old:
        c.a = found[0]
        c.b = found[1]
    return 0


cdef struct Segments:
    uint32_t* starts
    double* offsets
    double* steps
    Py_ssize_t count
    Py_ssize_t cap


cdef int push_segment(Segments* g, Py_ssize_t start, double a, double b) noexcept nogil:
    cdef Py_ssize_t cap
    cdef void* grown
    if g.count == g.cap:
        cap = 2 * g.cap + 64
        grown = realloc(g.starts, cap * sizeof(uint32_t))
        if grown == NULL:
            return -1
        g.starts = <uint32_t*>grown
        grown = realloc(g.offsets, cap * sizeof(double))
        if grown == NULL:
            return -1
        g.offsets = <double*>grown
        grown = realloc(g.steps, cap * sizeof(double))
        if grown == NULL:
            return -1
        g.steps = <double*>grown
        g.cap = cap
    g.starts[g.count] = <uint32_t>start
    g.offsets[g.count] = a
    g.steps[g.count] = b
    g.count += 1
    return 0


cdef int search(Search* s, Segments* g) noexcept nogil:
    """Split the channel into lattice segments (mapping._reference_segments): 0, or -1 when
    out of memory."""
    cdef Py_ssize_t pos = 0, end
    # How far a fallback lattice goes: doubles while nothing better fits (capped far beyond
    # any block, where it no longer shortens anything).
    cdef int64_t reach = LARGE_WINDOW
    cdef Candidate c
    cdef int r
    while pos < s.frames:
        r = best_lattice(s, pos, reach, &c)
        if r < 0:
            return r
        if r and c.fallback:
            reach = reach * 2 if reach < (<int64_t>1 << 40) else reach
        else:
            reach = LARGE_WINDOW
        if not r:
            # No lattice here: the stretch joins the previous segment (its corrections are
            # cheaper than a jump of scale), or starts a plain decimal one.
            end = pos + MIN_SEGMENT if pos + MIN_SEGMENT < s.frames else s.frames
            if g.count == 0 and push_segment(g, 0, 0.0, 1.0):
                return -1
            pos = end
            continue
        if refit(s, pos, &c):
            return -1
        if g.count and g.offsets[g.count - 1] == c.a and g.steps[g.count - 1] == c.b:
            pos = c.end
            continue
        if push_segment(g, pos, c.a, c.b):
            return -1
        pos = c.end
    if g.count == 0 and push_segment(g, 0, 0.0, 1.0):
        return -1
    return 0


def segments(const double[::1] k, usable, int precision):
    """Split a channel's decimals ``k`` into lattice segments, looking only at the samples
    where ``usable`` (bool) is set: (starts uint32, offsets float64, steps float64), as
    ``qres.codec.mapping._reference_segments`` finds them."""
    import numpy as np

    cdef const unsigned char[::1] ok = np.ascontiguousarray(usable, dtype=np.bool_).view(np.uint8)
    cdef Search s
    cdef Segments g
    cdef int r
    cdef Py_ssize_t i
    cdef Py_ssize_t* before
    if ok.shape[0] != k.shape[0]:
        raise ValueError("segments: usable must have one flag per decimal")
    if k.shape[0] >= (<Py_ssize_t>1 << 32):
        raise ValueError("segments: a block holds fewer than 2**32 frames")
    s.k = &k[0] if k.shape[0] else NULL
    s.usable = &ok[0] if ok.shape[0] else NULL
    s.frames = k.shape[0]
    s.precision = precision
    s.integers = all_integers(s.k, s.frames)
    s.small.values = <double*>malloc(SMALL_WINDOW * sizeof(double))
    s.small.size = SMALL_WINDOW
    s.small.pos = -1
    s.large.values = <double*>malloc(LARGE_WINDOW * sizeof(double))
    s.large.size = LARGE_WINDOW
    s.large.pos = -1
    s.moved = <double*>malloc(2 * LARGE_WINDOW * sizeof(double))
    s.window = <double*>malloc((s.frames + 1) * sizeof(double))
    s.bad = <char*>malloc(s.frames + 1)
    before = <Py_ssize_t*>malloc((s.frames + 1) * sizeof(Py_ssize_t))
    s.usable_before = before
    if before != NULL:
        before[0] = 0
        for i in range(s.frames):
            before[i + 1] = before[i] + (ok[i] != 0)
    g.starts = NULL
    g.offsets = NULL
    g.steps = NULL
    g.count = 0
    g.cap = 0
    try:
        if (s.window == NULL or s.bad == NULL or before == NULL or s.small.values == NULL
                or s.large.values == NULL or s.moved == NULL):
            raise MemoryError("lattice search: out of memory")
        with nogil:
            r = search(&s, &g)
        if r:
            raise MemoryError("lattice search: out of memory")
        starts = np.empty(g.count, dtype="<u4")
        offsets = np.empty(g.count, dtype="<f8")
        steps = np.empty(g.count, dtype="<f8")
        for i in range(g.count):
            starts[i] = g.starts[i]
            offsets[i] = g.offsets[i]
            steps[i] = g.steps[i]
        return starts, offsets, steps
    finally:
        free(s.small.values)
        free(s.large.values)
        free(s.moved)
        free(s.window)
        free(s.bad)
        free(before)
        free(g.starts)
        free(g.offsets)
        free(g.steps)


def common_step(const int64_t[:] ints):
    """The gcd of ``ints[i] - ints[0]`` over the channel (numpy's ``gcd.reduce`` of those
    differences; 0 when all samples are equal), stopping as soon as it reaches 1, as it does
    within the first few samples of most channels. The differences must fit int64 (samples
    of at most 32 bits)."""
    cdef Py_ssize_t n = ints.shape[0], i
    cdef int64_t g = 0
    with nogil:
        for i in range(1, n):
            g = gcd_abs(g, ints[i] - ints[0])
            if g == 1:
                break
    return g


cdef inline int64_t to_int64(double v) noexcept nogil:
    """``v`` truncated to int64; NaN and values outside int64 give INT64_MIN (numpy's astype
    on x86-64 does the same, and C leaves it undefined)."""
    if v >= -9223372036854775808.0 and v < 9223372036854775808.0:
        return <int64_t>v
    return <int64_t>(-9223372036854775807 - 1)


cdef check_starts(const uint32_t[:] starts, Py_ssize_t frames):
    """Segment starts must be 0, increasing and below ``frames`` (else samples would be left
    unwritten or written out of bounds)."""
    cdef Py_ssize_t s
    if starts.shape[0] == 0 or starts[0] != 0:
        raise ValueError("lattice segments must start at sample 0")
    for s in range(1, starts.shape[0]):
        if starts[s] <= starts[s - 1] or starts[s] >= frames:
            raise ValueError("lattice segment starts out of order")


def lattice_encode(const double[:] k, const uint32_t[:] starts, const double[:] offsets,
                   const double[:] steps, int precision):
    """Lattice indices ``n = rint((k - a) / b)`` of the decimals ``k`` and their corrections
    ``c = k - round_P(a + b*n)``, with ``(a, b)`` the segment's (segment ``s`` runs from
    ``starts[s]`` to the next start): two int64 arrays, in one pass."""
    import numpy as np

    cdef Py_ssize_t frames = k.shape[0], count = starts.shape[0], s, i, end
    n_out = np.empty(frames, dtype=np.int64)
    c_out = np.empty(frames, dtype=np.int64)
    cdef int64_t[:] n_view = n_out
    cdef int64_t[:] c_view = c_out
    cdef double a, b, m
    check_starts(starts, frames)
    with nogil:
        for s in range(count):
            a = offsets[s]
            b = steps[s]
            end = starts[s + 1] if s + 1 < count else frames
            for i in range(starts[s], end):
                m = rint((k[i] - a) / b)
                n_view[i] = to_int64(m)
                c_view[i] = to_int64(k[i] - round_significant(a + b * m, precision))
    return n_out, c_out


def lattice_decode(const int64_t[:] n, const uint32_t[:] starts, const double[:] offsets,
                   const double[:] steps, int precision):
    """The decimals ``round_P(a + b*n)`` of lattice indices ``n`` as int64, clipped to
    +-2**62 (NaN, from a corrupted record, becomes 0): the inverse of :func:`lattice_encode`
    before corrections."""
    import numpy as np

    cdef Py_ssize_t frames = n.shape[0], count = starts.shape[0], s, i, end
    out = np.empty(frames, dtype=np.int64)
    cdef int64_t[:] view = out
    cdef double a, b, t, limit = 4611686018427387904.0  # 2**62
    check_starts(starts, frames)
    with nogil:
        for s in range(count):
            a = offsets[s]
            b = steps[s]
            end = starts[s + 1] if s + 1 < count else frames
            for i in range(starts[s], end):
                t = round_significant(a + b * <double>n[i], precision)
                if t != t:
                    t = 0.0
                elif t < -limit:
                    t = -limit
                elif t > limit:
                    t = limit
                view[i] = <int64_t>t
    return out


# -- decimal views, ulp streams, cost estimates ---------------------------------------------------


cdef inline uint64_t float_bits(double v) noexcept nogil:
    cdef uint64_t bits
    memcpy(&bits, &v, sizeof(double))
    return bits


cdef inline uint32_t single_bits(float v) noexcept nogil:
    cdef uint32_t bits
    memcpy(&bits, &v, sizeof(float))
    return bits


cdef inline int64_t monotonic64(uint64_t bits) noexcept nogil:
    """The order-preserving signed integer of a binary64 bit pattern."""
    cdef int64_t b = <int64_t>bits
    return b ^ ((b >> 63) & <int64_t>0x7FFFFFFFFFFFFFFF)


cdef inline int64_t monotonic32(uint32_t bits) noexcept nogil:
    """The order-preserving signed integer of a binary32 bit pattern."""
    cdef int32_t b = <int32_t>bits
    return b ^ ((b >> 31) & <int32_t>0x7FFFFFFF)


def decimal_view(const floating[:] x, int decimals):
    """The decimal integers ``k = rint(x * 10**d) + 0.0`` of a channel, with samples that are
    not finite or not below 2**52 replaced by the previous such k (0 before the first), and
    the mask of samples that are exactly ``k / 10**d`` in the sample type: (float64, bool)."""
    import numpy as np

    cdef Py_ssize_t frames = x.shape[0], i
    cdef double scale = POW10[decimals], k, last = 0.0, limit = 4503599627370496.0  # 2**52
    cdef bint fits
    k_out = np.empty(frames, dtype=np.float64)
    exact_out = np.empty(frames, dtype=np.bool_)
    cdef double[:] k_view = k_out
    cdef unsigned char[:] exact_view = exact_out.view(np.uint8)
    if not 0 <= decimals <= 22:
        raise ValueError("decimals must be in [0, 22]")
    with nogil:
        for i in range(frames):
            k = rint(<double>x[i] * scale) + 0.0  # + 0.0: the decoder's integer k has no -0
            fits = fabs(k) < limit  # False for NaN and infinities too
            if fits:
                last = k
                if floating is float:
                    exact_view[i] = single_bits(<float>(k / scale)) == single_bits(x[i])
                else:
                    exact_view[i] = float_bits(k / scale) == float_bits(x[i])
            else:
                exact_view[i] = 0
            k_view[i] = last
    return k_out, exact_out


def ulp_stream(const floating[:] x, const double[:] k, int decimals):
    """``u = to_order(x) - to_order(k / 10**d)`` in the sample type's order-preserving
    integers (int64, wrapping like numpy's int64 subtraction)."""
    import numpy as np

    cdef Py_ssize_t frames = x.shape[0], i
    cdef double scale = POW10[decimals]
    out = np.empty(frames, dtype=np.int64)
    cdef int64_t[:] view = out
    if k.shape[0] != frames or not 0 <= decimals <= 22:
        raise ValueError("ulp stream: k must match x and decimals be in [0, 22]")
    with nogil:
        for i in range(frames):
            if floating is float:
                view[i] = monotonic32(single_bits(x[i])) - monotonic32(
                    single_bits(<float>(k[i] / scale)))
            else:
                view[i] = <int64_t>(<uint64_t>monotonic64(float_bits(x[i]))
                                    - <uint64_t>monotonic64(float_bits(k[i] / scale)))
    return out


cdef inline int64_t bit_length(int64_t v) noexcept nogil:
    """The binary exponent frexp gives |binary64(v)| (0 for 0): its bit length, after the
    conversion's rounding to 53 bits."""
    # Branch-free (streams mix zeros and others unpredictably): a nonzero integer's biased
    # exponent is at least 1023, zero's is 0.
    cdef int64_t e = <int64_t>((float_bits(fabs(<double>v)) >> 52) & 0x7FF) - 1022
    return e if e > 0 else 0


def bit_cost(const int64_t[:] stream, bint differences):
    """The mapping's size estimate of a stream (of its first differences, wrapping like
    numpy's ``diff``, when ``differences``): the sum of the values' bit lengths plus one bit
    per 8 values."""
    cdef Py_ssize_t n = stream.shape[0], i
    cdef int64_t total = 0, count
    with nogil:
        if differences:
            for i in range(1, n):
                total += bit_length(<int64_t>(<uint64_t>stream[i] - <uint64_t>stream[i - 1]))
        else:
            for i in range(n):
                total += bit_length(stream[i])
    count = n - 1 if differences and n > 0 else n
    return total + count // 8


def monotonic_bits(const floating[:] x):
    """The order-preserving signed integers of the samples' bit patterns, as int64 (one pass;
    mapping._monotonic_bits)."""
    import numpy as np

    cdef Py_ssize_t n = x.shape[0], i
    out = np.empty(n, dtype=np.int64)
    cdef int64_t[:] view = out
    with nogil:
        for i in range(n):
            if floating is float:
                view[i] = monotonic32(single_bits(x[i]))
            else:
                view[i] = monotonic64(float_bits(x[i]))
    return out


cdef inline int64_t double_exponent(double m) noexcept nogil:
    """The binary exponent frexp gives a finite ``m >= 0`` that is 0 or at least 1."""
    if m == 0:
        return 0
    return <int64_t>((float_bits(m) >> 52) & 0x7FF) - 1022


def decimal_costs(const floating[:] probe, int max_decimals):
    """For ``d = 0, 1, ...``: how many samples of ``probe`` are not exactly ``k / 10**d``
    (``k = rint(x * 10**d) + 0.0``, 0 where it is not finite or not below 2**52) and the size
    estimate of that decimal view (the bit cost of k's differences plus that of the ulp
    corrections ``to_order(x) - to_order(k / 10**d)``), stopping after the first ``d`` that
    leaves no sample inexact: two lists, as mapping._choose_decimals computed them in numpy
    (one pass per ``d`` instead of a dozen array operations)."""
    cdef Py_ssize_t n = probe.shape[0], i
    cdef double scale, k, prev = 0.0, limit = 4503599627370496.0  # 2**52
    cdef int64_t inexact, cost_k, cost_u, u
    cdef bint fits, same
    cdef int d
    counts = []
    costs = []
    if not 0 <= max_decimals <= 22:
        raise ValueError("max_decimals must be in [0, 22]")
    for d in range(max_decimals + 1):
        scale = POW10[d]
        inexact = 0
        cost_k = 0
        cost_u = 0
        with nogil:
            for i in range(n):
                k = rint(<double>probe[i] * scale) + 0.0
                fits = fabs(k) < limit  # False for NaN and infinities too
                if not fits:
                    k = 0.0
                if floating is float:
                    same = single_bits(<float>(k / scale)) == single_bits(probe[i])
                    u = <int64_t>monotonic32(single_bits(probe[i])) - <int64_t>monotonic32(
                        single_bits(<float>(k / scale)))
                else:
                    same = float_bits(k / scale) == float_bits(probe[i])
                    u = <int64_t>(<uint64_t>monotonic64(float_bits(probe[i]))
                                  - <uint64_t>monotonic64(float_bits(k / scale)))
                inexact += not (fits and same)
                cost_u += bit_length(u)
                if i:
                    # differences of integers below 2**52 are exact doubles
                    cost_k += double_exponent(fabs(k - prev))
                prev = k
        if n:
            cost_k += (n - 1) // 8
            cost_u += n // 8
        counts.append(inexact)
        costs.append(cost_k + cost_u)
        if inexact == 0:
            break
    return counts, costs


# -- significant digits (mapping kind 6, qres/codec/significant.py) -------------------------------
#
# The same binary64 operations per sample as the numpy formulation in significant.py (which
# stays as the reference and the path for non-finite samples): frexp, an integer estimate of
# the decade corrected by exact comparisons with the table of powers, rint of one product or
# quotient, and the decoder's one product or quotient.


cdef struct Powers:
    const double* table  # 10**k for k = -low .. high, correctly rounded
    Py_ssize_t low
    Py_ssize_t last      # index of the last entry


cdef inline double power_of_ten(const Powers* p, int64_t k) noexcept nogil:
    """``10**k`` from the table, the index clipped into it (as numpy's take(mode="clip"))."""
    cdef int64_t at = k + p.low
    if at < 0:
        at = 0
    elif at > p.last:
        at = p.last
    return p.table[at]


cdef inline int64_t decade(const Powers* p, double magnitude) noexcept nogil:
    """``floor(log10(magnitude))`` for finite ``magnitude > 0``."""
    cdef int e2
    frexp(magnitude, &e2)
    cdef int64_t e10 = ((<int64_t>e2 - 1) * 1233) >> 12
    if magnitude >= power_of_ten(p, e10 + 1):
        e10 += 1
    if magnitude < power_of_ten(p, e10):
        e10 -= 1
    return e10


cdef inline double mantissa(const Powers* p, double magnitude, int64_t q) noexcept nogil:
    """``rint(magnitude / 10**q)``, in two products below ``10**-300``."""
    cdef double scaled = magnitude
    cdef int64_t shift = -q
    cdef double power
    if q < -300:
        scaled = magnitude * 1e300
        shift = -q - 300
    power = power_of_ten(p, shift if shift >= 0 else -shift)
    return rint(scaled * power if shift > 0 else scaled / power)


cdef inline double digits(const Powers* p, double magnitude, int64_t e10, int precision,
                          int64_t* q) noexcept nogil:
    """``m`` with ``magnitude ~ m * 10**q`` and ``P`` digits in ``m``; sets ``q``. ``e10``:
    the magnitude's decade."""
    cdef double top = POW10[precision]
    q[0] = e10 - (precision - 1)
    cdef double m = mantissa(p, magnitude, q[0])
    if m >= top:
        q[0] += 1
        m = mantissa(p, magnitude, q[0])
    if m < POW10[precision - 1]:
        return POW10[precision - 1]
    if m > top - 1:
        return top - 1
    return m


cdef bint all_finite(const floating[:] x) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(x.shape[0]):
        if not isfinite(x[i]):
            return False
    return True


cdef int encode_significant(const floating[:] x, Powers* p, int precision, int64_t* n,
                            int64_t* q0_out, const int64_t* decades, int64_t* qs,
                            double* ms) noexcept nogil:
    """Indexes of finite samples at ``precision`` digits into ``n``; 0 when they do not fit
    (span of decades or q0 out of range), else 1. ``decades``: each nonzero sample's decade,
    or NULL; ``qs`` and ``ms`` hold each sample's exponent and digits between the two passes."""
    cdef Py_ssize_t frames = x.shape[0], i
    cdef int64_t q, q0 = 0, qmax = 0, width = 9, low = 1, span
    cdef double magnitude
    cdef bint any_nonzero = False
    cdef int j
    for j in range(precision - 1):
        width *= 10
        low *= 10
    for i in range(frames):
        magnitude = fabs(<double>x[i])
        if magnitude > 0:
            ms[i] = digits(p, magnitude, decades[i] if decades != NULL else decade(p, magnitude),
                           precision, &q)
            qs[i] = q
            if not any_nonzero or q < q0:
                q0 = q
            if not any_nonzero or q > qmax:
                qmax = q
            any_nonzero = True
    q0_out[0] = q0 if any_nonzero else 0
    if not any_nonzero:
        for i in range(frames):
            n[i] = 0
        return 1
    span = qmax - q0 + 1
    # span * width >= 2**61 (width >= 9, span >= 1: the test cannot overflow)
    if span >= (<int64_t>1 << 61) // width + ((<int64_t>1 << 61) % width != 0) \
            or q0 < -32768 or q0 > 32767:
        return 0
    for i in range(frames):
        if fabs(<double>x[i]) > 0:
            n[i] = 1 + (qs[i] - q0) * width + (<int64_t>ms[i] - low)
            if copysign(1.0, <double>x[i]) < 0:
                n[i] = -n[i]
        else:
            n[i] = 0
    return 1


cdef inline double decode_significant(int64_t v, const Powers* p, int64_t width, int64_t low,
                                      int64_t q0) noexcept nogil:
    """One sample (binary64) from its index ``v``; any int64 gives some value."""
    cdef int64_t limit = <int64_t>1 << 61, index, q
    cdef double m, power, magnitude
    index = v
    if index < -limit:
        index = -limit
    elif index > limit:
        index = limit
    index = (index if index >= 0 else -index) - 1
    if index < 0:
        magnitude = 0.0
    else:
        q = q0 + index // width
        m = <double>(low + index % width)
        power = power_of_ten(p, q if q >= 0 else -q)
        magnitude = m / power if q < 0 else m * power
    return -magnitude if v < 0 else magnitude


cdef Powers powers_of(const double[::1] table, Py_ssize_t low) except *:
    cdef Powers p
    if table.shape[0] < 1 or not 0 <= low < table.shape[0]:
        raise ValueError("significant digits: bad table of powers")
    p.table = &table[0]
    p.low = low
    p.last = table.shape[0] - 1
    return p


def significant_encode(const floating[:] x, int precision, const double[::1] table,
                       Py_ssize_t low):
    """``(n, q0)`` of finite samples ``x`` at ``precision`` digits, or None when the indexes
    would not fit (as ``significant.encode``); ``table[k + low] = 10**k``."""
    import numpy as np

    cdef Powers p = powers_of(table, low)
    cdef int64_t q0 = 0
    cdef int ok
    if not 1 <= precision <= MAX_DIGITS or not all_finite(x):
        raise ValueError("significant digits: precision in [1, 17] and finite samples only")
    cdef Py_ssize_t frames = x.shape[0]
    out = np.empty(frames, dtype=np.int64)
    cdef int64_t[::1] view = out
    cdef int64_t* qs = <int64_t*>malloc((frames + 1) * sizeof(int64_t))
    cdef double* ms = <double*>malloc((frames + 1) * sizeof(double))
    if qs == NULL or ms == NULL:
        free(qs)
        free(ms)
        raise MemoryError()
    with nogil:
        ok = encode_significant(x, &p, precision, &view[0] if frames else qs, &q0, NULL, qs, ms)
    free(qs)
    free(ms)
    return (out, q0) if ok else None


def significant_decode(const int64_t[:] n, int precision, int64_t q0, const double[::1] table,
                       Py_ssize_t low, bint single):
    """Samples (float32 if ``single``, else float64) from indexes ``n`` (any int64)."""
    import numpy as np

    cdef Powers p = powers_of(table, low)
    cdef Py_ssize_t frames = n.shape[0], i
    cdef int64_t width = 9, first = 1
    cdef int j
    if not 1 <= precision <= MAX_DIGITS:
        raise ValueError("significant digits: precision in [1, 17]")
    for j in range(precision - 1):
        width *= 10
        first *= 10
    out = np.empty(frames, dtype=np.float32 if single else np.float64)
    cdef float[::1] out32
    cdef double[::1] out64
    if single:
        out32 = out
        with nogil:
            for i in range(frames):
                out32[i] = <float>decode_significant(n[i], &p, width, first, q0)
    else:
        out64 = out
        with nogil:
            for i in range(frames):
                out64[i] = decode_significant(n[i], &p, width, first, q0)
    return out


cdef int64_t round_trip_misses(const floating[:] x, const Powers* p, int precision,
                               const int64_t* decades) noexcept nogil:
    """How many samples do not come back bit for bit through encode_significant and
    decode_significant at ``precision`` (all of them when the indexes do not fit), in one
    pass: where the indexes fit, decoding one gives back the very ``m`` and ``q`` encoding
    found (``0 <= m - 10**(P-1) < width``), so the sample comes back as ``m * 10**q`` (or
    ``m / 10**-q``) with the sign of its index, and a zero as +0.0."""
    cdef Py_ssize_t frames = x.shape[0], i
    cdef int64_t q = 0, q0 = 0, qmax = 0, width = 9, misses = 0, span
    cdef double magnitude, m, back, power
    cdef bint any_nonzero = False
    cdef int j
    for j in range(precision - 1):
        width *= 10
    for i in range(frames):
        magnitude = fabs(<double>x[i])
        if magnitude > 0:
            m = digits(p, magnitude, decades[i], precision, &q)
            if not any_nonzero or q < q0:
                q0 = q
            if not any_nonzero or q > qmax:
                qmax = q
            any_nonzero = True
            power = power_of_ten(p, q if q >= 0 else -q)
            back = m / power if q < 0 else m * power
            if copysign(1.0, <double>x[i]) < 0:
                back = -back
        else:
            back = 0.0
        if floating is float:
            misses += single_bits(<float>back) != single_bits(x[i])
        else:
            misses += float_bits(back) != float_bits(x[i])
    if any_nonzero:
        span = qmax - q0 + 1
        if span >= (<int64_t>1 << 61) // width + ((<int64_t>1 << 61) % width != 0) \
                or q0 < -32768 or q0 > 32767:
            return frames
    return misses


def significant_mismatches(const floating[:] x, int max_digits, const double[::1] table,
                           Py_ssize_t low):
    """For each precision 1 .. max_digits, how many finite samples ``x`` do not come back
    bit for bit through encode and decode (``len(x)`` where the indexes do not fit); stops
    after the first precision with none (as ``significant.choose_precision``'s loop)."""
    cdef Powers p = powers_of(table, low)
    cdef Py_ssize_t frames = x.shape[0], i
    cdef int precision
    cdef int64_t count
    cdef double magnitude
    if not 1 <= max_digits <= MAX_DIGITS or not all_finite(x):
        raise ValueError("significant digits: max_digits in [1, 17] and finite samples only")
    cdef int64_t* decades = <int64_t*>malloc((frames + 1) * sizeof(int64_t))
    if decades == NULL:
        raise MemoryError()
    with nogil:
        for i in range(frames):  # the decades do not depend on the precision
            magnitude = fabs(<double>x[i])
            decades[i] = decade(&p, magnitude) if magnitude > 0 else 0
    counts = []
    try:
        for precision in range(1, max_digits + 1):
            with nogil:
                count = round_trip_misses(x, &p, precision, decades)
            counts.append(count)
            if count == 0:
                break
    finally:
        free(decades)
    return counts


# -- dictionary and scaled-lattice probes (qres/codec/dictionary.py, scaled.py) ---------------------
#
# Both run on every integer channel and decide "no" on most: a dictionary needs at most one
# distinct value per 8 samples, and a scaled lattice of integers needs gaps of two or more
# between the distinct values. Counting distinct values in a hash set stops as soon as the
# count passes its limit (most channels pass it within a few hundred samples), where a sort
# of the whole channel would order every sample first.

cdef inline uint64_t slot_of(int64_t v, int shift) noexcept nogil:
    """Fibonacci hashing of an int64 into ``64 - shift`` bits."""
    return (<uint64_t>v * <uint64_t>0x9E3779B97F4A7C15) >> shift


def distinct_at_most(const int64_t[:] values, Py_ssize_t limit):
    """The ascending distinct values of ``values`` (int64) when there are at most ``limit`` of
    them, else None, decided as soon as the count passes ``limit``. Exactly
    ``dictionary.distinct(values)`` when it has at most ``limit`` entries."""
    import numpy as np

    cdef Py_ssize_t n = values.shape[0], i, count = 0, cap = 1, room
    cdef int shift = 64
    cdef uint64_t mask, at
    cdef int64_t v
    cdef int64_t* keys
    cdef unsigned char* used
    cdef bint over = False
    if limit < 0:
        return None
    room = limit + 1 if limit < n else n + 1
    while cap < 2 * room:
        cap *= 2
        shift -= 1
    mask = <uint64_t>(cap - 1)
    keys = <int64_t*>malloc(cap * sizeof(int64_t))
    used = <unsigned char*>malloc(cap)
    if keys == NULL or used == NULL:
        free(keys)
        free(used)
        raise MemoryError("distinct values: out of memory")
    with nogil:
        for i in range(cap):
            used[i] = 0
        for i in range(n):
            v = values[i]
            at = slot_of(v, shift) if shift < 64 else 0
            while used[at] and keys[at] != v:
                at = (at + 1) & mask
            if used[at]:
                continue
            used[at] = 1
            keys[at] = v
            count += 1
            if count > limit:
                over = True
                break
        if not over:
            count = 0
            for i in range(cap):
                if used[i]:
                    keys[count] = keys[i]
                    count += 1
            sort(keys, keys + count)
    try:
        if over:
            return None
        out = np.empty(count, dtype=np.int64)
        if count:
            memcpy(&typed(out)[0], keys, count * sizeof(int64_t))
        return out
    finally:
        free(keys)
        free(used)


cdef inline int64_t[::1] typed(out):
    return out


def tenth_gap(const int64_t[:] values):
    """The tenth-smallest gap between the ascending distinct ``values`` (the gap at index
    ``gaps // 10`` of their sorted gaps, as ``np.sort(np.diff(distinct(values)))`` orders
    them), or -1 when there are fewer than two gaps. The gaps must fit int64."""
    cdef Py_ssize_t n = values.shape[0], i, count
    cdef int64_t* buf = <int64_t*>malloc((n + 1) * sizeof(int64_t))
    cdef int64_t found = -1
    if buf == NULL:
        raise MemoryError("distinct gaps: out of memory")
    with nogil:
        for i in range(n):
            buf[i] = values[i]
        sort(buf, buf + n)
        count = 0
        for i in range(n):
            if count == 0 or buf[i] != buf[count - 1]:
                buf[count] = buf[i]
                count += 1
        if count > 2:  # more than one gap
            for i in range(count - 1):
                buf[i] = buf[i + 1] - buf[i]
            nth_element(buf, buf + (count - 1) // 10, buf + count - 1)
            found = buf[(count - 1) // 10]
    free(buf)
    return found


# -- the precision of decimal readings (mapping._choose_precision) ---------------------------------


def decimal_precision(const double[::1] k, exact, Py_ssize_t probe_size):
    """Significant digits ``P`` of the decimal integers ``k`` where ``exact``, or 16 (no
    rounding): ``mapping._choose_precision`` in one pass over the probe (every
    ``count // probe_size``-th exact sample), with histograms where numpy sorted and masked.
    The class means are the same divisions of exact integer sums."""
    import numpy as np

    cdef const unsigned char[::1] ok = np.ascontiguousarray(exact, dtype=np.bool_).view(np.uint8)
    cdef Py_ssize_t n = k.shape[0], i, seen = 0, stride = 1, total = 0, exact_count = 0
    cdef Py_ssize_t c, big, small, at, want, count
    cdef int64_t classes[MAX_DIGITS + 1]
    cdef int64_t zero_sums[MAX_DIGITS + 1]
    cdef int64_t significant[MAX_DIGITS + 1]
    cdef int64_t p
    cdef double v, mean_small, mean_big
    cdef int digits, zeros
    if ok.shape[0] != n:
        raise ValueError("decimal precision: exact must have one flag per decimal")
    for c in range(MAX_DIGITS + 1):
        classes[c] = 0
        zero_sums[c] = 0
        significant[c] = 0
    with nogil:
        for i in range(n):
            exact_count += ok[i] != 0
        if exact_count > probe_size:
            stride = exact_count // probe_size
        for i in range(n):
            if not ok[i]:
                continue
            seen += 1
            if (seen - 1) % stride:
                continue
            v = fabs(k[i])
            if not v >= 1:
                continue
            # digits: the powers 10**0 .. 10**16 not above v; zeros: how many of
            # 10**1 .. 10**15 divide it, at most digits - 1.
            digits = 0
            while digits < MAX_DIGITS and POW10[digits] <= v:
                digits += 1
            p = <int64_t>v
            zeros = 0
            while zeros < 15 and p % 10 == 0:  # 10**j divides p for j = 1 .. zeros
                zeros += 1
                p //= 10
            if zeros > digits - 1:
                zeros = digits - 1
            classes[digits] += 1
            zero_sums[digits] += zeros
            significant[digits - zeros] += 1
            total += 1
    if total == 0:
        return NO_ROUNDING
    # The two most common digit counts (ties: the fewer digits first, as a stable argsort).
    big = 0
    for c in range(1, MAX_DIGITS):
        if classes[c] > classes[big]:
            big = c
    small = 0 if big else 1
    for c in range(MAX_DIGITS):
        if c != big and classes[c] > classes[small]:
            small = c
    if classes[small] < (8 if total // 50 < 8 else total // 50):
        return NO_ROUNDING
    if small > big:
        big, small = small, big
    mean_small = <double>zero_sums[small] / <double>classes[small]
    mean_big = <double>zero_sums[big] / <double>classes[big]
    if (mean_big - mean_small) / <double>(big - small) < 0.5:
        return NO_ROUNDING
    # The 99.5th percentile of the significant digits (the sorted array at total*995//1000).
    want = (total * 995) // 1000
    count = 0
    for at in range(MAX_DIGITS + 1):
        count += significant[at]
        if count > want:
            break
    return NO_ROUNDING if at > NO_ROUNDING else at


# -- scaled lattices (scaled._fit) -----------------------------------------------------------------


cdef struct Partials:
    double* p
    Py_ssize_t n
    double special   # the sum of the non-finite terms
    double infinite  # the sum of the infinite terms
    bint overflow    # a finite sum overflowed


cdef void partials_add(Partials* s, double x) noexcept nogil:
    """Add ``x`` to the exact sum kept as non-overlapping partials (Shewchuk)."""
    cdef double keep = x, y, hi, lo, t
    cdef Py_ssize_t i = 0, j
    for j in range(s.n):
        y = s.p[j]
        if fabs(x) < fabs(y):
            t = x
            x = y
            y = t
        hi = x + y
        lo = y - (hi - x)
        if lo != 0.0:
            s.p[i] = lo
            i += 1
        x = hi
    s.n = i
    if x != 0.0:
        if not isfinite(x):
            # A term that is not finite (its own sum), or a finite sum that overflowed.
            if isfinite(keep):
                s.overflow = True
            else:
                if isinf(keep):
                    s.infinite += keep
                s.special += keep
            s.n = 0
        else:
            s.p[s.n] = x
            s.n += 1


cdef double partials_round(Partials* s) noexcept nogil:
    """The exact sum of the partials rounded to nearest, ties to even."""
    cdef Py_ssize_t n = s.n
    cdef double hi = 0.0, lo = 0.0, x, y, yr
    if n == 0:
        return 0.0
    n -= 1
    hi = s.p[n]
    while n > 0:
        x = hi
        n -= 1
        y = s.p[n]
        hi = x + y
        yr = hi - x
        lo = y - yr
        if lo != 0.0:
            break
    # A half-way case: the next partial has the rounding error's sign, so round away.
    if n > 0 and ((lo < 0.0 and s.p[n - 1] < 0.0) or (lo > 0.0 and s.p[n - 1] > 0.0)):
        y = lo * 2.0
        x = hi + y
        yr = x - hi
        if y == yr:
            hi = x
    return hi


cdef double exact_sum(const double* values, Py_ssize_t count, double* scratch) except? -1.0:
    """``math.fsum`` of ``values``: the correctly rounded sum (``scratch``: ``count`` doubles
    for the partials; at most ~40 are ever live). Raises as fsum does on an intermediate
    overflow or on -inf + inf."""
    cdef Partials s
    cdef Py_ssize_t i
    s.p = scratch
    s.n = 0
    s.special = 0.0
    s.infinite = 0.0
    s.overflow = False
    for i in range(count):
        partials_add(&s, values[i])
        if s.overflow:
            raise OverflowError("intermediate overflow in fsum")
    if s.special != 0.0:
        if s.infinite != s.infinite:
            raise ValueError("-inf + inf in fsum")
        return s.special
    return partials_round(&s)


def fsum_array(const double[::1] values):
    """``math.fsum`` of a float64 array (the tests check it against math.fsum)."""
    cdef double* scratch = <double*>malloc((values.shape[0] + 1) * sizeof(double))
    if scratch == NULL:
        raise MemoryError("fsum: out of memory")
    try:
        return exact_sum(&values[0] if values.shape[0] else NULL, values.shape[0], scratch)
    finally:
        free(scratch)


cdef int line_fit(const double* k, const double* r, Py_ssize_t n, double* scratch,
                  double* c_out, double* b_out) except -1:
    """scaled._line: least squares ``r = c + b*k`` with every sum exact (fsum); 1 when found,
    0 when degenerate. ``scratch``: 2 * n doubles."""
    cdef double* products = scratch + n
    cdef double sk, sr, skk, skr, det, b
    cdef Py_ssize_t i
    sk = exact_sum(k, n, scratch)
    sr = exact_sum(r, n, scratch)
    for i in range(n):
        products[i] = k[i] * k[i]
    skk = exact_sum(products, n, scratch)
    for i in range(n):
        products[i] = k[i] * r[i]
    skr = exact_sum(products, n, scratch)
    det = <double>n * skk - sk * sk
    if not det > 0:
        return 0
    b = (<double>n * skr - sk * sr) / det
    c_out[0] = (sr - b * sk) / <double>n
    b_out[0] = b
    return 1


cdef double near_zero(double a, double b) except? -1.0:
    """scaled._near_zero: ``a - b*round(a/b)`` when that product is finite, else ``a``
    (raising as Python's round does on an infinite or NaN quotient)."""
    cdef double q = a / b, shift
    if isinf(q):
        raise OverflowError("cannot convert float infinity to integer")
    if q != q:
        raise ValueError("cannot convert float NaN to integer")
    shift = rint(q)  # round() rounds half to even; the integer converts back exactly
    return a - b * shift if isfinite(b * shift) else a


cdef struct ScaledRules:
    double quantum    # how far a sample may sit from its lattice point by rounding
    double tolerance  # and how far more, in steps (scaled.TOLERANCE)
    double inliers    # the share of values the lattice must place (scaled.INLIERS)


cdef int fit_from(const double* values, Py_ssize_t n, double origin, double b0,
                  const ScaledRules* rules, double* work, double* a_out,
                  double* b_out) except -1:
    """scaled._fit_from over ``work`` (6 * n doubles): 1 with the lattice, 0 when none."""
    cdef double* rel = work
    cdef double* used_k = work + 2 * n
    cdef double* used_r = work + 3 * n
    cdef double* scratch = work + 4 * n
    cdef double c = 0.0, b = b0, reach = 16.0, limit, top, m, kv, d
    cdef int final = 0
    cdef Py_ssize_t i, used, inliers = 0
    cdef bint top_nan
    for i in range(n):
        rel[i] = values[i] - origin
    while final < 3:
        limit = rules.quantum + rules.tolerance * b
        used = 0
        inliers = 0
        top = 0.0
        top_nan = False
        for i in range(n):
            kv = rint((rel[i] - c) / b)
            m = fabs(kv)
            if m != m:
                top_nan = True
            elif m > top:
                top = m
            d = fabs(rel[i] - c - kv * b)
            if d <= limit:
                inliers += 1
                if m <= reach:
                    used_k[used] = kv
                    used_r[used] = rel[i]
                    used += 1
        if not line_fit(used_k, used_r, used, scratch, &c, &b) or not b > 0:
            return 0
        if not top_nan and n and reach >= top:
            final += 1
        reach *= 4
    if inliers < rules.inliers * n:
        return 0
    a_out[0] = near_zero(origin + c, b)
    b_out[0] = b
    return 1


def scaled_fit(const double[::1] values, double quantum, double tolerance, double inliers,
               double index_limit):
    """scaled._fit compiled: least-squares ``(a, b)`` through the ascending distinct finite
    ``values``, or None (the same elementwise binary64 operations, sums exact as fsum's).
    The rules are scaled.py's: ``quantum`` (rounding), ``tolerance``, ``inliers`` and
    ``index_limit``."""
    cdef Py_ssize_t n = values.shape[0], i, count = 0, origin, tried
    cdef double* work
    cdef double b0, span, total_gaps, total_steps, step, a, b
    cdef Py_ssize_t origins[3]
    cdef ScaledRules rules
    cdef int r
    rules.quantum = quantum
    rules.tolerance = tolerance
    rules.inliers = inliers
    if n < 3:
        return None
    work = <double*>malloc(6 * n * sizeof(double))
    if work == NULL:
        raise MemoryError("scaled lattice fit: out of memory")
    try:
        # The tenth-smallest gap (a few off-lattice values make a few small gaps).
        for i in range(n - 1):
            work[i] = values[i + 1] - values[i]
        nth_element(work, work + (n - 1) // 10, work + n - 1)
        b0 = work[(n - 1) // 10]
        span = values[n - 1] - values[0]
        if not (b0 > 4 * quantum and isfinite(span)) or span / b0 >= index_limit:
            return None
        # The mean step over the gaps of one to three steps (sums exact, in any order).
        for i in range(n - 1):
            step = rint((values[i + 1] - values[i]) / b0)
            if step >= 1 and step <= 3:
                work[n + count] = values[i + 1] - values[i]
                work[2 * n + count] = step
                count += 1
        total_gaps = exact_sum(work + n, count, work + 3 * n)
        total_steps = exact_sum(work + 2 * n, count, work + 3 * n)
        if total_steps == 0:
            raise ZeroDivisionError("float division by zero")
        b0 = total_gaps / total_steps
        origins[0] = n // 2
        origins[1] = 0
        origins[2] = n - 1
        for tried in range(3):
            origin = origins[tried]
            r = fit_from(&values[0], n, values[origin], b0, &rules, work, &a, &b)
            if r:
                return a, b
        return None
    finally:
        free(work)


# -- the scaled lattice's candidates and their probe -------------------------------------------


def limit_denominator(numerator, denominator, int64_t most):
    """``Fraction(n, d).limit_denominator(most)`` of a reduced ``n/d`` (``d > 0``) as ``(p, q)``
    in exact integer arithmetic (continued fractions; on a tie the convergent, as fractions
    does). In 64-bit integers when ``|n|, d <= 2**62``, ``|n/d| < 2**40`` and ``most <= 2**20``,
    in Python integers otherwise."""
    cdef int64_t limit = (<int64_t>1) << 62
    if most < 1:
        raise ValueError("max_denominator should be at least 1")
    if not (0 < denominator <= limit and -limit <= numerator <= limit and most <= (1 << 20)):
        return _limit_denominator_int(numerator, denominator, most)
    cdef int64_t n = numerator, d = denominator
    cdef int64_t p0 = 0, q0 = 1, p1 = 1, q1 = 0, a, r, k, far, d0 = d
    # |p| <= |n/d|*q + 1 < 2**61 for every convergent: no product below overflows.
    if (n if n >= 0 else -n) // d >= ((<int64_t>1) << 40):
        return _limit_denominator_int(numerator, denominator, most)
    if d <= most:
        return n, d
    while True:
        # floor(n / d): C division truncates, and only the first n may be negative.
        a = n // d
        r = n % d
        if r < 0:
            a -= 1
            r += d
        if q1 > 0 and a > (most - q0) // q1:
            break  # q0 + a*q1 > most
        p0, q0, p1, q1 = p1, q1, p0 + a * p1, q0 + a * q1
        n, d = d, r
    k = (most - q0) // q1
    far = q0 + k * q1
    # p1/q1 is within d/(q1*d0) of n/d, and the two bounds are 1/(q1*far) apart: the
    # convergent wins when 2*d*far <= d0 (integers, so d <= (d0 // 2) // far).
    if d <= (d0 // 2) // far:
        return p1, q1
    return p0 + k * p1, far


cdef _limit_denominator_int(n, d, most):
    """:func:`limit_denominator` in Python integers (any size)."""
    if d <= most:
        return n, d
    p0, q0, p1, q1, d0 = 0, 1, 1, 0, d
    while True:
        a = n // d
        q2 = q0 + a * q1
        if q2 > most:
            break
        p0, q0, p1, q1 = p1, q1, p0 + a * p1, q2
        n, d = d, n - a * d
    k = (most - q0) // q1
    if 2 * d * (q0 + k * q1) <= d0:
        return p1, q1
    return p0 + k * p1, q0 + k * q1


ctypedef fused probe_t:
    double
    float
    int64_t


cdef inline double round_even(double t) noexcept nogil:
    """``rint(t)`` in the default rounding mode, inline (without SSE4.1 ``rint`` is a library
    call, most of a lattice pass's time): below 2**52 adding and removing 2**52 rounds half to
    even (on the magnitude, which is symmetric, so the sign is put back, a zero's too);
    larger doubles, infinities and NaN are their own."""
    cdef double m = fabs(t)
    if m < 4503599627370496.0:
        return copysign((m + 4503599627370496.0) - 4503599627370496.0, t)
    return t


cdef Py_ssize_t hits_core(const probe_t[:] x, double a, double b, Py_ssize_t beat,
                          const int64_t[:] weights, bint weighted, Py_ssize_t total) noexcept nogil:
    """:func:`scaled_hits` once its weights are checked and summed to ``total``."""
    cdef Py_ssize_t i, n = x.shape[0], misses = 0, most = total - beat
    cdef double t, y, index_limit = 4503599627370496.0, int_limit = 4611686018427387904.0
    cdef bint same
    for i in range(n):
        t = round_even((<double>x[i] - a) / b)
        if t > index_limit:
            t = index_limit
        elif t < -index_limit:
            t = -index_limit
        elif t != t:
            t = -9223372036854775808.0  # numpy's int64 of NaN on this platform
        y = t * b
        y = y + a
        if probe_t is int64_t:
            y = round_even(y)
            if y > int_limit:
                y = int_limit
            elif y < -int_limit:
                y = -int_limit
            elif y != y:
                y = 0.0
            same = <int64_t>y == x[i]
        elif probe_t is float:
            same = <float>y == x[i]
        else:
            same = y == x[i]
        if weighted:
            misses += (not same) * weights[i]  # branch-free: hits and misses mix
        else:
            misses += not same
        if misses >= most:
            break
    return total - misses


def scaled_hits(const probe_t[:] x, double a, double b, Py_ssize_t beat,
                const int64_t[:] weights=None):
    """How many samples ``x`` the lattice ``(a, b)`` reproduces: ``decode(codes(x, a, b), a, b)
    == x`` of qres.codec.scaled in one pass (the same binary64 operations: codes ``rint((x -
    a) / b)`` clipped to +-2**52, samples ``b*n + a`` rounded to the type; integer samples
    ``rint``, clipped to +-2**62, NaN as 0). ``weights``: how many samples each ``x`` stands
    for (distinct values of a probe and their counts; None: one each). Stops once the count
    cannot pass ``beat`` and then returns a count of at most ``beat``."""
    cdef Py_ssize_t i, n = x.shape[0], total = n
    cdef bint weighted = weights is not None
    if weighted:
        if weights.shape[0] != n:
            raise ValueError("one weight per sample")
        total = 0
        for i in range(n):
            total += weights[i]
    with nogil:
        total = hits_core(x, a, b, beat, weights, weighted, total)
    return total


def sorted_ranks(const int64_t[:] view, const int64_t[::1] values):
    """``np.searchsorted(values, view)`` (side left) as int64, for ascending distinct
    ``values``: through a table of every rank from the least value to the greatest when that
    span is at most a few times the samples, else by binary search."""
    import numpy as np

    out = np.zeros(view.shape[0], dtype=np.int64)
    cdef int64_t[::1] r = out
    if view.shape[0]:
        ranks_core(view, values, &r[0])  # the same table or search as the costs' pass
    return out


# -- integer channels: the views' probes and costs in single passes (mapping._integer_views) -------
#
# An integer channel tries a scaled lattice (kind 7) and a dictionary (kind 8) against its plain
# integers. In numpy each step of the two was a pass of its own over the channel (codes, decode,
# correction, three bit costs; a sort of the probe, two hash passes, the ranks); these kernels
# give the same integers in one pass each. Their numpy references: scaled.codes / scaled.decode
# and bit_cost, dictionary.distinct_counts, np.searchsorted (tests/test_mapping.py).

cdef uint64_t DEBRUIJN = 0x03F79D71B4CB0A89
cdef int DEBRUIJN_INDEX[64]


cdef void debruijn_table() noexcept:
    cdef int j
    cdef uint64_t one = 1
    for j in range(64):
        DEBRUIJN_INDEX[((one << j) * DEBRUIJN) >> 58] = j


debruijn_table()


cdef inline int lowest_bit(uint64_t w) noexcept nogil:
    """The index of the lowest set bit of a nonzero word (de Bruijn multiplication)."""
    return DEBRUIJN_INDEX[((w & (~w + 1)) * DEBRUIJN) >> 58]


def integer_costs(const int64_t[:] x):
    """``(bit_cost(x, True), changes)``: the plain integers' size estimate and how many samples
    differ from the one before (each such difference costs a dictionary's ranks a bit or more)."""
    cdef Py_ssize_t n = x.shape[0], i
    cdef int64_t total = 0, changes = 0, d
    with nogil:
        for i in range(1, n):
            d = <int64_t>(<uint64_t>x[i] - <uint64_t>x[i - 1])
            if d != 0:
                total += bit_length(d)
                changes += 1
    return total + (n - 1 if n > 0 else 0) // 8, changes


def distinct_counts_int(const int64_t[:] x):
    """``dictionary.distinct_counts(x)`` for int64 samples: the ascending distinct values and how
    many times each occurs (int64 both). Samples that span little are counted on a bitmap of
    their span, others sorted."""
    import numpy as np

    cdef Py_ssize_t n = x.shape[0], i, count = 0, words, w
    cdef int64_t low, high, v
    cdef uint64_t span, off, bits
    cdef uint64_t* seen = NULL
    cdef int64_t* tally = NULL
    cdef int64_t* buf = NULL
    if n == 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    low = high = x[0]
    for i in range(1, n):
        v = x[i]
        low = v if v < low else low
        high = v if v > high else high
    span = <uint64_t>high - <uint64_t>low
    values = np.empty(n, dtype=np.int64)
    counts = np.empty(n, dtype=np.int64)
    cdef int64_t[::1] vo = values, co = counts
    if span < <uint64_t>(4 * n + 4096):
        words = <Py_ssize_t>(span // 64) + 1
        seen = <uint64_t*>malloc(words * sizeof(uint64_t))
        tally = <int64_t*>malloc((span + 1) * sizeof(int64_t))
        if seen == NULL or tally == NULL:
            free(seen)
            free(tally)
            raise MemoryError("distinct counts: out of memory")
        with nogil:
            for w in range(words):
                seen[w] = 0
            for i in range(n):
                off = <uint64_t>x[i] - <uint64_t>low
                bits = <uint64_t>1 << (off & 63)
                if seen[off >> 6] & bits:
                    tally[off] += 1
                else:
                    seen[off >> 6] |= bits
                    tally[off] = 1
            for w in range(words):
                bits = seen[w]
                while bits:
                    off = (<uint64_t>w << 6) + <uint64_t>lowest_bit(bits)
                    bits &= bits - 1
                    vo[count] = <int64_t>(<uint64_t>low + off)
                    co[count] = tally[off]
                    count += 1
        free(seen)
        free(tally)
    else:
        buf = <int64_t*>malloc(n * sizeof(int64_t))
        if buf == NULL:
            raise MemoryError("distinct counts: out of memory")
        with nogil:
            for i in range(n):
                buf[i] = x[i]
            sort(buf, buf + n)
            for i in range(n):
                if count and buf[i] == vo[count - 1]:
                    co[count - 1] += 1
                else:
                    vo[count] = buf[i]
                    co[count] = 1
                    count += 1
        free(buf)
    return values[:count].copy(), counts[:count].copy()


cdef int64_t ranks_core(const int64_t[:] view, const int64_t[::1] values, int64_t* out) except? -2:
    """The ranks ``np.searchsorted(values, view)`` of ascending distinct ``values`` written to
    ``out`` (when not NULL) and the sum of the bit lengths of their first differences: through a
    table of every rank from the least value to the greatest when that span is at most a few
    times the samples, else by binary search."""
    cdef Py_ssize_t n = view.shape[0], m = values.shape[0], i, j, lo_i, hi_i, mid
    cdef uint64_t span, s
    cdef int64_t v, low, r, prev = 0, total = 0
    cdef int64_t* dense = NULL
    if m == 0 or n == 0:
        if out != NULL:
            for i in range(n):
                out[i] = 0
        return 0
    low = values[0]
    span = <uint64_t>values[m - 1] - <uint64_t>low
    if span < <uint64_t>(4 * n + 4096):
        dense = <int64_t*>malloc((span + 1) * sizeof(int64_t))
        if dense == NULL:
            raise MemoryError("ranks: out of memory")
    with nogil:
        if dense != NULL:
            j = 0
            for s in range(span + 1):
                while values[j] < <int64_t>(<uint64_t>low + s):
                    j += 1
                dense[s] = j
        for i in range(n):
            v = view[i]
            if v < low:
                r = 0
            elif v > values[m - 1]:
                r = m
            elif dense != NULL:
                r = dense[<uint64_t>v - <uint64_t>low]
            else:
                lo_i, hi_i = 0, m
                while lo_i < hi_i:
                    mid = (lo_i + hi_i) // 2
                    if values[mid] < v:
                        lo_i = mid + 1
                    else:
                        hi_i = mid
                r = lo_i
            if out != NULL:
                out[i] = r
            if i:
                total += bit_length(r - prev)
            prev = r
    free(dense)
    return total


def rank_bit_cost(const int64_t[:] view, const int64_t[::1] values):
    """``bit_cost(np.searchsorted(values, view), True)`` for ascending distinct ``values``,
    without the ranks themselves (a dictionary's size estimate before it is known to win)."""
    cdef Py_ssize_t n = view.shape[0]
    return ranks_core(view, values, NULL) + (n - 1 if n > 0 else 0) // 8


cdef inline int64_t scaled_code(int64_t v, double a, double b, int64_t* correction) noexcept nogil:
    """One sample's code ``rint((v - a) / b)`` clipped to +-2**52 (numpy's int64 of NaN for
    NaN) and its correction ``v - rint(b*code + a)`` (clipped to +-2**62, NaN as 0)."""
    cdef double t, y, index_limit = 4503599627370496.0, int_limit = 4611686018427387904.0
    cdef int64_t k
    t = round_even((<double>v - a) / b)
    if t > index_limit:
        t = index_limit
    elif t < -index_limit:
        t = -index_limit
    if t != t:
        k = <int64_t>0x8000000000000000  # numpy's int64 of NaN on this platform
    else:
        k = <int64_t>t
    y = <double>k * b
    y = y + a
    y = round_even(y)
    if y > int_limit:
        y = int_limit
    elif y < -int_limit:
        y = -int_limit
    elif y != y:
        y = 0.0
    correction[0] = <int64_t>(<uint64_t>v - <uint64_t><int64_t>y)
    return k


def scaled_integer_encode(const int64_t[:] x, double a, double b):
    """An integer channel on the scaled lattice ``(a, b)`` in one pass: ``(codes, correction,
    bit_cost(codes, True), bit_cost(correction, False))``, where the codes are
    ``scaled.codes(x, a, b)`` and the correction ``x - scaled.decode(codes, a, b, dtype)`` (the
    same binary64 operations; int64 differences wrap as numpy's), None when it is all zero.
    A sample's code and correction depend on its value alone: when the samples span little,
    each value is computed once, in a table over the span."""
    import numpy as np

    cdef Py_ssize_t n = x.shape[0], i
    cdef int64_t k, c, v, low = 0, high = 0, prev = 0, code_bits = 0, correction_bits = 0
    cdef uint64_t span = 0, off
    cdef bint any_correction = False
    cdef int64_t* table = NULL  # per value of the span: code, correction, its bit length
    cdef unsigned char* known = NULL
    codes = np.empty(n, dtype=np.int64)
    correction = np.empty(n, dtype=np.int64)
    cdef int64_t[::1] no = codes, co = correction
    if n:
        low = high = x[0]
        for i in range(1, n):
            v = x[i]
            low = v if v < low else low
            high = v if v > high else high
        span = <uint64_t>high - <uint64_t>low
        if span < <uint64_t>n:
            table = <int64_t*>malloc(3 * (span + 1) * sizeof(int64_t))
            known = <unsigned char*>calloc(span + 1, 1)
            if table == NULL or known == NULL:
                free(table)
                free(known)
                raise MemoryError("scaled codes: out of memory")
    with nogil:
        for i in range(n):
            if table != NULL:
                off = <uint64_t>x[i] - <uint64_t>low
                if not known[off]:
                    known[off] = 1
                    table[3 * off] = scaled_code(x[i], a, b, &table[3 * off + 1])
                    table[3 * off + 2] = bit_length(table[3 * off + 1])
                k = table[3 * off]
                c = table[3 * off + 1]
                correction_bits += table[3 * off + 2]
            else:
                k = scaled_code(x[i], a, b, &c)
                correction_bits += bit_length(c)
            no[i] = k
            co[i] = c
            any_correction |= c != 0
            if i:
                code_bits += bit_length(<int64_t>(<uint64_t>k - <uint64_t>prev))
            prev = k
    free(table)
    free(known)
    code_bits += (n - 1 if n > 0 else 0) // 8
    correction_bits += n // 8
    return codes, (correction if any_correction else None), code_bits, correction_bits


def scaled_best(const probe_t[:] values, const int64_t[:] counts, const double[:] offsets,
                const double[:] steps):
    """The lattice search of ``scaled.find`` over its candidates ``(offsets[j], steps[j])``: the
    index of the first candidate that reproduces the most of the probe (its distinct
    ``values``, each weighing its ``counts``), more than half of it; -1 when none does. Each
    candidate is tried as ``scaled_hits`` tries it, against the best count so far; a finite
    candidate with a positive step only; the search stops at one that reproduces all."""
    cdef Py_ssize_t j, best = -1, total = 0, hits, same
    if counts.shape[0] != values.shape[0] or steps.shape[0] != offsets.shape[0]:
        raise ValueError("one count per value and one step per offset")
    for j in range(counts.shape[0]):
        total += counts[j]
    hits = total // 2
    for j in range(offsets.shape[0]):
        if not (isfinite(offsets[j]) and isfinite(steps[j]) and steps[j] > 0):
            continue
        with nogil:
            same = hits_core(values, offsets[j], steps[j], hits, counts, True, total)
        if same > hits:
            best, hits = j, same
            if same == total:
                break
    return best


def sorted_runs(const double[::1] ordered):
    """The runs of equal values of an ascending float64 array: the first value of each run and
    its length (int64), as ``dictionary.distinct_counts`` takes them from the sorted probe
    (runs break where ``!=`` holds: -0.0 joins 0.0, each NaN is a run of its own)."""
    import numpy as np

    cdef Py_ssize_t n = ordered.shape[0], i, count = 0
    values = np.empty(n, dtype=np.float64)
    counts = np.empty(n, dtype=np.int64)
    cdef double[::1] vo = values
    cdef int64_t[::1] co = counts
    with nogil:
        for i in range(n):
            if count and not (ordered[i] != ordered[i - 1]):
                co[count - 1] += 1
            else:
                vo[count] = ordered[i]
                co[count] = 1
                count += 1
    return values[:count].copy(), counts[:count].copy()
