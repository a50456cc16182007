"""Reputations: the one mechanism by which qres weighs and excludes peers.

The aggregators' reputation rules (``reputation-weighted``, ``adaptive``), the aggregator
bench, the swarm simulator and a real node keep reputations the same way: a :class:`Ledger`
applies one set of :class:`ReputationRules` to the evidence its owner gathers. What counts as
evidence differs by owner (the tests are in :mod:`qres.robust.evidence`); what evidence does
to a reputation does not. The rules (docs/aggregators.md, "Reputations"):

* A reputation is a Q16.16 integer in [0, 1] (``0..REP_ONE``) per node, starting at
  ``initial``. Every setting is a fraction of 1 rounded once to Q16.16, ``floor(v * 2**16 +
  1/2)``, so the arithmetic is integer and the same on every machine and in any node order.
* Evidence moves it: ``reward`` for a clean, useful update; ``penalty_outlier``,
  ``penalty_suspect`` or ``penalty_audit`` for a statistical outlier, a member of a suspected
  coordinated group, a failed audit. Each change is clamped to [0, 1].
* Bans need attributable evidence (docs/defence.md): only :meth:`Ledger.fault` (a failed
  audit, a bad signature, an equivocation, a failed proof: a signed, checkable wrong) marks a
  node, and a marked node whose reputation is below ``ban_threshold`` (or 0) is banned.
  Statistical suspicion (outliers) only lowers a reputation, which rewards raise again: it
  narrows what a node may contribute and never bans. Similarity costs nothing at all
  (copying an honest node must not hurt it): a node suspected of coordination for
  ``suspect_rounds`` consecutive rounds is due for a sure audit (:meth:`Ledger.suspects`),
  which convicts a forger and clears an original. A banned node's reputation is 0; everyone
  knows of a ban ``ban_delay`` rounds after it was decided (the evidence travels with the
  gossip).

:class:`ReputationTracker` is the ledger with the aggregators' evidence built in: each round
it flags far and coordinated rows against a robust reference and rewards the rest.
"""

from __future__ import annotations

from fractions import Fraction
from typing import TYPE_CHECKING, Any

import attrs

from qres.kernel.config import integer, number
from qres.kernel.errors import QresError
from qres.kinds.aggregator import REP_ONE, check_updates

if TYPE_CHECKING:
    import numpy as np

__all__ = ["REP_ONE", "Ledger", "ReputationRules", "ReputationTracker", "to_rep"]


def to_rep(fraction: float) -> int:
    """A fraction of 1 as a Q16.16 reputation integer, rounded half up (fractions >= 0)."""
    return int(fraction * REP_ONE + 0.5)


@attrs.frozen
class ReputationRules:
    """The settings of the reputation rules (fractions of 1; see the module docstring)."""

    #: Reputation of a node never seen before.
    initial: float = attrs.field(default=1.0, validator=number(0.0, 1.0))
    #: Gain for a clean, useful update.
    reward: float = attrs.field(default=0.05, validator=number(0.0, 1.0))
    #: Loss for a statistical outlier.
    penalty_outlier: float = attrs.field(default=0.25, validator=number(0.0, 1.0))
    #: Loss for a member of a suspected coordinated group, for owners that cannot audit (the
    #: swarm audits suspects instead, so that copying never costs the original).
    penalty_suspect: float = attrs.field(default=0.25, validator=number(0.0, 1.0))
    #: Loss for an attributable fault (a failed audit: a signed false claim).
    penalty_audit: float = attrs.field(default=1.0, validator=number(0.0, 1.0))
    #: A node with an attributable fault whose reputation is below this (or 0) is banned.
    ban_threshold: float = attrs.field(default=0.0, validator=number(0.0, 1.0))
    #: Fewest rows alike that make a coordinated group (``k + 1`` of the tightness test).
    suspect_group_size: int = attrs.field(default=5, validator=integer(2, 1 << 30))
    #: Consecutive rounds of suspicion after which a node is due for a sure audit.
    suspect_rounds: int = attrs.field(default=3, validator=integer(1, 1 << 30))
    #: Rounds from a ban's decision until every node knows it.
    ban_delay: int = attrs.field(default=0, validator=integer(0, 1 << 30))


