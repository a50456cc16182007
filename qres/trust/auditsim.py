"""A swarm-round simulation of verifiable weight transitions under forgery, with stochastic audits.

``n`` nodes train linear predictors on their own shards with :mod:`qres.learning.task` (vectorised:
all honest updates of a round in one call), commit to their weights, sign their packets and keep
audit responses (:func:`qres.trust.audit.prepare`). ``f`` Byzantine nodes forge their transitions,
each with one of :data:`FORGERIES`. Every packet passes the receiver's :class:`Verifier` (the
forgers sign correctly: only audits can catch them). A seeded share of packets is audited
(:func:`qres.trust.audit.audit`); the result counts audited forged transitions caught and honest
ones flagged. After each round every node adopts the coordinate-wise median of the trained
weights (a robust stand-in for the swarm's aggregation), so audits see evolving models.

The swarm simulator (issue 6) may call the same pieces; ``benchmarks/trust_audit_sim.py`` runs
this one from the command line.
"""

from __future__ import annotations

import hashlib
from typing import Any

import attrs

from qres.trust import audit as au
from qres.trust import packet as pk
from qres.trust.identity import Identity

#: The ways a Byzantine node forges a transition, and the audit finding each should meet.
FORGERIES: dict[str, tuple[str, ...]] = {
    # publishes a different update than the one its commitment moved by
    "tampered-update": ("bad-proof",),
    # a made-up update (sign-flipped and amplified), honestly committed and proven
    "fake-training": ("wrong-update",),
    # the real update with an inflated accuracy gain (to win gossip priority)
    "boasted-accuracy": ("wrong-accuracy",),
    # commits to other weights than base + update and cannot prove the transition
    "wrong-commitment": ("bad-proof",),
    # trains from a poisoned model while its base commits to the consensus weights
    "forged-base": ("wrong-update", "bad-opening"),
    # answers the audit with another node's response (its proof and opening)
    "replayed-proof": ("bad-response",),
    # does not answer audits at all
    "silent": ("no-response",),
}


@attrs.frozen
class SimSettings:
    """Size and seed of a run."""

    nodes: int = 100
    byzantine: int = 30
    rounds: int = 30
    audit_rate: float = 0.03
    order: int = 16
    window: int = 64
    shard_len: int = 2048
    seed: int = 0


def _shards(settings: SimSettings, data: Any, rng: Any) -> Any:
    import numpy as np

    from qres.kernel.errors import QresError
    from qres.learning import task as learning

    try:
        streams = learning.load_streams(data, min_length=settings.shard_len)
        shards, _ = learning.make_shards(
            streams, settings.nodes, settings.shard_len, iid=False, rng=rng
        )
        return shards, "corpus"
    except QresError:
        if data is not None:
            raise
    # No corpus beside the checkout: sums of sines with per-node frequencies and noise.
    t = np.arange(settings.shard_len)
    freq = rng.uniform(0.005, 0.08, size=(settings.nodes, 3))
    phase = rng.uniform(0, 6.3, size=(settings.nodes, 3))
    x = np.sin(freq[:, :, None] * t[None, None, :] + phase[:, :, None]).sum(axis=1)
    x += rng.normal(0, 0.1, size=x.shape)
    return np.clip(np.round(x * 600), -2048, 2047).astype(np.int32), "synthetic"


def _flipped(update: tuple[int, ...]) -> tuple[int, ...]:
    """A made-up update: the true one sign-flipped and amplified.

    On a flat window honest training moves nothing, and flipping zeros would forge nothing: the
    made-up update is then 1/16 in every weight, so that a counted forgery always is one.
    """
    if any(update):
        return tuple(-4 * u for u in update)
    return tuple(1 << 12 for _ in update)


def _forge(
    kind: str,
    node: Identity,
    round_: int,
    nonce: bytes,
    weights: Any,
    claim: au.Claim,
    shard: Any,
    train: Any,
    randbytes,
    honest_response: bytes | None,
):
    """(packet, audit response bytes or None) of one forged transition of ``kind``."""
    import numpy as np

    w = [int(v) for v in weights]
    if kind == "tampered-update":
        packet, response = au.prepare(node, round_, nonce, w, claim, randbytes=randbytes)
        return attrs.evolve(packet, update=_flipped(claim.update)).signed(node), response.encode()
    if kind == "fake-training":
        fake = au.Claim(_flipped(claim.update), claim.residual_error, claim.accuracy_delta)
        packet, response = au.prepare(node, round_, nonce, w, fake, randbytes=randbytes)
        return packet, response.encode()
    if kind == "boasted-accuracy":
        boast = au.Claim(claim.update, claim.residual_error, claim.accuracy_delta + (1 << 12))
        packet, response = au.prepare(node, round_, nonce, w, boast, randbytes=randbytes)
        return packet, response.encode()
    if kind == "wrong-commitment":
        packet, response = au.prepare(node, round_, nonce, w, claim, randbytes=randbytes)
        from qres.trust.proof import CommittedModel

        backdoor = [a + b + 3000 for a, b in zip(w, claim.update, strict=True)]
        other = CommittedModel.create(backdoor, randbytes)
        forged = attrs.evolve(packet, commitment=other.commitment).signed(node)
        return forged, response.encode()
    if kind == "forged-base":
        poisoned = np.asarray(w, dtype=np.int32) + np.int32(1 << 14)
        real = au.honest_claim(poisoned, shard, nonce, train)
        packet, response = au.prepare(node, round_, nonce, w, real, randbytes=randbytes)
        return packet, response.encode()
    if kind == "replayed-proof":
        packet, _ = au.prepare(node, round_, nonce, w, claim, randbytes=randbytes)
        return packet, honest_response
    if kind == "silent":
        packet, _ = au.prepare(node, round_, nonce, w, claim, randbytes=randbytes)
        return packet, None
    raise ValueError(f"unknown forgery {kind!r}")


