"""A swarm-round simulation of verifiable weight transitions under forgery, with stochastic audits.

``n`` nodes train linear predictors on their own shards with :mod:`qres.learning.task` (vectorised:
all honest updates of a round in one call), commit to their weights, sign their packets and keep
audit responses (:func:`qres.trust.audit.prepare`). ``f`` Byzantine nodes forge their transitions,
each with one of :data:`FORGERIES`. Every packet passes the receiver's :class:`Verifier` (the
forgers sign correctly: only audits can catch them). A seeded share of packets is audited
(:func:`qres.trust.audit.audit`); the result counts audited forged transitions caught and honest
ones flagged. After each round every node adopts the coordinate-wise median of the trained
weights (a robust stand-in for the swarm's aggregation), so audits see evolving models.

The swarm simulator may call the same pieces; ``benchmarks/trust_audit_sim.py`` runs
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


@attrs.define(eq=False)
class _AuditRun:
    """The state of one audit simulation: who is who, the verifier, the counters."""

    settings: SimSettings
    rng: Any
    shards: Any
    source: str
    train: Any
    nodes: list
    byzantine: dict  # node index -> forgery kind
    verifier: Any
    writer: Any
    counts: dict = attrs.field(factory=lambda: dict.fromkeys(_COUNTS, 0))
    by_kind: dict = attrs.field(factory=dict)
    errors: list = attrs.field(factory=list)

    def randbytes(self, n: int) -> bytes:
        """Blindings and nonces, from the run's one generator."""
        return self.rng.bytes(n)


_COUNTS = (
    "packets",
    "rejected_by_verifier",
    "audited",
    "audited_honest",
    "honest_flagged",
    "audited_forged",
    "forged_caught",
    "packet_bytes",
    "proof_bytes_on_audit",
    "audit_response_bytes",
)


def run(settings: SimSettings = SimSettings(), data: Any = None, record: Any = None) -> dict:
    """Run the simulation; returns plain data (counts, per forgery kind, bytes).

    ``record``: a binary stream to record every packet and every audit response given to an
    auditor to, in the format ``qres audit`` reads (docs/trust.md section 9).
    """
    from qres.learning import task as learning

    st = _start(settings, data, record)
    consensus = learning.zero_weights(settings.order)
    for r in range(settings.rounds):
        consensus = _round(st, r, consensus)
    if st.writer is not None:
        st.writer.finish()
    return _summary(st)


def _start(settings: SimSettings, data: Any, record: Any) -> _AuditRun:
    """Shards, identities, the Byzantine nodes and their forgeries, the verifier."""
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
    chosen = sorted(rng.choice(settings.nodes, size=settings.byzantine, replace=False))
    byzantine = {int(i): kinds[j % len(kinds)] for j, i in enumerate(chosen)}
    verifier = pk.Verifier(
        known=[n.public_key for n in nodes], window=2, future=0, dimension=settings.order
    )
    st = _AuditRun(
        settings=settings,
        rng=rng,
        shards=shards,
        source=source,
        train=train,
        nodes=nodes,
        byzantine=byzantine,
        verifier=verifier,
        writer=pk.StreamWriter(record) if record is not None else None,
    )
    st.by_kind = {k: {"nodes": 0, "audited": 0, "caught": 0, "findings": {}} for k in kinds}
    for kind in byzantine.values():
        st.by_kind[kind]["nodes"] += 1
    return st


