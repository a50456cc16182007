"""Audits between real nodes: the request, the signed answer, and what a failed one proves.

The simulator's auditor holds every node's data; a real one does not. So the audited node
answers with its audit response (``QRAR``, docs/trust.md section 7: the opening of the packet's
base commitment and the transition proof) *and* the window of samples it trained on, the whole
answer signed with its key. The auditor re-runs the training from the opened weights on that
window (:func:`qres.trust.audit.audit`, the shard being exactly the window) and compares update,
residual error and accuracy delta bit for bit: an honest node always matches.

A signed answer that does not reproduce its signed packet is a fault no one but the sender could
have made, and it reads the same on every machine: the packet and the answer together are
transferable evidence (a ban notice carries them, :mod:`qres.node.bans`). An unanswered audit
proves nothing (the request or the answer may have been lost) and only costs reputation.

What an audit does not prove: that the window is what the node's sensor recorded. It binds the
update to *some* window the node signed; forging a sign-flipped or scaled update means finding
a window whose exact integer training yields it. Layouts in docs/node.md ("Audits").
"""

from __future__ import annotations

import struct
from typing import Any

import attrs

from qres.trust.identity import PUBLIC_KEY_BYTES, SIGNATURE_BYTES, did_of, verify_signature
from qres.trust.packet import (
    AUDIT_HEADER_BYTES,
    MAX_AUDIT_BYTES,
    PacketError,
    Reason,
    UpdatePacket,
)
from qres.trust.roundstep import MAX_EVIDENCE_BYTES

REQUEST_MAGIC = b"QRAQ"
ANSWER_MAGIC = b"QRAA"
#: Requests list the packets the requester holds since version 2; a version-1 request (32
#: bytes, no list) is still answered, in full.
VERSION = 2
#: Bytes of a packet hash a request lists (the first bytes of ``packet_hash``).
HELD_PREFIX_BYTES = 8
#: Most packets one request may list.
MAX_HELD = 4096
#: Answers carry the round-step evidence since version 2; version 1 is refused.
ANSWER_VERSION = 2
#: Answer flag: the node trained with the swarm's storm learning rate (it was in Storm).
FLAG_STORM = 0x01
_REQUEST = struct.Struct("<4sBBHq16s")
REQUEST_BYTES = _REQUEST.size
_HELD_COUNT = struct.Struct("<I")
#: Largest valid request: the head, the count and the most prefixes.
MAX_REQUEST_BYTES = REQUEST_BYTES + _HELD_COUNT.size + MAX_HELD * HELD_PREFIX_BYTES
_ANSWER = struct.Struct("<4sBBHIII")
ANSWER_HEADER_BYTES = _ANSWER.size
_ANSWER_V1 = struct.Struct("<4sBBHII")
#: Most samples a window may have: the largest order plus the largest window of [swarm].
MAX_WINDOW_SAMPLES = 256 + 65536
#: Largest valid answer: header, the largest audit response, window and round-step evidence,
#: the signature.
MAX_ANSWER_BYTES = (
    ANSWER_HEADER_BYTES
    + MAX_AUDIT_BYTES
    + 2 * MAX_WINDOW_SAMPLES
    + MAX_EVIDENCE_BYTES
    + SIGNATURE_BYTES
)


@attrs.frozen
class AuditRequest:
    """ "Show me how you made your packet of round ``round`` with nonce ``nonce``." Sent over an
    authenticated channel (a Noise session, or a signed MQTT envelope), so it is not signed.
    ``held``: the first ``HELD_PREFIX_BYTES`` of the hashes of packets the requester holds;
    the answer may leave those out of its round-step evidence (:mod:`qres.node.trimmed`)."""

    round: int
    nonce: bytes
    held: tuple[bytes, ...] = attrs.field(default=(), converter=tuple)

    def encode(self) -> bytes:
        """The request's bytes: 32 of head, then ``u32 count`` and the prefixes."""
        if len(self.held) > MAX_HELD or any(len(h) != HELD_PREFIX_BYTES for h in self.held):
            raise PacketError(Reason.MALFORMED, "audit request: too many or bad held prefixes")
        head = _REQUEST.pack(REQUEST_MAGIC, VERSION, 0, 0, self.round, self.nonce)
        return head + _HELD_COUNT.pack(len(self.held)) + b"".join(self.held)


