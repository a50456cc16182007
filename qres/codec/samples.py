"""Sample streams: what the input bytes mean (type, channels, layout, byte order) and reading
them block by block with bounded memory, from a file, an ``.npy`` file or stdin.

A *frame* is one sample of every channel. Blocks hold whole frames; bytes after the last whole
frame (a truncated sample at the end of a raw file) are kept verbatim as the stream's tail.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from typing import BinaryIO

import attrs

from qres.codec.container import ITEMSIZE, MAX_CHANNELS
from qres.kernel.errors import QresError, UsageError

#: Accepted spellings of each sample type. Short forms give the width in bits (``u8`` is one
#: unsigned byte, as in ``--dtype u8`` for arbitrary bytes).
DTYPE_ALIASES = {
    "int8": "int8", "i8": "int8", "s8": "int8",
    "int16": "int16", "i16": "int16", "s16": "int16",
    "int32": "int32", "i32": "int32", "s32": "int32",
    "int64": "int64", "i64": "int64", "s64": "int64",
    "uint8": "uint8", "u8": "uint8", "byte": "uint8",
    "uint16": "uint16", "u16": "uint16",
    "uint32": "uint32", "u32": "uint32",
    "float32": "float32", "f32": "float32",
    "float64": "float64", "f64": "float64",
}  # fmt: skip

LAYOUTS = ("interleaved", "planar")
BYTE_ORDERS = ("little", "big")


def parse_dtype(text: str) -> str:
    """The canonical sample type for a user's spelling, or a one-line error."""
    found = DTYPE_ALIASES.get(text.strip().lower())
    if found is None:
        raise UsageError(
            f"--dtype {text!r} is not a sample type; use one of: {', '.join(ITEMSIZE)} "
            "(or u8/s16/f32... for the width in bits)"
        )
    return found


@attrs.frozen
class StreamSpec:
    """What the sample bytes are: type, channels, layout and byte order."""

    dtype: str
    channels: int = 1
    layout: str = "interleaved"
    byte_order: str = "little"

    def __attrs_post_init__(self):
        if self.dtype not in ITEMSIZE:
            raise UsageError(
                f"unknown sample type {self.dtype!r}; use one of {', '.join(ITEMSIZE)}"
            )
        if not 1 <= self.channels <= MAX_CHANNELS:
            raise UsageError(f"--channels {self.channels}: must be in [1, {MAX_CHANNELS}]")
        if self.layout not in LAYOUTS:
            raise UsageError(f"--layout {self.layout!r}: use interleaved or planar")
        if self.byte_order not in BYTE_ORDERS:
            raise UsageError(f"--byte-order {self.byte_order!r}: use little or big")

    @property
    def itemsize(self) -> int:
        """Bytes per sample."""
        return ITEMSIZE[self.dtype]

    @property
    def frame_bytes(self) -> int:
        """Bytes per frame (one sample of every channel)."""
        return self.itemsize * self.channels

    def numpy_dtype(self):
        """The numpy dtype of one sample, with the stream's byte order."""
        import numpy as np

        return np.dtype(self.dtype).newbyteorder("<" if self.byte_order == "little" else ">")


