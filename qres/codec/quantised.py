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

From format 11 a float block may instead record its own grid, one ``(step, offset)`` per
channel (bit 7 of the first byte, :data:`LATTICE_FLAG`): a channel whose samples sit on a
lattice ``x = a + n*d`` of their own (decimal readings, converter codes, integer-valued
floats; found by the lossless mappings, :func:`channel_lattice`) is quantised on the grid of
step ``k*d`` with offset ``a``, ``k`` the largest odd count of lattice steps whose half-width
``((k-1)/2) d`` plus the float rounding stays within ``E``: ``q = floor((n + (k-1)/2) / k)``
of the lattice codes ``n``, exactly as integers are (``2E + 1`` is this rule for ``d = 1``).
A step of ``2E`` that is no multiple of ``d`` beats against the lattice and makes ``q``
irregular; on the lattice's grid ``q`` coarsens regularly as the bound grows. The other
channels keep the bound's step with offset 0. The decoder takes the grids from the payload.
"""

from __future__ import annotations

import struct
from typing import Any

from qres.kernel.errors import IntegrityError

#: The first format version whose blocks may be quantised (and whose float grid is wider).
SINCE_VERSION = 10
#: The first format version whose quantised float blocks may record their own grids.
LATTICE_SINCE = 11
#: Bit of a quantised payload's first byte: a (step, offset) per channel follows it.
LATTICE_FLAG = 0x80
#: One channel's recorded grid: step and offset, binary64 little-endian.
GRID = struct.Struct("<dd")
#: A channel's lattice must hold (within rounding) on all but 1/_LATTICE_MISSES of its finite
#: samples; the rest are placed by rounding and left to the encoder's bound check.
_LATTICE_MISSES = 256
#: A later lattice candidate replaces an earlier one only when its step is coarser by more
#: than this factor (steps fitted to the same lattice differ in their last bits).
_COARSER = 1.0 + 2.0**-20
#: The lattice is looked for on at most this many samples, evenly spread over the channel.
_LATTICE_PROBE = 8192
#: Lattice codes must stay exact in binary64 (and their floor division in int64).
_CODE_LIMIT = 2.0**52
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
#: quantised block on the bound's grid, the quantised block on the channels' own lattices
#: (format 11 on) and lossless coding.
CLOSED, QUANTISED, LATTICE, LOSSLESS = "closed", "quantised", "lattice", "lossless"
CANDIDATES = frozenset((CLOSED, QUANTISED, LATTICE, LOSSLESS))
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
#: Of the two quantised grids, the lattices' is coded whole instead of the bound's when its
#: sample bytes are below the bound's by more than _GRID_BAND (numerator, denominator) plus
#: _GRID_SLACK. On the blocks measured (weather, jena, acsf1 at 1e-4 to 1e-2 of their range)
#: the sample put them in the block's order whenever they were 2% apart or more; closer, not
#: always (acsf1 at 1e-3: the lattices' 2 bytes smaller on the sample, 22 larger whole).
_GRID_BAND = (65, 64)
_GRID_SLACK = 8


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
    return _typed(q)


def _nudged(x, q, s, max_error: float, dtype: str, offset=0.0):
    """``q`` with each sample whose reconstruction rounding puts it just past the bound (its
    value ``x`` near the middle of two grid cells, or a float32 product rounded away) moved to
    the neighbouring cell on ``x``'s side, where that one holds. ``s`` and ``offset``: the
    grid's step and offset (scalars, or one per channel)."""
    import numpy as np

    back = (q * s + offset).astype(dtype).astype(np.float64)
    off = np.flatnonzero(np.abs(x - back) > max_error)  # NaN never compares greater
    if off.size:
        moved = q.flat[off] + np.sign(x.flat[off] - back.flat[off])
        s_off = np.broadcast_to(s, q.shape).flat[off]
        o_off = np.broadcast_to(offset, q.shape).flat[off]
        again = (moved * s_off + o_off).astype(dtype).astype(np.float64)
        fits = np.abs(x.flat[off] - again) <= max_error
        q.flat[off[fits]] = moved[fits]
    return q


