"""The predictor kind: integer predictors that turn a block of samples into residuals and back.

A predictor sees one block at a time, shaped ``(channels, n)``; every call starts from the
predictor's initial state, so blocks are independent (they compress and decode in parallel and
at random). The adaptive part of that initial state is a vector of Q16.16 weights
(:meth:`Predictor.initial_weights`), which the container stores, or names by the hash of a
shared model, and which a swarm may learn.

Two modes:

* lossless (``max_error=0``): ``residual = x - prediction`` modulo 2**64, so any int64 block
  round-trips exactly;
* bounded error (``max_error=E > 0``): closed-loop quantisation. With ``m = 2E + 1`` the residual
  is ``q = round((x - p) / m)`` (``m`` is odd, so the quotient is never half-way and rounding to
  nearest is exact), the reconstruction is ``x' = p + q*m`` clamped to ``bounds``, and the
  predictor continues on ``x'``, which the decoder computes too. ``|x - x'| <= E`` always holds
  because ``bounds`` contains ``x`` and clamping only moves ``x'`` toward it.

``bounds=(lo, hi)`` is the range of valid samples (the dtype's range, say ``(-32768, 32767)``):
predictions are clamped into it in both modes, and bounded-error reconstructions never leave it,
so they can be stored back in the original dtype. It defaults to the int64 range; the decoder
must pass the same bounds as the encoder.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, ClassVar

from qres.fixed.q16 import Q_MAX, Q_MIN
from qres.kernel.config import InvalidSetting
from qres.kernel.errors import QresError
from qres.kernel.plugins import Plugin

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
#: Largest accepted ``max_error``: 2E+1 must fit in int64 with room to spare.
MAX_ERROR_LIMIT = 2**62


def int_list(lo: int, hi: int, min_len: int = 1, max_len: int = 16):
    """Validator: a list of ``min_len..max_len`` ints, each in ``[lo, hi]``."""
    allowed = f"a list of {min_len} to {max_len} integers in [{lo}, {hi}]"

    def check(_inst, attribute, value):
        if value is None:
            return
        ok = isinstance(value, (list, tuple)) and min_len <= len(value) <= max_len
        ok = ok and all(
            isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi for v in value
        )
        if not ok:
            raise InvalidSetting(attribute.name, value, allowed)

    return check


def _as_block(block: Any, what: str):
    """``block`` as a C-contiguous int64 array of shape (channels, n), and whether it was 1-D."""
    import numpy as np

    arr = np.asarray(block)
    if arr.dtype.kind not in "iu" or arr.dtype == np.uint64:
        raise QresError(
            f"{what}: samples of dtype {arr.dtype} are not supported; "
            "pass integers of at most 64 bits (uint64 excluded)"
        )
    if arr.ndim not in (1, 2):
        raise QresError(f"{what}: expected shape (channels, n), got {arr.shape}; reshape it")
    flat = arr.ndim == 1
    arr = np.ascontiguousarray(arr.reshape(1, -1) if flat else arr, dtype=np.int64)
    return arr, flat


def _check_mode(max_error: Any, bounds: Any, what: str) -> tuple[int, int, int]:
    if isinstance(max_error, bool) or not isinstance(max_error, int):
        try:
            import numpy as np

            if isinstance(max_error, np.integer):
                max_error = int(max_error)
        except ImportError:  # pragma: no cover - numpy is a dependency
            pass
    if isinstance(max_error, bool) or not isinstance(max_error, int):
        raise QresError(f"{what}: max_error={max_error!r} is not an integer; pass an int >= 0")
    if not 0 <= max_error <= MAX_ERROR_LIMIT:
        raise QresError(f"{what}: max_error={max_error} out of range; use 0 to 2**62")
    lo, hi = (INT64_MIN, INT64_MAX) if bounds is None else (int(bounds[0]), int(bounds[1]))
    if not INT64_MIN <= lo <= hi <= INT64_MAX:
        raise QresError(f"{what}: bounds {bounds!r} invalid; pass (lo, hi) with lo <= hi in int64")
    return max_error, lo, hi


def _encode_args(block: Any, max_error: Any, bounds: Any, what: str):
    """``(arr, flat, e, lo, hi)`` of an encode call, samples checked against the bounds."""
    arr, flat = _as_block(block, what)
    e, lo, hi = _check_mode(max_error, bounds, what)
    if arr.size and bounds is not None and (arr.min() < lo or arr.max() > hi):
        raise QresError(
            f"{what}: samples outside bounds ({lo}, {hi}); widen the bounds to the dtype range"
        )
    return arr, flat, e, lo, hi


class Predictor(Plugin):
    """Base of predictor plugins: block in, residuals out, and back, from a fixed initial state.

    Subclasses implement :meth:`_run` (one pass over a block in either direction) and
    :meth:`weight_count`; weights default to zeros unless :meth:`default_weights` says otherwise.
    """

    kind: ClassVar[str] = "predictor"
    #: True when each channel's residuals depend on that channel alone, so coding a subset of
    #: a block's channels gives the same residuals as coding them all. The codec then need not
    #: run the predictor again when some channels of a block choose another predictor.
    channels_independent: ClassVar[bool] = False

    def __init__(self, config: Any = None):
        super().__init__(config)
        self._weights = self.default_weights()

    # -- the interface the codec uses -------------------------------------------------------
    def encode(self, block: Any, max_error: int = 0, *, bounds: tuple[int, int] | None = None):
        """Residuals (int64, same shape as ``block``) of a block of integer samples."""
        what = f"predictor {self.name!r} encode"
        arr, flat, e, lo, hi = _encode_args(block, max_error, bounds, what)
        out = self._run(arr, False, e, lo, hi)
        return out.reshape(-1) if flat else out

    def decode(self, residuals: Any, max_error: int = 0, *, bounds: tuple[int, int] | None = None):
        """The block (int64) whose :meth:`encode` gave ``residuals``, with the same settings."""
        what = f"predictor {self.name!r} decode"
        arr, flat = _as_block(residuals, what)
        e, lo, hi = _check_mode(max_error, bounds, what)
        out = self._run(arr, True, e, lo, hi)
        return out.reshape(-1) if flat else out

    def segments(self, n: int) -> tuple[int, ...] | None:
        """Lengths of the runs of a channel's residuals (``n`` samples) that differ in
        statistics, in order, for a coder that models them apart; None: one run."""
        return None

    # -- weights ------------------------------------------------------------------------------
    def weight_count(self) -> int:
        """How many Q16.16 initial weights this predictor has with its settings."""
        return 0

    def default_weights(self):
        """The initial weights used until :meth:`set_initial_weights` replaces them."""
        import numpy as np

        return np.zeros(self.weight_count(), dtype=np.int32)

    def initial_weights(self):
        """A copy of the initial weights, int32 Q16.16 (1.0 == 65536)."""
        return self._weights.copy()

    def set_initial_weights(self, weights: Any) -> None:
        """Replace the initial weights (int32 Q16.16 values, as many as :meth:`weight_count`)."""
        import numpy as np

        arr = np.asarray(weights)
        what = f"predictor {self.name!r} set_initial_weights"
        if arr.ndim != 1 or arr.shape[0] != self.weight_count():
            raise QresError(
                f"{what}: got shape {arr.shape}, need ({self.weight_count()},); "
                "pass weights exported by the same settings"
            )
        if arr.size and (arr.dtype.kind not in "iu" or arr.min() < Q_MIN or arr.max() > Q_MAX):
            raise QresError(f"{what}: weights must be integers in int32 range (Q16.16)")
        self._weights = np.ascontiguousarray(arr, dtype=np.int32)

    # -- for subclasses -----------------------------------------------------------------------
    @abstractmethod
    def _run(self, block, decode: bool, max_error: int, lo: int, hi: int):
        """One pass: residuals from samples (``decode`` false) or samples from residuals."""
        raise NotImplementedError
