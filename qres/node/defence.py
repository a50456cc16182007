"""A node's defence: the simulator's round judgement (docs/defence.md) on one node's view.

Each rule is the shared one, not a copy: the receiver's screen (:func:`qres.swarm.gossip.screen`),
the profile's aggregator applied by :func:`qres.robust.combine.robust_aggregate` with the senders'
reputations when the rule reads them, robust outliers and coordination
(:mod:`qres.robust.evidence`), suspects due for a sure audit (:meth:`Ledger.suspects`), and the
ledger's rewards, penalties, faults and bans (:class:`qres.robust.reputation.Ledger`).

Where a node's view differs from the simulator's omniscient one:

* the statistics of a round are taken over what this node received plus its own update;
* a sender's regime is unknown to its auditors, so the storm audit rate applies while the
  auditing node itself is in Storm (storms are regional);
* an audit is a real exchange (:mod:`qres.node.audits`): an answer that contradicts its packet
  is a fault, an audit left unanswered for ``AUDIT_PATIENCE`` awake rounds costs
  ``rep_penalty_outlier``, makes the next audit of the peer sure and leaves its updates out of
  the aggregate until one of its audits passes (it cannot prove them, so they move nothing);
  never a fault, for nothing the peer signed shows that it received the request (a dropped
  connection or a broker that drops messages would otherwise get honest nodes banned);
* picks are drawn from the operating system's randomness, unpredictable to the audited.
"""

from __future__ import annotations

import os
from typing import Any

import attrs

from qres.kinds.aggregator import REP_ONE

#: Rounds an auditor waits for an answer before counting the audit unanswered.
AUDIT_PATIENCE = 2


@attrs.define
class PendingAudit:
    """An audit this node asked for and has not had answered yet."""

    slot: int
    did: str
    round: int  # the audited packet's round
    packet: Any  # the audited UpdatePacket
    raw: bytes  # its bytes as received (evidence if the answer contradicts it)
    asked: int  # the auditor's count of awake rounds when the request went out


@attrs.frozen
class Verdicts:
    """What the judgement of one round decided."""

    outliers: Any  # ledger slots penalised as robust outliers
    rewarded: Any  # ledger slots rewarded
    audit: list  # indices (into the round's rows) to audit