def run(settings: SimSettings = SimSettings(), data: Any = None, record: Any = None) -> dict:
    """Run the simulation; returns plain data (counts, per forgery kind, bytes).

    ``record``: a binary stream to record every packet and every audit response given to an
    auditor to, in the format ``qres audit`` reads (docs/trust.md section 9).
    """
    import numpy as np

    from qres.learning import task as learning

    rng = np.random.default_rng(settings.seed)
    shards, source = _shards(settings, data, rng)
    train = learning.TrainSettings(order=settings.order, window=settings.window)
    seed_bytes = hashlib.sha256(b"qres-audit-sim" + settings.seed.to_bytes(8, "little"))
    nodes = [
        Identity.from_seed(hashlib.sha256(seed_bytes.digest() + i.to_bytes(4, "little")).digest())
        for i in range(settings.nodes)
    ]
    kinds = list(FORGERIES)
    byzantine = {
        int(i): kinds[j % len(kinds)]
        for j, i in enumerate(
            sorted(rng.choice(settings.nodes, size=settings.byzantine, replace=False))
        )
    }
    verifier = pk.Verifier(
        known=[n.public_key for n in nodes], window=2, future=0, dimension=settings.order
    )
    consensus = learning.zero_weights(settings.order)
    writer = pk.StreamWriter(record) if record is not None else None

    def randbytes(n: int) -> bytes:
        return rng.bytes(n)

    counts = {
        "packets": 0,
        "rejected_by_verifier": 0,
        "audited": 0,
        "audited_honest": 0,
        "honest_flagged": 0,
        "audited_forged": 0,
        "forged_caught": 0,
        "packet_bytes": 0,
        "proof_bytes_on_audit": 0,
        "audit_response_bytes": 0,
    }
    by_kind = {k: {"nodes": 0, "audited": 0, "caught": 0, "findings": {}} for k in kinds}
    for kind in byzantine.values():
        by_kind[kind]["nodes"] += 1
    errors = []
    for r in range(settings.rounds):
        verifier.advance(r)
        nonces = [rng.bytes(16) for _ in range(settings.nodes)]
        starts = [learning.nonce_start(nc, settings.shard_len, train) for nc in nonces]
        windows = learning.windows_at(shards, starts, train)
        weights = np.broadcast_to(consensus, (settings.nodes, settings.order)).copy()
        updates = learning.local_update(weights, windows, train)
        trained = learning.train(weights, windows, train)
        before = learning.prediction_error(weights, windows, settings.order)
        after = learning.prediction_error(trained, windows, settings.order)
        audited = rng.random(settings.nodes) < settings.audit_rate
        last_honest_response = None
        picked = []
        for i, node in enumerate(nodes):
            b, a = au.to_q16(float(before[i])), au.to_q16(float(after[i]))
            claim = au.Claim(tuple(updates[i].tolist()), b, b - a)
            if i in byzantine:
                packet, response = _forge(
                    byzantine[i],
                    node,
                    r,
                    nonces[i],
                    weights[i],
                    claim,
                    shards[i],
                    train,
                    randbytes,
                    last_honest_response,
                )
            else:
                packet, answer = au.prepare(
                    node, r, nonces[i], weights[i].tolist(), claim, randbytes=randbytes
                )
                response = answer.encode()
                last_honest_response = response
            data_bytes = packet.encode()
            if writer is not None:
                writer.write(data_bytes, pk.RECORD_PACKET)
            counts["packets"] += 1
            counts["packet_bytes"] += len(data_bytes)
            verdict = verifier.check(data_bytes)
            if not verdict.ok:
                counts["rejected_by_verifier"] += 1
                errors.append(f"round {r} node {i}: verifier {verdict.reason.name}")
                continue
            if not audited[i]:
                continue
            counts["audited"] += 1
            if writer is not None and response is not None:
                writer.write(response, pk.RECORD_AUDIT)
            counts["proof_bytes_on_audit"] += pk.PROOF_BYTES
            counts["audit_response_bytes"] += len(response or b"")
            picked.append((i, (packet, response, shards[i])))
        # The round's audits in one batch: two group checks and one training pass for all.
        results = au.audit_many([item for _, item in picked], train, randbytes)
        for (i, _), result in zip(picked, results, strict=True):
            if i in byzantine:
                stats = by_kind[byzantine[i]]
                counts["audited_forged"] += 1
                stats["audited"] += 1
                stats["findings"][result.finding.value] = (
                    stats["findings"].get(result.finding.value, 0) + 1
                )
                if not result.ok:
                    counts["forged_caught"] += 1
                    stats["caught"] += 1
            else:
                counts["audited_honest"] += 1
                if not result.ok:
                    counts["honest_flagged"] += 1
                    errors.append(f"round {r} honest node {i}: {result.finding.value}")
        consensus = np.floor(np.median(trained, axis=0)).astype(np.int32)
    packet_bytes = counts["packet_bytes"]
    return {
        "settings": attrs.asdict(settings),
        "data": source,
        **counts,
        "forged_catch_rate": (
            counts["forged_caught"] / counts["audited_forged"] if counts["audited_forged"] else None
        ),
        "proof_share_of_gossip": counts["proof_bytes_on_audit"] / packet_bytes,
        "audit_response_share_of_gossip": counts["audit_response_bytes"] / packet_bytes,
        "forgeries": by_kind,
        "byzantine": {nodes[i].did: kind for i, kind in sorted(byzantine.items())},
        "errors": errors[:20],
    }
