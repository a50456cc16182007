"""The ``.qres`` container: a versioned header, independent checksummed blocks, an index and a
trailer with the whole-stream checksum. The byte layout is specified in ``docs/format.md``.

Every length and count read from a file is checked against hard limits and against the bytes
actually present before anything is allocated or sliced; every failure is an
:class:`~qres.errors.IntegrityError` naming what is wrong and where (the block number for a
damaged block).
"""

from __future__ import annotations

import hashlib
import json
import struct
import zlib
from typing import Any, BinaryIO

import attrs

from qres.errors import IntegrityError

MAGIC = b"\x89QRS\r\n\x1a\n"
FORMAT_VERSION = 1
INDEX_MAGIC = b"QIDX"
END_MAGIC = b"QEND"

#: Hard limits that no valid file exceeds; they bound what a hostile file can make us allocate.
MAX_HEADER_BYTES = 1 << 20
MAX_CHANNELS = 4096
MAX_BLOCK_FRAMES = 1 << 24
MAX_BLOCKS = (1 << 32) - 1
MAX_TAIL_BYTES = 8 * MAX_CHANNELS
MAX_WEIGHTS = 1 << 16

#: Block methods.
METHOD_PREDICTED = 0  # predictor residuals, entropy coded
METHOD_DEFLATE = 1  # general-purpose fallback (zlib) of the block's raw bytes
METHOD_STORED = 2  # the block's raw bytes, verbatim
METHOD_NAMES = {METHOD_PREDICTED: "predicted", METHOD_DEFLATE: "deflate", METHOD_STORED: "stored"}

#: Sample types a container may hold, and their sizes in bytes.
ITEMSIZE = {
    "int8": 1,
    "int16": 2,
    "int32": 4,
    "int64": 8,
    "uint8": 1,
    "uint16": 2,
    "uint32": 4,
    "float32": 4,
    "float64": 8,
}
SAMPLE_DTYPES = tuple(ITEMSIZE)

_PREAMBLE = struct.Struct("<8sHHI")  # magic, version, reserved, header length
BLOCK_MAGIC = b"QBLK"
_BLOCK_HEAD = struct.Struct("<4sIIBBHI")  # magic, payload len, frames, method, flags, 0, raw crc
_INDEX_HEAD = struct.Struct("<4sI")  # magic, block count
_INDEX_ENTRY = struct.Struct("<QI")  # offset of the block record, frames
_TRAILER = struct.Struct("<QQ32sI4s")  # index offset, total frames, sha256, crc, end magic
TRAILER_SIZE = _TRAILER.size


@attrs.frozen
class Header:
    """What a reader needs before the first block: the stream's shape and the codec settings."""

    dtype: str
    channels: int
    layout: str  # "interleaved" or "planar"
    byte_order: str  # "little" or "big"
    block_frames: int
    frames: int | None  # total frames when known up front (the trailer always has it)
    codec: dict[str, Any]  # resolved settings: predictor, coder, max_error, transform
    prefix: bytes = b""  # bytes kept verbatim before the samples (e.g. an .npy header)
    weights: tuple[int, ...] = ()  # the predictor's initial Q16.16 weights

    @property
    def itemsize(self) -> int:
        """Bytes per sample."""
        return ITEMSIZE[self.dtype]


def _canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode("utf-8")


def encode_header(header: Header) -> bytes:
    """The preamble and header bytes, ending with the header's CRC-32."""
    meta = {
        "dtype": header.dtype,
        "channels": header.channels,
        "layout": header.layout,
        "byte_order": header.byte_order,
        "block_frames": header.block_frames,
        "frames": header.frames,
        "codec": header.codec,
        "prefix_bytes": len(header.prefix),
        "weights": len(header.weights),
    }
    settings = _canonical_json(meta)
    body = (
        struct.pack("<I", len(settings))
        + settings
        + header.prefix
        + struct.pack(f"<{len(header.weights)}i", *header.weights)
    )
    head = _PREAMBLE.pack(MAGIC, FORMAT_VERSION, 0, len(body)) + body
    return head + struct.pack("<I", zlib.crc32(head))


