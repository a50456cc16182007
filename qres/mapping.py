"""Integer mappings: how each channel of a block of samples becomes int64 for the predictor.

Integer samples are widened. Floats become integers losslessly: decimal readings through an
exact scaling by 10**d (samples that do not fit are kept verbatim as exceptions), anything else
through an order-preserving view of their IEEE-754 bits. In bounded-error mode floats go on a
grid of step ``E / GRID_DIVISIONS``.

A mapping produces the predictor's input (``ints``), a self-delimiting *side* record (the
per-channel table, serialised into the block payload before the coded residuals), and *extra*
int64 streams that the block's entropy coder codes after the channels. The layout of the side
record is specified in ``docs/format.md``.
"""

from __future__ import annotations

import struct
from typing import Any

import attrs

from qres.errors import IntegrityError
from qres.samples import StreamSpec

KIND_INTEGER = 0  # integer samples, widened to int64
KIND_DECIMAL = 1  # floats that are decimals: k = round(x * 10**d), exceptions kept verbatim
KIND_FLOAT_BITS = 2  # floats as order-preserving integers of their IEEE-754 bits
KIND_FLOAT_GRID = 3  # bounded-error floats: k = round(x / step), exceptions kept verbatim
KINDS = (KIND_INTEGER, KIND_DECIMAL, KIND_FLOAT_BITS, KIND_FLOAT_GRID)

#: A channel is coded as decimals when at most this share of its samples are exceptions.
MAX_EXCEPTION_SHARE = 0.01
#: Largest decimal scale tried (10**d must be exact in float64, and k must stay below 2**53).
MAX_DECIMALS = {"float32": 10, "float64": 15}
#: In bounded-error mode floats go on a grid of step E / GRID_DIVISIONS; the predictor then
#: quantises with integer bound GRID_DIVISIONS - 1, so the total error is below E.
GRID_DIVISIONS = 8

_CHANNEL_HEAD = struct.Struct("<BBI")  # kind, decimals, exception count


@attrs.frozen
class ChannelMap:
    """How one channel of a block became integers."""

    kind: int
    decimals: int = 0
    exception_index: Any = None  # uint32 array of positions kept verbatim
    exception_raw: bytes = b""


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


def _monotonic_bits(values, dtype: str):
    """Order-preserving signed integers of float bit patterns (an involution on the bits)."""
    import numpy as np

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


def _decimal_ints(x, dtype: str):
    """Try exact decimal scaling of one channel: (decimals, ints, exception mask) or None."""
    import numpy as np

    wide = x.astype(np.float64)
    finite = np.isfinite(wide)
    if finite.mean() < 1 - MAX_EXCEPTION_SHARE:
        return None
    bits = x.view(np.uint32 if dtype == "float32" else np.uint64)
    magnitude = float(np.abs(wide[finite]).max()) if finite.any() else 0.0
    safe = np.where(finite, wide, 0.0)
    for d in range(MAX_DECIMALS[dtype] + 1):
        scale = 10.0**d
        if magnitude * scale >= 2.0**53:
            return None
        k = np.rint(safe * scale)
        back = (k / scale).astype(dtype)
        bad = ~((back.view(bits.dtype) == bits) & finite)
        if bad.mean() <= MAX_EXCEPTION_SHARE:
            return d, _forward_fill(k.astype(np.int64), bad), bad
    return None


def _exceptions(kind: int, decimals: int, x, bad) -> ChannelMap:
    import numpy as np

    index = np.flatnonzero(bad).astype("<u4")
    raw = x[index].astype(x.dtype.newbyteorder("<")).tobytes()
    return ChannelMap(kind, decimals, index, raw)


def _side_bytes(maps: list[ChannelMap]) -> bytes:
    parts = []
    for cmap in maps:
        count = 0 if cmap.exception_index is None else len(cmap.exception_index)
        parts.append(_CHANNEL_HEAD.pack(cmap.kind, cmap.decimals, count))
        if count:
            parts.append(cmap.exception_index.tobytes())
            parts.append(cmap.exception_raw)
    return b"".join(parts)


