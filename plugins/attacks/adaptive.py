"""Attacks on the defence itself: they watch the round, their own reputations and honest
training, and adapt (the red team of ``qres bench defence``).

Each uses the context the simulator passes (:class:`qres.kinds.attack.AttackContext`: round,
the Byzantine nodes' own honest updates, their reputations); without it (the aggregator
bench) they fall back to what they can do from the honest rows alone. Statistics are float64
on the honest rows; forged rows are rounded to Q16.16 by the rule and saturated.
"""

from __future__ import annotations

import attrs

from qres.kernel.config import InvalidSetting, boolean, integer, number
from qres.kernel.hookspecs import hookimpl
from qres.kinds.attack import Attack, from_real, honest_stats


def _direction(d: int, seed: int):
    """A fixed unit sign vector (the same every round: drift accumulates)."""
    import numpy as np

    u = np.random.default_rng([seed, 0xD1F7]).choice([-1.0, 1.0], d)
    return u / np.sqrt(d)


def _caught(context) -> float:
    """The chance that a node's packet is verified (audited, or checked by at least one of
    the ``receivers`` it is sent to, each with ``check_rate``): public rules. Forwards and
    colluding receivers move it either way; the attack takes the direct receivers."""
    unchecked = (1.0 - context.check_rate) ** max(int(context.receivers), 1)
    return 1.0 - (1.0 - context.audit_rate) * unchecked


def _own(honest, f, context):
    """The Byzantine nodes' own honest updates when known, else the honest mean's copies."""
    import numpy as np

    if context is not None and context.own is not None:
        return np.asarray(context.own, np.int32)
    mean, _ = honest_stats(honest)
    return np.repeat(from_real(mean)[None, :], f, axis=0)


def _push(honest, f, rng, strength: float, noise: float, seed: int):
    """``mean + strength * |spread| * u`` per row, plus independent noise of ``noise`` honest
    standard deviations per coordinate: slow drift no near-duplicate test sees."""
    import numpy as np

    mean, std = honest_stats(honest)
    u = _direction(honest.shape[1], seed)
    spread = float(np.linalg.norm(std))
    rows = mean + strength * spread * u + noise * std * rng.standard_normal((f, std.shape[0]))
    return from_real(rows)


@attrs.frozen
class SleeperConfig:
    """Settings of the sleeper / on-off attack."""

    #: Rounds of honest behaviour before the first push.
    sleep: int = attrs.field(default=10, validator=integer(0, 1 << 30))
    #: Rounds pushing, then (if ``off`` > 0) rounds honest again, repeated.
    on: int = attrs.field(default=1 << 30, validator=integer(1, 1 << 30))
    off: int = attrs.field(default=0, validator=integer(0, 1 << 30))
    #: Push: this many honest spreads along a fixed direction.
    strength: float = attrs.field(default=1.0, validator=number(0.0, 1e6))
    direction_seed: int = attrs.field(default=0, validator=integer(0, (1 << 63) - 1))


class Sleeper(Attack):
    """Behave (send the nodes' own honest updates) for ``sleep`` rounds to earn reputation,
    then push together along a fixed direction; with ``off`` > 0, alternate ``on`` rounds of
    pushing with ``off`` honest rounds (on-off) so that reputations recover in between."""

    name = "sleeper"
    Config = SleeperConfig

    def _forge(self, honest, f, rng):
        return self._forge_in(honest, f, rng, None)

    def _forge_in(self, honest, f, rng, context):
        c = self.config
        r = 0 if context is None else context.round
        pushing = r >= c.sleep and (c.off == 0 or (r - c.sleep) % (c.on + c.off) < c.on)
        if not pushing:
            return _own(honest, f, context)
        return _push(honest, f, rng, c.strength, 0.0, c.direction_seed)


@attrs.frozen
class FramingConfig:
    """Settings of the framing attack."""

    #: Honest nodes framed (each copied by about ``f / targets`` Byzantine nodes).
    targets: int = attrs.field(default=4, validator=integer(1, 1 << 20))


class Framing(Attack):
    """Copy honest rows exactly, a few Byzantine nodes per framed honest node: a group test
    that bans near-identical rows bans the originals with the copies."""

    name = "framing"
    Config = FramingConfig

    def _forge(self, honest, f, rng):
        import numpy as np

        picked = rng.choice(honest.shape[0], min(self.config.targets, honest.shape[0]), False)
        return honest[np.sort(picked)[np.arange(f) % picked.shape[0]]].copy()


@attrs.frozen
class DriftConfig:
    """Settings of the noisy cartel drift."""

    #: Push: this many honest spreads along a fixed direction.
    strength: float = attrs.field(default=0.5, validator=number(0.0, 1e6))
    #: Independent noise per row, in honest standard deviations per coordinate.
    noise: float = attrs.field(default=1.0, validator=number(0.0, 1e6))
    direction_seed: int = attrs.field(default=0, validator=integer(0, (1 << 63) - 1))


