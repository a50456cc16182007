"""pytest-benchmark suite of the trust layer: transition proofs, commitments, packets, audits.

Groups, each at 64 and 1,024 weights: ``prove`` (commit the update and prove the transition,
what a node does per round beyond signing), ``verify`` (check a proof), ``commit`` (a full
commitment, as an auditor recomputes from an opening), ``sign`` and ``check`` (encode + sign a
packet; a receiver's full check of one). Each case records the bytes it produces in
``extra_info`` (``proof_bytes``, ``packet_bytes``, ``audit_response_bytes``).

Run: .venv/bin/pytest benchmarks/bench_trust.py --benchmark-only --benchmark-group-by=group
"""

from __future__ import annotations

import hashlib
import random

import pytest

from qres.trust import audit as au
from qres.trust import commitment as cm
from qres.trust import packet as pk
from qres.trust import proof as pf
from qres.trust.identity import Identity

NODE = Identity.from_seed(hashlib.sha256(b"bench").digest())
SIZES = [64, 1024]


def _case(d: int):
    rng = random.Random(d)
    weights = [rng.randint(-(1 << 18), 1 << 18) for _ in range(d)]
    update = [rng.randint(-(1 << 12), 1 << 12) for _ in range(d)]
    model = pf.CommittedModel.create(weights, rng.randbytes)
    new, proof = model.advance(NODE.did, 7, update, rng.randbytes)
    claim = au.Claim(tuple(update), 1 << 14, 1 << 10)
    packet, response = au.prepare(NODE, 7, b"n" * 16, weights, claim, randbytes=rng.randbytes)
    return weights, update, model, new, proof, packet, response


CASES = {d: _case(d) for d in SIZES}


def _sizes(benchmark, d):
    *_, proof, packet, response = CASES[d]
    benchmark.extra_info.update(
        weights=d,
        proof_bytes=len(proof),
        packet_bytes=len(packet.encode()),
        audit_response_bytes=len(response.encode()),
    )


@pytest.mark.parametrize("d", SIZES)
def test_prove(benchmark, d):
    """A node's per-round work: move the committed model by the update and prove it."""
    _, update, model, *_ = CASES[d]
    benchmark.group = f"prove d={d}"
    _sizes(benchmark, d)
    rng = random.Random(1)
    new, proof = benchmark(model.advance, NODE.did, 7, update, rng.randbytes)
    assert pf.verify(NODE.did, 7, model.commitment, update, new.commitment, proof)


@pytest.mark.parametrize("d", SIZES)
def test_verify(benchmark, d):
    """A verifier's check of one proof (includes sum u_i G_i over the update)."""
    _, update, model, new, proof, *_ = CASES[d]
    benchmark.group = f"verify d={d}"
    _sizes(benchmark, d)
    assert benchmark(pf.verify, NODE.did, 7, model.commitment, update, new.commitment, proof)


@pytest.mark.parametrize("d", SIZES)
def test_commit(benchmark, d):
    """A full commitment to d weights (an auditor checking an opening)."""
    weights, _, model, *_ = CASES[d]
    benchmark.group = f"commit d={d}"
    assert benchmark(cm.commit, weights, model.blinding) == model.commitment


@pytest.mark.parametrize("d", SIZES)
def test_check_packet(benchmark, d):
    """A receiver's full check of a packet: decode, signature, points, replay cache."""
    *_, packet, _ = CASES[d]
    data = packet.encode()
    benchmark.group = f"check d={d}"
    _sizes(benchmark, d)

    def check():
        return pk.Verifier(known=[NODE.public_key], current_round=7).check(data)

    assert benchmark(check).ok


def _many(count: int, d: int):
    rng = random.Random(count + d)
    out = []
    for k in range(count):
        model = pf.CommittedModel.create(
            [rng.randint(-(1 << 18), 1 << 18) for _ in range(d)], rng.randbytes
        )
        update = [rng.randint(-(1 << 12), 1 << 12) for _ in range(d)]
        new, proof = model.advance(NODE.did, k, update, rng.randbytes)
        out.append((NODE.did, k, model.commitment, update, new.commitment, proof))
    return out


MANY = _many(100, 64)


@pytest.mark.parametrize("how", ["one-by-one", "batch"])
def test_verify_100_proofs(benchmark, how):
    """100 proofs at d = 64 (one round's audits in a large swarm): alone or in one batch."""
    benchmark.group = "verify 100 proofs d=64"
    rng = random.Random(5)
    if how == "batch":
        result = benchmark.pedantic(pf.verify_many, (MANY, rng.randbytes), rounds=3)
    else:
        result = benchmark.pedantic(lambda: [pf.verify(*s) for s in MANY], rounds=3)
    assert all(result)
