"""The ``[lora]`` profile table: every number of the adapter hierarchy, typed and validated.

Per-role lists are in hierarchy order (foundation, domain, swarm, agent, context); per-channel
lists in migration order (context->agent, agent->swarm, swarm->domain, domain->foundation).
Fractions and rates are read as reals and used as Q16.16 (:meth:`HierarchySettings.q`).
"""

from __future__ import annotations

import math
from typing import Any

import attrs

from qres.fixed.q16 import from_float
from qres.kernel.config import InvalidSetting, integer, number, one_of
from qres.kinds.lora import ROLES

#: Migration channels, from fast and local to slow and shared.
CHANNELS = tuple(f"{ROLES[i]}->{ROLES[i - 1]}" for i in range(len(ROLES) - 1, 0, -1))


def _numbers(count: int, lo: float, hi: float, *, open_hi: bool = False, ints: bool = False):
    kind = "integers" if ints else "numbers"
    bracket = ")" if open_hi else "]"
    allowed = f"a list of {count} {kind} in [{lo:g}, {hi:g}{bracket}"

    def check(_inst, attribute, value):
        ok = isinstance(value, (list, tuple)) and len(value) == count
        for v in value if ok else ():
            good = isinstance(v, int) if ints else isinstance(v, (int, float))
            good = good and not isinstance(v, bool) and math.isfinite(v)
            good = good and lo <= v and (v < hi if open_hi else v <= hi)
            ok = ok and good
        if not ok:
            raise InvalidSetting(attribute.name, value, allowed)

    return check