def to_integers(block, spec: StreamSpec, grid_step: float | None) -> Mapped | None:
    """Map a (frames, channels) block to int64 (channels, frames), or None when the bounded-
    error grid cannot hold the values (the caller then codes the block lossless)."""
    import numpy as np

    native = block.astype(block.dtype.newbyteorder("="), copy=False)
    if not spec.dtype.startswith("float"):
        maps = [ChannelMap(KIND_INTEGER)] * spec.channels
        return Mapped(native.T.astype(np.int64), _side_bytes(maps))
    out = np.empty((spec.channels, native.shape[0]), dtype=np.int64)
    maps = []
    for c in range(spec.channels):
        x = np.ascontiguousarray(native[:, c])
        if grid_step is not None:
            wide = x.astype(np.float64)
            ok = np.isfinite(wide)
            k = np.rint(np.where(ok, wide, 0.0) / grid_step)
            if np.abs(k).max(initial=0) >= 2.0**62:
                return None
            bad = ~ok
            out[c] = _forward_fill(k.astype(np.int64), bad)
            maps.append(_exceptions(KIND_FLOAT_GRID, 0, x, bad))
            continue
        found = _decimal_ints(x, spec.dtype)
        if found is None:
            out[c] = _monotonic_bits(x, spec.dtype)
            maps.append(ChannelMap(KIND_FLOAT_BITS))
        else:
            d, ints, bad = found
            out[c] = ints
            maps.append(_exceptions(KIND_DECIMAL, d, x, bad))
    return Mapped(out, _side_bytes(maps))


def read_side(view: memoryview, pos: int, spec: StreamSpec, frames: int) -> tuple[Side, int]:
    """Parse the side record at ``view[pos:]``; return it and the position after it."""
    import numpy as np

    maps = []
    item = spec.itemsize
    for _ in range(spec.channels):
        if pos + _CHANNEL_HEAD.size > len(view):
            raise IntegrityError("channel table truncated")
        kind, decimals, count = _CHANNEL_HEAD.unpack_from(view, pos)
        pos += _CHANNEL_HEAD.size
        if kind not in KINDS or count > frames or decimals > 22:
            raise IntegrityError("bad channel table")
        if (kind == KIND_INTEGER) == spec.dtype.startswith("float"):
            raise IntegrityError("channel kind does not match the sample type")
        if pos + count * (4 + item) > len(view):
            raise IntegrityError("exception list truncated")
        index = np.frombuffer(view, dtype="<u4", count=count, offset=pos)
        pos += 4 * count
        raw = bytes(view[pos : pos + count * item])
        pos += count * item
        if count and int(index.max()) >= frames:
            raise IntegrityError("exception index out of range")
        maps.append(ChannelMap(kind, decimals, index, raw))
    return Side(tuple(maps)), pos


def from_integers(ints, side: Side, extras, spec: StreamSpec, grid_step: float | None):
    """Inverse of :func:`to_integers`: int64 (channels, frames) to a (frames, channels) block."""
    import numpy as np

    frames = ints.shape[1]
    out = np.empty((frames, spec.channels), dtype=spec.numpy_dtype())
    for c, cmap in enumerate(side.maps):
        k = ints[c]
        if cmap.kind == KIND_INTEGER:
            info = np.iinfo(spec.dtype)
            if k.size and (k.min() < info.min or k.max() > info.max):
                raise IntegrityError("decoded samples out of the type's range; corrupted")
            values = k.astype(spec.dtype)
        elif cmap.kind == KIND_FLOAT_BITS:
            values = _from_monotonic_bits(k, spec.dtype)
        elif cmap.kind == KIND_DECIMAL:
            values = (k.astype(np.float64) / 10.0**cmap.decimals).astype(spec.dtype)
        else:
            if grid_step is None:
                raise IntegrityError("grid channel in a lossless block; corrupted")
            values = (k.astype(np.float64) * grid_step).astype(spec.dtype)
        if cmap.exception_index is not None and len(cmap.exception_index):
            raw = np.frombuffer(cmap.exception_raw, dtype=np.dtype(spec.dtype).newbyteorder("<"))
            values = values.copy()
            values[cmap.exception_index] = raw
        out[:, c] = values
    return out
