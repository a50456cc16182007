"""The Python API behind ``import qres``: compress and decompress arrays and bytes, open a
container for reading by block, describe one. ``docs/api.md`` documents it with examples.

Arguments are checked here, so errors speak of this API's parameters (``max_error=``,
``dtype=``), not of command-line options.
"""

from __future__ import annotations

import builtins
import io
import math
import os
import sys
from collections.abc import Iterator
from typing import Any

from qres.kernel.errors import QresError

DEFAULT_PROFILE = "server"
_NPY_MAGIC = b"\x93NUMPY"


def _is_array(value: Any) -> bool:
    return type(value).__module__ == "numpy" and type(value).__name__ == "ndarray"


def _check_threads(threads: Any) -> int:
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise QresError(f"threads={threads!r}: give an int >= 1")
    return threads


def _check_max_error(max_error: Any, dtype: str) -> float:
    ok = isinstance(max_error, (int, float)) and not isinstance(max_error, bool)
    if not ok or not math.isfinite(max_error) or max_error < 0:
        raise QresError(f"max_error={max_error!r}: give a finite number >= 0 (0 is lossless)")
    if not dtype.startswith("float") and max_error != int(max_error):
        raise QresError(
            f"max_error={max_error!r}: {dtype} samples need a whole-number bound; "
            f"use {int(max_error)}"
        )
    if max_error >= 2**62:
        raise QresError(f"max_error={max_error!r}: give a bound below 2**62")
    return int(max_error) if max_error == int(max_error) else float(max_error)


def _array_source(array: Any) -> Any:
    """An in-memory ``.npy`` image of ``array``, read back as a sample source."""
    import numpy as np

    from qres.codec.samples import ARRAY_DTYPES, SampleSource, npy_spec

    if array.dtype.newbyteorder("=") not in {np.dtype(k) for k in ARRAY_DTYPES}:
        raise QresError(
            f"arrays of dtype {array.dtype} are not supported; convert to one of "
            f"{', '.join(ARRAY_DTYPES)}"
        )
    if array.ndim == 0:
        raise QresError("a 0-d array holds no stream; give an array with time on axis 0")
    image = io.BytesIO()
    np.save(image, array, allow_pickle=False)
    image.seek(0)
    spec, prefix, _ = npy_spec(image, "array")
    return SampleSource(image, spec, prefix)


def _bytes_source(data: Any, dtype: Any, channels: Any, layout: str, byte_order: str, default):
    """Raw sample bytes (or the bytes of an ``.npy`` file) as a sample source."""
    from qres.codec.container import ITEMSIZE, MAX_CHANNELS
    from qres.codec.samples import (
        BYTE_ORDERS,
        DTYPE_ALIASES,
        LAYOUTS,
        SampleSource,
        StreamSpec,
        is_wav,
        npy_spec,
        wav_source,
    )

    stream = io.BytesIO(bytes(data))
    if is_wav(bytes(data[:12])):
        if dtype is not None or channels is not None:
            raise QresError("the bytes are a WAV file, which describes itself; drop dtype=")
        return wav_source(stream, "data")
    if bytes(data[:6]) == _NPY_MAGIC:
        if dtype is not None or channels is not None:
            raise QresError("the bytes are an .npy file, which describes itself; drop dtype=")
        spec, prefix, _ = npy_spec(stream, "data")
        return SampleSource(stream, spec, prefix)
    name = DTYPE_ALIASES.get(str(dtype if dtype is not None else default).lower())
    if name is None:
        raise QresError(f"dtype={dtype!r} is not a sample type; use one of {', '.join(ITEMSIZE)}")
    channels = 1 if channels is None else channels
    if isinstance(channels, bool) or not isinstance(channels, int):
        raise QresError(f"channels={channels!r}: give an int in [1, {MAX_CHANNELS}]")
    if not 1 <= channels <= MAX_CHANNELS:
        raise QresError(f"channels={channels}: give an int in [1, {MAX_CHANNELS}]")
    if layout not in LAYOUTS:
        raise QresError(f"layout={layout!r}: use 'interleaved' or 'planar'")
    if byte_order not in BYTE_ORDERS:
        raise QresError(f"byte_order={byte_order!r}: use 'little' or 'big'")
    return SampleSource(stream, StreamSpec(name, channels, layout, byte_order))


