"""Audits between nodes: the request and answer formats, what an audit convicts and clears, and
the two kinds of transferable evidence a ban notice carries besides a bad packet (a failed
audit, an equivocation), each checked by a receiver that saw nothing itself."""

from __future__ import annotations

import os
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qres.node import audits, bans
from qres.swarm.settings import SwarmSettings
from qres.trust import audit
from qres.trust.identity import Identity
from qres.trust.packet import PacketError, Reason

SWARM = SwarmSettings(order=8, window=24, lr=0.5, storm_lr=1.0)
ALICE, MALLORY = Identity.generate(), Identity.generate()
SPAN = SWARM.order + SWARM.window


def _window(seed: int = 0) -> np.ndarray:
    t = np.arange(SPAN)
    rng = np.random.default_rng(seed)
    return (900 * np.sin(t / 5.0) + rng.normal(0, 20, SPAN)).astype(np.int32)


def _signed(identity, round_=4, forge=None, storm=False, window=None):
    """A node's packet and answer for one round; ``forge(update)`` replaces the update."""
    window = _window() if window is None else window
    weights = np.arange(SWARM.order, dtype=np.int32) * 100
    nonce = os.urandom(16)
    ts = audits.train_settings(SWARM, storm)
    claim = audit.honest_claim(weights, window, nonce, ts)
    if forge is not None:
        claim = audit.Claim(forge(claim.update), claim.residual_error, claim.accuracy_delta)
    packet, response = audit.prepare(identity, round_, nonce, weights.tolist(), claim)
    answer = audits.make_answer(identity, response.encode(), window, storm)
    return packet, answer


def _flip(update):
    return tuple(-v for v in update)


def test_request_and_answer_layouts_are_the_documented_ones():
    request = audits.AuditRequest(7, b"n" * 16).encode()
    assert request[:4] == b"QRAQ" and request[4] == 2 and request[5:8] == b"\0\0\0"
    assert struct.unpack_from("<q", request, 8) == (7,) and request[16:32] == b"n" * 16
    assert request[32:] == b"\0\0\0\0"  # no packets held: an empty list
    assert audits.decode_request(request) == audits.AuditRequest(7, b"n" * 16)
    _, answer = _signed(ALICE, storm=True)
    data = answer.encode()
    size = len(answer.response)
    assert data[:4] == b"QRAA" and data[4] == 2 and data[5] == audits.FLAG_STORM
    assert struct.unpack_from("<III", data, 8) == (size, SPAN, 0)  # a genesis base: no step
    assert data[20 : 20 + size] == answer.response
    assert np.array_equal(np.frombuffer(data[20 + size : -64], "<i2"), _window())
    back = audits.decode_answer(data)
    assert back.sender == ALICE.public_key and back.storm and back.window == tuple(_window())
    assert back.step == b""
    # with step evidence, it follows the window, covered by the signature
    with_step = audits.make_answer(ALICE, answer.response, _window(), True, b"evidence")
    raw = with_step.encode()
    assert struct.unpack_from("<I", raw, 16) == (8,) and raw[-72:-64] == b"evidence"
    assert audits.decode_answer(raw).step == b"evidence"


def test_a_version_1_answer_is_refused_with_a_line_saying_why():
    _, answer = _signed(ALICE)
    body = (
        struct.pack("<4sBBHII", b"QRAA", 1, 0, 0, len(answer.response), SPAN)
        + answer.response
        + np.asarray(_window(), "<i2").tobytes()
    )
    old = body + ALICE.sign(body)
    with pytest.raises(PacketError, match="version 1 carries no round step") as err:
        audits.decode_answer(old)
    assert err.value.reason is Reason.BAD_VERSION
    # a node still reads the answers it stored itself before it was upgraded
    assert audits.decode_answer(old, legacy=True).window == tuple(_window())


@pytest.mark.parametrize("storm", [False, True])
def test_an_honest_answer_always_passes(storm):
    packet, answer = _signed(ALICE, storm=storm)
    assert audits.judge(packet, audits.decode_answer(answer.encode()), SWARM).ok


