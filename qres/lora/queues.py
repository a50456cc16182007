"""Migration queues: circuits waiting to move one level up the hierarchy, under a bandwidth.

One queue per channel (context->agent, agent->swarm, swarm->domain, domain->foundation). Each
tick a channel earns ``bandwidth * destination parameters`` of credit (Q16.16, so a bandwidth
of 1e-4 on a small model still moves a circuit every few thousand ticks instead of never) and
releases waiting items, highest priority first (ties: oldest first), while the credit covers
their cost. An item whose priority reaches the emergency level bypasses the credit. A full
queue rejects the lowest-priority item (the newcomer included), and counts it.
"""

from __future__ import annotations

from typing import Any

import attrs

from qres.fixed.q16 import ONE


@attrs.frozen
class Item:
    """A circuit waiting to migrate: priority (Q16.16 autocorrelation), cost (parameters),
    the tick it was queued and its payload (whatever the destination absorbs)."""

    priority: int
    cost: int
    queued_at: int
    seq: int
    payload: Any = attrs.field(eq=False)

    def key(self) -> tuple[int, int]:
        """Release order: higher priority first, then older (lower sequence number)."""
        return (-self.priority, self.seq)


@attrs.define
class MigrationQueue:
    """One channel's queue; counters feed the health monitor."""

    bandwidth_q: int
    limit: int
    emergency_q: int
    items: list[Item] = attrs.field(factory=list)
    credit: int = 0
    offered: int = 0
    rejected: int = 0
    released: int = 0
    bypassed: int = 0
    _seq: int = 0

    def offer(self, priority: int, cost: int, tick: int, payload: Any) -> bool:
        """Queue a circuit; False (and counted) when it is the one a full queue rejects."""
        self.offered += 1
        item = Item(priority, cost, tick, self._seq, payload)
        self._seq += 1
        self.items.append(item)
        self.items.sort(key=Item.key)
        if len(self.items) > self.limit:
            dropped = self.items.pop()
            self.rejected += 1
            return dropped is not item
        return True

    def tick(self, dest_params: int) -> list[Item]:
        """Earn this tick's credit and return the items released, in release order."""
        self.credit += self.bandwidth_q * dest_params
        out: list[Item] = []
        keep: list[Item] = []
        for item in self.items:
            if item.priority >= self.emergency_q:
                out.append(item)
                self.bypassed += 1
            elif item.cost * ONE <= self.credit and not keep:
                self.credit -= item.cost * ONE
                out.append(item)
            else:
                keep.append(item)  # strict priority: nothing overtakes a waiting item
        if not self.items:
            # an idle channel does not hoard credit for a later burst
            self.credit = min(self.credit, self.bandwidth_q * dest_params)
        self.items = keep
        self.released += len(out)
        return out

    def depth(self) -> int:
        """Items waiting."""
        return len(self.items)

    def oldest_wait(self, tick: int) -> int:
        """Ticks the longest-waiting item has waited (0 when empty)."""
        return max((tick - item.queued_at for item in self.items), default=0)

    def rejection_rate(self) -> int:
        """Rejected over offered items, Q16.16 (0 before any offer)."""
        from qres.robust.aggregate import div_round

        return div_round(self.rejected * ONE, self.offered) if self.offered else 0
