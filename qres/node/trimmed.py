"""Trimmed audit answers: an answer without the packets its requester already holds.

Most of an audit answer (``QRAA``, :mod:`qres.node.audits`) is its round step's evidence, and
most of that is packets: the sender's previous packet and the packets it aggregated. A
receiver checking every packet holds most of them already (every node sends its update to
every peer), so a request lists the packets its sender holds (the first ``HELD_PREFIX_BYTES``
of each packet's hash) and the answer names those by their full hash instead of carrying
them: a ``QRAT`` message. The requester puts the named packets back and gets the very
``QRAA`` answer the sender signed, byte for byte; the signature covers the whole answer, so
nothing about it changes: the same audit, the same evidence in a ban notice (kind 3), which
every receiver re-checks without holding anything.

A packet the requester cannot put back (it listed a prefix that another packet shares, or
the sender named a packet nobody listed) leaves the answer unprovable: unanswered, never a
fault. A sender can always withhold an answer, so this gives it nothing.

``QRAT`` version 1, little-endian (docs/node.md, "Checks")::

    magic "QRAT" (4) | version 1 (1) | flags 0 (1) | reserved 0 (2)
    u32 h: bytes of the answer before its step evidence | u32 r: record length
    u32 n: packets (the previous one first, then the inputs)
    h bytes of the answer | r bytes of the record
    n x (u8 tag: 0 none (the previous only: a chain from genesis),
         1 packet: u32 length + the packet, 2 held: its 32-byte packet hash)
    64 bytes: the answer's signature
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from qres.node import audits
from qres.trust import packet as pk
from qres.trust import roundstep as rs
from qres.trust.identity import SIGNATURE_BYTES

MAGIC = b"QRAT"
VERSION = 1
_HEAD = struct.Struct("<4sBBHIII")
HEADER_BYTES = _HEAD.size
_LEN = struct.Struct("<I")
TAG_NONE, TAG_PACKET, TAG_HELD = 0, 1, 2
HASH_BYTES = 32
#: Most bytes of the answer before its step evidence: header, response, window.
MAX_HEAD_BYTES = audits.ANSWER_HEADER_BYTES + pk.MAX_AUDIT_BYTES + 2 * audits.MAX_WINDOW_SAMPLES
#: Most packets one trimmed answer names: the previous one and every input.
MAX_PACKETS = 1 + rs.MAX_EVIDENCE_INPUTS
#: Largest valid trimmed answer: never more than the full answer plus a tag per packet.
MAX_TRIMMED_BYTES = audits.MAX_ANSWER_BYTES + HEADER_BYTES + MAX_PACKETS


def trim(answer: bytes, held: set[bytes]) -> bytes:
    """``answer`` (a ``QRAA`` this node signed) without the packets whose hash prefix is in
    ``held``: a ``QRAT``, or ``answer`` itself when it leaves nothing out."""
    parsed = audits.decode_answer(answer)
    if not parsed.step or not held:
        return answer
    evidence = rs.decode_evidence(parsed.step)
    packets = [evidence.previous, *evidence.inputs]
    hashes = [None if p is None else pk.packet_hash(p) for p in packets]
    size = audits.HELD_PREFIX_BYTES
    if not any(h is not None and h[:size] in held for h in hashes):
        return answer
    head = len(answer) - len(parsed.step) - SIGNATURE_BYTES
    parts = [
        _HEAD.pack(MAGIC, VERSION, 0, 0, head, len(evidence.record), len(packets)),
        answer[:head],
        evidence.record,
    ]
    for data, h in zip(packets, hashes, strict=True):
        if data is None:
            parts.append(bytes([TAG_NONE]))
        elif h[:size] in held:
            parts.append(bytes([TAG_HELD]) + h)
        else:
            parts.append(bytes([TAG_PACKET]) + _LEN.pack(len(data)) + data)
    parts.append(answer[-SIGNATURE_BYTES:])
    return b"".join(parts)


def expand(data: bytes, lookup: Callable[[bytes], bytes | None]) -> bytes:
    """The ``QRAA`` answer a ``QRAT`` stands for, each held packet put back by
    ``lookup(packet hash)``; PacketError (with a Reason) on any fault. Every length is
    checked against its limit and the bytes left before anything is copied, and the answer
    rebuilt is never larger than a full answer may be."""
    if len(data) > MAX_TRIMMED_BYTES:
        raise pk.PacketError(pk.Reason.OVERSIZE, f"trimmed answer of {len(data)} bytes")
    if len(data) < HEADER_BYTES + SIGNATURE_BYTES:
        raise pk.PacketError(pk.Reason.MALFORMED, "trimmed answer: too short")
    view = memoryview(data)
    magic, version, flags, reserved, head, record, count = _HEAD.unpack_from(view)
    if magic != MAGIC or flags or reserved:
        raise pk.PacketError(pk.Reason.MALFORMED, "trimmed answer: bad magic, flags or reserved")
    if version != VERSION:
        raise pk.PacketError(pk.Reason.BAD_VERSION, f"trimmed answer: version {version}")
    end = len(view) - SIGNATURE_BYTES
    at = HEADER_BYTES
    if head > MAX_HEAD_BYTES or record > rs.MAX_STEP_BYTES or count > MAX_PACKETS:
        raise pk.PacketError(pk.Reason.MALFORMED, "trimmed answer: head, record or count")
    if count < 1 or at + head + record + count > end:  # each packet takes a tag at least
        raise pk.PacketError(pk.Reason.MALFORMED, "trimmed answer: truncated")
    answer_head = bytes(view[at : at + head])
    at += head
    step_record = bytes(view[at : at + record])
    at += record
    packets: list[bytes | None] = []
    total = 0
    for i in range(count):
        found, at = _packet_at(view, at, end, lookup, first=i == 0)
        total += 0 if found is None else len(found)
        if total > rs.MAX_EVIDENCE_BYTES:
            raise pk.PacketError(pk.Reason.OVERSIZE, "trimmed answer: evidence too large")
        packets.append(found)
    if at != end:
        raise pk.PacketError(pk.Reason.MALFORMED, "trimmed answer: bytes after the packets")
    evidence = rs.StepEvidence(step_record, packets[0], packets[1:]).encode()
    return answer_head + evidence + bytes(view[end:])


def _packet_at(view, at: int, end: int, lookup, first: bool) -> tuple[bytes | None, int]:
    """The packet whose tag is at ``at`` (None: no previous packet) and where the next
    begins."""
    if at >= end:
        raise pk.PacketError(pk.Reason.MALFORMED, "trimmed answer: truncated packets")
    tag = view[at]
    at += 1
    if tag == TAG_NONE and first:
        return None, at
    if tag == TAG_PACKET:
        if at + _LEN.size > end:
            raise pk.PacketError(pk.Reason.MALFORMED, "trimmed answer: truncated length")
        (size,) = _LEN.unpack_from(view, at)
        at += _LEN.size
        if not 0 < size <= pk.MAX_PACKET_BYTES or at + size > end:
            raise pk.PacketError(pk.Reason.MALFORMED, f"trimmed answer: packet of {size}")
        return bytes(view[at : at + size]), at + size
    if tag == TAG_HELD:
        if at + HASH_BYTES > end:
            raise pk.PacketError(pk.Reason.MALFORMED, "trimmed answer: truncated hash")
        digest = bytes(view[at : at + HASH_BYTES])
        found = lookup(digest)
        if found is None or pk.packet_hash(found) != digest:
            raise pk.PacketError(pk.Reason.MALFORMED, "trimmed answer: a packet not held")
        return bytes(found), at + HASH_BYTES
    raise pk.PacketError(pk.Reason.MALFORMED, f"trimmed answer: tag {tag}")