def _round(st: _AuditRun, r: int, consensus: Any) -> Any:
    """One round: every node trains from the consensus and sends its packet; the audited
    ones are checked in one batch. Returns the next consensus (the median of the trained)."""
    import numpy as np

    from qres.learning import task as learning

    s, train = st.settings, st.train
    st.verifier.advance(r)
    nonces = [st.rng.bytes(16) for _ in range(s.nodes)]
    starts = [learning.nonce_start(nc, s.shard_len, train) for nc in nonces]
    windows = learning.windows_at(st.shards, starts, train)
    weights = np.broadcast_to(consensus, (s.nodes, s.order)).copy()
    updates = learning.local_update(weights, windows, train)
    trained = learning.train(weights, windows, train)
    before = learning.prediction_error(weights, windows, s.order)
    after = learning.prediction_error(trained, windows, s.order)
    audited = st.rng.random(s.nodes) < s.audit_rate
    last_honest_response = None
    picked = []
    for i, node in enumerate(st.nodes):
        b, a = au.to_q16(float(before[i])), au.to_q16(float(after[i]))
        claim = au.Claim(tuple(updates[i].tolist()), b, b - a)
        if i in st.byzantine:
            packet, response = _forge(
                st.byzantine[i], node, r, nonces[i], weights[i], claim, st.shards[i], train,
                st.randbytes, last_honest_response,
            )  # fmt: skip
        else:
            packet, answer = au.prepare(
                node, r, nonces[i], weights[i].tolist(), claim, randbytes=st.randbytes
            )
            response = last_honest_response = answer.encode()
        if _deliver(st, r, i, packet, response) and audited[i]:
            picked.append((i, _audit_item(st, i, packet, response)))
    # The round's audits in one batch: two group checks and one training pass for all.
    results = au.audit_many([item for _, item in picked], train, st.randbytes)
    _score(st, r, picked, results)
    return np.floor(np.median(trained, axis=0)).astype(np.int32)


def _deliver(st: _AuditRun, r: int, i: int, packet: Any, response: Any) -> bool:
    """Record and verify node ``i``'s packet; whether the verifier accepted it."""
    data_bytes = packet.encode()
    if st.writer is not None:
        st.writer.write(data_bytes, pk.RECORD_PACKET)
    st.counts["packets"] += 1
    st.counts["packet_bytes"] += len(data_bytes)
    verdict = st.verifier.check(data_bytes)
    if not verdict.ok:
        st.counts["rejected_by_verifier"] += 1
        st.errors.append(f"round {r} node {i}: verifier {verdict.reason.name}")
    return verdict.ok


def _audit_item(st: _AuditRun, i: int, packet: Any, response: Any) -> tuple:
    """Count (and record) the audit of node ``i``'s packet; the item to check."""
    st.counts["audited"] += 1
    if st.writer is not None and response is not None:
        st.writer.write(response, pk.RECORD_AUDIT)
    st.counts["proof_bytes_on_audit"] += pk.PROOF_BYTES
    st.counts["audit_response_bytes"] += len(response or b"")
    return (packet, response, st.shards[i])


def _score(st: _AuditRun, r: int, picked: list, results: list) -> None:
    """Count the audit results: forged transitions caught, honest ones flagged."""
    counts = st.counts
    for (i, _), result in zip(picked, results, strict=True):
        if i in st.byzantine:
            stats = st.by_kind[st.byzantine[i]]
            counts["audited_forged"] += 1
            stats["audited"] += 1
            finding = result.finding.value
            stats["findings"][finding] = stats["findings"].get(finding, 0) + 1
            if not result.ok:
                counts["forged_caught"] += 1
                stats["caught"] += 1
        else:
            counts["audited_honest"] += 1
            if not result.ok:
                counts["honest_flagged"] += 1
                st.errors.append(f"round {r} honest node {i}: {result.finding.value}")


def _summary(st: _AuditRun) -> dict:
    """The run's plain-data result."""
    counts = st.counts
    packet_bytes = counts["packet_bytes"]
    return {
        "settings": attrs.asdict(st.settings),
        "data": st.source,
        **counts,
        "forged_catch_rate": (
            counts["forged_caught"] / counts["audited_forged"] if counts["audited_forged"] else None
        ),
        "proof_share_of_gossip": counts["proof_bytes_on_audit"] / packet_bytes,
        "audit_response_share_of_gossip": counts["audit_response_bytes"] / packet_bytes,
        "forgeries": st.by_kind,
        "byzantine": {st.nodes[i].did: kind for i, kind in sorted(st.byzantine.items())},
        "errors": st.errors[:20],
    }
