"""Per-request metrics: percentiles for people and ``--json``, Prometheus text for scrapers."""

from __future__ import annotations

import collections
import math
import threading
from typing import Any

import attrs

#: Requests whose figures are kept for the percentiles (the newest).
WINDOW = 10_000


@attrs.frozen
class RequestRecord:
    """One request: seconds queued and in total, tokens generated, cache hit, outcome."""

    queue_s: float
    latency_s: float
    tokens: int
    cache_hit: bool
    outcome: str  # "ok", "error", "rejected", "disconnected"

    @property
    def tokens_per_s(self) -> float:
        """Generated tokens per second of backend time (queue time excluded)."""
        busy = self.latency_s - self.queue_s
        return self.tokens / busy if busy > 0 and self.tokens else 0.0


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0..100) by the nearest-rank method; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


class Metrics:
    """Records requests; summarises them and exports Prometheus counters and histograms."""

    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self._lock = threading.Lock()
        self._records: collections.deque[RequestRecord] = collections.deque(maxlen=WINDOW)
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "qres_llm_requests", "Requests by outcome", ["outcome"], registry=self.registry
        )
        self.cache_hits = Counter("qres_llm_cache_hits", "Cache hits", registry=self.registry)
        self.tokens = Counter("qres_llm_tokens", "Tokens generated", registry=self.registry)
        self.latency = Histogram(
            "qres_llm_latency_seconds", "Request latency", registry=self.registry
        )
        self.queue = Histogram(
            "qres_llm_queue_seconds", "Time waiting for the backend", registry=self.registry
        )
        self.depth = Gauge("qres_llm_queue_depth", "Requests waiting", registry=self.registry)

    def record(self, record: RequestRecord) -> None:
        """Add one finished request."""
        with self._lock:
            self._records.append(record)
        self.requests.labels(record.outcome).inc()
        if record.cache_hit:
            self.cache_hits.inc()
        self.tokens.inc(record.tokens)
        self.latency.observe(record.latency_s)
        self.queue.observe(record.queue_s)

    def summary(self) -> dict[str, Any]:
        """Counts and p50/p95/p99 of queue time, latency (ms) and tokens/s."""
        with self._lock:
            records = list(self._records)
        done = [r for r in records if r.outcome == "ok"]
        generated = [r.tokens_per_s for r in done if r.tokens and not r.cache_hit]
        out: dict[str, Any] = {
            "requests": len(records),
            "ok": len(done),
            "cache_hits": sum(r.cache_hit for r in done),
        }
        for name, values in (
            ("queue_ms", [1000 * r.queue_s for r in done]),
            ("latency_ms", [1000 * r.latency_s for r in done]),
            ("tokens_per_s", generated),
        ):
            out[name] = {f"p{q}": percentile(values, q) for q in (50, 95, 99)}
        return out

    def prometheus(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        from prometheus_client import generate_latest

        return generate_latest(self.registry)
