"""The ``.qres`` container: a versioned header, independent checksummed blocks, an index and a
trailer with the whole-stream checksum. The byte layout is specified in ``docs/format.md``.

Every length and count read from a file is checked against hard limits and against the bytes
actually present before anything is allocated or sliced; every failure is an
:class:`~qres.kernel.errors.IntegrityError` naming what is wrong and where (the block number for a
damaged block). Encodings are canonical: each header has exactly one byte form, and a reader
refuses any other (over-long varints, unsorted keys, non-minimal number forms).
"""

from __future__ import annotations

import hashlib
import math
import struct
import zlib
from typing import Any, BinaryIO

import attrs

from qres.kernel.errors import IntegrityError, QresError

MAGIC = b"\x89QRS\r\n\x1a\n"
#: The format version this qres writes, and the newest it reads. Version 6 added block
#: stages that earlier readers refuse (channel pairs and repeats, block flag bits 4-5);
#: version 7 the scaled-lattice mapping (side-record kind 7), version 8 the dictionary
#: mapping (kind 8), version 9 repeats that copy from the block's earlier channels, version 10
#: quantised blocks (method 3, bounded-error streams only), version 11 quantised float blocks
#: that record their own grids (the channels' lattices) and three float mappings (side-record
#: kinds 9-11: run tables of non-finite samples, shifted bit views, narrow entries). Each
#: stream is written in the lowest version that holds it (:func:`written_version`): float
#: streams as 11; bounded-error integer streams, which never record a grid, as 10; lossless
#: integer streams, which hold nothing newer than 9, as 9 (so that a qres reading 9 or 10 still
#: reads them). Files of versions 4 to 10 stay readable.
FORMAT_VERSION = 11
#: The version lossless integer streams are written in.
LOSSLESS_VERSION = 9
#: The version bounded-error integer streams are written in.
BOUNDED_INTEGER_VERSION = 10
#: The first version whose float channels may hold run tables, shifted bit views and narrow
#: entries (mapping kinds 9-11).
RUN_TABLES = 11
#: The first version whose repeats may copy from earlier channels of the block.
CROSS_CHANNEL_REPEATS = 9
#: The oldest format version this qres reads.
OLDEST_VERSION = 4
INDEX_MAGIC = b"QIDX"
END_MAGIC = b"QEND"

#: Hard limits that no valid file exceeds; they bound what a hostile file can make us allocate.
MAX_HEADER_BYTES = 1 << 20
MAX_CHANNELS = 4096
MAX_BLOCK_FRAMES = 1 << 24
#: Frames (samples per channel) per block when a profile does not say (``block_samples``).
DEFAULT_BLOCK_FRAMES = 65536
MAX_BLOCKS = (1 << 32) - 1
MAX_TAIL_BYTES = 8 * MAX_CHANNELS
MAX_WEIGHTS = 1 << 16
MAX_FRAMES = (1 << 62) - 1
#: Nesting depth of lists and tables inside one plugin table's settings.
MAX_SETTINGS_DEPTH = 16

#: Block methods.
METHOD_PREDICTED = 0  # predictor residuals, entropy coded
METHOD_DEFLATE = 1  # general-purpose fallback (zlib) of the block's raw bytes
METHOD_STORED = 2  # the block's raw bytes, verbatim
METHOD_QUANTISED = 3  # bounded error: samples quantised, then coded as a predicted block
METHOD_NAMES = {
    METHOD_PREDICTED: "predicted",
    METHOD_DEFLATE: "deflate",
    METHOD_STORED: "stored",
    METHOD_QUANTISED: "quantised",
}
#: The first format version whose blocks may be quantised (method 3).
QUANTISED_BLOCKS = 10
#: The first format version whose quantised float blocks may record their own grids.
LATTICE_GRIDS = 11


def written_version(dtype: str, bounded: bool) -> int:
    """The format version a stream of ``dtype`` samples is written in: the lowest that holds
    every block it may code. Float streams may hold run tables and recorded grids (11); other
    bounded-error streams quantised blocks (10); other lossless streams nothing newer than 9.
    (Decided before the first block: the header comes first in a stream.)"""
    if dtype.startswith("float"):
        return RUN_TABLES
    return BOUNDED_INTEGER_VERSION if bounded else LOSSLESS_VERSION


#: Block flags share a byte with the method (bits 0-1), so they may use 6 bits.
MAX_BLOCK_FLAGS = (1 << 6) - 1

#: Sample types a container may hold, and their sizes in bytes. The order is the header's
#: 1-byte dtype code (0 = int8 ... 8 = float64, 9 = int24): never reorder it.
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
    "int24": 3,  # packed signed 3-byte samples (24-bit audio, seismic converters): format 5
}
SAMPLE_DTYPES = tuple(ITEMSIZE)
#: The format version each sample type was first written in (before version 6, each type was
#: written in exactly this version); the others were written as version 4.
_DTYPE_VERSION = {"int24": 5}