class NoisyCartel(Attack):
    """A cartel drifting along one direction, each row with independent noise of about one
    honest standard deviation: no two rows alike, every row inside the honest cloud."""

    name = "noisy-cartel"
    Config = DriftConfig

    def _forge(self, honest, f, rng):
        c = self.config
        return _push(honest, f, rng, c.strength, c.noise, c.direction_seed)


@attrs.frozen
class UnderThresholdConfig:
    """Settings of the reputation-aware drift."""

    #: Reputation (0..1) below which a node behaves until it has recovered.
    careful_below: float = attrs.field(default=0.7, validator=number(0.0, 1.0))
    direction_seed: int = attrs.field(default=0, validator=integer(0, (1 << 63) - 1))


class UnderThreshold(Attack):
    """Drift just inside every statistical test: each row sits at the median honest distance
    from the honest centre (never an outlier), along a fixed direction with independent
    noise (never a near-duplicate); a node whose reputation fell below ``careful_below``
    behaves until it recovers (it knows the rules: they are public)."""

    name = "under-threshold"
    Config = UnderThresholdConfig

    def _forge(self, honest, f, rng):
        return self._forge_in(honest, f, rng, None)

    def _forge_in(self, honest, f, rng, context):
        import numpy as np

        h = honest.astype(np.float64)
        centre = np.median(h, axis=0)
        radius = float(np.median(np.linalg.norm(h - centre, axis=1)))
        u = _direction(h.shape[1], self.config.direction_seed)
        _, std = honest_stats(honest)
        noise = rng.standard_normal((f, h.shape[1])) * std * 0.5
        steps = u[None, :] * radius + noise
        norms = np.linalg.norm(steps, axis=1, keepdims=True)
        rows = from_real(centre + steps * (radius / np.maximum(norms, 1e-12)))
        if context is not None and context.reputations is not None:
            careful = np.asarray(context.reputations) < self.config.careful_below
            rows[careful] = _own(honest, f, context)[careful]
        return rows


@attrs.frozen
class TargetedConfig:
    """Settings of the targeted attack."""

    #: Coordinates attacked (the ones with the largest honest spread).
    coordinates: int = attrs.field(default=2, validator=integer(1, 1 << 20))
    #: Push on them, in honest standard deviations of each coordinate.
    z: float = attrs.field(default=3.0, validator=number(0.0, 1e6))


class Targeted(Attack):
    """Honest-looking rows (the mean plus honest-sized noise) except on a few coordinates,
    pushed ``z`` standard deviations one way: a small change of the row's norm, a large one
    of the coordinates that matter."""

    name = "targeted"
    Config = TargetedConfig

    def _forge(self, honest, f, rng):
        import numpy as np

        mean, std = honest_stats(honest)
        k = min(self.config.coordinates, std.shape[0])
        top = np.argsort(-std, kind="stable")[:k]
        rows = mean + std * rng.standard_normal((f, std.shape[0]))
        rows[:, top] = mean[top] - np.sign(mean[top] + 0.5) * self.config.z * std[top]
        return from_real(rows)


def _names(_inst, attribute, value):
    if not value or not all(isinstance(v, str) and v and v != "mixed" for v in value):
        raise InvalidSetting(attribute.name, value, "a non-empty list of attack names")


@attrs.frozen
class MixedConfig:
    """Settings of the mixed strategy."""

    #: Attacks dealt out over the Byzantine nodes in turn (node i plays ``attacks[i % k]``).
    attacks: list = attrs.field(
        factory=lambda: ["sleeper", "noisy-cartel", "framing", "targeted", "under-threshold"],
        converter=list,
        validator=_names,
    )


class Mixed(Attack):
    """Different strategies on different Byzantine nodes at once: each test sees only a few
    of each kind."""

    name = "mixed"
    Config = MixedConfig

    def __init__(self, config=None):
        from qres.kernel import plugins
        from qres.kernel.config import Location

        super().__init__(config)
        self.parts = [
            plugins.create("attack", {"use": a}, Location("<mixed>").child(a))
            for a in self.config.attacks
        ]

    def _forge(self, honest, f, rng):
        return self._forge_in(honest, f, rng, None)

    def _forge_in(self, honest, f, rng, context):
        import numpy as np

        out = np.empty((f, honest.shape[1]), np.int32)
        k = len(self.parts)
        for j, part in enumerate(self.parts):
            rows = np.arange(j, f, k)
            if rows.shape[0]:
                sub = None if context is None else context.select(rows)
                out[rows] = part.forge(honest, int(rows.shape[0]), rng=rng, context=sub)
        return out


@attrs.frozen
class AuditAwareConfig:
    """Settings of the audit-aware collusion."""

    #: Largest chance the colluders accept of one of them being audited in a round.
    risk: float = attrs.field(default=0.5, validator=number(0.0, 1.0))
    strength: float = attrs.field(default=1.0, validator=number(0.0, 1e6))
    direction_seed: int = attrs.field(default=0, validator=integer(0, (1 << 63) - 1))


