"""Iterative rules: geometric median (Weiszfeld) and centered clipping, in integer arithmetic.

Both iterate from an order-independent start (coordinate-wise mean or median), use exact
squared distances (:func:`qres.robust.aggregate.sq_dists_to`) and integer square roots, and add
rows up with exact integer sums, so the result is bit-identical for any row order.
"""

from __future__ import annotations

import math

import attrs

from qres.kernel.config import integer, number
from qres.kernel.hookspecs import hookimpl
from qres.kinds.aggregator import Aggregator
from qres.robust.aggregate import div_round, mean_rows, median_columns, sq_dists_to, to_q

#: Fixed-point scale of the per-row weights: they are normalised to sum to at most 2**30,
#: so ``sum(w_i * x_i)`` stays below 2**61 in int64.
_W_BITS = 30
#: Scale of the clipping factors (at most 1.0 = 2**29): ``|diff| * s <= 2**61``.
_S_BITS = 29


@attrs.frozen
class GeometricMedianConfig:
    """Settings of the geometric median (Weiszfeld iterations)."""

    #: Fixed number of Weiszfeld iterations at most.
    iterations: int = attrs.field(default=8, validator=integer(1, 1000))
    #: Stop early once no coordinate moves by more than this many Q16.16 units.
    tolerance: int = attrs.field(default=1, validator=integer(0, 1 << 31))
    #: Smallest distance used in a weight (real units), so a row equal to the estimate does
    #: not get an infinite weight (the smoothing of Pillutla et al.).
    eps: float = attrs.field(default=1e-4, validator=number(0.0, 1e6))


class GeometricMedian(Aggregator):
    """Geometric median by smoothed Weiszfeld iterations (RFA), in fixed point.

    Pillutla, Kakade, Harchaoui, "Robust Aggregation for Federated Learning", IEEE TSP 2022;
    Weiszfeld, "Sur le point pour lequel la somme des distances de n points donnés est
    minimum", 1937. Starts at the (weighted) mean; each step weights row ``i`` by
    ``w_i / max(||x_i - z||, eps)``, normalised to integers summing to at most 2**30, and
    takes the rounded weighted mean. Accepts per-update weights.
    """

    name = "geometric-median"
    Config = GeometricMedianConfig
    takes_weights = True

    def _aggregate(self, x, f, weights, rng):
        import numpy as np

        cfg = self.config
        n = x.shape[0]
        base = [1] * n if weights is None else [int(w) for w in weights]
        nu = max(1, math.floor(cfg.eps * 65536 + 0.5))
        x64 = x.astype(np.int64)
        z = mean_rows(x, weights)
        for _ in range(cfg.iterations):
            dist = [math.isqrt(q) for q in sq_dists_to(x, z)]
            inv = [(b << 62) // max(r, nu) for b, r in zip(base, dist, strict=True)]
            total = sum(inv)
            q = np.array([(v << _W_BITS) // total for v in inv], dtype=np.int64)
            new = to_q(div_round(q @ x64, int(q.sum())))
            moved = int(np.abs(new.astype(np.int64) - z).max())
            z = new
            if moved <= cfg.tolerance:
                break
        return z


@attrs.frozen
class CenteredClippingConfig:
    """Settings of centered clipping."""

    #: Clipping radius in real units (Q16.16 1.0 = 65536).
    tau: float = attrs.field(default=1.0, validator=number(2.0**-16, 32767.0))
    #: Number of clipping iterations.
    iterations: int = attrs.field(default=3, validator=integer(1, 100))


class CenteredClipping(Aggregator):
    """Centered clipping: repeatedly move the estimate by the mean of the differences to each
    update, each clipped to norm ``tau``.

    Karimireddy, He, Jaggi, "Learning from History for Byzantine Robust Optimization", ICML
    2021. With no momentum state, the start is the coordinate-wise median. The clip factor
    ``min(1, tau / ||x_i - v||)`` is an integer scaled by 2**29, the norm an integer square
    root, each clipped difference rounded by the rule.
    """

    name = "centered-clipping"
    Config = CenteredClippingConfig

    def _aggregate(self, x, f, weights, rng):
        import numpy as np

        cfg = self.config
        n = x.shape[0]
        tau = math.floor(cfg.tau * 65536 + 0.5)
        one = 1 << _S_BITS
        v = median_columns(x)
        for _ in range(cfg.iterations):
            norms = [math.isqrt(q) for q in sq_dists_to(x, v)]
            s = np.array([one if r <= tau else (tau << _S_BITS) // r for r in norms], np.int64)
            v64 = v.astype(np.int64)
            total = np.zeros(x.shape[1], np.int64)
            for b in range(0, n, 1024):
                diff = x[b : b + 1024].astype(np.int64) - v64
                total += div_round(diff * s[b : b + 1024, None], one).sum(axis=0)
            v = to_q(v64 + div_round(total, n))
        return v


@hookimpl
def register_aggregators(register):
    """Register the geometric median and centered clipping."""
    for cls in (GeometricMedian, CenteredClipping):
        register(cls)
