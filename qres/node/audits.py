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

import attrs

from qres.trust.identity import PUBLIC_KEY_BYTES, SIGNATURE_BYTES, did_of, verify_signature
from qres.trust.packet import (
    AUDIT_HEADER_BYTES,
    MAX_AUDIT_BYTES,
    PacketError,
    Reason,
    UpdatePacket,
)

REQUEST_MAGIC = b"QRAQ"
ANSWER_MAGIC = b"QRAA"
VERSION = 1
#: Answer flag: the node trained with the swarm's storm learning rate (it was in Storm).
FLAG_STORM = 0x01
_REQUEST = struct.Struct("<4sBBHq16s")
REQUEST_BYTES = _REQUEST.size
_ANSWER = struct.Struct("<4sBBHII")
ANSWER_HEADER_BYTES = _ANSWER.size
#: Most samples a window may have: the largest order plus the largest window of [swarm].
MAX_WINDOW_SAMPLES = 256 + 65536
#: Largest valid answer: header, the largest audit response and window, the signature.
MAX_ANSWER_BYTES = ANSWER_HEADER_BYTES + MAX_AUDIT_BYTES + 2 * MAX_WINDOW_SAMPLES + SIGNATURE_BYTES


@attrs.frozen
class AuditRequest:
    """ "Show me how you made your packet of round ``round`` with nonce ``nonce``." Sent over an
    authenticated channel (a Noise session, or a signed MQTT envelope), so it is not signed."""

    round: int
    nonce: bytes

    def encode(self) -> bytes:
        """The request's 32 bytes."""
        return _REQUEST.pack(REQUEST_MAGIC, VERSION, 0, 0, self.round, self.nonce)


def decode_request(data: bytes) -> AuditRequest:
    """Parse a request; PacketError on anything but the exact layout."""
    if len(data) != REQUEST_BYTES:
        raise PacketError(Reason.MALFORMED, f"audit request of {len(data)} bytes, not 32")
    magic, version, flags, reserved, round_, nonce = _REQUEST.unpack(bytes(data))
    if magic != REQUEST_MAGIC or flags or reserved or round_ < 0:
        raise PacketError(Reason.MALFORMED, "audit request: bad magic, flags or round")
    if version != VERSION:
        raise PacketError(Reason.BAD_VERSION, f"audit request: version {version}")
    return AuditRequest(round_, nonce)


@attrs.frozen
class AuditAnswer:
    """The audited node's signed answer: its audit response and the window it trained on."""

    sender: bytes
    response: bytes  # the QRAR audit response, as encoded
    window: tuple[int, ...] = attrs.field(converter=tuple)
    storm: bool = False
    signature: bytes = b""

    @property
    def did(self) -> str:
        """The answering node's DID."""
        return did_of(self.sender)

    def body(self) -> bytes:
        """Every byte the signature covers."""
        head = _ANSWER.pack(
            ANSWER_MAGIC,
            VERSION,
            FLAG_STORM if self.storm else 0,
            0,
            len(self.response),
            len(self.window),
        )
        try:
            window = struct.pack(f"<{len(self.window)}h", *self.window)
        except struct.error as exc:
            raise PacketError(Reason.MALFORMED, f"audit answer: window sample ({exc})") from exc
        return head + self.response + window

    def encode(self) -> bytes:
        """The answer's bytes (body and signature)."""
        return self.body() + self.signature


def make_answer(identity, response: bytes, window, storm: bool) -> AuditAnswer:
    """The answer ``identity`` gives for one of its packets (``window``: int16-range ints)."""
    answer = AuditAnswer(identity.public_key, bytes(response), [int(v) for v in window], storm)
    return attrs.evolve(answer, signature=identity.sign(answer.body()))


def decode_answer(data: bytes) -> AuditAnswer:
    """Parse an answer and check it is signed by the sender its audit response names;
    PacketError (with a Reason) on any fault. Lengths are checked before anything is copied."""
    if len(data) > MAX_ANSWER_BYTES:
        raise PacketError(Reason.OVERSIZE, f"audit answer of {len(data)} bytes: too large")
    data = bytes(data)
    if len(data) < ANSWER_HEADER_BYTES + AUDIT_HEADER_BYTES + SIGNATURE_BYTES:
        raise PacketError(Reason.MALFORMED, f"audit answer of {len(data)} bytes: too short")
    magic, version, flags, reserved, size, samples = _ANSWER.unpack_from(data)
    if magic != ANSWER_MAGIC or flags & ~FLAG_STORM or reserved:
        raise PacketError(Reason.MALFORMED, "audit answer: bad magic, flags or reserved")
    if version != VERSION:
        raise PacketError(Reason.BAD_VERSION, f"audit answer: version {version}")
    if size > MAX_AUDIT_BYTES or samples > MAX_WINDOW_SAMPLES:
        raise PacketError(Reason.MALFORMED, "audit answer: response or window too large")
    if ANSWER_HEADER_BYTES + size + 2 * samples + SIGNATURE_BYTES != len(data):
        raise PacketError(Reason.MALFORMED, "audit answer: length does not match its layout")
    start = ANSWER_HEADER_BYTES
    response = data[start : start + size]
    sender = response[12 : 12 + PUBLIC_KEY_BYTES]  # the QRAR's sender field (docs/trust.md)
    if len(sender) != PUBLIC_KEY_BYTES:
        raise PacketError(Reason.MALFORMED, "audit answer: response too short to name a sender")
    if not verify_signature(sender, data[-SIGNATURE_BYTES:], data[:-SIGNATURE_BYTES]):
        raise PacketError(Reason.BAD_SIGNATURE, "audit answer: not signed by its sender")
    window = struct.unpack_from(f"<{samples}h", data, start + size)
    return AuditAnswer(sender, response, window, bool(flags & FLAG_STORM), data[-SIGNATURE_BYTES:])


def train_settings(swarm, storm: bool):
    """The training settings a node of this swarm uses (``storm_lr`` in Storm)."""
    from qres.learning.task import TrainSettings

    lr = swarm.storm_lr if storm else swarm.lr
    return TrainSettings(order=swarm.order, window=swarm.window, lr=lr)


def judge(packet: UpdatePacket, answer: AuditAnswer, swarm):
    """Audit ``packet`` with ``answer`` (:class:`qres.trust.audit.AuditResult`). The answer
    must be the packet sender's (the caller checks it); a window of the wrong length cannot
    have produced the update, so it fails as ``wrong-update``."""
    import numpy as np

    from qres.trust.audit import AuditResult, Finding, audit

    span = swarm.order + swarm.window
    if len(answer.window) != span:
        detail = f"window of {len(answer.window)} samples, training uses {span}"
        return AuditResult(Finding.WRONG_UPDATE, packet.did, packet.round, detail)
    shard = np.asarray(answer.window, np.int32)
    return audit(packet, answer.response, shard, train_settings(swarm, answer.storm))


def is_fault(result) -> bool:
    """True for a finding that convicts the signer: its signed answer opens its signed
    packet's commitment wrongly, or re-running the training contradicts the packet."""
    from qres.trust.audit import Finding

    return result.finding in (
        Finding.BAD_OPENING,
        Finding.BAD_PROOF,
        Finding.WRONG_UPDATE,
        Finding.WRONG_ACCURACY,
    )
