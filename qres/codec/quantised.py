"""Quantised blocks of bounded-error streams (block method 3, format 10 on).

The closed-loop candidates of a bounded-error block quantise each residual inside the
predictor's loop. A quantised block does it the other way round: every sample is put on the
coarsest grid the bound allows, ``q = round(x / step)``, and the integers ``q`` are coded by
the whole *lossless* pipeline (mappings, polynomial channels, repeats, channel pairs), which
sees their constant stretches, copies and few distinct values exactly. The decoder decodes
``q`` and multiplies back. ``step`` follows from the header's bound ``E`` alone:

- integer samples: ``2E + 1``, ``q = floor((x + E) / (2E + 1))``; ``q * step`` is clipped to
  the sample type's range (which only brings it closer to ``x``);
- float samples: ``2E * (1 - 2**-16)``, ``q = rint(x / step)`` (slightly under ``2E``, so that
  float rounding in ``x / step`` and ``q * step`` stays inside the bound); non-finite samples
  are kept as themselves, a NaN with its bits (``q`` is then coded as float64 samples, whose
  mapping keeps them).

The payload is one byte, the type ``q`` is coded as (:data:`INNER_TYPES`), then a lossless
predicted payload of those samples under the block's flags (docs/format.md). The encoder
checks the reconstruction against the bound and offers the block only where it holds.
Format 10 also widens the closed loop's float grid to the whole bound (:func:`grid_step`).
"""

from __future__ import annotations

from typing import Any

from qres.kernel.errors import IntegrityError

#: The first format version whose blocks may be quantised (and whose float grid is wider).
SINCE_VERSION = 10
#: The sample types the quantised integers of a block are coded as, by the payload's first
#: byte: 0, the stream's own (integer streams); for float streams int32 or int64 when every
#: sample is finite and its ``q`` fits, else float64 (which keeps NaN and infinities).
INNER_TYPES = {0: None, 1: "int32", 2: "int64", 3: "float64"}
_CODES = {name: code for code, name in INNER_TYPES.items() if name}
#: The float step is this fraction of ``2E`` (docs above).
_FLOAT_SHRINK = 1.0 - 2.0**-16
#: The closed loop's float64 grid is this fraction of the whole bound (:func:`grid_step`).
_GRID_SHRINK = 1.0 - 2.0**-8
#: Quantised floats of at most this magnitude are coded as int64 (beyond, as float64).
_INT64_MOST = 2.0**62
_INT64_MAX = (1 << 63) - 1
#: The candidates of a bounded-error block (qres.codec.pipeline): the closed loop, the
#: quantised block and lossless coding.
CLOSED, QUANTISED, LOSSLESS = "closed", "quantised", "lossless"
CANDIDATES = frozenset((CLOSED, QUANTISED, LOSSLESS))
#: A bounded-error block is screened (:func:`screen_spans`) in up to _SCREEN_SPANS spans of
#: at least _SCREEN_SPAN_LEAST frames (shorter spans misjudge the adaptive closed loop, which
#: restarts its warm-up at every seam), together 1/_SCREEN_SHARE of its frames but at most
#: _SCREEN_MOST; a block with room for fewer than _SCREEN_SPANS_LEAST spans is not screened
#: (on a sample that short the lossless pipeline codes every candidate whole, and the screen
#: costs about what it saves).
_SCREEN_SHARE = 8
_SCREEN_SPANS = 8
_SCREEN_SPANS_LEAST = 2
_SCREEN_SPAN_LEAST = 512
_SCREEN_MOST = 16384
#: The noise band of the screen (:func:`may_win`): a candidate is coded whole when its bytes
#: on the sample are at most _BAND (numerator, denominator) of the best one's plus _SLACK.
_BAND = (4, 3)
_SLACK = 32


def step(dtype: str, max_error: float) -> float | int:
    """The grid step of quantise-first blocks of ``dtype`` samples under bound ``max_error``."""
    if dtype.startswith("float"):
        return 2.0 * float(max_error) * _FLOAT_SHRINK
    return 2 * int(max_error) + 1


def grid_step(max_error: float, version: int) -> float:
    """The grid step of closed-loop float blocks (bounded error ``max_error``; the predictor
    quantises with integer bound ``GRID_DIVISIONS - 1 = 7``). ``E / 8`` before format 10: the
    reconstructions stay within ``15E/16``. From format 10 nearly the whole bound,
    ``2E / 15 * (1 - 2**-8)``: 7 steps plus the grid's half step come to ``E (1 - 2**-8)``, a
    slack that covers the sample type's rounding of values up to about ``2**44 E`` (float64)
    or ``2**15 E`` (float32); a block whose rounding breaks the bound anyway fails the
    encoder's check and is coded quantised or lossless instead."""
    from qres.codec.mapping import GRID_DIVISIONS

    if version < SINCE_VERSION:
        return float(max_error) / GRID_DIVISIONS
    return 2.0 * float(max_error) / (2 * GRID_DIVISIONS - 1) * _GRID_SHRINK


