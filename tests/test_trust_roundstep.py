"""The verifiable round step: a node's base is the replayed aggregate of the signed packets it
committed to; base poisoning (a base that is not that aggregate) fails the audit."""

from __future__ import annotations

import random

import numpy as np
import pytest

from qres.fixed.q16 import sat_add
from qres.kernel import plugins
from qres.kernel.config import Location
from qres.robust.combine import robust_aggregate
from qres.trust import audit as au
from qres.trust import packet as pk
from qres.trust import roundstep as rs
from qres.trust.audit import Finding
from qres.trust.identity import Identity

D = 4
NODE = Identity.from_seed(bytes(range(32)))
PEERS = [Identity.from_seed(bytes([i]) * 32) for i in range(1, 6)]


def _rand(seed):
    rng = random.Random(seed)
    return rng.randbytes


def _rule():
    agg = plugins.create("aggregator", {"use": "trimmed-mean"}, Location("<test>"))
    return lambda rows, weights: robust_aggregate(agg, rows, 0.3, weights)


def _claim(update):
    return au.Claim(tuple(update), 1 << 10, 3)


@pytest.fixture(scope="module")
def chain():
    """Round 3: the node sends from w3; round 4 it aggregates its update and 5 peers'
    packets; round 5 it sends from the result, committing to the step."""
    aggregate = _rule()
    w3 = [1 << 16, -(1 << 15), 300, 0]
    own3 = [40, -12, 5, 1 << 10]
    prev, prev_response = au.prepare(NODE, 3, b"p" * 16, w3, _claim(own3), randbytes=_rand(1))
    rng = np.random.default_rng(0)
    peer_packets = []
    for i, peer in enumerate(PEERS):
        upd = rng.integers(-2000, 2000, D).tolist()
        packet, _ = au.prepare(peer, 3, bytes([i]) * 16, [0] * D, _claim(upd), randbytes=_rand(9))
        peer_packets.append(packet)
    weights = [1 << 15, 40000, 50000, 60000, 20000]
    sub = rs.SubStep(
        3,
        own3,
        [p.digest() for p in peer_packets[:4]],
        weights[1:],
        own_weight=weights[0],
        weighted=True,
    )
    blinding = prev_response.blinding
    step = rs.RoundStep(NODE.public_key, 5, prev.digest(), blinding, w3, [sub])
    rows = np.array([own3] + [p.update for p in peer_packets[:4]], np.int32)
    w5 = sat_add(np.array(w3, np.int32), aggregate(rows, np.array(weights, np.int64)))
    packet, _ = au.prepare(
        NODE, 5, b"q" * 16, w5.tolist(), _claim([1] * D), randbytes=_rand(2), step=step.digest()
    )
    evidence = rs.StepEvidence(step.encode(), prev.encode(), [p.encode() for p in peer_packets])
    return packet, w5.tolist(), evidence, step, aggregate, prev


def test_honest_step_passes_and_encoding_is_canonical(chain):
    packet, w5, evidence, step, aggregate, _ = chain
    assert rs.check_step(packet, w5, evidence, aggregate).finding is Finding.OK
    assert rs.decode(evidence.record) == step
    assert rs.decode(evidence.record).encode() == evidence.record
    back = pk.decode(packet.encode())
    assert back.step == step.digest() and back.encode() == packet.encode()


def test_base_poisoning_is_a_wrong_step(chain):
    packet, w5, evidence, step, aggregate, _ = chain
    poisoned = list(w5)
    poisoned[0] += 1  # one unit on one weight
    bad, _ = au.prepare(NODE, 5, b"q" * 16, poisoned, _claim([1] * D), step=step.digest())
    result = rs.check_step(bad, poisoned, evidence, aggregate)
    assert result.finding is Finding.WRONG_STEP and "1 of 4 weights" in result.detail


