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


def robust_aggregate_many(
    agg: Any, xs: list[Any], assumed_byzantine: float, weights: list[Any]
) -> list[Any]:
    """:func:`robust_aggregate` of each row set ``xs[k]`` with ``weights[k]``: the same
    arrays, faster for rules with a batch path (``agg.aggregate_batch(stack, f, weights)``,
    e.g. ``adaptive``): the row sets of one shape, all weighted or all not, go through it
    together with the ``f`` the one-by-one rule would settle on."""
    import numpy as np

    from qres.kinds.aggregator import check_f_basic

    batch = getattr(agg, "aggregate_batch", None)
    if batch is None:
        pairs = zip(xs, weights, strict=True)
        return [robust_aggregate(agg, x, assumed_byzantine, w) for x, w in pairs]
    out: list[Any] = [None] * len(xs)
    groups: dict[tuple, list[int]] = {}
    for k, (x, w) in enumerate(zip(xs, weights, strict=True)):
        groups.setdefault((x.shape, x.dtype.str, w is None), []).append(k)
    for (shape, _, unweighted), members in groups.items():
        m = shape[0]
        f = min(int(assumed_byzantine * m), (m - 1) // 2)
        while f > 0:  # the f robust_aggregate ends at when only the rule's bound refuses
            try:
                agg.check_f(m, check_f_basic(f, m, agg.name))
                break
            except QresError:
                f -= 1
        stack = np.stack([xs[k] for k in members])
        w = None if unweighted else np.stack([weights[k] for k in members])
        try:
            got = batch(stack, f, w)
        except QresError:  # anything else refused: one by one, as robust_aggregate does
            got = [robust_aggregate(agg, xs[k], assumed_byzantine, weights[k]) for k in members]
        for k, row in zip(members, got, strict=True):
            out[k] = row
    return out


def takes_reputation(agg: Any) -> bool:
    """True when ``agg`` reads its weights argument as reputations (Q16.16 in [0, 1]): a rule
    that takes weights and prepares them its own way. The simulator and the real node then
    pass each row's sender reputation."""
    from qres.kinds.aggregator import Aggregator

    cls = type(agg)
    return bool(cls.takes_weights) and cls.prepare_weights is not Aggregator.prepare_weights
