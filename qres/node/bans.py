"""Ban notices: a node tells its peers whom it banned, with evidence each of them checks.

A notice is signed by the node that issues it, but a receiver never bans on the issuer's word:
the notice carries what the banned node itself signed, and the receiver re-checks it. Only
faults intrinsic to signed bytes count as evidence, because only those read the same on every
machine at any time. Three kinds:

1. one signed update packet that is wrong by itself: a commitment that is not a curve point
   (``BAD_POINT``), a transition proof that does not verify (``BAD_PROOF``), an update of the
   wrong dimension for the swarm (``BAD_DIMENSION``);
2. equivocation: two signed update packets of the same round that differ (an honest node
   signs one update per round, and keeps it across restarts);
3. a failed audit: a signed update packet and the signed audit answer that contradicts it
   (:mod:`qres.node.audits`).

A packet "from the future" proves nothing (the receiver's clock may be the one behind), and
neither does an unanswered audit. The layout is in docs/node.md ("Ban notices"), byte by byte.
"""

from __future__ import annotations

import struct

import attrs

from qres.node.audits import MAX_ANSWER_BYTES
from qres.trust.identity import PUBLIC_KEY_BYTES, SIGNATURE_BYTES, did_of, verify_signature
from qres.trust.packet import MAX_PACKET_BYTES, PacketError, Reason, Verifier

MAGIC = b"QRBN"
VERSION = 1
#: Evidence kind: one signed update packet whose fault is intrinsic to its bytes.
EVIDENCE_PACKET = 1
#: Evidence kind: two signed update packets of one sender for one round that differ.
EVIDENCE_EQUIVOCATION = 2
#: Evidence kind: a signed update packet and the signed audit answer that contradicts it.
EVIDENCE_AUDIT = 3
#: Evidence kind: one signed LoRA packet (``QRLU``) naming a layer other than its round's, or
#: carrying another number of values than that layer has.
EVIDENCE_LORA_PACKET = 4
#: Evidence kind: two signed LoRA packets of one sender for one round that differ.
EVIDENCE_LORA_EQUIVOCATION = 5
KINDS = (
    EVIDENCE_PACKET,
    EVIDENCE_EQUIVOCATION,
    EVIDENCE_AUDIT,
    EVIDENCE_LORA_PACKET,
    EVIDENCE_LORA_EQUIVOCATION,
)
_HEAD = struct.Struct(f"<4sBBH{PUBLIC_KEY_BYTES}s{PUBLIC_KEY_BYTES}sqI")
HEADER_BYTES = _HEAD.size
_PAIR = struct.Struct("<I")
#: Largest evidence: a packet and an audit answer (or two packets), with the first's length.
MAX_EVIDENCE_BYTES = _PAIR.size + MAX_PACKET_BYTES + max(MAX_PACKET_BYTES, MAX_ANSWER_BYTES)
#: Largest valid notice: header, the largest evidence, the issuer's signature.
MAX_NOTICE_BYTES = HEADER_BYTES + MAX_EVIDENCE_BYTES + SIGNATURE_BYTES
#: Faults a receiver can check from the packet's bytes alone (see the module docstring).
TRANSFERABLE = (Reason.BAD_POINT, Reason.BAD_PROOF, Reason.BAD_DIMENSION)


@attrs.frozen
class BanNotice:
    """``issuer`` banned ``banned`` in round ``round`` because of ``evidence`` (of ``kind``)."""

    issuer: bytes
    banned: bytes
    round: int
    evidence: bytes
    signature: bytes = b""
    kind: int = EVIDENCE_PACKET

    @property
    def banned_did(self) -> str:
        """The banned node's DID."""
        return did_of(self.banned)

    @property
    def issuer_did(self) -> str:
        """The issuing node's DID."""
        return did_of(self.issuer)

    def body(self) -> bytes:
        """Every byte the issuer's signature covers."""
        head = _HEAD.pack(
            MAGIC,
            VERSION,
            self.kind,
            0,
            self.issuer,
            self.banned,
            self.round,
            len(self.evidence),
        )
        return head + self.evidence

    def encode(self) -> bytes:
        """The notice's bytes (body and signature)."""
        return self.body() + self.signature