def npy_spec(stream: BinaryIO, source: str) -> tuple[StreamSpec, bytes, int]:
    """Read an ``.npy`` header: the stream spec, the header bytes and the number of frames.

    1-D arrays are one channel; N-D arrays are (frames, ...): axis 0 is time and the other axes
    are the channels. C order is interleaved, Fortran order planar.
    """
    import numpy as np
    from numpy.lib import format as npy

    readers = {(1, 0): npy.read_array_header_1_0, (2, 0): npy.read_array_header_2_0}
    try:
        version = npy.read_magic(stream)
        if version not in readers:
            raise ValueError(f"format version {version} is not supported")
        shape, fortran, dtype = readers[version](stream, max_header_size=1 << 16)
    except (ValueError, SyntaxError, OSError, EOFError) as exc:
        raise QresError(f"{source}: not a readable .npy file ({exc}); check the file") from exc
    header_len = stream.tell()
    stream.seek(0)
    prefix = stream.read(header_len)
    name = {np.dtype(k): k for k in ITEMSIZE}.get(dtype.newbyteorder("="))
    if name is None or dtype.hasobject:
        raise QresError(
            f"{source}: .npy sample type {dtype} is not supported; use one of {', '.join(ITEMSIZE)}"
        )
    order = "big" if dtype.byteorder == ">" else "little"
    if len(shape) == 0:
        raise QresError(f"{source}: .npy array is a scalar; give an array of at least 1 dimension")
    # Axis 0 is time; the other axes, flattened in the file's order, are the channels.
    frames, channels = shape[0], math.prod(shape[1:])
    layout = "planar" if fortran and channels > 1 else "interleaved"
    if channels == 0:
        raise QresError(f"{source}: .npy array has no channels")
    if channels > MAX_CHANNELS:
        raise QresError(
            f"{source}: .npy array has {channels} channels (shape {shape}); at most "
            f"{MAX_CHANNELS}: put time on axis 0"
        )
    return StreamSpec(name, channels, layout, order), prefix, frames


class SampleSource:
    """Frames from a binary stream, read in blocks; planar input needs a seekable stream.

    ``prefix`` bytes (e.g. an ``.npy`` header) were consumed before the samples. ``frames`` is
    known for seekable inputs and ``None`` for pipes (then known after the last block).
    """

    def __init__(self, stream: BinaryIO, spec: StreamSpec, prefix: bytes = b""):
        self.stream = stream
        self.spec = spec
        self.prefix = prefix
        self.start = len(prefix)
        self.tail = b""
        self.frames: int | None = None
        size = _size_of(stream)
        if size is not None:
            data_bytes = size - self.start
            self.frames = data_bytes // spec.frame_bytes
        elif spec.layout == "planar" and spec.channels > 1:
            raise QresError("planar input must be a file, not a pipe; spool it to a file first")

    def blocks(self, block_frames: int) -> Iterator[bytes]:
        """Yield each block's bytes in frame order (interleaved), in the stream's byte order."""
        if self.spec.layout == "planar" and self.spec.channels > 1:
            yield from self._planar_blocks(block_frames)
            return
        want = block_frames * self.spec.frame_bytes
        frames_seen = 0
        while True:
            data = _read_up_to(self.stream, want)
            whole = len(data) - len(data) % self.spec.frame_bytes
            if whole:
                frames_seen += whole // self.spec.frame_bytes
                yield data[:whole]
            if len(data) < want:
                self.tail = data[whole:]
                break
        self.frames = frames_seen

    def _planar_blocks(self, block_frames: int) -> Iterator[bytes]:
        import numpy as np

        spec, total = self.spec, self.frames or 0
        item = spec.itemsize
        for first in range(0, total, block_frames):
            n = min(block_frames, total - first)
            block = np.empty((n, spec.channels), dtype=spec.numpy_dtype())
            for c in range(spec.channels):
                self.stream.seek(self.start + (c * total + first) * item)
                raw = self.stream.read(n * item)
                if len(raw) != n * item:
                    raise QresError("input changed size while being read; try again")
                block[:, c] = np.frombuffer(raw, dtype=spec.numpy_dtype())
            yield block.tobytes()
        self.stream.seek(self.start + total * spec.channels * item)
        self.tail = self.stream.read()


def _size_of(stream: BinaryIO) -> int | None:
    try:
        if not stream.seekable():
            return None
        here = stream.tell()
        end = stream.seek(0, os.SEEK_END)
        stream.seek(here)
        return end
    except (OSError, ValueError):
        return None


def _read_up_to(stream: BinaryIO, n: int) -> bytes:
    """Read ``n`` bytes, or fewer only at the end of the stream (pipes return short reads)."""
    parts, got = [], 0
    while got < n:
        chunk = stream.read(n - got)
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def open_input(path: str) -> BinaryIO:
    """Open ``path`` for reading bytes; ``-`` is stdin."""
    if path == "-":
        return sys.stdin.buffer
    try:
        return open(path, "rb")  # noqa: SIM115 - the caller closes it
    except FileNotFoundError as exc:
        raise QresError(f"{path}: no such file; check the path") from exc
    except IsADirectoryError as exc:
        raise QresError(f"{path}: is a directory; give a file") from exc


