"""Admission control: per-client token buckets and a bounded priority queue for the backend."""

from __future__ import annotations

import asyncio
import collections
import heapq
import itertools
import math
import time
from collections.abc import Callable

from qres.kernel.errors import QresError

#: Most clients whose buckets are remembered; the least recently seen are forgotten first.
MAX_CLIENTS = 10_000


class TooManyRequests(QresError):
    """A client must wait: ``retry_after_s`` says how long (HTTP ``429``)."""

    def __init__(self, message: str, retry_after_s: int):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class RateLimiter:
    """One token bucket per client: ``rate_per_s`` tokens added per second, at most ``burst``;
    each request takes one. ``rate_per_s = 0`` admits everything."""

    def __init__(self, rate_per_s: float, burst: int, clock: Callable[[], float] = time.monotonic):
        self.rate, self.burst, self.clock = rate_per_s, burst, clock
        self._buckets: collections.OrderedDict[str, tuple[float, float]] = collections.OrderedDict()

    def admit(self, client: str) -> None:
        """Take a token for ``client`` or raise :class:`TooManyRequests`."""
        if not self.rate:
            return
        now = self.clock()
        tokens, then = self._buckets.pop(client, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - then) * self.rate)
        if tokens < 1.0:
            self._buckets[client] = (tokens, now)
            wait = math.ceil((1.0 - tokens) / self.rate)
            raise TooManyRequests(f"rate limit for client {client!r}; retry in {wait} s", wait)
        self._buckets[client] = (tokens - 1.0, now)
        while len(self._buckets) > MAX_CLIENTS:
            self._buckets.popitem(last=False)


class BackendQueue:
    """One request at a time on the backend; at most ``size`` waiting, served by priority
    (lower first, then arrival order). A full queue refuses at once with ``retry_after_s``."""

    def __init__(self, size: int, retry_after_s: int):
        self.size, self.retry_after_s = size, retry_after_s
        self._busy = False
        self._waiting: list[tuple[int, int, asyncio.Future]] = []
        self._order = itertools.count()

    @property
    def depth(self) -> int:
        """Requests waiting now."""
        return sum(1 for *_, f in self._waiting if not f.done())

    async def acquire(self, priority: int = 5) -> None:
        """Wait for the backend, or raise :class:`TooManyRequests` when the queue is full."""
        if not self._busy and not self._waiting:
            self._busy = True
            return
        if self.depth >= self.size:
            raise TooManyRequests(
                f"server busy: {self.size} requests already waiting; retry later",
                self.retry_after_s,
            )
        future = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (priority, next(self._order), future))
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release()  # we were handed the backend just as we gave up: pass it on
            raise

    def release(self) -> None:
        """Hand the backend to the next waiter, or mark it free."""
        while self._waiting:
            _, _, future = heapq.heappop(self._waiting)
            if not future.done():
                future.set_result(None)
                return
        self._busy = False
