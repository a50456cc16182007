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
        self.genesis = weights.copy()
        self.start = weights.copy()
        self.chains: list[list] = [[] for _ in range(weights.shape[0])]
        self.closed: dict[int, tuple] = {}
        # per node and sub-step: (round, tags of the rows taken), for a recording's records
        self.meta: list[list] = [[] for _ in range(weights.shape[0])]
        self.round = -1  # the round being played (set when the round's senders close)

    def restart(self, nodes: Any, weights: Any) -> None:
        """``nodes`` take a new genesis model (joiners get the consensus model)."""
        self.genesis[nodes] = weights[nodes]
        self.start[nodes] = weights[nodes]
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
        self.round = round_
        for i, base in zip(nodes.tolist(), bases, strict=True):
            self.closed[i] = (self.start[i].copy(), self.chains[i])
            self.closed_meta[i] = self.meta[i]
            self.start[i] = base
            self.chains[i] = []
            self.meta[i] = []

    def add(self, node: int, own: Any, rows: Any, weights: Any, tags: Any = None) -> None:
        """One aggregate the node applied: its own update, the updates it took (``tags``:
        which message each row came from), the weights the rule received (None when
        unweighted)."""
        self.chains[node].append((own.copy(), rows.copy(), weights))
        self.meta[node].append((self.round, None if tags is None else tags.copy()))

    def evidence_bytes(self, node: int, packet_bytes: int) -> int:
        """Bytes an audited node hands over for its closed chain: the record
        (:func:`qres.trust.roundstep.record_bytes`), its previous packet and every input
        packet (counted in full: an auditor, a random peer, rarely holds them already)."""
        start, chain = self.closed[node]
        d = start.shape[0]
        inputs = [int(rows.shape[0]) for _, rows, _ in chain]
        return record_bytes(d, inputs) + packet_bytes * (1 + sum(inputs))

    def check(
        self,
        nodes: Any,
        bases: Any,
        aggregate: Callable[[Any, Any], Any],
        many: Callable[[list, list], list] | None = None,
    ) -> Any:
        """True where replaying the node's closed chain gives the base it committed to.

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
        return ok