def compress(
    data: Any,
    profile: str = DEFAULT_PROFILE,
    *,
    max_error: float = 0,
    threads: int = 1,
    dtype: str | None = None,
    channels: int | None = None,
    layout: str = "interleaved",
    byte_order: str = "little",
) -> bytes:
    """Compress a numpy array, or bytes, into ``.qres`` container bytes.

    An array keeps its dtype and shape (axis 0 is time, the other axes are channels); its
    container is the one ``qres compress`` makes of the same array saved as ``.npy``. Bytes
    are raw samples described by ``dtype`` (default: the profile's sample type),
    ``channels``, ``layout`` and ``byte_order``, unless they are an ``.npy`` or WAV file. With
    ``max_error=E > 0`` every sample comes back within E. The result does not depend on
    ``threads``.
    """
    from qres.codec import files, pipeline
    from qres.codec.samples import check_bounded_wav

    threads = _check_threads(threads)
    if not isinstance(profile, (str, os.PathLike)):
        raise QresError(f"profile={profile!r}: give a profile name or the path of a .toml")
    settings, default_dtype = files.codec_settings(os.fspath(profile), 0)
    if _is_array(data):
        if dtype is not None or channels is not None:
            raise QresError("an array describes its own dtype and shape; drop dtype= and channels=")
        source = _array_source(data)
    elif isinstance(data, (bytes, bytearray, memoryview)):
        view = memoryview(data).cast("B")
        source = _bytes_source(view, dtype, channels, layout, byte_order, default_dtype)
    else:
        raise QresError(f"cannot compress a {type(data).__name__}; give a numpy array or bytes")
    bound = _check_max_error(max_error, source.spec.dtype)
    check_bounded_wav(source, bound, "data")
    settings = pipeline.CodecSettings(
        settings.predictor, settings.coder, settings.block_frames, bound
    )
    out = io.BytesIO()
    pipeline.compress(source, out, settings, threads=threads)
    return out.getvalue()


def _as_bytes(data: Any, what: str) -> bytes:
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    raise QresError(f"{what}: give the container as bytes, not a {type(data).__name__}")


def decompress(data: Any, *, threads: int = 1, as_bytes: bool = False) -> Any:
    """Decode ``.qres`` container bytes into a numpy array with the original dtype and shape.

    Every block, the index and the whole-stream checksum are checked first; damage raises
    :class:`IntegrityError` (``.block`` names a damaged block). ``as_bytes=True`` returns the
    exact original bytes instead (an ``.npy`` file's header included).
    """
    from qres.codec import container, files

    blob = _as_bytes(data, "decompress")
    threads = _check_threads(threads)
    header, _ = container.read_header(io.BytesIO(blob))
    raw = files.decompress_bytes(blob, threads)
    return raw if as_bytes else _to_array(raw, header)


def _spec(header: Any) -> Any:
    """The stream spec of a container's samples."""
    from qres.codec.samples import StreamSpec

    return StreamSpec(header.dtype, header.channels, header.layout, header.byte_order)


def _layout(header: Any) -> tuple[Any, tuple[int, ...], bool]:
    """The numpy dtype, the shape of one frame, and whether channels are Fortran-ordered.
    Packed samples come back in their wider type (int24 as native int32)."""
    import numpy as np

    spec = _spec(header)
    dtype = np.dtype(spec.numpy_dtype().name) if spec.packed else np.dtype(header.dtype)
    if header.byte_order != sys.byteorder and not spec.packed:
        dtype = dtype.newbyteorder("<" if header.byte_order == "little" else ">")
    if header.prefix.startswith(_NPY_MAGIC):
        from numpy.lib import format as npy

        stream = io.BytesIO(header.prefix)
        version = npy.read_magic(stream)
        read = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
        shape, fortran, _ = read(stream, max_header_size=1 << 16)
        return dtype, tuple(shape[1:]), bool(fortran)
    frame = () if header.channels == 1 else (header.channels,)
    return dtype, frame, header.layout == "planar"


def _to_array(raw: bytes, header: Any) -> Any:

    dtype, frame, fortran = _layout(header)
    width = header.itemsize * math.prod(frame)
    body = memoryview(raw)[len(header.prefix) :]
    frames = len(body) // width
    if len(body) != frames * width:
        raise QresError(
            f"the stream ends with {len(body) - frames * width} bytes that are not a whole "
            "frame; call decompress(data, as_bytes=True) to get the exact bytes"
        )
    flat = _spec(header).to_array(body).astype(dtype, copy=True)
    if fortran:
        return flat.reshape((frames, *frame), order="F")
    return flat.reshape((frames, *frame))


def info(data: Any) -> dict[str, Any]:
    """A container's header, totals and block table (what ``qres info --json`` prints), from
    container bytes or the path of a ``.qres`` file. Reads the index; decodes no block."""
    if isinstance(data, (str, os.PathLike)):
        with _open_file(data) as stream:
            return summarize(stream)
    return summarize(io.BytesIO(_as_bytes(data, "info")))


