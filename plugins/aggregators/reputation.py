"""Reputation-driven rules: the reputation-weighted mean and the adaptive aggregator.

Reputations come in as the ``weights`` argument: one Q16.16 value in [0, 1] per row (an
integer in [0, 65536]), kept by the caller (the swarm) from round to round. They travel with
their rows, so the result does not depend on row order.
"""

from __future__ import annotations

import math
from fractions import Fraction

import attrs

from qres.kernel.config import InvalidSetting, number
from qres.kernel.errors import QresError
from qres.kernel.hookspecs import hookimpl
from qres.kinds.aggregator import Aggregator, check_reputations
from qres.robust.aggregate import div_round, to_q

#: Final weights are integers summing to at most 2**30 (so sum(w x) < 2**61 in int64).
_W_BITS = 30


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


def capped_shares(raw: list[int], cap: Fraction) -> list[int]:
    """Integer shares of 2**30 proportional to ``raw``, none above ``cap``: bounded influence.

    A node's share is ``min(raw / sum(raw), cap)``, floored to an integer of 2**30. What the
    cap takes from a heavy node goes to no other node (the caller leaves it on a robust
    anchor): redistributing it would raise the share of lightly trusted nodes above their
    proportional one, so with few trusted nodes the near-distrusted would fill the gap.
    """
    total = sum(w for w in raw if w > 0)
    scale = 1 << _W_BITS
    top = math.floor(cap * scale)
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
    import numpy as np

    _, inverse, counts = np.unique(x, axis=0, return_inverse=True, return_counts=True)
    return [w // int(k) for w, k in zip(raw, counts[inverse.reshape(-1)], strict=True)]


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
        k = exponent_for(n)
        raw = one_voice(x, [powered(r, k) for r in reps])
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
    has full trust. Needs ``n > 2 f``.
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

    def _aggregate(self, x, f, weights, rng):
        import numpy as np

        from qres.kernel.plugins import get_plugin
        from qres.robust.aggregate import sq_dists_to

        n = x.shape[0]
        c = get_plugin("aggregator", "trimmed-mean")()._aggregate(x, f, None, rng)
        reps = [1 << 16] * n if weights is None else [int(r) for r in weights]
        trust = [self.trust_of(r) for r in reps]
        raw = [powered(r, exponent_for(n)) if t else 0 for r, t in zip(reps, trust, strict=True)]
        raw = one_voice(x, raw)
        if not any(raw):
            return c
        d2 = sq_dists_to(x, c)
        scale2 = sorted(d2)[(n - 1) // 2]  # median squared distance: robust while f < n / 2
        r2 = Fraction(self.config.radius) ** 2 * scale2
        one = 1 << _W_BITS
        factor = []
        for d, t in zip(d2, trust, strict=True):
            limit = r2 * t * t
            if d <= limit:
                factor.append(one)
            else:  # floor(sqrt(limit / d) * 2**30), exactly
                num = limit.numerator << (2 * _W_BITS)
                factor.append(math.isqrt(num // (limit.denominator * d)))
        step = x.astype(np.int64) - c.astype(np.int64)
        fac = np.array(factor, dtype=np.int64)[:, None]
        # |step| < 2**32 and factor <= 2**30: the product stays below 2**62
        clipped = (step * fac + (1 << (_W_BITS - 1))) >> _W_BITS
        shares = np.array(capped_shares(raw, Fraction(self.config.cap)), dtype=np.int64)
        num = shares @ clipped
        return to_q(c.astype(np.int64) + ((num + (1 << (_W_BITS - 1))) >> _W_BITS))


@hookimpl
def register_aggregators(register):
    """Register the reputation-weighted mean and the adaptive aggregator."""
    for cls in (ReputationWeighted, Adaptive):
        register(cls)
