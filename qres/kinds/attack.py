"""The attack kind: forgers of Byzantine model updates, for testing aggregators.

An attack takes the honest ``(h, d)`` int32 Q16.16 updates, the number ``f`` of Byzantine rows
to forge and a seeded ``numpy.random.Generator``, and returns ``(f, d)`` int32 Q16.16 rows
(saturated into the Q16.16 range). Attacks see every honest update (the omniscient threat
model of the papers they come from). All randomness comes from the generator passed in, so a
seed reproduces a run; statistics of the honest rows are computed in float64.
"""

from __future__ import annotations

import operator
from abc import abstractmethod
from typing import TYPE_CHECKING, Any

from qres.fixed.q16 import round_units
from qres.kernel.errors import QresError
from qres.kernel.plugins import Plugin

if TYPE_CHECKING:
    import numpy as np


class Attack(Plugin):
    """Base class of attacks (plugin kind ``attack``): subclasses implement :meth:`_forge`."""

    def forge(self, honest: Any, f: int, *, rng: Any) -> np.ndarray:
        """Forge ``f`` Byzantine rows (``(f, d)`` int32 Q16.16) from the honest updates.

        ``honest`` is an ``(h, d)`` int32 array with ``h, d >= 1``; ``rng`` a
        ``numpy.random.Generator``. Raises :class:`QresError` on malformed input; never
        modifies ``honest``.
        """
        import numpy as np

        if not isinstance(honest, np.ndarray) or honest.ndim != 2 or honest.dtype != np.int32:
            raise QresError(
                f"attack {self.name!r}: honest updates must be a 2-D int32 Q16.16 array, got "
                f"{getattr(honest, 'shape', type(honest).__name__)}; stack one row per node"
            )
        if honest.shape[0] < 1 or honest.shape[1] < 1:
            raise QresError(
                f"attack {self.name!r}: need at least one honest row and column, got shape "
                f"{honest.shape}; pass the honest updates"
            )
        try:
            if isinstance(f, bool):
                raise TypeError
            f = operator.index(f)
        except TypeError:
            raise QresError(
                f"attack {self.name!r}: f must be an integer, got {f!r}; pass the Byzantine count"
            ) from None
        if f < 0:
            raise QresError(f"attack {self.name!r}: f={f} is negative; pass f >= 0")
        if not isinstance(rng, np.random.Generator):
            raise QresError(
                f"attack {self.name!r}: rng must be a numpy.random.Generator, got "
                f"{type(rng).__name__}; pass numpy.random.default_rng(seed)"
            )
        view = honest.view()
        view.flags.writeable = False
        if f == 0:
            return np.zeros((0, honest.shape[1]), np.int32)
        out = self._forge(view, f, rng)
        return np.ascontiguousarray(out, dtype=np.int32)

    @abstractmethod
    def _forge(self, honest: np.ndarray, f: int, rng: Any) -> np.ndarray:
        raise NotImplementedError(f"attack {self.name!r} does not implement _forge")


def from_real(values: Any) -> np.ndarray:
    """Float64 Q16.16 *units* (not real values) rounded by the rule and saturated to int32."""
    return round_units(values)


def honest_stats(honest: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Coordinate-wise mean and (population) standard deviation, in Q16.16 units, float64."""
    import numpy as np

    h = honest.astype(np.float64)
    return h.mean(axis=0), h.std(axis=0)