def quantise(block, dtype: str, max_error: float) -> tuple[int, Any] | None:
    """``(type code, q)`` for a (frames, channels) block, or None when no grid fits (a
    float step that underflows to 0, or quantised values too large for any coded type)."""
    import numpy as np

    s = step(dtype, max_error)
    if not dtype.startswith("float"):
        x = block.astype(np.int64)
        e = int(max_error)
        if s > _INT64_MAX or int(x.max(initial=0)) + e > _INT64_MAX:  # x + E and the step
            return None  # must fit int64 (only int64 samples and bounds near 2**62 miss)
        return 0, ((x + e) // s).astype(block.dtype)
    if not (s > 0 and np.isfinite(s)):
        return None
    x = block.astype(np.float64)
    with np.errstate(all="ignore"):
        # A NaN keeps its own bits (arithmetic on NaN may give other bits on other machines).
        q = _nudged(x, np.where(np.isnan(x), x, np.rint(x / s)), s, float(max_error), dtype)
    finite = np.isfinite(q)
    if not finite.all():
        return _CODES["float64"], q
    most = float(np.abs(q).max(initial=0.0))
    if most < 2.0**31:
        return _CODES["int32"], q.astype(np.int32)
    if most < _INT64_MOST:
        return _CODES["int64"], q.astype(np.int64)
    return _CODES["float64"], q


def _nudged(x, q, s: float, max_error: float, dtype: str):
    """``q`` with each sample whose reconstruction rounding puts it just past the bound (its
    value ``x`` near the middle of two grid cells, or a float32 product rounded away) moved to
    the neighbouring cell on ``x``'s side, where that one holds."""
    import numpy as np

    back = (q * s).astype(dtype).astype(np.float64)
    off = np.flatnonzero(np.abs(x - back) > max_error)  # NaN never compares greater
    if off.size:
        moved = q.flat[off] + np.sign(x.flat[off] - back.flat[off])
        again = (moved * s).astype(dtype).astype(np.float64)
        fits = np.abs(x.flat[off] - again) <= max_error
        q.flat[off[fits]] = moved[fits]
    return q


def reconstruct(q, dtype: str, max_error: float, bounds) -> Any:
    """The samples a quantise-first block decodes to: ``q * step`` in ``dtype`` (the stream's
    working type), integers clipped to ``bounds``."""
    import numpy as np

    s = step(dtype, max_error)
    with np.errstate(all="ignore"):  # damaged data may overflow; its checksum then fails
        if dtype.startswith("float"):
            wide = q.astype(np.float64)
            return np.where(np.isnan(wide), wide, wide * s).astype(dtype)  # NaN bits as coded
        if s > _INT64_MAX:
            raise IntegrityError("quantised block: the bound's step exceeds int64; corrupted")
        # clip(q * step, lo, hi) without leaving int64: q outside [qlo, qhi] gives lo or hi.
        lo, hi = bounds
        qlo, qhi = -(-lo // s), hi // s
        q = q.astype(np.int64)
        wide = np.clip(q, qlo, qhi) * np.int64(s)
        wide = np.where(q < qlo, lo, np.where(q > qhi, hi, wide))
        return wide.astype(dtype)


def inner_type(code: int, work_dtype: str) -> str:
    """The sample type of a quantise-first payload's type code (checked)."""
    name = INNER_TYPES.get(code, "?")
    floats = work_dtype.startswith("float")
    if name == "?" or (name is None) == floats:
        raise IntegrityError(f"quantised block: bad sample type code {code}; corrupted")
    return work_dtype if name is None else name


def screen_spans(frames: int) -> list[tuple[int, int]]:
    """Where a bounded-error block of ``frames`` frames screens its candidates: spans spread
    evenly over it (none for a block too short to sample, whose candidates are all coded)."""
    total = min(frames // _SCREEN_SHARE, _SCREEN_MOST)
    count = min(_SCREEN_SPANS, total // _SCREEN_SPAN_LEAST)
    if count < _SCREEN_SPANS_LEAST:
        return []
    span = total // count
    step = frames // count
    return [(a, a + span) for a in range(0, step * count, step)]


def may_win(sizes: dict[str, int]) -> frozenset[str]:
    """The candidates to code whole given their bytes on the screen's sample: those within
    the noise band of the smallest, and any the sample could not measure (a mapping that
    failed on the sample may hold on the block; such a candidate costs little to try)."""
    if not sizes:
        return CANDIDATES
    best = min(sizes.values())
    num, den = _BAND
    near = {name for name, size in sizes.items() if size * den <= best * num + _SLACK * den}
    return frozenset(near | (CANDIDATES - sizes.keys()))