def summarize(stream: Any) -> dict[str, Any]:
    """The summary :func:`info` returns, of a seekable container stream (``qres info`` too)."""
    from qres.codec import container
    from qres.codec.pipeline import (
        FLAG_CHANNEL_PAIRS,
        FLAG_CHANNEL_PREDICTORS,
        FLAG_REPEATS,
        block_predictor,
    )

    summary = container.describe(stream)
    for block in summary["blocks"]:
        block["predictor"] = block_predictor(
            block["method"], block["flags"], summary["header"]["codec"]
        )
        # Some channels of the block were coded with a fixed polynomial instead.
        predicted = block["method"] in ("predicted", "quantised")
        block["polynomial_channels"] = predicted and bool(block["flags"] & FLAG_CHANNEL_PREDICTORS)
        # Some channels' residuals were paired with an earlier channel's; some channels were
        # coded as literals plus copies of their earlier samples (format 6).
        block["channel_pairs"] = predicted and bool(block["flags"] & FLAG_CHANNEL_PAIRS)
        block["repeats"] = predicted and bool(block["flags"] & FLAG_REPEATS)
    return summary


def _open_file(path: Any) -> Any:
    try:
        return builtins.open(path, "rb")
    except FileNotFoundError:
        raise QresError(f"{os.fspath(path)}: no such file; check the path") from None
    except IsADirectoryError:
        raise QresError(f"{os.fspath(path)}: is a directory; give a .qres file") from None


class Container:
    """A ``.qres`` file opened for reading by block: random access and streaming.

    ``len(c)`` is the number of blocks; ``c.block(i)`` decodes block ``i`` alone (its frames,
    shaped like the original array's rows); iterating yields the blocks in order, one at a
    time, so memory stays bounded by one block; :meth:`read` decodes everything and checks the
    whole-stream checksum too. Use it as a context manager, or call :meth:`close`.
    """

    def __init__(self, path: Any):
        from qres.codec import container, pipeline

        self.path = os.fspath(path)
        self._file = _open_file(path)
        try:
            self.header, end = container.read_header(self._file)
            self._index, self._trailer, _ = container.read_index(self._file, end)
            self._decoders = pipeline.open_decoder(self.header)
            self.dtype, self._frame, self._fortran = _layout(self.header)
        except BaseException:
            self._file.close()
            raise
        starts = [0]
        for n in self._index.frames:
            starts.append(starts[-1] + n)
        self._starts = tuple(starts)

    @property
    def frames(self) -> int:
        """Frames (samples of every channel) in the whole stream."""
        return self._starts[-1]

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of the whole decoded array."""
        return (self.frames, *self._frame)

    def block_frames(self, number: int) -> range:
        """The frames block ``number`` holds, as a range of frame indices."""
        number = self._check_number(number)
        return range(self._starts[number], self._starts[number + 1])

    def __len__(self) -> int:
        return len(self._index.offsets)

    def _check_number(self, number: Any) -> int:
        count = len(self)
        if isinstance(number, bool) or not isinstance(number, int) or not -count <= number < count:
            raise IndexError(f"block {number!r} out of range: the file has {count} blocks")
        return number % count

    def block(self, number: int) -> Any:
        """Decode block ``number`` (negative counts from the end) into an array."""

        from qres.codec import container

        number = self._check_number(number)
        record = container.read_block_at(self._file, self.header, self._index, number)
        raw = self._decoders().decode(number, record)
        flat = _spec(self.header).to_array(raw).astype(self.dtype, copy=False)
        rows = record.frames
        if self._fortran and self._frame:
            # raw holds the block's frames one after another; rebuild the channel axes in the
            # array's own (Fortran) order.
            table = flat.reshape((rows, math.prod(self._frame)))
            return table.reshape((rows, *self._frame), order="F").copy()
        return flat.reshape((rows, *self._frame)).copy()

    def __iter__(self) -> Iterator[Any]:
        for number in range(len(self)):
            yield self.block(number)

    def read(self) -> Any:
        """The whole array, with every check :func:`decompress` makes."""
        from qres.codec import files

        self._file.seek(0)
        out = io.BytesIO()
        files.decompress_stream(self._file, out)
        return _to_array(out.getvalue(), self.header)

    def close(self) -> None:
        """Close the file."""
        self._file.close()

    def __enter__(self) -> Container:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"<qres.Container {self.path!r} dtype={self.dtype.str} shape={self.shape} "
            f"blocks={len(self)}>"
        )


def open(path: Any) -> Container:  # noqa: A001 - the module-level name users expect
    """Open a ``.qres`` file for reading by block (see :class:`Container`)."""
    return Container(path)