def channel_lattice(x, dtype: str) -> tuple[float, float, float] | None:
    """The lattice ``x ~ a + n*d`` a float channel's finite samples sit on, as ``(a, d, r)``
    with ``r`` the largest distance of a sample on it from its lattice point (binary64
    rounding), or None. The candidates are what the lossless mappings find on an evenly
    spread probe of the channel: the plain decimal grids ``10**-decimals`` of the decimal
    mapping's choice of decimals (kind 1; integer-valued floats have 0 decimals) and the
    scaled lattice (kind 7, which also finds decimal lattices of other steps). The coarsest that
    holds on all but 1/_LATTICE_MISSES of the channel's finite samples wins (the first on a
    tie). Elementwise binary64 arithmetic and maxima only: the same on every machine."""
    import numpy as np

    from qres.codec import mapping, scaled
    from qres.codec.dictionary import probe_index

    finite = x[np.isfinite(x)]
    if len(finite) < 2:
        return None
    probe = finite
    if len(finite) > _LATTICE_PROBE:
        probe = finite[probe_index(len(finite), _LATTICE_PROBE)]
    probe = np.ascontiguousarray(probe)
    # The decimal grids first (a fitted step of the same size is that grid with noise in its
    # last bits): the decimal counts the decimal mapping would try (its probe's choice, not its
    # segment search, which costs ten times more and whose one-segment lattices the scaled
    # lattice's fit finds too).
    candidates = [(0.0, 1.0 / 10.0**d) for d in mapping._choose_decimals(probe, dtype)]
    found = scaled.find(probe, dtype)
    if found is not None:
        candidates.append((float(found[0]), float(found[1])))
    wide = finite.astype(np.float64)
    best = None
    for a, d in candidates:
        coarser = best is None or d > best[1] * _COARSER
        if not (np.isfinite(a) and np.isfinite(d) and d > 0 and coarser):
            continue
        with np.errstate(all="ignore"):
            n = np.rint((wide - a) / d)
            gap = np.abs(wide - (n * d + a))
        on = (gap <= d * 2.0**-10) & (np.abs(n) < _CODE_LIMIT)
        if len(wide) - int(np.count_nonzero(on)) > len(wide) // _LATTICE_MISSES:
            continue
        best = (a, d, float(gap[on].max(initial=0.0)))
    return best