class Ledger:
    """Reputations, bans and the suspect list of ``n`` nodes (arrays indexed by node id),
    under one set of :class:`ReputationRules`."""

    def __init__(self, n: int, rules: ReputationRules | None = None):
        import numpy as np

        if n < 1:
            raise QresError(f"reputation ledger: n={n}; track at least one node")
        self.rules = rules = ReputationRules() if rules is None else rules
        self.reward = to_rep(rules.reward)
        self.pen_outlier = to_rep(rules.penalty_outlier)
        self.pen_suspect = to_rep(rules.penalty_suspect)
        self.pen_audit = to_rep(rules.penalty_audit)
        self.ban_level = to_rep(rules.ban_threshold)
        self.delay = rules.ban_delay
        self.rep = np.full(n, to_rep(rules.initial), np.int64)
        self.banned_at = np.full(n, -1, np.int64)  # round the ban was decided, -1: never
        self.effective_at = np.full(n, -1, np.int64)  # round from which everyone knows it
        self.suspect_streak = np.zeros(n, np.int32)
        self.cleared = np.zeros(n, bool)  # passed an audit during the current suspicion
        self.faulted = np.zeros(n, bool)  # committed an attributable fault

    def fraction(self) -> Any:
        """Reputations as floats in [0, 1]."""
        return self.rep / REP_ONE

    def as_weights(self) -> np.ndarray:
        """The reputations as the ``weights`` argument of the reputation rules (int64)."""
        return self.rep.copy()

    def adjust(self, nodes: Any, delta: int) -> None:
        """Add ``delta`` (Q16.16) to the reputation of ``nodes``, clamped to [0, 1]."""
        import numpy as np

        if len(nodes):
            self.rep[nodes] = np.clip(self.rep[nodes] + delta, 0, REP_ONE)

    def banned(self) -> Any:
        """Nodes banned (decided), whether or not the ban has reached everyone yet."""
        return self.banned_at >= 0

    def banned_known(self, r: int) -> Any:
        """Nodes whose ban every node knows by round ``r``."""
        return (self.effective_at >= 0) & (self.effective_at <= r)

    def ban(self, nodes: Any, r: int) -> Any:
        """Ban ``nodes`` (not already banned) in round ``r``; returns the newly banned."""
        import numpy as np

        nodes = np.asarray(nodes, dtype=np.int64)
        new = nodes[self.banned_at[nodes] < 0]
        self.banned_at[new] = r
        self.effective_at[new] = r + self.delay
        self.rep[new] = 0
        return new

    def record_fault(self, nodes: Any) -> None:
        """Record an attributable fault of ``nodes`` (a failed audit, a signed packet with a
        bad proof or point, an equivocation): they lose ``penalty_audit`` and become
        bannable; the next :meth:`ban_low` bans those below the threshold."""
        import numpy as np

        nodes = np.asarray(nodes, dtype=np.int64)
        self.faulted[nodes] = True
        self.adjust(nodes, -self.pen_audit)

    def fault(self, nodes: Any, r: int) -> Any:
        """:meth:`record_fault`, then ban at once (round ``r``); returns the newly banned."""
        self.record_fault(nodes)
        return self.ban_low(r)

    def ban_low(self, r: int) -> Any:
        """Ban every node with an attributable fault whose reputation is below the threshold
        (or 0); returns them. Statistical penalties alone never ban."""
        import numpy as np

        low = (self.rep < self.ban_level) | (self.rep == 0)
        return self.ban(np.flatnonzero(low & self.faulted & (self.banned_at < 0)), r)

    def suspects(self, flagged: Any, audited_ok: Any, r: int, senders: int | None = None) -> Any:
        """Update the suspect list with this round's coordination flags (bool ``(n,)``, for
        every node that sent) and audit passes; returns the nodes due for a sure audit: those
        suspect for ``suspect_rounds`` consecutive rounds and not cleared by a passed audit
        since. Nobody is banned or penalised here: similarity is not evidence (an original
        looks exactly like its copiers); the audit that follows is. ``r`` and ``senders``
        are accepted for callers of the earlier signature and not needed."""
        import numpy as np

        del r, senders
        self.suspect_streak = np.where(flagged, self.suspect_streak + 1, 0).astype(np.int32)
        self.cleared = np.where(flagged, self.cleared | audited_ok, False)
        due = flagged & (self.suspect_streak >= self.rules.suspect_rounds) & ~self.cleared
        return np.flatnonzero(due & (self.banned_at < 0))


