"""Inter-channel decorrelation of a block's residuals, chosen per block and channel by cost.

Channels of one recording often share their innovations: the components of a strong-motion
record move with the same ground, colocated sensors see the same signal, two accelerometer
axes the same gesture. Per channel, the residuals of one of the eight channels before it (the
*reference*) scaled by a weight in sixteenths are subtracted from its own; weight 16 is the
plain difference (FLAC's left/side), other weights cover gain differences and opposite signs.
The codec picks the reference whose residuals correlate best with the channel's on a sample
of the block, the least-squares weight, and keeps the pair only when the coder's bytes of the
whole channel shrink; a channel nothing helps keeps its own residuals (the table's 0). Working
on residuals keeps every predictor (the adaptive ones, their per-channel polynomial
alternatives, the bounded-error quantiser) exactly as it was, and costs a few vector passes.

Table layout (docs/format.md, "Channel pairs"): one byte per channel, 0 or the distance back
to its reference (1..8); after each nonzero one, the weight as a signed byte (-64..64, not 0).
The decoder restores channels in order, so a reference is always restored before it is used.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from qres.kernel.errors import IntegrityError

#: How far back a reference channel may be.
MAX_BACK = 8
#: Weights are sixteenths in -4..4.
WEIGHT_SHIFT = 4
MAX_WEIGHT = 64
#: Residuals larger than this in magnitude take no part (weight * residual stays in int64).
_LARGEST = 1 << 48
#: The ranking's sample is scaled to this many bits (exact integer dot products).
_SCALE_BITS = 20
#: A pair is coded whole only if its estimate beats the channel's own by this factor.
_PROMISE = 0.99


def _small(row) -> bool:
    """Whether every residual of ``row`` is within ±_LARGEST (min and max: abs() of the
    smallest int64 is negative)."""
    return not len(row) or (int(row.min()) > -_LARGEST and int(row.max()) < _LARGEST)


def apply(row, ref, weight: int):
    """``row - round(weight * ref / 16)`` (int64, floor of the half-up rounding)."""
    return row - ((weight * ref + (1 << (WEIGHT_SHIFT - 1))) >> WEIGHT_SHIFT)


def undo(row, ref, weight: int):
    """The inverse of :func:`apply`."""
    return row + ((weight * ref + (1 << (WEIGHT_SHIFT - 1))) >> WEIGHT_SHIFT)


def choose(
    rows: Sequence[Any],
    coded: list[bytes],
    eligible: Sequence[bool],
    spans: Sequence[tuple[int, int]],
    estimate: Callable[[Any], int],
    code_row: Callable[[int, Any], bytes],
    memo: dict[tuple[int, int, int], bytes] | None = None,
) -> list[tuple[int, int]] | None:
    """Per channel ``(back, weight)`` (``(0, 0)``: its own residuals), or None when no channel
    gains; ``coded`` is updated in place with the chosen channels' bytes. ``rows`` are the
    channels' residuals, ``eligible`` which may take part, ``spans`` where the block is
    sampled for the ranking, ``code_row(c, row)`` the coder's bytes of a row of channel c.
    ``memo`` keeps the bytes of each pair coded, by channel, reference and weight, for
    another choice over the same rows (the block's stages may be chosen twice)."""
    import numpy as np

    count = len(rows)
    ok = [bool(e) and _small(r) for e, r in zip(eligible, rows, strict=True)]
    if sum(ok) < 2:
        return None
    sample = _sample(rows, ok, spans)
    # The ranking decides bytes, so it is exact integer arithmetic (no BLAS sums, whose order
    # and rounding vary by machine): the sample scaled to under 2**20 in magnitude, so a
    # dot product of up to 2**21 terms stays below 2**61.
    shift = max(0, int(np.abs(sample).max()).bit_length() - _SCALE_BITS)
    scaled = sample >> shift
    energy = [int(v) for v in np.einsum("ij,ij->i", scaled, scaled)]
    # Every channel's dot products with the channels up to MAX_BACK before it, one vector
    # pass per distance back (einsum: numpy's integer matmul has no vector loop).
    lagged = [None] + [
        np.einsum("ij,ij->i", scaled[back:], scaled[:-back]).tolist()
        for back in range(1, min(MAX_BACK, count - 1) + 1)
    ]
    table = [(0, 0)] * count
    for c in range(1, count):
        if not ok[c]:
            continue
        refs = [r for r in range(max(0, c - MAX_BACK), c) if ok[r] and energy[r] > 0]
        if not refs:
            continue
        dots = [lagged[c - r][r] for r in refs]
        # The reference explaining most of the channel: the largest dot**2 / energy, compared
        # as exact fractions (the nearest reference on a tie).
        pick = 0
        for k in range(1, len(refs)):
            if dots[k] ** 2 * energy[refs[pick]] >= dots[pick] ** 2 * energy[refs[k]]:
                pick = k
        ref = refs[pick]
        # The least-squares weight in sixteenths, rounded half up: floor(16 d / e + 1/2).
        weight = (32 * dots[pick] + energy[ref]) // (2 * energy[ref])
        weight = max(-MAX_WEIGHT, min(MAX_WEIGHT, weight))
        if weight == 0:
            continue
        own = estimate(sample[c])
        if estimate(apply(sample[c], sample[ref], weight)) >= _PROMISE * own:
            continue
        mine = None if memo is None else memo.get((c, ref, weight))
        if mine is None:
            mine = code_row(c, apply(rows[c], rows[ref], weight))
            if memo is not None:
                memo[c, ref, weight] = mine
        if len(mine) + 1 < len(coded[c]):
            coded[c] = mine
            table[c] = (c - ref, weight)
    return table if any(back for back, _ in table) else None


def _sample(rows: Sequence[Any], ok: Sequence[bool], spans: Sequence[tuple[int, int]]):
    """The ranking's sample (channels x sampled frames, int64): each channel's ``spans``
    concatenated, zeros for a channel that takes no part."""
    import numpy as np

    width = sum(b - a for a, b in spans)
    out = np.zeros((len(rows), width), dtype=np.int64)
    for c, r in enumerate(rows):
        if ok[c]:
            at = 0
            for a, b in spans:
                out[c, at : at + b - a] = r[a:b]
                at += b - a
    return out


def encode_table(table: Sequence[tuple[int, int]]) -> bytes:
    """The table's bytes: per channel its distance back, then (if not 0) its weight."""
    out = bytearray()
    for back, weight in table:
        out.append(back)
        if back:
            out += weight.to_bytes(1, "little", signed=True)
    return bytes(out)


def read_table(view, pos: int, channels: int) -> tuple[list[tuple[int, int]], int]:
    """Read and check a table at ``view[pos]``: every reference is an earlier channel at most
    MAX_BACK back, every weight nonzero and within MAX_WEIGHT, and some channel has a pair."""
    table = []
    for c in range(channels):
        if pos >= len(view):
            raise IntegrityError("channel pairs truncated")
        back = view[pos]
        pos += 1
        weight = 0
        if back:
            if pos >= len(view):
                raise IntegrityError("channel pairs truncated")
            weight = int.from_bytes(view[pos : pos + 1], "little", signed=True)
            pos += 1
            if back > min(c, MAX_BACK) or not weight or abs(weight) > MAX_WEIGHT:
                raise IntegrityError(f"bad channel pair for channel {c}: {back}, {weight}")
        table.append((back, weight))
    if not any(back for back, _ in table):
        raise IntegrityError("channel pairs: no channel has a pair; corrupted")
    return table, pos


def restore(rows: list[Any], table: Sequence[tuple[int, int]]) -> None:
    """Undo the table on the decoded residual rows, in channel order (in place)."""
    for c, (back, weight) in enumerate(table):
        if back:
            rows[c] = undo(rows[c], rows[c - back], weight)