def test_a_step_that_does_not_match_its_inputs_is_caught(chain):
    packet, w5, evidence, step, aggregate, prev = chain
    # the record claims other inputs than the packet committed to
    other = rs.RoundStep(
        step.sender, step.round, step.previous, step.blinding, step.start, [step.substeps[0]] * 1
    )
    swapped = step.substeps[0]
    swapped = rs.SubStep(
        swapped.round,
        swapped.own,
        swapped.inputs[:3],
        swapped.weights[:3],
        swapped.own_weight,
        True,
    )
    other = rs.RoundStep(step.sender, 5, step.previous, step.blinding, step.start, [swapped])
    forged = rs.StepEvidence(other.encode(), evidence.previous, evidence.inputs)
    assert rs.check_step(packet, w5, forged, aggregate).finding is Finding.BAD_STEP
    # inputs withheld, a missing previous packet, no evidence at all
    withheld = rs.StepEvidence(evidence.record, evidence.previous, evidence.inputs[:2])
    assert "not handed over" in rs.check_step(packet, w5, withheld, aggregate).detail
    no_prev = rs.StepEvidence(evidence.record, None, evidence.inputs)
    assert rs.check_step(packet, w5, no_prev, aggregate).finding is Finding.BAD_STEP
    assert rs.check_step(packet, w5, None, aggregate).finding is Finding.NO_RESPONSE
    # a forged input (a peer's packet with another update, its signature now wrong)
    peer = pk.decode(evidence.inputs[0])
    import attrs

    fake = attrs.evolve(peer, update=(9, 9, 9, 9)).encode()
    wrong_sig = rs.StepEvidence(evidence.record, evidence.previous, [fake])
    assert rs.check_step(packet, w5, wrong_sig, aggregate).finding is Finding.BAD_STEP
    # start weights that do not open the previous packet's base
    moved = rs.RoundStep(
        step.sender, 5, step.previous, step.blinding, [v + 1 for v in step.start], step.substeps
    )
    moved_ev = rs.StepEvidence(moved.encode(), evidence.previous, evidence.inputs)
    shifted, _ = au.prepare(NODE, 5, b"q" * 16, w5, _claim([1] * D), step=moved.digest())
    result = rs.check_step(shifted, w5, moved_ev, aggregate)
    assert result.finding is Finding.BAD_STEP and "open" in result.detail


def test_genesis_claims(chain):
    _, _, _, _, aggregate, prev = chain
    first, _ = au.prepare(NODE, 7, b"g" * 16, [0] * D, _claim([1] * D))
    assert rs.check_step(first, [0] * D, None, aggregate, genesis=[0] * D).ok
    # a genesis base that is not the genesis model, or after an earlier packet of the node
    assert not rs.check_step(first, [5] * D, None, aggregate, genesis=[0] * D).ok
    late = rs.check_step(first, [0] * D, None, aggregate, earlier=prev)
    assert late.finding is Finding.BAD_STEP and "round 3" in late.detail


def test_decoder_bounds_and_refusals(chain):
    _, _, evidence, _, _, _ = chain
    data = evidence.record
    for cut in (0, 10, len(data) - 1):
        with pytest.raises(pk.PacketError):
            rs.decode(data[:cut])
    with pytest.raises(pk.PacketError):
        rs.decode(data + b"\0")
    with pytest.raises(pk.PacketError) as info:
        rs.decode(data, max_bytes=len(data) - 1)
    assert info.value.reason is pk.Reason.OVERSIZE
    bad = bytearray(data)
    bad[4] = 2
    with pytest.raises(pk.PacketError) as info:
        rs.decode(bytes(bad))
    assert info.value.reason is pk.Reason.BAD_VERSION


def test_version_1_packets_are_refused_with_a_reason(chain):
    data = bytearray(chain[0].encode())
    data[4] = 1
    with pytest.raises(pk.PacketError, match="version 1 .*round-step digest") as info:
        pk.decode(bytes(data))
    assert info.value.reason is pk.Reason.BAD_VERSION


def test_record_bytes_is_the_encoded_size(chain):
    step = chain[3]
    assert rs.record_bytes(D, [len(s.inputs) for s in step.substeps]) == len(step.encode())
