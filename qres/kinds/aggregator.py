"""The aggregator kind: Byzantine-robust rules that combine n Q16.16 model updates into one.

An aggregator takes an ``(n, d)`` int32 array of Q16.16 updates (one row per node) and the
number ``f`` of Byzantine rows it must tolerate, and returns a ``(d,)`` int32 Q16.16 vector.
This module holds the kind's contract: the :class:`Aggregator` base class and the checks of
its arguments. The exact arithmetic the rules share lives in :mod:`qres.robust.aggregate`,
reputations in :mod:`qres.robust.reputation`.

Determinism (docs/aggregators.md has the details):

* All arithmetic on the updates is integer: sums in int64 (or Python ints when they could
  overflow) and exact division rounded by the one rule of :mod:`qres.fixed`, round to nearest
  with ties toward +infinity: ``floor(num / den + 1/2)``
  (:func:`qres.robust.aggregate.div_round`).
* The result is bit-identical under any permutation of the rows: coordinate-wise rules are
  symmetric by construction, and rules that select rows (Krum, multi-Krum, Bulyan) first put
  the rows in canonical order (by their bytes, :func:`qres.robust.aggregate.canonical_rows`)
  so that ties between equal scores are broken by the row's content, never by its input
  position.
* Pairwise squared distances are exact (:func:`qres.robust.aggregate.distance_blocks`):
  float64 Gram matrices are used only where every partial sum is an integer below 2**53, so
  BLAS summation order cannot change a bit.
* The input is never modified: rules receive a read-only view.

This module imports numpy lazily (inside functions) so that loading plugins stays light.
"""

from __future__ import annotations

import operator
from abc import abstractmethod
from typing import TYPE_CHECKING, Any

from qres.kernel.errors import QresError
from qres.kernel.plugins import Plugin

if TYPE_CHECKING:
    import numpy as np

#: Largest update dimension accepted: keeps every exact int64 partial sum below 2**63.
MAX_DIM = 1 << 24
#: Largest row count accepted (scores are summed in int64 halves of 31 bits).
MAX_ROWS = 1 << 24
#: Per-update weights are integers (sample counts) whose total is at most this, so that
#: sum(w * x) fits int64 with room for the rounding term.
MAX_WEIGHT_TOTAL = 1 << 30


class Aggregator(Plugin):
    """Base class of aggregation rules (plugin kind ``aggregator``).

    Subclasses set ``name``, ``Config``, ``takes_weights`` (whether per-update weights are
    meaningful for the rule) and implement :meth:`_aggregate`, and may override
    :meth:`check_f` with the rule's own bound on ``f`` and :meth:`prepare_weights` when their
    weights mean something other than sample counts (e.g. reputations).
    """

    #: Whether the rule accepts per-update weights (sample counts).
    takes_weights: bool = False

    def aggregate(self, updates: Any, *, f: int, weights: Any = None, rng: Any = None):
        """Combine ``(n, d)`` int32 Q16.16 ``updates`` into a ``(d,)`` int32 Q16.16 vector.

        ``f`` is the number of Byzantine rows to tolerate, ``weights`` optional non-negative
        integer weights per row (only for rules with ``takes_weights``), ``rng`` a seeded
        ``numpy.random.Generator`` for rules that need randomness. Raises :class:`QresError`
        on malformed input; never modifies ``updates``.
        """
        x = check_updates(updates, self.name)
        n = x.shape[0]
        f = check_f_basic(f, n, self.name)
        self.check_f(n, f)
        w = None
        if weights is not None:
            if not self.takes_weights:
                raise QresError(
                    f"aggregator {self.name!r}: this rule does not take per-update weights; "
                    "pass weights=None or use a rule that takes them"
                )
            w = self.prepare_weights(weights, n)
        return self._aggregate(x, f, w, rng)

    def prepare_weights(self, weights: Any, n: int) -> Any:
        """Validate the per-row weights; by default sample counts (:func:`check_weights`)."""
        return check_weights(weights, n, self.name)

    def check_f(self, n: int, f: int) -> None:
        """Raise :class:`QresError` if the rule cannot tolerate ``f`` of ``n`` rows."""

    @abstractmethod
    def _aggregate(self, x: np.ndarray, f: int, weights: Any, rng: Any) -> np.ndarray:
        raise NotImplementedError(f"aggregator {self.name!r} does not implement _aggregate")