def make_notice(
    identity, banned: bytes, round_: int, evidence: bytes, kind: int = EVIDENCE_PACKET
) -> BanNotice:
    """A notice signed by ``identity``."""
    notice = BanNotice(identity.public_key, banned, round_, bytes(evidence), kind=kind)
    return attrs.evolve(notice, signature=identity.sign(notice.body()))


def decode_notice(data: bytes) -> BanNotice:
    """Parse a notice and check the issuer's signature; PacketError (with a Reason) on any
    fault. The evidence is not judged here (see :func:`check_evidence`)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise PacketError(Reason.MALFORMED, "ban notice: not bytes")
    if len(data) > MAX_NOTICE_BYTES:  # before any copy
        raise PacketError(Reason.OVERSIZE, f"ban notice of {len(data)} bytes")
    data = bytes(data)
    if len(data) < HEADER_BYTES + SIGNATURE_BYTES:
        raise PacketError(Reason.MALFORMED, f"ban notice of {len(data)} bytes: too short")
    magic, version, kind, reserved, issuer, banned, round_, size = _HEAD.unpack_from(data)
    if magic != MAGIC:
        raise PacketError(Reason.MALFORMED, "ban notice: bad magic")
    if version != VERSION:
        raise PacketError(Reason.BAD_VERSION, f"ban notice: version {version}, this reader knows 1")
    if kind not in KINDS or reserved or round_ < 0:
        raise PacketError(Reason.MALFORMED, "ban notice: unknown evidence kind, reserved or round")
    if size > MAX_EVIDENCE_BYTES or HEADER_BYTES + size + SIGNATURE_BYTES != len(data):
        raise PacketError(Reason.MALFORMED, "ban notice: evidence length does not match")
    signature = data[-SIGNATURE_BYTES:]
    if not verify_signature(issuer, signature, data[:-SIGNATURE_BYTES]):
        raise PacketError(Reason.BAD_SIGNATURE, "ban notice: not signed by its issuer")
    evidence = data[HEADER_BYTES:-SIGNATURE_BYTES]
    return BanNotice(issuer, banned, round_, evidence, signature, kind)


def evidence_fault(packet: bytes, dimension: int) -> Reason:
    """The transferable fault of a signed update packet, or ``Reason.OK`` if it has none
    (well formed, well signed and intrinsically sound: no evidence against its signer).
    Malformed or badly signed bytes return their reason: they prove nothing about anyone."""
    checker = Verifier(allow_unknown=True, dimension=dimension, window=1 << 62, future=1 << 62)
    return checker.check(packet).reason


def pair(first: bytes, second: bytes) -> bytes:
    """Two signed messages as one piece of evidence: ``u32 len(first) || first || second``."""
    return _PAIR.pack(len(first)) + bytes(first) + bytes(second)


def unpair(evidence: bytes) -> tuple[bytes, bytes] | None:
    """The two messages of :func:`pair`, or None when the lengths do not add up."""
    if len(evidence) < _PAIR.size:
        return None
    (size,) = _PAIR.unpack_from(evidence)
    if size > len(evidence) - _PAIR.size:
        return None
    return evidence[_PAIR.size : _PAIR.size + size], evidence[_PAIR.size + size :]


def _signed_by(data: bytes, banned: bytes, dimension: int):
    """The update packet in ``data`` if it is well signed by ``banned``, else None."""
    from qres.trust.packet import decode

    try:
        packet = decode(data)
    except PacketError:
        return None
    if packet.sender != banned:
        return None
    if evidence_fault(data, dimension) in SIGNATURE_FAILURES:
        return None
    return packet


#: Verifier reasons that mean the bytes are not (provably) the sender's.
SIGNATURE_FAILURES = (
    Reason.OVERSIZE,
    Reason.MALFORMED,
    Reason.BAD_VERSION,
    Reason.BAD_SIGNATURE,
)


def equivocation(a: bytes, b: bytes, banned: bytes, dimension: int) -> bool:
    """True when ``a`` and ``b`` are update packets, both well signed by ``banned``, for the
    same round, that differ in what they claim (nonce, update, commitments or metrics)."""
    pa, pb = _signed_by(a, banned, dimension), _signed_by(b, banned, dimension)
    if pa is None or pb is None or pa.round != pb.round:
        return False
    fields = ("nonce", "update", "base", "commitment", "residual_error", "accuracy_delta")
    return any(getattr(pa, f) != getattr(pb, f) for f in fields)


def failed_audit(packet: bytes, answer: bytes, banned: bytes, swarm, steps=None):
    """The audit finding when ``answer`` (signed by ``banned``) contradicts ``packet`` (signed by
    ``banned``), else None. ``steps`` (:class:`qres.node.audits.StepRule`): check the round
    step too."""
    from qres.node import audits

    p = _signed_by(packet, banned, swarm.order)
    if p is None:
        return None
    try:
        a = audits.decode_answer(answer)
    except PacketError:
        return None
    if a.sender != banned:
        return None
    result = audits.judge(p, a, swarm, steps)
    return result if audits.is_fault(result) else None


def _lora_signed_by(data: bytes, banned: bytes):
    """The LoRA packet in ``data`` if it is well signed by ``banned``, else None."""
    from qres.node import lora_wire

    try:
        packet = lora_wire.decode(data)
    except PacketError:
        return None
    if packet.sender != banned or not packet.verify_signature():
        return None
    return packet


def lora_fault(data: bytes, banned: bytes, sizes: dict[str, int] | None) -> str | None:
    """The fault one signed LoRA packet proves against ``banned``: ``WRONG_LAYER`` (not its
    round's layer, a public schedule) or ``BAD_DIMENSION`` (not ``sizes[layer]`` values, the
    swarm's profile fixes them); None when it proves nothing."""
    from qres.lora.exchange import role_of_round

    packet = _lora_signed_by(data, banned)
    if packet is None:
        return None
    if packet.role != role_of_round(packet.round):
        return "WRONG_LAYER"
    if sizes is not None and len(packet.change) != sizes[packet.role]:
        return "BAD_DIMENSION"
    return None


def lora_equivocation(a: bytes, b: bytes, banned: bytes) -> bool:
    """True when ``a`` and ``b`` are LoRA packets, both well signed by ``banned``, for the
    same round, that differ."""
    pa, pb = _lora_signed_by(a, banned), _lora_signed_by(b, banned)
    return pa is not None and pb is not None and pa.round == pb.round and a != b


def check_evidence(
    notice: BanNotice, swarm, steps=None, lora_sizes: dict[str, int] | None = None
) -> str | None:
    """The fault the notice's evidence proves against ``notice.banned`` (a name:
    ``BAD_POINT``, ``BAD_PROOF``, ``BAD_DIMENSION``, ``EQUIVOCATION`` or ``AUDIT_<finding>``),
    or None when it proves nothing (then the notice is ignored, whoever signed it).
    ``swarm``: the swarm's settings (its order and training settings); ``steps``: the
    swarm's rule and genesis model, to re-check a failed round step
    (:class:`qres.node.audits.StepRule`); ``lora_sizes``: values per shared layer of a
    LoRA swarm (without them a LoRA packet's size proves nothing)."""
    if notice.kind == EVIDENCE_LORA_PACKET:
        return lora_fault(notice.evidence, notice.banned, lora_sizes)
    if notice.kind == EVIDENCE_PACKET:
        if _signed_by(notice.evidence, notice.banned, swarm.order) is None:
            return None
        reason = evidence_fault(notice.evidence, swarm.order)
        return reason.name if reason in TRANSFERABLE else None
    parts = unpair(notice.evidence)
    if parts is None:
        return None
    if notice.kind == EVIDENCE_EQUIVOCATION:
        return "EQUIVOCATION" if equivocation(*parts, notice.banned, swarm.order) else None
    if notice.kind == EVIDENCE_LORA_EQUIVOCATION:
        return "EQUIVOCATION" if lora_equivocation(*parts, notice.banned) else None
    result = failed_audit(*parts, notice.banned, swarm, steps)
    return None if result is None else audit_fault_name(result)


def audit_fault_name(result) -> str:
    """``AUDIT_WRONG_UPDATE`` etc.: how a failed audit is counted."""
    return "AUDIT_" + result.finding.name
