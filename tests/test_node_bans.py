"""Ban notices: the format, the checks a receiver makes, and a ban travelling between real
node processes (one node sees a bad signed packet, bans, and a peer that never saw it obeys
after checking the evidence itself)."""

from __future__ import annotations

import os
import signal
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from node_helpers import (
    live_status,
    make_nodes,
    signal_file,
    start_node,
    status,
    stop_nodes,
    wait_for,
)

from qres.node import bans
from qres.swarm.settings import SwarmSettings
from qres.trust import commitment as cm
from qres.trust.identity import Identity
from qres.trust.packet import PacketError, Reason, make_packet

ORDER = 16
SWARM = SwarmSettings(order=ORDER, window=32)
ALICE, BOB, MALLORY = Identity.generate(), Identity.generate(), Identity.generate()


def _packet(identity, weights: int, round_: int = 5, point: bool = True) -> bytes:
    base = cm.commit([2] * weights, 0)
    commitment = cm.commit([3] * weights, 0) if point else bytes(32)
    return make_packet(
        identity, round_, os.urandom(16), [1] * weights, base=base, commitment=commitment
    ).encode()


def _flip_last(data: bytes) -> bytes:
    """The bytes with their signature's last byte changed (setting it to 0 changes nothing
    for one signature in 256)."""
    return data[:-1] + bytes([data[-1] ^ 1])


def test_layout_is_the_documented_one():
    evidence = _packet(MALLORY, ORDER + 1)
    data = bans.make_notice(ALICE, MALLORY.public_key, 7, evidence).encode()
    assert data[:4] == b"QRBN" and data[4] == 1 and data[5] == bans.EVIDENCE_PACKET
    assert data[6:8] == b"\0\0" and data[8:40] == ALICE.public_key
    assert data[40:72] == MALLORY.public_key
    assert struct.unpack_from("<qI", data, 72) == (7, len(evidence))
    assert data[84 : 84 + len(evidence)] == evidence and len(data) == 84 + len(evidence) + 64
    notice = bans.decode_notice(data)
    assert notice.banned_did == MALLORY.did and notice.issuer_did == ALICE.did


@pytest.mark.parametrize(
    ("evidence", "expected"),
    [
        (lambda: _packet(MALLORY, ORDER + 1), "BAD_DIMENSION"),
        (lambda: _packet(MALLORY, ORDER, point=False), "BAD_POINT"),
        (lambda: _packet(MALLORY, ORDER), None),  # a sound packet proves nothing
        (lambda: _packet(BOB, ORDER + 1), None),  # someone else's fault proves nothing
        (lambda: _flip_last(_packet(MALLORY, ORDER + 1)), None),  # forged signature
        (lambda: b"junk", None),
    ],
)
def test_only_checkable_evidence_against_the_banned_node_counts(evidence, expected):
    notice = bans.make_notice(ALICE, MALLORY.public_key, 3, evidence())
    assert bans.check_evidence(bans.decode_notice(notice.encode()), SWARM) == expected


def test_a_notice_not_signed_by_its_issuer_is_refused():
    data = bytearray(bans.make_notice(ALICE, MALLORY.public_key, 3, _packet(MALLORY, 2)).encode())
    data[8:40] = BOB.public_key  # claim Bob issued it
    with pytest.raises(PacketError) as err:
        bans.decode_notice(bytes(data))
    assert err.value.reason is Reason.BAD_SIGNATURE


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.integers(0, 300), st.integers(0, 255))
def test_decoder_survives_any_bytes(junk, at, value):
    good = bytearray(bans.make_notice(ALICE, MALLORY.public_key, 1, _packet(MALLORY, 2)).encode())
    good[at % len(good)] = value
    for data in (junk, bytes(good), bytes(good[: at % len(good)]), b"QRBN\x01\x01" + junk):
        try:
            bans.decode_notice(data)
        except PacketError:
            pass


