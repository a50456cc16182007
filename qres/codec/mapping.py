"""Integer mappings: how each channel of a block of samples becomes int64 for the predictor.

Integer samples are widened. Floats become integers losslessly through a *decimal lattice*:

* ``k = round(x * 10**d)``: the sample as a decimal integer (``d`` decimals, one per channel);
* ``k ~ round_P(a + b*n)``: the decimal integers lie on an affine lattice of step ``b``, and ``n``
  (the lattice index) is what the predictor sees. ``round_P`` rounds to ``P`` significant
  digits, as readings printed with ``%.8g`` are. The lattice is piecewise: each *segment* of
  the channel has its own ``(a, b)``, found from the data (series with their own scale, a
  change of resolution). ``a = 0, b = 1`` is plain decimal scaling;
* two correction streams make it exact: ``c = k - round_P(a + b*n)`` (decimal units; zero when
  the lattice holds) and ``u = bits(x) - bits(k / 10**d)`` (order-preserving IEEE-754 bits, in
  ulps; zero unless the sample is not the correctly rounded float of its decimal, as with
  float-repr noise like ``-6.5600000000000005``, NaN, infinities, -0.0 or values with more
  digits). Both are *extra* streams, coded after the channels only when not all zero.

A channel whose decimal view would cost more than its raw bits (random floats) is mapped through
an order-preserving integer view of its IEEE-754 bits instead. In bounded-error mode floats go
on a grid (``qres.codec.quantised.grid_step``; non-finite samples are kept verbatim).

The encoder's choices (decimals, precision, segments) are all made with exact or IEEE-754
elementwise arithmetic and sequential sums, so the same block gives the same bytes on every
machine; the decoder only evaluates ``round_P(a + b*n)`` elementwise. The lattice search and
the whole-channel passes run compiled in ``qres/codec/_mapping_kernels.pyx`` (the same binary64
operations in the same order; the numpy reference lives in ``tests/test_mapping.py``). The
layout of the side record is specified in ``docs/mapping.md``.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import attrs

from qres.codec.samples import StreamSpec
from qres.kernel.errors import IntegrityError

KIND_INTEGER = 0  # integer samples, widened to int64
KIND_DECIMAL = 1  # floats on a piecewise decimal lattice, with correction streams
KIND_FLOAT_BITS = 2  # floats as order-preserving integers of their IEEE-754 bits
KIND_FLOAT_GRID = 3  # bounded-error floats: k = round(x / step), exceptions kept verbatim
KIND_INTEGER_LATTICE = 4  # integers x = a + g*n with a common step g >= 2 (unused low bits)
KIND_RUNS = 5  # floats: runs of non-finite samples kept verbatim, then the rest's entry
KIND_SIGNIFICANT = 6  # floats as +-m * 10**q with P significant digits, an ordered index
KIND_SCALED = 7  # floats on a scaled lattice x = dtype(a + b*n): converter codes times a scale
KIND_DICTIONARY = 8  # few distinct values: their ranks, the table in the side record
KIND_RUN_TABLE = 9  # floats: runs of non-finite samples as coded streams, then the rest's entry
KIND_FLOAT_SHIFTED = 10  # floats whose bit patterns all end in z zero bits: the bit view >> z
KIND_NARROW = 11  # float64 samples that are all float32 values: the float32 entry of them
KINDS = (
    KIND_INTEGER,
    KIND_DECIMAL,
    KIND_FLOAT_BITS,
    KIND_FLOAT_GRID,
    KIND_INTEGER_LATTICE,
    KIND_RUNS,
    KIND_SIGNIFICANT,
    KIND_SCALED,
    KIND_DICTIONARY,
    KIND_RUN_TABLE,
    KIND_FLOAT_SHIFTED,
    KIND_NARROW,
)
#: The first container format version whose blocks may hold a kind (older ones: all others).
KIND_SINCE = {
    KIND_SCALED: 7,
    KIND_DICTIONARY: 8,
    KIND_RUN_TABLE: 11,
    KIND_FLOAT_SHIFTED: 11,
    KIND_NARROW: 11,
}


def allowed(kind: int, version: int | None) -> bool:
    """Whether a block of container format ``version`` (None: the newest) may hold ``kind``."""
    return version is None or KIND_SINCE.get(kind, 0) <= version


#: Largest decimal scale tried (10**d must be exact in float64 and k must stay below 2**53).
MAX_DECIMALS = {"float32": 10, "float64": 15}
#: ``P`` meaning "no rounding to significant digits" (k never has more than 16 digits).
NO_ROUNDING = 16
#: In bounded-error mode floats go on a grid (step E / GRID_DIVISIONS before format 10, about
#: 2E / (2 GRID_DIVISIONS - 1) from 10: qres.codec.quantised.grid_step); the predictor then
#: quantises with integer bound GRID_DIVISIONS - 1, so the total error is below E.
GRID_DIVISIONS = 8

#: Flags of a decimal channel: which correction streams follow the channels.
FLAG_DECIMAL_CORRECTION = 1  # the stream c (decimal units)
FLAG_ULP_CORRECTION = 2  # the stream u (ulps of the sample type)

_KIND = struct.Struct("<B")
_DECIMAL_HEAD = struct.Struct("<BBBI")  # decimals, precision, flags, segment count
_COUNT = struct.Struct("<I")
_INT_LATTICE = struct.Struct("<qQ")  # offset a, step g
_RUN = struct.Struct("<II")  # start, length
_SIGNIFICANT = struct.Struct("<BhB")  # digits P, lowest exponent q0, flags
_SCALED = struct.Struct("<ddB")  # offset a, step b, flags

#: Lattice windows tried at a segment start, then the fallback integer-gcd window.
_WINDOWS = (256, 1024)
#: A lattice must hold for this many samples (or the rest of the block) to open a segment.
_MIN_SEGMENT = 64
#: A lattice is kept when its step is at least this many rounding quanta.
_MIN_STEP_QUANTA = 4.0
#: Share of window gaps allowed to contradict a lattice (outliers become corrections).
_MAX_CONFLICTS = 0.02
#: A segment is refitted on all its samples when its window's fit misses more than this share.
_REFIT_FAILURES = 0.005
#: Most samples (evenly spaced) a segment's refit looks at.
_REFIT_SAMPLES = 8192
#: Samples used to choose the decimals and the precision of a channel.
_PROBE = 4096
_K_LIMIT = 2.0**52
#: A mostly inexact channel tries a decimal view when the probe's estimate is below this share
#: of the bit view's.
_INEXACT_GAIN = 0.85
#: The significant-digit view replaces the best other view when its estimate is below this
#: share of that view's.
_SIGNIFICANT_GAIN = 0.97
#: The significant-digit view of a long channel is screened on spans of _SCREEN_SPAN samples,
#: one every _SCREEN_EVERY, and computed whole when the screen is within _SCREEN_SLACK.
_SCREEN_SPAN = 1024
_SCREEN_EVERY = 8
_SCREEN_SLACK = 1.25
#: The shifted bit view replaces an exact view when its estimate is below this share of it.
_SHIFTED_GAIN = 0.7
#: A view whose correction streams correct at most one sample in this many counts as exact
#: (a -0.0 or a stray reading among integer-valued floats).
_MOSTLY_EXACT = 64
#: Bytes a coded stream takes beyond its values' bits (the range coder's flush, a checksum).
_STREAM_OVERHEAD = 4


@attrs.frozen
class ChannelMap:
    """How one channel of a block became integers.

    Decimal channels carry ``decimals``, ``precision`` (significant digits ``P``), ``flags``
    and their lattice segments (``starts`` uint32, ``offsets`` and ``steps`` float64); grid
    channels carry the positions and raw bytes of the samples kept verbatim.
    """

    kind: int
    decimals: int = 0
    precision: int = NO_ROUNDING
    flags: int = 0
    starts: Any = None
    offsets: Any = None
    steps: Any = None
    exception_index: Any = None
    exception_raw: bytes = b""
    offset: int = 0  # integer lattice: x = offset + step * n
    step: int = 1
    runs: Any = None  # runs of verbatim samples: (starts, lengths) uint32 arrays
    inner: ChannelMap | None = None  # the entry of the samples outside the runs
    lattice: Any = None  # scaled lattice: (a, b), x = dtype(a + b*n)
    table: Any = None  # dictionary: the distinct values' order-preserving int64 view, ascending
    run_count: int = 0  # run table: how many runs
    patterns: int = 0  # run table: how many distinct bit patterns the runs hold
    shift: int = 0  # shifted float bits: the zero bits every bit pattern ends in

    @property
    def extra_count(self) -> int:
        """How many extra streams this channel adds after the channels."""
        if self.kind in (KIND_RUNS, KIND_NARROW):
            return self.inner.extra_count
        if self.kind == KIND_RUN_TABLE:
            return self.inner.extra_count + _run_streams(self.patterns)
        if self.kind in (KIND_DECIMAL, KIND_SIGNIFICANT, KIND_SCALED):
            return bin(self.flags).count("1")
        return 0

    def extra_lengths(self, frames: int) -> tuple[int, ...]:
        """The sample count of each extra stream this channel adds, in order: the entry's
        own (``frames`` each), then a run table's (one sample per run each)."""
        if self.kind in (KIND_RUNS, KIND_RUN_TABLE, KIND_NARROW):
            own = _run_streams(self.patterns) if self.kind == KIND_RUN_TABLE else 0
            return self.inner.extra_lengths(frames) + (self.run_count,) * own
        return (frames,) * self.extra_count


