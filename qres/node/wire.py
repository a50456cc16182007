"""The TCP transport's wire format: frames, records, the handshake payload, peer lists.

Layouts are in docs/transport.md, byte by byte. Everything here parses untrusted bytes: every
length is checked against a hard maximum before anything is allocated, and every failure is a
:class:`WireError` carrying the trust layer's :class:`~qres.trust.packet.Reason`, so a
connection can be closed with its reason counted.
"""

from __future__ import annotations

import struct

import attrs

from qres.node.noise import MAX_MESSAGE, TAGLEN
from qres.trust.identity import PUBLIC_KEY_BYTES, SIGNATURE_BYTES, verify_signature
from qres.trust.packet import Reason

#: Frame header: the body's length, u32 little-endian.
FRAME_HEADER = struct.Struct("<I")
#: Explicit transport nonce before each ciphertext: u64 little-endian.
NONCE = struct.Struct("<Q")
#: Largest frame body: a nonce and one Noise transport message.
MAX_FRAME_BODY = NONCE.size + MAX_MESSAGE
#: Record header inside a transport message: type u8, flags u8.
RECORD = struct.Struct("<BB")
#: Largest record data in one transport message.
MAX_CHUNK = MAX_MESSAGE - TAGLEN - RECORD.size
FLAG_MORE = 0x01

RECORD_DATA = 1
RECORD_PEERS = 2
#: A ban notice (qres.node.bans), kept apart from updates so it is never rate-shared with them.
RECORD_BAN = 3
RECORD_TYPES = (RECORD_DATA, RECORD_PEERS, RECORD_BAN)

#: What the handshake payload's signature covers besides the X25519 key: a fixed context.
STATIC_CONTEXT = b"qres-noise-static/1"
HELLO = struct.Struct(f"<{PUBLIC_KEY_BYTES}s{SIGNATURE_BYTES}sH")
#: Prologue of every handshake: protocol, version, then the swarm's name.
PROLOGUE_PREFIX = b"qres-tcp/1\x00"

MAX_PEERS_PER_RECORD = 64
MAX_HOST = 253
_PEER_HEAD = struct.Struct(f"<{PUBLIC_KEY_BYTES}sHB")


class WireError(Exception):
    """Bytes from a peer were refused; ``reason`` says why (a trust-layer Reason)."""

    def __init__(self, reason: Reason, message: str):
        super().__init__(message)
        self.reason = reason


def prologue(swarm: str) -> bytes:
    """The handshake prologue of a swarm: peers of other swarms fail the handshake."""
    return PROLOGUE_PREFIX + swarm.encode("utf-8")


def frame(body: bytes) -> bytes:
    """One frame: the length header and ``body``."""
    if not 0 < len(body) <= MAX_FRAME_BODY:
        raise WireError(Reason.OVERSIZE, f"frame body of {len(body)} bytes")
    return FRAME_HEADER.pack(len(body)) + body


class FrameDecoder:
    """Splits a byte stream into frame bodies, refusing a length over ``max_body`` (or zero)
    as soon as its 4-byte header is seen, before any of the body is buffered."""

    def __init__(self, max_body: int = MAX_FRAME_BODY):
        self.max_body = min(max_body, MAX_FRAME_BODY)
        self._buf = bytearray()
        self._need: int | None = None

    @property
    def buffered(self) -> int:
        """Bytes held waiting for the rest of a frame."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes]:
        """Add bytes; return the frame bodies they complete, in order."""
        self._buf += data
        out = []
        while True:
            if self._need is None:
                if len(self._buf) < FRAME_HEADER.size:
                    return out
                (length,) = FRAME_HEADER.unpack_from(self._buf)
                if length == 0 or length > self.max_body:
                    raise WireError(
                        Reason.OVERSIZE if length else Reason.MALFORMED,
                        f"frame claims {length} bytes; allowed 1..{self.max_body}",
                    )
                del self._buf[: FRAME_HEADER.size]
                self._need = length
            if len(self._buf) < self._need:
                return out
            out.append(bytes(self._buf[: self._need]))
            del self._buf[: self._need]
            self._need = None


def split_nonce(body: bytes) -> tuple[int, bytes]:
    """A transport frame body's explicit nonce and ciphertext."""
    if len(body) < NONCE.size + TAGLEN + RECORD.size:
        raise WireError(Reason.MALFORMED, f"transport frame of {len(body)} bytes: too short")
    (nonce,) = NONCE.unpack_from(body)
    return nonce, body[NONCE.size :]


def records(kind: int, data: bytes) -> list[bytes]:
    """The record plaintexts carrying ``data`` (split into chunks, all but the last flagged
    MORE)."""
    if kind not in RECORD_TYPES:
        raise WireError(Reason.MALFORMED, f"record type {kind}")
    chunks = [data[i : i + MAX_CHUNK] for i in range(0, len(data), MAX_CHUNK)] or [b""]
    last = len(chunks) - 1
    return [
        RECORD.pack(kind, FLAG_MORE if i < last else 0) + chunk for i, chunk in enumerate(chunks)
    ]


