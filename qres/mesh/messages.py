"""Mesh messages: one signed envelope around a canonical JSON body (docs/mesh.md).

Layout, little-endian::

    0   4   magic b"QMSH"
    4   1   version (1)
    5   1   type (ANNOUNCE 1, REQUEST 2, CHUNK 3, DONE 4, BUSY 5, ERROR 6)
    6   2   reserved, zero
    8   32  signer's Ed25519 public key (its DID is did:qres:<hex>)
    40  4   body length L (u32), at most MAX_BODY
    44  L   body: JSON, UTF-8, keys sorted, separators "," and ":"
    44+L 64 Ed25519 signature by the signer over bytes 0 .. 44+L

:func:`decode` parses untrusted bytes: every length is checked before use, the signature
before the JSON is read, and every failure is one :class:`MeshError`.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import attrs

from qres.kernel.errors import QresError
from qres.trust.identity import SIGNATURE_BYTES, did_of, verify_signature

MAGIC = b"QMSH"
VERSION = 1
HEADER = struct.Struct("<4sBBH32sI")
#: Largest body accepted (a prompt of the engine's maximum size fits with room to spare).
MAX_BODY = 1 << 20
#: Deepest JSON nesting accepted in a body (chat messages need 3).
MAX_DEPTH = 8

ANNOUNCE, REQUEST, CHUNK, DONE, BUSY, ERROR = 1, 2, 3, 4, 5, 6
TYPE_NAMES = {ANNOUNCE: "announce", REQUEST: "request", CHUNK: "chunk", DONE: "done",
              BUSY: "busy", ERROR: "error"}  # fmt: skip


class MeshError(QresError):
    """Bytes from a peer were refused (malformed, oversize, badly signed, stale, replayed)."""


@attrs.frozen
class Envelope:
    """A verified message: its ``type``, the signer's ``did`` and the ``body``."""

    type: int
    did: str
    body: dict


def canonical(body: dict) -> bytes:
    """The body's bytes: compact JSON with sorted keys (the same object, the same bytes)."""
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def encode(kind: int, body: dict, identity) -> bytes:
    """Sign ``body`` as a message of type ``kind`` by ``identity``."""
    data = canonical(body)
    if len(data) > MAX_BODY:
        raise MeshError(f"mesh {TYPE_NAMES[kind]}: body of {len(data)} bytes; at most {MAX_BODY}")
    head = HEADER.pack(MAGIC, VERSION, kind, 0, identity.public_key, len(data))
    signed = head + data
    return signed + identity.sign(signed)


def _depth(value: Any, level: int = 0) -> int:
    if isinstance(value, dict):
        return max((_depth(v, level + 1) for v in value.values()), default=level + 1)
    if isinstance(value, list):
        return max((_depth(v, level + 1) for v in value), default=level + 1)
    return level


def decode(data: bytes) -> Envelope:
    """Parse and verify one message (see the module docstring); MeshError on any fault."""
    if len(data) < HEADER.size + SIGNATURE_BYTES:
        raise MeshError(f"mesh message of {len(data)} bytes is shorter than its header")
    magic, version, kind, reserved, key, size = HEADER.unpack_from(data)
    if magic != MAGIC or version != VERSION or reserved:
        raise MeshError("not a mesh message of version 1 (magic, version or reserved bytes)")
    if kind not in TYPE_NAMES:
        raise MeshError(f"mesh message type {kind} is unknown")
    if size > MAX_BODY or len(data) != HEADER.size + size + SIGNATURE_BYTES:
        raise MeshError(f"mesh message length {len(data)} does not match its body length {size}")
    end = HEADER.size + size
    if not verify_signature(key, data[end:], data[:end]):
        raise MeshError("mesh message signature does not verify")
    try:
        body = json.loads(data[HEADER.size : end].decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        raise MeshError(f"mesh message body is not JSON: {exc}") from None
    if not isinstance(body, dict) or _depth(body) > MAX_DEPTH:
        raise MeshError("mesh message body is not a JSON object of bounded depth")
    return Envelope(kind, did_of(key), body)


def field(body: dict, key: str, kind: type | tuple, where: str) -> Any:
    """``body[key]`` if it has type ``kind`` (bools are not ints), else MeshError."""
    value = body.get(key)
    bad_bool = isinstance(value, bool) and kind in (int, float, (int, float))
    if not isinstance(value, kind) or bad_bool:
        raise MeshError(f"mesh {where}: {key} is missing or not {getattr(kind, '__name__', kind)}")
    return value
