"""Round steps between real nodes: each packet commits to what its node aggregated since its
last one, the node keeps the record and the packets it names in its state, and answers an
audit with them. A node that trains honestly from a poisoned base (attack ``base-poison``)
passes every training check and fails the round-step replay: it is banned on that evidence
by every honest node, and no honest node ever fails."""

from __future__ import annotations

import signal

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from node_helpers import (
    free_port,
    live_status,
    make_nodes,
    signal_file,
    start_node,
    stop_nodes,
    wait_for,
    wait_passed,
)

from qres.learning import task
from qres.node import audits, bans
from qres.node.state import SCHEMA_VERSION, State
from qres.node.steps import Chain
from qres.trust import packet as pk
from qres.trust import roundstep as rs
from qres.trust.identity import Identity

ORDER = 16


def _state(node) -> State:
    return State(node["home"] / "data" / "state.sqlite")


def test_a_base_poisoning_node_fails_its_round_step_and_is_banned_everywhere(tmp_path):
    # checks off: the audits after the round must catch it on their own (test_node_checks.py
    # catches it before use)
    nodes = make_nodes(tmp_path, 4, extra="audit_rate = 0.5\n", segment_samples=4000, check_rate=0)
    data = [signal_file(tmp_path / f"s{i}.bin", seed=i) for i in range(4)]
    ports = [free_port() for _ in range(3)]
    args = ("--speed", "20", "--time-scale", "1200")
    procs = [
        start_node(n, "--source", str(d), *args, "--http", f"127.0.0.1:{port}")
        for n, d, port in zip(nodes, data, ports, strict=False)
    ]
    procs.append(start_node(nodes[3], "--source", str(data[3]), *args, "--attack", "base-poison"))
    honest, mallory = nodes[:3], nodes[3]
    try:

        def banned_everywhere():
            st = [live_status(port) for port in ports]
            return None not in st and all(mallory["id"].did in s["banned"] for s in st)

        wait_for(banned_everywhere, timeout=240, step=0.5)
        # honest nodes keep auditing one another (their packets commit to real round steps):
        # more audits, and every one passes
        wait_passed(ports, "audits", 2, timeout=240)
        live = [live_status(port) for port in ports]
        stop_nodes(procs)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    # some honest node caught it by its own audit: a failed round-step replay
    assert any(s["rejected"].get("AUDIT_WRONG_STEP") for s in live)
    for node, seen in zip(honest, live, strict=True):
        assert seen["banned"] == [mallory["id"].did]
        state = _state(node)
        try:
            rows = state.bans()
        finally:
            state.close()
        assert [r["did"] for r in rows] == [mallory["id"].did]  # the attacker, nobody else
        assert rows[0]["kind"] == bans.EVIDENCE_AUDIT
        packet, answer = bans.unpair(rows[0]["evidence"])
        # the evidence: a poisoned packet and its signed answer, whose training checks pass
        # and whose base is not what its step proves: either a later packet whose replayed
        # round step misses its base, or the first one, claiming the genesis start from a
        # base that is not the genesis model
        opened = pk.decode_audit(audits.decode_answer(answer).response).weights
        if pk.decode(packet).step == pk.GENESIS_STEP:
            assert list(opened) != task.genesis_weights(ORDER).tolist()
        else:
            assert audits.decode_answer(answer).step


def test_a_node_keeps_its_chain_and_answers_with_it_after_a_restart(tmp_path):
    """The state holds the open chain and, per packet, the answer with its round step: an
    honest packet's evidence replays to exactly the base it opens, before and after a
    restart."""
    a, b = make_nodes(tmp_path, 2, segment_samples=4000)
    data = [signal_file(tmp_path / f"s{i}.bin", seed=i) for i in range(2)]
    args = ("--speed", "20", "--time-scale", "1200")
    procs = [start_node(n, "--source", str(d), *args) for n, d in zip((a, b), data, strict=True)]

    def stepped():
        state = _state(a)
        try:
            return [r for r, (p, _) in state.sent().items() if pk.decode(p).step != pk.GENESIS_STEP]
        finally:
            state.close()

    try:
        wait_for(lambda: len(stepped()) >= 2, timeout=120, step=0.3)
        procs[0].send_signal(signal.SIGTERM)
        procs[0].communicate(timeout=60)
        seen = set(stepped())
        procs[0] = start_node(a, "--source", str(data[0]), *args)
        wait_for(lambda: len(set(stepped()) - seen) >= 2, timeout=120, step=0.3)
        stop_nodes(procs)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    from qres.kernel import profiles
    from qres.node.defence import Defence
    from qres.swarm.engine import settings_from_profile

    profile = profiles.load(str(a["profile"]))
    rule = Defence(settings_from_profile(profile), None, profile.build("swarm", "aggregator")).rule
    state = _state(a)
    try:
        sent = state.sent()
        chain = Chain.load(state.load_chain(), ORDER)
    finally:
        state.close()
    assert chain is not None and chain.previous == sent[max(sent)][0]
    checked = 0
    for r, (packet, answer) in sorted(sent.items()):
        p, ans = pk.decode(packet), audits.decode_answer(answer)
        if p.step == pk.GENESIS_STEP:
            continue
        evidence = rs.decode_evidence(ans.step)
        opened = pk.decode_audit(ans.response).weights
        assert rs.check_step(p, opened, evidence, rule).ok, r
        checked += 1
    assert checked >= 2


