"""Reputation-driven rules: the reputation-weighted mean and the adaptive aggregator.

Reputations come in as the ``weights`` argument: one Q16.16 value in [0, 1] per row (an
integer in [0, 65536]), kept by the caller (the swarm) from round to round. They travel with
their rows, so the result does not depend on row order.
"""

from __future__ import annotations

import functools
import math
from fractions import Fraction
from typing import Any

import attrs

from qres.kernel.config import InvalidSetting, boolean, number
from qres.kernel.errors import QresError
from qres.kernel.hookspecs import hookimpl
from qres.kinds.aggregator import Aggregator, check_reputations
from qres.robust.aggregate import div_round, to_q

#: Final weights are integers summing to at most 2**30 (so sum(w x) < 2**61 in int64).
_W_BITS = 30
_ONE = 1 << _W_BITS
_HALF = 1 << (_W_BITS - 1)
#: Row sets aggregated per numpy pass in :meth:`Adaptive.aggregate_batch` (memory bound:
#: a few ``(chunk, m, d)`` int64 arrays).
_BATCH_CHUNK = 2048


def exponent_for(n: int) -> Fraction:
    """The reputation exponent k for n nodes: 2 below 20, 3 up to 50, 3.5 above."""
    if n < 20:
        return Fraction(2)
    if n <= 50:
        return Fraction(3)
    return Fraction(7, 2)


def powered(rep: int, k: Fraction) -> int:
    """``floor((rep / 65536) ** k * 2**30)``-ish, exactly: ``isqrt(rep**(2k) * 2**60 / 2**(32k))``.

    ``2k`` is an integer for every k the rule uses, so one integer square root suffices.
    """
    e = int(2 * k)
    return math.isqrt((rep**e << 60) >> (16 * e))


@functools.lru_cache(maxsize=1 << 16)
def _powered_cached(rep: int, e: int) -> int:
    return powered(rep, Fraction(e, 2))


def powers(reps: Any, e: int) -> Any:
    """:func:`powered` of every reputation in the int64 array ``reps`` for ``k = e / 2``,
    as int64 (values at most 2**30): each distinct reputation computed once per process."""
    import numpy as np

    values, inverse = np.unique(reps, return_inverse=True)
    table = np.array([_powered_cached(int(r), e) for r in values.tolist()], np.int64)
    return table[inverse.reshape(reps.shape)]


def cap_top(cap: float) -> int:
    """``floor(cap * 2**30)`` exactly: the largest share :func:`capped_shares` gives."""
    p, q = float(cap).as_integer_ratio()
    return (p << _W_BITS) // q


