"""The in-process transport: seeded loss and delay, ordering, queue limits, counters, config."""

from __future__ import annotations

import math
import random

import attrs
import pytest

from qres.kernel import plugins
from qres.kernel.config import Location
from qres.kernel.errors import ProfileError, QresError
from qres.kinds.transport import Message, Transport, TransportStats


def make(**settings) -> Transport:
    return plugins.create("transport", {"use": "inproc", **settings}, Location("test.toml"))


def run_gossip(seed: int, sends: int = 400) -> list[tuple]:
    """A fixed workload over 6 nodes; returns the full delivery log in receive order."""
    t = make(loss=0.2, delay_min=1, delay_max=5, seed=seed, queue_limit=1000)
    nodes = list(range(6))
    log = []
    for i in range(sends):
        src = nodes[i % 6]
        t.send(src, nodes[(i * 7 + 1) % 6], i.to_bytes(4, "big"))
        if i % 3 == 0:
            t.broadcast(src, b"b" + i.to_bytes(4, "big"), nodes)
        t.tick()
        for node in nodes:
            for m in t.receive(node):
                log.append((m.seq, m.src, m.dst, m.payload, m.sent_at, m.deliver_at, t.now))
    return log


def test_registered_through_the_hook():
    cls = plugins.get_plugin("transport", "inproc")
    assert issubclass(cls, Transport)
    assert cls.name == "inproc"
    info = plugins.registry()["transport"]["inproc"]
    assert info.source.endswith("transports.inproc")


def test_same_seed_same_delivery_log_other_seed_differs():
    first = run_gossip(seed=7)
    assert first == run_gossip(seed=7)
    assert first != run_gossip(seed=8)
    assert len(first) > 300


def test_loss_rate_close_to_configured_value():
    t = make(loss=0.25, seed=1234, queue_limit=1 << 20)
    n = 20000
    kept = sum(t.send(0, 1, b"x") for _ in range(n))
    lost = n - kept
    # Binomial(n, 0.25): sd = sqrt(n p (1-p)) ~ 61; 5 sd either side.
    assert abs(lost - 0.25 * n) < 5 * math.sqrt(n * 0.25 * 0.75)
    assert t.stats.dropped_loss == lost
    assert len(t.receive(1)) == kept


def test_zero_loss_drops_nothing():
    t = make(seed=3, queue_limit=5000)
    assert all(t.send("a", "b", b"p") for _ in range(3000))
    assert t.stats.dropped_messages == 0
    assert len(t.receive("b")) == 3000


def test_delay_bounds_honoured_and_all_delays_used():
    t = make(delay_min=2, delay_max=6, seed=99, queue_limit=1 << 16)
    for i in range(2000):
        t.send(0, 1, i.to_bytes(2, "big"))
    delays = set()
    received = []
    for _ in range(10):
        t.tick()
        for m in t.receive(1):
            # Received on the very tick it became due: never early, never late.
            assert m.deliver_at == t.now
            delays.add(m.deliver_at - m.sent_at)
            received.append(m)
    assert delays == {2, 3, 4, 5, 6}
    assert len(received) == 2000
    assert t.in_flight == 0


def test_nothing_arrives_before_its_tick():
    t = make(delay_min=3, delay_max=3)
    t.send(0, 1, b"late")
    for _ in range(2):
        t.tick()
        assert t.receive(1) == []
    assert t.next_delivery_at == 3
    t.tick()
    [m] = t.receive(1)
    assert (m.payload, m.sent_at, m.deliver_at) == (b"late", 0, 3)


def test_zero_delay_arrives_at_once():
    t = make()
    assert t.send(1, 2, bytearray(b"now"))
    assert t.pending(2) == 1
    [m] = t.receive(2)
    assert m == Message(seq=0, src=1, dst=2, payload=b"now", sent_at=0, deliver_at=0)
    assert isinstance(m.payload, bytes)


def test_order_is_deliver_time_then_sequence():
    t = make(delay_min=0, delay_max=9, seed=5, queue_limit=1000)
    for i in range(300):
        t.send(i % 4, 9, i.to_bytes(2, "big"))
    t.advance(20)
    got = t.receive(9)
    keys = [(m.deliver_at, m.seq) for m in got]
    assert keys == sorted(keys)
    assert len(got) == 300
    # Delays really vary, so this is not just send order.
    assert [m.seq for m in got] != sorted(m.seq for m in got)


def test_queue_limit_tail_drops_and_counts():
    t = make(queue_limit=3)
    for i in range(5):
        t.send(0, 1, bytes([i]) * 10)
    assert t.pending(1) == 3
    s = t.stats
    assert (s.dropped_queue_full, s.dropped_messages, s.dropped_bytes) == (2, 2, 20)
    assert [m.payload[0] for m in t.receive(1)] == [0, 1, 2]
    # Receiving frees room again.
    assert t.send(0, 1, b"again")
    assert [m.payload for m in t.receive(1)] == [b"again"]


def test_queue_limit_applies_at_arrival_in_order():
    t = make(delay_min=1, delay_max=1, queue_limit=2)
    for i in range(4):
        t.send(i, "sink", bytes([i]))
    t.tick()
    # The first two sends arrive first and take the room.
    assert [m.src for m in t.receive("sink")] == [0, 1]
    assert t.stats.dropped_queue_full == 2


