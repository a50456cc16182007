"""The significant-digit view of float samples (mapping kind 6): ``x = ±m * 10**q``.

Readings written with a fixed number ``P`` of significant digits over many decades (a flux of
``1.2345e-9 .. 3.0112e-5``) have no common decimal count: ``round(x * 10**d)`` needs more
digits than a sample type holds for the small ones and wastes them on the large ones. Here each
sample is a ``P``-digit integer ``m`` (``10**(P-1) <= m < 10**P``) times its own power of ten
``10**q``, and the predictor sees one integer per sample that orders all such decimals:

    n = ±(1 + (q - q0) * W + (m - 10**(P-1)))     with W = 9 * 10**(P-1),  0 for a zero

so consecutive decimals of one decade are consecutive integers, and a decade boundary keeps the
order. The decoder computes ``m * 10**q`` (``m / 10**-q`` for negative ``q``) in binary64, one
correctly rounded operation while the power is exact (``|q| <= 22``), then rounds to the
sample type; an ulp stream (as in the decimal lattice) makes every sample exact whatever it is.

The encoder's arithmetic is elementwise IEEE-754 and exact comparisons with a table of
correctly rounded powers of ten, so the same block gives the same bytes on every machine.
The per-sample loops run compiled (``qres.codec._mapping_kernels``, the same binary64
operations); the numpy functions here are their reference (tests/test_mapping.py checks that
both agree bit for bit) and serve the rare calls the compiled loops do not take (samples that
are not finite, other dtypes).
"""

from __future__ import annotations

from fractions import Fraction

#: Most significant digits per sample type (17 reproduce any binary64, 9 any binary32).
MAX_DIGITS = {"float32": 9, "float64": 17}
#: Powers of ten 10**-_LOW .. 10**_HIGH as correctly rounded binary64 (0 and inf at the ends).
_LOW = 360
_HIGH = 330
_TABLE: list = []
#: Indexes must stay below this (room for the sign and the predictor's differences).
_INDEX_LIMIT = 2**61


def powers():
    """``10**k`` for ``k = -_LOW .. _HIGH`` as correctly rounded binary64 (built once)."""
    if not _TABLE:
        import numpy as np

        values = [
            float(Fraction(1, 10**-k)) if k < 0 else float(10**k) if k <= 308 else np.inf
            for k in range(-_LOW, _HIGH + 1)
        ]
        _TABLE.append(np.array(values, dtype=np.float64))
    return _TABLE[0]


def _pow(k):
    """``10**k`` from the table for an integer array ``k`` (clipped into it)."""
    import numpy as np

    # take(mode="clip") clips the index into the table: the same as clipping k first.
    return powers().take(np.asarray(k) + _LOW, mode="clip")


def _decade(magnitude):
    """``floor(log10(magnitude))`` exactly, for finite ``magnitude > 0``."""
    import numpy as np

    e2 = np.frexp(magnitude)[1].astype(np.int64) - 1
    e10 = (e2 * 1233) >> 12  # floor(e2 * log10(2)), then made exact by comparisons
    e10 += magnitude >= _pow(e10 + 1)
    e10 -= magnitude < _pow(e10)
    return e10


def _digits(magnitude, precision: int, e10=None):
    """``(m, q)``: ``magnitude`` (finite, > 0) as ``m * 10**q`` with ``P`` digits in ``m``
    (``e10``: its decade, when known)."""
    import numpy as np

    if e10 is None:
        e10 = _decade(magnitude)
    q = e10 - (precision - 1)
    m = _mantissa(magnitude, q)
    over = m >= 10.0**precision
    q = np.where(over, q + 1, q)
    m = np.where(over, _mantissa(magnitude, q), m)
    return np.clip(m, 10.0 ** (precision - 1), 10.0**precision - 1), q


def _mantissa(magnitude, q):
    """``rint(magnitude / 10**q)``; below ``10**-300`` in two products (``10**-q`` itself
    would overflow binary64 for subnormal samples)."""
    import numpy as np

    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        deep = q < -300
        if deep.any():
            scaled = np.where(deep, magnitude * 1e300, magnitude)
            shift = np.where(deep, -q - 300, -q)
        else:
            scaled, shift = magnitude, -q
        power = _pow(np.abs(shift))  # 10**shift or 10**-shift, whichever is applied
        return np.rint(np.where(shift > 0, scaled * power, scaled / power))