@pytest.mark.parametrize(
    ("forge", "finding"),
    [
        (_flip, "WRONG_UPDATE"),
        (lambda u: tuple(3 * v for v in u), "WRONG_UPDATE"),
        (lambda u: (u[0] + 1, *u[1:]), "WRONG_UPDATE"),
    ],
)
def test_a_forged_update_fails_its_audit_and_convicts_everywhere(forge, finding):
    packet, answer = _signed(MALLORY, forge=forge)
    result = audits.judge(packet, audits.decode_answer(answer.encode()), SWARM)
    assert audits.is_fault(result) and result.finding.name == finding
    # the evidence travels in a notice and convicts at a receiver that saw nothing itself
    evidence = bans.pair(packet.encode(), answer.encode())
    notice = bans.make_notice(ALICE, MALLORY.public_key, 4, evidence, bans.EVIDENCE_AUDIT)
    received = bans.decode_notice(notice.encode())
    assert bans.check_evidence(received, SWARM) == "AUDIT_" + finding


def test_claiming_the_wrong_learning_rate_fails():
    packet, answer = _signed(MALLORY)  # trained at the calm rate ...
    lying = audits.make_answer(
        MALLORY, answer.response, answer.window, storm=True
    )  # ... says storm
    assert audits.is_fault(audits.judge(packet, lying, SWARM))


def test_what_proves_nothing_convicts_nobody():
    packet, answer = _signed(MALLORY)
    honest = bans.pair(packet.encode(), answer.encode())
    flipped, bad = _signed(MALLORY, forge=_flip)
    someone, theirs = _signed(ALICE, forge=_flip)
    forged = bad.encode()[:-1] + bytes([bad.encode()[-1] ^ 1])
    cases = [
        honest,  # a passed audit
        bans.pair(flipped.encode(), theirs.encode()),  # an answer signed by someone else
        bans.pair(someone.encode(), theirs.encode()),  # Alice's fault, not Mallory's
        bans.pair(flipped.encode(), forged),  # a forged answer signature
        bans.pair(flipped.encode(), answer.encode()),  # the answer to another packet
        b"\xff\xff\xff\xff",
        b"",
    ]
    for evidence in cases:
        notice = bans.make_notice(ALICE, MALLORY.public_key, 4, evidence, bans.EVIDENCE_AUDIT)
        assert bans.check_evidence(bans.decode_notice(notice.encode()), SWARM) is None


def test_equivocation_is_two_different_signed_updates_for_one_round():
    a, _ = _signed(MALLORY, round_=9)
    b, _ = _signed(MALLORY, round_=9)  # a fresh nonce: a different update of round 9
    c, _ = _signed(MALLORY, round_=10)
    other, _ = _signed(ALICE, round_=9)

    def verdict(first, second):
        evidence = bans.pair(first.encode(), second.encode())
        notice = bans.make_notice(ALICE, MALLORY.public_key, 9, evidence, 2)
        return bans.check_evidence(bans.decode_notice(notice.encode()), SWARM)

    assert verdict(a, b) == "EQUIVOCATION"
    assert verdict(a, a) is None  # the same packet twice is a replay, not a second update
    assert verdict(a, c) is None  # two rounds
    assert verdict(a, other) is None  # someone else's packet
    tampered = bytearray(b.encode())
    tampered[-1] ^= 1
    evidence = bans.pair(a.encode(), bytes(tampered))
    notice = bans.make_notice(ALICE, MALLORY.public_key, 9, evidence, 2)
    assert bans.check_evidence(bans.decode_notice(notice.encode()), SWARM) is None


def test_unknown_evidence_kinds_are_refused():
    a, _ = _signed(MALLORY)
    data = bytearray(bans.make_notice(ALICE, MALLORY.public_key, 1, a.encode()).encode())
    data[5] = 9
    with pytest.raises(PacketError) as err:
        bans.decode_notice(bytes(data))
    assert err.value.reason is Reason.MALFORMED


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.integers(0, 2000), st.integers(0, 255))
def test_decoders_survive_any_bytes(junk, at, value):
    _, answer = _signed(ALICE)
    good = bytearray(answer.encode())
    good[at % len(good)] = value
    request = bytearray(audits.AuditRequest(3, b"x" * 16).encode())
    request[at % len(request)] = value
    for data in (junk, bytes(good), bytes(good[: at % len(good)]), b"QRAA\x01" + junk):
        try:
            audits.decode_answer(data)
        except PacketError:
            pass
    for data in (junk, bytes(request), bytes(request[: at % 32])):
        try:
            audits.decode_request(data)
        except PacketError:
            pass
    for kind in bans.KINDS:
        notice = bans.make_notice(ALICE, MALLORY.public_key, 1, junk, kind)
        assert bans.check_evidence(bans.decode_notice(notice.encode()), SWARM) is None
