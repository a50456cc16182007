"""Reputations kept from round to round."""

from __future__ import annotations

from fractions import Fraction
from typing import TYPE_CHECKING, Any

from qres.kernel.errors import QresError
from qres.kinds.aggregator import REP_ONE, check_updates
from qres.robust.aggregate import close_counts, sq_dists_to

if TYPE_CHECKING:
    import numpy as np


class ReputationTracker:
    """Per-node reputations (Q16.16 integers in [0, 65536]) kept from round to round, from how
    each node's update sits among the others; the input of ``reputation-weighted`` and
    ``adaptive``.

    Each round (:meth:`observe`) a node's update is *flagged* when it is

    * **far**: its squared distance to a robust reference aggregate (e.g. the trimmed mean)
      exceeds ``far**2`` times the median of those squared distances (the outlier rule of
      reputation defences, e.g. Rodríguez-Barroso et al., FGCS 2022); or
    * **one of a coordinated group**: at least ``group`` updates (itself included) lie within
      ``2**-near_bits`` of its own distance to the reference. Nodes training on their own
      data do not send the same vector in numbers; a cartel that copies one forged vector
      does (the similarity signal of FoolsGold, Fung, Yoon, Beschastnikh, RAID 2020). Rows
      equal to the reference are not tested (nothing to tell apart).

    Flagged nodes lose ``penalty``, the others gain ``reward``, clamped to [0, 1]. Every
    comparison is exact integer arithmetic on exact squared distances, so reputations are the
    same on every machine and for any order of the nodes. Nodes absent from a round
    (``active`` False) keep their value. A cartel that adds independent noise large enough to
    look like separate nodes is not caught by the group test; the robust rule it feeds
    (``adaptive``'s trimmed mean) is then the defence.
    """

    def __init__(
        self,
        n: int,
        *,
        reward: float = 0.05,
        penalty: float = 0.25,
        far: float = 32.0,
        group: int = 5,
        near_bits: int = 10,
        start: float = 1.0,
    ):
        import numpy as np

        if n < 1:
            raise QresError(f"ReputationTracker: n={n}; track at least one node")
        for name, value in (("reward", reward), ("penalty", penalty), ("start", start)):
            if not 0.0 <= value <= 1.0:
                raise QresError(f"ReputationTracker: {name}={value} must lie in [0, 1]")
        if not far > 0 or group < 2 or not 0 <= near_bits <= 30:
            raise QresError(
                f"ReputationTracker: need far > 0, group >= 2, near_bits in [0, 30]; got "
                f"{far}, {group}, {near_bits}"
            )
        self.reward = int(reward * REP_ONE + 0.5)
        self.penalty = int(penalty * REP_ONE + 0.5)
        self.group = group
        self.near_bits = near_bits
        self._far2 = Fraction(far) ** 2
        self.reputations = np.full(n, int(start * REP_ONE + 0.5), np.int64)

    def observe(self, updates: Any, reference: Any, active: Any = None) -> np.ndarray:
        """Update the reputations from one round: ``updates`` ``(m, d)`` int32 rows of the
        active nodes (in node order), ``reference`` the ``(d,)`` int32 robust aggregate.
        Returns the flags of the active nodes (bool ``(m,)``)."""
        import numpy as np

        x = check_updates(updates, "reputation tracker")
        n = self.reputations.shape[0]
        act = np.ones(n, bool) if active is None else np.asarray(active, bool).reshape(-1)
        if act.shape[0] != n or int(act.sum()) != x.shape[0]:
            raise QresError(
                f"ReputationTracker: {x.shape[0]} updates for {int(act.sum())} active of {n} "
                "nodes; pass one row per active node"
            )
        ref = np.asarray(reference)
        if ref.shape != (x.shape[1],) or ref.dtype != np.int32:
            raise QresError(
                f"ReputationTracker: reference must be ({x.shape[1]},) int32, got "
                f"{ref.shape} {ref.dtype}"
            )
        flags = self.flags(x, ref)
        delta = np.where(flags, -self.penalty, self.reward)
        idx = np.flatnonzero(act)
        self.reputations[idx] = np.clip(self.reputations[idx] + delta, 0, REP_ONE)
        return flags

    def flags(self, x: Any, reference: Any) -> Any:
        """Which rows are far from ``reference`` or members of a coordinated group (bool)."""
        import numpy as np

        m = x.shape[0]
        dref = sq_dists_to(x, reference)
        grouped = [False] * m
        if m >= self.group:
            # within 2**-near_bits of the row's own distance: squared, shift by 2 * near_bits
            counts = close_counts(x, [d >> (2 * self.near_bits) for d in dref])
            grouped = [d > 0 and c + 1 >= self.group for d, c in zip(dref, counts, strict=True)]
        # The scale of "far" comes from the rows not already in a group, so that a cartel
        # parked next to the reference cannot shrink it and push honest rows past the limit.
        scale = sorted(d for d, g in zip(dref, grouped, strict=True) if not g) or sorted(dref)
        med = max(scale[(len(scale) - 1) // 2], 1)
        num, den = self._far2.numerator, self._far2.denominator
        return np.array(
            [g or d * den > num * med for d, g in zip(dref, grouped, strict=True)], bool
        )

    def as_weights(self) -> np.ndarray:
        """The reputations as the ``weights`` argument of the reputation rules (int64)."""
        return self.reputations.copy()