def read_header(stream: BinaryIO) -> tuple[Header, int]:
    """Read and check the header at the start of ``stream``; return it and its length."""
    pre = stream.read(_PREAMBLE.size)
    if len(pre) < _PREAMBLE.size or pre[:8] != MAGIC:
        if pre[:4] == b"\x89QRS":
            raise IntegrityError("header: damaged magic; the file is corrupted")
        raise IntegrityError("not a .qres file (wrong magic); check the file name")
    _, version, _, length = _PREAMBLE.unpack(pre)
    if version != FORMAT_VERSION:
        raise IntegrityError(
            f"header: format version {version} is not supported by this qres (reads version "
            f"{FORMAT_VERSION}); upgrade qres"
        )
    if length > MAX_HEADER_BYTES:
        raise IntegrityError(f"header: length {length} exceeds {MAX_HEADER_BYTES}; corrupted")
    body = stream.read(length)
    crc = stream.read(4)
    if len(body) < length or len(crc) < 4:
        raise IntegrityError("header: file ends inside the header; the file is truncated")
    if zlib.crc32(pre + body) != struct.unpack("<I", crc)[0]:
        raise IntegrityError("header: checksum mismatch; the header is corrupted")
    return parse_header_body(body), _PREAMBLE.size + length + 4


def parse_header_body(body: bytes) -> Header:
    """Parse the header body (settings JSON, prefix bytes, weights), checking every field."""
    if len(body) < 4:
        raise IntegrityError("header: too short; corrupted")
    (json_len,) = struct.unpack_from("<I", body)
    if json_len > len(body) - 4:
        raise IntegrityError("header: settings length exceeds the header; corrupted")
    try:
        meta = json.loads(body[4 : 4 + json_len].decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise IntegrityError("header: unreadable settings; corrupted or foreign file") from exc
    if not isinstance(meta, dict):
        raise IntegrityError("header: settings are not an object; corrupted")
    rest = body[4 + json_len :]

    def field(name, kind, check):
        value = meta.get(name)
        if not isinstance(value, kind) or isinstance(value, bool) or not check(value):
            raise IntegrityError(f"header: bad {name} {value!r}; corrupted or foreign file")
        return value

    dtype = field("dtype", str, lambda v: v in SAMPLE_DTYPES)
    channels = field("channels", int, lambda v: 1 <= v <= MAX_CHANNELS)
    layout = field("layout", str, lambda v: v in ("interleaved", "planar"))
    byte_order = field("byte_order", str, lambda v: v in ("little", "big"))
    block_frames = field("block_frames", int, lambda v: 1 <= v <= MAX_BLOCK_FRAMES)
    frames = meta.get("frames")
    if frames is not None and (
        not isinstance(frames, int) or isinstance(frames, bool) or not 0 <= frames < 1 << 62
    ):
        raise IntegrityError(f"header: bad frames {frames!r}; corrupted")
    codec = field("codec", dict, lambda v: True)
    n_prefix = field("prefix_bytes", int, lambda v: 0 <= v <= MAX_HEADER_BYTES)
    n_weights = field("weights", int, lambda v: 0 <= v <= MAX_WEIGHTS)
    if len(rest) != n_prefix + 4 * n_weights:
        raise IntegrityError("header: prefix and weights do not fill the header; corrupted")
    prefix = bytes(rest[:n_prefix])
    weights = struct.unpack(f"<{n_weights}i", rest[n_prefix:])
    return Header(dtype, channels, layout, byte_order, block_frames, frames, codec, prefix, weights)


@attrs.frozen
class Block:
    """One block record: its frames, coding method, flags, raw CRC-32 and payload."""

    frames: int
    method: int
    flags: int
    raw_crc: int
    payload: bytes


def encode_block(block: Block) -> bytes:
    """The record of one block: head, payload, and a CRC-32 over both."""
    head = _BLOCK_HEAD.pack(
        BLOCK_MAGIC, len(block.payload), block.frames, block.method, block.flags, 0, block.raw_crc
    )
    crc = zlib.crc32(block.payload, zlib.crc32(head))
    return head + block.payload + struct.pack("<I", crc)


def _read_exact(stream: BinaryIO, n: int, what: str) -> bytes:
    data = stream.read(n)
    if len(data) != n:
        raise IntegrityError(f"{what}: file ends early; the file is truncated")
    return data


@attrs.frozen
class Index:
    """The index at the end: each block's offset and frames, and the stream's trailing bytes."""

    offsets: tuple[int, ...]
    frames: tuple[int, ...]
    tail: bytes


@attrs.frozen
class Trailer:
    """The fixed-size end of the file: where the index is, total frames, stream SHA-256."""

    index_offset: int
    total_frames: int
    sha256: bytes


def encode_index(index: Index) -> bytes:
    """The index record: magic, count, entries, trailing bytes, CRC-32."""
    body = _INDEX_HEAD.pack(INDEX_MAGIC, len(index.offsets)) + b"".join(
        _INDEX_ENTRY.pack(o, f) for o, f in zip(index.offsets, index.frames, strict=True)
    )
    body += struct.pack("<I", len(index.tail)) + index.tail
    return body + struct.pack("<I", zlib.crc32(body))


def encode_trailer(trailer: Trailer) -> bytes:
    """The trailer: index offset, total frames, SHA-256, CRC-32 and the end magic."""
    fields = struct.pack("<QQ32s", trailer.index_offset, trailer.total_frames, trailer.sha256)
    return fields + struct.pack("<I", zlib.crc32(fields)) + END_MAGIC


class Writer:
    """Writes a container to a binary stream, block by block, then the index and trailer.

    ``offset`` is the number of bytes written so far (the whole file after :meth:`finish`).
    """

    def __init__(self, stream: BinaryIO, header: Header):
        self.stream = stream
        self.header = header
        self.offsets: list[int] = []
        self.frames: list[int] = []
        self.sha = hashlib.sha256(header.prefix)
        head = encode_header(header)
        stream.write(head)
        self.offset = len(head)

    def add(self, block: Block, raw: bytes | memoryview) -> None:
        """Append one block; ``raw`` is its samples' bytes in frame order (for the SHA-256)."""
        record = encode_block(block)
        self.stream.write(record)
        self.offsets.append(self.offset)
        self.frames.append(block.frames)
        self.offset += len(record)
        self.sha.update(raw)

    def finish(self, tail: bytes = b"") -> Trailer:
        """Write the index and trailer; ``tail`` is trailing input bytes kept verbatim."""
        self.sha.update(tail)
        index = encode_index(Index(tuple(self.offsets), tuple(self.frames), tail))
        trailer = Trailer(self.offset, sum(self.frames), self.sha.digest())
        end = encode_trailer(trailer)
        self.stream.write(index + end)
        self.offset += len(index) + len(end)
        return trailer


class Reader:
    """Reads a container sequentially (works on pipes), checking every record as it goes.

    Iterate :meth:`blocks` to get ``(number, Block)``; when it ends, :attr:`index` and
    :attr:`trailer` are checked and set. Block payloads are bounded by the block's raw size.
    """

    def __init__(self, stream: BinaryIO):
        self.stream = stream
        self.header, self.offset = read_header(stream)
        self.index: Index | None = None
        self.trailer: Trailer | None = None

    def max_payload(self, frames: int) -> int:
        """The largest payload a block of ``frames`` frames may have (its raw size)."""
        return frames * self.header.channels * self.header.itemsize

    def read_block(self, number: int) -> Block:
        """Read the block record at the current position (after its 4-byte magic)."""
        where = f"block {number}"
        head = BLOCK_MAGIC + _read_exact(self.stream, _BLOCK_HEAD.size - 4, where)
        _, length, frames, method, flags, _, raw_crc = _BLOCK_HEAD.unpack(head)
        if not 1 <= frames <= self.header.block_frames:
            raise IntegrityError(f"{where}: bad frame count {frames}; the block is corrupted")
        if method not in METHOD_NAMES:
            raise IntegrityError(f"{where}: unknown method {method}; the block is corrupted")
        if length > self.max_payload(frames):
            raise IntegrityError(f"{where}: payload length {length} too large; corrupted")
        payload = _read_exact(self.stream, length, where)
        (crc,) = struct.unpack("<I", _read_exact(self.stream, 4, where))
        if zlib.crc32(payload, zlib.crc32(head)) != crc:
            raise IntegrityError(f"{where}: checksum mismatch; the block is corrupted")
        self.offset += len(head) + length + 4
        return Block(frames, method, flags, raw_crc, payload)

    def blocks(self):
        """Yield ``(number, Block)`` for each block, then check the index and trailer."""
        number = 0
        offsets: list[int] = []
        frames: list[int] = []
        while True:
            start = self.offset
            tag = _read_exact(self.stream, 4, f"block {number}")
            if tag == INDEX_MAGIC:
                break
            if tag != BLOCK_MAGIC:
                raise IntegrityError(f"block {number}: bad record magic; the file is corrupted")
            if number >= MAX_BLOCKS:
                raise IntegrityError("too many blocks; the file is corrupted")
            block = self.read_block(number)
            offsets.append(start)
            frames.append(block.frames)
            yield number, block
            number += 1
        self._read_index_and_trailer(start, offsets, frames)

    def _read_index_and_trailer(self, start: int, offsets: list[int], frames: list[int]):
        (count,) = struct.unpack("<I", _read_exact(self.stream, 4, "index"))
        if count != len(offsets):
            raise IntegrityError(
                f"index: lists {count} blocks but the file has {len(offsets)}; corrupted"
            )
        entries = _read_exact(self.stream, count * _INDEX_ENTRY.size, "index")
        (tail_len,) = struct.unpack("<I", _read_exact(self.stream, 4, "index"))
        if tail_len > MAX_TAIL_BYTES:
            raise IntegrityError(f"index: tail of {tail_len} bytes is too long; corrupted")
        tail = _read_exact(self.stream, tail_len, "index")
        (crc,) = struct.unpack("<I", _read_exact(self.stream, 4, "index"))
        body = _INDEX_HEAD.pack(INDEX_MAGIC, count) + entries + struct.pack("<I", tail_len) + tail
        if zlib.crc32(body) != crc:
            raise IntegrityError("index: checksum mismatch; the index is corrupted")
        listed = [_INDEX_ENTRY.unpack_from(entries, i * _INDEX_ENTRY.size) for i in range(count)]
        if [o for o, _ in listed] != offsets or [f for _, f in listed] != frames:
            raise IntegrityError("index: does not match the blocks; the file is corrupted")
        self.index = Index(tuple(offsets), tuple(frames), tail)
        trailer = parse_trailer(_read_exact(self.stream, TRAILER_SIZE, "trailer"))
        if trailer.index_offset != start or trailer.total_frames != sum(frames):
            raise IntegrityError("trailer: does not match the index; the file is corrupted")
        if self.header.frames is not None and self.header.frames != trailer.total_frames:
            raise IntegrityError("trailer: frame count differs from the header; corrupted")
        if self.stream.read(1):
            raise IntegrityError("trailer: unexpected bytes after the end; corrupted")
        self.offset = start + len(body) + 4 + TRAILER_SIZE
        self.trailer = trailer


def parse_trailer(data: bytes) -> Trailer:
    """Parse and check the fixed-size trailer."""
    if len(data) != TRAILER_SIZE:
        raise IntegrityError("trailer: file ends early; the file is truncated")
    index_offset, total, sha, crc, end = _TRAILER.unpack(data)
    if end != END_MAGIC:
        raise IntegrityError("trailer: missing end marker; the file is truncated or corrupted")
    if zlib.crc32(data[:48]) != crc:
        raise IntegrityError("trailer: checksum mismatch; the trailer is corrupted")
    return Trailer(index_offset, total, sha)


def read_index(stream: BinaryIO, header_end: int) -> tuple[Index, Trailer, int]:
    """Random access: read the trailer at the end of a seekable ``stream``, then the index.

    Returns the index, the trailer and the file size. Every offset is checked to lie inside the
    file, after the header and before the index, in increasing order.
    """
    try:
        size = stream.seek(0, 2)
    except (OSError, ValueError) as exc:
        raise IntegrityError("the container is not seekable; give a file, not a pipe") from exc
    if size < header_end + TRAILER_SIZE:
        raise IntegrityError("trailer: file ends early; the file is truncated")
    stream.seek(size - TRAILER_SIZE)
    trailer = parse_trailer(stream.read(TRAILER_SIZE))
    if not header_end <= trailer.index_offset <= size - TRAILER_SIZE - _INDEX_HEAD.size - 8:
        raise IntegrityError("trailer: index offset outside the file; corrupted")
    stream.seek(trailer.index_offset)
    magic, count = _INDEX_HEAD.unpack(_read_exact(stream, _INDEX_HEAD.size, "index"))
    room = size - TRAILER_SIZE - trailer.index_offset - _INDEX_HEAD.size - 8
    if magic != INDEX_MAGIC or count * _INDEX_ENTRY.size > room:
        raise IntegrityError("index: bad magic or block count; the index is corrupted")
    entries = _read_exact(stream, count * _INDEX_ENTRY.size, "index")
    (tail_len,) = struct.unpack("<I", _read_exact(stream, 4, "index"))
    if tail_len > min(MAX_TAIL_BYTES, room - len(entries)):
        raise IntegrityError("index: bad tail length; the index is corrupted")
    tail = _read_exact(stream, tail_len, "index")
    (crc,) = struct.unpack("<I", _read_exact(stream, 4, "index"))
    body = _INDEX_HEAD.pack(magic, count) + entries + struct.pack("<I", tail_len) + tail
    if zlib.crc32(body) != crc:
        raise IntegrityError("index: checksum mismatch; the index is corrupted")
    listed = [_INDEX_ENTRY.unpack_from(entries, i * _INDEX_ENTRY.size) for i in range(count)]
    offsets = tuple(o for o, _ in listed)
    frames = tuple(f for _, f in listed)
    # Blocks start right after the header and each one ends before the next (or the index).
    ends = (*offsets, trailer.index_offset)
    in_order = all(b > a for a, b in zip(ends[:-1], ends[1:], strict=True))
    if ends[0] != header_end or not in_order:
        raise IntegrityError("index: block offsets out of order; the index is corrupted")
    if sum(frames) != trailer.total_frames:
        raise IntegrityError("index: frame counts do not add up to the trailer's; corrupted")
    return Index(offsets, frames, tail), trailer, size


def read_block_at(stream: BinaryIO, header: Header, index: Index, number: int) -> Block:
    """Random access: read block ``number`` using the index (payload checked by its CRC)."""
    if not 0 <= number < len(index.offsets):
        raise IntegrityError(f"block {number}: no such block (the file has {len(index.offsets)})")
    stream.seek(index.offsets[number])
    if _read_exact(stream, 4, f"block {number}") != BLOCK_MAGIC:
        raise IntegrityError(f"block {number}: bad record magic; the block is corrupted")
    reader = Reader.__new__(Reader)
    reader.stream, reader.header, reader.offset = stream, header, index.offsets[number] + 4
    block = reader.read_block(number)
    if block.frames != index.frames[number]:
        raise IntegrityError(f"block {number}: frame count differs from the index; corrupted")
    return block


def describe(stream: BinaryIO) -> dict[str, Any]:
    """A plain-data summary of a container for ``qres info``: header, totals and block table."""
    header, header_end = read_header(stream)
    index, trailer, size = read_index(stream, header_end)
    blocks = []
    for number, offset in enumerate(index.offsets):
        stream.seek(offset)
        head = _read_exact(stream, _BLOCK_HEAD.size, f"block {number}")
        magic, length, frames, method, _flags, _, _raw_crc = _BLOCK_HEAD.unpack(head)
        if magic != BLOCK_MAGIC:
            raise IntegrityError(f"block {number}: bad record magic; the block is corrupted")
        blocks.append(
            {
                "number": number,
                "offset": offset,
                "frames": frames,
                "method": METHOD_NAMES.get(method, f"unknown ({method})"),
                "payload_bytes": length,
            }
        )
    raw = len(header.prefix) + trailer.total_frames * header.channels * header.itemsize
    raw += len(index.tail)
    return {
        "format_version": FORMAT_VERSION,
        "file_bytes": size,
        "header": {
            "dtype": header.dtype,
            "channels": header.channels,
            "layout": header.layout,
            "byte_order": header.byte_order,
            "block_frames": header.block_frames,
            "codec": header.codec,
            "prefix_bytes": len(header.prefix),
            "weights": len(header.weights),
        },
        "frames": trailer.total_frames,
        "raw_bytes": raw,
        "ratio": raw / size if size else 0.0,
        "tail_bytes": len(index.tail),
        "sha256": trailer.sha256.hex(),
        "blocks": blocks,
    }
