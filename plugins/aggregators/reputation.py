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
    """Integer weights summing to at most 2**30 proportional to ``raw``, no share above ``cap``.

    Water-filling: the largest raw weights are pinned at share ``cap`` one by one until the
    rest, scaled to the share left over, are all within the cap. With fewer than ``1 / cap``
    positive weights the cap cannot hold, and those nodes share equally.
    """
    positive = sorted((w for w in raw if w > 0), reverse=True)
    if len(positive) * cap < 1:
        return [(1 << _W_BITS) // len(positive) if w > 0 else 0 for w in raw]
    rest = sum(positive)
    pinned = 0
    threshold = None  # raw weights at or above this are pinned
    for w in positive:
        left = 1 - pinned * cap
        if w * left <= cap * rest:
            break
        pinned += 1
        rest -= w
        threshold = w
    left = 1 - pinned * cap
    scale = 1 << _W_BITS
    out = []
    for w in raw:
        if threshold is not None and w >= threshold:
            out.append(math.floor(cap * scale))
        elif w > 0:
            out.append(math.floor(Fraction(w) * left * scale / rest))
        else:
            out.append(0)
    return out


@attrs.frozen
class ReputationConfig:
    """Settings of the reputation-weighted mean."""

    #: Largest share of the result one node may have (after the ``rep ** k`` weighting).
    cap: float = attrs.field(default=0.1, validator=number(2.0**-20, 1.0))


class ReputationWeighted(Aggregator):
    """Reputation-weighted mean: weights ``rep ** k`` (k = 2 below 20 nodes, 3 up to 50, 3.5
    above), each node's share capped at ``cap``.

    Reputation weighting after Rodríguez-Barroso et al., "Dynamic defense against Byzantine
    poisoning attacks in federated learning", FGCS 2022, and Xu, Lyu, "A Reputation Mechanism
    Is All You Need: Collaborative Fairness and Adversarial Robustness in Federated Learning",
    2021. ``weights`` are the reputations (Q16.16 in [0, 1]); without them every node has
    reputation 1 and this is the plain mean. ``f`` is not used: the reputations carry it.
    Pinned nodes tie by value, so equal raw weights are treated alike whatever their order.
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
        raw = [powered(r, k) for r in reps]
        if not any(raw):
            raise QresError(
                "aggregator 'reputation-weighted': every reputation is (close to) zero; "
                "reset the reputations or use 'trimmed-mean'"
            )
        w = np.array(capped_shares(raw, Fraction(self.config.cap)), dtype=np.int64)
        return to_q(div_round(w @ x.astype(np.int64), int(w.sum())))


@attrs.frozen
class AdaptiveConfig:
    """Settings of the adaptive aggregator."""

    #: A node with reputation at or below this (0..1) counts as an identified attacker.
    distrust: float = attrs.field(default=0.1, validator=number(0.0, 1.0))
    #: A node with reputation at or above this (0..1) is trusted; between the two it is a
    #: suspect, and while there is one the swarm is under suspicion.
    trust: float = attrs.field(default=0.9, validator=number(0.0, 1.0))
    #: The share cap of the reputation-weighted mean.
    cap: float = attrs.field(default=0.1, validator=number(2.0**-20, 1.0))

    def __attrs_post_init__(self):
        if self.trust < self.distrust:
            raise InvalidSetting("trust", self.trust, f"a value >= distrust ({self.distrust})")


class Adaptive(Aggregator):
    """Adaptive: trimmed mean while the swarm is under suspicion, the cheaper
    reputation-weighted mean once the attackers are identified.

    With reputations (from a :class:`qres.robust.reputation.ReputationTracker`, say) every node is
    *trusted* (reputation >= ``trust``), *distrusted* (<= ``distrust``: an identified
    attacker) or a *suspect* in between. While any node is a suspect, or without reputations,
    the swarm is under suspicion and the coordinate-wise trimmed mean with ``f`` runs (Yin et
    al., ICML 2018). Once every node is trusted or distrusted (attackers identified, or none
    seen) and some node is trusted, the reputation-weighted mean runs, in which distrusted
    nodes weigh (almost) nothing (Rodríguez-Barroso et al., FGCS 2022). ``f`` is a bound,
    not a count, so the switch does not wait for ``f`` nodes to be caught. The rule trusts
    the reputations: an attacker that keeps a trusted reputation is averaged in. Needs
    ``n > 2 f`` (the trimmed mean's bound).
    """

    name = "adaptive"
    Config = AdaptiveConfig
    takes_weights = True

    def check_f(self, n, f):
        """The fallback trimmed mean needs ``n > 2 f``."""
        if 2 * f >= n:
            raise QresError(
                f"aggregator 'adaptive': f={f} needs n > 2f, got n={n}; lower f or add nodes"
            )

    def prepare_weights(self, weights, n):
        """Reputations, not sample counts: Q16.16 integers in [0, 65536]."""
        return check_reputations(weights, n, self.name)

    def identified(self, reputations, f: int) -> bool:
        """Whether the swarm is cleared: no suspect, and at least one trusted node."""
        if reputations is None:
            return False
        low = math.floor(self.config.distrust * 65536 + 0.5)
        high = math.floor(self.config.trust * 65536 + 0.5)
        suspects = sum(1 for r in reputations if low < r < high)
        trusted = sum(1 for r in reputations if r >= high and r > low)
        return suspects == 0 and trusted > 0

    def _aggregate(self, x, f, weights, rng):
        from qres.kernel.plugins import get_plugin

        if self.identified(weights, f):
            rule = get_plugin("aggregator", "reputation-weighted")(
                ReputationConfig(self.config.cap)
            )
            return rule._aggregate(x, f, weights, rng)
        return get_plugin("aggregator", "trimmed-mean")()._aggregate(x, f, None, rng)


@hookimpl
def register_aggregators(register):
    """Register the reputation-weighted mean and the adaptive aggregator."""
    for cls in (ReputationWeighted, Adaptive):
        register(cls)