def _as_list(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


@attrs.frozen
class HierarchySettings:
    """Settings of the adapter hierarchy (see docs/lora.md for what each one does).

    * ``ranks``: each role's rank at models of ``reference_width`` or wider; narrower models
      scale it down in proportion (at least 1, at most the model's width).
    * ``inertia``: each role's base inertia in [0, 1).
    * ``density_k``: the interaction density at which inertia has covered tanh(1) = 76% of
      the way from its base to 1.
    * ``decay_active`` / ``decay_free``: share of its distance to the initial value a screened
      (recently active) / free parameter loses per tick.
    * ``trace_shift``: activity traces forget with weight ``2**-trace_shift`` per tick;
      ``active_level``: the trace above which a parameter is screened.
    * ``entropy_low`` / ``entropy_high``: the band of the update spread (normalised collision
      entropy) homeostasis keeps each layer in; ``threshold_step``: how far the screening
      threshold moves per tick; ``threshold_max``: its ceiling.
    * ``circuit_window``: ticks of activation history; ``circuit_lags``: lags examined;
      ``circuit_threshold``: autocorrelation that makes a pattern a circuit.
    * ``bandwidth``: per channel, the fraction of the destination's parameters it may move per
      tick; ``queue_limit``: items a channel holds; ``emergency``: the priority that bypasses
      the bandwidth; ``restoration``: share of a migrated pattern removed from its source per
      tick.
    * ``horizontal_gain`` / ``vertical_gain``: how much alignment with the swarm's direction /
      the parent layer's last update amplifies (or opposition damps) an update;
      ``amplification_cap``: the largest total factor.
    * ``max_queue_depth``, ``max_wait``, ``max_rejection``, ``max_amplified``: the health
      monitor's limits (items, ticks, fraction, fraction); ``health_warmup``: the updates a
      layer must have made before its spread and resonance rate are judged.
    * ``domains``: ``discovered`` (grouped by the signatures of their streams,
      :mod:`qres.lora.domains`) or ``declared`` (by the deployment: in the simulator, the
      recording or source each node reads).
    * ``domain_margin``, ``domain_patience``: with discovered domains, a node moves to
      another domain when that domain's prototype is nearer its running signature than its
      own domain's by the margin (a fraction), ``domain_patience`` rounds in a row
      (:class:`qres.lora.domains.Regrouping`; 0: domains stay as first discovered).
    * ``change_k``: a node's stream has *changed* when the newest window's coded cost departs
      from its running score by more than ``change_k`` times the running mean departure
      (see :mod:`qres.lora.personal`); ``bank_size``: local adapters a node keeps to restore
      when an earlier regime returns; ``block_choice``: ``signalled`` (the encoder codes each
      block with whichever candidate model, a depth or a banked adapter, spends the fewest
      bits on it, and signals its index in the stream) or ``scored`` (the depth of lowest
      running score, nothing signalled).
    """

    ranks: list[int] = attrs.field(
        default=[64, 32, 16, 8, 4], converter=_as_list, validator=_numbers(5, 1, 4096, ints=True)
    )
    reference_width: int = attrs.field(default=64, validator=integer(1, 1 << 16))
    inertia: list[float] = attrs.field(
        default=[0.99, 0.9, 0.7, 0.5, 0.1],
        converter=_as_list,
        validator=_numbers(5, 0.0, 1.0, open_hi=True),
    )
    density_k: float = attrs.field(default=1.0, validator=number(2.0**-8, 1024.0))
    decay_active: float = attrs.field(default=1.0 / 1024, validator=number(0.0, 1.0))
    decay_free: float = attrs.field(default=1.0 / 16, validator=number(0.0, 1.0))
    trace_shift: int = attrs.field(default=3, validator=integer(1, 16))
    active_level: float = attrs.field(default=0.25, validator=number(2.0**-16, 1.0))
    entropy_low: float = attrs.field(default=0.05, validator=number(0.0, 1.0))
    entropy_high: float = attrs.field(default=0.6, validator=number(0.0, 1.0))
    threshold_step: float = attrs.field(default=1.0 / 16, validator=number(2.0**-16, 1.0))
    threshold_max: float = attrs.field(default=4.0, validator=number(0.0, 256.0))
    circuit_window: int = attrs.field(default=32, validator=integer(4, 4096))
    circuit_lags: int = attrs.field(default=4, validator=integer(1, 64))
    circuit_threshold: float = attrs.field(default=0.5, validator=number(0.0, 1.0))
    bandwidth: list[float] = attrs.field(
        default=[1e-2, 2e-3, 5e-4, 1e-4], converter=_as_list, validator=_numbers(4, 1e-6, 1.0)
    )
    queue_limit: int = attrs.field(default=64, validator=integer(1, 1 << 16))
    emergency: float = attrs.field(default=0.95, validator=number(0.0, 1.0))
    restoration: float = attrs.field(default=0.25, validator=number(2.0**-16, 1.0))
    horizontal_gain: float = attrs.field(default=0.25, validator=number(0.0, 1.0))
    vertical_gain: float = attrs.field(default=0.1, validator=number(0.0, 1.0))
    amplification_cap: float = attrs.field(default=2.0, validator=number(1.0, 16.0))
    max_queue_depth: int = attrs.field(default=48, validator=integer(1, 1 << 16))
    max_wait: int = attrs.field(default=256, validator=integer(1, 1 << 30))
    max_rejection: float = attrs.field(default=0.5, validator=number(0.0, 1.0))
    max_amplified: float = attrs.field(default=0.9, validator=number(0.0, 1.0))
    health_warmup: int = attrs.field(default=16, validator=integer(0, 1 << 20))
    domains: str = attrs.field(default="discovered", validator=one_of("discovered", "declared"))
    domain_margin: float = attrs.field(default=0.25, validator=number(0.0, 0.99))
    domain_patience: int = attrs.field(default=3, validator=integer(0, 1 << 16))
    change_k: float = attrs.field(default=4.0, validator=number(1.0, 64.0))
    bank_size: int = attrs.field(default=4, validator=integer(0, 64))
    block_choice: str = attrs.field(default="signalled", validator=one_of("signalled", "scored"))

    def __attrs_post_init__(self):
        if self.entropy_low >= self.entropy_high:
            raise InvalidSetting(
                "entropy_low", self.entropy_low, f"below entropy_high ({self.entropy_high})"
            )
        if self.circuit_lags >= self.circuit_window // 2:
            raise InvalidSetting(
                "circuit_lags",
                self.circuit_lags,
                f"below circuit_window / 2 ({self.circuit_window // 2})",
            )

    @staticmethod
    def q(value: float) -> int:
        """A real setting as Q16.16 by the one rounding rule."""
        return from_float(value)

    def rank_for(self, role: str, d_out: int, d_in: int) -> int:
        """The rank of ``role`` on a d_out x d_in weight: ``ranks[role]`` scaled by
        ``min(d_out, d_in) / reference_width`` when the model is narrower, rounded up, in
        [1, min(d_out, d_in)]."""
        seed = self.ranks[ROLES.index(role)]
        width = min(d_out, d_in)
        scaled = -(-seed * min(width, self.reference_width) // self.reference_width)
        return max(1, min(width, scaled))

    def inertia_q(self, role: str) -> int:
        """The base inertia of ``role`` in Q16.16."""
        return self.q(self.inertia[ROLES.index(role)])

    def budget_params(self, role: str, d_out: int, d_in: int) -> int:
        """The parameters a channel's bandwidth is a fraction of: the destination's at its
        seed rank, ``ranks[role] * (d_in + d_out)``. A migrating component costs
        ``d_in + d_out``, so a channel moves ``bandwidth * ranks[role]`` components per
        tick on any model; measured against the scaled rank, a model 16 times narrower than
        ``reference_width`` would wait 16 times longer for every migration."""
        return self.ranks[ROLES.index(role)] * (d_in + d_out)

    def bandwidth_q(self, channel: int) -> int:
        """Channel ``channel``'s bandwidth (fraction of parameters per tick) in Q16.16, at
        least one unit so a channel never stalls for good."""
        return max(1, self.q(self.bandwidth[channel]))
