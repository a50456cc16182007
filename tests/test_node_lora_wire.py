"""The LoRA node's pieces: the ``QRLU`` packet (golden bytes, old versions refused, fuzzed),
its ban evidence, the shared-layer step the node and the simulator share (same bits, any order
of arrival), the stored hierarchy (restricted unpickling) and the state's schema upgrade."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import sqlite3
import struct
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qres.kernel import profiles
from qres.kernel.errors import IntegrityError, QresError
from qres.lora import exchange
from qres.lora.hierarchy import SHARED_ROLES
from qres.node import bans, lora_wire
from qres.node.lora import LoraNode
from qres.node.state import SCHEMA_VERSION, State
from qres.trust.identity import Identity
from qres.trust.packet import PacketError, Reason

GOLDEN = Path(__file__).parent / "golden" / "lora-packet-v1.bin"
ALICE = Identity.from_seed(hashlib.sha256(b"lora-wire").digest())
MALLORY = Identity.from_seed(hashlib.sha256(b"lora-mallory").digest())


def _packet(identity=ALICE, r=4, role=None, values=(1, -2, 3, 1 << 20), nonce=b"n" * 16):
    role = role or exchange.role_of_round(r)
    return lora_wire.LoraPacket(
        identity.public_key,
        r,
        nonce,
        role,
        lora_wire.domain_tag("seismic"),
        lora_wire.base_digest([0, 5, -7, 9]),
        9 << 16,
        values,
    ).signed(identity)


def test_the_packet_matches_its_golden_bytes_and_says_what_it_carries():
    data = _packet().encode()
    assert data == GOLDEN.read_bytes()
    assert data[:4] == b"QRLU" and data[4] == lora_wire.VERSION
    p = lora_wire.decode(data)
    assert (p.round, p.role, p.change, p.bits) == (4, "domain", (1, -2, 3, 1 << 20), 9 << 16)
    assert p.verify_signature() and p.did == ALICE.did
    assert len(data) == lora_wire.HEADER_BYTES + 4 * 4 + 64


@pytest.mark.parametrize("version", [0, 2, 255])
def test_other_versions_are_refused_by_name(version):
    data = bytearray(GOLDEN.read_bytes())
    data[4] = version
    with pytest.raises(PacketError) as err:
        lora_wire.decode(bytes(data))
    assert err.value.reason is Reason.BAD_VERSION and "version" in str(err.value)


def test_a_lying_length_is_refused_before_allocating():
    data = bytearray(GOLDEN.read_bytes())
    struct.pack_into("<I", data, 136, lora_wire.MAX_VALUES)
    struct.pack_into("<I", data, 8, 0xFFFFFFFF)
    tracemalloc.start()
    with pytest.raises(IntegrityError):
        lora_wire.decode(bytes(data))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 1 << 20
    with pytest.raises(PacketError):
        lora_wire.decode(b"\0" * (lora_wire.MAX_PACKET_BYTES + 1))


@st.composite
def _mutated(draw, valid: bytes):
    data = bytearray(valid)
    for _ in range(draw(st.integers(1, 4))):
        how = draw(st.sampled_from(["flip", "cut", "splice"]))
        if how == "flip" and data:
            i = draw(st.integers(0, len(data) - 1))
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif how == "cut":
            data = data[: draw(st.integers(0, len(data)))]
        elif data:
            i = draw(st.integers(0, len(data) - 1))
            junk = draw(st.binary(min_size=1, max_size=16))
            data[i : i + len(junk)] = junk
    return bytes(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(_mutated(GOLDEN.read_bytes()), st.binary(max_size=300)))
def test_the_parser_is_fuzzed(data):
    try:
        packet = lora_wire.decode(data)
    except QresError:
        return
    # whatever parses re-encodes to the same bytes; only the signer's bytes verify
    assert packet.body() + packet.signature == data
    assert packet.verify_signature() == (data == GOLDEN.read_bytes())


def test_wrong_layer_wrong_size_and_equivocation_are_evidence_every_node_checks():
    sizes = dict.fromkeys(SHARED_ROLES, 4)
    wrong_layer = _packet(MALLORY, r=4, role="swarm").encode()
    wrong_size = _packet(MALLORY, r=4, values=(1, 2, 3)).encode()
    honest = _packet(MALLORY, r=4).encode()
    other = _packet(MALLORY, r=4, nonce=b"m" * 16).encode()
    key = MALLORY.public_key
    assert bans.lora_fault(wrong_layer, key, sizes) == "WRONG_LAYER"
    assert bans.lora_fault(wrong_size, key, sizes) == "BAD_DIMENSION"
    assert bans.lora_fault(wrong_size, key, None) is None  # sizes unknown: proves nothing
    assert bans.lora_fault(honest, key, sizes) is None
    assert bans.lora_fault(wrong_layer, ALICE.public_key, sizes) is None  # not its signer
    assert bans.lora_equivocation(honest, other, key)
    assert not bans.lora_equivocation(honest, honest, key)
    swarm = type("S", (), {"order": 16})()
    for kind, evidence, found in [
        (bans.EVIDENCE_LORA_PACKET, wrong_layer, "WRONG_LAYER"),
        (bans.EVIDENCE_LORA_EQUIVOCATION, bans.pair(honest, other), "EQUIVOCATION"),
        (bans.EVIDENCE_LORA_PACKET, honest, None),
    ]:
        notice = bans.make_notice(ALICE, key, 5, evidence, kind)
        read = bans.decode_notice(notice.encode())
        assert bans.check_evidence(read, swarm, None, sizes) == found
    # the largest pair of LoRA packets fits a notice
    assert 4 + 2 * lora_wire.MAX_PACKET_BYTES <= bans.MAX_EVIDENCE_BYTES


# --- the step the simulator and the node share -------------------------------------------


def _nodes(n: int, profile) -> list[LoraNode]:
    from qres.swarm.engine import settings_from_profile

    swarm = settings_from_profile(profile)
    return [LoraNode(profile, swarm, "d") for _ in range(n)]


def _train(nodes, rounds=3):
    rng = np.random.default_rng(7)
    for k, node in enumerate(nodes):
        x = np.cumsum(rng.integers(-30, 31, (1, 600)), axis=1) // (k + 1)
        for r in range(rounds):
            node.personal.learn(np.clip(x[:, r * 150 : r * 150 + 170], -2048, 2047))


@pytest.fixture(scope="module")
def lora_profile(tmp_path_factory):
    path = tmp_path_factory.mktemp("p") / "lora.toml"
    path.write_text(
        '[profile]\nname = "lora-node"\nextends = "node"\n[swarm]\n'
        'aggregator = { use = "trimmed-mean" }\nassumed_byzantine = 0.34\n'
        "[lora]\nranks = [64, 32, 16, 8, 4]\n"
    )
    return profiles.load(str(path))


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.permutations(range(4)), st.sampled_from(SHARED_ROLES))
def test_the_node_and_the_simulator_give_the_same_bits_in_any_order(lora_profile, order, role):
    nodes = _nodes(4, lora_profile)
    _train(nodes)
    rows = [exchange.change(n.personal, role, n.base(role)) for n in nodes]
    keys = [bytes([i]) * 32 for i in range(4)]
    # the simulator's step: rows in node order, one rng
    first = nodes[0].personal
    base = exchange.initial(first, role)
    sim = exchange.combine(
        nodes[0].aggregator, np.stack(rows), base, 0.34, np.random.default_rng([0, 3])
    )
    # node 0's view: its own row and the peers' packets, arrived in any order
    packets = [
        lora_wire.LoraPacket(keys[i], 3, b"n" * 16, role, nodes[0].tag, b"b" * 32, 0, rows[i])
        for i in order
        if i != 0
    ]
    nodes[0].close(3, role, rows[0], keys[0], packets)
    assert np.array_equal(nodes[0].bases[role], sim)
    assert nodes[0].aggregated == 3


def test_the_stored_hierarchy_round_trips_and_refuses_foreign_classes(lora_profile, tmp_path):
    (node,) = _nodes(1, lora_profile)
    _train([node])
    blob = node.dump()
    (copy,) = _nodes(1, lora_profile)
    copy.load(blob, "state")
    window = np.arange(170, dtype=np.int64)[None, :] % 97
    assert node.code(window) == copy.code(window)
    node.personal.learn(window)
    copy.personal.learn(window)
    assert all(
        np.array_equal(node.personal.h.layers[r].b, copy.personal.h.layers[r].b)
        for r in node.personal.h.layers
    )
    evil = pickle.dumps({"format": 1, "personal": os.system})
    with pytest.raises(IntegrityError, match="unreadable"):
        copy.load(evil, "state")
    with pytest.raises(IntegrityError, match="unreadable"):
        copy.load(b"garbage", "state")
    # a hierarchy learned with other settings is refused, not mixed in
    other = tmp_path / "other.toml"
    other.write_text(
        '[profile]\nname = "o"\nextends = "node"\n[swarm]\norder = 8\n'
        "[lora]\nranks = [8, 8, 8, 8, 8]\n"
    )
    (foreign,) = _nodes(1, profiles.load(str(other)))
    with pytest.raises(IntegrityError, match="other"):
        foreign.load(blob, "state")


def test_a_schema_3_state_is_upgraded_with_an_empty_hierarchy(tmp_path):
    db = tmp_path / "state.sqlite"
    state = State(db)
    state.db.execute("DROP TABLE lora")
    state.set_meta("schema", "3")
    state.close()
    again = State(db)
    try:
        assert again.get_meta("schema") == str(SCHEMA_VERSION) == "4"
        assert again.load_lora() is None
        with again.transaction():
            again.save_lora(3, b"x")
        assert again.load_lora() == (3, b"x")
    finally:
        again.close()
    raw = sqlite3.connect(db)
    raw.execute("UPDATE meta SET value = '9' WHERE key = 'schema'")
    raw.commit()
    raw.close()
    with pytest.raises(IntegrityError, match="schema 9"):
        State(db)


def test_restricted_unpickler_reads_numpy_and_hierarchy_only():
    from qres.node.lora import _Restricted

    data = pickle.dumps({"a": np.arange(3), "d": __import__("collections").deque([1])})
    assert _Restricted(io.BytesIO(data)).load()["a"].tolist() == [0, 1, 2]
    with pytest.raises(pickle.UnpicklingError):
        _Restricted(io.BytesIO(pickle.dumps(os.getcwd))).load()


def test_swarm_up_declares_each_lora_node_domain_from_its_data():
    from qres.node.launch import UpOptions, declared_domains
    from qres.swarm.data import SOURCES
    from qres.swarm.engine import settings_from_profile

    swarm = settings_from_profile(profiles.load("node-lora"))
    n = 2 * len(SOURCES)
    domains = declared_domains(UpOptions(nodes=n, profile="node-lora"), swarm)
    # the generated set's non-IID partition: neighbouring nodes share a source, two each
    assert domains == [f"source-{i // 2}" for i in range(n)]
