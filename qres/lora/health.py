"""The hierarchy's health monitor: HEALTHY, or DEGRADED with the reasons, from its counters."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import attrs

from qres.fixed.q16 import ONE

HEALTHY = "HEALTHY"
DEGRADED = "DEGRADED"


@attrs.frozen
class LayerVitals:
    """One layer's numbers for the monitor: its update spread (Q16.16), how many of its
    updates moved a parameter, and how many resonance amplified and damped."""

    role: str
    spread_q: int
    updates: int
    amplified: int
    damped: int


@attrs.frozen
class QueueVitals:
    """One channel's numbers: depth, the oldest item's wait and the rejection rate (Q16.16)."""

    channel: str
    depth: int
    oldest_wait: int
    rejection_q: int


@attrs.frozen
class HealthReport:
    """The verdict and, when DEGRADED, one reason per broken limit (sorted, stable text)."""

    status: str
    reasons: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return {"status": self.status, "reasons": list(self.reasons)}


def assess(
    layers: Sequence[LayerVitals], queues: Sequence[QueueVitals], limits: Mapping[str, int]
) -> HealthReport:
    """Check every layer and queue against ``limits`` (keys: ``entropy_low``,
    ``entropy_high``, ``max_amplified`` in Q16.16; ``max_queue_depth``, ``max_wait`` in items
    and ticks; ``max_rejection`` in Q16.16; optional ``warmup``: layers with fewer updates
    are not judged)."""
    reasons: list[str] = []
    for v in layers:
        if v.updates == 0 or v.updates < limits.get("warmup", 0):
            continue  # a rate or a spread from a handful of updates is noise, not a state
        if v.spread_q < limits["entropy_low"]:
            reasons.append(
                f"{v.role}: update entropy ratio {v.spread_q / ONE:.3f} below "
                f"{limits['entropy_low'] / ONE:.3f} (updates collapse onto few parameters)"
            )
        elif v.spread_q > limits["entropy_high"]:
            reasons.append(
                f"{v.role}: update entropy ratio {v.spread_q / ONE:.3f} above "
                f"{limits['entropy_high'] / ONE:.3f} (updates are diffuse noise)"
            )
        if v.amplified * ONE > limits["max_amplified"] * v.updates:
            reasons.append(
                f"{v.role}: resonance amplified {v.amplified} of {v.updates} updates "
                "(runaway feedback)"
            )
    for q in queues:
        if q.depth > limits["max_queue_depth"]:
            reasons.append(f"{q.channel}: queue depth {q.depth} > {limits['max_queue_depth']}")
        if q.oldest_wait > limits["max_wait"]:
            reasons.append(
                f"{q.channel}: an item has waited {q.oldest_wait} ticks > {limits['max_wait']}"
            )
        if q.rejection_q > limits["max_rejection"]:
            reasons.append(
                f"{q.channel}: rejection rate {q.rejection_q / ONE:.3f} > "
                f"{limits['max_rejection'] / ONE:.3f}"
            )
    return HealthReport(DEGRADED if reasons else HEALTHY, tuple(reasons))
