"""Pre-aggregation steps that wrap any aggregator: nearest-neighbour mixing (NNM), bucketing,
static clipping and adaptive robust clipping (ARC).

Each is an aggregator whose ``inner`` setting is the table of the rule it feeds, e.g.
``{ use = "nnm", inner = { use = "krum" } }``. The step transforms the rows (keeping the
result independent of their order: row-selecting steps work on canonically ordered rows,
bucketing shuffles the canonical order with a seeded generator) and hands them to the inner
rule with the same ``f``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import attrs

from qres.kernel.config import InvalidSetting, Location, integer, number
from qres.kernel.errors import QresError
from qres.kernel.hookspecs import hookimpl
from qres.kinds.aggregator import Aggregator
from qres.robust.aggregate import canonical_rows, distance_blocks, div_round, sq_dists_to, to_q

#: Scale of clipping factors (1.0 = 2**29): ``|x| * s <= 2**60`` fits int64 with rounding.
_S_BITS = 29
#: NNM sums up to n rows of |x| <= 2**31 in float64; exact while n * 2**31 <= 2**53.
_NNM_MAX_ROWS = 1 << 21


def _aggregator_table(_inst, attribute, value):
    if not isinstance(value, Mapping) or not isinstance(value.get("use"), str):
        raise InvalidSetting(attribute.name, value, 'a table with use = "<aggregator>"')


def _as_table(value):
    # A plain dict copy so the config owns it; anything else is left for the validator.
    return dict(value) if isinstance(value, Mapping) else value


def _inner_field():
    return attrs.field(
        factory=lambda: {"use": "mean"}, validator=_aggregator_table, converter=_as_table
    )


class _Wrapper(Aggregator):
    """An aggregator that transforms the rows, then runs the ``inner`` rule on them."""

    def __init__(self, config=None):
        from qres.kernel import plugins

        super().__init__(config)
        self.inner = plugins.create(
            "aggregator", self.config.inner, Location(f"<{self.name}>").child("inner")
        )

    def _aggregate(self, x, f, weights, rng):
        return self.inner.aggregate(self._transform(x, f, rng), f=f, rng=rng)

    def _transform(self, x, f, rng):
        raise NotImplementedError(f"aggregator {self.name!r} does not implement _transform")


@attrs.frozen
class WrapperConfig:
    """Settings of a pre-aggregation step without parameters of its own."""

    #: The aggregator fed with the transformed rows.
    inner: dict = _inner_field()


class Nnm(_Wrapper):
    """Nearest-neighbour mixing: replace each row by the mean of its ``n - f`` nearest rows
    (itself included), then aggregate.

    Allouah, Farhadkhani, Guerraoui, Gupta, Pinot, Stephan, "Fixing by Mixing: A Recipe for
    Optimal Byzantine ML under Heterogeneity", AISTATS 2023. Exact distances; neighbours at
    equal distance are taken in canonical row order; sums of selected rows go through a 0/1
    float64 matrix product, exact because they stay below 2**53.
    """

    name = "nnm"
    Config = WrapperConfig

    def check_f(self, n, f):
        """NNM's exact float sums allow up to 2**21 rows."""
        if n > _NNM_MAX_ROWS:
            raise QresError(
                f"aggregator 'nnm': n={n} exceeds {_NNM_MAX_ROWS} rows; aggregate in groups"
            )

    def _transform(self, x, f, rng):
        import numpy as np

        rows = canonical_rows(x)
        n = rows.shape[0]
        k = n - f
        rows_f = rows.astype(np.float64)
        out = np.empty(rows.shape, np.int32)
        for start, dist in distance_blocks(rows):
            if isinstance(dist, tuple):
                order = np.lexsort((dist[1], dist[0]), axis=1)  # stable: ties by index
                b = order.shape[0]
                mask = np.zeros((b, n), np.float64)
                np.put_along_axis(mask, order[:, :k], 1.0, axis=1)
            else:
                # Everything nearer than the k-th distance, then the first (in canonical
                # order) of the rows exactly at it: the k nearest with ties by index, in O(n).
                b = dist.shape[0]
                kth = np.partition(dist, k - 1, axis=1)[:, k - 1 : k]
                nearer = dist < kth
                at = dist == kth
                need = k - nearer.sum(axis=1, keepdims=True)
                mask = (nearer | (at & (np.cumsum(at, axis=1) <= need))).astype(np.float64)
            sums = (mask @ rows_f).astype(np.int64)
            out[start : start + b] = to_q(div_round(sums, k))
        return out


