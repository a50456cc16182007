"""Pedersen commitments, transition proofs and audits: honest transitions verify, every kind of
forgery fails."""

from __future__ import annotations

import hashlib
import random

import attrs
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qres.kernel.errors import IntegrityError
from qres.learning import task as learning
from qres.trust import audit as au
from qres.trust import commitment as cm
from qres.trust import packet as pk
from qres.trust import proof as pf
from qres.trust.identity import Identity

ALICE = Identity.from_seed(hashlib.sha256(b"alice").digest())
BOB = Identity.from_seed(hashlib.sha256(b"bob").digest())


def _rand(seed: int):
    rng = random.Random(seed)
    return lambda n: rng.randbytes(n)


def test_generators_are_distinct_subgroup_points_from_hashes():
    gens = cm.generators(40)
    h = cm.generator_h()
    assert len(set(gens + [h])) == 41
    assert all(cm.is_valid_point(p) for p in gens + [h])
    assert cm.generators(3) == gens[:3]  # derived once, stable
    assert gens[0] == cm.hash_to_point(cm.DOMAIN_G + b"\0\0\0\0")
    # H is not a small multiple of G_0 (what a "2G"-style choice would give).
    assert all(cm.mul(k, gens[0]) != h for k in range(1, 64))


def test_negative_weights_map_to_l_minus_abs():
    g = cm.generators(1)
    assert cm.commit_vector([-5]) == cm.mul(cm.L - 5, g[0])
    assert cm.scalar_of(-5) == cm.L - 5


@settings(max_examples=20, deadline=None)
@given(
    st.lists(st.integers(-(1 << 31), (1 << 31) - 1), min_size=1, max_size=6),
    st.integers(1, cm.L - 1),
    st.integers(1, cm.L - 1),
)
def test_commitments_add_like_vectors(w, r1, r2):
    u = [(v * 7 + 3) % 1000 - 500 for v in w]
    total = cm.commit([a + b for a, b in zip(w, u, strict=True)], r1 + r2)
    assert cm.add(cm.commit(w, r1), cm.commit(u, r2)) == total
    assert cm.verify_opening(cm.commit(w, r1), w, r1)
    assert not cm.verify_opening(cm.commit(w, r1), [w[0] + 1, *w[1:]], r1)
    assert not cm.verify_opening(cm.commit(w, r1), w, r1 + 1)


def test_bad_points_and_scalars_are_refused():
    for bad in [cm.IDENTITY, b"\xff" * 32, b"\0" * 32, b"\1" * 31, bytes(33)]:
        assert not cm.is_valid_point(bad)
        with pytest.raises(IntegrityError):
            cm.check_point(bad)
    # The order-2 point (0, -1), and a subgroup point plus it (off the prime-order subgroup).
    order2 = (2**255 - 20).to_bytes(32, "little")
    import nacl.bindings

    mixed = nacl.bindings.crypto_core_ed25519_add(cm.generators(1)[0], order2)
    assert not cm.is_valid_point(order2)
    assert not cm.is_valid_point(mixed)
    with pytest.raises(IntegrityError):
        cm.parse_scalar(cm.L.to_bytes(32, "little"))


@pytest.fixture(scope="module")
def honest():
    model = pf.CommittedModel.create([1 << 16, -(3 << 15), 0, 12345, -1], _rand(1))
    update = [100, -200, 0, 65536, -(1 << 20)]
    new, proof = model.advance(ALICE.did, 7, update, _rand(2))
    return model, new, update, proof


def test_honest_transition_verifies(honest):
    model, new, update, proof = honest
    assert len(proof) == pf.PROOF_BYTES
    assert pf.verify(ALICE.did, 7, model.commitment, update, new.commitment, proof)
    assert new.weights == tuple(a + b for a, b in zip(model.weights, update, strict=True))
    assert cm.verify_opening(new.commitment, new.weights, new.blinding)


def test_proofs_are_deterministic(honest):
    model, new, update, proof = honest
    again = pf.prove(
        ALICE.did, 7, model.commitment, update, new.commitment, new.blinding - model.blinding
    )
    assert again == proof


