"""The public Python API: compress and decompress files, streams and bytes.

Outputs go through :func:`qres.kernel.outputs.atomic_output`: a temporary file beside the
target, published only when everything was written, so a failure never leaves a half-written
or corrupted output behind.
"""

from __future__ import annotations

import copy
import io
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import attrs

from qres.codec import pipeline as codec
from qres.codec.container import Header
from qres.codec.pipeline import CodecSettings, Stats
from qres.codec.samples import (
    SampleSource,
    StreamSpec,
    check_bounded_wav,
    is_wav,
    npy_spec,
    open_input,
    parse_dtype,
    spool,
    wav_source,
)
from qres.kernel import profiles
from qres.kernel.errors import ProfileError, QresError
from qres.kernel.outputs import atomic_output  # noqa: F401 (also imported from here)

DEFAULT_PROFILE = "server"


@attrs.frozen
class _Resolved:
    """A profile's codec settings as read once, with what they were read from."""

    predictor: dict
    coder: dict
    block_frames: int
    dtype: str
    chain: tuple[str, ...]  # the profile's files, itself first, then what it extends
    sources: tuple  # what :func:`_sources` gave for them when the profile was read
    registry: object  # the plugin registry that validated the tables
    stamps: tuple = ()  # :func:`_stamps` of the same files and folders, when they were read
    settled: bool = False  # whether ``stamps`` alone tell a later change (:func:`_stamps`)


#: Codec settings by profile name (and what decides which file a name means). Reading and
#: validating a profile costs about 0.4 ms, a tenth of compressing 100 kB at 20 MB/s; it is
#: read again whenever one of its files, or the list of profiles it is looked up in, changes.
_RESOLVED: dict[tuple, _Resolved] = {}


def _sources(chain: tuple) -> tuple:
    """What a resolved profile depends on: the profile names in each folder searched (a new
    file may shadow one) and the folders of its files (a parent named in ``extends`` is
    looked for beside its child first), and the bytes of each file of its chain."""
    names = []
    for folder in _folders(chain):
        try:
            names.append((str(folder), tuple(sorted(os.listdir(folder)))))
        except OSError:
            names.append((str(folder), None))
    contents = []
    for path in chain:
        try:
            contents.append(Path(path).read_bytes())
        except OSError:
            contents.append(None)
    return tuple(names), tuple(contents)


#: How long after its last change a file's status is trusted to show any further change (see
#: :func:`_stamps`): far above the coarsest timestamp step of common file systems.
_SETTLE_NS = 3_000_000_000


def _folders(chain: tuple) -> list[Path]:
    """The folders a resolved profile's files are looked up in: the search path (a new file
    may shadow one) and the folders of its files (a parent named in ``extends`` is looked
    for beside its child first)."""
    return list(dict.fromkeys([*profiles.search_dirs(), *(Path(p).parent for p in chain)]))


