"""Audits of weight transitions: open the base commitment, check the proof, re-run training.

A node's round, as the swarm runs it: from its current Q16.16 weights ``w`` and its shard, the
packet nonce picks a training window (:func:`qres.learning.task.nonce_start`), and
:func:`qres.learning.task.local_update` gives the update. The node commits to ``w`` (the packet's
base), to ``w + update`` (the new commitment), proves the transition (:mod:`qres.trust.proof`)
and keeps the proof with the opening of the base for an auditor (:func:`prepare`).

An auditor holding the node's shard checks an audit response against the signed packet
(:func:`audit`): the opening, the proof, and that re-running the training from the opened
weights on the nonce's window gives exactly the claimed update, residual error and accuracy
delta. All of it is integer arithmetic (or correctly rounded IEEE operations on integers), so
an honest node matches bit for bit and is never flagged. docs/trust.md section 8.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Sequence
from typing import Any

import attrs

from qres.fixed.q16 import from_float
from qres.trust import commitment as cm
from qres.trust import packet as pk
from qres.trust.identity import verify_signature
from qres.trust.proof import CommittedModel
from qres.trust.proof import verify as verify_proof


class Finding(enum.Enum):
    """The outcome of one audit; anything but OK is a failed audit."""

    OK = "ok"
    BAD_PACKET = "bad-packet"
    NO_RESPONSE = "no-response"
    BAD_RESPONSE = "bad-response"
    BAD_OPENING = "bad-opening"
    BAD_PROOF = "bad-proof"
    WRONG_UPDATE = "wrong-update"
    WRONG_ACCURACY = "wrong-accuracy"
    #: The round step that produced the base cannot be checked as handed over (its record
    #: does not match the packet's digest, its start or an input is missing or not signed).
    BAD_STEP = "bad-step"
    #: Replaying the committed round step does not give the packet's base (base poisoning).
    WRONG_STEP = "wrong-step"


@attrs.frozen
class AuditResult:
    """What an audit found about one packet."""

    finding: Finding
    did: str
    round: int
    detail: str = ""

    @property
    def ok(self) -> bool:
        """True when the transition checked out."""
        return self.finding is Finding.OK


@attrs.frozen
class Claim:
    """What a node claims for one round: its update and the metrics the packet carries."""

    update: tuple[int, ...]
    residual_error: int
    accuracy_delta: int


def to_q16(value: float) -> int:
    """A non-negative-range float as Q16.16, rounded to nearest (ties up), clamped to int32."""
    return from_float(value)


def training_window(shard: Any, nonce: bytes, settings: Any) -> Any:
    """The ``(1, order + window)`` window of ``shard`` that ``nonce`` selects."""
    import numpy as np

    from qres.learning import task as learning

    row = np.asarray(shard, dtype=np.int32).reshape(1, -1)
    start = learning.nonce_start(nonce, row.shape[1], settings)
    return learning.windows_at(row, [start], settings)


def honest_claim(weights: Any, shard: Any, nonce: bytes, settings: Any) -> Claim:
    """The claim an honest node makes: the update of :func:`qres.learning.task.local_update` on the
    nonce's window, the residual error of ``weights`` there and how much training improved it
    (both Q16.16, relative to the data range)."""
    import numpy as np

    from qres.learning import task as learning

    w = np.asarray(weights, dtype=np.int32).reshape(1, -1)
    window = training_window(shard, nonce, settings)
    update = learning.local_update(w, window, settings)[0]
    new = learning.train(w, window, settings)
    before = to_q16(float(learning.prediction_error(w, window, settings.order)[0]))
    after = to_q16(float(learning.prediction_error(new, window, settings.order)[0]))
    return Claim(tuple(update.tolist()), before, before - after)


def prepare(
    identity: Any,
    round_: int,
    nonce: bytes,
    weights: Sequence[int],
    claim: Claim,
    *,
    randbytes=os.urandom,
    inline_proof: bool = False,
    step: bytes = pk.GENESIS_STEP,
) -> tuple[pk.UpdatePacket, pk.AuditResponse]:
    """The signed packet for ``claim`` (committing to ``weights`` and ``weights + update``) and
    the audit response the node keeps until asked. ``inline_proof`` puts the proof in the
    packet too (for recordings; gossip leaves it out, docs/trust.md section 6). ``step``: the
    digest of the round step that produced ``weights`` (:mod:`qres.trust.roundstep`)."""
    base = CommittedModel.create(weights, randbytes)
    new, proof = base.advance(identity.did, round_, claim.update, randbytes)
    packet = pk.make_packet(
        identity,
        round_,
        nonce,
        claim.update,
        base=base.commitment,
        commitment=new.commitment,
        residual_error=claim.residual_error,
        accuracy_delta=claim.accuracy_delta,
        proof=proof if inline_proof else None,
        step=step,
    )
    response = pk.AuditResponse(
        identity.public_key, round_, nonce, cm.scalar_bytes(base.blinding), base.weights, proof
    ).signed(identity)
    return packet, response


def _open(packet: pk.UpdatePacket, response: bytes | None):
    """The checks before any group arithmetic: packet signature, response form, identity and
    signature, weight count. Returns ``(failure, None)`` or ``(None, (answer, blinding))``."""
    did, r = packet.did, packet.round

    def fail(finding: Finding, detail: str):
        return AuditResult(finding, did, r, detail), None

    try:
        body = packet.body()
    except pk.PacketError as exc:
        return fail(Finding.BAD_PACKET, str(exc))
    if not verify_signature(packet.sender, packet.signature, body):
        return fail(Finding.BAD_PACKET, "packet signature does not verify")
    if response is None:
        return fail(Finding.NO_RESPONSE, "the node did not answer the audit")
    try:
        answer = pk.decode_audit(response)
        blinding = cm.parse_scalar(answer.blinding, "audit response: blinding")
    except pk.IntegrityError as exc:
        return fail(Finding.BAD_RESPONSE, str(exc))
    if (answer.sender, answer.round, answer.nonce) != (packet.sender, r, packet.nonce):
        return fail(Finding.BAD_RESPONSE, "response is for another packet")
    if not answer.verify_signature():
        return fail(Finding.BAD_RESPONSE, "response signature does not verify")
    if len(answer.weights) != len(packet.update):
        return fail(Finding.BAD_OPENING, "opened weights differ in number")
    return None, (answer, blinding)


_BAD_OPENING = "weights do not open the base commitment"
_BAD_PROOF = "new commitment is not base + update"


def check_response(packet: pk.UpdatePacket, response: bytes | None) -> AuditResult:
    """The cryptographic half of an audit: packet signature, response form and signature, the
    opening of the base commitment and the transition proof. OK means only these passed."""
    failure, opened = _open(packet, response)
    if failure is not None:
        return failure
    answer, blinding = opened
    did, r = packet.did, packet.round
    if not cm.verify_opening(packet.base, answer.weights, blinding):
        return AuditResult(Finding.BAD_OPENING, did, r, _BAD_OPENING)
    if not verify_proof(did, r, packet.base, packet.update, packet.commitment, answer.proof):
        return AuditResult(Finding.BAD_PROOF, did, r, _BAD_PROOF)
    return AuditResult(Finding.OK, did, r)


def audit(
    packet: pk.UpdatePacket, response: bytes | None, shard: Any, settings: Any
) -> AuditResult:
    """A full audit of one packet: :func:`check_response`, then re-run the node's training from
    the opened weights on the window its nonce picks and compare update and metrics exactly."""
    result = check_response(packet, response)
    if not result.ok:
        return result
    answer = pk.decode_audit(response)
    if len(answer.weights) != settings.order:
        return AuditResult(
            Finding.WRONG_UPDATE,
            result.did,
            result.round,
            f"{len(answer.weights)} weights, the model has {settings.order}",
        )
    expected = honest_claim(answer.weights, shard, packet.nonce, settings)
    return _compare(packet, expected)


def _claims(weights: Any, shards: Sequence[Any], nonces: Sequence[bytes], settings: Any) -> list:
    """:func:`honest_claim` for many nodes in one vectorised pass (rows are independent, so
    each equals the single-node result bit for bit)."""
    import numpy as np

    from qres.learning import task as learning

    w = np.asarray(weights, dtype=np.int32).reshape(len(nonces), -1)
    lengths = {int(np.asarray(sh).shape[-1]) for sh in shards}
    if len(lengths) != 1:  # shards of different lengths: one node at a time
        return [honest_claim(w[i], shards[i], nonces[i], settings) for i in range(len(nonces))]
    rows = np.stack([np.asarray(sh, dtype=np.int32).reshape(-1) for sh in shards])
    starts = [learning.nonce_start(n, rows.shape[1], settings) for n in nonces]
    windows = learning.windows_at(rows, starts, settings)
    updates = learning.local_update(w, windows, settings)
    new = learning.train(w, windows, settings)
    before = learning.prediction_error(w, windows, settings.order)
    after = learning.prediction_error(new, windows, settings.order)
    out = []
    for i in range(len(nonces)):
        b, a = to_q16(float(before[i])), to_q16(float(after[i]))
        out.append(Claim(tuple(updates[i].tolist()), b, b - a))
    return out


def audit_many(
    items: Sequence[tuple[pk.UpdatePacket, bytes | None, Any]],
    settings: Any,
    randbytes=os.urandom,
) -> list[AuditResult]:
    """:func:`audit` for many ``(packet, response, shard)`` at once, with the same results.

    Openings and proofs are checked as two random linear combinations
    (:func:`qres.trust.commitment.verify_openings`, :func:`qres.trust.proof.verify_many`),
    and the training of every node is re-run in one vectorised :mod:`qres.learning.task` call.
    ``randbytes`` must be unpredictable to the audited nodes (the default is the OS's).
    """
    from qres.trust.proof import verify_many

    results: list[AuditResult | None] = [None] * len(items)
    opened: dict[int, tuple[pk.AuditResponse, int]] = {}
    for i, (packet, response, _) in enumerate(items):
        results[i], pair = _open(packet, response)
        if pair is not None:
            opened[i] = pair
    keys = list(opened)
    openings = cm.verify_openings(
        [(items[i][0].base, opened[i][0].weights, opened[i][1]) for i in keys], randbytes
    )
    for i, ok in zip(keys, openings, strict=True):
        if not ok:
            packet = items[i][0]
            results[i] = AuditResult(Finding.BAD_OPENING, packet.did, packet.round, _BAD_OPENING)
    keys = [i for i in keys if results[i] is None]
    proofs = verify_many(
        [
            (
                items[i][0].did,
                items[i][0].round,
                items[i][0].base,
                items[i][0].update,
                items[i][0].commitment,
                opened[i][0].proof,
            )
            for i in keys
        ],
        randbytes,
    )
    for i, ok in zip(keys, proofs, strict=True):
        if not ok:
            packet = items[i][0]
            results[i] = AuditResult(Finding.BAD_PROOF, packet.did, packet.round, _BAD_PROOF)
    keys = [i for i in keys if results[i] is None]
    for i in [i for i in keys if len(opened[i][0].weights) != settings.order]:
        packet = items[i][0]
        results[i] = AuditResult(
            Finding.WRONG_UPDATE,
            packet.did,
            packet.round,
            f"{len(packet.update)} weights, the model has {settings.order}",
        )
    keys = [i for i in keys if results[i] is None]
    if keys:
        claims = _claims(
            [opened[i][0].weights for i in keys],
            [items[i][2] for i in keys],
            [items[i][0].nonce for i in keys],
            settings,
        )
        for i, expected in zip(keys, claims, strict=True):
            results[i] = _compare(items[i][0], expected)
    return results


def _compare(packet: pk.UpdatePacket, expected: Claim) -> AuditResult:
    """The training half of an audit: the packet's claim against the re-run."""
    did, r = packet.did, packet.round
    if expected.update != packet.update:
        wrong = sum(a != b for a, b in zip(expected.update, packet.update, strict=True))
        return AuditResult(
            Finding.WRONG_UPDATE,
            did,
            r,
            f"{wrong} of {len(packet.update)} update values differ from training",
        )
    if (expected.residual_error, expected.accuracy_delta) != (
        packet.residual_error,
        packet.accuracy_delta,
    ):
        return AuditResult(
            Finding.WRONG_ACCURACY,
            did,
            r,
            f"claimed error {packet.residual_error} / delta {packet.accuracy_delta}, training "
            f"gives {expected.residual_error} / {expected.accuracy_delta} (Q16.16)",
        )
    return AuditResult(Finding.OK, did, r)


@attrs.frozen
class StreamFailure:
    """One failed check in a recorded stream: where, whose, which round, what and why."""

    record: int
    did: str
    round: int | None
    check: str
    detail: str

    def as_dict(self) -> dict:
        """Plain data for JSON."""
        return attrs.asdict(self)


@attrs.define
class SenderSummary:
    """Per-sender counts over a recorded stream."""

    did: str
    packets: int = 0
    proofs_verified: int = 0
    audits_passed: int = 0
    steps_verified: int = 0
    linked: int = 0
    rebased: int = 0
    failures: int = 0
    rounds: set = attrs.field(factory=set)
    last_commitment: bytes | None = None

    def as_dict(self) -> dict:
        """Plain data for JSON (rounds as a count and range)."""
        return {
            "did": self.did,
            "packets": self.packets,
            "rounds": len(self.rounds),
            "first_round": min(self.rounds) if self.rounds else None,
            "last_round": max(self.rounds) if self.rounds else None,
            "proofs_verified": self.proofs_verified,
            "audits_passed": self.audits_passed,
            "steps_verified": self.steps_verified,
            "linked": self.linked,
            "rebased": self.rebased,
            "failures": self.failures,
        }


@attrs.define
class StreamReport:
    """The outcome of :func:`audit_stream`."""

    records: int = 0
    packets: int = 0
    audit_responses: int = 0
    senders: dict = attrs.field(factory=dict)
    failures: list = attrs.field(factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing failed."""
        return not self.failures

    def as_dict(self) -> dict:
        """Plain data for JSON, senders in DID order."""
        return {
            "ok": self.ok,
            "records": self.records,
            "packets": self.packets,
            "audit_responses": self.audit_responses,
            "senders": [self.senders[k].as_dict() for k in sorted(self.senders)],
            "failures": [f.as_dict() for f in self.failures],
        }


def audit_stream(
    stream: Any, where: str = "stream", window: int | None = None, rule: Any = None
) -> StreamReport:
    """Verify a recorded packet stream (docs/trust.md section 9).

    Per packet: decoding, signature, replays (same sender, round and nonce), staleness (older
    than ``window`` rounds behind the newest round seen, when given), equivocation (two
    different packets from one sender for one round), commitment points and, when the packet
    carries one, its proof. Per audit response: the matching packet exists and
    :func:`check_response` passes (opening and proof). Each sender's commitment chain is
    counted as linked (base = its previous new commitment) or rebased. With ``rule`` (the
    swarm's ``aggregate(rows, weights)``), the round step of each audited packet is replayed
    from the evidence record that follows its response
    (:func:`qres.trust.roundstep.check_step`; ``bad-step``, ``wrong-step``).
    """
    report = StreamReport()
    seen = _Seen()

    def fail(record: int, did: str, round_: int | None, check: str, detail: str) -> None:
        report.failures.append(StreamFailure(record, did, round_, check, detail))
        if did in report.senders:
            report.senders[did].failures += 1

    number = 0
    pending = None  # an audited packet whose round-step evidence must come next
    try:
        for kind, data in pk.read_stream(stream, where):
            number += 1
            report.records = number
            if pending is not None and kind != pk.RECORD_STEP:
                _missing_step(pending, fail)
                pending = None
            if kind == pk.RECORD_AUDIT:
                report.audit_responses += 1
                opened = _audit_record(number, data, seen.packets, report, fail)
                if opened is not None and rule is not None:
                    pending = _step_due(number, *opened, seen, report, fail)
            elif kind == pk.RECORD_STEP:
                if pending is None:
                    fail(number, "?", None, "orphan-step", "round-step evidence after no audit")
                elif rule is not None:
                    _step_record(number, data, pending, rule, report, fail)
                pending = None
            else:
                report.packets += 1
                _packet_record(number, data, seen, window, report, fail)
        if pending is not None:
            _missing_step(pending, fail)
    except pk.PacketError as exc:
        fail(number + 1, "?", None, "bad-stream", str(exc))
    return report


@attrs.define
class _Seen:
    """What :func:`audit_stream` has read so far: every packet by (sender, round, nonce), the
    first packet of each sender and round, each sender's earliest packet, and the newest
    round."""

    packets: dict[tuple[bytes, int, bytes], pk.UpdatePacket] = attrs.field(factory=dict)
    by_round: dict[tuple[bytes, int], pk.UpdatePacket] = attrs.field(factory=dict)
    earliest: dict[bytes, pk.UpdatePacket] = attrs.field(factory=dict)
    newest: int | None = None


def _step_due(number: int, packet, opened, seen: _Seen, report, fail):
    """After a passed audit: a genesis claim is checked now (against the sender's earlier
    packets); any other base waits for its evidence record, returned as pending."""
    from qres.trust import roundstep as rs

    earlier = seen.earliest.get(packet.sender)
    if packet.step != pk.GENESIS_STEP:
        return (number, packet, opened, earlier)
    result = rs.check_step(packet, opened, None, _no_rule, earlier=earlier)
    if result.ok:
        report.senders[packet.did].steps_verified += 1
    else:
        fail(number, packet.did, packet.round, result.finding.value, result.detail)
    return None


def _no_rule(rows, weights):  # a genesis claim replays nothing
    raise AssertionError("no aggregate to replay for a genesis base")


def _missing_step(pending, fail) -> None:
    number, packet, _, _ = pending
    detail = "no round-step evidence follows the audit response of a non-genesis base"
    fail(number, packet.did, packet.round, "bad-step", detail)


def _step_record(number: int, data: bytes, pending, rule, report, fail) -> None:
    """Replay the round step of the audited packet before it from its evidence."""
    from qres.trust import roundstep as rs

    _, packet, opened, earlier = pending
    try:
        evidence = rs.decode_evidence(data)
    except pk.PacketError as exc:
        fail(number, packet.did, packet.round, "bad-step", str(exc))
        return
    result = rs.check_step(packet, opened, evidence, rule, earlier=earlier)
    if result.ok:
        report.senders[packet.did].steps_verified += 1
    else:
        fail(number, packet.did, packet.round, result.finding.value, result.detail)


def _packet_record(number: int, data: bytes, seen: _Seen, window, report, fail) -> None:
    """Check one update packet of a stream (the packet checks of :func:`audit_stream`)."""
    try:
        packet = pk.decode(data)
    except pk.PacketError as exc:
        fail(number, "?", None, exc.reason.name.lower().replace("_", "-"), str(exc))
        return
    did, r = packet.did, packet.round
    summary = report.senders.setdefault(did, SenderSummary(did))
    summary.packets += 1
    if not verify_signature(packet.sender, packet.signature, data[: -pk.SIGNATURE_BYTES]):
        fail(number, did, r, "bad-signature", "signature does not verify")
        return
    key = (packet.sender, r, packet.nonce)
    if key in seen.packets:
        fail(number, did, r, "replay", "same sender, round and nonce as an earlier packet")
        return
    seen.packets[key] = packet
    if window is not None and seen.newest is not None and r < seen.newest - window:
        fail(number, did, r, "stale-round", f"{seen.newest - r} rounds behind round {seen.newest}")
    seen.newest = r if seen.newest is None else max(seen.newest, r)
    earlier = seen.by_round.get((packet.sender, r))
    if earlier is not None and earlier.encode() != packet.encode():
        fail(number, did, r, "equivocation", "a second, different update for this round")
    seen.by_round.setdefault((packet.sender, r), packet)
    first = seen.earliest.get(packet.sender)
    if first is None or r < first.round:
        seen.earliest[packet.sender] = packet
    summary.rounds.add(r)
    if not (cm.is_valid_point(packet.base) and cm.is_valid_point(packet.commitment)):
        fail(number, did, r, "bad-point", "a commitment is not a prime-order point")
        return
    _chain_and_proof(number, packet, summary, fail)


def _chain_and_proof(number: int, packet: pk.UpdatePacket, summary: SenderSummary, fail) -> None:
    """Count the sender's commitment chain as linked or rebased; verify the packet's proof."""
    if summary.last_commitment is not None:
        if packet.base == summary.last_commitment:
            summary.linked += 1
        else:
            summary.rebased += 1
    summary.last_commitment = packet.commitment
    if packet.proof is None:
        return
    did, r = packet.did, packet.round
    if verify_proof(did, r, packet.base, packet.update, packet.commitment, packet.proof):
        summary.proofs_verified += 1
    else:
        fail(number, did, r, "bad-proof", "new commitment is not base + update")


def _audit_record(number: int, data: bytes, packets: dict, report: StreamReport, fail):
    """Check one audit response; ``(packet, opened weights)`` when it passed, else None."""
    try:
        answer = pk.decode_audit(data)
    except pk.PacketError as exc:
        fail(number, "?", None, "bad-response", str(exc))
        return None
    from qres.trust.identity import did_of

    did = did_of(answer.sender)
    packet = packets.get((answer.sender, answer.round, answer.nonce))
    if packet is None:
        fail(number, did, answer.round, "orphan-response", "no earlier packet with this nonce")
        return None
    result = check_response(packet, data)
    if result.ok:
        report.senders[did].audits_passed += 1
        return packet, answer.weights
    fail(number, did, answer.round, result.finding.value, result.detail)
    return None