def test_forged_previous_commitment_fails(honest):
    model, new, update, proof = honest
    other = pf.CommittedModel.create(model.weights, _rand(9))  # same weights, other base
    assert not pf.verify(ALICE.did, 7, other.commitment, update, new.commitment, proof)


def test_tampered_update_fails(honest):
    model, new, update, proof = honest
    for i in range(len(update)):
        tampered = list(update)
        tampered[i] += 1
        assert not pf.verify(ALICE.did, 7, model.commitment, tampered, new.commitment, proof)


def test_replay_for_another_node_or_round_fails(honest):
    model, new, update, proof = honest
    assert not pf.verify(BOB.did, 7, model.commitment, update, new.commitment, proof)
    assert not pf.verify(ALICE.did, 8, model.commitment, update, new.commitment, proof)


def test_wrong_key_fails(honest):
    model, new, update, _ = honest
    wrong = pf.prove(
        ALICE.did, 7, model.commitment, update, new.commitment, new.blinding - model.blinding + 1
    )
    assert not pf.verify(ALICE.did, 7, model.commitment, update, new.commitment, wrong)


def test_commitment_to_other_weights_cannot_be_proven(honest):
    model, _, update, _ = honest
    # The node commits to weights that are not base + update and tries the best it can.
    lie = pf.CommittedModel.create(
        [w + u + 1 for w, u in zip(model.weights, update, strict=True)], _rand(5)
    )
    proof = pf.prove(
        ALICE.did, 7, model.commitment, update, lie.commitment, lie.blinding - model.blinding
    )
    assert not pf.verify(ALICE.did, 7, model.commitment, update, lie.commitment, proof)


def test_malformed_proofs_verify_false(honest):
    model, new, update, proof = honest
    for bad in [
        b"",
        proof[:63],
        proof + b"\0",
        cm.IDENTITY + proof[32:],
        proof[:32] + cm.L.to_bytes(32, "little"),
    ]:
        assert not pf.verify(ALICE.did, 7, model.commitment, update, new.commitment, bad)
    with pytest.raises(IntegrityError):
        pf.parse_proof(proof[:10])


SETTINGS = learning.TrainSettings(order=8, window=48)
SHARD = (np.sin(np.arange(1500) * 0.07) * 1200 + np.cos(np.arange(1500) * 0.31) * 300).astype(
    np.int32
)


@pytest.fixture(scope="module")
def audited():
    weights = np.full(8, 1 << 13, np.int32)
    nonce = b"audit-nonce-0001"
    claim = au.honest_claim(weights, SHARD, nonce, SETTINGS)
    packet, response = au.prepare(ALICE, 3, nonce, weights.tolist(), claim, randbytes=_rand(3))
    return weights, nonce, claim, packet, response


def test_honest_audit_passes(audited):
    _, _, claim, packet, response = audited
    assert any(claim.update) and claim.residual_error > 0
    result = au.audit(packet, response.encode(), SHARD, SETTINGS)
    assert result.ok, result


def test_audit_catches_each_forgery(audited):
    weights, nonce, claim, packet, response = audited
    find = au.Finding

    def run(p, r):
        return au.audit(p, r, SHARD, SETTINGS).finding

    assert run(packet, None) is find.NO_RESPONSE
    assert run(packet, b"garbage") is find.BAD_RESPONSE
    other_round = au.prepare(ALICE, 4, nonce, weights.tolist(), claim, randbytes=_rand(4))[1]
    assert run(packet, other_round.encode()) is find.BAD_RESPONSE
    forged_sig = bytearray(response.encode())
    forged_sig[-1] ^= 1
    assert run(packet, bytes(forged_sig)) is find.BAD_RESPONSE
    # Opening other weights than the base commits to.
    lie = pk.AuditResponse(
        ALICE.public_key,
        3,
        nonce,
        response.blinding,
        [w + 1 for w in response.weights],
        response.proof,
    ).signed(ALICE)
    assert run(packet, lie.encode()) is find.BAD_OPENING
    # Publishing a tampered update beside a commitment and proof for the real one.
    tampered = pk.make_packet(
        ALICE,
        3,
        nonce,
        [u * 2 for u in claim.update],
        base=packet.base,
        commitment=packet.commitment,
        residual_error=claim.residual_error,
        accuracy_delta=claim.accuracy_delta,
    )
    assert run(tampered, response.encode()) is find.BAD_PROOF
    # A made-up update, honestly committed and proven: only re-running training catches it.
    fake = au.Claim(tuple(-u for u in claim.update), claim.residual_error, claim.accuracy_delta)
    p, r = au.prepare(ALICE, 3, nonce, weights.tolist(), fake, randbytes=_rand(6))
    assert run(p, r.encode()) is find.WRONG_UPDATE
    # The real update with a boasted accuracy gain.
    boast = au.Claim(claim.update, claim.residual_error, claim.accuracy_delta + 1)
    p, r = au.prepare(ALICE, 3, nonce, weights.tolist(), boast, randbytes=_rand(7))
    assert run(p, r.encode()) is find.WRONG_ACCURACY
    # A packet whose signature does not verify is not the node's claim at all.
    unsigned = attrs.evolve(packet, signature=bytes(64))
    assert run(unsigned, response.encode()) is find.BAD_PACKET