def test_receive_limit_takes_oldest_first():
    t = make(queue_limit=10)
    for i in range(5):
        t.send(0, 1, bytes([i]))
    assert [m.payload for m in t.receive(1, limit=2)] == [b"\x00", b"\x01"]
    assert t.pending(1) == 3
    assert len(t.receive(1, limit=0)) == 0
    assert [m.payload for m in t.receive(1)] == [b"\x02", b"\x03", b"\x04"]
    with pytest.raises(QresError, match="limit"):
        t.receive(1, limit=-1)


def test_counters_balance_bytes_and_messages():
    t = make(loss=0.3, delay_min=0, delay_max=4, seed=11, queue_limit=4)
    rng = random.Random(0)
    for step in range(200):
        for _ in range(3):
            t.send(rng.randrange(5), rng.randrange(5), b"z" * rng.randrange(0, 50))
        t.tick()
        if step % 10 == 0:
            for node in range(5):
                t.receive(node)
    s = t.stats
    assert s.sent_messages == 600
    assert s.sent_messages == s.delivered_messages + s.dropped_messages + t.in_flight
    assert s.sent_bytes == s.delivered_bytes + s.dropped_bytes + t.in_flight_bytes
    assert s.dropped_messages == s.dropped_loss + s.dropped_queue_full
    assert s.dropped_loss > 0 and s.dropped_queue_full > 0
    assert set(s.to_dict()) == set(attrs.fields_dict(TransportStats))
    assert s.to_dict()["sent_bytes"] == s.sent_bytes


def test_broadcast_skips_sender_and_keeps_peer_order():
    t = make(queue_limit=4)
    assert t.broadcast("n0", b"hello", ["n2", "n0", "n1", "n3"]) == 3
    assert t.stats.sent_messages == 3
    assert t.pending("n0") == 0
    seqs = {node: t.receive(node)[0].seq for node in ("n2", "n1", "n3")}
    assert seqs == {"n2": 0, "n1": 1, "n3": 2}


def test_broadcast_counts_only_kept_messages():
    t = make(loss=0.5, seed=2, queue_limit=1000)
    accepted = t.broadcast(0, b"x", range(1, 401))
    assert accepted == 400 - t.stats.dropped_loss
    assert 150 < accepted < 250


def test_oversize_payload_rejected_with_clear_error():
    t = make(max_payload=16)
    assert t.send(0, 1, b"x" * 16)
    with pytest.raises(QresError, match=r"17 bytes exceeds max_payload=16"):
        t.send(0, 1, b"x" * 17)
    # A rejected send is not counted and does not consume randomness.
    assert t.stats.sent_messages == 1


def test_non_bytes_payload_and_bad_nodes_rejected():
    t = make()
    with pytest.raises(QresError, match="not bytes"):
        t.send(0, 1, "text")
    with pytest.raises(QresError, match="not an int or str"):
        t.send(1.5, 1, b"")
    with pytest.raises(QresError, match="not an int or str"):
        t.send(0, True, b"")
    with pytest.raises(QresError, match="characters"):
        t.send("", 1, b"")


def test_advance_rejects_negative_and_moves_clock():
    t = make()
    t.advance(5)
    t.tick()
    assert t.now == 6
    with pytest.raises(QresError, match="non-negative"):
        t.advance(-1)
    with pytest.raises(QresError, match="non-negative"):
        t.advance(1.5)


def test_context_manager_returns_transport():
    with make() as t:
        t.send(0, 0, b"self")
        assert t.receive(0)[0].payload == b"self"


def test_memory_bytes_from_settings():
    cls = plugins.get_plugin("transport", "inproc")
    cfg = make(queue_limit=10, max_payload=100).config
    assert cls.memory_bytes(cfg) == 10 * (100 + 32)
    bigger = make(queue_limit=20, max_payload=100).config
    assert cls.memory_bytes(bigger) == 2 * cls.memory_bytes(cfg)


def test_config_round_trips():
    t = make(loss=0.1, delay_min=1, delay_max=3, seed=42, queue_limit=7, max_payload=99)
    table = t.get_config()
    assert table["use"] == "inproc"
    again = plugins.create("transport", table, Location("x"))
    assert again.config == t.config


@pytest.mark.parametrize(
    ("settings", "key", "allowed"),
    [
        ({"loss": 1.0}, "loss", "[0, 1)"),
        ({"loss": -0.1}, "loss", "[0, 1)"),
        ({"loss": "a lot"}, "loss", "number"),
        ({"delay_min": 5, "delay_max": 2}, "delay_max", ">= delay_min (5)"),
        ({"delay_min": -1}, "delay_min", "integer"),
        ({"queue_limit": 0}, "queue_limit", "integer"),
        ({"seed": 1.5}, "seed", "integer"),
        ({"max_payload": True}, "max_payload", "integer"),
        ({"jitter": 3}, "jitter", "allowed keys"),
    ],
)
def test_bad_settings_give_profile_error(settings, key, allowed):
    with pytest.raises(ProfileError) as info:
        make(**settings)
    message = str(info.value)
    assert message.startswith(f"test.toml: {key}")
    assert allowed in message
    assert info.value.exit_code == 3
