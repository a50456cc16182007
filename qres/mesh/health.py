"""A worker's health figure and its rolling service statistics.

``health = (1 - cpu) * (1 - memory) * 1 / (1 + load / cores) * (1 - queue / queue_size)``,
each factor clamped to [0, 1], with ``cpu`` the CPU busy fraction since the last reading and
``memory`` the used fraction of RAM (``psutil``), ``load`` the 1-minute load average
(``os.getloadavg``) and ``cores`` the logical CPUs. 1 is an idle machine with an empty
queue; 0 a machine that is saturated or a queue that is full.
"""

from __future__ import annotations

import os
from collections import deque

import attrs


def _clamp(x: float) -> float:
    return min(1.0, max(0.0, x))


def health(queue: int, queue_size: int) -> float:
    """The health figure of the module docstring, rounded to 4 decimals."""
    import psutil

    cpu = psutil.cpu_percent(interval=None) / 100
    memory = psutil.virtual_memory().percent / 100
    cores = psutil.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except OSError:  # not every platform has a load average
        load = 0.0
    figure = (1 - _clamp(cpu)) * (1 - _clamp(memory)) / (1 + load / cores)
    return round(_clamp(figure * (1 - _clamp(queue / queue_size))), 4)


@attrs.define
class ServiceStats:
    """Requests and tokens served, and latency and success of the last ``window`` requests."""

    window: int = 256
    tokens: int = 0
    requests: int = 0
    latencies: deque = attrs.field(factory=lambda: deque(maxlen=256))
    outcomes: deque = attrs.field(factory=lambda: deque(maxlen=256))

    def record(self, ms: float, ok: bool, tokens: int) -> None:
        """One request's latency, whether it succeeded and its tokens."""
        self.latencies.append(ms)
        self.outcomes.append(ok)
        self.tokens += tokens
        self.requests += 1

    def p50_ms(self) -> float:
        """Median latency of the window (0 before any request)."""
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        return round(ordered[len(ordered) // 2], 3)

    def success_rate(self) -> float:
        """Fraction of the window's requests that succeeded (1 before any request)."""
        return round(sum(self.outcomes) / len(self.outcomes), 4) if self.outcomes else 1.0