@pytest.fixture(scope="module")
def batch():
    rng = random.Random(11)
    statements, openings = [], []
    for k in range(6):
        did = f"did:qres:{k:064x}"
        model = pf.CommittedModel.create(
            [rng.randint(-9999, 9999) for _ in range(5)], rng.randbytes
        )
        update = [rng.randint(-500, 500) for _ in range(5)]
        new, proof = model.advance(did, k, update, rng.randbytes)
        statements.append((did, k, model.commitment, update, new.commitment, proof))
        openings.append((model.commitment, model.weights, model.blinding))
    return statements, openings


@settings(max_examples=15, deadline=None)
@given(st.sets(st.integers(0, 5), max_size=3), st.integers(0, 3))
def test_batch_proof_check_names_exactly_the_bad_ones(batch, bad, how):
    statements = list(batch[0])
    for i in bad:
        did, k, base, update, new, proof = statements[i]
        if how == 0:
            update = [update[0] + 1, *update[1:]]
        elif how == 1:
            k += 1
        elif how == 2:
            proof = proof[:40] + bytes([proof[40] ^ 1]) + proof[41:]
        else:
            proof = b"short"
        statements[i] = (did, k, base, update, new, proof)
    ok = pf.verify_many(statements, _rand(len(bad) + how))
    assert ok == [i not in bad for i in range(6)]
    assert ok == [pf.verify(*s) for s in statements]


@settings(max_examples=15, deadline=None)
@given(st.sets(st.integers(0, 5), max_size=3))
def test_batch_opening_check_names_exactly_the_bad_ones(batch, bad):
    openings = [
        (c, (w[0] + 1, *w[1:]) if i in bad else w, r) for i, (c, w, r) in enumerate(batch[1])
    ]
    assert cm.verify_openings(openings, _rand(len(bad))) == [i not in bad for i in range(6)]
    assert cm.verify_openings([], _rand(0)) == []


def test_audit_many_agrees_with_audit(audited):
    weights, nonce, claim, packet, response = audited
    fake = au.Claim(tuple(-u for u in claim.update), claim.residual_error, claim.accuracy_delta)
    boast = au.Claim(claim.update, claim.residual_error, claim.accuracy_delta + 1)
    items = [(packet, response.encode(), SHARD), (packet, None, SHARD)]
    for seed, c in enumerate([fake, boast, claim]):
        p, r = au.prepare(ALICE, 3, nonce, weights.tolist(), c, randbytes=_rand(20 + seed))
        items.append((p, r.encode(), SHARD))
    lie = pk.AuditResponse(
        ALICE.public_key,
        3,
        nonce,
        response.blinding,
        [w + 1 for w in response.weights],
        response.proof,
    ).signed(ALICE)
    items.append((packet, lie.encode(), SHARD))
    tampered = attrs.evolve(packet, update=tuple(2 * u for u in packet.update)).signed(ALICE)
    items.append((tampered, response.encode(), SHARD))
    many = au.audit_many(items, SETTINGS, _rand(99))
    one = [au.audit(p, r, s, SETTINGS) for p, r, s in items]
    assert many == one
    assert [x.finding.value for x in many] == [
        "ok",
        "no-response",
        "wrong-update",
        "wrong-accuracy",
        "ok",
        "bad-opening",
        "bad-proof",
    ]
