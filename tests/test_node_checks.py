"""Checks before use between real nodes: every receiver checks a peer's update packet in full
(its training re-run, its round step replayed) before it aggregates it. A node that poisons its
base and a node that forges its updates are caught by the check of their first faulty packet
and banned by every honest node; no honest node is banned, and no honest node ever aggregates
an attacker's packet. Over TCP and over MQTT (a real mosquitto)."""

from __future__ import annotations

import hashlib
import random
import struct
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from node_helpers import (
    free_port,
    live_status,
    make_nodes,
    signal_file,
    start_node,
    wait_for,
    wait_passed,
)

from qres.node import audits, bans, trimmed
from qres.node.state import State
from qres.node.steps import Chain
from qres.trust import audit as au
from qres.trust import packet as pk
from qres.trust import roundstep as rs
from qres.trust.identity import Identity
from qres.trust.packet import PacketError, Reason

ORDER = 16
ARGS = ("--speed", "20", "--time-scale", "1200")
# audits off: only the checks can catch anyone; packets stay acceptable (and every signed
# packet stays in each node's state) for the whole run
EXTRA = "audit_rate = 0.0\naudit_rate_storm = 0.0\naudit_suspect_rate = 0.0\nmax_age = 40\n"


def _read(node) -> tuple[dict, list, Chain | None]:
    state = State(node["home"] / "data" / "state.sqlite")
    try:
        return state.sent(), state.bans(), Chain.load(state.load_chain(), ORDER)
    finally:
        state.close()


def _aggregated(node) -> set[bytes]:
    """Every packet a node's round steps name as aggregated (its stored packets' evidence and
    its open chain)."""
    sent, _, chain = _read(node)
    out: set[bytes] = set()
    for packet, answer in sent.values():
        if pk.decode(packet).step != pk.GENESIS_STEP:
            out.update(rs.decode_evidence(audits.decode_answer(answer).step).inputs)
    for _, inputs in chain.steps if chain is not None else ():
        out.update(inputs)
    return out


def _transport(tmp_path, kind: str):
    if kind == "tcp":
        return "tcp", None
    from mqtt_broker import Broker

    broker = Broker(tmp_path).start()
    return f'use = "mqtt"\nport = {broker.port}\nswarm = "test"\n', broker


@pytest.mark.parametrize("kind", ["tcp", "mqtt"])
def test_poisoners_and_forgers_are_caught_by_the_check_of_their_first_packet(tmp_path, kind):
    transport, broker = _transport(tmp_path, kind)
    nodes = make_nodes(tmp_path, 5, transport, extra=EXTRA, segment_samples=4000)
    data = [signal_file(tmp_path / f"s{i}.bin", seed=i) for i in range(5)]
    ports = [free_port() for _ in range(3)]
    procs = []
    try:
        procs = [
            start_node(n, "--source", str(d), *ARGS, "--http", f"127.0.0.1:{port}")
            for n, d, port in zip(nodes, data, ports, strict=False)
        ]
        for node, d, attack in zip(nodes[3:], data[3:], ("base-poison", "sign-flip"), strict=True):
            procs.append(start_node(node, "--source", str(d), *ARGS, "--attack", attack))
        honest, attackers = nodes[:3], nodes[3:]
        bad = {a["id"].did for a in attackers}

        def banned_everywhere():
            seen = [live_status(port) for port in ports]
            return None not in seen and all(bad <= set(s["banned"]) for s in seen) and seen

        wait_for(banned_everywhere, timeout=90, step=0.5)
        # honest nodes go on checking one another, and every check passes
        wait_passed(ports, "checks", 4, timeout=90)

        def aggregated_everywhere():
            # a check that finishes after its round closed leaves its packet out (late):
            # under load, wait until each honest node has taken a packet in some round
            seen = [live_status(port) for port in ports]
            return None not in seen and all(any(r["accepted"] for r in s["rounds"]) for s in seen)

        wait_for(aggregated_everywhere, timeout=120, step=0.5)
        live = [live_status(port) for port in ports]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            proc.communicate(timeout=60)
        if broker is not None:
            broker.stop()
    assert any(s["checks"]["failed"] for s in live)
    for seen in live:
        assert sorted(seen["banned"]) == sorted(bad)  # the attackers, no honest node
        counts = seen["checks"]
        assert counts["done"] == counts["passed"] + counts["failed"]
        # every packet an attacker signs is faulty, and the first one checked bans it: no
        # honest node checks a second one (a node that started late may have missed the
        # first packets, or heard the notice first and checked none)
        assert counts["failed"] <= len(bad)
        assert counts["bytes_sent"] > 0 and counts["bytes_received"] > 0
        assert seen["transport_bytes"]["sent"] > 0
    sent_by = {a["id"].did: {p for p, _ in _read(a)[0].values()} for a in attackers}
    for node in honest:
        _, rows, _ = _read(node)
        assert {r["did"] for r in rows} == bad
        for row in rows:
            assert row["kind"] == bans.EVIDENCE_AUDIT
            packet, answer = bans.unpair(row["evidence"])
            # the evidence: a packet the attacker signed and its own signed answer
            assert packet in sent_by[row["did"]]
            assert audits.decode_answer(answer).did == row["did"]
        # no honest node ever aggregated a packet of an attacker
        taken = _aggregated(node)
        assert taken, "honest nodes aggregate one another"
        assert not {pk.decode(p).did for p in taken} & bad


