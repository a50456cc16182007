"""Checks before use: a node verifies a peer's update packet in full before it aggregates it.

An audit (:mod:`qres.node.defence`) looks at a sample of the packets *after* the round that
used them; a check looks at every packet drawn (``[node] check_rate``, 1 by default) *before*
any use. As the packet arrives the receiver asks its sender for the packet's audit answer
(the opening of the base, the window it trained on and its round step's evidence,
:mod:`qres.node.audits`) and judges it as an audit does: the training re-run bit for bit and
the round step replayed with the swarm's rule. Then:

* passed: the packet may enter the aggregate of its round;
* failed: the packet is used by nobody here, and the packet with the signed answer that
  contradicts it is attributable evidence (a ban notice of kind 3 carries it, and every
  receiver re-checks it);
* not finished when its round closes (``late``): the packet is left out of that round, and
  no later round takes it (a node aggregates each round's packets at that round's close);
  the check goes on, and a failure still bans;
* unanswered for ``AUDIT_PATIENCE`` awake rounds: the packet is never used; nothing the
  sender signed shows that it received the request, so it is no fault and bans nobody.

A packet not drawn (``check_rate`` < 1) is used unchecked, through the robust rule, and may be
audited after its round at the swarm's ``audit_rate``, as before checks existed.
"""

from __future__ import annotations

import os
from typing import Any

import attrs


@attrs.define
class PendingCheck:
    """A check asked for and not answered yet."""

    slot: int  # the sender's ledger slot
    did: str
    round: int  # the packet's round
    packet: Any  # the UpdatePacket
    raw: bytes  # its bytes as received (evidence if its answer contradicts it)
    asked: int  # the checker's count of awake rounds when the request went out


def fresh_counts() -> dict:
    """The counters ``/v1/status`` reports under ``checks``: requests sent (``asked``),
    verdicts reached (``done``: ``passed`` + ``failed``), requests never answered, packets
    whose check had not finished when their round closed (``late``), and the bytes the
    checks moved (requests sent, answers received)."""
    return {
        "asked": 0,
        "done": 0,
        "passed": 0,
        "failed": 0,
        "unanswered": 0,
        "late": 0,
        "bytes_sent": 0,
        "bytes_received": 0,
    }


class Checks:
    """Which packets are drawn for a check, which are pending, which passed."""

    def __init__(self, rate: float, counts: dict):
        import numpy as np

        self.rate = float(rate)
        self.counts = counts
        # draws from the operating system's randomness: a sender cannot know which of its
        # packets will be checked when the rate is below 1
        self.rng = np.random.default_rng(int.from_bytes(os.urandom(16), "little"))
        self.pending: dict[tuple[str, int], PendingCheck] = {}
        self.drawn: set[tuple[str, int]] = set()  # (DID, round) of packets drawn for a check
        self.passed: set[tuple[str, int]] = set()  # ... whose check passed

    def draw(self) -> bool:
        """Whether the next packet is checked."""
        return self.rate >= 1.0 or (self.rate > 0.0 and self.rng.random() < self.rate)

    def ask(self, check: PendingCheck, request_bytes: int) -> None:
        """Note a request sent for ``check``."""
        key = (check.did, check.round)
        self.drawn.add(key)
        self.pending[key] = check
        self.counts["asked"] += 1
        self.counts["bytes_sent"] += request_bytes

    def answered(self, did: str, round_: int, nonce: bytes, size: int) -> PendingCheck | None:
        """The pending check an answer of ``did`` for its packet of ``round_`` (with
        ``nonce``) settles, taken off the pending list; None if it settles none."""
        check = self.pending.get((did, round_))
        if check is None or check.packet.nonce != nonce:
            return None
        del self.pending[(did, round_)]
        self.counts["bytes_received"] += size
        return check

    def verdict(self, check: PendingCheck, ok: bool) -> None:
        """Count a check's verdict; a passed packet becomes usable."""
        self.counts["done"] += 1
        self.counts["passed" if ok else "failed"] += 1
        if ok:
            self.passed.add((check.did, check.round))

    def usable(self, did: str, round_: int) -> bool:
        """May the packet of ``did`` for ``round_`` enter the aggregate? Not while it is
        drawn and its check has not passed."""
        key = (did, round_)
        return key not in self.drawn or key in self.passed

    def is_drawn(self, did: str, round_: int) -> bool:
        """Was that packet drawn for a check (then it is not audited as well)?"""
        return (did, round_) in self.drawn

    def close(self, round_: int, dids) -> list[str]:
        """Round ``round_`` is being aggregated: which of its senders ``dids`` may enter (not
        those drawn whose check has not passed); those whose check is still running are
        counted ``late``."""
        self.counts["late"] += sum(1 for d in dids if (d, round_) in self.pending)
        return [d for d in dids if self.usable(d, round_)]

    def forget(self, round_: int) -> None:
        """Drop the draws and verdicts of ``round_`` and older (closed)."""
        self.drawn = {k for k in self.drawn if k[1] > round_}
        self.passed = {k for k in self.passed if k[1] > round_}

    def drop(self, did: str) -> int:
        """Forget the pending checks of ``did`` (just banned: none of its packets will be
        used, and an answer already on its way settles nothing); how many were pending."""
        keys = [k for k in self.pending if k[0] == did]
        for key in keys:
            del self.pending[key]
        return len(keys)

    def expire(self, awake_rounds: int, patience: int) -> list[PendingCheck]:
        """The checks unanswered for ``patience`` awake rounds, taken off the pending list."""
        out = []
        for key, check in list(self.pending.items()):
            if check.asked <= awake_rounds - patience:
                del self.pending[key]
                out.append(check)
        self.counts["unanswered"] += len(out)
        return out