def test_a_state_from_before_round_steps_is_upgraded_and_starts_its_chain_at_its_last_packet(
    tmp_path,
):
    """Schema 2 had no chain and answers of version 1: the upgraded node starts its chain at
    its last stored packet (whose answer opens its base), takes that base as its weights, and
    its next round step replays to exactly what it then commits to."""
    import os
    import struct

    from qres.fixed.q16 import sat_add
    from qres.kernel import profiles
    from qres.learning import task
    from qres.node.runtime import Node, RunOptions
    from qres.trust import audit

    (node,) = make_nodes(tmp_path, 1)
    ident = node["id"]
    db = node["home"] / "data" / "state.sqlite"
    base = task.genesis_weights(ORDER) + np.arange(ORDER, dtype=np.int32) * 7
    claim = audit.Claim(tuple(range(ORDER)), 100, 5)
    packet, response = audit.prepare(ident, 5, os.urandom(16), base.tolist(), claim)
    window = np.arange(ORDER + 128, dtype="<i2")
    resp = response.encode()
    body = struct.pack("<4sBBHII", b"QRAA", 1, 0, 0, len(resp), len(window)) + resp
    body += window.tobytes()
    state = State(db)
    state.db.executescript("DROP TABLE chain; DROP TABLE chain_steps;")
    state.set_meta("schema", "2")
    state.set_meta("did", ident.did)
    state.save_sent(5, packet.encode(), body + ident.sign(body), 10)
    with state.transaction():
        state.save_model(5, base + 1000)  # an aggregate applied after round 5: unprovable
    state.close()

    live = Node(profiles.load(str(node["profile"])), RunOptions(), identity=ident)
    try:
        assert live.state.get_meta("schema") == str(SCHEMA_VERSION)
        assert live.chain.previous == packet.encode()
        assert live.weights.tolist() == base.tolist()  # back to what it committed to
        live._settle_chain(6)  # round 5 never closed here: its own update alone
        assert live.weights.tolist() == sat_add(base, np.asarray(claim.update)).tolist()
        step, evidence = live.chain.close(ident.public_key, 7)
        nxt, _ = audit.prepare(ident, 7, os.urandom(16), live.weights.tolist(), claim, step=step)
        result = rs.check_step(
            nxt, live.weights.tolist(), rs.decode_evidence(evidence), live.defence.rule
        )
        assert result.ok, result
    finally:
        live.state.close()
    # and a state of the current schema refuses nothing and keeps its chain
    again = State(db)
    try:
        assert again.get_meta("schema") == str(SCHEMA_VERSION) and again.load_chain()["previous"]
    finally:
        again.close()


PEERS = [Identity.from_seed(bytes([i]) * 32) for i in range(6)]
NODE = Identity.from_seed(b"n" * 32)


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.lists(st.integers(-(2**20), 2**20), min_size=4, max_size=4), max_size=5),
    st.lists(st.integers(0, 1 << 16), min_size=5, max_size=5),
    st.booleans(),
)
def test_a_chain_replays_to_exactly_what_the_node_applied(updates, reps, weighted):
    """Whatever a round took, the node's chain (:class:`Chain`) replays, through an auditor's
    :func:`check_step` with the same rule, to the weights the node applied; one weight more
    is a ``wrong-step``."""
    import os

    from qres.fixed.q16 import sat_add
    from qres.kernel import plugins
    from qres.kernel.config import Location
    from qres.node.defence import Defence
    from qres.swarm.settings import SwarmSettings
    from qres.trust import audit
    from qres.trust.audit import Finding

    agg = plugins.create("aggregator", {"use": "adaptive"}, Location("<test>"))
    rule = Defence(SwarmSettings(order=4, window=8), None, agg).rule
    w = np.array([1 << 16, -(1 << 14), 77, 0], np.int32)
    own = (40, -12, 5, 1 << 10)
    previous, kept = audit.prepare(NODE, 3, os.urandom(16), w.tolist(), audit.Claim(own, 9, 1))
    chain = Chain.after(previous.encode(), kept.blinding, w)
    inputs = [
        audit.prepare(p, 3, os.urandom(16), [0] * 4, audit.Claim(tuple(u), 9, 1))[0].encode()
        for p, u in zip(PEERS, updates, strict=False)
    ]
    weights = None
    if weighted and inputs:
        weights = np.array([1 << 16, *reps[: len(inputs)]], np.int64)
    rows = np.array([own, *updates], np.int32)
    step = rule(rows, weights) if inputs else np.array(own, np.int32)
    applied = sat_add(w, step)
    chain.add(3, np.array(own, np.int32), inputs, weights)
    digest, evidence = chain.close(NODE.public_key, 5)
    claim = audit.Claim((1, 1, 1, 1), 9, 1)
    packet, _ = audit.prepare(NODE, 5, os.urandom(16), applied.tolist(), claim, step=digest)
    found = rs.check_step(packet, applied.tolist(), rs.decode_evidence(evidence), rule)
    assert found.ok, found
    poisoned = applied.tolist()
    poisoned[0] += 1
    assert rs.check_step(packet, poisoned, rs.decode_evidence(evidence), rule).finding is (
        Finding.WRONG_STEP
    )
