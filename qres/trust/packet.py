"""Signed update packets, audit responses, the receiver's verifier, and recorded packet streams.

One canonical binary encoding per message (layouts in docs/trust.md): a versioned magic, a
total length checked against the maximum before anything is allocated, fixed-width
little-endian fields each bounds-checked on decode, and an Ed25519 signature over every byte
before it. Decoding never trusts a length it has not checked; every failure is a
:class:`PacketError` (an :class:`~qres.kernel.errors.IntegrityError`) carrying a :class:`Reason`.

The :class:`Verifier` is a receiver's state: known and banned senders, a bounded replay cache
of (sender, round, nonce) and a staleness window. It rejects each kind of bad packet with a
distinct :class:`Reason` that a reputation system can act on (see :attr:`Reason.attributable`).
"""

from __future__ import annotations

import enum
import hashlib
import struct
from collections.abc import Iterable, Iterator, Sequence
from typing import BinaryIO

import attrs

from qres.kernel.errors import IntegrityError, QresError
from qres.trust import commitment as cm
from qres.trust.identity import PUBLIC_KEY_BYTES, SIGNATURE_BYTES, did_of, verify_signature

MAGIC = b"QRUP"
#: Version 2 adds the round-step digest (docs/trust.md section 2); version 1 is refused.
VERSION = 2
#: The audit response's own version (its layout did not change with the packet's).
AUDIT_VERSION = 1
#: The round-step digest of a genesis base (a node's first packet: no step produced it).
GENESIS_STEP = bytes(32)
#: Flag bit: the packet carries a transition proof (64 bytes after the update).
FLAG_PROOF = 0x01
KNOWN_FLAGS = FLAG_PROOF
NONCE_BYTES = 16
PROOF_BYTES = 64
#: Most weights an update may carry (the commitment scheme's bound).
MAX_WEIGHTS = cm.MAX_WEIGHTS
_HEAD = struct.Struct("<4sBBHI32sQ16siiI32s32s32s")
#: Bytes before the update: magic .. round-step digest.
HEADER_BYTES = _HEAD.size
#: Largest valid packet: header, MAX_WEIGHTS int32 values, a proof and the signature.
MAX_PACKET_BYTES = HEADER_BYTES + 4 * MAX_WEIGHTS + PROOF_BYTES + SIGNATURE_BYTES

AUDIT_MAGIC = b"QRAR"
_AUDIT_HEAD = struct.Struct("<4sBBHI32sQ16s32sI")
#: Bytes of an audit response before its weights.
AUDIT_HEADER_BYTES = _AUDIT_HEAD.size
#: Largest valid audit response (the opened weights are Q16.16 int32 like the model's).
MAX_AUDIT_BYTES = AUDIT_HEADER_BYTES + 4 * MAX_WEIGHTS + PROOF_BYTES + SIGNATURE_BYTES

STREAM_MAGIC = b"QRPS"
#: Version 2 ended every stream with an end record, so a cut anywhere is detected; version 3
#: holds version-2 update packets (with their round-step digest); version 4 follows an audit
#: response with the evidence of its packet's round step.
STREAM_VERSION = 4
STREAM_HEADER = STREAM_MAGIC + bytes([STREAM_VERSION, 0, 0, 0])
RECORD_PACKET = 1
RECORD_AUDIT = 2
#: The last record: the number of records before it (u64) and the SHA-256 of every byte
#: before it (header and records).
RECORD_END = 3
#: The round-step evidence (:class:`qres.trust.roundstep.StepEvidence`) of the packet whose
#: audit response is the record before it.
RECORD_STEP = 4
#: Largest round-step evidence (a record and every packet it names).
MAX_STEP_EVIDENCE_BYTES = 1 << 24
_LIMITS = {RECORD_PACKET: MAX_PACKET_BYTES, RECORD_AUDIT: MAX_AUDIT_BYTES}
_LIMITS[RECORD_STEP] = MAX_STEP_EVIDENCE_BYTES
_RECORD = struct.Struct("<BI")
_END = struct.Struct("<Q32s")


