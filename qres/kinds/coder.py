"""The coder kind: residual entropy coders that turn integer residuals into bytes and back.

A coder codes one channel of one block at a time. :meth:`Coder.encode` takes a 1-D array of
int64 residuals (any int64 value, including the wrap-around residuals of int64 data) and
returns bytes; :meth:`Coder.decode` takes those bytes and the sample count ``n`` (stored by the
container) and returns the residuals. Every call starts from the coder's fresh initial state,
so blocks are independent and decode in any order.

Decoding trusts nothing: truncated, corrupted or foreign bytes raise
:class:`~qres.kernel.errors.IntegrityError`, never read out of bounds, never loop without bound and
never allocate more than O(n + len(data)).

A coder whose ``uses_segments`` is true also accepts ``segments``: the lengths of consecutive
runs of the residuals that a predictor produced with different statistics (the levels of the
interpolation predictor, coarse to fine). It may model each run apart; its decoder must be
given the same lengths. Other coders are never passed segments.

The optional integrity trailer (:func:`seal` / :func:`unseal`) is shared by the built-in
coders: a CRC-32 (ISO-HDLC, as :func:`zlib.crc32`) of the sample count and the payload,
stored as 4 little-endian bytes after the payload. It makes every truncation and every short
burst of flipped bits an :class:`~qres.kernel.errors.IntegrityError` even when the coder is used
outside a container that has its own block checksums.
"""

from __future__ import annotations

import operator
import struct
import zlib
from abc import abstractmethod
from typing import TYPE_CHECKING, Any

from qres.kernel.errors import IntegrityError, QresError
from qres.kernel.plugins import Plugin

if TYPE_CHECKING:  # numpy is imported lazily so that loading plugins stays light
    import numpy as np

#: Largest sample count a coder accepts in one call (the container bounds blocks far lower).
MAX_SAMPLES = 1 << 32

_CHECK = struct.Struct("<I")


class Coder(Plugin):
    """Base class of residual entropy coders (plugin kind ``coder``).

    Subclasses set ``name`` and ``Config`` and implement :meth:`encode` and :meth:`decode`.
    """

    #: True if :meth:`encode` and :meth:`decode` take ``segments`` (see the module docstring).
    uses_segments: bool = False
    #: True if every coded sample updates an adaptive context model (a pass then costs several
    #: times a polynomial predictor's): the codec screens a short block's candidates on part
    #: of it before it codes one whole, where a cheap coder codes them whole at once.
    models_context: bool = False

    @abstractmethod
    def encode(self, residuals: Any) -> bytes:
        """Code a 1-D array of int64 residuals into bytes, from the fresh initial state."""
        raise NotImplementedError(f"coder {self.name!r} does not implement encode")

    @abstractmethod
    def decode(self, data: bytes, n: int) -> np.ndarray:
        """Decode ``n`` residuals from ``data``; raise IntegrityError on any inconsistency."""
        raise NotImplementedError(f"coder {self.name!r} does not implement decode")

    def encode_open(self, residuals: Any) -> tuple[bytes, Any]:
        """:meth:`encode`'s bytes of ``residuals`` (no segments) and the stream kept open after
        them, for :meth:`resume`: None (the default) when the coder cannot continue a stream."""
        return self.encode(residuals), None

    def resume(self, stream: Any, more: Any) -> bytes:
        """Continue an open ``stream`` (:meth:`encode_open`) with the residuals ``more``: the
        bytes :meth:`encode` gives the coded residuals followed by ``more``, without coding
        the first ones again. ``stream`` then holds them all."""
        raise NotImplementedError(f"coder {self.name!r} cannot continue a stream")

    def fork(self, stream: Any) -> Any:
        """A copy of the open ``stream`` (:meth:`encode_open`) that goes on apart from it."""
        raise NotImplementedError(f"coder {self.name!r} cannot continue a stream")

    def max_samples(self, nbytes: int) -> int | None:
        """The most residuals ``nbytes`` of this coder's output can decode to, or ``None`` if
        the coder has no such bound (a count beyond it is damage, refused before decoding).
        """
        return None


def as_residuals(residuals: Any, coder: str) -> np.ndarray:
    """``residuals`` as a C-contiguous 1-D int64 array, or a :class:`QresError` saying why not."""
    import numpy as np

    arr = np.asarray(residuals)
    if arr.ndim != 1:
        raise QresError(
            f"coder {coder!r}: residuals must be a 1-D array, got shape {arr.shape}; "
            "pass one channel of one block"
        )
    if arr.dtype != np.int64:
        if arr.size and arr.dtype.kind not in "iub":
            raise QresError(
                f"coder {coder!r}: residuals must be integers, got dtype {arr.dtype}; "
                "convert them to int64"
            )
        if arr.dtype == np.uint64 and arr.size and int(arr.max()) > np.iinfo(np.int64).max:
            raise QresError(
                f"coder {coder!r}: uint64 residuals above 2**63-1 do not fit int64; "
                "view them as int64 (wrap-around residuals)"
            )
        arr = arr.astype(np.int64)
    return np.ascontiguousarray(arr)


def as_segments(segments: Any, n: int, coder: str) -> np.ndarray:
    """Segment lengths as an int64 array (empty for None), checked to add up to ``n``."""
    import numpy as np

    if segments is None:
        return np.zeros(0, dtype=np.int64)
    arr = np.ascontiguousarray(segments, dtype=np.int64)
    if arr.ndim != 1 or (arr.size and int(arr.min()) < 0) or int(arr.sum()) != n:
        raise QresError(
            f"coder {coder!r}: segments must be lengths >= 0 adding up to {n} samples; "
            "pass the predictor's segments for this block"
        )
    return arr


def check_count(n: Any, coder: str) -> int:
    """Validate the sample count a caller passes to ``decode`` (ints and numpy integers)."""
    try:
        count = None if isinstance(n, bool) else operator.index(n)
    except TypeError:
        count = None
    if count is None or not 0 <= count <= MAX_SAMPLES:
        raise IntegrityError(
            f"coder {coder!r}: sample count {n!r} is not an integer in [0, {MAX_SAMPLES}]; "
            "the block header is corrupt"
        )
    return count


def _crc(payload: bytes | memoryview, n: int) -> int:
    return zlib.crc32(payload, zlib.crc32(n.to_bytes(8, "little")))


def seal(payload: bytes, n: int) -> bytes:
    """Append the 4-byte integrity trailer (CRC-32 of ``n`` and the payload) to ``payload``."""
    return payload + _CHECK.pack(_crc(payload, n))


def unseal(data: bytes, n: int, coder: str) -> memoryview:
    """Check and strip the trailer added by :func:`seal`; the payload as a memoryview."""
    view = memoryview(data).cast("B")
    if len(view) < _CHECK.size:
        raise IntegrityError(
            f"coder {coder!r}: {len(view)} bytes is shorter than the 4-byte check; "
            "the block is truncated"
        )
    payload = view[: len(view) - _CHECK.size]
    (stored,) = _CHECK.unpack(view[len(view) - _CHECK.size :])
    if stored != _crc(payload, n):
        raise IntegrityError(
            f"coder {coder!r}: checksum mismatch over {len(payload)} bytes for {n} samples; "
            "the block is corrupt or truncated"
        )
    return payload