_PREAMBLE = struct.Struct("<8sH")  # magic, format version; a varint body length follows
BLOCK_TAG = b"B"
#: Smallest block record: tag, method byte, 1-byte length and frames, raw CRC, record CRC.
MIN_BLOCK_RECORD = 12
#: index offset, sha256, CRC-32 of the index and these 40 bytes, end magic
_TRAILER = struct.Struct("<Q32sI4s")
TRAILER_SIZE = _TRAILER.size
#: Smallest index: magic, 1-byte count, 1-byte tail length.
MIN_INDEX = 6

# Header flags byte.
_F_PLANAR = 1
_F_BIG = 2
_F_FRAMES = 4
_F_ERR_SHIFT = 3  # bits 3-4: how max_error is stored
_ERR_NONE, _ERR_INT, _ERR_FLOAT = 0, 1, 2
_F_PREFIX = 32
_F_WEIGHTS = 64
_F_KNOWN = _F_PLANAR | _F_BIG | _F_FRAMES | (3 << _F_ERR_SHIFT) | _F_PREFIX | _F_WEIGHTS

# Settings value tags (docs/format.md, "Plugin settings").
_T_NULL, _T_FALSE, _T_TRUE, _T_UINT, _T_NINT, _T_FLOAT, _T_STR, _T_LIST, _T_MAP = range(9)
_T_SMALL = 0x40  # 0x40 + n for the integers 0 .. 63
_SMALL_INTS = 64
_INT_MIN, _INT_MAX = -(1 << 63), (1 << 63) - 1
_CANONICAL_NAN = struct.pack("<d", math.nan)
_FLOAT = struct.Struct("<d")
_INT_BOUND = 1 << 53  # integral error bounds below this are stored as varints


# --------------------------------------------------------------------------- varints


def put_varint(out: bytearray, value: int) -> None:
    """Append ``value`` (>= 0) as an unsigned LEB128 varint: 7 bits a byte, low bits first."""
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def get_varint(buf: bytes, pos: int, what: str, limit: int) -> tuple[int, int]:
    """Read a canonical varint at ``buf[pos]`` that must be at most ``limit``.

    Returns the value and the position after it. Over-long forms (a final 0x00 byte after the
    first) and values above ``limit`` are refused, so a lying length never reaches an allocation.
    """
    value = shift = 0
    start = pos
    while True:
        if pos >= len(buf):
            raise IntegrityError(f"{what}: ends inside a number; corrupted or truncated")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if value > limit:
            raise IntegrityError(f"{what}: value exceeds {limit}; corrupted")
        if byte < 0x80:
            if byte == 0 and pos - start > 1:
                raise IntegrityError(f"{what}: number not in its shortest form; corrupted")
            return value, pos
        shift += 7


def _read_varint(stream: BinaryIO, what: str, limit: int) -> tuple[int, bytes]:
    """A canonical varint read from a stream one byte at a time; the value and its bytes."""
    raw = stream.read(1)
    if not raw:
        raise IntegrityError(f"{what}: file ends early; the file is truncated")
    if raw[0] < 0x80 and raw[0] <= limit:
        return raw[0], raw  # the common one-byte case
    while raw[-1] >= 0x80 and len(raw) <= 10:
        byte = stream.read(1)
        if not byte:
            raise IntegrityError(f"{what}: file ends early; the file is truncated")
        raw += byte
    # get_varint refuses what is too long, over-long or above the limit.
    value, _ = get_varint(raw, 0, what, limit)
    return value, raw


# --------------------------------------------------------------------------- plugin settings


def _put_str(out: bytearray, text: str, where: str) -> None:
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise QresError(f"header: {where} is not valid text; fix the plugin's settings") from exc
    put_varint(out, len(data))
    out += data


def _put_value(out: bytearray, value: Any, where: str, depth: int) -> None:
    if depth > MAX_SETTINGS_DEPTH:
        raise QresError(f"header: {where} nests deeper than {MAX_SETTINGS_DEPTH}; flatten it")
    if value is None:
        out.append(_T_NULL)
    elif value is False:
        out.append(_T_FALSE)
    elif value is True:
        out.append(_T_TRUE)
    elif isinstance(value, int):
        if not _INT_MIN <= value <= _INT_MAX:
            raise QresError(f"header: {where} = {value} does not fit 64 bits; use a smaller value")
        if 0 <= value < _SMALL_INTS:
            out.append(_T_SMALL + value)
        elif value >= 0:
            out.append(_T_UINT)
            put_varint(out, value)
        else:
            out.append(_T_NINT)
            put_varint(out, -1 - value)
    elif isinstance(value, float):
        out.append(_T_FLOAT)
        out += _CANONICAL_NAN if math.isnan(value) else _FLOAT.pack(value)
    elif isinstance(value, str):
        out.append(_T_STR)
        _put_str(out, value, where)
    elif isinstance(value, (list, tuple)):
        out.append(_T_LIST)
        put_varint(out, len(value))
        for i, item in enumerate(value):
            _put_value(out, item, f"{where}[{i}]", depth + 1)
    elif isinstance(value, dict):
        out.append(_T_MAP)
        _put_map(out, value, where, depth + 1)
    else:
        raise QresError(
            f"header: {where} is a {type(value).__name__}; plugin settings must be plain data"
        )