def capped_shares(raw: list[int], cap: Fraction) -> list[int]:
    """Integer shares of 2**30 proportional to ``raw``, none above ``cap``: bounded influence.

    A node's share is ``min(raw / sum(raw), cap)``, floored to an integer of 2**30. What the
    cap takes from a heavy node goes to no other node (the caller leaves it on a robust
    anchor): redistributing it would raise the share of lightly trusted nodes above their
    proportional one, so with few trusted nodes the near-distrusted would fill the gap.
    """
    total = sum(w for w in raw if w > 0)
    scale = 1 << _W_BITS
    top = (cap.numerator << _W_BITS) // cap.denominator  # floor(cap * 2**30)
    return [min(w * scale // total, top) if w > 0 else 0 for w in raw]


def anchored(x, shares: list[int], anchor):
    """``anchor + sum(share * (row - anchor)) / 2**30``, exactly: the weighted mean of the rows
    with the share the cap left unassigned on ``anchor`` (int32 rows in, int32 out)."""
    import numpy as np

    w = np.array(shares, dtype=np.int64)
    a = anchor.astype(np.int64)
    # |w| sums to <= 2**30 and |row - anchor| < 2**32: every partial sum stays below 2**62
    num = w @ (x.astype(np.int64) - a)
    return to_q(a + ((num + (1 << (_W_BITS - 1))) >> _W_BITS))


def weighted_median_columns(x, raw: list[int]):
    """Coordinate-wise weighted median (the lower one: the smallest value whose cumulative
    weight reaches half the total) of int32 rows with non-negative integer weights."""
    import numpy as np

    w = np.array([min(v, 1 << 40) for v in raw], dtype=np.int64)  # n * 2**40 fits int64
    order = np.argsort(x, axis=0, kind="stable")
    cum = np.cumsum(w[order], axis=0)
    at = np.argmax(2 * cum >= cum[-1], axis=0)
    rows = np.take_along_axis(order, at[None, :], axis=0)[0]
    return x[rows, np.arange(x.shape[1])]


def one_voice(x, raw: list[int]) -> list[int]:
    """Identical rows are one voice: each of ``k`` bit-identical rows keeps ``raw // k``.
    Copies carry no more information than their original (honest duplicates, such as nodes
    on the same flat signal, lose nothing), and a cartel sending one forged vector weighs
    as one node whatever its numbers."""
    counts = voices(x[None])[0].tolist()
    return [w // k for w, k in zip(raw, counts, strict=True)]


#: Odd 64-bit multipliers of the row hash of :func:`voices` (any fixed values do: every
#: hash match is checked row against row).
_MIX_SEED = 0x0E1CE5


@functools.lru_cache(maxsize=4)
def _mix(d: int) -> Any:
    import numpy as np

    rng = np.random.default_rng(_MIX_SEED)
    return rng.integers(0, 1 << 63, d, dtype=np.uint64) * np.uint64(2) + np.uint64(1)


def voices(x) -> Any:
    """For row sets ``x`` ``(g, m, d)`` int32: how many rows of its own set each row is
    bit-identical to, itself included (``(g, m)`` int64), the counts ``numpy.unique(axis=0)``
    gives per set. Rows are hashed (a 64-bit multiply-add of their words), sorted by hash
    within their set, and every row is compared in full with the first row of its run of
    equal hashes; a set where any comparison fails (a hash collision) is counted by
    ``numpy.unique`` instead, so the counts are exact."""
    import numpy as np

    x = np.ascontiguousarray(x)
    g, m, d = x.shape
    h = x.view(np.uint32).astype(np.uint64) @ _mix(d)  # wraps modulo 2**64, as meant
    order = np.argsort(h, axis=1, kind="stable")
    hs = np.take_along_axis(h, order, axis=1)
    start = np.ones((g, m), bool)
    start[:, 1:] = hs[:, 1:] != hs[:, :-1]
    lead = np.maximum.accumulate(np.where(start, np.arange(m), 0), axis=1)
    rows = np.take_along_axis(x, order[:, :, None], axis=1)
    leader = np.take_along_axis(rows, lead[:, :, None], axis=1)
    exact = (rows == leader).all(axis=2).all(axis=1)
    run = np.cumsum(start.ravel()) - 1  # every set starts a run: ids are global
    sizes = np.bincount(run)[run].reshape(g, m)
    counts = np.empty((g, m), np.int64)
    np.put_along_axis(counts, order, sizes, axis=1)
    for k in np.flatnonzero(~exact).tolist():
        _, inverse, c = np.unique(x[k], axis=0, return_inverse=True, return_counts=True)
        counts[k] = c[inverse.reshape(-1)]
    return counts


def proportional(raw: list[int], cap: Fraction) -> bool:
    """Whether no node's proportional share exceeds ``cap`` (the plain weighted mean holds)."""
    total = sum(w for w in raw if w > 0)
    return all(w * cap.denominator <= cap.numerator * total for w in raw)


@attrs.frozen
class ReputationConfig:
    """Settings of the reputation-weighted mean."""

    #: Largest share of the result one node may have (after the ``rep ** k`` weighting).
    cap: float = attrs.field(default=0.1, validator=number(2.0**-20, 1.0))


class ReputationWeighted(Aggregator):
    """Reputation-weighted mean: weights ``rep ** k`` (k = 2 below 20 nodes, 3 up to 50, 3.5
    above), each node's share capped at ``cap``; a share the cap takes away stays on the
    coordinate-wise median of the rows, never goes to another node.

    Reputation weighting after Rodríguez-Barroso et al., "Dynamic defense against Byzantine
    poisoning attacks in federated learning", FGCS 2022, and Xu, Lyu, "A Reputation Mechanism
    Is All You Need: Collaborative Fairness and Adversarial Robustness in Federated Learning",
    2021. ``weights`` are the reputations (Q16.16 in [0, 1]); without them every node has
    reputation 1 and, with at least ``1 / cap`` nodes and no identical rows, this is the
    plain mean. ``k`` identical rows share one row's weight (:func:`one_voice`). ``f`` is not
    used: the reputations carry it. Not robust by itself (a trusted attacker is averaged in):
    ``adaptive`` is the rule that bounds what reputation buys.
    """

    name = "reputation-weighted"
    Config = ReputationConfig
    takes_weights = True

    def prepare_weights(self, weights, n):
        """Reputations, not sample counts: Q16.16 integers in [0, 65536]."""
        return check_reputations(weights, n, self.name)

    def _aggregate(self, x, f, weights, rng):
        import numpy as np

        n = x.shape[0]
        reps = weights if weights is not None else [1 << 16] * n
        e = int(2 * exponent_for(n))
        raw = one_voice(x, [_powered_cached(r, e) for r in reps])
        if not any(raw):
            raise QresError(
                "aggregator 'reputation-weighted': every reputation is (close to) zero; "
                "reset the reputations or use 'trimmed-mean'"
            )
        cap = Fraction(self.config.cap)
        shares = capped_shares(raw, cap)
        if proportional(raw, cap):
            w = np.array(shares, dtype=np.int64)
            return to_q(div_round(w @ x.astype(np.int64), int(w.sum())))
        return anchored(x, shares, weighted_median_columns(x, raw))


def at_breakdown(n: int, f: int) -> bool:
    """Whether ``f`` of ``n`` rows is as many Byzantine rows as an honest majority allows
    (``n - 2 f <= 2``: the trimmed mean keeps one or two values per coordinate, the
    median; two rows allow none). ``adaptive`` with ``trimmed_at_breakdown`` is then the
    trimmed mean alone: the honest surplus ``n - 2 f`` of at most two rows cannot outvote
    ``f`` trusted rows pushing together inside the clipping radius, and only the middle
    order statistics stay between honest values (docs/defence.md, rule 2a)."""
    return n - 2 * f <= 2


@attrs.frozen
class AdaptiveConfig:
    """Settings of the adaptive aggregator."""

    #: A node with reputation at or below this (0..1) contributes nothing.
    distrust: float = attrs.field(default=0.1, validator=number(0.0, 1.0))
    #: A node with reputation at or above this (0..1) gets the full clipping radius; between
    #: the two the radius grows linearly with the reputation.
    trust: float = attrs.field(default=0.9, validator=number(0.0, 1.0))
    #: Largest share of the result one node may have (after the ``rep ** k`` weighting).
    cap: float = attrs.field(default=0.1, validator=number(2.0**-20, 1.0))
    #: The full clipping radius, in units of the median distance of the rows to the
    #: trimmed mean.
    radius: float = attrs.field(default=1.0, validator=number(0.0, 1e6))
    #: Return the trimmed mean alone when ``f`` is as many Byzantine rows as an honest
    #: majority allows (:func:`at_breakdown`): parity with the trimmed mean at high
    #: Byzantine fractions, at a cost below them (docs/defence.md, rule 2a).
    trimmed_at_breakdown: bool = attrs.field(default=False, validator=boolean())

    def __attrs_post_init__(self):
        if self.trust < self.distrust:
            raise InvalidSetting("trust", self.trust, f"a value >= distrust ({self.distrust})")


class Adaptive(Aggregator):
    """Adaptive: the trimmed mean, plus what each node's reputation entitles it to.

    Bounded trust: the robust rule always runs and no reputation bypasses it. The
    coordinate-wise trimmed mean with ``f`` (Yin et al., ICML 2018) is the anchor ``c``;
    each row's step ``x - c`` is clipped to a radius of ``radius x`` the median distance of
    the rows to ``c`` (a scale attackers cannot inflate while they are fewer than half: the
    centred clipping of Karimireddy, He, Jaggi, ICML 2021), scaled by the node's trust
    (0 at ``distrust`` or below, 1 at ``trust`` or above, linear between); the clipped steps
    are averaged with the capped reputation shares of ``reputation-weighted``
    (Rodríguez-Barroso et al., FGCS 2022), and every share not given stays on ``c``. So an
    attacker with a perfect reputation moves the result by at most ``cap x radius`` median
    distances, a distrusted one not at all, and the honest majority's spread is averaged
    in, not trimmed away. Identical rows are one voice: ``k`` copies share one row's weight,
    so a cartel sending one forged vector weighs as one node. Without reputations every node
    has full trust. With ``trimmed_at_breakdown``, when ``f`` is as large as an honest
    majority allows (``n - 2 f <= 2``, :func:`at_breakdown`) the result is the trimmed mean
    (the median) alone. Needs ``n > 2 f``.
    """

    name = "adaptive"
    Config = AdaptiveConfig
    takes_weights = True

    def check_f(self, n, f):
        """The trimmed mean anchor needs ``n > 2 f``."""
        if 2 * f >= n:
            raise QresError(
                f"aggregator 'adaptive': f={f} needs n > 2f, got n={n}; lower f or add nodes"
            )

    def prepare_weights(self, weights, n):
        """Reputations, not sample counts: Q16.16 integers in [0, 65536]."""
        return check_reputations(weights, n, self.name)

    def trust_of(self, rep: int) -> Fraction:
        """A reputation's trust in [0, 1]: the fraction of the full radius it may use."""
        low = math.floor(self.config.distrust * 65536 + 0.5)
        high = math.floor(self.config.trust * 65536 + 0.5)
        if rep <= low:
            return Fraction(0)
        if rep >= high:
            return Fraction(1)
        return Fraction(rep - low, high - low)

    def _trust_scale(self) -> tuple[int, int]:
        """``(low, span)``: a reputation ``rep`` has trust ``clip(rep - low, 0, span) / span``
        (:meth:`trust_of` as one integer numerator over a common denominator)."""
        low = math.floor(self.config.distrust * 65536 + 0.5)
        high = math.floor(self.config.trust * 65536 + 0.5)
        # high == low: trust is 0 at or below, 1 above, which span 1 gives
        return low, max(high - low, 1)

    def _aggregate(self, x, f, weights, rng):
        import numpy as np

        from qres.robust.aggregate import sq_dists_to, trimmed_mean

        n = x.shape[0]
        c = trimmed_mean(x, f)
        if self.config.trimmed_at_breakdown and at_breakdown(n, f):
            return c
        reps = [1 << 16] * n if weights is None else [int(r) for r in weights]
        low, span = self._trust_scale()
        trust = [min(max(r - low, 0), span) for r in reps]  # numerators over span
        e = int(2 * exponent_for(n))
        raw = one_voice(
            x, [_powered_cached(r, e) if t else 0 for r, t in zip(reps, trust, strict=True)]
        )
        if not any(raw):
            return c
        d2 = sq_dists_to(x, c)
        scale2 = sorted(d2)[(n - 1) // 2]  # median squared distance: robust while f < n / 2
        # A row's limit is radius**2 * scale2 * (t / span)**2 = rn**2 scale2 t**2 / (rd span)**2
        rn, rd = float(self.config.radius).as_integer_ratio()
        top, bottom = rn * rn * scale2, rd * rd * span * span
        factor = [clip_factor(top * t * t, bottom * d) for d, t in zip(d2, trust, strict=True)]
        step = x.astype(np.int64) - c.astype(np.int64)
        fac = np.array(factor, dtype=np.int64)[:, None]
        # |step| < 2**32 and factor <= 2**30: the product stays below 2**62
        clipped = (step * fac + _HALF) >> _W_BITS
        shares = np.array(capped_shares(raw, Fraction(self.config.cap)), dtype=np.int64)
        num = shares @ clipped
        return to_q(c.astype(np.int64) + ((num + _HALF) >> _W_BITS))

    def aggregate_batch(self, xs: Any, f: int, weights: Any = None) -> Any:
        """Aggregate ``g`` row sets at once: ``xs`` ``(g, m, d)`` int32, ``weights`` ``(g, m)``
        reputations or None (full trust for every set). Row ``k`` of the result is exactly
        ``aggregate(xs[k], f=f, weights=weights[k])``, bit for bit: the same integers,
        computed across the sets with numpy (docs/aggregators.md, "Adaptive in batches").
        Raises :class:`QresError` where :meth:`aggregate` would."""
        import numpy as np

        from qres.kinds.aggregator import check_f_basic

        xs, reps = _check_batch(xs, weights, self.name)
        g, m, d = xs.shape
        f = check_f_basic(f, m, self.name)
        self.check_f(m, f)
        out = np.empty((g, d), np.int32)
        for s in range(0, g, _BATCH_CHUNK):
            out[s : s + _BATCH_CHUNK] = self._batch(
                xs[s : s + _BATCH_CHUNK], f, reps[s : s + _BATCH_CHUNK]
            )
        return out

    def _batch(self, xs, f, reps):
        """:meth:`aggregate_batch` on one chunk (``reps`` an int64 ``(g, m)`` array)."""
        import numpy as np

        from qres.robust.aggregate import trimmed_mean

        g, m, d = xs.shape
        c = trimmed_mean(xs, f)
        if self.config.trimmed_at_breakdown and at_breakdown(m, f):
            return c
        low, span = self._trust_scale()
        trust = np.clip(reps - low, 0, span)
        raw = np.where(trust > 0, powers(reps, int(2 * exponent_for(m))), 0)
        raw //= voices(xs)
        total = raw.sum(axis=1)  # at most m * 2**30
        diff = xs.astype(np.int64) - c[:, None, :].astype(np.int64)
        # Squared distances are exact in int64 while max|diff|**2 * d < 2**63; the few sets
        # past that (rows near the Q16.16 limits) take the Python-int path of _aggregate.
        small = np.abs(diff).max(axis=(1, 2)) <= math.isqrt(((1 << 63) - 1) // d)
        diff[~small] = 0
        d2 = np.einsum("gmd,gmd->gm", diff, diff)
        scale2 = np.partition(d2, (m - 1) // 2, axis=1)[:, (m - 1) // 2]
        fac = self._factors(d2, scale2, trust, span)
        clipped = (diff * fac[:, :, None] + _HALF) >> _W_BITS
        shares = np.minimum(raw * _ONE // np.maximum(total, 1)[:, None], cap_top(self.config.cap))
        num = np.einsum("gm,gmd->gd", shares, clipped)
        out = to_q(c.astype(np.int64) + ((num + _HALF) >> _W_BITS))
        out[total == 0] = c[total == 0]
        for k in np.flatnonzero(~small & (total > 0)).tolist():
            out[k] = self._aggregate(xs[k], f, reps[k].tolist(), None)
        return out

    def _factors(self, d2, scale2, trust, span):
        """Each row's clipping factor ``floor(2**30 sqrt(A / B))`` (``2**30`` where ``B <= A``),
        ``A = rn**2 scale2 t**2``, ``B = (rd span)**2 d2``, as :func:`clip_factor` gives it.

        A float64 filter decides the rows it can prove: ``A`` and ``B`` carry a relative
        error of at most 4 and 2 units of 2**-53, so the comparison is sure outside a
        relative band of 2**-40, and ``y = 2**30 sqrt(a / b)`` is within 2**-20 of the true
        value, so ``floor(y)`` is sure when ``y`` is more than 2**-19 from an integer. The
        other rows (ties, near-integers) are computed with Python integers."""
        import numpy as np

        rn, rd = float(self.config.radius).as_integer_ratio()
        fac = np.full(d2.shape, _ONE, np.int64)
        t2 = trust * trust
        if rd > (1 << 64):  # a radius below ~2**-11 of odd bits: integers throughout
            todo = np.ones(d2.shape, bool)
        else:
            a = float(rn * rn) * scale2.astype(np.float64)[:, None] * t2.astype(np.float64)
            b = float(rd * rd * span * span) * d2.astype(np.float64)
            zero = a == 0  # A == 0 exactly: no factor is ever rounded to it
            fac[zero & (d2 > 0)] = 0
            inside = a >= b * (1 + 2.0**-40)
            outside = ~zero & (a <= b * (1 - 2.0**-40))
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                y = np.sqrt(a / b) * float(_ONE)
                fy = np.floor(y)
                sure = outside & (y - fy >= 2.0**-19) & (fy + 1 - y >= 2.0**-19)
            fac[sure] = fy[sure].astype(np.int64)
            todo = ~zero & ~inside & ~sure
        top = rn * rn
        bottom = rd * rd * span * span
        for k, i in zip(*np.nonzero(todo), strict=True):
            t = int(trust[k, i])
            fac[k, i] = clip_factor(top * int(scale2[k]) * t * t, bottom * int(d2[k, i]))
        return fac


def clip_factor(limit_num: int, dist_num: int) -> int:
    """The clipping factor of a row, ``floor(2**30 min(1, sqrt(A / B)))`` for ``A =
    limit_num``, ``B = dist_num`` (its limit and its squared distance over one common
    denominator): ``2**30`` when ``B <= A``, else ``isqrt(floor(A 2**60 / B))``."""
    if dist_num <= limit_num:
        return _ONE
    return math.isqrt((limit_num << (2 * _W_BITS)) // dist_num)


def _check_batch(xs: Any, weights: Any, rule: str) -> tuple[Any, Any]:
    """The checks of :meth:`Aggregator.aggregate` for a batch: ``(g, m, d)`` int32 row sets,
    ``(g, m)`` reputations in [0, 65536] (all 65536 when None: full trust)."""
    import numpy as np

    from qres.kinds.aggregator import REP_ONE, check_updates

    if not isinstance(xs, np.ndarray) or xs.ndim != 3:
        raise QresError(
            f"aggregator {rule!r}: a batch of updates must be a (g, m, d) numpy array; "
            "stack one (m, d) row set per aggregation"
        )
    if xs.shape[0]:
        check_updates(xs[0], rule)  # dtype and sizes, the same for every set
    if weights is None:
        return xs, np.full(xs.shape[:2], REP_ONE, np.int64)
    w = np.asarray(weights)
    if w.shape != xs.shape[:2] or (w.size and w.dtype.kind not in "iu"):
        raise QresError(
            f"aggregator {rule!r}: batch reputations must be {xs.shape[:2]} integers, got "
            f"shape {w.shape} dtype {w.dtype}; pass Q16.16 values in [0, 65536]"
        )
    w = w.astype(np.int64)
    if w.size and (w.min() < 0 or w.max() > REP_ONE):
        raise QresError(
            f"aggregator {rule!r}: reputations must lie in [0, {REP_ONE}] (Q16.16 0.0 to 1.0); "
            "clamp them"
        )
    return xs, w


@hookimpl
def register_aggregators(register):
    """Register the reputation-weighted mean and the adaptive aggregator."""
    for cls in (ReputationWeighted, Adaptive):
        register(cls)