class Reason(enum.IntEnum):
    """Why a packet was rejected. Values are stable (reputation stores them)."""

    OK = 0
    OVERSIZE = 1
    MALFORMED = 2
    BAD_VERSION = 3
    UNKNOWN_SENDER = 4
    BANNED_SENDER = 5
    BAD_SIGNATURE = 6
    STALE_ROUND = 7
    FUTURE_ROUND = 8
    REPLAY = 9
    BAD_POINT = 10
    BAD_PROOF = 11
    BAD_DIMENSION = 12
    #: A transport connection failed its authenticated handshake (qres.node.wire).
    HANDSHAKE_FAILED = 13
    #: A peer sent more than the transport's rate limit allows.
    RATE_LIMITED = 14

    @property
    def attributable(self) -> bool:
        """True when the fault is provably the signer's: the packet carries a valid signature,
        so nobody else could have made it. Bytes that fail before the signature check (or a
        replay, which anyone can resend) say nothing about the claimed sender."""
        return self in (
            Reason.FUTURE_ROUND,
            Reason.BAD_POINT,
            Reason.BAD_PROOF,
            Reason.BAD_DIMENSION,
        )


class PacketError(IntegrityError):
    """A packet, audit response or stream was rejected; ``reason`` says why."""

    def __init__(self, reason: Reason, message: str):
        super().__init__(message)
        self.reason = reason


def _ints(values: Sequence[int]) -> tuple[int, ...]:
    if hasattr(values, "tolist"):  # numpy arrays: one C-level conversion
        values = values.tolist()
    return tuple(int(v) for v in values)


@attrs.frozen
class UpdatePacket:
    """One model update from one sender: what it claims, and the signature over the claim.

    ``update`` is the Q16.16 weight delta; ``residual_error`` (>= 0) and ``accuracy_delta``
    are Q16.16 too; ``base`` and ``commitment`` are the sender's weight commitments before and
    after the update; ``proof`` (optional, see docs/trust.md for when it travels) proves
    ``commitment = base + commit(update)``. ``step`` is the digest of the round step that
    produced the base (:mod:`qres.trust.roundstep`), :data:`GENESIS_STEP` for a first base.
    """

    sender: bytes
    round: int
    nonce: bytes
    residual_error: int
    accuracy_delta: int
    base: bytes
    commitment: bytes
    update: tuple[int, ...] = attrs.field(converter=_ints)
    proof: bytes | None = None
    signature: bytes = b""
    step: bytes = GENESIS_STEP

    @property
    def did(self) -> str:
        """The sender's DID."""
        return did_of(self.sender)

    def digest(self) -> bytes:
        """The packet's hash, by which round steps name it (docs/trust.md section 14)."""
        return packet_hash(self.encode())

    def body(self) -> bytes:
        """Every byte the signature covers (the encoding without its last 64 bytes)."""
        d = len(self.update)
        if not 1 <= d <= MAX_WEIGHTS:
            raise PacketError(Reason.MALFORMED, f"update of {d} weights: must be 1..{MAX_WEIGHTS}")
        if len(self.nonce) != NONCE_BYTES or len(self.sender) != PUBLIC_KEY_BYTES:
            raise PacketError(Reason.MALFORMED, "packet: nonce must be 16 bytes, sender key 32")
        if len(self.base) != 32 or len(self.commitment) != 32 or len(self.step) != 32:
            raise PacketError(
                Reason.MALFORMED, "packet: commitments and the step digest have 32 bytes"
            )
        if self.proof is not None and len(self.proof) != PROOF_BYTES:
            raise PacketError(Reason.MALFORMED, f"packet: a proof has {PROOF_BYTES} bytes")
        if self.residual_error < 0:
            raise PacketError(Reason.MALFORMED, "packet: residual_error must be >= 0")
        flags = FLAG_PROOF if self.proof is not None else 0
        total = HEADER_BYTES + 4 * d + (PROOF_BYTES if self.proof else 0) + SIGNATURE_BYTES
        try:
            head = _HEAD.pack(
                MAGIC,
                VERSION,
                flags,
                0,
                total,
                self.sender,
                self.round,
                self.nonce,
                self.residual_error,
                self.accuracy_delta,
                d,
                self.base,
                self.commitment,
                self.step,
            )
            values = struct.pack(f"<{d}i", *self.update)
        except struct.error as exc:
            raise PacketError(Reason.MALFORMED, f"packet: field out of range ({exc})") from exc
        return head + values + (self.proof or b"")

    def encode(self) -> bytes:
        """The canonical bytes (must be signed: see :meth:`signed`)."""
        if len(self.signature) != SIGNATURE_BYTES:
            raise PacketError(Reason.MALFORMED, "packet: unsigned; sign it with .signed(identity)")
        return self.body() + self.signature

    def signed(self, identity) -> UpdatePacket:
        """This packet signed by ``identity`` (whose public key must be the sender's)."""
        if identity.public_key != self.sender:
            raise PacketError(Reason.MALFORMED, "packet: signer is not the packet's sender")
        return attrs.evolve(self, signature=identity.sign(self.body()))

    def without_proof(self, identity) -> UpdatePacket:
        """The same packet with no proof, re-signed (what gossip carries; see docs/trust.md)."""
        return attrs.evolve(self, proof=None).signed(identity)


