"""Ban notices: a node tells its peers whom it banned, with evidence each of them checks.

A notice is signed by the node that issues it, but a receiver never bans on the issuer's word:
the notice carries the banned node's own signed update packet, and the receiver re-checks that
packet itself. Only faults that are intrinsic to the signed bytes count as evidence, because
only those read the same on every machine at any time: a commitment that is not a curve point
(``BAD_POINT``), a transition proof that does not verify (``BAD_PROOF``), an update of the
wrong dimension for the swarm (``BAD_DIMENSION``). A packet "from the future" is attributable
to its signer when it arrives but not later, so it bans at the node that saw it and is never
forwarded. The layout is in docs/node.md ("Ban notices"), byte by byte.
"""

from __future__ import annotations

import struct

import attrs

from qres.trust.identity import PUBLIC_KEY_BYTES, SIGNATURE_BYTES, did_of, verify_signature
from qres.trust.packet import MAX_PACKET_BYTES, PacketError, Reason, Verifier

MAGIC = b"QRBN"
VERSION = 1
#: Evidence kind: one signed update packet whose fault is intrinsic to its bytes.
EVIDENCE_PACKET = 1
_HEAD = struct.Struct(f"<4sBBH{PUBLIC_KEY_BYTES}s{PUBLIC_KEY_BYTES}sqI")
HEADER_BYTES = _HEAD.size
#: Largest valid notice: header, the largest update packet, the issuer's signature.
MAX_NOTICE_BYTES = HEADER_BYTES + MAX_PACKET_BYTES + SIGNATURE_BYTES
#: Faults a receiver can check from the packet's bytes alone (see the module docstring).
TRANSFERABLE = (Reason.BAD_POINT, Reason.BAD_PROOF, Reason.BAD_DIMENSION)


@attrs.frozen
class BanNotice:
    """``issuer`` banned ``banned`` in round ``round`` because of ``evidence`` (a packet)."""

    issuer: bytes
    banned: bytes
    round: int
    evidence: bytes
    signature: bytes = b""

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
            EVIDENCE_PACKET,
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


def make_notice(identity, banned: bytes, round_: int, evidence: bytes) -> BanNotice:
    """A notice signed by ``identity``."""
    notice = BanNotice(identity.public_key, banned, round_, bytes(evidence))
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
    if kind != EVIDENCE_PACKET or reserved or round_ < 0:
        raise PacketError(Reason.MALFORMED, "ban notice: unknown evidence kind, reserved or round")
    if size > MAX_PACKET_BYTES or HEADER_BYTES + size + SIGNATURE_BYTES != len(data):
        raise PacketError(Reason.MALFORMED, "ban notice: evidence length does not match")
    signature = data[-SIGNATURE_BYTES:]
    if not verify_signature(issuer, signature, data[:-SIGNATURE_BYTES]):
        raise PacketError(Reason.BAD_SIGNATURE, "ban notice: not signed by its issuer")
    return BanNotice(issuer, banned, round_, data[HEADER_BYTES:-SIGNATURE_BYTES], signature)


def evidence_fault(packet: bytes, dimension: int) -> Reason:
    """The transferable fault of a signed update packet, or ``Reason.OK`` if it has none
    (well formed, well signed and intrinsically sound: no evidence against its signer).
    Malformed or badly signed bytes return their reason: they prove nothing about anyone."""
    checker = Verifier(allow_unknown=True, dimension=dimension, window=1 << 62, future=1 << 62)
    return checker.check(packet).reason


def check_evidence(notice: BanNotice, dimension: int) -> Reason | None:
    """The fault the notice's evidence proves against ``notice.banned``, or None when it
    proves nothing (then the notice is ignored, whoever signed it)."""
    try:
        from qres.trust.packet import decode

        sender = decode(notice.evidence).sender
    except PacketError:
        return None
    if sender != notice.banned:
        return None
    reason = evidence_fault(notice.evidence, dimension)
    return reason if reason in TRANSFERABLE else None