class AuditAware(Attack):
    """Colluders that know the audit rate: each round only as many of them forge as keeps
    the chance that any forger is audited under ``risk`` (the rest behave), and they push
    hard then."""

    name = "audit-aware"
    Config = AuditAwareConfig

    def _forge(self, honest, f, rng):
        return self._forge_in(honest, f, rng, None)

    def _forge_in(self, honest, f, rng, context):
        import math

        rows = _own(honest, f, context).copy()
        rate = 0.03 if context is None else max(_caught(context), 1e-9)
        # 1 - (1 - rate)**k <= risk
        k = min(f, int(math.log1p(-self.config.risk) / math.log1p(-rate)) if rate < 1 else 0)
        if k > 0:
            pick = rng.choice(f, k, replace=False)
            c = self.config
            rows[pick] = _push(honest, k, rng, c.strength, 0.0, c.direction_seed)
        return rows


@attrs.frozen
class BasePoisonConfig:
    """Settings of the base poisoning."""

    #: How far each round moves the nodes' models along a fixed direction (Euclidean norm,
    #: in weight units: 1.0 is a weight of 1.0 in Q16.16).
    shift: float = attrs.field(default=0.05, validator=number(0.0, 1e4))
    direction_seed: int = attrs.field(default=0, validator=integer(0, (1 << 63) - 1))
    #: Largest chance the colluders accept, each round, of one of the moved bases being
    #: checked (1: every awake node moves its base every round, whatever the checks).
    risk: float = attrs.field(default=1.0, validator=number(0.0, 1.0))


class BasePoison(Attack):
    """Aggregators that publish a base that is not the aggregate of their committed inputs:
    each round the nodes move their own models along a fixed direction before training
    (:meth:`choose_base`), then train and report honestly from there, so every training
    audit passes. Only the round-step check (replaying the committed aggregate) sees it.
    With ``risk`` below 1 only as many move as keep the chance of a check under it (the
    rest keep their bases that round)."""

    name = "base-poison"
    Config = BasePoisonConfig

    def choose_base(self, weights, *, rng, context=None):
        import math

        import numpy as np

        c = self.config
        u = _direction(weights.shape[1], c.direction_seed)
        moved = from_real(weights.astype(np.float64) + c.shift * 65536.0 * u)
        f = weights.shape[0]
        rate = 0.0 if context is None else _caught(context)
        if c.risk >= 1.0 or rate <= 0.0:
            return moved
        # 1 - (1 - rate)**k <= risk
        k = min(f, int(math.log1p(-c.risk) / math.log1p(-rate))) if rate < 1.0 else 0
        out = np.asarray(weights, np.int32).copy()
        if k > 0:
            pick = rng.choice(f, k, replace=False)
            out[pick] = moved[pick]
        return out

    def _forge(self, honest, f, rng):
        return self._forge_in(honest, f, rng, None)

    def _forge_in(self, honest, f, rng, context):
        return _own(honest, f, context)


@attrs.frozen
class AuditAwarePoisonConfig(BasePoisonConfig):
    """Settings of the audit-aware base poisoning (a lower default ``risk``)."""

    risk: float = attrs.field(default=0.5, validator=number(0.0, 1.0))


class AuditAwarePoison(BasePoison):
    """Base poisoning by colluders that know the round-step check rate: each round only as
    many move their bases as keep the chance of any check under ``risk`` (one half)."""

    name = "audit-aware-poison"
    Config = AuditAwarePoisonConfig


@attrs.frozen
class FriendsConfig:
    """Settings of the friends-only aggregation."""

    #: Keep the rule's weights for the kept rows (only drop the honest ones).
    rule_weights: bool = attrs.field(default=False, validator=boolean())


class Friends(Attack):
    """Colluders that aggregate only each other: each takes the rows of fellow Byzantine
    nodes it received, drops the honest ones and gives itself and its friends full weight,
    whatever their public reputations; it then trains and reports honestly from the base
    that gives, so every training audit passes. The weights are in its round-step record:
    a check that compares them with the public reputations sees them. With
    ``rule_weights`` it keeps the rule's weights: leaving rows out looks like loss, no
    fault anyone can prove, and the robust rule bounds what its rows do to others."""

    name = "friends"
    Config = FriendsConfig

    def choose_inputs(self, origins, weights, *, rng, context=None):
        import numpy as np

        from qres.kinds.aggregator import REP_ONE

        friends = np.isin(origins, [] if context is None else context.nodes)
        if weights is None:
            return friends, None
        kept = np.asarray(weights, np.int64)[np.concatenate([[True], friends])]
        if not self.config.rule_weights:
            kept = np.full(kept.shape[0], REP_ONE, np.int64)
        return friends, kept

    def _forge(self, honest, f, rng):
        return self._forge_in(honest, f, rng, None)

    def _forge_in(self, honest, f, rng, context):
        return _own(honest, f, context)


@hookimpl
def register_attacks(register):
    """Register the adaptive attacks."""
    for cls in (
        Sleeper,
        Framing,
        NoisyCartel,
        UnderThreshold,
        Targeted,
        Mixed,
        AuditAware,
        BasePoison,
        AuditAwarePoison,
        Friends,
    ):
        register(cls)