def spool(stream: BinaryIO) -> BinaryIO:
    """Copy a pipe into an anonymous temporary file so it can be read at random."""
    tmp = tempfile.TemporaryFile()
    shutil.copyfileobj(stream, tmp, 1 << 20)
    tmp.seek(0)
    return tmp


#: WAVE format tags: integer PCM, IEEE float, and the extensible form that names one of them
#: in its sub-format GUID.
_WAVE_PCM, _WAVE_FLOAT, _WAVE_EXTENSIBLE = 1, 3, 0xFFFE
#: Most bytes of chunks before the samples we keep as the prefix (a WAV header is a few
#: hundred bytes; metadata chunks can add some).
MAX_WAV_HEADER = 1 << 16
_WAV_TYPES = {(_WAVE_PCM, 1): "uint8", (_WAVE_PCM, 2): "int16", (_WAVE_PCM, 4): "int32"}
_WAV_TYPES.update({(_WAVE_FLOAT, 4): "float32", (_WAVE_FLOAT, 8): "float64"})


def is_wav(head: bytes) -> bool:
    """Whether ``head`` (the first 12 bytes) starts a RIFF/WAVE file."""
    return len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WAVE"


def wav_spec(stream: BinaryIO, source: str) -> tuple[StreamSpec, bytes]:
    """Read a WAV file's chunks up to its samples: the stream spec and the header bytes.

    Parsed here with ``struct`` rather than the ``wave`` module: the header must be kept byte
    for byte (so we need the exact offset of the samples), and ``wave`` before Python 3.12
    refuses WAVE_FORMAT_EXTENSIBLE, the form of most multichannel and 24-bit files.
    """
    import struct

    head = stream.read(12)
    if not is_wav(head):
        raise QresError(f"{source}: not a RIFF/WAVE file; pass --raw to read its bytes as samples")
    prefix, fmt = bytearray(head), None
    while True:
        chunk = stream.read(8)
        if len(chunk) < 8:
            raise QresError(f"{source}: WAV file ends before its data chunk; the file is truncated")
        cid, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
        prefix += chunk
        if cid == b"data":
            break
        if len(prefix) + size > MAX_WAV_HEADER:
            raise QresError(
                f"{source}: WAV chunks before the samples exceed {MAX_WAV_HEADER} bytes; "
                "pass --raw to compress the file as bytes"
            )
        body = stream.read(size + (size & 1))  # chunks are padded to even sizes
        if len(body) < size:
            raise QresError(f"{source}: WAV chunk {cid!r} is truncated")
        prefix += body
        if cid == b"fmt ":
            fmt = body[:size]
    if fmt is None or len(fmt) < 16:
        raise QresError(f"{source}: WAV file has no valid fmt chunk before its data")
    tag, channels, _rate, _byte_rate, align, bits = struct.unpack("<HHIIHH", fmt[:16])
    if tag == _WAVE_EXTENSIBLE and len(fmt) >= 40:
        tag = struct.unpack("<H", fmt[24:26])[0]  # the sub-format GUID starts with the tag
    width = align // channels if channels else 0
    dtype = _WAV_TYPES.get((tag, width))
    if dtype is None or width * 8 < bits or not 1 <= channels <= MAX_CHANNELS:
        kind = {_WAVE_PCM: "PCM", _WAVE_FLOAT: "float"}.get(tag, f"format {tag:#x}")
        raise QresError(
            f"{source}: WAV of {channels} channels, {kind} in {width * 8}-bit containers is not "
            "supported (8/16/32-bit PCM, 32/64-bit float); pass --raw to compress its bytes"
        )
    return StreamSpec(dtype, channels, "interleaved", "little"), bytes(prefix)
