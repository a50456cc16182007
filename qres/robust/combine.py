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