@attrs.frozen
class Mapped:
    """A block mapped to integers: predictor input, side record and extra streams."""

    ints: Any  # int64 (channels, frames)
    side: bytes
    extras: tuple = ()  # 1-D int64 arrays coded after the channels


@attrs.frozen
class Side:
    """A parsed side record: the channel maps and the lengths of the extra streams."""

    maps: tuple[ChannelMap, ...]
    extra_lengths: tuple[int, ...] = ()


# -- float bit views ---------------------------------------------------------------------------


def _monotonic_bits(values, dtype: str):
    """Order-preserving signed integers of float bit patterns (an involution on the bits)."""
    import numpy as np

    native = values.astype(np.dtype(dtype), copy=False)
    if native.ndim == 1:
        from qres.codec._mapping_kernels import monotonic_bits

        return monotonic_bits(native)  # compiled: the same integers in one pass
    signed = np.int32 if dtype == "float32" else np.int64
    bits = values.astype(dtype, copy=False).view(signed)
    mask = np.array(np.iinfo(signed).max, dtype=signed)
    return (bits ^ ((bits >> (bits.dtype.itemsize * 8 - 1)) & mask)).astype(np.int64)


def _from_monotonic_bits(ints, dtype: str):
    import numpy as np

    signed = np.int32 if dtype == "float32" else np.int64
    bits = ints.astype(signed)
    mask = np.array(np.iinfo(signed).max, dtype=signed)
    return (bits ^ ((bits >> (bits.dtype.itemsize * 8 - 1)) & mask)).view(dtype)


def _forward_fill(values, bad):
    """``values`` with ``values[bad]`` replaced by the previous good value (0 before the first)."""
    import numpy as np

    if not bad.any():
        return values
    idx = np.where(~bad, np.arange(len(values)), -1)
    np.maximum.accumulate(idx, out=idx)
    return np.where(idx >= 0, values[np.maximum(idx, 0)], 0)


# -- decimal arithmetic ------------------------------------------------------------------------


_POW10: list = []


def _pow10():
    """Powers of ten 10**0 .. 10**22, all exact in float64 (built once, on first use)."""
    if not _POW10:
        import numpy as np

        _POW10.append(np.array([10.0**j for j in range(23)]))
    return _POW10[0]


def _round_significant(t, precision: int):
    """``t`` (float64 decimal units) rounded half-even to ``precision`` significant digits:
    ``rint(t / q) * q`` with ``q = 10**max(digits - precision, 0)``, where ``digits`` counts the
    powers ``10**0 .. 10**16`` not above ``|t|`` (one compiled pass)."""
    import numpy as np

    if precision >= NO_ROUNDING:
        return np.rint(t)
    from qres.codec._mapping_kernels import round_significant_array

    return round_significant_array(np.ascontiguousarray(t, dtype=np.float64), precision)


def _quantum(magnitude: float, precision: int) -> float:
    """The rounding quantum of ``round_P`` at a magnitude (1 without rounding)."""
    if precision >= NO_ROUNDING:
        return 1.0
    digits = len(str(int(magnitude))) if magnitude >= 1 else 0
    return 10.0 ** max(0, digits - precision)


def _total(values) -> float:
    """A sum in a fixed left-to-right order (numpy's pairwise ``sum`` may change between
    builds; the encoder's choices must not)."""
    import numpy as np

    return float(np.add.accumulate(values)[-1]) if len(values) else 0.0


def _decimal_view(x, dtype: str, d: int):
    """``k = round(x * 10**d)`` (float64) and the mask of samples exactly ``k / 10**d``."""
    import numpy as np

    wide = x.astype(np.float64)
    scale = 10.0**d
    with np.errstate(invalid="ignore", over="ignore"):
        k = np.rint(wide * scale) + 0.0  # + 0.0: the decoder's integer k has no -0
        fits = np.abs(k) < _K_LIMIT  # False for NaN and infinities too
        back = (np.where(fits, k, 0.0) / scale).astype(dtype)
    signed = np.int32 if dtype == "float32" else np.int64
    exact = fits & (back.view(signed) == x.view(signed))
    return k, fits, exact


