"""Scaled lattices: samples that are integer codes times a common scale, plus an offset.

A converter's codes stored as floats (``x = (code + 0.5) * 10 / 4095`` volts, counts times a
calibration constant) sit on a lattice ``a + b*n`` whose step is not a power of ten: the
decimal lattice (kind 1) sees them as 7-9 significant digits of noise, and the bit view as
smooth but wide integers. Calibrated integer readings (accelerations in mg written as
``rint(code * 9.81)``) are the same lattice rounded to integers, with steps of 9 and 10 that no
common divisor describes. Kind 7 gives the predictor the code ``n`` itself:

    x = round_to_type(a + b*n)   (binary64: one multiplication, then one addition, no fused
                                  multiply-add; float types: the type's nearest value;
                                  integer types: rint, half to even)

and a correction stream (ulps of a float type, units of an integer type) makes every sample
exact (outliers, values written by another formula, -0.0). The step is found exactly when it
can be: the fit over the distinct values is snapped to nearby simple fractions (``10/4095``,
``5/16384``), and the candidate ``(a, b)`` that reproduces the most sampled values wins.

All choices use exact rational arithmetic, ``math.fsum`` and elementwise IEEE-754 operations,
so the same block gives the same bytes on every machine.
"""

from __future__ import annotations

import math
from fractions import Fraction

from qres.codec._mapping_kernels import limit_denominator, scaled_hits
from qres.codec.dictionary import distinct_counts, probe_index

#: Samples looked at to find the lattice (evenly spaced over the channel).
PROBE = 4096
#: A lattice must place at least this share of the probe's distinct values within
#: TOLERANCE steps of its points.
INLIERS = 0.5
TOLERANCE = 0.01
#: Codes must stay exact in binary64.
INDEX_LIMIT = 2.0**52
#: Denominators tried when snapping the fitted step (and the offset, in steps) to a fraction.
DENOMINATORS = (16, 256, 4096, 65536, 1 << 20)
OFFSET_DENOMINATORS = (2, 4, 8, 64)
#: Samples at the head of an integer channel's probe that must show gaps of two or more.
_HEAD = 512


def _probe(x, size: int = PROBE):
    if len(x) <= size:
        return x
    return x[probe_index(len(x), size)]


def _fit(values, quantum: float) -> tuple[float, float] | None:
    """Least-squares ``(a, b)`` through the sorted distinct finite ``values``, from their
    typical gap; None when most of them are not near one lattice. ``quantum``: how far a
    sample may sit from its lattice point by rounding (0.5 for integer samples). Compiled
    (``qres.codec._mapping_kernels.scaled_fit``: the same binary64 operations, its sums
    exact as fsum's); :func:`fit_numpy` is the reference."""
    import numpy as np

    from qres.codec._mapping_kernels import scaled_fit

    values = np.ascontiguousarray(values, dtype=np.float64)
    return scaled_fit(values, quantum, TOLERANCE, INLIERS, INDEX_LIMIT)