def test_a_node_that_checks_nothing_keeps_its_audits(tmp_path):
    """``check_rate = 0``: no request is sent for a check, packets are aggregated unchecked,
    and the audits at ``audit_rate`` go on (here every packet)."""
    nodes = make_nodes(tmp_path, 3, extra="audit_rate = 1.0\n", segment_samples=4000, check_rate=0)
    data = [signal_file(tmp_path / f"s{i}.bin", seed=i) for i in range(3)]
    ports = [free_port() for _ in range(3)]
    procs = [
        start_node(n, "--source", str(d), *ARGS, "--http", f"127.0.0.1:{port}")
        for n, d, port in zip(nodes, data, ports, strict=True)
    ]
    try:
        wait_for(
            lambda: all(
                (live_status(p) or {"audits": {"passed": 0}})["audits"]["passed"] >= 4
                for p in ports
            ),
            timeout=90,
            step=0.5,
        )
        live = [live_status(port) for port in ports]
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.communicate(timeout=60)
    for seen in live:
        assert seen["checks"]["asked"] == 0 and seen["checks"]["bytes_sent"] == 0
        assert not seen["banned"] and not seen["audits"]["failed"]


# --- the wire: requests that list held packets, trimmed answers -----------------------------

GOLDEN = Path(__file__).parent / "golden"
ALICE = Identity.from_seed(hashlib.sha256(b"check-alice").digest())
PEERS = [Identity.from_seed(hashlib.sha256(bytes([i])).digest()) for i in range(3)]
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _rand(seed: int):
    rng = random.Random(seed)
    return lambda n: rng.randbytes(n)


def _signed_answer() -> tuple[bytes, bytes, list[bytes]]:
    """A node's packet of round 4 whose round step took three peers' packets of round 3,
    its signed answer, and the packets the step names (its previous one first); all
    deterministic."""
    w = np.arange(ORDER, dtype=np.int32) * 3
    claim = au.Claim(tuple(range(ORDER)), 100, 5)
    previous, kept = au.prepare(ALICE, 3, b"p" * 16, w.tolist(), claim, randbytes=_rand(1))
    inputs = [
        au.prepare(p, 3, bytes([i]) * 16, [0] * ORDER, claim, randbytes=_rand(10 + i))[0].encode()
        for i, p in enumerate(PEERS)
    ]
    chain = Chain.after(previous.encode(), kept.blinding, w)
    chain.add(3, np.asarray(claim.update, np.int32), inputs, None)
    digest, evidence = chain.close(ALICE.public_key, 4)
    packet, response = au.prepare(
        ALICE, 4, b"q" * 16, (w + 1).tolist(), claim, randbytes=_rand(2), step=digest
    )
    window = list(range(-72, 72))
    answer = audits.make_answer(ALICE, response.encode(), window, False, evidence).encode()
    return packet.encode(), answer, [previous.encode(), *inputs]


PACKET, ANSWER, NAMED = _signed_answer()
HELD = {pk.packet_hash(p)[: audits.HELD_PREFIX_BYTES] for p in NAMED[:3]}
TRIMMED = trimmed.trim(ANSWER, HELD)
LOOKUP = {pk.packet_hash(p): p for p in NAMED}.get
REQUEST = audits.AuditRequest(7, b"n" * 16, sorted(HELD)).encode()


def test_a_request_lists_held_packets_and_matches_its_golden_bytes():
    request = audits.AuditRequest(7, b"n" * 16, sorted(HELD))
    data = request.encode()
    assert data == REQUEST == (GOLDEN / "audit-request-v2.bin").read_bytes()
    assert data[:4] == b"QRAQ" and data[4] == 2 and len(data) == 36 + 8 * 3
    assert audits.decode_request(data) == request
    # version 1 (32 bytes, no list) is still answered, in full
    old = bytearray(data[:32])
    old[4] = 1
    assert audits.decode_request(bytes(old)) == audits.AuditRequest(7, b"n" * 16)
    for version in (0, 3, 255):
        bad = bytearray(data)
        bad[4] = version
        with pytest.raises(PacketError) as err:
            audits.decode_request(bytes(bad))
        assert err.value.reason is Reason.BAD_VERSION
    with pytest.raises(PacketError):
        audits.decode_request(data[:-1])  # a count the bytes do not hold


