"""The one rule for applying an aggregator to a node's inbox, shared by the simulator and the
real node: tolerate ``f = assumed_byzantine x m`` rows, lowered until the rule accepts it."""

from __future__ import annotations

from typing import Any

from qres.kernel.errors import QresError


def robust_aggregate(agg: Any, x: Any, assumed_byzantine: float, weights: Any = None) -> Any:
    """Aggregate the ``(m, d)`` rows ``x`` (row 0: the node's own update) with ``agg``.

    ``f`` starts at ``min(int(assumed_byzantine * m), (m - 1) // 2)`` and is lowered while the
    rule refuses it; a rule that refuses even ``f = 0`` leaves the node's own update.
    """
    m = x.shape[0]
    f = min(int(assumed_byzantine * m), (m - 1) // 2)
    while True:
        try:
            return agg.aggregate(x, f=f, weights=weights)
        except QresError:
            if f == 0:
                return x[0]
            f -= 1


def takes_reputation(agg: Any) -> bool:
    """True when ``agg`` reads its weights argument as reputations (Q16.16 in [0, 1]): a rule
    that takes weights and prepares them its own way. The simulator and the real node then
    pass each row's sender reputation."""
    from qres.kinds.aggregator import Aggregator

    cls = type(agg)
    return bool(cls.takes_weights) and cls.prepare_weights is not Aggregator.prepare_weights
