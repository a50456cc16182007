"""Peers that say nothing: a connection that delivers nothing is closed (it may come back; no
ban), and a peer that keeps sending updates but never answers its audits loses its influence
(reputation, and its updates leave the aggregate) without being banned: nothing it signed
shows that it ever received a request. With checks on, such a peer's packets are never used at
all, and it is not banned either."""

from __future__ import annotations

import os

from node_helpers import (
    free_port,
    live_status,
    make_nodes,
    signal_file,
    start_node,
    stop_nodes,
    wait_for,
)

from qres.trust import commitment as cm
from qres.trust.identity import Identity
from qres.trust.packet import make_packet

ORDER = 16  # the node profile's order
ARGS = ("--speed", "20", "--time-scale", "1200")


def _kill(procs) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()


def _peer_and_rounds(node: dict, did: str) -> tuple[dict, list[dict]]:
    """What a stopped node's state holds of peer ``did``, and its rounds."""
    from qres.node.state import State

    state = State(node["home"] / "data" / "state.sqlite")
    try:
        (row,) = [p for p in state.peers() if p["did"] == did]
        return row, state.rounds(1000)
    finally:
        state.close()


def test_a_connection_that_stays_silent_is_closed_not_banned(tmp_path):
    from qres.builtin_plugins.transports.tcp import TcpConfig, TcpTransport

    ports = [free_port(), free_port()]
    nodes = make_nodes(tmp_path, 2, segment_samples=4000)
    for node, port, other in zip(nodes, ports, reversed(ports), strict=True):
        # each node listens where the test says and closes connections silent for 5 s
        text = node["profile"].read_text().split("[node.transport]")[0]
        peer = nodes[1] if node is nodes[0] else nodes[0]
        node["profile"].write_text(
            text + f'[node.transport]\nuse = "tcp"\nlisten = "127.0.0.1:{port}"\n'
            f'swarm = "test"\nidle_timeout = 5.0\nbackoff_max = 0.5\n'
            f'peers = [{{ address = "127.0.0.1:{other}", did = "{peer["id"].did}" }}]\n'
        )
    http = free_port()
    data = [signal_file(tmp_path / f"s{i}.bin", seed=i) for i in range(2)]
    procs = [
        start_node(nodes[0], "--source", str(data[0]), *ARGS, "--http", f"127.0.0.1:{http}"),
        start_node(nodes[1], "--source", str(data[1]), *ARGS),
    ]
    mallory = Identity.generate()
    # a peer that completes the handshake and then never sends a record (no keepalive)
    peer = {"address": f"127.0.0.1:{ports[0]}", "did": nodes[0]["id"].did}
    quiet = TcpTransport(TcpConfig(peers=[peer], swarm="test", idle_timeout=86400.0), mallory)
    try:
        quiet.open()
        wait_for(lambda: nodes[0]["id"].did in quiet.connected(), timeout=30)
        seen = wait_for(
            lambda: (live_status(http) or {}).get("idle_closed", 0) >= 1 and live_status(http), 60
        )
        assert mallory.did not in seen["banned"] and not seen["banned"]
        assert nodes[1]["id"].did in seen["connected"]  # an honest peer keeps its connection
        stop_nodes(procs)
    finally:
        quiet.close()
        _kill(procs)


class _Unanswering:
    """Node A (a real process with its HTTP API) and Mallory, a peer connected to it that
    sends a sound, tiny update for A's open round once per round and reads A's requests
    (audits or checks) without ever answering them."""

    def __init__(self, tmp_path, **node):
        from qres.builtin_plugins.transports.tcp import TcpConfig, TcpTransport

        (self.node,) = make_nodes(tmp_path, 1, segment_samples=4000, **node)
        self.http = free_port()
        data = signal_file(tmp_path / "s.bin")
        http = ("--http", f"127.0.0.1:{self.http}")
        self.procs = [start_node(self.node, "--source", str(data), *ARGS, *http)]
        self.mallory = Identity.generate()
        peer = {"address": f"127.0.0.1:{self.node['port']}", "did": self.node["id"].did}
        self.evil = TcpTransport(TcpConfig(peers=[peer], swarm="test"), identity=self.mallory)
        self._base, self._commitment = cm.commit([2] * ORDER, 0), cm.commit([3] * ORDER, 0)
        self._sent_for: set[int] = set()

    def connect(self) -> None:
        self.evil.open()
        wait_for(lambda: self.node["id"].did in self.evil.connected(), timeout=30)

    def step(self) -> dict | None:
        """Send for the open round (once), read the requests; A's status (None while it has
        closed no round)."""
        st = live_status(self.http)
        if st is None or st["round"] is None:
            return None
        r = st["round"] + 1  # the round open now (the status names the last one closed)
        if r not in self._sent_for:
            self._sent_for.add(r)
            packet = make_packet(
                self.mallory,
                r,
                os.urandom(16),
                [1] * ORDER,
                base=self._base,
                commitment=self._commitment,
            )
            self.evil.send(self.mallory.did, self.node["id"].did, packet.encode())
        self.evil.receive(self.mallory.did)  # the requests: read, never answered
        return st

    def close(self) -> None:
        self.evil.close()
        _kill(self.procs)


def test_a_peer_that_never_answers_audits_loses_its_influence_and_is_not_banned(tmp_path):
    # checks off: every packet is used unchecked and audited after its round
    peer = _Unanswering(tmp_path, extra="audit_rate = 1.0\n", check_rate=0)

    def audits_expired():
        st = peer.step()
        return st if st and st["audits"]["unanswered"] >= 3 else None

    try:
        peer.connect()
        st = wait_for(audits_expired, timeout=120, step=0.05)
        first_expiry = st["round"]
        # a few more rounds of updates from the unanswering peer
        wait_for(lambda: (peer.step() or {}).get("round", 0) >= first_expiry + 4, 60, 0.05)
        stop_nodes(peer.procs)
    finally:
        peer.close()
    row, rounds = _peer_and_rounds(peer.node, peer.mallory.did)
    assert row["banned_at"] == -1  # never banned: an unanswered audit is no evidence
    assert row["reputation"] < 0.8 * (1 << 16)  # each unanswered audit cost it
    # its updates counted while it had not been caught out, and move nothing after
    assert any(r["received"] and r["accepted"] for r in rounds if r["round"] < first_expiry)
    later = [r for r in rounds if r["round"] > first_expiry and r["received"]]
    assert later and all(r["accepted"] == 0 for r in later)


def test_a_peer_that_never_answers_checks_is_never_used_and_not_banned(tmp_path):
    peer = _Unanswering(tmp_path)  # check_rate 1: the default

    def checks_expired():
        st = peer.step()
        return st if st and st["checks"]["unanswered"] >= 4 else None

    try:
        peer.connect()
        st = wait_for(checks_expired, timeout=120, step=0.05)
        stop_nodes(peer.procs)
    finally:
        peer.close()
    row, rounds = _peer_and_rounds(peer.node, peer.mallory.did)
    assert row["banned_at"] == -1 and not st["banned"]  # no answer is no evidence
    assert st["checks"]["failed"] == 0 and st["checks"]["asked"] >= 4
    # not one of its packets was ever aggregated: each waited for a check that never came
    assert any(r["received"] for r in rounds)
    assert all(r["accepted"] == 0 for r in rounds)
