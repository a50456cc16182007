"""A worker's bounded priority queue, ordered by the requester's standing and the age of the
request, so a low-standing client waits longer but never forever."""

from __future__ import annotations

import time

import attrs


@attrs.define
class Queued:
    """A request waiting for the backend."""

    id: str
    did: str
    body: dict
    standing: float
    arrived: float
    peer: str


class StandingQueue:
    """At most ``size`` requests; :meth:`pop` takes the one with the highest priority
    ``standing + waited_seconds / aging_s`` (ties: the oldest). ``standing`` is the
    requester's reputation at the worker, in [0, 1]; so after ``aging_s`` seconds any request
    outranks a newly arrived one from the best client."""

    def __init__(self, size: int, aging_s: float, clock=time.monotonic):
        self.size, self.aging_s, self.clock = size, aging_s, clock
        self.items: list[Queued] = []

    def __len__(self) -> int:
        return len(self.items)

    def full(self) -> bool:
        """Whether a new request would be turned away."""
        return len(self.items) >= self.size

    def push(self, item: Queued) -> bool:
        """Queue ``item``; False (and nothing kept) when full."""
        if self.full():
            return False
        self.items.append(item)
        return True

    def priority(self, item: Queued, now: float) -> float:
        """The documented priority of ``item`` at time ``now``."""
        return item.standing + (now - item.arrived) / self.aging_s

    def pop(self) -> Queued | None:
        """The highest-priority request (None if empty)."""
        if not self.items:
            return None
        now = self.clock()
        best = max(
            range(len(self.items)),
            key=lambda i: (self.priority(self.items[i], now), -self.items[i].arrived),
        )
        return self.items.pop(best)