def test_a_ban_is_gossiped_checked_obeyed_and_persisted(tmp_path):
    from qres.builtin_plugins.transports.tcp import TcpConfig, TcpTransport

    a, b = make_nodes(tmp_path, 2, segment_samples=4000)
    data = [signal_file(tmp_path / f"s{i}.bin", seed=i) for i in range(2)]
    procs = [
        start_node(n, "--source", str(d), "--speed", "20", "--time-scale", "1200")
        for n, d in zip((a, b), data, strict=True)
    ]
    peer = {"address": f"127.0.0.1:{a['port']}", "did": a["id"].did}
    evil = TcpTransport(TcpConfig(peers=[peer], swarm="test"), identity=MALLORY)
    try:
        evil.open()
        wait_for(lambda: a["id"].did in evil.connected(), timeout=60)
        # a signed update of the wrong dimension, to A only (B never sees it), for a round
        # A has closed: inside its window, never "from the future" (not evidence for others)
        closed = wait_for(lambda: (status(a, check=False) or {}).get("round"), timeout=60)
        packet = _packet(MALLORY, ORDER + 1, round_=closed)
        assert evil.send(MALLORY.did, a["id"].did, packet)

        def banned_everywhere():
            st = [status(n, check=False) for n in (a, b)]
            return None not in st and all(MALLORY.did in s["banned"] for s in st)

        wait_for(banned_everywhere, timeout=90, step=0.3)
        # B drops the banned node: its connection is refused from now on
        wait_for(lambda: not evil.connected(), timeout=60)
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            _, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err
    finally:
        evil.close()
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    from qres.node.state import State

    rows_a = State(a["home"] / "data" / "state.sqlite").bans()
    rows_b = State(b["home"] / "data" / "state.sqlite").bans()
    assert [r["did"] for r in rows_a] == [MALLORY.did] == [r["did"] for r in rows_b]
    assert rows_a[0]["issuer"] == a["id"].did and rows_a[0]["evidence"] == packet
    assert rows_b[0]["issuer"] == a["id"].did  # B banned on A's evidence, checked by B
    assert b["id"].did not in status(a)["banned"] and a["id"].did not in status(b)["banned"]


def _two_nodes_and_mallory(tmp_path, transport: str = "tcp", extra: str = ""):
    """Nodes A and B (real processes) and a connected Mallory transport (in this process)."""
    nodes = make_nodes(tmp_path, 2, transport=transport, extra=extra, segment_samples=4000)
    data = [signal_file(tmp_path / f"s{i}.bin", seed=i) for i in range(2)]
    procs = [
        start_node(n, "--source", str(d), "--speed", "20", "--time-scale", "1200")
        for n, d in zip(nodes, data, strict=True)
    ]
    return nodes, procs


def _banned_everywhere(nodes, did):
    st = [status(n, check=False) for n in nodes]
    return None not in st and all(did in s["banned"] for s in st)


def _ban_rows(node):
    from qres.node.state import State

    state = State(node["home"] / "data" / "state.sqlite")
    try:
        return state.bans()
    finally:
        state.close()


def test_an_equivocating_node_is_banned_on_its_two_signed_packets(tmp_path):
    from qres.builtin_plugins.transports.tcp import TcpConfig, TcpTransport

    # packets stay acceptable for 40 rounds (20 s): on a loaded machine the round read from
    # the status may be several rounds old when the packets arrive
    (a, b), procs = _two_nodes_and_mallory(tmp_path, extra="max_age = 40\n")
    peer = {"address": f"127.0.0.1:{a['port']}", "did": a["id"].did}
    evil = TcpTransport(TcpConfig(peers=[peer], swarm="test"), identity=MALLORY)
    try:
        evil.open()
        wait_for(lambda: a["id"].did in evil.connected(), timeout=60)
        closed = wait_for(lambda: (status(a, check=False) or {}).get("round"), timeout=60)
        # two sound, well-signed, different updates for one round, both to A only
        first, second = _packet(MALLORY, ORDER, closed), _packet(MALLORY, ORDER, closed)
        assert evil.send(MALLORY.did, a["id"].did, first)
        assert evil.send(MALLORY.did, a["id"].did, second)
        wait_for(lambda: _banned_everywhere((a, b), MALLORY.did), timeout=90, step=0.3)
        stop_nodes(procs)
    finally:
        evil.close()
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    row_a, row_b = _ban_rows(a)[0], _ban_rows(b)[0]
    assert row_a["kind"] == bans.EVIDENCE_EQUIVOCATION == row_b["kind"]
    assert row_a["evidence"] == bans.pair(first, second) == row_b["evidence"]
    assert row_b["issuer"] == a["id"].did  # B never saw the packets: A's evidence, B's check