def check_updates(updates: Any, rule: str) -> np.ndarray:
    """``updates`` as a read-only view of a 2-D int32 array, or a :class:`QresError`."""
    import numpy as np

    if not isinstance(updates, np.ndarray):
        raise QresError(
            f"aggregator {rule!r}: updates must be a numpy array, got {type(updates).__name__}; "
            "pass an (n, d) int32 Q16.16 array"
        )
    if updates.ndim != 2:
        raise QresError(
            f"aggregator {rule!r}: updates must be 2-D (n, d), got shape {updates.shape}; "
            "stack one row per node"
        )
    if updates.dtype != np.int32:
        raise QresError(
            f"aggregator {rule!r}: updates must be int32 Q16.16, got dtype {updates.dtype}; "
            "convert with qres.fixed.to_fixed"
        )
    n, d = updates.shape
    if n < 1 or d < 1:
        raise QresError(
            f"aggregator {rule!r}: updates must have n >= 1 rows and d >= 1 columns, "
            f"got shape {updates.shape}; pass at least one non-empty update"
        )
    if n > MAX_ROWS or d > MAX_DIM:
        raise QresError(
            f"aggregator {rule!r}: shape {updates.shape} exceeds the limits "
            f"n <= {MAX_ROWS}, d <= {MAX_DIM}; split the update into chunks"
        )
    view = updates.view()
    view.flags.writeable = False  # a rule that tried to write would fail loudly
    return view


def check_f_basic(f: Any, n: int, rule: str) -> int:
    """``f`` as an int in [0, n - 1], or a :class:`QresError`."""
    try:
        if isinstance(f, bool):
            raise TypeError
        value = operator.index(f)
    except TypeError:
        raise QresError(
            f"aggregator {rule!r}: f must be an integer, got {f!r}; pass the Byzantine count"
        ) from None
    if not 0 <= value < n:
        raise QresError(
            f"aggregator {rule!r}: f={value} is out of range for n={n}; need 0 <= f < n"
        )
    return value


def check_weights(weights: Any, n: int, rule: str) -> np.ndarray:
    """Per-row weights as int64 (non-negative integers, positive total), or a QresError."""
    import numpy as np

    w = np.asarray(weights)
    if w.shape != (n,) or (w.size and w.dtype.kind not in "iu"):
        raise QresError(
            f"aggregator {rule!r}: weights must be {n} integers (one per row), got "
            f"shape {w.shape} dtype {w.dtype}; pass sample counts"
        )
    w64 = w.astype(np.int64)
    if (w64 < 0).any() or (w.dtype.kind == "u" and (w > MAX_WEIGHT_TOTAL).any()):
        raise QresError(f"aggregator {rule!r}: weights must be >= 0; fix the sample counts")
    total = int(w64.sum(dtype=np.int64)) if not (w64 > MAX_WEIGHT_TOTAL).any() else None
    if total is None or total > MAX_WEIGHT_TOTAL or total == 0:
        raise QresError(
            f"aggregator {rule!r}: weights must sum to between 1 and {MAX_WEIGHT_TOTAL}; "
            "scale the sample counts down"
        )
    return w64


#: Reputations are Q16.16 values in [0, 1]: integers in [0, REP_ONE].
REP_ONE = 1 << 16


def check_reputations(reputations: Any, n: int, rule: str) -> list[int]:
    """Per-row reputations as Python ints in [0, 65536] (Q16.16 in [0, 1]), or a QresError."""
    import numpy as np

    r = np.asarray(reputations)
    if r.shape != (n,) or (r.size and r.dtype.kind not in "iu"):
        raise QresError(
            f"aggregator {rule!r}: reputations must be {n} integers (one per row), got "
            f"shape {r.shape} dtype {r.dtype}; pass Q16.16 values in [0, 65536]"
        )
    values = [int(v) for v in r]
    if any(v < 0 or v > REP_ONE for v in values):
        raise QresError(
            f"aggregator {rule!r}: reputations must lie in [0, {REP_ONE}] (Q16.16 0.0 to 1.0); "
            "clamp them"
        )
    return values