def _stamps(chain: tuple) -> tuple[tuple, bool]:
    """The status of a resolved profile's folders and files (device, inode, size, modified
    and changed times; None for a missing one), and whether it is settled: every change time
    at least _SETTLE_NS old. The kernel sets a change time on every write, rename, link or
    unlink (a folder's when its entries change) and no call sets it back, so a later change
    shows in the status, unless it landed in the same timestamp step as the last one, which
    only an unsettled status allows: then the files are read and compared (as Git treats a
    "racily clean" index entry)."""
    now = time.time_ns()
    stamps, settled = [], True
    for path in [*map(str, _folders(chain)), *chain]:
        try:
            st = os.stat(path)
        except OSError:
            stamps.append(None)
            continue
        stamps.append((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
        settled = settled and max(st.st_mtime_ns, st.st_ctime_ns) <= now - _SETTLE_NS
    return tuple(stamps), settled


def _unchanged(known: _Resolved) -> bool:
    """Whether a resolved profile's files and folders are as they were when it was read:
    their status says so when settled (a few microseconds), else their contents do."""
    if known.settled and _stamps(known.chain)[0] == known.stamps:
        return True
    return known.sources == _sources(known.chain)


def codec_settings(profile_name: str, max_error: float = 0) -> tuple[CodecSettings, str]:
    """The codec settings of a profile and its default sample type (read once per process
    and again only when its files change)."""
    from qres.kernel import plugins

    key = (profile_name, os.environ.get("QRES_PROFILE_PATH", ""), _relative_to(profile_name))
    known = _RESOLVED.get(key)
    if known is None or known.registry is not plugins.registry() or not _unchanged(known):
        known = _RESOLVED[key] = _resolve(profile_name)
    elif not known.settled:
        # Unchanged by content: its status may have settled since.
        stamps, settled = _stamps(known.chain)
        known = _RESOLVED[key] = attrs.evolve(known, stamps=stamps, settled=settled)
    settings = CodecSettings(
        predictor=copy.deepcopy(known.predictor),
        coder=copy.deepcopy(known.coder),
        block_frames=known.block_frames,
        max_error=max_error,
    )
    return settings, known.dtype


def _relative_to(profile_name: str) -> str:
    """The folder a relative profile path is read from (the working directory; '' for a
    name or an absolute path, and when the working directory no longer exists)."""
    looks_like_path = (
        profile_name.endswith(".toml") or "/" in profile_name or os.sep in profile_name
    )
    if not looks_like_path or os.path.isabs(profile_name):
        return ""
    try:
        return os.getcwd()
    except OSError:
        return ""


def _resolve(profile_name: str) -> _Resolved:
    """Read and validate a profile's codec settings."""
    from qres.kernel import plugins

    registry = plugins.registry()
    profile = profiles.load(profile_name)
    table = profile.data.get("codec")
    if not isinstance(table, dict) or "predictor" not in table or "coder" not in table:
        raise ProfileError(
            f"{profile.path}: codec: profile {profile.name!r} names no predictor and coder; "
            "use a profile with a [codec] table (see `qres profiles list`)"
        )
    # Stamped after the files were read: a change since then is too recent to be settled.
    chain = tuple(str(p) for p in profile.chain)
    stamps, settled = _stamps(chain)
    profile.build("codec", "predictor")  # validates the tables before any work starts
    profile.build("codec", "coder")
    plain = profile.settings("codec")
    return _Resolved(
        predictor=copy.deepcopy(dict(table["predictor"])),
        coder=copy.deepcopy(dict(table["coder"])),
        block_frames=plain.block_frames,
        dtype=plain.dtype,
        chain=chain,
        sources=_sources(profile.chain),
        registry=registry,
        stamps=stamps,
        settled=settled,
    )


def open_samples(
    path: str,
    *,
    dtype: str | None,
    channels: int | None,
    layout: str | None,
    byte_order: str | None,
    default_dtype: str,
    raw: bool = False,
) -> tuple[SampleSource, BinaryIO]:
    """Open an input as a sample source: ``.npy`` and WAV files describe themselves (unless
    ``raw``), raw files use the options (or the profile's default type), ``-`` reads stdin."""
    stream = open_input(path)
    head = stream.peek(12)[:12] if hasattr(stream, "peek") else b""
    if not raw and (is_wav(head) or path.lower().endswith(".wav")):
        if dtype or channels or layout or byte_order:
            raise QresError(
                f"{path}: WAV files describe their own samples; drop --dtype, --channels, "
                "--layout and --byte-order, or pass --raw to read the bytes with them"
            )
        if stream is sys.stdin.buffer or not _seekable(stream):
            stream = spool(stream)
        return wav_source(stream, path), stream
    if not raw and (path.endswith(".npy") or head[:6] == b"\x93NUMPY"):
        if stream is sys.stdin.buffer or not stream.seekable():
            stream = spool(stream)
        if dtype or channels or layout or byte_order:
            raise QresError(
                f"{path}: .npy files describe their own type and shape; drop --dtype, "
                "--channels, --layout and --byte-order"
            )
        spec, prefix, _ = npy_spec(stream, path)
        return SampleSource(stream, spec, prefix), stream
    spec = StreamSpec(
        parse_dtype(dtype or default_dtype),
        channels or 1,
        layout or "interleaved",
        byte_order or "little",
    )
    if spec.layout == "planar" and spec.channels > 1 and not _seekable(stream):
        stream = spool(stream)
    return SampleSource(stream, spec), stream


def _seekable(stream: BinaryIO) -> bool:
    try:
        return stream.seekable()
    except (OSError, ValueError):
        return False


def compress_file(
    path: str,
    output: str,
    *,
    profile: str = DEFAULT_PROFILE,
    dtype: str | None = None,
    channels: int | None = None,
    layout: str | None = None,
    byte_order: str | None = None,
    max_error: float = 0,
    threads: int = 1,
    force: bool = False,
    progress: Callable[[int], None] | None = None,
    raw: bool = False,
) -> Stats:
    """Compress the file (or ``-``) at ``path`` into ``output`` (or ``-``); ``raw`` reads
    ``.npy`` and WAV files as plain bytes of samples."""
    codec.check_max_error(max_error)
    settings, default_dtype = codec_settings(profile, max_error)
    source, stream = open_samples(
        path,
        dtype=dtype,
        channels=channels,
        layout=layout,
        byte_order=byte_order,
        default_dtype=default_dtype,
        raw=raw,
    )
    codec.check_max_error(max_error, source.spec.dtype)
    check_bounded_wav(source, max_error, path)
    try:
        with atomic_output(output, force) as out:
            return codec.compress(source, out, settings, threads=threads, progress=progress)
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()


def compress_bytes(
    data: bytes,
    spec: StreamSpec,
    profile: str = DEFAULT_PROFILE,
    max_error: float = 0,
    threads: int = 1,
) -> bytes:
    """Compress raw sample bytes described by ``spec``; return the container bytes."""
    settings, _ = codec_settings(profile, max_error)
    out = io.BytesIO()
    codec.compress(SampleSource(io.BytesIO(data), spec), out, settings, threads=threads)
    return out.getvalue()


class _Sink:
    """Writes decoded blocks to the output in the stream's original layout."""

    def __init__(self, out: BinaryIO, header: Header):
        self.out = out
        self.header = header
        self.planar = header.layout == "planar" and header.channels > 1

    def __call__(self, first_frame: int, raw: bytes) -> None:
        if not self.planar:
            self.out.write(raw)
            return
        import numpy as np

        h = self.header
        # Samples moved as bytes: the same for every type, packed ones included.
        block = np.frombuffer(raw, dtype=np.uint8).reshape(-1, h.channels, h.itemsize)
        start = len(h.prefix)
        for c in range(h.channels):
            self.out.seek(start + (c * h.frames + first_frame) * h.itemsize)
            self.out.write(np.ascontiguousarray(block[:, c]).tobytes())


def decompress_stream(
    stream: BinaryIO,
    out: BinaryIO | None,
    threads: int = 1,
    progress: Callable[[int], None] | None = None,
    max_output: int | None = None,
) -> tuple[Header, Stats]:
    """Decode the container on ``stream`` into ``out`` (``None``: verify only), producing at
    most ``max_output`` bytes (``None``: no limit).

    Planar streams are written channel by channel at their offsets; when ``out`` cannot seek
    (a pipe), they are assembled in a temporary file first.
    """
    state: dict = {}

    def on_header(header: Header) -> None:
        if out is None:
            return
        target = out
        if header.layout == "planar" and header.channels > 1:
            if header.frames is None:
                raise QresError("planar stream without a frame count; the file is corrupted")
            if not _seekable(out):
                target = state["spool"] = tempfile.TemporaryFile()
        target.write(header.prefix)
        state["target"] = target
        state["sink"] = _Sink(target, header)

    def sink(first_frame: int, raw: bytes) -> None:
        state["sink"](first_frame, raw)

    try:
        header, stats, tail = codec.decompress(
            stream,
            sink if out is not None else None,
            threads=threads,
            progress=progress,
            on_header=on_header,
            max_output=max_output,
        )
        if out is not None:
            target = state["target"]
            if header.layout == "planar" and header.channels > 1:
                target.seek(len(header.prefix) + header.frames * header.channels * header.itemsize)
            target.write(tail)
            if "spool" in state:
                state["spool"].seek(0)
                shutil.copyfileobj(state["spool"], out, 1 << 20)
        return header, stats
    finally:
        if "spool" in state:
            state["spool"].close()


def decompress_file(
    path: str,
    output: str,
    *,
    force: bool = False,
    threads: int = 1,
    progress: Callable[[int], None] | None = None,
    max_output: int | None = None,
) -> tuple[Header, Stats]:
    """Decompress the container at ``path`` (or ``-``) into ``output`` (or ``-``), writing at
    most ``max_output`` bytes (``None``: no limit)."""
    stream = open_input(path)
    try:
        with atomic_output(output, force) as out:
            return decompress_stream(stream, out, threads, progress, max_output)
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()


def decompress_bytes(data: bytes, threads: int = 1) -> bytes:
    """Decode container bytes back to the original bytes."""
    out = io.BytesIO()
    decompress_stream(io.BytesIO(data), out, threads)
    return out.getvalue()


def verify_file(
    path: str,
    threads: int = 1,
    progress: Callable[[int], None] | None = None,
    max_output: int | None = None,
) -> tuple[Header, Stats]:
    """Check every block, the index and the stream checksum of a container; write nothing
    (``max_output`` bounds the bytes decoded)."""
    stream = open_input(path)
    try:
        return decompress_stream(stream, None, threads, progress, max_output)
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()