class ReputationTracker:
    """Per-node reputations for the reputation rules (``reputation-weighted``, ``adaptive``),
    kept from round to round from how each node's update sits among the others.

    A :class:`Ledger` whose evidence is :func:`qres.robust.evidence.far_and_grouped`: each
    round (:meth:`observe`) the rows far from a robust reference aggregate lose ``penalty``;
    members of a coordinated group (near-identical rows) neither lose nor gain: likeness is no
    evidence (an honest node and its copiers, or honest nodes whose training gives the same
    update, look alike), and copies earn no reputation by being many; the others gain
    ``reward`` (docs/aggregators.md, "Reputations"). Nodes absent from a round (``active``
    False) keep their value. The tracker never bans: the rule it feeds weighs distrusted
    nodes down, and bounds what trusted ones may do.
    """

    def __init__(
        self,
        n: int,
        *,
        reward: float = 0.05,
        penalty: float = 0.25,
        far: float = 32.0,
        group: int = 5,
        near_bits: int = 10,
        start: float = 1.0,
    ):
        if n < 1:
            raise QresError(f"ReputationTracker: n={n}; track at least one node")
        for name, value in (("reward", reward), ("penalty", penalty), ("start", start)):
            if not 0.0 <= value <= 1.0:
                raise QresError(f"ReputationTracker: {name}={value} must lie in [0, 1]")
        if not far > 0 or group < 2 or not 0 <= near_bits <= 30:
            raise QresError(
                f"ReputationTracker: need far > 0, group >= 2, near_bits in [0, 30]; got "
                f"{far}, {group}, {near_bits}"
            )
        rules = ReputationRules(initial=start, reward=reward, penalty_outlier=penalty)
        self.ledger = Ledger(n, rules)
        self.group = group
        self.near_bits = near_bits
        self._far2 = Fraction(far) ** 2

    @property
    def reputations(self) -> np.ndarray:
        """The reputations (int64 Q16.16, indexed by node; the ledger's own array)."""
        return self.ledger.rep

    def observe(self, updates: Any, reference: Any, active: Any = None) -> np.ndarray:
        """Update the reputations from one round: ``updates`` ``(m, d)`` int32 rows of the
        active nodes (in node order), ``reference`` the ``(d,)`` int32 robust aggregate.
        Returns the flags of the active nodes (bool ``(m,)``)."""
        import numpy as np

        x = check_updates(updates, "reputation tracker")
        n = self.ledger.rep.shape[0]
        act = np.ones(n, bool) if active is None else np.asarray(active, bool).reshape(-1)
        if act.shape[0] != n or int(act.sum()) != x.shape[0]:
            raise QresError(
                f"ReputationTracker: {x.shape[0]} updates for {int(act.sum())} active of {n} "
                "nodes; pass one row per active node"
            )
        ref = np.asarray(reference)
        if ref.shape != (x.shape[1],) or ref.dtype != np.int32:
            raise QresError(
                f"ReputationTracker: reference must be ({x.shape[1]},) int32, got "
                f"{ref.shape} {ref.dtype}"
            )
        from qres.robust.evidence import far_and_grouped

        far, grouped = far_and_grouped(x, ref, self._far2, self.group, self.near_bits)
        idx = np.flatnonzero(act)
        self.ledger.adjust(idx[far], -self.ledger.pen_outlier)
        self.ledger.adjust(idx[~far & ~grouped], self.ledger.reward)
        return far | grouped

    def flags(self, x: Any, reference: Any) -> Any:
        """Which rows are far from ``reference`` or members of a coordinated group (bool)."""
        from qres.robust.evidence import far_or_grouped

        return far_or_grouped(x, reference, self._far2, self.group, self.near_bits)

    def as_weights(self) -> np.ndarray:
        """The reputations as the ``weights`` argument of the reputation rules (int64)."""
        return self.ledger.as_weights()
