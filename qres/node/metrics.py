"""The node's Prometheus metrics, computed when scraped (prometheus_client collector)."""

from __future__ import annotations

from qres.swarm.regimes import NAMES

#: Upper bounds of the reputation histogram's buckets.
REPUTATION_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


class NodeMetrics:
    """A registry of one node's metrics (each node has its own, not the global one)."""

    def __init__(self, node):
        from prometheus_client import CollectorRegistry

        self.node = node
        self.http_in = self.http_out = 0
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def http_bytes(self, raw: int, compressed: int) -> None:
        """Count one ``/v1/compress`` request's bytes."""
        self.http_in += raw
        self.http_out += compressed

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def describe(self):
        return []

    def collect(self):
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        node, st = self.node, self.node.stats
        segments = node.state.segments()
        stored = sum(s.bytes for s in segments)
        raw = sum(s.samples for s in segments) * node.spec.itemsize
        yield CounterMetricFamily(
            "qres_samples_in", "Samples read from the source", st["samples_in"]
        )
        yield CounterMetricFamily("qres_bytes_in", "Raw bytes read from the source", st["bytes_in"])
        yield GaugeMetricFamily("qres_bytes_stored", "Bytes of indexed segments", stored)
        yield GaugeMetricFamily("qres_segments", "Indexed segments", len(segments))
        yield GaugeMetricFamily(
            "qres_compression_ratio",
            "Raw over stored bytes of the segments",
            raw / stored if stored else 0,
        )
        yield CounterMetricFamily("qres_rounds", "Learning rounds completed", st["rounds"])
        yield GaugeMetricFamily("qres_round", "Current round number", max(node.round, 0))
        yield GaugeMetricFamily(
            "qres_prediction_error",
            "Prediction error before the last round's learning",
            st["error"] or 0.0,
        )
        yield CounterMetricFamily("qres_updates_sent", "Update packets sent", st["updates_sent"])
        yield CounterMetricFamily(
            "qres_updates_received", "Update packets received", st["updates_received"]
        )
        rejected = CounterMetricFamily(
            "qres_updates_rejected", "Update packets rejected, by reason", labels=["reason"]
        )
        for reason, count in sorted(st["rejected"].items()):
            rejected.add_metric([reason], count)
        yield rejected
        yield CounterMetricFamily(
            "qres_duplicates",
            "Second copies of a packet or envelope already taken (never a fault)",
            st["duplicates"] + getattr(node.transport, "duplicates", 0),
        )
        audits = CounterMetricFamily(
            "qres_audits", "Audits asked, passed, failed, unanswered; answered", labels=["outcome"]
        )
        for outcome, count in sorted(st["audits"].items()):
            audits.add_metric([outcome], count)
        yield audits
        checks = CounterMetricFamily(
            "qres_checks",
            "Checks before use: asked, done, passed, failed, unanswered, late",
            labels=["outcome"],
        )
        moved = CounterMetricFamily(
            "qres_check_bytes",
            "Bytes the checks moved (requests sent, answers received)",
            labels=["direction"],
        )
        for outcome, count in sorted(st["checks"].items()):
            if outcome.startswith("bytes_"):
                moved.add_metric([outcome[len("bytes_") :]], count)
            else:
                checks.add_metric([outcome], count)
        yield checks
        yield moved
        yield CounterMetricFamily("qres_bans_sent", "Ban notices sent", st["bans_sent"])
        notices = CounterMetricFamily(
            "qres_ban_notices_refused", "Ban notices refused, by reason", labels=["reason"]
        )
        for reason, count in sorted(st["bans_rejected"].items()):
            notices.add_metric([reason], count)
        yield notices
        dropped = CounterMetricFamily(
            "qres_transport_refused",
            "Connections or envelopes refused by the transport, by reason",
            labels=["reason"],
        )
        for reason, count in sorted(node.transport.disconnects.items()):
            dropped.add_metric([reason.name], count)
        yield dropped
        yield GaugeMetricFamily("qres_peers", "Peers connected", len(node.transport.connected()))
        reps = sorted(float(node.ledger.rep[s]) / (1 << 16) for s in node.ledger_slots.values())
        buckets = [(str(b), sum(1 for r in reps if r <= b)) for b in REPUTATION_BUCKETS]
        buckets.append(("+Inf", len(reps)))
        yield HistogramMetricFamily(
            "qres_peer_reputation", "Reputation of the known peers", buckets, sum(reps)
        )
        regime = GaugeMetricFamily("qres_regime", "1 for the node's regime", labels=["regime"])
        for name in NAMES:
            regime.add_metric([name], 1.0 if st["regime"] == name else 0.0)
        yield regime
        energy = node.energy_status()
        yield GaugeMetricFamily("qres_energy_pool_joules", "Energy in the pool", energy["pool_j"])
        yield GaugeMetricFamily(
            "qres_energy_level", "Energy pool as a fraction of capacity", energy["level"]
        )
        yield CounterMetricFamily(
            "qres_energy_spent_joules", "Energy spent (hardware plugin's power)", energy["spent_j"]
        )
        yield CounterMetricFamily(
            "qres_radio_on_seconds", "Seconds with the radio on", energy["radio_on_s"]
        )
        yield CounterMetricFamily("qres_wakes", "Wakes on the regime's schedule", energy["wakes"])
        if node.lora is not None:
            yield from _lora_metrics(node.lora.status())
        yield CounterMetricFamily(
            "qres_http_bytes_in", "Raw bytes compressed over HTTP", self.http_in
        )
        yield CounterMetricFamily(
            "qres_http_bytes_out", "Container bytes returned over HTTP", self.http_out
        )


def _lora_metrics(lora: dict):
    """The adapter hierarchy's health (a node with a ``[lora]`` profile)."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    yield GaugeMetricFamily(
        "qres_lora_bits_per_sample",
        "Coded bits per sample of the last round's window (signalled candidate and index)",
        lora["bits_per_sample"] or 0.0,
    )
    yield GaugeMetricFamily(
        "qres_lora_healthy", "1 when the hierarchy's health is HEALTHY", lora["health"] == "HEALTHY"
    )
    drift = GaugeMetricFamily("qres_lora_drift", "Each layer's drift from init", labels=["layer"])
    for role, layer in lora["layers"].items():
        drift.add_metric([role], layer["drift"])
    yield drift
    queues = GaugeMetricFamily("qres_lora_queue_depth", "Circuits waiting", labels=["channel"])
    for channel, depth in lora["queues"].items():
        queues.add_metric([channel], depth)
    yield queues
    yield CounterMetricFamily("qres_lora_migrations", "Circuits migrated up", lora["migrations"])
    yield CounterMetricFamily(
        "qres_lora_rejected_aggregates",
        "Shared-layer aggregates the screen refused",
        lora["rejected_aggregates"],
    )
    yield CounterMetricFamily(
        "qres_lora_aggregated", "Peers' shared-layer changes aggregated", lora["aggregated"]
    )