def _choose_decimals(x, dtype: str) -> list[int]:
    """Candidate decimals of a channel, judged on an evenly spaced probe, most first: the count
    that
    minimises a size estimate of the plain decimal view (digits cost bits in every sample,
    inexact samples cost their ulp corrections), and the fewest that leave (almost) no more
    samples inexact than the most tried (best when a lattice absorbs the extra digits).
    Empty when too few samples are decimals at all."""
    import numpy as np

    from qres.codec._mapping_kernels import bit_cost, decimal_costs

    probe = x if len(x) <= _PROBE else x[:: len(x) // _PROBE]
    # Per count of decimals d, stopping at the first that leaves no sample inexact: how many
    # samples are not exactly k / 10**d, and _bit_cost(diff(k)) + _bit_cost(ulp corrections)
    # (compiled; the numpy formulation is the reference in tests/test_mapping.py).
    counts, costs = decimal_costs(probe, MAX_DECIMALS[dtype])
    best = min(counts)
    cheapest = min(range(len(costs)), key=costs.__getitem__)
    if best > len(probe) // 2:
        # Mostly inexact (averages, computed values): a decimal view whose ulp corrections
        # stay small can still beat the bit view; only the cheapest count is worth a try.
        bits = _monotonic_bits(np.ascontiguousarray(probe), dtype)
        if costs[cheapest] < _INEXACT_GAIN * bit_cost(bits, True):
            return [cheapest]
        return []
    slack = max(1, len(probe) // 1024)
    fewest = next(d for d, n in enumerate(counts) if n <= best + slack)
    return sorted({fewest, cheapest}, reverse=True)


def _choose_precision(k, exact) -> int:
    """Significant digits ``P`` of the decimal integers, or NO_ROUNDING for fixed decimals.

    Readings printed to ``P`` significant digits have more trailing zeros the larger they
    are (one more per digit of magnitude); readings with fixed decimals do not. The two most
    common magnitudes decide; ``P`` is then the 99.5th percentile of the significant digits.
    Compiled (one pass over the probe); :func:`_choose_precision_numpy` is the reference.
    """
    import numpy as np

    from qres.codec._mapping_kernels import decimal_precision

    return decimal_precision(np.ascontiguousarray(k, dtype=np.float64), exact, _PROBE)


def _choose_precision_numpy(k, exact) -> int:
    """:func:`_choose_precision` in numpy (the reference of the compiled pass)."""
    import numpy as np

    probe = np.abs(k[exact])
    if len(probe) > _PROBE:
        probe = probe[:: len(probe) // _PROBE]
    probe = probe[probe >= 1].astype(np.int64)
    if not len(probe):
        return NO_ROUNDING
    digits = np.searchsorted(_pow10()[:17], probe.astype(np.float64), side="right")
    zeros = np.zeros(len(probe), dtype=np.int64)
    for j in range(1, 16):
        zeros += (probe % (10**j)) == 0
    zeros = np.minimum(zeros, digits - 1)
    classes = np.bincount(digits, minlength=17)
    big, small = (int(c) for c in np.argsort(-classes, kind="stable")[:2])
    if classes[small] < max(8, len(probe) // 50):
        return NO_ROUNDING
    if small > big:
        big, small = small, big
    mean_zeros = [_total(zeros[digits == c]) / classes[c] for c in (small, big)]
    if (mean_zeros[1] - mean_zeros[0]) / (big - small) < 0.5:
        return NO_ROUNDING
    significant = np.sort(digits - zeros)
    return min(NO_ROUNDING, int(significant[(len(significant) * 995) // 1000]))


# -- lattice search ----------------------------------------------------------------------------


def _lattice_step(values, precision: int) -> tuple[float, float] | None:
    """The coarsest lattice step that the distinct values of a window sit on (up to rounding
    to ``precision`` digits and a few outliers) and its uncertainty, or None.

    Seeds are the smallest distinct gaps of at least four rounding quanta; each is refined on
    the gaps it explains (sums over chains of consecutive gaps are exact up to the noise at the
    chain's ends, so the step sharpens as longer gaps become trustworthy) and, when too many
    gaps contradict it, replaced by its approximate gcd with the first contradicting gap. The
    loops run compiled (``qres.codec._mapping_kernels``; the numpy reference is in the tests)."""
    from qres.codec._mapping_kernels import lattice_step

    return lattice_step(values, precision)


def _integer_step(values) -> tuple[float, float] | None:
    """The exact gcd of the gaps between integer-valued decimals (1: the decimal grid)."""
    import numpy as np

    u = np.unique(values)
    if len(u) < 2:
        return None
    step = int(np.gcd.reduce(np.diff(u).astype(np.int64)))
    return (float(step), 0.0) if step >= 1 else None


def _fit(values, step: float, err: float, precision: int):
    """Least-squares ``(a, b, uncertainty of b)`` of ``values ~ a + b*n`` from an approximate
    step, or None, with the origin moved next to zero (so ``n ~ value / b`` and segments of one
    scale line up). The fit starts at the median sample; values farther away join only
    once the step is sharp enough to count the lattice steps to them without doubt. Each
    value weighs by its rounding quantum (coarser roundings say less about the lattice). The
    result is then moved into the middle of the region where every value's rounding interval
    holds its lattice point (least squares only gets close; values near a rounding boundary
    need the exact middle). Compiled, as :func:`_lattice_step`."""
    from qres.codec._mapping_kernels import fit

    return fit(values, step, err, precision)


def _count_reproduced(k, a: float, b: float, precision: int) -> int:
    """How many decimals ``k`` the lattice reproduces exactly: ``round_P(a + b*n) == k`` with
    ``n = rint((k - a) / b)``."""
    from qres.codec._mapping_kernels import count_reproduced

    return count_reproduced(k, a, b, precision)


def _segment_end(k, start: int, a: float, b: float, precision: int) -> tuple[int, int]:
    """Where the lattice stops holding: the first failure that starts a run of three or more
    failures among four samples (isolated outliers stay in the segment as corrections).
    Returns the end and the number of failures before it."""
    from qres.codec._mapping_kernels import segment_end

    return segment_end(k, start, a, b, precision)


def _candidate(k, usable, pos: int, size: int, finder, precision: int):
    """A lattice fitted to the window of ``size`` samples at ``pos`` and where it stops
    holding: (end, (a, b, uncertainty), failures before the end) or None."""
    window = k[pos : pos + size][usable[pos : pos + size]]
    if len(window) < 8:
        return None
    step = _integer_step(window) if finder is None else finder(window, precision)
    fit = None if step is None else _fit(window, *step, precision)
    if fit is None:
        return None
    end, failures = _segment_end(k, pos, fit[0], fit[1], precision)
    if end - pos < min(_MIN_SEGMENT, len(k) - pos):
        return None
    return end, fit, failures


def _best_lattice(k, usable, pos: int, precision: int, fallback_reach: int):
    """The lattice to open a segment at ``pos`` with: the coarsest one found in the windows
    that holds long enough. A small window sees one series; a large one fits more precisely
    but may straddle a change of series, where only a common fine lattice fits. Returns
    (end, fit, failures, is_fallback) or None."""
    best = None
    for size in _WINDOWS:
        if best is not None and best[0] >= pos + size:
            break  # the larger window lies inside the segment found: same lattice
        found = _candidate(k, usable, pos, size, _lattice_step, precision)
        if found is not None and (best is None or found[1][1] > best[1][1] * 1.001):
            best = (*found, False)
    if best is None:
        # Only a fine common lattice (such as the decimal grid itself) fits: use it for a
        # while, then look for a coarser one again.
        found = _candidate(k, usable, pos, _WINDOWS[-1], None, precision)
        if found is not None:
            end, fit, failures = found
            if end > pos + fallback_reach:
                end, failures = pos + fallback_reach, 0
            best = end, fit, failures, True
    return best


def _segments(k, usable, precision: int):
    """Split a channel's decimals into lattice segments: arrays of starts, offsets, steps.
    Compiled (``_mapping_kernels.segments``); :func:`_reference_segments` is the same search
    in Python, over the kernels one call at a time (tests/test_mapping.py checks that both
    find the same segments)."""
    import numpy as np

    from qres.codec._mapping_kernels import segments

    return segments(np.ascontiguousarray(k, dtype=np.float64), usable, precision)


def _reference_segments(k, usable, precision: int):
    """:func:`_segments` in Python: at each position the best lattice (:func:`_best_lattice`)
    opens a segment, refitted on all its samples when its window's fit misses some of them."""
    import numpy as np

    frames = len(k)
    starts: list[int] = []
    offsets: list[float] = []
    steps: list[float] = []
    pos = 0
    reach = _WINDOWS[-1]  # how far a fallback lattice goes: doubles while nothing better fits
    while pos < frames:
        found = _best_lattice(k, usable, pos, precision, reach)
        reach = reach * 2 if found is not None and found[3] else _WINDOWS[-1]
        if found is None:
            # No lattice here: the stretch joins the previous segment (its corrections are
            # cheaper than a jump of scale), or starts a plain decimal one.
            end = min(frames, pos + 64)
            if not starts:
                starts, offsets, steps = [0], [0.0], [1.0]
            pos = end
            continue
        end, (a, b, err), failures, _ = found
        inside = k[pos:end][usable[pos:end]]
        if len(inside) > _REFIT_SAMPLES:
            inside = inside[:: len(inside) // _REFIT_SAMPLES]
        if failures > _REFIT_FAILURES * (end - pos) and len(inside):
            # The window's fit misses some samples of the segment: fit all of them.
            refit = _fit(inside, b, err, precision)
            if refit is not None and _count_reproduced(
                inside, refit[0], refit[1], precision
            ) >= _count_reproduced(inside, a, b, precision):
                a, b = refit[:2]
        if starts and offsets[-1] == a and steps[-1] == b:
            pos = end
            continue
        starts.append(pos)
        offsets.append(a)
        steps.append(b)
        pos = end
    if not starts:
        starts, offsets, steps = [0], [0.0], [1.0]
    return (
        np.array(starts, dtype="<u4"),
        np.array(offsets, dtype="<f8"),
        np.array(steps, dtype="<f8"),
    )


def _is_plain(cmap: ChannelMap) -> bool:
    return (
        cmap.precision >= NO_ROUNDING
        and len(cmap.starts) == 1
        and cmap.offsets[0] == 0.0
        and cmap.steps[0] == 1.0
    )


def _bit_cost(stream) -> int:
    """A cheap estimate of a stream's coded size in bits (bit lengths, exact integer maths)."""
    import numpy as np

    mags = np.abs(stream.astype(np.float64))
    return int(np.frexp(mags)[1].astype(np.int64).sum()) + len(stream) // 8


def _decimal_channel(x, dtype: str):
    """Map one float channel through a decimal lattice: (ints, ChannelMap, extras, estimated
    bits), trying each candidate count of decimals; None when it is not decimal at all."""
    best = None
    for d in _choose_decimals(x, dtype):
        if best is not None and float(best[1].steps.min()) >= 10.0 ** (best[1].decimals - d):
            break  # the lattice steps absorb the extra decimals already
        found = _decimal_lattice(x, dtype, d)
        if best is None or found[3] < best[3]:
            best = found
    return best


def _decimal_lattice(x, dtype: str, d: int):
    """Map a channel through decimal lattices at ``d`` decimals: (n, ChannelMap, extras,
    estimated bits). The whole-channel passes are compiled (one pass each, no temporaries);
    they compute what ``_decimal_view``, ``_forward_fill`` and ``_bit_cost`` do in numpy."""
    import numpy as np

    from qres.codec._mapping_kernels import bit_cost, decimal_view, lattice_encode, ulp_stream

    # k = rint(x * 10**d), forward-filled where it does not fit; exact: x == k / 10**d.
    k, exact = decimal_view(x, d)
    precision = _choose_precision(k, exact)
    starts, offsets, steps = _segments(k, exact, precision)
    cmap = ChannelMap(KIND_DECIMAL, d, precision, 0, starts, offsets, steps)
    if _is_plain(cmap):
        n = k.astype(np.int64)
        correction = None
    else:
        # n = rint((k - a) / b) and c = k - round_P(a + b*n), per segment, in one pass.
        n, correction = lattice_encode(k, starts, offsets, steps, precision)
    ulps = ulp_stream(x, k, d)
    extras = []
    flags = 0
    if correction is not None and correction.any():
        flags |= FLAG_DECIMAL_CORRECTION
        extras.append(correction)
    if ulps.any():
        flags |= FLAG_ULP_CORRECTION
        extras.append(ulps)
    cost = bit_cost(n, True) + sum(bit_cost(s, False) for s in extras) + 160 * len(starts)
    return n, attrs.evolve(cmap, flags=flags), extras, cost


def _grid_channel(x, grid_step: float):
    import numpy as np

    wide = x.astype(np.float64)
    ok = np.isfinite(wide)
    k = np.rint(np.where(ok, wide, 0.0) / grid_step)
    if np.abs(k).max(initial=0) >= 2.0**62:
        return None
    bad = ~ok
    index = np.flatnonzero(bad).astype("<u4")
    raw = x[index].astype(x.dtype.newbyteorder("<")).tobytes()
    return _forward_fill(k.astype(np.int64), bad), ChannelMap(
        KIND_FLOAT_GRID, exception_index=index, exception_raw=raw
    )


def _side_bytes(maps: list[ChannelMap]) -> bytes:
    import numpy as np

    parts = []
    for cmap in maps:
        parts.append(_KIND.pack(cmap.kind))
        if cmap.kind == KIND_INTEGER_LATTICE:
            parts.append(_INT_LATTICE.pack(cmap.offset, cmap.step))
        elif cmap.kind == KIND_SIGNIFICANT:
            parts.append(_SIGNIFICANT.pack(cmap.precision, cmap.offset, cmap.flags))
        elif cmap.kind == KIND_SCALED:
            parts.append(_SCALED.pack(*cmap.lattice, cmap.flags))
        elif cmap.kind == KIND_DICTIONARY:
            parts += [_COUNT.pack(len(cmap.table)), cmap.exception_raw]
        elif cmap.kind == KIND_RUNS:
            starts, lengths = cmap.runs
            parts.append(_COUNT.pack(len(starts)))
            pairs = np.empty(2 * len(starts), dtype="<u4")
            pairs[0::2], pairs[1::2] = starts, lengths
            parts += [pairs.tobytes(), cmap.exception_raw, _side_bytes([cmap.inner])]
            continue
        elif cmap.kind == KIND_RUN_TABLE:
            parts += [_COUNT.pack(cmap.run_count), _COUNT.pack(cmap.patterns)]
            parts += [cmap.exception_raw, _side_bytes([cmap.inner])]
            continue
        elif cmap.kind == KIND_FLOAT_SHIFTED:
            parts.append(_KIND.pack(cmap.shift))
        elif cmap.kind == KIND_NARROW:
            parts.append(_side_bytes([cmap.inner]))
        if cmap.kind == KIND_DECIMAL:
            parts.append(
                _DECIMAL_HEAD.pack(cmap.decimals, cmap.precision, cmap.flags, len(cmap.starts))
            )
            parts += [cmap.starts.tobytes(), cmap.offsets.tobytes(), cmap.steps.tobytes()]
        elif cmap.kind == KIND_FLOAT_GRID:
            parts.append(_COUNT.pack(len(cmap.exception_index)))
            parts += [cmap.exception_index.tobytes(), cmap.exception_raw]
    return b"".join(parts)


def to_integers(
    block,
    spec: StreamSpec,
    grid_step: float | None,
    lattice: bool = True,
    version: int | None = None,
) -> Mapped | None:
    """Map a (frames, channels) block to int64 (channels, frames), or None when the bounded-
    error grid cannot hold the values (the caller then codes the block lossless). Integer
    channels go on their common step when ``lattice`` (lossless coding only: a bound is in
    sample units). ``version``: the container format of the block (None: the newest), which
    decides the kinds it may hold."""
    import numpy as np

    native = block.astype(block.dtype.newbyteorder("="), copy=False)
    if not spec.dtype.startswith("float"):
        ints = native.T.astype(np.int64)
        maps = [ChannelMap(KIND_INTEGER)] * spec.channels
        extras: list = []
        if lattice and spec.itemsize <= 4:
            maps = [_integer_lattice(ints[c]) for c in range(spec.channels)]
            for c, cmap in enumerate(maps):
                if cmap.kind == KIND_INTEGER_LATTICE:
                    ints[c] = (ints[c] - cmap.offset) // cmap.step
                    continue
                found = _integer_views(ints[c], spec.dtype)
                if found is not None:
                    ints[c], maps[c], streams, _ = found
                    extras += streams
        return Mapped(ints, _side_bytes(maps), tuple(extras))
    out = np.empty((spec.channels, native.shape[0]), dtype=np.int64)
    maps = []
    extras: list = []
    for c in range(spec.channels):
        x = np.ascontiguousarray(native[:, c])
        if grid_step is not None:
            found = _grid_channel(x, grid_step)
            if found is None:
                return None
            out[c], cmap = found
            maps.append(cmap)
            continue
        runs = _nonfinite_runs(x, spec.dtype)
        if runs is not None:
            x, starts, lengths, raw = runs
        out[c], cmap, streams = _lossless_float_channel(x, spec.dtype, version)
        tables = runs is not None and allowed(KIND_RUN_TABLE, version)
        table = _run_table(starts, lengths, raw, cmap, spec.dtype) if tables else None
        if table is not None:
            cmap, more = table
            streams = [*streams, *more]
        elif runs is not None:
            cmap = ChannelMap(KIND_RUNS, runs=(starts, lengths), exception_raw=raw, inner=cmap)
        maps.append(cmap)
        extras += streams
    return Mapped(out, _side_bytes(maps), tuple(extras))


def _lossless_float_channel(x, dtype: str, version: int | None = None):
    """A float channel through its decimal lattice or its bit view, whichever the size
    estimate prefers: (ints, ChannelMap, extra streams). ``version``: the block's container
    format (None: the newest)."""
    best = _float_views(x, dtype, version)
    narrow = _narrow_view(x, dtype, version, best)
    return (narrow or best)[:3]


def _narrow_view(x, dtype: str, version: int | None, best):
    """A float64 channel whose samples are all float32 values (readings logged as float32,
    saved as float64) through the float32 views of them (kind 11), when the channel's best
    float64 view is a bit view or corrects samples (an exact linear view already holds the
    values as well as any float32 view would) and the float32 views' estimate is smaller:
    ``(ints, ChannelMap, extras, estimated bits)``, else None. Two decimals of a float32
    reading are a float32 decimal lattice; as float64 they are ulps of noise."""
    import numpy as np

    if dtype != "float64" or not allowed(KIND_NARROW, version) or not len(x):
        return None
    linear = best[1].kind not in (KIND_FLOAT_BITS, KIND_FLOAT_SHIFTED)
    if linear and not _corrects_many(best):
        return None
    with np.errstate(over="ignore"):
        narrow = x.astype(np.float32)
    if not np.array_equal(narrow.astype(np.float64).view(np.uint64), x.view(np.uint64)):
        return None
    found = _float_views(narrow, "float32", version)
    if not found[3] < best[3]:
        return None
    return found[0], ChannelMap(KIND_NARROW, inner=found[1]), found[2], found[3]


def _corrects_many(view) -> bool:
    """Whether a view ``(ints, ChannelMap, extras, estimated bits)`` corrects more than one
    sample in _MOSTLY_EXACT through its extra streams (an exact view corrects none, or a
    stray -0.0)."""
    import numpy as np

    return any(_MOSTLY_EXACT * np.count_nonzero(e) > len(e) for e in view[2])


def _float_views(x, dtype: str, version: int | None):
    """The views of :func:`_lossless_float_channel` for ``x`` as ``dtype`` samples: the best
    ``(ints, ChannelMap, extras, estimated bits)``."""

    from qres.codec._mapping_kernels import bit_cost

    bits = _monotonic_bits(x, dtype)
    best = plain = (bits, ChannelMap(KIND_FLOAT_BITS), [], bit_cost(bits, True))
    found = _decimal_channel(x, dtype)
    if found is not None and found[3] <= best[3]:
        best = found
    # The significant-digit view must find structure: on arbitrary floats its estimate is
    # the bit view's give or take a little.
    if _significant_may_win(x, dtype, best[3]):
        found = _significant_channel(x, dtype, bits)
        if found is not None and found[3] < _SIGNIFICANT_GAIN * best[3]:
            best = found
    # So must the scaled lattice: on decimal readings it is kind 1's lattice without its
    # decimal division, an ulp off on many samples.
    found = _scaled_channel(x, dtype, bits, best[1])
    if found is not None and found[3] < _SIGNIFICANT_GAIN * best[3]:
        best = found
    found = _dictionary_channel(x, bits, dtype, best[3])
    if found is not None:
        best = found
    # The bit view without the zero bits every sample ends in replaces the plain one, a view
    # that corrects more than one sample in _MOSTLY_EXACT if it beats it by the structured
    # views' margin, and any other view only by the margin _SHIFTED_GAIN: the estimate, of
    # first differences, misses how much better a predictor does on a linear view than on one
    # whose scale doubles at every power of two (integer-valued floats through kind 6: their
    # estimate a quarter above the shifted view's, their block 6% smaller).
    found = _shifted_bits(x, dtype, bits, version)
    if found is not None:
        inexact = _corrects_many(best)
        gain = 1.0 if best is plain else _SIGNIFICANT_GAIN if inexact else _SHIFTED_GAIN
        if found[3] < gain * best[3] or best is plain:
            best = found
    return best


def _shifted_bits(x, dtype: str, bits, version: int | None):
    """The channel's bit view shifted right by ``z >= 1`` (kind 10) when every sample's bit
    pattern ends in ``z`` zero bits and the block's format has kind 10: ``(ints, ChannelMap,
    extras, estimated bits)``, else None. Floats of a narrower type stored wide (float32
    readings saved as float64: 29 zero bits; bfloat16 or float16 as float32: 16 or 13)
    otherwise cost the predictor and the coder those always-zero bits (or, for negative
    samples, always-one bits) on every sample. ``bits``: ``x``'s monotonic bits."""
    import numpy as np

    from qres.codec._mapping_kernels import bit_cost

    if not (allowed(KIND_FLOAT_SHIFTED, version) and len(x)):
        return None
    width = 8 * np.dtype(dtype).itemsize
    # The fewest trailing zeros of any pattern are those of all the patterns or'ed.
    every = int(np.bitwise_or.reduce(x.view(f"u{width // 8}")))
    shift = min(width - 1, (every & -every).bit_length() - 1) if every else 0
    if shift <= 0:
        return None
    # A negative sample's monotonic bits end in ones (the view flips them): the arithmetic
    # shift drops them all the same.
    view = bits >> shift
    return view, ChannelMap(KIND_FLOAT_SHIFTED, shift=shift), [], bit_cost(view, True)


def _dictionary_channel(x, view, dtype: str, rival: int | None = None):
    """A channel of few distinct values as their ranks (kind 8): (ranks, ChannelMap, extras,
    estimated bits) when its estimate is below 0.97 of ``rival`` (the best other view's;
    None: the plain integers' ``view``), else None. ``view``: the samples' order-preserving
    int64 view (integers as themselves, floats as their monotonic bits)."""
    import numpy as np

    from qres.codec._mapping_kernels import integer_costs

    view = np.ascontiguousarray(view, dtype=np.int64)
    if not _dictionary_screen(view):
        return None
    plain, changes = integer_costs(view)
    rival = plain if rival is None else rival
    return _dictionary_view(view, dtype, rival, changes, screened=True)


def _dictionary_view(
    view, dtype: str, rival: int, changes: int, beat=None, probe=None, screened: bool = False
):
    """:func:`_dictionary_channel` of an int64 ``view`` with ``changes`` samples unlike the
    one before, against ``rival``; None also when its estimate is not below ``beat`` (a view
    found before it, which wins ties). ``probe``: the ascending distinct values of the
    dictionary's probe, when known (scaled.search gathers them); ``screened``: the probe
    passed :func:`_dictionary_screen` already.

    The estimate is the ranks' bit cost plus the table's: every change of value changes the
    rank (a bit or more), so a table too large to pay for itself is known before the ranks
    are computed, and the distinct values stop being collected once there are that many."""
    from qres.codec import dictionary
    from qres.codec._mapping_kernels import rank_bit_cost

    n = len(view)
    width = 8 * StreamSpec(dtype).itemsize
    limit = _SIGNIFICANT_GAIN * rival
    floor = changes + max(n - 1, 0) // 8 + 40  # the estimate without the table's values
    most = _most_entries(floor, width, limit, beat)
    values = _dictionary_table(view, most, probe, screened)
    if values is None:
        return None
    cost = rank_bit_cost(view, values) + width * len(values) + 40
    if not cost < limit or (beat is not None and not cost < beat):
        return None
    ranks = dictionary.ranks(view, values)
    little = "<" + StreamSpec(dtype).numpy_dtype().str[1:]
    samples = _from_monotonic_bits(values, dtype) if dtype.startswith("float") else values
    raw = samples.astype(little).tobytes()
    return ranks, ChannelMap(KIND_DICTIONARY, table=values, exception_raw=raw), [], cost


def _most_entries(floor: int, width: int, limit: float, beat) -> int:
    """The largest table (entries of ``width`` bits) whose dictionary estimate, at least
    ``floor`` plus the table, can still be below ``limit`` (and below ``beat``); -1: none."""
    most = int((limit - floor) // width) if limit > floor else -1
    while most >= 0 and not floor + width * most < limit:
        most -= 1
    while floor + width * (most + 1) < limit:
        most += 1
    if beat is not None:
        most = min(most, (beat - floor - 1) // width)
    return max(most, -1)


def _dictionary_screen(view, probe=None) -> bool:
    """Whether ``dictionary.table(view)`` may exist: a channel of 16 samples or more whose
    probe (when it is longer than one) has at most one distinct value per DENSITY samples
    of it. Most channels fail on their probe's first few hundred samples, before any pass
    over the whole channel. ``probe``: the probe's distinct values, when known."""
    from qres.codec import dictionary
    from qres.codec._mapping_kernels import distinct_at_most

    n = len(view)
    if n < 2 * dictionary.DENSITY:
        return False
    if n <= dictionary.PROBE:
        return True
    screen = dictionary.PROBE // dictionary.DENSITY
    if probe is not None:
        return len(probe) <= screen
    return distinct_at_most(view[dictionary.probe_index(n, dictionary.PROBE)], screen) is not None


def _dictionary_table(view, most: int, probe=None, screened: bool = False):
    """``dictionary.table(view)`` when it has at most ``most`` values, else None (a larger
    table cannot win). ``probe``: the distinct values of the table's probe (of ``view`` itself
    when it is no longer than the probe), when known; ``screened``: the probe passed
    :func:`_dictionary_screen` already (a probe with more than ``most`` values means a table
    with more, which the whole count finds too)."""
    from qres.codec import dictionary
    from qres.codec._mapping_kernels import distinct_at_most

    n = len(view)
    if n < 2 * dictionary.DENSITY or most < 1:
        return None
    limit = min(n // dictionary.DENSITY, most)
    if n > dictionary.PROBE:
        screen = min(dictionary.PROBE // dictionary.DENSITY, most)
        if probe is not None:
            if len(probe) > screen:
                return None
        elif not screened and (
            distinct_at_most(view[dictionary.probe_index(n, dictionary.PROBE)], screen) is None
        ):
            return None
    elif probe is not None:
        return probe if len(probe) <= limit else None
    return distinct_at_most(view, limit)


def _scaled_channel(x, dtype: str, bits, rival: ChannelMap | None = None):
    """A float channel as codes on a scaled lattice ``x = dtype(a + b*n)`` (kind 7): (ints,
    ChannelMap, extras, estimated bits), or None when its samples are on no lattice or on the
    very lattice of ``rival``, a one-segment decimal entry (which divides where kind 7
    multiplies, and so reproduces decimal readings that a product misses by an ulp).
    ``bits``: ``x``'s monotonic bits."""
    from qres.codec import scaled
    from qres.codec._mapping_kernels import bit_cost

    known = None
    if rival is not None and rival.kind == KIND_DECIMAL and len(rival.starts) == 1:
        known = float(rival.steps[0]) / 10.0**rival.decimals
    found = scaled.find(x, dtype, known)
    if found is None:
        return None
    a, b = found
    n = scaled.codes(x, a, b)
    ulps = bits - _monotonic_bits(scaled.decode(n, a, b, dtype), dtype)
    flags = FLAG_ULP_CORRECTION if ulps.any() else 0
    extras = [ulps] if flags else []
    cost = bit_cost(n, True) + (bit_cost(ulps, False) if flags else 0) + 8 * _SCALED.size
    return n, ChannelMap(KIND_SCALED, flags=flags, lattice=(a, b)), extras, cost


def _significant_may_win(x, dtype: str, cost: int) -> bool:
    """Whether the significant-digit view of a channel may cost less than ``cost`` bits: on
    a long channel it is first estimated on spans of it (an eighth, spread over all of it),
    and computed whole only when that estimate, scaled to the channel, is within a factor
    _SCREEN_SLACK of replacing the best view (most channels that have a decimal or lattice
    view gain nothing from it, and the whole view is a fifth of their mapping time)."""
    import numpy as np

    n = len(x)
    step = _SCREEN_SPAN * _SCREEN_EVERY
    if n < 2 * step:
        return True
    probe = np.concatenate([x[a : a + _SCREEN_SPAN] for a in range(0, n, step)])
    found = _significant_channel(probe, dtype)
    if found is None:
        return False  # the indexes overflow on the probe: on all of it too
    return found[3] * (n / len(probe)) < _SCREEN_SLACK * _SIGNIFICANT_GAIN * cost


def _significant_channel(x, dtype: str, bits=None):
    """A float channel as ``±m * 10**q`` with a fixed count of significant digits (kind 6):
    (ints, ChannelMap, extras, estimated bits), or None. ``bits``: ``x``'s monotonic bits,
    when known."""
    from qres.codec import significant
    from qres.codec._mapping_kernels import bit_cost

    if not len(x):
        return None
    precision = significant.choose_precision(x, dtype, _PROBE)
    found = significant.encode(x, precision)
    if found is None:
        return None
    n, q0 = found
    back = significant.decode(n, precision, q0, dtype)
    if bits is None:
        bits = _monotonic_bits(x, dtype)
    ulps = bits - _monotonic_bits(back, dtype)
    flags = FLAG_ULP_CORRECTION if ulps.any() else 0
    extras = [ulps] if flags else []
    cost = bit_cost(n, True) + (bit_cost(ulps, False) if flags else 0) + 32
    cmap = ChannelMap(KIND_SIGNIFICANT, precision=precision, flags=flags, offset=q0)
    return n, cmap, extras, cost


def _scaled_integers(ints, dtype: str):
    """An integer channel on a scaled lattice ``x = rint(a + b*n)`` with ``b >= 2`` not an
    integer (calibrated readings: converter codes times a scale, rounded), when its size
    estimate beats the plain integers' by the same margin as the float views: (codes,
    ChannelMap, extras, estimated bits), else None."""
    from qres.codec import scaled
    from qres.codec._mapping_kernels import bit_cost

    found = scaled.find(ints, dtype)
    if found is None:
        return None
    a, b = found
    n = scaled.codes(ints, a, b)
    correction = ints - scaled.decode(n, a, b, dtype)
    flags = FLAG_ULP_CORRECTION if correction.any() else 0
    cost = bit_cost(n, True) + (bit_cost(correction, False) if flags else 0) + 8 * _SCALED.size
    if not cost < _SIGNIFICANT_GAIN * bit_cost(ints, True):
        return None
    extras = [correction] if flags else []
    return n, ChannelMap(KIND_SCALED, flags=flags, lattice=(a, b)), extras, cost


def _integer_views(x, dtype: str):
    """The cheaper of an integer channel's scaled lattice (:func:`_scaled_integers`) and its
    dictionary (:func:`_dictionary_channel`), the lattice on a tie: (ints, ChannelMap,
    extras, estimated bits), or None when neither beats the plain integers. ``x``: the
    channel, int64. Most channels have neither and show it on their probe; for the others
    the plain integers' cost is counted once for both, the lattice's codes, corrections and
    costs come from one compiled pass, and the dictionary reuses the lattice probe's
    distinct values and stops once it cannot win."""
    from qres.codec import dictionary, scaled
    from qres.codec._mapping_kernels import integer_costs, scaled_integer_encode

    costs = None
    best = None
    found, probe = scaled.search(x, dtype)
    if scaled.PROBE != dictionary.PROBE:
        probe = None  # not the dictionary's probe
    if found is not None:
        costs = integer_costs(x)
        a, b = found
        n, correction, code_bits, correction_bits = scaled_integer_encode(x, a, b)
        cost = code_bits + (0 if correction is None else correction_bits) + 8 * _SCALED.size
        if cost < _SIGNIFICANT_GAIN * costs[0]:
            flags = 0 if correction is None else FLAG_ULP_CORRECTION
            extras = [] if correction is None else [correction]
            best = n, ChannelMap(KIND_SCALED, flags=flags, lattice=(a, b)), extras, cost
    if not _dictionary_screen(x, probe):
        return best
    if costs is None:
        costs = integer_costs(x)
    beat = None if best is None else best[3]
    found = _dictionary_view(x, dtype, *costs, beat, probe, screened=True)
    return best if found is None else found


def _integer_lattice(ints) -> ChannelMap:
    """An integer channel's common step (its samples' gcd distance, such as the unused low
    bits of 24-bit samples stored in 32) as kind 4, or plain kind 0 when it is 1."""
    from qres.codec._mapping_kernels import common_step

    if len(ints) < 2:
        return ChannelMap(KIND_INTEGER)
    # Samples of at most 32 bits: the differences fit int64 exactly (compiled: numpy's
    # gcd.reduce cannot stop at 1, and took a fifth of the `fast` profile's time).
    step = int(common_step(ints))
    if step < 2:
        return ChannelMap(KIND_INTEGER)
    return ChannelMap(KIND_INTEGER_LATTICE, offset=int(ints[0]) % step, step=step)


def _nonfinite_runs(x, dtype: str):
    """The channel's runs of non-finite samples (NaN gaps, infinities): the channel with each
    run replaced by the finite sample before it (after it for a leading run; 0.0 when none is
    finite), so the mapping and the predictor see a flat stretch, plus the runs' starts,
    lengths and raw little-endian bytes (one sample per run: a run's samples share a bit
    pattern). None when every sample is finite."""
    import numpy as np

    bad = ~np.isfinite(x)
    if not bad.any():
        return None
    signed = np.int32 if dtype == "float32" else np.int64
    bits = x.view(signed)
    idx = np.flatnonzero(bad)
    # A run breaks where the samples stop being consecutive or change their bit pattern.
    breaks = np.flatnonzero((np.diff(idx) != 1) | (bits[idx[1:]] != bits[idx[:-1]])) + 1
    starts = idx[np.concatenate(([0], breaks))]
    ends = idx[np.concatenate((breaks - 1, [len(idx) - 1]))] + 1
    raw = x[starts].astype(np.dtype(dtype).newbyteorder("<")).tobytes()
    good = np.flatnonzero(~bad)
    filled = x.copy()
    if len(good):
        before = np.searchsorted(good, idx) - 1
        filled[idx] = x[good[np.maximum(before, 0)]]
        lead = before < 0
        filled[idx[lead]] = x[good[0]]
    else:
        filled[:] = 0.0
    return filled, starts.astype("<u4"), (ends - starts).astype("<u4"), raw


def _run_streams(patterns: int) -> int:
    """How many streams a run table of ``patterns`` bit patterns codes: the gaps and the
    lengths, and which pattern each run holds when there are several."""
    return 2 + (patterns > 1)


def _stream_bytes(values) -> int:
    """An estimate of the bytes an extra stream of small non-negative integers takes in a
    block: its 4-byte length, a coder's few bytes of overhead, and the bit lengths of its
    values (the mapping's :func:`bit_cost`)."""
    from qres.codec._mapping_kernels import bit_cost

    return 4 + _STREAM_OVERHEAD + (bit_cost(values, False) + 7) // 8


def _run_table(starts, lengths, raw: bytes, inner: ChannelMap, dtype: str):
    """A channel's runs of non-finite samples as a run table (kind 9): its entry, around
    ``inner`` (the entry of the channel with the runs filled), and its streams: per run the
    gap from the previous run's end (from 0 for the first), its length minus 1 and, when the
    runs hold more than one bit pattern, the pattern's index in the table (the patterns in
    the order the runs first hold them). Isolated dropouts cost a byte or two each instead
    of a verbatim position, length and sample (16 bytes for float64), and the side record
    keeps one copy of each bit pattern (almost always a single NaN). None when the verbatim
    runs (kind 5) cost fewer bytes: a stream costs its 4-byte length and a coder's few bytes
    of overhead, more than one or two runs spell out (the streams' sizes are estimated,
    :func:`_stream_bytes`; the choice is integer arithmetic)."""
    import numpy as np

    size = np.dtype(dtype).itemsize
    bits = np.frombuffer(raw, dtype=f"<u{size}")
    values, first, inverse = np.unique(bits, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    starts = starts.astype(np.int64)
    lengths = lengths.astype(np.int64)
    ends = starts + lengths
    gaps = starts - np.concatenate(([0], ends[:-1]))
    streams = [gaps, lengths - 1]
    if len(values) > 1:
        streams.append(rank[inverse.reshape(-1)])
    verbatim = _COUNT.size + len(starts) * (_RUN.size + size)
    if 2 * _COUNT.size + len(values) * size + sum(_stream_bytes(t) for t in streams) >= verbatim:
        return None
    cmap = ChannelMap(
        KIND_RUN_TABLE,
        exception_raw=values[order].astype(f"<u{size}").tobytes(),
        run_count=len(starts),
        patterns=len(values),
        inner=inner,
    )
    return cmap, streams


# -- decoding ----------------------------------------------------------------------------------


def _take(view: memoryview, pos: int, size: int, what: str) -> int:
    if pos + size > len(view):
        raise IntegrityError(f"side record truncated in the {what}")
    return pos + size


def _read_decimal(view: memoryview, pos: int, spec: StreamSpec, frames: int):
    import numpy as np

    end = _take(view, pos, _DECIMAL_HEAD.size, "decimal channel head")
    decimals, precision, flags, count = _DECIMAL_HEAD.unpack_from(view, pos)
    if decimals > MAX_DECIMALS[spec.dtype] or not 1 <= precision <= NO_ROUNDING or flags > 3:
        raise IntegrityError("bad decimal channel head")
    if not 1 <= count <= frames:
        raise IntegrityError("bad lattice segment count")
    pos = end
    end = _take(view, pos, count * 20, "lattice segments")
    starts = np.frombuffer(view, dtype="<u4", count=count, offset=pos)
    offsets = np.frombuffer(view, dtype="<f8", count=count, offset=pos + 4 * count)
    steps = np.frombuffer(view, dtype="<f8", count=count, offset=pos + 12 * count)
    if count:
        wide = starts.astype(np.int64)  # uint32 differences would wrap around
        if wide[0] != 0 or int(wide[-1]) >= frames or np.any(np.diff(wide) <= 0):
            raise IntegrityError("lattice segment starts out of order")
        if not (np.all(np.isfinite(offsets)) and np.all(np.isfinite(steps))):
            raise IntegrityError("lattice segment is not finite")
        if np.any(steps <= 0) or np.any(steps > _K_LIMIT) or np.any(np.abs(offsets) > _K_LIMIT):
            raise IntegrityError("lattice segment out of range")
    cmap = ChannelMap(KIND_DECIMAL, decimals, precision, flags, starts, offsets, steps)
    return cmap, end


def read_side(
    view: memoryview, pos: int, spec: StreamSpec, frames: int, version: int | None = None
) -> tuple[Side, int]:
    """Parse the side record at ``view[pos:]``; return it and the position after it.
    ``version``: the container format of the block (None: the newest), which decides the
    kinds it may hold."""

    maps = []
    lengths: list[int] = []
    kinds = _FLOAT_KINDS if spec.dtype.startswith("float") else _INTEGER_KINDS
    if version is not None:
        kinds = tuple(k for k in kinds if KIND_SINCE.get(k, 0) <= version)
    for _ in range(spec.channels):
        cmap, pos = _read_entry(view, pos, spec, frames, kinds)
        lengths += cmap.extra_lengths(frames)
        maps.append(cmap)
    return Side(tuple(maps), tuple(lengths)), pos


#: Kinds a float channel's entry may have; inside a runs entry only the lossless views.
_FLOAT_KINDS = (
    KIND_DECIMAL,
    KIND_FLOAT_BITS,
    KIND_FLOAT_GRID,
    KIND_RUNS,
    KIND_SIGNIFICANT,
    KIND_SCALED,
    KIND_DICTIONARY,
    KIND_RUN_TABLE,
    KIND_FLOAT_SHIFTED,
    KIND_NARROW,
)
_LOSSLESS_VIEWS = (
    KIND_DECIMAL,
    KIND_FLOAT_BITS,
    KIND_SIGNIFICANT,
    KIND_SCALED,
    KIND_DICTIONARY,
    KIND_FLOAT_SHIFTED,
    KIND_NARROW,
)
_INTEGER_KINDS = (KIND_INTEGER, KIND_INTEGER_LATTICE, KIND_SCALED, KIND_DICTIONARY)


def _read_entry(view: memoryview, pos: int, spec: StreamSpec, frames: int, kinds):
    """Parse one channel's entry; ``kinds`` are the kinds allowed here."""
    import numpy as np

    pos = _take(view, pos, _KIND.size, "channel kind")
    (kind,) = _KIND.unpack_from(view, pos - _KIND.size)
    if kind not in KINDS:
        raise IntegrityError(f"unknown channel kind {kind}")
    if kind not in kinds:
        raise IntegrityError(f"channel kind {kind} does not fit here (sample type {spec.dtype})")
    if kind == KIND_INTEGER_LATTICE:
        end = _take(view, pos, _INT_LATTICE.size, "integer lattice")
        offset, step = _INT_LATTICE.unpack_from(view, pos)
        if not (2 <= step < 2**32 and 0 <= offset < step) or spec.itemsize > 4:
            raise IntegrityError("bad integer lattice")
        return ChannelMap(kind, offset=offset, step=step), end
    if kind == KIND_RUNS:
        pos = _take(view, pos, _COUNT.size, "run count")
        (count,) = _COUNT.unpack_from(view, pos - _COUNT.size)
        if not 1 <= count <= frames:
            raise IntegrityError("run count out of range")
        end = _take(view, pos, count * (8 + spec.itemsize), "runs")
        pairs = np.frombuffer(view, dtype="<u4", count=2 * count, offset=pos).astype(np.int64)
        starts, lengths = pairs[0::2], pairs[1::2]
        ends = starts + lengths
        if np.any(lengths < 1) or ends[-1] > frames or np.any(starts[1:] < ends[:-1]):
            raise IntegrityError("runs out of order or beyond the block")
        raw = bytes(view[pos + 8 * count : end])
        views = tuple(k for k in _LOSSLESS_VIEWS if k in kinds)
        inner, pos = _read_entry(view, end, spec, frames, views)
        cmap = ChannelMap(kind, runs=(starts, lengths), exception_raw=raw, inner=inner)
        return cmap, pos
    if kind in (KIND_RUN_TABLE, KIND_NARROW):
        read = _read_run_table if kind == KIND_RUN_TABLE else _read_narrow
        return read(view, pos, spec, frames, kinds)
    if kind == KIND_DECIMAL:
        return _read_decimal(view, pos, spec, frames)
    if kind in (KIND_SIGNIFICANT, KIND_SCALED, KIND_FLOAT_SHIFTED):
        return _read_view_head(view, pos, spec, kind)
    if kind == KIND_DICTIONARY:
        return _read_dictionary(view, pos, spec, frames)
    if kind == KIND_FLOAT_GRID:
        pos = _take(view, pos, _COUNT.size, "exception count")
        (count,) = _COUNT.unpack_from(view, pos - _COUNT.size)
        if count > frames:
            raise IntegrityError("exception count out of range")
        end = _take(view, pos, count * (4 + spec.itemsize), "exception list")
        index = np.frombuffer(view, dtype="<u4", count=count, offset=pos)
        raw = bytes(view[pos + 4 * count : end])
        if count and int(index.max()) >= frames:
            raise IntegrityError("exception index out of range")
        return ChannelMap(KIND_FLOAT_GRID, exception_index=index, exception_raw=raw), end
    return ChannelMap(kind), pos


def _read_narrow(view: memoryview, pos: int, spec: StreamSpec, frames: int, kinds):
    """A narrow entry (float64 channels only): the float32 entry of the samples, one of the
    lossless views (not itself narrow)."""
    if spec.dtype != "float64":
        raise IntegrityError(
            f"channel kind {KIND_NARROW} does not fit here (sample type {spec.dtype})"
        )
    views = tuple(k for k in _LOSSLESS_VIEWS if k in kinds and k != KIND_NARROW)
    inner, pos = _read_entry(view, pos, StreamSpec("float32"), frames, views)
    return ChannelMap(KIND_NARROW, inner=inner), pos


def _read_run_table(view: memoryview, pos: int, spec: StreamSpec, frames: int, kinds):
    """A run-table entry: ``u32 R`` runs, ``u32 P`` bit patterns (``1 <= P <= R <= frames``),
    the P samples (distinct), then the entry of the channel's other samples."""
    import numpy as np

    end = _take(view, pos, 2 * _COUNT.size, "run table")
    count, patterns = _COUNT.unpack_from(view, pos)[0], _COUNT.unpack_from(view, pos + 4)[0]
    if not 1 <= count <= frames:
        raise IntegrityError("run count out of range")
    if not 1 <= patterns <= count:
        raise IntegrityError("run table: pattern count out of range")
    pos, end = end, _take(view, end, patterns * spec.itemsize, "run patterns")
    raw = bytes(view[pos:end])
    ordered = np.sort(np.frombuffer(raw, dtype=f"<u{spec.itemsize}"))
    if np.any(ordered[1:] == ordered[:-1]):
        raise IntegrityError("run table: a bit pattern twice")
    views = tuple(k for k in _LOSSLESS_VIEWS if k in kinds)
    inner, pos = _read_entry(view, end, spec, frames, views)
    cmap = ChannelMap(
        KIND_RUN_TABLE, exception_raw=raw, run_count=count, patterns=patterns, inner=inner
    )
    return cmap, pos


def _read_dictionary(view: memoryview, pos: int, spec: StreamSpec, frames: int):
    """A dictionary entry: ``u32 D`` then the D distinct samples, strictly ascending in the
    order-preserving view (so each table has one byte form)."""
    import numpy as np

    pos = _take(view, pos, _COUNT.size, "dictionary size")
    (count,) = _COUNT.unpack_from(view, pos - _COUNT.size)
    if not 1 <= count <= frames:
        raise IntegrityError("dictionary size out of range")
    end = _take(view, pos, count * spec.itemsize, "dictionary")
    raw = bytes(view[pos:end])
    samples = np.frombuffer(raw, dtype=spec.numpy_dtype().newbyteorder("<"))
    native = samples.astype(samples.dtype.newbyteorder("="))
    if spec.dtype.startswith("float"):
        values = _monotonic_bits(native, spec.dtype)
    else:
        values = native.astype(np.int64)
        if spec.itemsize > 4:
            raise IntegrityError("dictionary of a 64-bit integer channel")
    if np.any(values[1:] <= values[:-1]):
        raise IntegrityError("dictionary not strictly ascending")
    return ChannelMap(KIND_DICTIONARY, table=values, exception_raw=raw), end


def _read_view_head(view: memoryview, pos: int, spec: StreamSpec, kind: int):
    """The head of a significant-digit (kind 6), scaled-lattice (kind 7) or shifted bit view
    (kind 10: ``u8 z``, ``1 <= z <`` the sample width) entry."""
    if kind == KIND_FLOAT_SHIFTED:
        end = _take(view, pos, _KIND.size, "bit shift")
        (shift,) = _KIND.unpack_from(view, pos)
        if not 1 <= shift < 8 * spec.itemsize:
            raise IntegrityError(f"bad float bit shift {shift}")
        return ChannelMap(kind, shift=shift), end
    if kind == KIND_SIGNIFICANT:
        from qres.codec.significant import MAX_DIGITS

        end = _take(view, pos, _SIGNIFICANT.size, "significant digits")
        precision, q0, flags = _SIGNIFICANT.unpack_from(view, pos)
        if not 1 <= precision <= MAX_DIGITS[spec.dtype] or flags & ~FLAG_ULP_CORRECTION:
            raise IntegrityError("bad significant-digit channel head")
        return ChannelMap(kind, precision=precision, flags=flags, offset=q0), end
    end = _take(view, pos, _SCALED.size, "scaled lattice")
    a, b, flags = _SCALED.unpack_from(view, pos)
    if not (math.isfinite(a) and math.isfinite(b) and b > 0) or flags & ~FLAG_ULP_CORRECTION:
        raise IntegrityError("bad scaled lattice head")
    if not spec.dtype.startswith("float") and spec.itemsize > 4:
        raise IntegrityError("scaled lattice of a 64-bit integer channel")
    return ChannelMap(kind, flags=flags, lattice=(a, b)), end


def _decimal_values(n, cmap: ChannelMap, streams: list, spec: StreamSpec):
    import numpy as np

    if _is_plain(cmap):
        k = n.copy()
    else:
        from qres.codec._mapping_kernels import lattice_decode

        # k = round_P(a + b*n) per segment, clipped to +-2**62 (a damaged block must not
        # overflow); the side record's segment starts were checked by read_side.
        k = lattice_decode(
            np.ascontiguousarray(n),
            np.asarray(cmap.starts, dtype=np.uint32),  # native order (the record is little)
            np.asarray(cmap.offsets, dtype=np.float64),
            np.asarray(cmap.steps, dtype=np.float64),
            cmap.precision,
        )
    if cmap.flags & FLAG_DECIMAL_CORRECTION:
        k += streams.pop(0)
    values = (k.astype(np.float64) / 10.0**cmap.decimals).astype(spec.dtype)
    if cmap.flags & FLAG_ULP_CORRECTION:
        values = _from_monotonic_bits(
            _monotonic_bits(values, spec.dtype) + streams.pop(0), spec.dtype
        )
    return values


def from_integers(ints, side: Side, extras, spec: StreamSpec, grid_step: float | None):
    """Inverse of :func:`to_integers`: int64 (channels, frames) to a (frames, channels) block."""
    import numpy as np

    frames = ints.shape[1]
    out = np.empty((frames, spec.channels), dtype=spec.numpy_dtype())
    streams = list(extras)
    if len(streams) != len(side.extra_lengths):
        raise IntegrityError("wrong number of correction streams; corrupted")
    for c, cmap in enumerate(side.maps):
        out[:, c] = _channel_values(ints[c], cmap, streams, spec, grid_step)
    return out


def _channel_values(k, cmap: ChannelMap, streams: list, spec: StreamSpec, grid_step):
    """One channel's samples from its integers and entry (extra streams taken in order)."""
    import numpy as np

    if cmap.kind == KIND_INTEGER:
        info = np.iinfo(spec.dtype)
        if k.size and (k.min() < info.min or k.max() > info.max):
            raise IntegrityError("decoded samples out of the type's range; corrupted")
        return k.astype(spec.dtype)
    if cmap.kind == KIND_INTEGER_LATTICE:
        if grid_step is not None:
            raise IntegrityError("integer lattice in a bounded-error block; corrupted")
        info = np.iinfo(spec.dtype)
        # Check n before multiplying: a damaged block must not overflow int64.
        lo = -((cmap.offset - info.min) // cmap.step)
        hi = (info.max - cmap.offset) // cmap.step
        if k.size and (k.min() < lo or k.max() > hi):
            raise IntegrityError("decoded samples out of the type's range; corrupted")
        return (cmap.offset + cmap.step * k).astype(spec.dtype)
    if cmap.kind in (KIND_FLOAT_BITS, KIND_FLOAT_SHIFTED):
        return _bit_values(k, cmap, spec, grid_step)
    if cmap.kind == KIND_DECIMAL:
        return _decimal_values(k, cmap, streams, spec)
    if cmap.kind == KIND_DICTIONARY or (
        cmap.kind == KIND_SCALED and not spec.dtype.startswith("float")
    ):
        return _table_or_rounded_values(k, cmap, streams, spec, grid_step)
    if cmap.kind in (KIND_SIGNIFICANT, KIND_SCALED):
        if grid_step is not None:
            what = (
                "significant-digit channel" if cmap.kind == KIND_SIGNIFICANT else "scaled lattice"
            )
            raise IntegrityError(f"{what} in a bounded-error block; corrupted")
        return _view_values(k, cmap, streams, spec)
    if cmap.kind in (KIND_RUNS, KIND_RUN_TABLE, KIND_NARROW):
        return _nested_values(k, cmap, streams, spec, grid_step)
    if grid_step is None:
        raise IntegrityError("grid channel in a lossless block; corrupted")
    values = (k.astype(np.float64) * grid_step).astype(spec.dtype)
    if len(cmap.exception_index):
        little = np.dtype(spec.dtype).newbyteorder("<")
        values[cmap.exception_index] = np.frombuffer(cmap.exception_raw, dtype=little)
    return values


def _table_or_rounded_values(k, cmap: ChannelMap, streams: list, spec: StreamSpec, grid_step):
    """Samples of a dictionary channel (kind 8) or of an integer scaled lattice (kind 7):
    lossless blocks only."""
    if grid_step is not None:
        raise IntegrityError(f"channel kind {cmap.kind} in a bounded-error block; corrupted")
    if cmap.kind == KIND_DICTIONARY:
        return _dictionary_values(k, cmap, spec)
    return _scaled_integer_values(k, cmap, streams, spec)


def _dictionary_values(k, cmap: ChannelMap, spec: StreamSpec):
    """Samples of a dictionary channel: its table's values at the ranks."""
    from qres.codec.dictionary import lookup

    values = lookup(k, cmap.table)
    if values is None:
        raise IntegrityError("dictionary rank out of range; corrupted")
    if spec.dtype.startswith("float"):
        return _from_monotonic_bits(values, spec.dtype)
    return values.astype(spec.dtype)


def _scaled_integer_values(k, cmap: ChannelMap, streams: list, spec: StreamSpec):
    """Samples of an integer channel on a scaled lattice: ``rint(a + b*n)`` plus the
    correction stream, checked against the sample type's range."""
    import numpy as np

    from qres.codec.scaled import decode

    values = decode(k, *cmap.lattice, spec.dtype)
    if cmap.flags & FLAG_ULP_CORRECTION:
        values = values + streams.pop(0)  # wraps on damage; the range check catches it
    info = np.iinfo(spec.dtype)
    if values.size and (values.min() < info.min or values.max() > info.max):
        raise IntegrityError("decoded samples out of the type's range; corrupted")
    return values.astype(spec.dtype)


def _view_values(k, cmap: ChannelMap, streams: list, spec: StreamSpec):
    """Samples of a significant-digit (kind 6) or scaled-lattice (kind 7) channel, with its
    ulp stream when it has one."""
    if cmap.kind == KIND_SIGNIFICANT:
        from qres.codec.significant import decode

        values = decode(k, cmap.precision, cmap.offset, spec.dtype)
    else:
        from qres.codec.scaled import decode

        values = decode(k, *cmap.lattice, spec.dtype)
    if cmap.flags & FLAG_ULP_CORRECTION:
        values = _from_monotonic_bits(
            _monotonic_bits(values, spec.dtype) + streams.pop(0), spec.dtype
        )
    return values


def _nested_values(k, cmap: ChannelMap, streams: list, spec: StreamSpec, grid_step):
    """Samples of an entry around another (kinds 5, 9 and 11: lossless blocks only)."""
    import numpy as np

    if cmap.kind != KIND_NARROW:
        return _run_values(k, cmap, streams, spec, grid_step)
    if grid_step is not None:
        raise IntegrityError("narrow float channel in a bounded-error block; corrupted")
    narrow = _channel_values(k, cmap.inner, streams, StreamSpec("float32"), None)
    return narrow.astype(np.float64)


def _run_values(k, cmap: ChannelMap, streams: list, spec: StreamSpec, grid_step):
    """Samples of a channel with runs of non-finite samples, verbatim (kind 5) or in a run
    table (kind 9): its other samples' entry, then the runs put in."""
    import numpy as np

    if grid_step is not None:
        raise IntegrityError("float runs in a bounded-error block; corrupted")
    values = _channel_values(k, cmap.inner, streams, spec, None)
    little = np.dtype(spec.dtype).newbyteorder("<")
    patterns = np.frombuffer(cmap.exception_raw, dtype=little)
    if cmap.kind == KIND_RUNS:
        (starts, lengths), index = cmap.runs, slice(None)
    else:
        starts, lengths, index = _decoded_runs(cmap, streams, len(values))
    values[np.repeat(starts, lengths) + _within_runs(lengths)] = np.repeat(patterns[index], lengths)
    return values


def _decoded_runs(cmap: ChannelMap, streams: list, frames: int):
    """A run table's starts, lengths and pattern indexes from its streams (taken from
    ``streams``), checked: the runs in order, apart (two runs of one pattern never touch:
    they would be one), inside the block, every pattern used, first used in table order."""
    import numpy as np

    gaps, lengths = streams.pop(0), streams.pop(0) + 1
    if cmap.patterns > 1:
        index = streams.pop(0)
    else:
        index = np.zeros(cmap.run_count, dtype=np.int64)
    # Each value at most the block's frames before any sum (damage must not overflow).
    for values in (gaps, lengths, index):
        if len(values) != cmap.run_count or int(values.min()) < 0 or int(values.max()) > frames:
            raise IntegrityError("run table: a gap, length or pattern out of range; corrupted")
    if int(lengths.min()) < 1 or int(index.max()) >= cmap.patterns:
        raise IntegrityError("run table: a gap, length or pattern out of range; corrupted")
    ends = np.cumsum(gaps + lengths)
    if int(ends[-1]) > frames:
        raise IntegrityError(f"run table: a run reaches past the block's {frames} samples")
    if np.any((gaps[1:] == 0) & (index[1:] == index[:-1])):
        raise IntegrityError("run table: two touching runs of one pattern; corrupted")
    seen = np.maximum.accumulate(index)
    used = int(seen[-1]) + 1
    if int(index[0]) != 0 or np.any(index[1:] > seen[:-1] + 1) or used != cmap.patterns:
        raise IntegrityError("run table: patterns out of table order; corrupted")
    return ends - lengths, lengths, index


def _bit_values(k, cmap: ChannelMap, spec: StreamSpec, grid_step):
    """Samples of a bit view (kind 2) or a shifted bit view (kind 10: lossless blocks only)."""
    if cmap.kind == KIND_FLOAT_BITS:
        return _from_monotonic_bits(k, spec.dtype)
    if grid_step is not None:
        raise IntegrityError("shifted float bits in a bounded-error block; corrupted")
    return _from_monotonic_bits(_unshifted(k, cmap.shift, spec), spec.dtype)


def _unshifted(k, shift: int, spec: StreamSpec):
    """The monotonic bits of a shifted bit view (kind 10): ``k << shift``, the dropped bits
    ones for a negative ``k`` (the view flips a negative sample's bits), checked to fit the
    sample type's width first."""
    import numpy as np

    top = 1 << (8 * spec.itemsize - 1 - shift)
    if k.size and (int(k.min()) < -top or int(k.max()) >= top):
        raise IntegrityError("decoded samples out of the type's range; corrupted")
    low = np.int64((1 << shift) - 1)
    return (k << shift) | ((k >> 63) & low)


def _within_runs(lengths):
    """0, 1, ..., length - 1 for each run, concatenated."""
    import numpy as np

    total = int(lengths.sum())
    ends = np.cumsum(lengths)
    return np.arange(total) - np.repeat(ends - lengths, lengths)