def test_a_second_copy_is_a_duplicate_and_a_reused_nonce_an_equivocation(tmp_path):
    from node_helpers import free_port
    from qres.builtin_plugins.transports.tcp import TcpConfig, TcpTransport

    nodes = make_nodes(tmp_path, 2, segment_samples=4000)
    data = [signal_file(tmp_path / f"s{i}.bin", seed=i) for i in range(2)]
    port = free_port()
    args = ("--speed", "20", "--time-scale", "1200")
    procs = [
        start_node(nodes[0], "--source", str(data[0]), *args, "--http", f"127.0.0.1:{port}"),
        start_node(nodes[1], "--source", str(data[1]), *args),
    ]
    a = nodes[0]
    peer = {"address": f"127.0.0.1:{a['port']}", "did": a["id"].did}
    evil = TcpTransport(TcpConfig(peers=[peer], swarm="test"), identity=MALLORY)

    def live():
        return live_status(port)

    try:
        evil.open()
        wait_for(lambda: a["id"].did in evil.connected(), timeout=60)
        r = wait_for(lambda: (live() or {}).get("round"), timeout=90)
        nonce = os.urandom(16)
        base, commitment = cm.commit([2] * ORDER, 0), cm.commit([3] * ORDER, 0)
        first = make_packet(
            MALLORY, r, nonce, [1] * ORDER, base=base, commitment=commitment
        ).encode()
        # the same bytes twice: a duplicate (at-least-once delivery, a late resend), no fault
        assert evil.send(MALLORY.did, a["id"].did, first)
        assert evil.send(MALLORY.did, a["id"].did, first)
        seen = wait_for(lambda: (live() or {}).get("duplicates", 0) >= 1 and live(), timeout=90)
        assert "REPLAY" not in seen["rejected"] and "EQUIVOCATION" not in seen["rejected"]
        assert MALLORY.did not in seen["banned"]
        # another update under the same nonce for the same round: two different signed
        # packets, an equivocation whatever the nonce says
        second = make_packet(
            MALLORY, r, nonce, [2] * ORDER, base=base, commitment=commitment
        ).encode()
        assert evil.send(MALLORY.did, a["id"].did, second)
        wait_for(lambda: _banned_everywhere(nodes, MALLORY.did), timeout=90, step=0.3)
        stop_nodes(procs)
    finally:
        evil.close()
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    (row,) = _ban_rows(a)
    assert row["kind"] == bans.EVIDENCE_EQUIVOCATION and row["evidence"] == bans.pair(first, second)


def test_a_node_restarted_within_a_round_resends_its_packet_and_is_not_banned(tmp_path):
    from node_helpers import free_port

    from qres.node.state import State

    # rounds of 300 s of wall time: the kill and the restart fall in one round
    a, b = make_nodes(tmp_path, 2, segment_samples=4000)
    data = [signal_file(tmp_path / f"s{i}.bin", seed=i) for i in range(2)]
    args = ("--speed", "50", "--time-scale", "2")
    port = free_port()
    procs = [start_node(n, "--source", str(d), *args) for n, d in zip((a, b), data, strict=True)]
    db = a["home"] / "data" / "state.sqlite"

    def signed():
        state = State(db)
        try:
            return state.sent() or None
        finally:
            state.close()

    def live():
        return live_status(port)

    try:
        before = wait_for(lambda: db.exists() and signed(), timeout=90, step=0.2)
        procs[0].kill()
        procs[0].wait(10)
        procs[0] = start_node(a, "--source", str(data[0]), *args, "--http", f"127.0.0.1:{port}")
        # the restarted node opens the same round and sends the stored bytes again
        wait_for(lambda: (live() or {}).get("updates_sent"), timeout=90, step=0.2)
        stop_nodes(procs)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    after = signed()
    (r,) = before
    assert after[r] == before[r]  # the same packet and answer: no second update for round r
    assert not status(b)["banned"] and not status(a)["banned"]


def test_a_ban_notice_travels_over_mqtt_between_real_nodes(tmp_path):
    from mqtt_broker import Broker
    from qres.builtin_plugins.transports.mqtt import MqttConfig, MqttTransport

    broker = Broker(tmp_path).start()
    table = f'use = "mqtt"\nport = {broker.port}\nswarm = "test"\n'
    procs = []
    evil = MqttTransport(MqttConfig(port=broker.port, swarm="test"), identity=MALLORY)
    try:
        (a, b), procs = _two_nodes_and_mallory(tmp_path, table)
        evil.connect()
        closed = wait_for(lambda: (status(a, check=False) or {}).get("round"), timeout=90)
        packet = _packet(MALLORY, ORDER + 1, round_=closed)
        assert evil.send(MALLORY.did, a["id"].did, packet)  # addressed to A: B drops it
        wait_for(lambda: _banned_everywhere((a, b), MALLORY.did), timeout=90, step=0.3)
        stop_nodes(procs)
    finally:
        evil.close()
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        broker.stop()
    row_a, row_b = _ban_rows(a)[0], _ban_rows(b)[0]
    assert row_a["evidence"] == packet == row_b["evidence"]
    assert row_a["issuer"] == a["id"].did == row_b["issuer"]  # B obeyed A's checked notice