def fit_numpy(values, quantum: float) -> tuple[float, float] | None:
    """:func:`_fit` in numpy and ``math.fsum`` (the reference of the compiled fit)."""
    import numpy as np

    if len(values) < 3:
        return None
    gaps = np.diff(values)
    # The tenth-smallest gap: a few off-lattice values make a few small gaps, and most gaps
    # of a lattice are its step (consecutive codes) or multiples of it.
    b0 = float(np.sort(gaps)[len(gaps) // 10])
    span = float(values[-1] - values[0])
    if not (b0 > 4 * quantum and math.isfinite(span)) or span / b0 >= INDEX_LIMIT:
        return None
    # Rounded samples make gaps of a step and a quantum either way: their mean over the
    # gaps of one to three steps is the step.
    steps = np.rint(gaps / b0)
    short = (steps >= 1) & (steps <= 3)
    b0 = math.fsum(gaps[short].tolist()) / math.fsum(steps[short].tolist())
    # The lattice is measured from one of its points: the middle value, else the first or
    # the last (one of them is on the lattice unless most values are off it).
    for origin in dict.fromkeys((len(values) // 2, 0, len(values) - 1)):
        found = _fit_from(values, float(values[origin]), b0, quantum)
        if found is not None:
            return found
    return None


def _line(k, r) -> tuple[float, float] | None:
    """Least squares ``r = c + b*k`` (sums with math.fsum): ``(c, b)``, None if degenerate."""
    n = len(k)
    sk, sr = math.fsum(k.tolist()), math.fsum(r.tolist())
    skk, skr = math.fsum((k * k).tolist()), math.fsum((k * r).tolist())
    det = n * skk - sk * sk
    if not det > 0:
        return None
    b = (n * skr - sk * sr) / det
    return (sr - b * sk) / n, b


def _fit_from(values, origin: float, b0: float, quantum: float) -> tuple[float, float] | None:
    import numpy as np

    rel = values - origin
    # One gap carries the samples' rounding; over thousands of steps that error adds up, so
    # the line is refined on values ever farther from the origin (reach 16, 64, ... steps),
    # then twice on all of them.
    c, b, reach, final = 0.0, b0, 16.0, 0
    while final < 3:
        k = np.rint((rel - c) / b)
        near = np.abs(rel - c - k * b) <= quantum + TOLERANCE * b
        use = near & (np.abs(k) <= reach)
        line = _line(k[use], rel[use])
        if line is None or not line[1] > 0:
            return None
        c, b = line
        if reach >= float(np.abs(k).max()):
            final += 1
        reach *= 4
    if near.sum() < INLIERS * len(values):
        return None
    return _near_zero(origin + c, b), b


def _near_zero(a: float, b: float) -> float:
    """The lattice's offset moved next to zero (so the codes are the lattice's own)."""
    shift = round(a / b)
    return a - b * shift if math.isfinite(b * shift) else a


def _candidates(a: float, b: float) -> list[tuple[float, float]]:
    """The lattice's snaps to simple fractions (steps, and offsets in steps), simplest
    first, then the fitted lattice itself: on a tie the simplest wins (the probe cannot tell
    them apart, the rest of the channel may). Exact integer arithmetic (compiled continued
    fractions, Python integers, correctly rounded int divisions): the same floats as
    :func:`candidates_fraction`, its reference."""
    bn, bd = b.as_integer_ratio()
    steps = []
    for d in DENOMINATORS:
        p, q = limit_denominator(bn, bd, d)
        # |p/q - bn/bd| <= (bn/bd) / 2**22, cleared of its (positive) denominators.
        if p > 0 and abs(p * bd - bn * q) << 22 <= bn * q:
            steps.append(p / q)
    out = []
    for step in dict.fromkeys([*steps, b]):
        base = _near_zero(a, step)
        offsets = [0.0]
        rn, rd = (base / step).as_integer_ratio() if math.isfinite(base / step) else (0, 1)
        sn, sd = step.as_integer_ratio()
        for d in OFFSET_DENOMINATORS:
            p, q = limit_denominator(rn, rd, d)
            offsets.append((p * sn) / (q * sd))
        out += [(off, step) for off in dict.fromkeys([*offsets, base])]
    return out


def candidates_fraction(a: float, b: float) -> list[tuple[float, float]]:
    """:func:`_candidates` in ``fractions.Fraction`` arithmetic (its reference)."""
    steps = []
    exact = Fraction(b)
    for d in DENOMINATORS:
        f = exact.limit_denominator(d)
        if f > 0 and abs(f - exact) <= exact * Fraction(1, 1 << 22):
            steps.append(float(f))
    out = []
    for step in dict.fromkeys([*steps, b]):
        base = _near_zero(a, step)
        offsets = [0.0]
        ratio = Fraction(base / step) if math.isfinite(base / step) else Fraction(0)
        for d in OFFSET_DENOMINATORS:
            offsets.append(float(ratio.limit_denominator(d) * Fraction(step)))
        out += [(off, step) for off in dict.fromkeys([*offsets, base])]
    return out


def decode(n, a: float, b: float, dtype: str):
    """Samples ``a + b*n`` of codes ``n`` (any int64: damage gives garbage, never an error),
    rounded to the sample type: float samples as the type's nearest, integer samples as int64
    (rounded half to even, clipped to +-2**62; the caller checks the type's range)."""
    import numpy as np

    t = n.astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        np.multiply(t, b, out=t)
        np.add(t, a, out=t)
        if np.dtype(dtype).kind == "f":
            return t.astype(dtype)
        np.rint(t, out=t)
        np.clip(t, -(2.0**62), 2.0**62, out=t)
        t[np.isnan(t)] = 0.0
        return t.astype(np.int64)


def codes(x, a: float, b: float):
    """The lattice codes of finite samples ``x``: ``rint((x - a) / b)``, clipped to the
    exact range of binary64."""
    import numpy as np

    with np.errstate(over="ignore", invalid="ignore"):
        t = np.rint((x.astype(np.float64) - a) / b)
    np.clip(t, -INDEX_LIMIT, INDEX_LIMIT, out=t)
    return t.astype(np.int64)


def hits_of(probe, a: float, b: float, dtype: str, beat: int = -1, counts=None) -> int:
    """How many samples of ``probe`` the lattice ``(a, b)`` reproduces (``decode(codes(probe))
    == probe``), each counted ``counts`` times (None: once); a count of at most ``beat`` when
    it cannot pass ``beat``. Compiled for binary64, binary32 and integer samples up to 32 bits
    (``scaled_hits``), numpy otherwise (:func:`hits_numpy`, its reference)."""
    import numpy as np

    kind = np.dtype(dtype)
    if (kind in (np.float32, np.float64) and probe.dtype == kind) or (
        kind.kind in "iu" and kind.itemsize <= 4 and probe.dtype == np.int64
    ):
        return scaled_hits(probe, a, b, beat, counts)
    return hits_numpy(probe if counts is None else np.repeat(probe, counts), a, b, dtype)


def hits_numpy(probe, a: float, b: float, dtype: str) -> int:
    """:func:`hits_of` in numpy: the samples of ``probe`` that decode to themselves."""
    import numpy as np

    return int(np.count_nonzero(decode(codes(probe, a, b), a, b, dtype) == probe))


def find(x, dtype: str, known_step: float | None = None) -> tuple[float, float] | None:
    """The lattice ``(a, b)`` that reproduces the most of an evenly spaced probe of ``x``
    (finite samples), or None when there is none (fewer than half reproduced) or when its
    fitted step is ``known_step`` (within 1e-6: a lattice another view holds already).
    Integer samples need a step of at least 2 (finer lattices are the integers' own)."""
    return search(x, dtype, known_step)[0]


def search(x, dtype: str, known_step: float | None = None):
    """:func:`find`, and the ascending distinct values of an int64 probe when the search
    gathered them (None otherwise): the dictionary view asks for the same probe's values."""
    import numpy as np

    is_int = np.dtype(dtype).kind != "f"
    gathered = None
    if is_int:
        # Most integer channels step by one all over their first samples: no lattice (the
        # tenth-smallest gap, as in the fit: a few outliers make a few small gaps). Judged
        # on the probe's first samples before the rest of the probe is gathered.
        from qres.codec._mapping_kernels import tenth_gap

        head = x[:_HEAD] if len(x) <= PROBE else x[probe_index(len(x), PROBE)[:_HEAD]]
        if 0 <= tenth_gap(np.ascontiguousarray(head, dtype=np.int64)) < 2:
            return None, None
        probe = _probe(x)
    else:
        probe = _probe(x)
        probe = probe[np.isfinite(probe)]
    if is_int and probe.dtype == np.int64:
        from qres.codec._mapping_kernels import distinct_counts_int

        ints, counts = distinct_counts_int(probe)
        gathered = ints
        values = ints.astype(np.float64)
        if len(ints) and max(-int(ints[0]), int(ints[-1])) > 2**53:
            # Beyond 2**53 the float64 view merges neighbours: count the floats' distinct.
            values, counts = distinct_counts(values)
            gathered = None
    else:
        values, counts = distinct_counts(probe.astype(np.float64))
    fitted = _fit(values, 0.5 if is_int else 0.0)
    if fitted is None:
        return None, gathered
    if known_step is not None and abs(fitted[1] - known_step) <= 1e-6 * known_step:
        return None, gathered
    # A sample's hit depends on its value alone (equal floats code and decode alike, -0.0
    # as 0.0): each distinct value is tried once and counts for all its samples.
    values = values.astype(np.int64 if is_int else probe.dtype)
    candidates = _candidates(*fitted)
    kind = np.dtype(dtype)
    if candidates and (
        (kind in (np.float32, np.float64) and values.dtype == kind)
        or (kind.kind in "iu" and kind.itemsize <= 4 and values.dtype == np.int64)
    ):
        # The compiled search (the loop below, with scaled_hits' samples).
        from qres.codec._mapping_kernels import scaled_best

        pairs = np.array(candidates, dtype=np.float64)
        best = scaled_best(values, counts, pairs[:, 0], pairs[:, 1])
        return (candidates[best] if best >= 0 else None), gathered
    return best_of(candidates, values, counts, dtype, len(probe)), gathered


def best_of(candidates, values, counts, dtype: str, total: int) -> tuple[float, float] | None:
    """The first of ``candidates`` that reproduces the most of a probe (its distinct
    ``values`` and their ``counts``, ``total`` samples), more than half of it, else None
    (``_mapping_kernels.scaled_best`` compiles this loop)."""
    best, hits = None, total // 2
    for a, b in candidates:
        if not (math.isfinite(a) and math.isfinite(b) and b > 0):
            continue
        same = hits_of(values, a, b, dtype, hits, counts)
        if same > hits:
            best, hits = (a, b), same
            if same == total:
                break  # none can do better, and this one is the simplest that does it
    return best