def make_packet(
    identity,
    round_: int,
    nonce: bytes,
    update: Sequence[int],
    *,
    base: bytes,
    commitment: bytes,
    residual_error: int = 0,
    accuracy_delta: int = 0,
    proof: bytes | None = None,
    step: bytes = GENESIS_STEP,
) -> UpdatePacket:
    """A signed update packet from ``identity``; ``step`` is the digest of the round step
    that produced ``base`` (:func:`qres.trust.roundstep.RoundStep.digest`)."""
    packet = UpdatePacket(
        identity.public_key,
        round_,
        nonce,
        residual_error,
        accuracy_delta,
        base,
        commitment,
        update,
        proof,
        step=step,
    )
    return packet.signed(identity)


def decode(data: bytes, max_bytes: int = MAX_PACKET_BYTES) -> UpdatePacket:
    """Parse an update packet, checking every field's bounds; PacketError on any fault.

    The signature is not checked here (see :class:`Verifier`).
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise PacketError(Reason.MALFORMED, "packet: not bytes")
    if len(data) > min(max_bytes, MAX_PACKET_BYTES):  # before any copy is made
        raise PacketError(Reason.OVERSIZE, f"packet of {len(data)} bytes: limit {max_bytes}")
    data = bytes(data)
    if len(data) < HEADER_BYTES + 4 + SIGNATURE_BYTES:
        raise PacketError(Reason.MALFORMED, f"packet of {len(data)} bytes: too short")
    (
        magic,
        version,
        flags,
        reserved,
        total,
        sender,
        round_,
        nonce,
        residual,
        accuracy,
        d,
        base,
        commitment,
        step,
    ) = _HEAD.unpack_from(data)
    if magic != MAGIC:
        raise PacketError(Reason.MALFORMED, "packet: bad magic; not a qres update packet")
    if version != VERSION:
        why = " (no round-step digest; upgrade the sender)" if version < VERSION else ""
        raise PacketError(
            Reason.BAD_VERSION, f"packet: version {version}{why}, this reader knows {VERSION}"
        )
    if flags & ~KNOWN_FLAGS or reserved:
        raise PacketError(Reason.MALFORMED, "packet: unknown flags or non-zero reserved bytes")
    if not 1 <= d <= MAX_WEIGHTS:
        raise PacketError(Reason.MALFORMED, f"packet: {d} weights, must be 1..{MAX_WEIGHTS}")
    if residual < 0:
        raise PacketError(Reason.MALFORMED, "packet: negative residual_error")
    has_proof = bool(flags & FLAG_PROOF)
    expected = HEADER_BYTES + 4 * d + (PROOF_BYTES if has_proof else 0) + SIGNATURE_BYTES
    if total != expected or len(data) != expected:
        raise PacketError(
            Reason.MALFORMED,
            f"packet: length field {total}, actual {len(data)}, layout needs {expected}",
        )
    end = HEADER_BYTES + 4 * d
    update = struct.unpack_from(f"<{d}i", data, HEADER_BYTES)
    proof = data[end : end + PROOF_BYTES] if has_proof else None
    return UpdatePacket(
        sender,
        round_,
        nonce,
        residual,
        accuracy,
        base,
        commitment,
        update,
        proof,
        data[-SIGNATURE_BYTES:],
        step,
    )


def packet_hash(data: bytes) -> bytes:
    """SHA-256 of an encoded packet with a domain tag: how a round step names its inputs."""
    return hashlib.sha256(b"qres/packet-hash/v1" + bytes(data)).digest()


@attrs.frozen
class AuditResponse:
    """A node's answer to an audit of one of its packets: the opening of the packet's base
    commitment (its Q16.16 int32 weights and the blinding) and the transition proof, signed."""

    sender: bytes
    round: int
    nonce: bytes
    blinding: bytes
    weights: tuple[int, ...] = attrs.field(converter=_ints)
    proof: bytes = b""
    signature: bytes = b""

    def body(self) -> bytes:
        """The signed bytes."""
        d = len(self.weights)
        if not 1 <= d <= MAX_WEIGHTS or len(self.proof) != PROOF_BYTES:
            raise PacketError(Reason.MALFORMED, "audit response: 1..65536 weights and a proof")
        total = AUDIT_HEADER_BYTES + 4 * d + PROOF_BYTES + SIGNATURE_BYTES
        try:
            head = _AUDIT_HEAD.pack(
                AUDIT_MAGIC,
                AUDIT_VERSION,
                0,
                0,
                total,
                self.sender,
                self.round,
                self.nonce,
                self.blinding,
                d,
            )
            values = struct.pack(f"<{d}i", *self.weights)
        except struct.error as exc:
            raise PacketError(Reason.MALFORMED, f"audit response: bad field ({exc})") from exc
        return head + values + self.proof

    def encode(self) -> bytes:
        """The canonical bytes."""
        if len(self.signature) != SIGNATURE_BYTES:
            raise PacketError(Reason.MALFORMED, "audit response: unsigned")
        return self.body() + self.signature

    def signed(self, identity) -> AuditResponse:
        """Signed by ``identity`` (the packet's sender)."""
        if identity.public_key != self.sender:
            raise PacketError(Reason.MALFORMED, "audit response: signer is not the sender")
        return attrs.evolve(self, signature=identity.sign(self.body()))

    def verify_signature(self) -> bool:
        """True when the signature is the sender's over :meth:`body`."""
        return verify_signature(self.sender, self.signature, self.body())


def decode_audit(data: bytes) -> AuditResponse:
    """Parse an audit response (bounds-checked like :func:`decode`); PacketError on faults."""
    if len(data) > MAX_AUDIT_BYTES:
        raise PacketError(Reason.OVERSIZE, f"audit response of {len(data)} bytes: too large")
    data = bytes(data)
    if len(data) < AUDIT_HEADER_BYTES + 4 + PROOF_BYTES + SIGNATURE_BYTES:
        raise PacketError(Reason.MALFORMED, f"audit response of {len(data)} bytes: too short")
    magic, version, flags, reserved, total, sender, round_, nonce, blinding, d = (
        _AUDIT_HEAD.unpack_from(data)
    )
    if magic != AUDIT_MAGIC:
        raise PacketError(Reason.MALFORMED, "audit response: bad magic")
    if version != AUDIT_VERSION:
        raise PacketError(
            Reason.BAD_VERSION, f"audit response: version {version}, expected {AUDIT_VERSION}"
        )
    if flags or reserved or not 1 <= d <= MAX_WEIGHTS:
        raise PacketError(Reason.MALFORMED, "audit response: bad flags or weight count")
    expected = AUDIT_HEADER_BYTES + 4 * d + PROOF_BYTES + SIGNATURE_BYTES
    if total != expected or len(data) != expected:
        raise PacketError(Reason.MALFORMED, "audit response: length does not match its layout")
    weights = struct.unpack_from(f"<{d}i", data, AUDIT_HEADER_BYTES)
    end = AUDIT_HEADER_BYTES + 4 * d
    return AuditResponse(
        sender,
        round_,
        nonce,
        blinding,
        weights,
        data[end : end + PROOF_BYTES],
        data[-SIGNATURE_BYTES:],
    )


@attrs.frozen
class Verdict:
    """The outcome of checking one packet: the reason (``OK`` when accepted) and the packet
    (``None`` when it could not be parsed)."""

    reason: Reason
    packet: UpdatePacket | None = None
    message: str = ""

    @property
    def ok(self) -> bool:
        """True when the packet was accepted."""
        return self.reason is Reason.OK


class Verifier:
    """A receiver's checks on incoming packets, with the state they need.

    ``known``: public keys (or DIDs) of senders accepted; ``allow_unknown`` accepts any
    well-signed sender instead. ``window``: packets older than ``current_round - window`` are
    stale; ``future``: packets newer than ``current_round + future`` are refused. The replay
    cache holds at most ``replay_capacity`` (sender, round, nonce) entries; when full it drops
    the oldest round and raises the stale floor past it, so a dropped entry can never be
    replayed. ``dimension``: the model's weight count, if fixed. A proof carried in a packet
    is checked (``BAD_PROOF``) when ``verify_proofs``.
    """

    def __init__(
        self,
        known: Iterable[bytes | str] = (),
        banned: Iterable[bytes | str] = (),
        *,
        allow_unknown: bool = False,
        window: int = 8,
        future: int = 1,
        replay_capacity: int = 1 << 16,
        max_packet_bytes: int = MAX_PACKET_BYTES,
        dimension: int | None = None,
        verify_proofs: bool = True,
        current_round: int = 0,
    ):
        self.known: set[bytes] = {_key(k) for k in known}
        self.banned: set[bytes] = {_key(k) for k in banned}
        self.allow_unknown = allow_unknown
        self.window = window
        self.future = future
        self.replay_capacity = max(1, replay_capacity)
        self.max_packet_bytes = max_packet_bytes
        self.dimension = dimension
        self.verify_proofs = verify_proofs
        self.current_round = current_round
        self._floor = 0  # rounds below this are stale because their replay entries were dropped
        self._seen: dict[int, set[tuple[bytes, bytes]]] = {}
        self._seen_count = 0

    def add_sender(self, key: bytes | str) -> None:
        """Accept packets from this public key or DID."""
        self.known.add(_key(key))

    def ban(self, key: bytes | str) -> None:
        """Refuse every later packet from this public key or DID."""
        self.banned.add(_key(key))

    def advance(self, round_: int) -> None:
        """Set the current round, dropping replay entries that are now stale anyway."""
        self.current_round = round_
        oldest = round_ - self.window
        for r in [r for r in self._seen if r < oldest]:
            self._seen_count -= len(self._seen.pop(r))

    def check(self, data: bytes) -> Verdict:
        """Check one packet; on ``OK`` its (sender, round, nonce) enters the replay cache."""
        try:
            packet = decode(data, self.max_packet_bytes)
        except PacketError as exc:
            return Verdict(exc.reason, None, str(exc))
        sender = packet.sender
        if sender in self.banned:
            return Verdict(Reason.BANNED_SENDER, packet, f"{packet.did}: banned")
        if not self.allow_unknown and sender not in self.known:
            return Verdict(Reason.UNKNOWN_SENDER, packet, f"{packet.did}: unknown sender")
        if not verify_signature(sender, packet.signature, bytes(data)[:-SIGNATURE_BYTES]):
            return Verdict(Reason.BAD_SIGNATURE, packet, f"{packet.did}: bad signature")
        r = packet.round
        if r > self.current_round + self.future:
            return Verdict(Reason.FUTURE_ROUND, packet, f"round {r}: ahead of {self.current_round}")
        if r < max(self._floor, self.current_round - self.window):
            return Verdict(Reason.STALE_ROUND, packet, f"round {r}: older than the window")
        entry = (sender, packet.nonce)
        if entry in self._seen.get(r, ()):
            return Verdict(Reason.REPLAY, packet, f"{packet.did}: round {r} nonce seen before")
        if self.dimension is not None and len(packet.update) != self.dimension:
            return Verdict(Reason.BAD_DIMENSION, packet, f"{len(packet.update)} weights")
        if not (cm.is_valid_point(packet.base) and cm.is_valid_point(packet.commitment)):
            return Verdict(Reason.BAD_POINT, packet, f"{packet.did}: commitment not a point")
        if packet.proof is not None and self.verify_proofs:
            from qres.trust import proof as pf

            if not pf.verify(
                packet.did, r, packet.base, packet.update, packet.commitment, packet.proof
            ):
                return Verdict(Reason.BAD_PROOF, packet, f"{packet.did}: round {r} bad proof")
        self._remember(r, entry)
        return Verdict(Reason.OK, packet)

    def accept(self, data: bytes) -> UpdatePacket:
        """The packet if :meth:`check` accepts it, else PacketError with the reason."""
        verdict = self.check(data)
        if not verdict.ok:
            raise PacketError(
                verdict.reason, f"packet rejected ({verdict.reason.name}): {verdict.message}"
            )
        return verdict.packet

    def _remember(self, round_: int, entry: tuple[bytes, bytes]) -> None:
        self._seen.setdefault(round_, set()).add(entry)
        self._seen_count += 1
        while self._seen_count > self.replay_capacity and len(self._seen) > 1:
            oldest = min(self._seen)
            self._seen_count -= len(self._seen.pop(oldest))
            self._floor = max(self._floor, oldest + 1)


def _key(key: bytes | str) -> bytes:
    from qres.trust.identity import public_key_of

    if isinstance(key, str):
        return public_key_of(key)
    if len(key) != PUBLIC_KEY_BYTES:
        raise IntegrityError(f"public key of {len(key)} bytes: Ed25519 keys have 32")
    return bytes(key)


class StreamWriter:
    """Records packets (and audit responses) to a binary stream: a header, then records of
    ``type (u8) | length (u32) | bytes``, then (:meth:`finish`) the end record."""

    def __init__(self, out: BinaryIO):
        self.out = out
        self.sha = hashlib.sha256(STREAM_HEADER)
        self.records = 0
        self.finished = False
        self.out.write(STREAM_HEADER)
        self.bytes_written = len(STREAM_HEADER)

    def write(self, data: bytes, kind: int = RECORD_PACKET) -> None:
        """Append one record (the encoded packet or audit response)."""
        if kind not in _LIMITS or len(data) > _LIMITS[kind]:
            raise PacketError(Reason.OVERSIZE, f"record of kind {kind}, {len(data)} bytes")
        if self.finished:
            raise QresError("packet stream already finished; start a new one")
        record = _RECORD.pack(kind, len(data)) + data
        self.out.write(record)
        self.sha.update(record)
        self.records += 1
        self.bytes_written += len(record)

    def write_packet(self, packet: UpdatePacket) -> None:
        """Append an update packet."""
        self.write(packet.encode(), RECORD_PACKET)

    def write_audit(self, response: AuditResponse) -> None:
        """Append an audit response."""
        self.write(response.encode(), RECORD_AUDIT)

    def finish(self) -> None:
        """Write the end record: the record count and the hash of everything before it.
        A stream without it reads as truncated."""
        if self.finished:
            return
        body = _END.pack(self.records, self.sha.digest())
        self.out.write(_RECORD.pack(RECORD_END, len(body)) + body)
        self.bytes_written += _RECORD.size + len(body)
        self.finished = True


def read_stream(stream: BinaryIO, where: str = "stream") -> Iterator[tuple[int, bytes]]:
    """Yield ``(kind, record bytes)`` from a recorded stream; PacketError on a bad header, a
    record kind it does not know, a length over the limit, a truncated record, a missing or
    wrong end record, or bytes after it. Records are not decoded here (the caller decides
    what a bad record means)."""
    head = stream.read(len(STREAM_HEADER))
    if len(head) < 4 or head[:4] != STREAM_MAGIC:
        raise PacketError(Reason.MALFORMED, f"{where}: not a qres packet stream (bad magic)")
    if len(head) >= 5 and head[4] < STREAM_VERSION:
        why = {0: "has no end record", 1: "has no end record", 2: "holds version-1 update packets"}
        why = why.get(head[4], "holds no round-step evidence")
        raise PacketError(
            Reason.BAD_VERSION,
            f"{where}: packet stream version {head[4]} {why} and is no longer "
            f"read (this qres reads version {STREAM_VERSION}); record it again",
        )
    if len(head) < len(STREAM_HEADER) or head[4] != STREAM_VERSION or any(head[5:8]):
        raise PacketError(Reason.BAD_VERSION, f"{where}: unknown stream version or header")
    sha = hashlib.sha256(head)
    number = 0
    while True:
        frame = stream.read(_RECORD.size)
        if not frame:
            raise PacketError(
                Reason.MALFORMED,
                f"{where}: ends after record {number} without its end record; truncated",
            )
        number += 1
        if len(frame) < _RECORD.size:
            raise PacketError(Reason.MALFORMED, f"{where}: record {number} truncated")
        kind, length = _RECORD.unpack(frame)
        if kind == RECORD_END:
            _check_end(stream, length, number - 1, sha.digest(), where)
            return
        if kind not in _LIMITS:
            raise PacketError(Reason.MALFORMED, f"{where}: record {number} of unknown kind {kind}")
        if length > _LIMITS[kind]:
            raise PacketError(Reason.OVERSIZE, f"{where}: record {number} claims {length} bytes")
        body = stream.read(length)
        if len(body) != length:
            raise PacketError(Reason.MALFORMED, f"{where}: record {number} truncated")
        sha.update(frame)
        sha.update(body)
        yield kind, body


def _check_end(stream: BinaryIO, length: int, count: int, digest: bytes, where: str) -> None:
    """The end record must hold the count and hash of what came before, and end the file."""
    if length != _END.size:
        raise PacketError(Reason.MALFORMED, f"{where}: end record of {length} bytes; corrupted")
    body = stream.read(_END.size)
    if len(body) != _END.size:
        raise PacketError(Reason.MALFORMED, f"{where}: end record truncated")
    listed, hashed = _END.unpack(body)
    if listed != count or hashed != digest:
        raise PacketError(
            Reason.MALFORMED,
            f"{where}: end record lists {listed} records, the stream has {count}"
            if listed != count
            else f"{where}: end record hash does not match the records; corrupted",
        )
    if stream.read(1):
        raise PacketError(Reason.MALFORMED, f"{where}: bytes after the end record; corrupted")