def decode_request(data: bytes) -> AuditRequest:
    """Parse a request (version 2, or version 1 without a list); PacketError on anything but
    the exact layout."""
    if not REQUEST_BYTES <= len(data) <= MAX_REQUEST_BYTES:
        raise PacketError(Reason.MALFORMED, f"audit request of {len(data)} bytes")
    data = bytes(data)
    magic, version, flags, reserved, round_, nonce = _REQUEST.unpack_from(data)
    if magic != REQUEST_MAGIC or flags or reserved or round_ < 0:
        raise PacketError(Reason.MALFORMED, "audit request: bad magic, flags or round")
    if version == 1:
        if len(data) != REQUEST_BYTES:
            raise PacketError(Reason.MALFORMED, "audit request: version 1 is 32 bytes")
        return AuditRequest(round_, nonce)
    if version != VERSION:
        raise PacketError(Reason.BAD_VERSION, f"audit request: version {version}")
    if len(data) < REQUEST_BYTES + _HELD_COUNT.size:
        raise PacketError(Reason.MALFORMED, "audit request: truncated before its count")
    (count,) = _HELD_COUNT.unpack_from(data, REQUEST_BYTES)
    at = REQUEST_BYTES + _HELD_COUNT.size
    if count > MAX_HELD or at + count * HELD_PREFIX_BYTES != len(data):
        raise PacketError(Reason.MALFORMED, f"audit request: {count} held prefixes")
    size = HELD_PREFIX_BYTES
    held = tuple(data[at + i * size : at + (i + 1) * size] for i in range(count))
    return AuditRequest(round_, nonce, held)


@attrs.frozen
class AuditAnswer:
    """The audited node's signed answer: its audit response, the window it trained on and
    the evidence of the round step that produced the packet's base (empty for a genesis
    base; :meth:`qres.trust.roundstep.StepEvidence.encode`)."""

    sender: bytes
    response: bytes  # the QRAR audit response, as encoded
    window: tuple[int, ...] = attrs.field(converter=tuple)
    storm: bool = False
    signature: bytes = b""
    step: bytes = b""  # the encoded StepEvidence

    @property
    def did(self) -> str:
        """The answering node's DID."""
        return did_of(self.sender)

    def body(self) -> bytes:
        """Every byte the signature covers."""
        head = _ANSWER.pack(
            ANSWER_MAGIC,
            ANSWER_VERSION,
            FLAG_STORM if self.storm else 0,
            0,
            len(self.response),
            len(self.window),
            len(self.step),
        )
        try:
            window = struct.pack(f"<{len(self.window)}h", *self.window)
        except struct.error as exc:
            raise PacketError(Reason.MALFORMED, f"audit answer: window sample ({exc})") from exc
        return head + self.response + window + self.step

    def encode(self) -> bytes:
        """The answer's bytes (body and signature)."""
        return self.body() + self.signature


def make_answer(identity, response: bytes, window, storm: bool, step: bytes = b"") -> AuditAnswer:
    """The answer ``identity`` gives for one of its packets (``window``: int16-range ints;
    ``step``: the encoded round-step evidence, empty for a genesis base)."""
    window = [int(v) for v in window]
    answer = AuditAnswer(identity.public_key, bytes(response), window, storm, step=bytes(step))
    return attrs.evolve(answer, signature=identity.sign(answer.body()))


def decode_answer(data: bytes, *, legacy: bool = False) -> AuditAnswer:
    """Parse an answer and check it is signed by the sender its audit response names;
    PacketError (with a Reason) on any fault. Lengths are checked before anything is copied.
    Version 1 (no round-step evidence) is refused, except with ``legacy`` (a node reading
    the answers it stored itself before an upgrade)."""
    if len(data) > MAX_ANSWER_BYTES:
        raise PacketError(Reason.OVERSIZE, f"audit answer of {len(data)} bytes: too large")
    data = bytes(data)
    if len(data) < _ANSWER_V1.size + AUDIT_HEADER_BYTES + SIGNATURE_BYTES:
        raise PacketError(Reason.MALFORMED, f"audit answer of {len(data)} bytes: too short")
    magic, version, flags, reserved = struct.unpack_from("<4sBBH", data)
    if magic != ANSWER_MAGIC or flags & ~FLAG_STORM or reserved:
        raise PacketError(Reason.MALFORMED, "audit answer: bad magic, flags or reserved")
    if version == 1 and legacy:
        _, _, _, _, size, samples = _ANSWER_V1.unpack_from(data)
        step, start = 0, _ANSWER_V1.size
    elif version == 1:
        raise PacketError(
            Reason.BAD_VERSION,
            "audit answer: version 1 carries no round step; the sender must be upgraded",
        )
    elif version != ANSWER_VERSION:
        raise PacketError(Reason.BAD_VERSION, f"audit answer: version {version}")
    else:
        _, _, _, _, size, samples, step = _ANSWER.unpack_from(data)
        start = ANSWER_HEADER_BYTES
    if size > MAX_AUDIT_BYTES or samples > MAX_WINDOW_SAMPLES or step > MAX_EVIDENCE_BYTES:
        raise PacketError(Reason.MALFORMED, "audit answer: response, window or step too large")
    if start + size + 2 * samples + step + SIGNATURE_BYTES != len(data):
        raise PacketError(Reason.MALFORMED, "audit answer: length does not match its layout")
    response = data[start : start + size]
    sender = response[12 : 12 + PUBLIC_KEY_BYTES]  # the QRAR's sender field (docs/trust.md)
    if len(sender) != PUBLIC_KEY_BYTES:
        raise PacketError(Reason.MALFORMED, "audit answer: response too short to name a sender")
    if not verify_signature(sender, data[-SIGNATURE_BYTES:], data[:-SIGNATURE_BYTES]):
        raise PacketError(Reason.BAD_SIGNATURE, "audit answer: not signed by its sender")
    window = struct.unpack_from(f"<{samples}h", data, start + size)
    at = start + size + 2 * samples
    evidence = data[at : at + step]
    storm = bool(flags & FLAG_STORM)
    return AuditAnswer(sender, response, window, storm, data[-SIGNATURE_BYTES:], evidence)


