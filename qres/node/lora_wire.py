"""The signed packet of a LoRA node: one shared layer's change for one round (``QRLU``).

A node whose profile has a ``[lora]`` table (docs/lora.md) does not send the swarm's ``QRUP``
model updates: it sends, each round, the change of the shared layer whose turn the round is
(:func:`qres.lora.exchange.role_of_round`) since the base it last aggregated, as Q16.16 int32
values in wire order (:func:`qres.lora.exchange.change`). The packet says what it carries: the
layer, the domain it aggregates the domain layer with, the digest of the base the change is
measured from, and the bits per sample its node spent coding the round's window.

Layout (version 1, little-endian; docs/node.md "LoRA nodes"):

| offset | bytes | field |
|---|---|---|
| 0 | 4 | magic ``QRLU`` |
| 4 | 1 | version = 1 |
| 5 | 1 | layer: 0 foundation, 1 domain, 2 swarm |
| 6 | 2 | reserved, 0 |
| 8 | 4 | total length (u32) |
| 12 | 32 | sender's Ed25519 public key |
| 44 | 8 | round (i64, >= 0) |
| 52 | 16 | nonce |
| 68 | 32 | domain tag: SHA-256 of the domain's name |
| 100 | 32 | base digest: SHA-256 of the base (int64 little-endian, wire order) |
| 132 | 4 | coded bits per sample of the round's window (u32, Q16.16) |
| 136 | 4 | ``n``: values (u32, 1 .. :data:`MAX_VALUES`) |
| 140 | 4n | the change, int32 |
| 140 + 4n | 64 | Ed25519 signature over every byte before it |

Decoding checks the length against :data:`MAX_PACKET_BYTES` before any copy and every field
against its bounds; every failure is a :class:`~qres.trust.packet.PacketError`.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Any

import attrs

from qres.lora.hierarchy import SHARED_ROLES
from qres.trust.identity import PUBLIC_KEY_BYTES, SIGNATURE_BYTES, did_of, verify_signature
from qres.trust.packet import PacketError, Reason

MAGIC = b"QRLU"
VERSION = 1
NONCE_BYTES = 16
#: Most values one change may carry (a layer of 65,536 parameters; a node's layers are far
#: smaller: its model is channels x channels * order).
MAX_VALUES = 1 << 16
_HEAD = struct.Struct("<4sBBHI32sq16s32s32sII")
HEADER_BYTES = _HEAD.size
MAX_PACKET_BYTES = HEADER_BYTES + 4 * MAX_VALUES + SIGNATURE_BYTES


def domain_tag(name: str) -> bytes:
    """The 32-byte tag of a domain's name (nodes with one tag share the domain layer)."""
    return hashlib.sha256(b"qres-lora-domain\0" + name.encode()).digest()


def base_digest(base: Any) -> bytes:
    """SHA-256 of a base (int64 little-endian, wire order)."""
    import numpy as np

    raw = np.asarray(base, dtype="<i8").tobytes()
    return hashlib.sha256(b"qres-lora-base\0" + raw).digest()


@attrs.frozen
class LoraPacket:
    """One shared layer's change from one sender for one round, signed."""

    sender: bytes
    round: int
    nonce: bytes
    role: str
    domain: bytes
    base: bytes
    bits: int
    change: tuple[int, ...] = attrs.field(converter=lambda v: tuple(int(x) for x in v))
    signature: bytes = b""

    @property
    def did(self) -> str:
        """The sender's DID."""
        return did_of(self.sender)

    def body(self) -> bytes:
        """Every byte the signature covers."""
        n = len(self.change)
        if not 1 <= n <= MAX_VALUES:
            raise PacketError(Reason.MALFORMED, f"lora packet: {n} values, must be 1..{MAX_VALUES}")
        if self.role not in SHARED_ROLES:
            raise PacketError(Reason.MALFORMED, f"lora packet: {self.role!r} is not shared")
        sizes = (len(self.sender), len(self.nonce), len(self.domain), len(self.base))
        if sizes != (PUBLIC_KEY_BYTES, NONCE_BYTES, 32, 32):
            raise PacketError(Reason.MALFORMED, "lora packet: wrong size of key, nonce or digest")
        total = HEADER_BYTES + 4 * n + SIGNATURE_BYTES
        try:
            head = _HEAD.pack(
                MAGIC,
                VERSION,
                SHARED_ROLES.index(self.role),
                0,
                total,
                self.sender,
                self.round,
                self.nonce,
                self.domain,
                self.base,
                self.bits,
                n,
            )
            values = struct.pack(f"<{n}i", *self.change)
        except struct.error as exc:
            raise PacketError(Reason.MALFORMED, f"lora packet: field out of range ({exc})") from exc
        if self.round < 0:
            raise PacketError(Reason.MALFORMED, "lora packet: negative round")
        return head + values

    def signed(self, identity) -> LoraPacket:
        """This packet signed by ``identity`` (the sender)."""
        if identity.public_key != self.sender:
            raise PacketError(Reason.MALFORMED, "lora packet: signer is not the sender")
        return attrs.evolve(self, signature=identity.sign(self.body()))

    def encode(self) -> bytes:
        """The canonical bytes of a signed packet."""
        if len(self.signature) != SIGNATURE_BYTES:
            raise PacketError(Reason.MALFORMED, "lora packet: unsigned")
        return self.body() + self.signature

    def verify_signature(self) -> bool:
        """True when the signature is the sender's over :meth:`body`."""
        return verify_signature(self.sender, self.signature, self.body())


def decode(data: bytes) -> LoraPacket:
    """Parse a ``QRLU`` packet, every field bounds-checked (the signature is not checked)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise PacketError(Reason.MALFORMED, "lora packet: not bytes")
    if len(data) > MAX_PACKET_BYTES:  # before any copy is made
        raise PacketError(Reason.OVERSIZE, f"lora packet of {len(data)} bytes: too large")
    data = bytes(data)
    if len(data) < HEADER_BYTES + 4 + SIGNATURE_BYTES:
        raise PacketError(Reason.MALFORMED, f"lora packet of {len(data)} bytes: too short")
    magic, version, role, reserved, total, sender, round_, nonce, domain, base, bits, n = (
        _HEAD.unpack_from(data)
    )
    if magic != MAGIC:
        raise PacketError(Reason.MALFORMED, "lora packet: bad magic; not a qres LoRA packet")
    if version != VERSION:
        raise PacketError(
            Reason.BAD_VERSION, f"lora packet: version {version}, this reader knows {VERSION}"
        )
    if role >= len(SHARED_ROLES) or reserved:
        raise PacketError(Reason.MALFORMED, f"lora packet: layer {role} or reserved bytes")
    if round_ < 0 or not 1 <= n <= MAX_VALUES:
        raise PacketError(Reason.MALFORMED, f"lora packet: round {round_} or {n} values")
    expected = HEADER_BYTES + 4 * n + SIGNATURE_BYTES
    if total != expected or len(data) != expected:
        raise PacketError(
            Reason.MALFORMED,
            f"lora packet: length field {total}, actual {len(data)}, layout needs {expected}",
        )
    change = struct.unpack_from(f"<{n}i", data, HEADER_BYTES)
    return LoraPacket(
        sender,
        round_,
        nonce,
        SHARED_ROLES[role],
        domain,
        base,
        bits,
        change,
        data[-SIGNATURE_BYTES:],
    )
