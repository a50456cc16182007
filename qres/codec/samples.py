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

from qres.codec.container import ITEMSIZE, MAX_CHANNELS, MAX_TAIL_BYTES
from qres.kernel.errors import IntegrityError, QresError, UsageError

#: Accepted spellings of each sample type. Short forms give the width in bits (``u8`` is one
#: unsigned byte, as in ``--dtype u8`` for arbitrary bytes).
DTYPE_ALIASES = {
    "int8": "int8", "i8": "int8", "s8": "int8",
    "int16": "int16", "i16": "int16", "s16": "int16",
    "int32": "int32", "i32": "int32", "s32": "int32",
    "int64": "int64", "i64": "int64", "s64": "int64",
    "int24": "int24", "i24": "int24", "s24": "int24",
    "uint8": "uint8", "u8": "uint8", "byte": "uint8",
    "uint16": "uint16", "u16": "uint16",
    "uint32": "uint32", "u32": "uint32",
    "float32": "float32", "f32": "float32",
    "float64": "float64", "f64": "float64",
}  # fmt: skip

#: Sample types numpy has no dtype for: packed in the file, held in arrays of a wider type.
PACKED = {"int24": "int32"}
#: The sample types numpy arrays (and ``.npy`` files) can hold as they are.
ARRAY_DTYPES = tuple(k for k in ITEMSIZE if k not in PACKED)
#: Value range of each integer sample type.
INT_RANGES = {"int24": (-(1 << 23), (1 << 23) - 1)}

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
        """The numpy dtype of one sample in an array, with the stream's byte order (for a
        packed type, the wider type its arrays hold: int32 for int24)."""
        import numpy as np

        name = PACKED.get(self.dtype, self.dtype)
        return np.dtype(name).newbyteorder("<" if self.byte_order == "little" else ">")

    @property
    def packed(self) -> bool:
        """Whether the samples have no numpy dtype of their width (int24: 3 bytes each)."""
        return self.dtype in PACKED

    def working(self) -> StreamSpec:
        """The spec the codec's integer mapping works on: this one, or for packed samples the
        same stream as its wider array type (int24 as int32)."""
        if not self.packed:
            return self
        return attrs.evolve(self, dtype=PACKED[self.dtype])

    def value_range(self) -> tuple[int, int] | None:
        """The smallest and largest value of integer samples; ``None`` for floats."""
        import numpy as np

        if self.dtype.startswith("float"):
            return None
        if self.dtype in INT_RANGES:
            return INT_RANGES[self.dtype]
        info = np.iinfo(self.dtype)
        return int(info.min), int(info.max)

    def to_array(self, raw):
        """The samples in ``raw`` (whole samples, file bytes) as a 1-D array of
        :meth:`numpy_dtype`; packed samples are sign-extended into it."""
        import numpy as np

        if not self.packed:
            return np.frombuffer(raw, dtype=self.numpy_dtype())
        packed = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3)
        wide = np.zeros((packed.shape[0], 4), dtype=np.uint8)
        # Put the three bytes at the top of a 32-bit word, then shift back: the arithmetic
        # shift extends the sign.
        if self.byte_order == "little":
            wide[:, 1:] = packed
            return (wide.view("<i4")[:, 0] >> 8).astype(self.numpy_dtype())
        wide[:, :3] = packed
        return (wide.view(">i4")[:, 0] >> 8).astype(self.numpy_dtype())

    def to_bytes(self, values) -> bytes:
        """The file bytes of an array of samples (inverse of :meth:`to_array`). Packed
        samples outside the type's range raise :class:`IntegrityError` (only damaged data
        decodes to them)."""
        import numpy as np

        if not self.packed:
            return np.ascontiguousarray(values, dtype=self.numpy_dtype()).tobytes()
        lo, hi = INT_RANGES[self.dtype]
        values = np.asarray(values)
        if values.size and (int(values.min()) < lo or int(values.max()) > hi):
            raise IntegrityError(f"decoded samples out of the {self.dtype} range; corrupted")
        little = self.byte_order == "little"
        words = np.ascontiguousarray(values, dtype="<i4" if little else ">i4")
        wide = words.reshape(-1).view(np.uint8).reshape(-1, 4)
        return (wide[:, :3] if little else wide[:, 1:]).tobytes()


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
    name = {np.dtype(k): k for k in ARRAY_DTYPES}.get(dtype.newbyteorder("="))
    if name is None or dtype.hasobject:
        raise QresError(
            f"{source}: .npy sample type {dtype} is not supported; use one of "
            f"{', '.join(ARRAY_DTYPES)}"
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

    def __init__(
        self,
        stream: BinaryIO,
        spec: StreamSpec,
        prefix: bytes = b"",
        data_bytes: int | None = None,
    ):
        self.stream = stream
        self.spec = spec
        self.prefix = prefix
        self.start = len(prefix)
        #: Where the samples end (a WAV data chunk); the bytes after them join the tail,
        #: kept verbatim. ``None``: the samples run to the end of the stream.
        self.data_bytes = data_bytes
        self.tail = b""
        #: Bytes after a WAV's data chunk that did not fit the tail and are coded as samples.
        self.extra_as_samples = 0
        self.frames: int | None = None
        size = _size_of(stream)
        if size is not None:
            data_bytes = size - self.start
            if self.data_bytes is not None:
                data_bytes = min(data_bytes, self.data_bytes)
            self.frames = data_bytes // spec.frame_bytes
        elif spec.layout == "planar" and spec.channels > 1:
            raise QresError("planar input must be a file, not a pipe; spool it to a file first")

    def blocks(self, block_frames: int) -> Iterator[bytes]:
        """Yield each block's bytes in frame order (interleaved), in the stream's byte order."""
        if self.spec.layout == "planar" and self.spec.channels > 1:
            yield from self._planar_blocks(block_frames)
            return
        want = block_frames * self.spec.frame_bytes
        left = self.data_bytes
        frames_seen = 0
        while True:
            ask = want if left is None else min(want, left)
            data = _read_up_to(self.stream, ask)
            if left is not None:
                left -= len(data)
            whole = len(data) - len(data) % self.spec.frame_bytes
            if whole:
                frames_seen += whole // self.spec.frame_bytes
                yield data[:whole]
            if len(data) < ask or left == 0:
                self.tail = data[whole:] + (self._after() if left is not None else b"")
                break
        self.frames = frames_seen

    def _after(self) -> bytes:
        """The bytes after the samples (chunks after a WAV's data chunk), which the caller
        made sure fit the container's tail."""
        rest = _read_up_to(self.stream, MAX_TAIL_BYTES + 1)
        if len(rest) > MAX_TAIL_BYTES - self.spec.frame_bytes:
            raise QresError("input changed size while being read; try again")
        return rest

    def _planar_blocks(self, block_frames: int) -> Iterator[bytes]:
        import numpy as np

        spec, total = self.spec, self.frames or 0
        item = spec.itemsize
        # Samples moved as opaque items of their width: the same for every type, packed ones
        # included, and one strided copy per channel rather than one per byte of a sample.
        opaque = np.dtype((np.void, item))
        for first in range(0, total, block_frames):
            n = min(block_frames, total - first)
            block = np.empty((n, spec.channels), dtype=opaque)
            for c in range(spec.channels):
                self.stream.seek(self.start + (c * total + first) * item)
                raw = self.stream.read(n * item)
                if len(raw) != n * item:
                    raise QresError("input changed size while being read; try again")
                block[:, c] = np.frombuffer(raw, dtype=opaque)
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
_WAV_TYPES = {(_WAVE_PCM, 1): "uint8", (_WAVE_PCM, 2): "int16", (_WAVE_PCM, 3): "int24"}
_WAV_TYPES[_WAVE_PCM, 4] = "int32"
_WAV_TYPES.update({(_WAVE_FLOAT, 4): "float32", (_WAVE_FLOAT, 8): "float64"})


def is_wav(head: bytes) -> bool:
    """Whether ``head`` (the first 12 bytes) starts a RIFF/WAVE file."""
    return len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WAVE"


def wav_source(stream: BinaryIO, source: str) -> SampleSource:
    """The samples of a WAV file on a seekable ``stream``: its header is the prefix, and
    chunks after the data chunk (metadata some writers put at the end) are kept verbatim in
    the tail when they fit it, so that neither is coded as samples.

    A data chunk whose size is a placeholder (0 or 0xFFFFFFFF, as streaming writers leave
    it) or larger than the file (a cut recording) runs to the end of the file; so do the
    samples when the chunks after them exceed the tail (they are then coded as samples:
    exact in lossless mode, see :attr:`SampleSource.extra_as_samples`).
    """
    spec, prefix, declared = _wav_header(stream, source)
    size = _size_of(stream)
    data_bytes = None
    if size is not None and declared not in (0, 0xFFFFFFFF):
        after = size - len(prefix) - declared
        if 0 <= after <= MAX_TAIL_BYTES - spec.frame_bytes:
            data_bytes = declared
    found = SampleSource(stream, spec, prefix, data_bytes)
    if size is not None and data_bytes is None and declared not in (0, 0xFFFFFFFF):
        found.extra_as_samples = max(0, size - len(prefix) - declared)
    return found


def check_bounded_wav(source: SampleSource, max_error: float, where: str) -> None:
    """Refuse a bound on a WAV whose trailing chunks are coded as samples: the bound would
    change their bytes."""
    if max_error and source.extra_as_samples:
        raise QresError(
            f"{where}: {source.extra_as_samples} bytes of chunks after the WAV's samples are "
            f"more than a container keeps verbatim ({MAX_TAIL_BYTES}) and a bound would alter "
            "them; compress losslessly or remove the chunks after the data chunk"
        )


def wav_spec(stream: BinaryIO, source: str) -> tuple[StreamSpec, bytes]:
    """Read a WAV file's chunks up to its samples: the stream spec and the header bytes."""
    spec, prefix, _ = _wav_header(stream, source)
    return spec, prefix


def _wav_header(stream: BinaryIO, source: str) -> tuple[StreamSpec, bytes, int]:
    """Read a WAV file's chunks up to its samples: the stream spec, the header bytes and
    the size the data chunk declares.

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
            declared = size
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
            "supported (8/16/24/32-bit PCM, 32/64-bit float); pass --raw to compress its bytes"
        )
    return StreamSpec(dtype, channels, "interleaved", "little"), bytes(prefix), declared