def lattice_grid(x, dtype: str, max_error: float) -> tuple[float, float, int] | None:
    """The grid of a float channel on its own lattice (:func:`channel_lattice`) under bound
    ``max_error``: ``(a, d, k)``, the grid of step ``k*d`` and offset ``a`` with ``k`` the
    largest odd count of lattice steps such that ``((k-1)/2) d``, the lattice's own residue and
    four units in the last place of the largest reconstruction (the rounding of ``q*k*d + a``
    and of its conversion to ``dtype``) stay within the bound; None when the channel has no
    lattice or the bound is finer than its rounding."""
    import numpy as np

    found = channel_lattice(x, dtype)
    if found is None:
        return None
    a, d, residue = found
    with np.errstate(all="ignore"):
        finite = x[np.isfinite(x)].astype(np.float64)
        top = float(np.abs(finite).max(initial=0.0)) + abs(a) + float(max_error)
        rounding = 4.0 * float(np.spacing(np.array(top, dtype=dtype)))
    room = float(max_error) - residue - rounding
    if not (np.isfinite(room) and room >= 0):
        return None
    if not room / d < _CODE_LIMIT:  # the grid would be coarser than the codes are exact
        return None
    half = int(room // d)
    if not np.isfinite((2 * half + 1) * d):
        return None
    return a, d, 2 * half + 1


def quantise_lattice(block, dtype: str, max_error: float, grids):
    """``(type code, q, recorded)`` of a (frames, channels) float block on per-channel grids
    ``grids`` (:func:`lattice_grid`; None: the bound's own step, offset 0), with ``recorded``
    the ``(step, offset)`` of each channel that the payload records; None when no channel has a
    lattice grid or the bound's step underflows. On a lattice grid ``q = floor((n + h) / k)``
    of the lattice codes ``n = rint((x - a) / d)`` (``h = (k-1)/2``), in int64 where ``n`` is
    exact; non-finite samples are kept as themselves, as on the bound's grid."""
    import numpy as np

    s = step(dtype, max_error)
    if all(g is None for g in grids) or not (s > 0 and np.isfinite(s)):
        return None
    x = block.astype(np.float64)
    q = np.empty_like(x)
    recorded = []
    with np.errstate(all="ignore"):
        for c, grid in enumerate(grids):
            col = x[:, c]
            if grid is None:
                recorded.append((s, 0.0))
                q[:, c] = np.where(np.isnan(col), col, np.rint(col / s))
                continue
            a, d, k = grid
            recorded.append((k * d, a))
            n = np.subtract(col, a)
            np.divide(n, d, out=n)
            np.rint(n, out=n)
            exact = np.abs(n) < _CODE_LIMIT  # False for NaN and infinities
            if exact.all():  # the common case: one integer pass
                q[:, c] = (n.astype(np.int64) + (k - 1) // 2) // k
                continue
            codes = np.where(exact, n, 0.0).astype(np.int64)
            on = ((codes + (k - 1) // 2) // k).astype(np.float64)
            off = np.where(np.isnan(col), col, np.rint((col - a) / (k * d)))
            q[:, c] = np.where(exact, on, off)
        steps = np.array([r[0] for r in recorded])
        offsets = np.array([r[1] for r in recorded])
        q = _nudged(x, q, steps, float(max_error), dtype, offsets)
    return (*_typed(q), tuple(recorded))


def _typed(q) -> tuple[int, Any]:
    """The type code and array a float block's grid indices ``q`` (float64) are coded as."""
    import numpy as np

    if not np.isfinite(q).all():
        return _CODES["float64"], q
    most = float(np.abs(q).max(initial=0.0))
    if most < 2.0**31:
        return _CODES["int32"], q.astype(np.int32)
    if most < _INT64_MOST:
        return _CODES["int64"], q.astype(np.int64)
    return _CODES["float64"], q


def grids_bytes(recorded) -> bytes:
    """The recorded grids of a lattice payload: ``(step, offset)`` per channel."""
    return b"".join(GRID.pack(step_, offset) for step_, offset in recorded)


def read_grids(payload: bytes, channels: int) -> tuple[tuple[tuple[float, float], ...], int]:
    """The recorded grids after a lattice payload's first byte, checked (each step finite and
    positive, each offset finite), and where the rest starts."""
    import math

    end = 1 + GRID.size * channels
    if len(payload) < end:
        raise IntegrityError("quantised block: its grids are cut short; corrupted")
    grids = tuple(GRID.unpack_from(payload, 1 + GRID.size * c) for c in range(channels))
    for step_, offset in grids:
        if not (math.isfinite(step_) and step_ > 0 and math.isfinite(offset)):
            raise IntegrityError(
                f"quantised block: bad grid (step {step_!r}, offset {offset!r}); corrupted"
            )
    return grids, end


def reconstruct(q, dtype: str, max_error: float, bounds, grids=None) -> Any:
    """The samples a quantise-first block decodes to: ``q * step`` in ``dtype`` (the stream's
    working type), integers clipped to ``bounds``; with recorded ``grids`` (a ``(step,
    offset)`` per channel) ``q * step + offset`` channel by channel."""
    import numpy as np

    s = step(dtype, max_error)
    with np.errstate(all="ignore"):  # damaged data may overflow; its checksum then fails
        if grids is not None:
            wide = q.astype(np.float64)
            steps = np.array([g[0] for g in grids])
            offsets = np.array([g[1] for g in grids])
            return np.where(np.isnan(wide), wide, wide * steps + offsets).astype(dtype)
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
    """The sample type of a quantise-first payload's type code (checked; the caller strips
    :data:`LATTICE_FLAG`)."""
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
    failed on the sample may hold on the block; such a candidate costs little to try); of
    the quantised blocks on the bound's grid and on the lattices, only one: the lattices'
    where it is clearly smaller."""
    if not sizes:
        return CANDIDATES
    best = min(sizes.values())
    num, den = _BAND
    near = {name for name, size in sizes.items() if size * den <= best * num + _SLACK * den}
    kept = near | (CANDIDATES - sizes.keys())
    # The two grids code nearly the same integers the same way: only one is coded whole, the
    # lattices' where its sample is smaller by more than _GRID_BAND (plus _GRID_SLACK bytes),
    # else the bound's (closer than that the sample's order need not be the block's).
    if QUANTISED in sizes and LATTICE in sizes:
        num, den = _GRID_BAND
        ahead = sizes[QUANTISED] * den > sizes[LATTICE] * num + _GRID_SLACK * den
        kept -= {QUANTISED if ahead else LATTICE}
    return frozenset(kept)