class Defence:
    """One node's judge: screens, combines, scores and picks audits under the swarm's rules."""

    def __init__(self, swarm, ledger, aggregator):
        import numpy as np

        from qres.robust.combine import takes_reputation

        self.swarm = swarm
        self.ledger = ledger
        self.aggregator = aggregator
        self.pass_reputation = aggregator is not None and takes_reputation(aggregator)
        seed = int.from_bytes(os.urandom(16), "little")
        self.rng = np.random.default_rng(seed)  # audit picks: unpredictable to the audited
        self.tight_rng = np.random.default_rng(seed ^ 0x71687)
        self.audited_ok: set[int] = set()  # slots that passed an audit since the last round
        self.due: set[int] = set()  # slots due for a sure audit this round
        self.unproven: set[int] = set()  # slots with an audit unanswered since the last pass

    # --- consensus -----------------------------------------------------------------------

    def screen(self, weights, windows, rows):
        """The receiver's test of each row on its own window: ``(kept, gain)``, gain being
        how much the row lowers this node's error (sample units; > 0 helps)."""
        import numpy as np

        from qres.swarm.gossip import screen

        s = self.swarm
        m = rows.shape[0]
        if m == 0:
            return np.zeros(0, bool), np.zeros(0)
        base = np.repeat(np.asarray(weights, np.int64)[None, :], m, axis=0)
        xw = np.repeat(windows, m, axis=0)
        kept, before, after = screen(base, xw, rows, s.order, s.eval_samples, s.accept_tolerance)
        return kept, before - after

    def combine(self, own, rows, slots):
        """The round's update (int32): the profile's aggregator over this node's own update
        (row 0, reputation 1) and the kept rows (their senders' reputations when the rule
        reads them, :meth:`weights`); the own update alone when nothing was kept."""
        import numpy as np

        if rows.shape[0] == 0:
            return np.asarray(own, np.int32)
        return self.rule(np.concatenate([own[None, :], rows]), self.weights(slots))

    def weights(self, slots):
        """The Q16.16 weights the rule receives for rows from ``slots`` (own row first, at
        1), or None when the rule does not read reputations or no row was kept."""
        import numpy as np

        if not self.pass_reputation or len(slots) == 0:
            return None
        return np.concatenate([[REP_ONE], self.ledger.rep[slots]]).astype(np.int64)

    def rule(self, rows, weights):
        """The swarm's aggregate of ``rows`` (own first) as int32: what this node applies and
        what an auditor replays (:func:`qres.trust.roundstep.replay`); the plain mean, cut
        toward zero, without an aggregator."""
        import numpy as np

        from qres.robust.combine import robust_aggregate

        if self.aggregator is None:
            return np.asarray(rows, np.int64).mean(0).astype(np.int32)
        out = robust_aggregate(self.aggregator, rows, self.swarm.assumed_byzantine, weights)
        return np.asarray(out, np.int32)

    # --- judgement -----------------------------------------------------------------------

    def judge(self, own, rows, slots, gain, storm: bool) -> Verdicts:
        """Penalise robust outliers, note coordinated groups (sure audits after
        ``suspect_rounds``), reward the inliers whose update helps this node, and pick the
        rows to audit. ``rows``: the round's updates of unbanned senders (ledger ``slots``)."""
        import numpy as np

        from qres.robust.evidence import robust_outliers, tightness, update_statistic

        s, ledger = self.swarm, self.ledger
        m = rows.shape[0]
        n = ledger.rep.shape[0]
        out = np.zeros(0, np.int64)
        flagged = np.zeros(n, bool)
        watched = np.zeros(m, bool)
        if m >= 2:  # with this node's own row, at least three to judge
            x = np.concatenate([own[None, :], rows])
            stat = update_statistic(x)
            out_rows = robust_outliers(stat, s.grubbs_alpha)
            out = slots[out_rows[out_rows > 0] - 1]
            ledger.adjust(out, -ledger.pen_outlier)
            k = min(s.suspect_group_size - 1, x.shape[0] - 1)
            t = tightness(x, max(k, 1), self.tight_rng)[1:]
            flagged[slots[t < s.suspect_tightness]] = True
            watched = t < s.audit_tightness
        audited_ok = np.zeros(n, bool)
        audited_ok[sorted(self.audited_ok)] = True
        self.audited_ok = set()
        sure = set(self.due)
        self.due = set(ledger.suspects(flagged, audited_ok, 0).tolist())
        useful = np.zeros(n, bool)
        useful[slots[gain > 0]] = True
        useful[out] = False
        ledger.adjust(np.flatnonzero(useful & ~ledger.banned()), ledger.reward)
        p = np.full(m, s.audit_rate_storm if storm else s.audit_rate)
        p = np.where(watched, np.maximum(p, s.audit_suspect_rate), p)
        p = np.where(np.isin(slots, list(sure)), 1.0, p)
        picked = np.flatnonzero(self.rng.random(m) < p).tolist()
        return Verdicts(out, np.flatnonzero(useful), picked)

    def passed(self, slot: int) -> None:
        """An audit of ``slot`` checked out (clears a suspicion and lets its updates count)."""
        self.audited_ok.add(slot)
        self.unproven.discard(slot)

    def unanswered(self, slot: int) -> None:
        """An audit of ``slot`` went unanswered: a penalty, its updates left out of the
        aggregate until an audit passes, a sure audit next; never a fault."""
        self.ledger.adjust([slot], -self.ledger.pen_outlier)
        self.due.add(slot)  # ask again, surely
        self.unproven.add(slot)

    def counted(self, slots):
        """Which of ``slots`` may enter the aggregate: not those with an audit unanswered."""
        import numpy as np

        return ~np.isin(np.asarray(slots, np.int64), sorted(self.unproven))