def decode(n, precision: int, q0: int, dtype: str):
    """Samples of the sample type from indexes ``n`` (any int64: damage gives garbage, never
    an error)."""
    import numpy as np

    from qres.codec._mapping_kernels import significant_decode

    if dtype in ("float32", "float64") and 1 <= precision <= MAX_DIGITS["float64"]:
        n = np.asarray(n, dtype=np.int64)
        return significant_decode(n, precision, int(q0), powers(), _LOW, dtype == "float32")
    return decode_numpy(n, precision, q0, dtype)


def decode_numpy(n, precision: int, q0: int, dtype: str):
    """:func:`decode` in numpy (the reference)."""
    import numpy as np

    width = 9 * 10 ** (precision - 1)
    index = np.abs(np.clip(n, -_INDEX_LIMIT, _INDEX_LIMIT)) - 1
    zero = index < 0
    index = np.maximum(index, 0)
    q = q0 + index // width
    m = (10 ** (precision - 1) + index % width).astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        power = _pow(np.abs(q))  # 10**|q|: divides for negative q, multiplies otherwise
        mag = np.where(q < 0, m / power, m * power)
    mag = np.where(zero, 0.0, mag)
    return np.where(n < 0, -mag, mag).astype(dtype)


def encode(x, precision: int):
    """``(n, q0)`` of finite samples ``x`` at ``precision`` digits, or None when the indexes
    would not fit int64."""
    from qres.codec._mapping_kernels import significant_encode

    if x.dtype.kind == "f" and x.dtype.itemsize in (4, 8) and 1 <= precision <= 17:
        try:
            return significant_encode(_native(x), precision, powers(), _LOW)
        except ValueError:  # samples that are not finite
            pass
    return encode_numpy(x, precision)


def _native(x):
    """``x`` in native byte order (what the compiled loops take)."""
    return x if x.dtype.isnative else x.astype(x.dtype.newbyteorder("="))


def encode_numpy(x, precision: int, _decades=None):
    """:func:`encode` in numpy (the reference). ``_decades``: what :func:`_magnitudes` gives
    for ``x``, when known."""
    import numpy as np

    wide, safe, nonzero, e10 = _magnitudes(x) if _decades is None else _decades
    if not nonzero.any():
        return np.zeros(len(x), dtype=np.int64), 0
    m, q = _digits(safe, precision, e10)
    q0 = int(q[nonzero].min())
    span = int(q[nonzero].max()) - q0 + 1
    width = 9 * 10 ** (precision - 1)
    if span * width >= _INDEX_LIMIT or not -32768 <= q0 <= 32767:
        return None
    index = 1 + (q - q0) * width + (m.astype(np.int64) - 10 ** (precision - 1))
    n = np.where(nonzero, index, 0)
    return np.where(np.signbit(wide), -n, n), q0


def _magnitudes(x):
    """``x`` as binary64, its magnitudes with zeros replaced by 1, the nonzero mask and the
    magnitudes' decades: what :func:`encode` needs whatever the precision."""
    import numpy as np

    wide = x.astype(np.float64)
    mag = np.abs(wide)
    nonzero = mag > 0
    safe = np.where(nonzero, mag, 1.0)
    return wide, safe, nonzero, _decade(safe)


def choose_precision(x, dtype: str, probe_size: int) -> int:
    """The fewest significant digits that leave no more samples of an evenly spaced probe
    inexact than the most digits do (up to a share of 1/1024)."""

    from qres.codec._mapping_kernels import significant_mismatches

    probe = x if len(x) <= probe_size else x[:: len(x) // probe_size]
    try:
        counts = significant_mismatches(_native(probe), MAX_DIGITS[dtype], powers(), _LOW)
    except ValueError:  # samples that are not finite
        counts = mismatches_numpy(probe, dtype)
    slack = max(1, len(probe) // 1024)
    best = min(counts)
    return next(p for p, n in enumerate(counts, 1) if n <= best + slack)


def mismatches_numpy(probe, dtype: str) -> list[int]:
    """For each precision from 1 up, how many samples of ``probe`` do not come back bit for
    bit through :func:`encode_numpy` and :func:`decode_numpy`; stops after the first with
    none (the reference of the compiled loop)."""
    import numpy as np

    signed = np.int32 if dtype == "float32" else np.int64
    counts = []
    decades = _magnitudes(probe)
    for p in range(1, MAX_DIGITS[dtype] + 1):
        found = encode_numpy(probe, p, decades)
        if found is None:
            counts.append(len(probe))
            continue
        back = decode_numpy(found[0], p, found[1], dtype)
        counts.append(int(np.count_nonzero(back.view(signed) != probe.view(signed))))
        if counts[-1] == 0:
            break
    return counts