def test_a_trimmed_answer_puts_back_exactly_what_its_sender_signed():
    assert TRIMMED == (GOLDEN / "audit-trimmed-v1.bin").read_bytes()
    assert TRIMMED[:4] == b"QRAT" and TRIMMED[4] == trimmed.VERSION
    # three of the four named packets left out, 33 bytes each in their place (a tag and the
    # hash); the tags, the 20-byte head and the 4 lengths the evidence no longer carries add
    # to 100 bytes
    assert len(TRIMMED) == len(ANSWER) - sum(len(p) for p in NAMED[:3]) + 100
    full = trimmed.expand(TRIMMED, LOOKUP)
    assert full == ANSWER
    result = audits.decode_answer(full)
    assert result.did == ALICE.did
    # nothing held, nothing to leave out: the answer itself
    assert trimmed.trim(ANSWER, set()) == ANSWER
    assert trimmed.trim(ANSWER, {b"\0" * 8}) == ANSWER


def test_a_trimmed_answer_that_cannot_be_rebuilt_proves_nothing():
    missing = {pk.packet_hash(p): p for p in NAMED[1:]}.get  # the previous packet not held
    with pytest.raises(PacketError):
        trimmed.expand(TRIMMED, missing)
    # a packet held under the hash but with other bytes is not taken
    with pytest.raises(PacketError):
        trimmed.expand(TRIMMED, lambda h: NAMED[3])
    # damaged in transit: it rebuilds, but the signature no longer holds
    damaged = bytearray(TRIMMED)
    damaged[trimmed.HEADER_BYTES + 30] ^= 1
    with pytest.raises(PacketError):
        audits.decode_answer(trimmed.expand(bytes(damaged), LOOKUP))


@FUZZ
@given(st.one_of(st.binary(max_size=600), st.data()))
def test_trimmed_answers_and_requests_fuzz(data):
    if not isinstance(data, bytes):
        valid = [TRIMMED, ANSWER[:64] + TRIMMED[64:], REQUEST]
        raw = bytearray(data.draw(st.sampled_from(valid)))
        for _ in range(data.draw(st.integers(1, 4))):
            at = data.draw(st.integers(0, len(raw) - 1))
            raw[at] = data.draw(st.integers(0, 255))
        data = bytes(raw)
    try:
        full = trimmed.expand(data, LOOKUP)
    except PacketError:
        full = None
    if full is not None:
        try:
            audits.decode_answer(full)
        except PacketError:
            pass
        else:  # signed: only the bytes its sender signed rebuild to a valid answer
            assert full == ANSWER
    try:
        request = audits.decode_request(data)
    except PacketError:
        return
    assert request.encode() == data or data[4] == 1


def test_lying_lengths_in_a_trimmed_answer_do_not_allocate():
    cases = []
    for at in (8, 12, 16):  # head, record, count
        lying = bytearray(TRIMMED)
        struct.pack_into("<I", lying, at, 0xFFFFFFFF)
        cases.append(bytes(lying))
    inner = bytearray(TRIMMED)  # the first packet tag's length field
    first = trimmed.HEADER_BYTES + struct.unpack_from("<I", TRIMMED, 8)[0]
    first += struct.unpack_from("<I", TRIMMED, 12)[0]
    inner[first] = trimmed.TAG_PACKET
    struct.pack_into("<I", inner, first + 1, 0xFFFFFFFF)
    cases.append(bytes(inner))
    for case in cases:
        tracemalloc.start()
        with pytest.raises(PacketError):
            trimmed.expand(case, LOOKUP)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < 1 << 20, peak


def test_a_ban_drops_the_banned_peers_pending_checks():
    """Checks still running for a peer that is banned settle nothing: its packets are never
    used, and an answer already on its way is not counted as a second failure."""
    from types import SimpleNamespace

    from qres.node.checks import Checks, PendingCheck, fresh_counts

    checks = Checks(1.0, fresh_counts())
    for did, r in (("did:a", 3), ("did:a", 4), ("did:b", 4)):
        packet = SimpleNamespace(nonce=bytes([r]))
        checks.ask(PendingCheck(0, did, r, packet, b"", 0), 10)
    assert checks.drop("did:a") == 2
    assert checks.answered("did:a", 4, bytes([4]), 100) is None
    assert checks.answered("did:b", 4, bytes([4]), 100) is not None
    assert not checks.usable("did:a", 4)  # drawn and never passed: never aggregated
