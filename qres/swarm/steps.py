"""Every node's round-step chain in the simulator, and its audit (docs/trust.md section 14).

A node's packet commits to the step that produced its base: from the base of its previous
packet (or its genesis model), one aggregate per round it was awake, each of its own update
and the packets it took. The simulator keeps each node's open chain (:class:`StepLog`):
when the node sends, the chain is closed (the packet names it) and a new one starts at the
packet's base. An audit of the packet replays the closed chain with
:func:`qres.trust.roundstep.replay`, the same rule a real auditor runs on the signed packets
(:func:`qres.trust.roundstep.check_step`), and compares it with the base the node committed
to; a mismatch (base poisoning) is a failed audit. The simulator holds the rows themselves
(the packets' updates), as an auditor holds the fetched packets.

Every aggregate a node applies is also added to the node's *expected* weights, the replay's
result kept as the chain grows: an aggregate depends only on its rows and weights, so
replaying a chain gives, bit for bit, its start plus the aggregates the consensus computed
(:meth:`StepLog.replay_check` replays in full; the tests hold the two equal). Checking a
packet's step is then one comparison, cheap enough to check every packet's step (a
receiver's check, ``check_rate``) and not only the audited ones.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qres.trust.roundstep import MAX_SUBSTEPS, record_bytes, replay


class StepLog:
    """The open chain of every node: where it starts (its genesis model or the base of its
    last packet) and the aggregates applied since, and the chains the round's packets
    closed (for this round's audits)."""

    def __init__(self, weights: Any):
        import numpy as np

        self.genesis = weights.copy()
        self.start = weights.copy()
        # the replay of each open chain so far, and of each chain the round's packets closed
        self.expected = weights.copy()
        self.closed_expected: dict[int, Any] = {}
        # open chains with a sub-step whose weights are not the rule's (public reputations)
        self.wrong = np.zeros(weights.shape[0], bool)
        self.closed_wrong: dict[int, bool] = {}
        self.chains: list[list] = [[] for _ in range(weights.shape[0])]
        self.closed: dict[int, tuple] = {}
        # per node and sub-step: (round, tags of the rows taken), for a recording's records
        self.meta: list[list] = [[] for _ in range(weights.shape[0])]
        # the round of the packet each open chain starts from (-1: the genesis model), and
        # of each closed chain's
        self.prev = np.full(weights.shape[0], -1, np.int64)
        self.closed_prev: dict[int, int] = {}
        self.round = -1  # the round being played (set when the round's senders close)

    def restart(self, nodes: Any, weights: Any) -> None:
        """``nodes`` take a new genesis model (joiners get the consensus model)."""
        self.genesis[nodes] = weights[nodes]
        self.start[nodes] = weights[nodes]
        self.expected[nodes] = weights[nodes]
        self.wrong[nodes] = False
        self.prev[nodes] = -1
        for i in nodes.tolist():
            self.chains[i] = []
            self.meta[i] = []

    def full(self, nodes: Any) -> Any:
        """Nodes whose chain must be closed now (a record covers at most 64 rounds: such a
        node sends this round whatever its energy rule says)."""
        import numpy as np

        return np.array([len(self.chains[i]) >= MAX_SUBSTEPS - 1 for i in nodes.tolist()], bool)

    def close(self, nodes: Any, bases: Any, round_: int = -1) -> None:
        """The round's senders commit to their chains; new chains start at their bases."""
        self.closed = {}
        self.closed_meta: dict[int, list] = {}
        self.closed_expected = {}
        self.closed_wrong = {}
        self.closed_prev = {}
        self.round = round_
        for i, base in zip(nodes.tolist(), bases, strict=True):
            self.closed_prev[i] = int(self.prev[i])
            self.prev[i] = round_
            self.closed[i] = (self.start[i].copy(), self.chains[i])
            self.closed_meta[i] = self.meta[i]
            self.closed_expected[i] = self.expected[i].copy()
            self.closed_wrong[i] = bool(self.wrong[i])
            self.wrong[i] = False
            self.start[i] = base
            self.expected[i] = base
            self.chains[i] = []
            self.meta[i] = []

    def add(self, node: int, own: Any, rows: Any, weights: Any, tags: Any = None) -> None:
        """One aggregate the node applied: its own update, the updates it took (``tags``:
        which message each row came from), the weights the rule received (None when
        unweighted)."""
        self.chains[node].append((own.copy(), rows.copy(), weights))
        self.meta[node].append((self.round, None if tags is None else tags.copy()))

    def misweighted(self, node: int) -> None:
        """The node's last sub-step gave the rule weights other than the public
        reputations of its round (a checker compares the record's weights with them)."""
        self.wrong[node] = True

    def applied(self, nodes: Any, steps: Any) -> None:
        """``nodes`` applied ``steps`` (the aggregates of their last :meth:`add`, or their
        own updates when they took nothing): the replay of their chains moves with them."""
        from qres.fixed.q16 import sat_add

        self.expected[nodes] = sat_add(self.expected[nodes], steps)

    def evidence_bytes(self, node: int, packet_bytes: int) -> int:
        """Bytes an audited node hands over for its closed chain: the record
        (:func:`qres.trust.roundstep.record_bytes`), its previous packet and every input
        packet (counted in full: an auditor, a random peer, rarely holds them already)."""
        start, chain = self.closed[node]
        d = start.shape[0]
        inputs = [int(rows.shape[0]) for _, rows, _ in chain]
        return record_bytes(d, inputs) + packet_bytes * (1 + sum(inputs))

    def evidence(self, node: int) -> tuple[int, int, Any]:
        """What a checker of the node's closed chain needs besides the packet: the record's
        bytes, the round of the previous packet (its base is the chain's start; -1 for the
        genesis model, which everyone holds) and the tags of the input packets, in order.
        A checker fetches only the packets it does not hold."""
        import numpy as np

        start, chain = self.closed[node]
        d = start.shape[0]
        record = record_bytes(d, [int(rows.shape[0]) for _, rows, _ in chain])
        tags = [t for _, t in self.closed_meta[node] if t is not None and t.shape[0]]
        inputs = np.concatenate(tags).astype(np.int64) if tags else np.zeros(0, np.int64)
        return record, self.closed_prev[node], inputs

    def check(self, nodes: Any, bases: Any, *_rule: Any) -> Any:
        """True where replaying the node's closed chain gives the base it committed to (the
        replay kept as the chain grew; :meth:`replay_check` gives the same answer and takes
        the aggregation rule, which is accepted here and not needed)."""
        import numpy as np

        if len(nodes) == 0:
            return np.ones(0, bool)
        expected = np.stack([self.closed_expected[i] for i in nodes.tolist()])
        wrong = np.array([self.closed_wrong[i] for i in nodes.tolist()], bool)
        return (expected == np.asarray(bases, np.int32)).all(axis=1) & ~wrong

    def replay_check(
        self,
        nodes: Any,
        bases: Any,
        aggregate: Callable[[Any, Any], Any],
        many: Callable[[list, list], list] | None = None,
    ) -> Any:
        """True where replaying the node's closed chain in full (every aggregate computed
        again with ``aggregate``) gives the base it committed to.

        ``many`` (optional) computes ``aggregate`` of many ``(rows, weights)`` at once (the
        rule's batch path): every aggregate of every chain is computed first, together, and
        the replays take them in order. An aggregate depends only on its own rows and
        weights, so the replays are the same."""
        import numpy as np

        chains = [self.closed[i] for i in nodes.tolist()]
        if many is not None:
            rows, weights = [], []
            for _, chain in chains:
                for own, inputs, w in chain:
                    if inputs.shape[0]:
                        rows.append(np.concatenate([own[None, :], inputs]).astype(np.int32))
                        weights.append(w)
            done = iter(many(rows, weights))

            def aggregate(_rows: Any, _weights: Any) -> Any:
                return next(done)

        ok = np.ones(len(nodes), bool)
        for k, ((start, chain), base) in enumerate(zip(chains, bases, strict=True)):
            ok[k] = np.array_equal(replay(start, chain, aggregate), base)
        return ok & ~np.array([self.closed_wrong[i] for i in nodes.tolist()], bool)
