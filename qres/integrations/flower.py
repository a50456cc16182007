"""qres aggregators in Flower: a Flower strategy whose training round aggregates with any qres
aggregator (and, for ``reputation-weighted`` and ``adaptive``, qres's reputations).

``QresStrategy`` is Flower's ``FedAvg`` (the Message API of ``flwr.serverapp``: sampling,
configuration and evaluation unchanged) with ``aggregate_train`` replaced:

1. Each valid reply's arrays are flattened into one float64 row and made an update against the
   round's global model (``row - global``).
2. Updates become Q16.16 integers on a common scale ``S = 2**k``: ``k`` is the smallest integer
   with ``2**k >=`` the median over clients of each client's largest ``|update|`` entry, and
   ``q = round(update * 65536 / S)``, saturating at the int32 limits. The median is chosen so
   that a few clients sending huge values cannot coarsen the honest clients' resolution; their
   values saturate instead (the rule sees them as extreme, which they are). Resolution is
   ``S / 65536`` of the honest scale.
3. The rows go to the qres rule in an order fixed by the clients' node ids, with ``f`` the
   number of Byzantine clients to tolerate and, for the reputation rules, each client's
   reputation (kept across rounds by node id, observed against the trimmed mean as in
   ``qres bench aggregators``). qres rules give the same bits for any order of the rows, so the
   result does not depend on the order in which Flower delivers replies.
4. The aggregate is mapped back (``q * S / 65536``), added to the global model and reshaped
   into the model's arrays, in their original dtypes.

Metrics are aggregated as ``FedAvg`` does, over the replies the rule was given.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, Message, MetricRecord
from flwr.serverapp.strategy import FedAvg

from qres.kernel import plugins
from qres.kernel.config import Location

#: Q16.16 one.
_ONE = 1 << 16
_REPUTATION_RULES = ("reputation-weighted", "adaptive")


class QresStrategy(FedAvg):
    """Flower ``FedAvg`` whose training aggregation is a qres aggregator (``rule``)."""

    def __init__(
        self,
        *,
        rule: str = "adaptive",
        f: int = 0,
        rule_settings: dict | None = None,
        **fedavg: Any,
    ):
        super().__init__(**fedavg)
        where = Location("<flower strategy>")
        self.rule = plugins.create("aggregator", {"use": rule, **(rule_settings or {})}, where)
        self.f = f
        self._reference = plugins.create("aggregator", {"use": "trimmed-mean"}, where)
        self._global: list[np.ndarray] | None = None
        self._reputation: dict[int, int] = {}
        #: Per round: the common scale S and the clients flagged by the reputation tracker.
        self.history: dict[int, dict[str, Any]] = {}

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: Any, grid: Any):
        """As FedAvg; remembers the global model the updates will be taken against."""
        self._global = arrays.to_numpy_ndarrays()
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """The qres rule's aggregate of the valid replies, and their FedAvg metrics."""
        valid = sorted(
            (m for m in replies if not m.has_error() and self.arrayrecord_key in m.content),
            key=lambda m: m.metadata.src_node_id,
        )
        if not valid or self._global is None:
            return None, None
        flat_global = np.concatenate([a.ravel() for a in self._global]).astype(np.float64)
        rows = np.stack([_flatten(m.content[self.arrayrecord_key]) for m in valid]) - flat_global
        scale = common_scale(rows)
        q = to_q16(rows, scale)
        nodes = [m.metadata.src_node_id for m in valid]
        agg = self._aggregate(q, nodes, server_round)
        new = flat_global + from_q16(agg, scale)
        self.history[server_round] = {"scale": scale, "clients": len(valid)}
        metrics = self.train_metrics_aggr_fn([m.content for m in valid], self.weighted_by_key)
        return _unflatten(new, self._global), metrics

    def _aggregate(self, q: np.ndarray, nodes: list[int], server_round: int) -> np.ndarray:
        f = min(self.f, max(0, (q.shape[0] - 1) // 2))
        rng = np.random.default_rng([server_round])
        if self.rule.name not in _REPUTATION_RULES:
            return self.rule.aggregate(q, f=f, rng=rng)
        from qres.robust.reputation import ReputationTracker

        tracker = ReputationTracker(len(nodes))
        tracker.reputations[:] = [self._reputation.get(n, _ONE) for n in nodes]
        flags = tracker.observe(q, self._reference.aggregate(q, f=f))
        self._reputation.update(zip(nodes, (int(r) for r in tracker.reputations), strict=True))
        self.history.setdefault(server_round, {})
        self.history[server_round]["flagged"] = [n for n, x in zip(nodes, flags, strict=True) if x]
        return self.rule.aggregate(q, f=f, weights=tracker.as_weights(), rng=rng)

    def reputation(self, node_id: int) -> float:
        """A client's reputation in [0, 1] (1.0 for clients not seen yet)."""
        return self._reputation.get(node_id, _ONE) / _ONE


def common_scale(rows: np.ndarray) -> float:
    """``S = 2**k``, the smallest power of two at or above the median of the rows' largest
    absolute entries (1.0 when every update is zero)."""
    peaks = np.sort(np.abs(rows).max(axis=1))
    middle = float(peaks[(len(peaks) - 1) // 2])
    if middle == 0.0 or not math.isfinite(middle):
        return 1.0
    return float(2.0 ** math.ceil(math.log2(middle)))


def to_q16(rows: np.ndarray, scale: float) -> np.ndarray:
    """Float updates as Q16.16 integers on ``scale``, saturating; NaN counts as 0."""
    q = np.rint(np.nan_to_num(rows / scale * _ONE, nan=0.0, posinf=2**31 - 1, neginf=-(2**31)))
    return np.clip(q, -(2**31), 2**31 - 1).astype(np.int32)


def from_q16(values: np.ndarray, scale: float) -> np.ndarray:
    """Q16.16 integers on ``scale`` back to float64."""
    return values.astype(np.float64) * (scale / _ONE)


def _flatten(record: ArrayRecord) -> np.ndarray:
    return np.concatenate([a.ravel() for a in record.to_numpy_ndarrays()]).astype(np.float64)


def _unflatten(flat: np.ndarray, like: list[np.ndarray]) -> ArrayRecord:
    out, pos = [], 0
    for a in like:
        out.append(flat[pos : pos + a.size].reshape(a.shape).astype(a.dtype))
        pos += a.size
    return ArrayRecord(out)