def train_settings(swarm, storm: bool):
    """The training settings a node of this swarm uses (``storm_lr`` in Storm)."""
    from qres.learning.task import TrainSettings

    lr = swarm.storm_lr if storm else swarm.lr
    return TrainSettings(order=swarm.order, window=swarm.window, lr=lr)


@attrs.frozen
class StepRule:
    """What an auditor needs to check round steps: the swarm's rule
    (``aggregate(rows, weights)``, :meth:`qres.node.defence.Defence.rule`) and the public
    genesis model (None: not known)."""

    aggregate: Any
    genesis: Any = None


def judge(packet: UpdatePacket, answer: AuditAnswer, swarm, steps: StepRule | None = None):
    """Audit ``packet`` with ``answer`` (:class:`qres.trust.audit.AuditResult`). The answer
    must be the packet sender's (the caller checks it); a window of the wrong length cannot
    have produced the update, so it fails as ``wrong-update``. With ``steps``, the round step
    that produced the packet's base is replayed from the answer's evidence too
    (:func:`qres.trust.roundstep.check_step`): a base that is not the committed aggregate
    fails ``wrong-step``, evidence that does not check out ``bad-step``."""
    import numpy as np

    from qres.trust.audit import AuditResult, Finding, audit

    span = swarm.order + swarm.window
    if len(answer.window) != span:
        detail = f"window of {len(answer.window)} samples, training uses {span}"
        return AuditResult(Finding.WRONG_UPDATE, packet.did, packet.round, detail)
    shard = np.asarray(answer.window, np.int32)
    result = audit(packet, answer.response, shard, train_settings(swarm, answer.storm))
    if not result.ok or steps is None:
        return result
    return _judge_step(packet, answer, steps)


def _judge_step(packet: UpdatePacket, answer: AuditAnswer, steps: StepRule):
    """The round-step half of :func:`judge` (the training half passed)."""
    from qres.trust import roundstep as rs
    from qres.trust.audit import AuditResult, Finding
    from qres.trust.packet import GENESIS_STEP, decode_audit

    opened = decode_audit(answer.response).weights
    evidence = None
    if packet.step != GENESIS_STEP:
        if not answer.step:  # the signed answer withholds what its packet committed to
            detail = "the signed answer carries no round step for a non-genesis base"
            return AuditResult(Finding.BAD_STEP, packet.did, packet.round, detail)
        try:
            evidence = rs.decode_evidence(answer.step)
        except PacketError as exc:
            return AuditResult(Finding.BAD_STEP, packet.did, packet.round, str(exc))
    return rs.check_step(packet, opened, evidence, steps.aggregate, genesis=steps.genesis)


def is_fault(result) -> bool:
    """True for a finding that convicts the signer: its signed answer opens its signed
    packet's commitment wrongly, re-running the training contradicts the packet, or its
    round step does not replay to the packet's base."""
    from qres.trust.audit import Finding

    return result.finding in (
        Finding.BAD_OPENING,
        Finding.BAD_PROOF,
        Finding.WRONG_UPDATE,
        Finding.WRONG_ACCURACY,
        Finding.BAD_STEP,
        Finding.WRONG_STEP,
    )
