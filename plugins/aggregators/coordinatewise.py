"""Coordinate-wise aggregators: mean, median, trimmed mean and MeaMed.

Each works column by column, so any permutation of the rows gives the same multiset per
column and the same bits. Sums are exact in int64 and rounded once by the rule of
:func:`qres.robust.aggregate.div_round` (nearest, ties toward +infinity).
"""

from __future__ import annotations

from qres.kernel.errors import QresError
from qres.kernel.hookspecs import hookimpl
from qres.kinds.aggregator import Aggregator
from qres.robust.aggregate import (
    closest_to_median_mean,
    mean_rows,
    median_columns,
    trimmed_mean,
)


class Mean(Aggregator):
    """Plain (optionally sample-weighted) mean: the FedAvg rule, not robust to any Byzantine row.

    McMahan et al., "Communication-Efficient Learning of Deep Networks from Decentralized
    Data", AISTATS 2017. ``f`` is checked but not used.
    """

    name = "mean"
    takes_weights = True

    def _aggregate(self, x, f, weights, rng):
        return mean_rows(x, weights)


class Median(Aggregator):
    """Coordinate-wise median; for even n the mean of the two middle values, rounded.

    Yin, Chen, Ramchandran, Bartlett, "Byzantine-Robust Distributed Learning: Towards Optimal
    Statistical Rates", ICML 2018. Tolerates ``f < n / 2``.
    """

    name = "median"

    def check_f(self, n, f):
        """The median needs an honest majority: ``2 f < n``."""
        if 2 * f >= n:
            raise QresError(
                f"aggregator 'median': f={f} needs 2f < n, got n={n}; lower f or add nodes"
            )

    def _aggregate(self, x, f, weights, rng):
        return median_columns(x)


class TrimmedMean(Aggregator):
    """Coordinate-wise trimmed mean: drop the ``f`` largest and ``f`` smallest values, average.

    Yin, Chen, Ramchandran, Bartlett, "Byzantine-Robust Distributed Learning: Towards Optimal
    Statistical Rates", ICML 2018. Needs ``n > 2 f``.
    """

    name = "trimmed-mean"

    def check_f(self, n, f):
        """Trimming ``f`` from each end must leave at least one value: ``n > 2 f``."""
        if 2 * f >= n:
            raise QresError(
                f"aggregator 'trimmed-mean': f={f} needs n > 2f, got n={n}; lower f or add nodes"
            )

    def _aggregate(self, x, f, weights, rng):
        return trimmed_mean(x, f)


class MeaMed(Aggregator):
    """Mean around the median: per coordinate, average the ``n - f`` values closest to the
    median (distance ties broken toward the smaller value).

    Xie, Koyejo, Gupta, "Generalized Byzantine-tolerant SGD", arXiv:1802.10116, 2018.
    Needs ``2 f < n``.
    """

    name = "meamed"

    def check_f(self, n, f):
        """MeaMed centres on the median, which needs ``2 f < n``."""
        if 2 * f >= n:
            raise QresError(
                f"aggregator 'meamed': f={f} needs 2f < n, got n={n}; lower f or add nodes"
            )

    def _aggregate(self, x, f, weights, rng):
        return closest_to_median_mean(x, x.shape[0] - f)


@hookimpl
def register_aggregators(register):
    """Register the coordinate-wise rules."""
    for cls in (Mean, Median, TrimmedMean, MeaMed):
        register(cls)