def _put_map(out: bytearray, table: dict, where: str, depth: int) -> None:
    for key in table:
        if not isinstance(key, str):
            raise QresError(f"header: {where} has a non-text key {key!r}; use text keys")
    # Canonical order: keys sorted by their UTF-8 bytes (the same as code point order).
    keys = sorted(table)
    put_varint(out, len(keys))
    for key in keys:
        _put_str(out, key, where)
        _put_value(out, table[key], f"{where}.{key}", depth)


def encode_table(table: dict[str, Any], where: str = "plugin") -> bytes:
    """A plugin table ``{"use": name, ...settings}`` in the header's canonical binary form.

    The ``use`` name is written first, then the other settings as a map; an empty map is one
    byte. Raises :class:`QresError` for a value that is not plain data.
    """
    use = table.get("use") if isinstance(table, dict) else None
    if not isinstance(use, str) or not use:
        raise QresError(f"header: {where} table has no plugin name ('use'); give one")
    out = bytearray()
    _put_str(out, use, f"{where}.use")
    _put_map(out, {k: v for k, v in table.items() if k != "use"}, where, 1)
    return bytes(out)


class _Parser:
    """Reads canonical settings values from a header body; every error names ``what``."""

    def __init__(self, buf: bytes, pos: int, what: str):
        self.buf, self.pos, self.what = buf, pos, what

    def varint(self, limit: int) -> int:
        value, self.pos = get_varint(self.buf, self.pos, self.what, limit)
        return value

    def take(self, n: int) -> bytes:
        if n > len(self.buf) - self.pos:
            raise IntegrityError(f"{self.what}: length {n} runs past the header; corrupted")
        data = self.buf[self.pos : self.pos + n]
        self.pos += n
        return bytes(data)

    def text(self) -> tuple[str, bytes]:
        raw = self.take(self.varint(len(self.buf) - self.pos))
        try:
            return raw.decode("utf-8"), raw
        except UnicodeDecodeError as exc:
            raise IntegrityError(f"{self.what}: text is not UTF-8; corrupted") from exc

    def value(self, depth: int) -> Any:
        if depth > MAX_SETTINGS_DEPTH:
            raise IntegrityError(f"{self.what}: settings nest too deep; corrupted")
        tag = self.take(1)[0]
        if tag >= _T_SMALL:
            if tag - _T_SMALL >= _SMALL_INTS:
                raise IntegrityError(f"{self.what}: unknown value tag {tag}; corrupted")
            return tag - _T_SMALL
        if tag in (_T_NULL, _T_FALSE, _T_TRUE):
            return (None, False, True)[tag]
        if tag == _T_UINT:
            value = self.varint(_INT_MAX)
            if value < _SMALL_INTS:
                raise IntegrityError(f"{self.what}: integer not in its shortest form; corrupted")
            return value
        if tag == _T_NINT:
            return -1 - self.varint(_INT_MAX)
        if tag == _T_FLOAT:
            raw = self.take(8)
            (value,) = _FLOAT.unpack(raw)
            if math.isnan(value) and raw != _CANONICAL_NAN:
                raise IntegrityError(f"{self.what}: NaN not in its canonical form; corrupted")
            return value
        if tag == _T_STR:
            return self.text()[0]
        if tag == _T_LIST:
            # Every item takes at least one byte: a count beyond the bytes left is a lie.
            count = self.varint(len(self.buf) - self.pos)
            return [self.value(depth + 1) for _ in range(count)]
        if tag == _T_MAP:
            return self.map(depth + 1)
        raise IntegrityError(f"{self.what}: unknown value tag {tag}; corrupted")

    def map(self, depth: int) -> dict[str, Any]:
        count = self.varint((len(self.buf) - self.pos) // 2)  # a key and a value: >= 2 bytes
        table: dict[str, Any] = {}
        previous = None
        for _ in range(count):
            key, raw = self.text()
            if previous is not None and raw <= previous:
                raise IntegrityError(f"{self.what}: keys out of order or repeated; corrupted")
            previous = raw
            table[key] = self.value(depth)
        return table

    def table(self) -> dict[str, Any]:
        use, _ = self.text()
        if not use:
            raise IntegrityError(f"{self.what}: empty plugin name; corrupted")
        rest = self.map(1)
        if "use" in rest:
            raise IntegrityError(f"{self.what}: 'use' repeated in the settings; corrupted")
        return {"use": use, **rest}


def decode_table(data: bytes, what: str = "header: plugin table") -> dict[str, Any]:
    """The plugin table encoded by :func:`encode_table`; ``data`` must hold exactly one."""
    parser = _Parser(data, 0, what)
    table = parser.table()
    if parser.pos != len(data):
        raise IntegrityError(f"{what}: extra bytes after the table; corrupted")
    return table


# --------------------------------------------------------------------------- header


@attrs.frozen
class Header:
    """What a reader needs before the first block: the stream's shape and the codec settings."""

    dtype: str
    channels: int
    layout: str  # "interleaved" or "planar"
    byte_order: str  # "little" or "big"
    block_frames: int
    frames: int | None  # total frames when known up front (the index always has them)
    codec: dict[str, Any]  # resolved settings: {"predictor": {...}, "coder": {...}, "max_error"}
    prefix: bytes = b""  # bytes kept verbatim before the samples (e.g. an .npy header)
    weights: tuple[int, ...] = ()  # the predictor's initial Q16.16 weights
    version: int = FORMAT_VERSION  # the file's format version (what its blocks may hold)

    @property
    def itemsize(self) -> int:
        """Bytes per sample."""
        return ITEMSIZE[self.dtype]


def _error_form(max_error: Any) -> int:
    """How an error bound is stored: none (0), a varint (integral) or an IEEE float64."""
    if isinstance(max_error, bool) or not isinstance(max_error, (int, float)):
        raise QresError(f"header: max_error {max_error!r} is not a number; give a number >= 0")
    if not (math.isfinite(max_error) and max_error >= 0):
        raise QresError(f"header: max_error {max_error!r} is not finite and >= 0; fix it")
    if max_error == 0:
        return _ERR_NONE
    if max_error == int(max_error) and max_error < _INT_BOUND:
        return _ERR_INT
    return _ERR_FLOAT


def encode_header_body(header: Header) -> bytes:
    """The header body (docs/format.md): fixed fields, the two plugin tables, prefix, weights.

    Raises :class:`QresError` for settings the format cannot hold.
    """
    codec = header.codec
    if set(codec) - {"predictor", "coder", "max_error"}:
        extra = sorted(set(codec) - {"predictor", "coder", "max_error"})
        raise QresError(f"header: codec settings {extra} have no place in the format; drop them")
    max_error = codec.get("max_error", 0)
    form = _error_form(max_error)
    flags = (
        (_F_PLANAR if header.layout == "planar" else 0)
        | (_F_BIG if header.byte_order == "big" else 0)
        | (_F_FRAMES if header.frames is not None else 0)
        | form << _F_ERR_SHIFT
        | (_F_PREFIX if header.prefix else 0)
        | (_F_WEIGHTS if header.weights else 0)
    )
    out = bytearray([SAMPLE_DTYPES.index(header.dtype), flags])
    put_varint(out, header.channels)
    put_varint(out, header.block_frames)
    if header.frames is not None:
        put_varint(out, header.frames)
    if form == _ERR_INT:
        put_varint(out, int(max_error))
    elif form == _ERR_FLOAT:
        out += _FLOAT.pack(float(max_error))
    if header.prefix:
        put_varint(out, len(header.prefix))
    if header.weights:
        put_varint(out, len(header.weights))
    out += encode_table(codec.get("predictor"), "predictor")
    out += encode_table(codec.get("coder"), "coder")
    out += header.prefix
    out += struct.pack(f"<{len(header.weights)}i", *header.weights)
    return bytes(out)


def format_version(dtype: str) -> int:
    """The format version a stream of ``dtype`` samples was written in before version 6: the
    lowest that has the type (a reader refuses any other older version for it, so each stream
    has one byte form per version)."""
    return _DTYPE_VERSION.get(dtype, OLDEST_VERSION)


def encode_header(header: Header) -> bytes:
    """The preamble and header bytes, ending with the header's CRC-32."""
    body = encode_header_body(header)
    head = bytearray(_PREAMBLE.pack(MAGIC, header.version))
    put_varint(head, len(body))
    head += body
    return bytes(head) + struct.pack("<I", zlib.crc32(head))


def read_header(stream: BinaryIO) -> tuple[Header, int]:
    """Read and check the header at the start of ``stream``; return it and its length."""
    pre = stream.read(_PREAMBLE.size)
    if len(pre) < _PREAMBLE.size or pre[:8] != MAGIC:
        if pre[:4] == b"\x89QRS":
            raise IntegrityError("header: damaged magic; the file is corrupted")
        raise IntegrityError("not a .qres file (wrong magic); check the file name")
    _, version = _PREAMBLE.unpack(pre)
    if not OLDEST_VERSION <= version <= FORMAT_VERSION:
        raise IntegrityError(
            f"header: format version {version} is not supported by this qres (reads versions "
            f"{OLDEST_VERSION} to {FORMAT_VERSION}); "
            + ("upgrade qres" if version > FORMAT_VERSION else "compress the original again")
        )
    length, raw_length = _read_varint(stream, "header", MAX_HEADER_BYTES)
    body = stream.read(length)
    crc = stream.read(4)
    if len(body) < length or len(crc) < 4:
        raise IntegrityError("header: file ends inside the header; the file is truncated")
    if zlib.crc32(body, zlib.crc32(pre + raw_length)) != struct.unpack("<I", crc)[0]:
        raise IntegrityError("header: checksum mismatch; the header is corrupted")
    return parse_header_body(body, version), len(pre) + len(raw_length) + length + 4


def parse_header_body(body: bytes, version: int | None = None) -> Header:
    """Parse the header body (fixed fields, plugin tables, prefix, weights), checking each;
    ``version`` is the file's format version (``None``: the one this qres writes)."""
    p = _Parser(body, 0, "header")
    dtype_code, flags = p.take(2)
    if dtype_code >= len(SAMPLE_DTYPES):
        raise IntegrityError(f"header: unknown sample type code {dtype_code}; corrupted")
    if version is not None and version < format_version(SAMPLE_DTYPES[dtype_code]):
        raise IntegrityError(
            f"header: unknown sample type code {dtype_code} for format {version}; corrupted"
        )
    if version is not None and version < 6 and version != format_version(SAMPLE_DTYPES[dtype_code]):
        raise IntegrityError(
            f"header: format {version} for {SAMPLE_DTYPES[dtype_code]} samples, which are "
            f"written as format {format_version(SAMPLE_DTYPES[dtype_code])}; corrupted"
        )
    if flags & ~_F_KNOWN:
        raise IntegrityError(f"header: unknown flags {flags:#04x}; corrupted or foreign file")
    channels = p.varint(MAX_CHANNELS)
    block_frames = p.varint(MAX_BLOCK_FRAMES)
    if channels < 1 or block_frames < 1:
        raise IntegrityError("header: zero channels or block frames; corrupted")
    frames = p.varint(MAX_FRAMES) if flags & _F_FRAMES else None
    form = (flags >> _F_ERR_SHIFT) & 3
    max_error: int | float = 0
    if form == _ERR_INT:
        max_error = p.varint(_INT_BOUND - 1)
        if max_error == 0:
            raise IntegrityError("header: error bound 0 stored as a bound; corrupted")
    elif form == _ERR_FLOAT:
        (max_error,) = _FLOAT.unpack(p.take(8))
        if not (math.isfinite(max_error) and max_error > 0) or _error_form(max_error) != form:
            raise IntegrityError(f"header: bad max_error {max_error!r}; corrupted")
    elif form != _ERR_NONE:
        raise IntegrityError("header: unknown error bound form; corrupted")
    n_prefix = p.varint(MAX_HEADER_BYTES) if flags & _F_PREFIX else 0
    n_weights = p.varint(MAX_WEIGHTS) if flags & _F_WEIGHTS else 0
    if (flags & _F_PREFIX and not n_prefix) or (flags & _F_WEIGHTS and not n_weights):
        raise IntegrityError("header: empty prefix or weights flagged; corrupted")
    p.what = "header: predictor settings"
    predictor = p.table()
    p.what = "header: coder settings"
    coder = p.table()
    if len(body) - p.pos != n_prefix + 4 * n_weights:
        raise IntegrityError("header: prefix and weights do not fill the header; corrupted")
    prefix = body[p.pos : p.pos + n_prefix]
    weights = struct.unpack_from(f"<{n_weights}i", body, p.pos + n_prefix)
    codec = {"predictor": predictor, "coder": coder, "max_error": max_error}
    return Header(
        SAMPLE_DTYPES[dtype_code],
        channels,
        "planar" if flags & _F_PLANAR else "interleaved",
        "big" if flags & _F_BIG else "little",
        block_frames,
        frames,
        codec,
        bytes(prefix),
        weights,
        FORMAT_VERSION if version is None else version,
    )


# --------------------------------------------------------------------------- blocks


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
    if block.method not in METHOD_NAMES or not 0 <= block.flags <= MAX_BLOCK_FLAGS:
        raise QresError(f"block: method {block.method} or flags {block.flags} out of range")
    head = bytearray(BLOCK_TAG)
    head.append(block.method | block.flags << 2)
    put_varint(head, block.frames)
    put_varint(head, len(block.payload))
    head += struct.pack("<I", block.raw_crc)
    crc = zlib.crc32(block.payload, zlib.crc32(head))
    return bytes(head) + block.payload + struct.pack("<I", crc)


#: Reads larger than this are made in pieces, so that a length a file lies about allocates
#: no more than the bytes the file really has (``read(n)`` reserves ``n`` bytes up front).
_READ_CHUNK = 1 << 20


def _read_exact(stream: BinaryIO, n: int, what: str) -> bytes:
    if n <= _READ_CHUNK:
        data = stream.read(n)
    else:
        parts, got = [], 0
        while got < n:
            part = stream.read(min(_READ_CHUNK, n - got))
            if not part:
                break
            parts.append(part)
            got += len(part)
        data = b"".join(parts)
    if len(data) != n:
        raise IntegrityError(f"{what}: file ends early; the file is truncated")
    return data


def _read_block_head(stream: BinaryIO, header: Header, number: int) -> tuple[bytes, int, int, int]:
    """The head of a block record after its tag: (head bytes with the tag, frames, method byte,
    payload length), each field checked against the header."""
    where = f"block {number}"
    kind = _read_exact(stream, 1, where)
    frames, raw_frames = _read_varint(stream, where, MAX_BLOCK_FRAMES)
    if not 1 <= frames <= header.block_frames:
        raise IntegrityError(f"{where}: bad frame count {frames}; the block is corrupted")
    if kind[0] & 3 == METHOD_QUANTISED and header.version < QUANTISED_BLOCKS:
        raise IntegrityError(f"{where}: method 3 in a format {header.version} file; corrupted")
    if kind[0] & 3 not in METHOD_NAMES:
        raise IntegrityError(f"{where}: unknown method {kind[0] & 3}; the block is corrupted")
    limit = frames * header.channels * header.itemsize
    length, raw_length = _read_varint(stream, f"{where}: payload length", limit)
    head = BLOCK_TAG + kind + raw_frames + raw_length
    return head, frames, kind[0], length


@attrs.frozen
class Index:
    """The index at the end: each block's offset and frames, and the stream's trailing bytes."""

    offsets: tuple[int, ...]
    frames: tuple[int, ...]
    tail: bytes


@attrs.frozen
class Trailer:
    """The end of the file: where the index is, the stream's SHA-256, and the total frames
    (not stored: the sum of the index's frames)."""

    index_offset: int
    total_frames: int
    sha256: bytes


def encode_index(index: Index, end: int) -> bytes:
    """The index record: magic, count, each block's record length and frames, trailing bytes
    (its CRC-32 is in the trailer). ``end`` is the offset of the index (where the last block
    record ends)."""
    body = bytearray(INDEX_MAGIC)
    put_varint(body, len(index.offsets))
    ends = (*index.offsets[1:], end) if index.offsets else ()
    for start, stop, frames in zip(index.offsets, ends, index.frames, strict=True):
        put_varint(body, stop - start)
        put_varint(body, frames)
    put_varint(body, len(index.tail))
    body += index.tail
    return bytes(body)


def encode_trailer(trailer: Trailer, index: bytes) -> bytes:
    """The trailer: index offset, SHA-256, the CRC-32 of ``index`` (the encoded index) and
    those 40 bytes, and the end magic."""
    fields = struct.pack("<Q32s", trailer.index_offset, trailer.sha256)
    return fields + struct.pack("<I", zlib.crc32(fields, zlib.crc32(index))) + END_MAGIC


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
        index = encode_index(Index(tuple(self.offsets), tuple(self.frames), tail), self.offset)
        trailer = Trailer(self.offset, sum(self.frames), self.sha.digest())
        end = encode_trailer(trailer, index)
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

    def read_block(self, number: int) -> Block:
        """Read the block record at the current position (after its 1-byte tag)."""
        where = f"block {number}"
        head, frames, kind, length = _read_block_head(self.stream, self.header, number)
        raw_crc = _read_exact(self.stream, 4, where)
        payload = _read_exact(self.stream, length, where)
        (crc,) = struct.unpack("<I", _read_exact(self.stream, 4, where))
        if zlib.crc32(payload, zlib.crc32(head + raw_crc)) != crc:
            raise IntegrityError(f"{where}: checksum mismatch; the block is corrupted")
        self.offset += len(head) + 4 + length + 4
        (raw,) = struct.unpack("<I", raw_crc)
        return Block(frames, kind & 3, kind >> 2, raw, payload)

    def blocks(self):
        """Yield ``(number, Block)`` for each block, then check the index and trailer."""
        number = 0
        offsets: list[int] = []
        frames: list[int] = []
        while True:
            start = self.offset
            tag = _read_exact(self.stream, 1, f"block {number}")
            if tag == INDEX_MAGIC[:1]:
                if _read_exact(self.stream, 3, "index") != INDEX_MAGIC[1:]:
                    raise IntegrityError("index: bad magic; the file is corrupted")
                break
            if tag != BLOCK_TAG:
                raise IntegrityError(f"block {number}: bad record tag; the file is corrupted")
            if number >= MAX_BLOCKS:
                raise IntegrityError("too many blocks; the file is corrupted")
            block = self.read_block(number)
            offsets.append(start)
            frames.append(block.frames)
            yield number, block
            number += 1
        self._read_index_and_trailer(start, offsets, frames)

    def _read_index_and_trailer(self, start: int, offsets: list[int], frames: list[int]):
        count, raw_count = _read_varint(self.stream, "index: block count", MAX_BLOCKS)
        if count != len(offsets):
            raise IntegrityError(
                f"index: lists {count} blocks but the file has {len(offsets)}; corrupted"
            )
        # The rest of the file is the index entries, the tail and the trailer: bounded by the
        # blocks already read, so read it in one go (a pipe ends where the file does) and parse
        # it from memory rather than byte by byte.
        most = count * _MAX_ENTRY + 3 + MAX_TAIL_BYTES + TRAILER_SIZE + 1
        chunks, got = [], 0
        while got < most:
            chunk = self.stream.read(min(1 << 16, most - got))
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
        rest = b"".join(chunks)
        pos = 0
        ends = (*offsets[1:], start) if offsets else ()
        for number, (first, stop, n) in enumerate(zip(offsets, ends, frames, strict=True)):
            length, pos = get_varint(rest, pos, "index", stop - first)
            listed, pos = get_varint(rest, pos, "index", MAX_BLOCK_FRAMES)
            if length != stop - first or listed != n:
                raise IntegrityError(f"index: entry {number} does not match block {number}")
        tail_len, pos = get_varint(rest, pos, "index: tail length", MAX_TAIL_BYTES)
        if len(rest) < pos + tail_len + TRAILER_SIZE:
            raise IntegrityError("index: file ends early; the file is truncated")
        if len(rest) > pos + tail_len + TRAILER_SIZE:
            raise IntegrityError("trailer: unexpected bytes after the end; corrupted")
        tail = rest[pos : pos + tail_len]
        body = INDEX_MAGIC + raw_count + rest[: pos + tail_len]
        index_offset, sha = _parse_trailer(rest[pos + tail_len :], body)
        self.index = Index(tuple(offsets), tuple(frames), tail)
        if index_offset != start:
            raise IntegrityError("trailer: does not match the index; the file is corrupted")
        total = sum(frames)
        if self.header.frames is not None and self.header.frames != total:
            raise IntegrityError("index: frame count differs from the header; corrupted")
        self.offset = start + len(body) + TRAILER_SIZE
        self.trailer = Trailer(index_offset, total, sha)


def _parse_trailer(data: bytes, index: bytes | None) -> tuple[int, bytes]:
    """Check the fixed-size trailer; the index offset and the stream SHA-256. The CRC-32 covers
    the ``index`` bytes too: ``None`` skips it until the index has been read."""
    if len(data) != TRAILER_SIZE:
        raise IntegrityError("trailer: file ends early; the file is truncated")
    index_offset, sha, crc, end = _TRAILER.unpack(data)
    if end != END_MAGIC:
        raise IntegrityError("trailer: missing end marker; the file is truncated or corrupted")
    if index is not None and zlib.crc32(data[:40], zlib.crc32(index)) != crc:
        raise IntegrityError("index: checksum mismatch; the index or trailer is corrupted")
    return index_offset, sha


#: Largest index entry: a record length (a block's raw size plus its head: 6 bytes) and frames.
_MAX_ENTRY = 6 + 4


def read_index(stream: BinaryIO, header_end: int) -> tuple[Index, Trailer, int]:
    """Random access: read the trailer at the end of a seekable ``stream``, then the index.

    Returns the index, the trailer and the file size. Blocks must tile the bytes between the
    header and the index exactly; the count is bounded by the room they would need before the
    index is read into memory.
    """
    try:
        size = stream.seek(0, 2)
    except (OSError, ValueError) as exc:
        raise IntegrityError("the container is not seekable; give a file, not a pipe") from exc
    if size < header_end + MIN_INDEX + TRAILER_SIZE:
        raise IntegrityError("trailer: file ends early; the file is truncated")
    stream.seek(size - TRAILER_SIZE)
    trailer_bytes = stream.read(TRAILER_SIZE)
    index_offset, sha = _parse_trailer(trailer_bytes, None)
    if not header_end <= index_offset <= size - TRAILER_SIZE - MIN_INDEX:
        raise IntegrityError("trailer: index offset outside the file; corrupted")
    stream.seek(index_offset)
    room = size - TRAILER_SIZE - index_offset
    head = _read_exact(stream, min(room, 9), "index")
    # Blocks are at least MIN_BLOCK_RECORD bytes: the count cannot exceed what fits before.
    most = min(MAX_BLOCKS, (index_offset - header_end) // MIN_BLOCK_RECORD)
    count, pos = get_varint(head, 4, "index: block count", most)
    if head[:4] != INDEX_MAGIC or room > pos + count * _MAX_ENTRY + 3 + MAX_TAIL_BYTES:
        raise IntegrityError("index: bad magic or size; the index is corrupted")
    body = head + _read_exact(stream, room - len(head), "index")
    _parse_trailer(trailer_bytes, body)
    offsets, frames = [], []
    offset = header_end
    for _ in range(count):
        length, pos = get_varint(body, pos, "index", index_offset - offset)
        n, pos = get_varint(body, pos, "index", MAX_BLOCK_FRAMES)
        if length < MIN_BLOCK_RECORD or n < 1:
            raise IntegrityError("index: impossible block entry; the index is corrupted")
        offsets.append(offset)
        frames.append(n)
        offset += length
    if offset != index_offset:
        raise IntegrityError("index: blocks do not reach the index; the index is corrupted")
    tail_len, pos = get_varint(body, pos, "index: tail length", MAX_TAIL_BYTES)
    if pos + tail_len != len(body):
        raise IntegrityError("index: tail does not fill the index; corrupted")
    trailer = Trailer(index_offset, sum(frames), sha)
    return Index(tuple(offsets), tuple(frames), bytes(body[pos : pos + tail_len])), trailer, size


def read_block_at(stream: BinaryIO, header: Header, index: Index, number: int) -> Block:
    """Random access: read block ``number`` using the index (payload checked by its CRC)."""
    if not 0 <= number < len(index.offsets):
        raise IntegrityError(f"block {number}: no such block (the file has {len(index.offsets)})")
    stream.seek(index.offsets[number])
    if _read_exact(stream, 1, f"block {number}") != BLOCK_TAG:
        raise IntegrityError(f"block {number}: bad record tag; the block is corrupted")
    reader = Reader.__new__(Reader)
    reader.stream, reader.header, reader.offset = stream, header, index.offsets[number] + 1
    block = reader.read_block(number)
    if block.frames != index.frames[number]:
        raise IntegrityError(f"block {number}: frame count differs from the index; corrupted")
    return block


def _block_entry(number: int, offset: int, frames: int, kind: int, length: int) -> dict:
    return {
        "number": number,
        "offset": offset,
        "frames": frames,
        "method": METHOD_NAMES[kind & 3],
        "flags": kind >> 2,
        "payload_bytes": length,
    }


def _seekable(stream: BinaryIO) -> bool:
    try:
        return bool(stream.seekable())
    except (AttributeError, OSError, ValueError):
        return False


def _describe_pipe(stream: BinaryIO) -> tuple[Header, Index, Trailer, int, list[dict]]:
    """Read a container front to back (a pipe cannot seek to its index): every record is
    checked as it streams past, and only one block is held in memory at a time."""
    reader = Reader(stream)
    blocks = []
    offset = reader.offset
    for number, block in reader.blocks():
        kind = block.method | block.flags << 2
        blocks.append(_block_entry(number, offset, block.frames, kind, len(block.payload)))
        offset = reader.offset
    assert reader.index is not None and reader.trailer is not None
    return reader.header, reader.index, reader.trailer, reader.offset, blocks


def describe(stream: BinaryIO) -> dict[str, Any]:
    """A plain-data summary of a container for ``qres info``: header, totals and block table.

    A seekable file is read at its index and block heads only; a pipe is read through.
    """
    if not _seekable(stream):
        header, index, trailer, size, blocks = _describe_pipe(stream)
        return _summary(header, index, trailer, size, blocks)
    header, header_end = read_header(stream)
    index, trailer, size = read_index(stream, header_end)
    if header.frames is not None and header.frames != trailer.total_frames:
        raise IntegrityError("index: frame count differs from the header; corrupted")
    blocks = []
    for number, offset in enumerate(index.offsets):
        stream.seek(offset)
        if _read_exact(stream, 1, f"block {number}") != BLOCK_TAG:
            raise IntegrityError(f"block {number}: bad record tag; the block is corrupted")
        _, frames, kind, length = _read_block_head(stream, header, number)
        blocks.append(_block_entry(number, offset, frames, kind, length))
    return _summary(header, index, trailer, size, blocks)


def _summary(
    header: Header, index: Index, trailer: Trailer, size: int, blocks: list[dict]
) -> dict[str, Any]:
    raw = len(header.prefix) + trailer.total_frames * header.channels * header.itemsize
    raw += len(index.tail)
    return {
        "format_version": header.version,
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