@attrs.frozen
class BucketingConfig:
    """Settings of bucketing."""

    #: Rows per bucket.
    bucket: int = attrs.field(default=2, validator=integer(1, 1 << 24))
    #: Seed of the shuffle when no generator is passed to ``aggregate``.
    seed: int = attrs.field(default=0, validator=integer(0, (1 << 63) - 1))
    #: The aggregator fed with the bucket means.
    inner: dict = _inner_field()


class Bucketing(_Wrapper):
    """Bucketing: shuffle the rows, average them in buckets of ``bucket``, aggregate the means.

    Karimireddy, He, Jaggi, "Byzantine-Robust Learning on Heterogeneous Datasets via
    Bucketing", ICLR 2022. The shuffle permutes the canonical row order with the generator
    passed in (or one seeded with ``seed``), so the result does not depend on arrival order.
    The last bucket may be smaller; the inner rule gets the same ``f``.
    """

    name = "bucketing"
    Config = BucketingConfig

    def check_f(self, n, f):
        """Each Byzantine row spoils at most one bucket: need ``f`` below the bucket count."""
        buckets = -(-n // self.config.bucket)
        if f >= buckets:
            raise QresError(
                f"aggregator 'bucketing': f={f} needs f < {buckets} buckets (n={n}, "
                f"bucket={self.config.bucket}); use smaller buckets"
            )

    def _transform(self, x, f, rng):
        import numpy as np

        rng = np.random.default_rng(self.config.seed) if rng is None else rng
        rows = canonical_rows(x)
        rows = rows[rng.permutation(rows.shape[0])]
        s = self.config.bucket
        means = [
            div_round(rows[i : i + s].sum(axis=0, dtype=np.int64), len(rows[i : i + s]))
            for i in range(0, rows.shape[0], s)
        ]
        return to_q(np.vstack(means))


def _clip(x, threshold: int):
    """Rows scaled so that their norm is at most ``threshold`` (Q16.16 units), rounded."""
    import numpy as np

    norms = [math.isqrt(q) for q in sq_dists_to(x, np.zeros(x.shape[1], np.int32))]
    one = 1 << _S_BITS
    s = np.array([one if r <= threshold else (threshold << _S_BITS) // r for r in norms])
    return to_q(div_round(x.astype(np.int64) * s[:, None], one))


@attrs.frozen
class ClippingConfig:
    """Settings of static clipping."""

    #: Largest row norm kept, in real units (Q16.16 1.0 = 65536).
    tau: float = attrs.field(default=1.0, validator=number(2.0**-16, 32767.0))
    #: The aggregator fed with the clipped rows.
    inner: dict = _inner_field()


class Clipping(_Wrapper):
    """Static clipping: scale every row with norm above ``tau`` down to norm ``tau``.

    The standard norm clipping of robust and private federated learning (e.g. Karimireddy,
    He, Jaggi, ICML 2021; Abadi et al., CCS 2016). Factor ``min(1, tau / ||x||)`` as an
    integer scaled by 2**29 over an exact integer norm.
    """

    name = "clipping"
    Config = ClippingConfig

    def _transform(self, x, f, rng):
        return _clip(x, math.floor(self.config.tau * 65536 + 0.5))


class Arc(_Wrapper):
    """Adaptive robust clipping (ARC): clip the ``floor(2 f (n - f) / n)`` largest rows to the
    norm of the next largest one.

    Allouah, Guerraoui, Gupta, Pinot, Rizk, "Boosting Robustness by Clipping Gradients in
    Distributed Learning", 2024 (arXiv:2405.14432). Norms are exact integers, so the
    threshold is the same for any row order.
    """

    name = "arc"
    Config = WrapperConfig

    def _transform(self, x, f, rng):
        import numpy as np

        n = x.shape[0]
        k = 2 * f * (n - f) // n
        if k == 0:
            return np.array(x)
        norms = sorted(
            (math.isqrt(q) for q in sq_dists_to(x, np.zeros(x.shape[1], np.int32))),
            reverse=True,
        )
        return _clip(x, norms[k])


@hookimpl
def register_aggregators(register):
    """Register the pre-aggregation steps."""
    for cls in (Nnm, Bucketing, Clipping, Arc):
        register(cls)