class RecordAssembler:
    """Joins chunked records back into messages, refusing any longer than ``max_message``."""

    def __init__(self, max_message: int):
        self.max_message = max_message
        self._kind: int | None = None
        self._parts: list[bytes] = []
        self._size = 0

    def add(self, plaintext: bytes) -> tuple[int, bytes] | None:
        """Add one decrypted record; returns ``(type, message)`` when one is complete."""
        if len(plaintext) < RECORD.size:
            raise WireError(Reason.MALFORMED, "record shorter than its header")
        kind, flags = RECORD.unpack_from(plaintext)
        if kind not in RECORD_TYPES or flags & ~FLAG_MORE:
            raise WireError(Reason.MALFORMED, f"record type {kind} flags {flags:#x}")
        if self._kind is not None and kind != self._kind:
            raise WireError(Reason.MALFORMED, "record type changed inside a chunked message")
        self._size += len(plaintext) - RECORD.size
        if self._size > self.max_message:
            raise WireError(Reason.OVERSIZE, f"message over {self.max_message} bytes")
        self._kind = kind
        self._parts.append(plaintext[RECORD.size :])
        if flags & FLAG_MORE:
            return None
        message = b"".join(self._parts)
        self._kind, self._parts, self._size = None, [], 0
        return kind, message


@attrs.frozen
class Hello:
    """The handshake payload: the sender's Ed25519 key, its signature of the Noise static key,
    and the TCP port it listens on (0: none)."""

    public_key: bytes
    signature: bytes
    listen_port: int

    def encode(self) -> bytes:
        """The payload bytes."""
        return HELLO.pack(self.public_key, self.signature, self.listen_port)


def make_hello(identity, static_public: bytes, listen_port: int) -> Hello:
    """The Hello binding ``static_public`` (X25519) to ``identity`` (Ed25519)."""
    return Hello(identity.public_key, identity.sign(STATIC_CONTEXT + static_public), listen_port)


def decode_hello(payload: bytes, static_public: bytes | None) -> Hello:
    """Parse a Hello and check its signature over the peer's Noise static key."""
    if len(payload) != HELLO.size or static_public is None:
        raise WireError(Reason.HANDSHAKE_FAILED, f"hello of {len(payload)} bytes")
    hello = Hello(*HELLO.unpack(payload))
    if not verify_signature(hello.public_key, hello.signature, STATIC_CONTEXT + static_public):
        raise WireError(Reason.BAD_SIGNATURE, "hello: static key not signed by the sender's DID")
    return hello


@attrs.frozen
class PeerEntry:
    """One peer exchange entry: a node's Ed25519 key and where it listens."""

    public_key: bytes
    host: str
    port: int


def encode_peers(entries: list[PeerEntry]) -> bytes:
    """A peer list record's data: count u16, then key, port u16, host length u8, host."""
    entries = entries[:MAX_PEERS_PER_RECORD]
    out = bytearray(struct.pack("<H", len(entries)))
    for entry in entries:
        host = entry.host.encode("ascii")
        out += _PEER_HEAD.pack(entry.public_key, entry.port, len(host)) + host
    return bytes(out)


def decode_peers(data: bytes) -> list[PeerEntry]:
    """Parse a peer list; WireError(MALFORMED) on any fault."""
    if len(data) < 2:
        raise WireError(Reason.MALFORMED, "peer list: too short")
    (count,) = struct.unpack_from("<H", data)
    if count > MAX_PEERS_PER_RECORD:
        raise WireError(Reason.MALFORMED, f"peer list of {count} entries")
    pos, out = 2, []
    for _ in range(count):
        if len(data) - pos < _PEER_HEAD.size:
            raise WireError(Reason.MALFORMED, "peer list: truncated entry")
        key, port, host_len = _PEER_HEAD.unpack_from(data, pos)
        pos += _PEER_HEAD.size
        raw = data[pos : pos + host_len]
        pos += host_len
        if len(raw) != host_len or not 0 < host_len <= MAX_HOST or port == 0:
            raise WireError(Reason.MALFORMED, "peer list: bad host or port")
        try:
            host = raw.decode("ascii")
        except UnicodeDecodeError as exc:
            raise WireError(Reason.MALFORMED, "peer list: host is not ASCII") from exc
        if not all(c.isalnum() or c in ".-:[]_" for c in host):
            raise WireError(Reason.MALFORMED, "peer list: bad character in host")
        out.append(PeerEntry(key, host, port))
    if pos != len(data):
        raise WireError(Reason.MALFORMED, "peer list: trailing bytes")
    return out
