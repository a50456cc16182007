"""The ``[swarm]`` table of a profile: every setting of the swarm simulator, validated.

Plugin tables of the section (``aggregator``, ``transport``, ``attack``) are slots handled by
:mod:`qres.kernel.profiles`; the plain keys below are checked one by one with the same one-line
errors as every other profile setting (file, key, bad value, what is allowed). Imports only
attrs and light qres modules: profiles load without numpy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from qres.kernel.config import InvalidSetting, boolean, integer, number, one_of, text

if TYPE_CHECKING:
    from qres.robust.reputation import ReputationRules

DAY_S = 86_400


def _fraction_below_half(_inst, attribute, value):
    number(0.0, 0.49)(_inst, attribute, value)


def _data(_inst, attribute, value):
    if not isinstance(value, str) or not value or len(value) > 4096:
        raise InvalidSetting(
            attribute.name, value, '"generated" or the path of a folder with a MANIFEST'
        )


@attrs.frozen
class SwarmSettings:
    """Settings of ``qres swarm simulate`` (the ``[swarm]`` table's plain keys).

    Groups: population and data; learning; gossip; reputation and defence; regimes; energy;
    the scripted storm of the generated data set. ``docs/swarm.md`` explains each.
    """

    # --- population and data
    nodes: int = attrs.field(default=100, validator=integer(2, 1_000_000))
    rounds: int = attrs.field(default=100, validator=integer(1, 1_000_000))
    byzantine: float = attrs.field(default=0.0, validator=_fraction_below_half)
    seed: int = attrs.field(default=0, validator=integer(0, (1 << 63) - 1))
    data: str = attrs.field(default="generated", validator=_data)
    partition: str = attrs.field(default="non-iid", validator=one_of("non-iid", "iid"))
    shard_samples: int = attrs.field(default=8192, validator=integer(64, 1 << 24))
    join_fraction: float = attrs.field(default=0.0, validator=number(0.0, 0.9))
    join_round: int = attrs.field(default=0, validator=integer(0, 1_000_000))
    # --- learning
    order: int = attrs.field(default=16, validator=integer(1, 256))
    window: int = attrs.field(default=128, validator=integer(8, 65536))
    lr: float = attrs.field(default=0.5, validator=number(2.0**-16, 1.99))
    storm_lr: float = attrs.field(default=1.0, validator=number(2.0**-16, 1.99))
    assumed_byzantine: float = attrs.field(default=0.49, validator=_fraction_below_half)
    # --- gossip
    fanout: int = attrs.field(default=4, validator=integer(1, 64))
    hops: int = attrs.field(default=1, validator=integer(0, 8))
    forward_budget: int = attrs.field(default=2, validator=integer(0, 64))
    forward_threshold: float = attrs.field(default=0.0, validator=number(-1.0, 1.0))
    eval_samples: int = attrs.field(default=32, validator=integer(4, 4096))
    accept_tolerance: float = attrs.field(default=1.0, validator=number(0.0, 1e6))
    max_inbox: int = attrs.field(default=24, validator=integer(1, 4096))
    max_age: int = attrs.field(default=2, validator=integer(0, 100_000))
    link_bps: int = attrs.field(default=1_000_000, validator=integer(1_000, 10**11))
    # --- reputation and defence
    rep_initial: float = attrs.field(default=0.8, validator=number(0.0, 1.0))
    rep_reward: float = attrs.field(default=0.02, validator=number(0.0, 1.0))
    rep_penalty_outlier: float = attrs.field(default=0.1, validator=number(0.0, 1.0))
    rep_penalty_suspect: float = attrs.field(default=0.05, validator=number(0.0, 1.0))
    rep_penalty_audit: float = attrs.field(default=1.0, validator=number(0.0, 1.0))
    ban_threshold: float = attrs.field(default=0.2, validator=number(0.0, 1.0))
    ban_propagation_rounds: int = attrs.field(default=0, validator=integer(0, 1000))
    grubbs_alpha: float = attrs.field(default=0.01, validator=number(1e-6, 0.5))
    suspect_tightness: float = attrs.field(default=0.2, validator=number(0.0, 1.0))
    audit_tightness: float = attrs.field(default=0.5, validator=number(0.0, 10.0))
    suspect_group_size: int = attrs.field(default=5, validator=integer(2, 1_000_000))
    suspect_rounds: int = attrs.field(default=3, validator=integer(1, 1000))
    audit_rate: float = attrs.field(default=0.03, validator=number(0.0, 1.0))
    audit_rate_storm: float = attrs.field(default=0.05, validator=number(0.0, 1.0))
    audit_suspect_rate: float = attrs.field(default=0.25, validator=number(0.0, 1.0))
    #: Audits also replay the round step that produced the audited packet's base.
    audit_steps: bool = attrs.field(default=True, validator=boolean())
    #: The chance that a receiver checks a packet it holds, in full (training re-run and
    #: round-step replay), before it can use it; 1 = every receiver checks every packet.
    #: Besides the audits above (docs/defence.md, rule 10).
    check_rate: float = attrs.field(default=1.0, validator=number(0.0, 1.0))
    # --- regimes
    derivative_threshold: float = attrs.field(default=0.15, validator=number(0.0, 10.0))
    entropy_threshold: float = attrs.field(default=0.45, validator=number(0.0, 10.0))
    recovery_threshold: float = attrs.field(default=0.30, validator=number(0.0, 10.0))
    storm_min_rounds: int = attrs.field(default=50, validator=integer(0, 1_000_000))
    confirm_prestorm: int = attrs.field(default=2, validator=integer(1, 1000))
    confirm_storm: int = attrs.field(default=3, validator=integer(1, 1000))
    confirm_calm: int = attrs.field(default=5, validator=integer(1, 1000))
    # --- energy and wake schedule
    round_seconds: float = attrs.field(default=14_400.0, validator=number(0.001, 365 * DAY_S))
    wake_calm_s: float = attrs.field(default=14_400.0, validator=number(0.001, 365 * DAY_S))
    wake_prestorm_s: float = attrs.field(default=600.0, validator=number(0.001, 365 * DAY_S))
    wake_storm_s: float = attrs.field(default=30.0, validator=number(0.001, 365 * DAY_S))
    awake_s: float = attrs.field(default=0.5, validator=number(0.0, 3600.0))
    energy_capacity_j: float = attrs.field(default=10_000.0, validator=number(0.001, 1e12))
    energy_initial: float = attrs.field(default=1.0, validator=number(0.0, 1.0))
    harvest_mw: float = attrs.field(default=0.0, validator=number(0.0, 1e9))
    forced_calm_level: float = attrs.field(default=0.10, validator=number(0.0, 1.0))
    gossip_bias_calm: float = attrs.field(default=1.0, validator=number(0.0, 1e6))
    gossip_bias_prestorm: float = attrs.field(default=0.5, validator=number(0.0, 1e6))
    gossip_bias_storm: float = attrs.field(default=0.25, validator=number(0.0, 1e6))
    sample_rate_hz: float = attrs.field(default=1.0, validator=number(1e-6, 1e9))
    sample_bytes: int = attrs.field(default=2, validator=integer(1, 16))
    # --- the scripted storm of the generated data set
    storm_start: int = attrs.field(default=0, validator=integer(0, 1_000_000))
    storm_rounds: int = attrs.field(default=0, validator=integer(0, 1_000_000))
    storm_fraction: float = attrs.field(default=0.0, validator=number(0.0, 1.0))
    storm_noise: int = attrs.field(default=2047, validator=integer(0, 2047))
    calm_noise: int = attrs.field(default=6, validator=integer(0, 2047))
    label: str = attrs.field(default="", validator=text(200))


def reputation_rules(settings: SwarmSettings, n: int) -> ReputationRules:
    """The swarm's reputation rules (:mod:`qres.robust.reputation`) from its settings.

    A ban reaches every node ``ban_propagation_rounds`` after it is decided; 0 means the
    rounds an epidemic with the profile's fan-out needs to reach ``n`` nodes,
    ``ceil(log(n) / log(fanout + 1))``.
    """
    import math

    from qres.robust.reputation import ReputationRules

    auto = max(1, math.ceil(math.log(max(n, 2)) / math.log(settings.fanout + 1)))
    return ReputationRules(
        initial=settings.rep_initial,
        reward=settings.rep_reward,
        penalty_outlier=settings.rep_penalty_outlier,
        penalty_suspect=settings.rep_penalty_suspect,
        penalty_audit=settings.rep_penalty_audit,
        ban_threshold=settings.ban_threshold,
        suspect_group_size=settings.suspect_group_size,
        suspect_rounds=settings.suspect_rounds,
        ban_delay=settings.ban_propagation_rounds or auto,
    )
