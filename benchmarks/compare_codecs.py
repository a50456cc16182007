"""Side by side: qres profiles against FLAC, pcodec, xz, zstd, delta+zstd and blosc2 (lossless),
and against SZ3 and zfp at the same absolute error bound (``--max-error``), over a folder of
sample files (any folder with a MANIFEST.tsv; default ``$QRES_DATA``, else ../shared/data).

Runs as one process over a folder holding raw little-endian sample files and a MANIFEST.tsv
(columns ``file``, ``dtype``, ``channels``, ``layout``; ``name`` and ``sha256`` are used when
present). For every file and codec it measures the ratio (original bytes / compressed bytes)
and compress / decompress MB/s of original bytes (best of ``--repeats`` runs,
``time.perf_counter``, or with ``--clock cpu`` the thread's CPU time; one thread), and checks
every round trip: bit-exact for lossless codecs, ``max |x - x'| <= E`` for bounded-error ones.
A codec that cannot be imported, or cannot take a file's sample type, is reported as skipped
with the reason; it never stops the run.

Codecs, measured as ``/work/shared/tools/anchor_bench.py`` measures them:

- ``qres-<profile>``: ``qres.codec.files.compress_bytes`` with the file's StreamSpec (dtype,
  channels, planar layout for multichannel files); profiles from ``--profiles``.
- ``flac-8``: libFLAC through ``soundfile`` at compression_level 1.0 (= ``flac -8``), integer
  samples that fit 24 bits only (other widths are shifted into PCM_24, which FLAC's wasted-bits
  detection makes free); files of up to 8 channels are given as channels, wider ones as one
  mono stream in file order.
- ``pcodec-8`` / ``pcodec-12``: ``pcodec.standalone`` at compression levels 8 and 12.
- ``xz-9`` (``lzma``, preset 9) and ``zstd-19`` (``zstandard``, level 19, one thread).
- ``delta+zstd-19``: each channel's first difference on the samples' bit patterns (floats
  difference as integers, wrapping), then zstd 19; ``blosc2-bitshuffle``: blosc2's bit-shuffle
  filter and zstd level 9, typesize = sample size, one thread.
- ALP (adaptive lossless floating point) is not measured: it has no Python binding (the C++
  library ships none; the ``alp-codec`` package on PyPI is a pure-Python port of a Java port,
  whose speed would say nothing about ALP).
- with ``--max-error``: ``qres-<profile>`` in bounded-error mode, ``sz3`` (``pysz``, ABS
  mode; int16/int8 samples widened to int32) and ``zfp`` (``zfpy`` fixed-accuracy mode with
  tolerance E; integers given as float32 when exact, else float64, and rounded back).

Usage::

    .venv/bin/python benchmarks/compare_codecs.py [DATA] [--repeats 3] [--profiles server,fast]
        [--max-error 1,4,16 [--rel-error] [--lossy-only]] [--files 'seis_*,ecg*'] [--only int]
        [--codecs qres-server,flac-8,...] [--csv out.csv] [--json out.json] [--png out.png]

The exit status is 1 when a qres round trip was not exact or a qres bound was exceeded, else 0
(other codecs' failures are shown in the tables, in red).
"""

from __future__ import annotations

import argparse
import csv
import fnmatch
import hashlib
import io
import json
import lzma
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("QRES_DATA") or REPO.parent / "shared" / "data")
DEFAULT_PROFILES = ("server", "fast", "esp32")
#: The codecs the lossless target is measured against.
ANCHORS = ("flac-8", "pcodec-8", "pcodec-12", "xz-9")
LITTLE = {
    "int8": "i1",
    "uint8": "u1",
    "int16": "<i2",
    "uint16": "<u2",
    "int32": "<i4",
    "uint32": "<u4",
    "int64": "<i8",
    "float32": "<f4",
    "float64": "<f8",
}


class Skip(Exception):
    """A codec cannot take this file (or is not installed); the message says why."""


@dataclass
class Item:
    """One corpus file: its bytes, samples in file order and what they are."""

    name: str
    file: str
    dtype: str
    channels: int
    planar: bool
    raw: bytes
    array: np.ndarray

    @property
    def is_int(self) -> bool:
        """True for integer sample types."""
        return self.array.dtype.kind in "iu"

    def value_range(self) -> float:
        """max - min over the finite samples (0 when there are none)."""
        a = self.array
        if not self.is_int:
            a = a[np.isfinite(a)]
        if a.size == 0:
            return 0.0
        return float(a.max()) - float(a.min())


@dataclass
class Row:
    """One measurement: a codec on a file (lossless, or lossy at one bound)."""

    file: str
    dtype: str
    channels: int
    n_samples: int
    orig_bytes: int
    codec: str
    mode: str  # "lossless" or "lossy"
    bound: float | None = None
    status: str = "ok"  # ok | skipped | failed | mismatch | bound-exceeded
    comp_bytes: int | None = None
    ratio: float | None = None
    comp_MBps: float | None = None
    decomp_MBps: float | None = None
    max_abs_error: float | None = None
    note: str = ""


@dataclass
class Codec:
    """A lossless codec: ``compress(item) -> bytes``, ``decompress(blob, item) -> samples``
    (an array in file order, or the raw bytes). Either may raise Skip."""

    name: str
    compress: Callable
    decompress: Callable
    note: str = ""
    unavailable: str = ""  # why the codec cannot run at all (import failed)


@dataclass
class LossyCodec:
    """A bounded-error codec: ``compress(item, bound)``, ``decompress(blob, item, bound)``."""

    name: str
    compress: Callable
    decompress: Callable
    note: str = ""
    unavailable: str = ""
    extra: dict = field(default_factory=dict)


# --------------------------------------------------------------------------------- codecs
def _qres_spec(item: Item):
    from qres.codec.samples import StreamSpec

    layout = "planar" if item.planar and item.channels > 1 else "interleaved"
    return StreamSpec(item.dtype, item.channels, layout, "little")


def _profile_problem(profile: str) -> str:
    """Why a qres profile cannot run ('' when it can): import failure or a bad profile."""
    try:
        from qres.codec.files import codec_settings
        from qres.kernel.errors import QresError
    except ImportError as exc:  # the script lives in the repo, but say so rather than crash
        return f"import qres failed: {exc}"
    try:
        codec_settings(profile)
    except QresError as exc:
        return str(exc)
    return ""


def qres_codec(profile: str) -> Codec:
    """A qres profile through the public bytes API."""
    problem = _profile_problem(profile)
    if problem:
        return Codec(f"qres-{profile}", None, None, unavailable=problem)
    from qres.codec.files import compress_bytes, decompress_bytes

    return Codec(
        f"qres-{profile}",
        lambda it: compress_bytes(it.raw, _qres_spec(it), profile),
        lambda blob, it: decompress_bytes(blob),
        note=f"qres.codec.files.compress_bytes, profile {profile}",
    )


def qres_lossy(profile: str) -> LossyCodec:
    """A qres profile in bounded-error mode."""
    problem = _profile_problem(profile)
    if problem:
        return LossyCodec(f"qres-{profile}", None, None, unavailable=problem)
    from qres.codec.files import compress_bytes, decompress_bytes

    def comp(it: Item, bound: float) -> bytes:
        return compress_bytes(it.raw, _qres_spec(it), profile, max_error=bound)

    def decomp(blob: bytes, it: Item, bound: float) -> np.ndarray:
        return np.frombuffer(decompress_bytes(blob), dtype=it.array.dtype)

    return LossyCodec(f"qres-{profile}", comp, decomp, note=f"qres --max-error, profile {profile}")


def flac_codec() -> Codec:
    """libFLAC -8 via soundfile, integers within 24 bits."""
    try:
        import soundfile as sf
    except (ImportError, OSError) as exc:  # OSError: libsndfile itself missing
        return Codec("flac-8", None, None, unavailable=f"import soundfile failed: {exc}")

    def frames(it: Item) -> np.ndarray:
        a = it.array
        if it.channels == 1 or it.channels > 8:
            return a  # FLAC takes at most 8 channels: wider files go as one mono stream
        if it.planar:
            return np.ascontiguousarray(a.reshape(it.channels, -1).T)
        return a.reshape(-1, it.channels)

    def comp(it: Item) -> bytes:
        if not it.is_int or it.array.itemsize > 4:
            raise Skip(f"FLAC takes integer samples of at most 24 bits, not {it.dtype}")
        if it.array.size == 0:  # libsndfile cannot read back a FLAC file without frames
            raise Skip("FLAC: empty input")
        buf = io.BytesIO()
        x = frames(it)
        if it.dtype == "int16":
            sf.write(buf, x, 48000, format="FLAC", subtype="PCM_16", compression_level=1.0)
            return buf.getvalue()
        wide = x.astype(np.int64)
        if wide.size and (wide.min() < -(1 << 23) or wide.max() >= (1 << 23)):
            raise Skip("FLAC: samples do not fit 24 bits")
        # libsndfile maps int32 full scale onto 24 bits: pre-shift so that no bit is lost
        # (FLAC's wasted-bits detection removes the 8 zero bits again).
        sf.write(
            buf,
            (wide << 8).astype(np.int32),
            48000,
            format="FLAC",
            subtype="PCM_24",
            compression_level=1.0,
        )
        return buf.getvalue()

    def decomp(blob: bytes, it: Item) -> np.ndarray:
        if it.dtype == "int16":
            out, _ = sf.read(io.BytesIO(blob), dtype="int16", always_2d=False)
        else:
            out, _ = sf.read(io.BytesIO(blob), dtype="int32", always_2d=False)
            out = (out >> 8).astype(it.array.dtype)
        if out.ndim == 2 and it.planar:
            out = out.T
        return np.ascontiguousarray(out).reshape(-1)

    return Codec("flac-8", comp, decomp, note="libFLAC via soundfile, compression_level=1.0 (-8)")


def pcodec_codec(level: int) -> Codec:
    """pcodec standalone at one compression level."""
    try:
        from pcodec import ChunkConfig, standalone
    except ImportError as exc:
        return Codec(f"pcodec-{level}", None, None, unavailable=f"import pcodec failed: {exc}")
    cfg = ChunkConfig(compression_level=level)

    def comp(it: Item) -> bytes:
        if it.array.itemsize == 1:
            raise Skip("pcodec refuses 8-bit samples by default")
        return standalone.simple_compress(it.array.astype(it.array.dtype.newbyteorder("=")), cfg)

    return Codec(
        f"pcodec-{level}",
        comp,
        lambda blob, it: standalone.simple_decompress(blob),
        note=f"pcodec.standalone, level {level}, samples in file order",
    )


def xz_codec() -> Codec:
    """xz -9 over the raw bytes."""
    return Codec(
        "xz-9",
        lambda it: lzma.compress(it.raw, format=lzma.FORMAT_XZ, preset=9),
        lambda blob, it: lzma.decompress(blob),
        note="lzma FORMAT_XZ preset 9",
    )


def zstd_codec() -> Codec:
    """zstd -19 over the raw bytes, one thread."""
    try:
        import zstandard
    except ImportError as exc:
        return Codec("zstd-19", None, None, unavailable=f"import zstandard failed: {exc}")
    c = zstandard.ZstdCompressor(level=19, threads=0)
    d = zstandard.ZstdDecompressor()
    return Codec(
        "zstd-19",
        lambda it: c.compress(it.raw),
        lambda blob, it: d.decompress(blob),
        note="zstandard level 19, one thread",
    )


def delta_zstd_codec() -> Codec:
    """The first difference of each channel's samples (wrap-around on their bit patterns, so
    floats difference as integers), then zstd -19."""
    try:
        import zstandard
    except ImportError as exc:
        return Codec("delta+zstd-19", None, None, unavailable=f"import zstandard failed: {exc}")
    c = zstandard.ZstdCompressor(level=19, threads=0)
    d = zstandard.ZstdDecompressor()

    def channels(it: Item) -> np.ndarray:
        bits = it.array.view(f"<u{it.array.itemsize}")
        return bits.reshape(it.channels, -1) if it.planar else bits.reshape(-1, it.channels).T

    def comp(it: Item) -> bytes:
        x = channels(it)
        delta = np.concatenate([x[:, :1], np.diff(x, axis=1)], axis=1)
        return c.compress(np.ascontiguousarray(delta).tobytes())

    def decomp(blob: bytes, it: Item) -> bytes:
        dtype = f"<u{it.array.itemsize}"
        delta = np.frombuffer(d.decompress(blob), dtype=dtype).reshape(it.channels, -1)
        x = np.cumsum(delta, axis=1, dtype=dtype)
        return (x if it.planar else x.T).tobytes()

    return Codec("delta+zstd-19", comp, decomp, note="per-channel first difference, zstd 19")


def blosc2_codec() -> Codec:
    """blosc2 with its bit-shuffle filter and zstd level 9, one thread."""
    try:
        import blosc2
    except ImportError as exc:
        return Codec("blosc2-bitshuffle", None, None, unavailable=f"import blosc2 failed: {exc}")

    def comp(it: Item) -> bytes:
        cparams = blosc2.CParams(
            codec=blosc2.Codec.ZSTD,
            clevel=9,
            typesize=it.array.itemsize,
            nthreads=1,
            filters=[blosc2.Filter.BITSHUFFLE],
        )
        return blosc2.compress2(it.raw, cparams=cparams)

    return Codec(
        "blosc2-bitshuffle",
        comp,
        lambda blob, it: blosc2.decompress2(blob, dparams=blosc2.DParams(nthreads=1)),
        note="blosc2 bitshuffle + zstd 9, typesize = sample size, one thread",
    )


def sz3_codec() -> LossyCodec:
    """SZ3 through pysz, absolute error bound."""
    try:
        from pysz import sz, szConfig, szErrorBoundMode
    except ImportError as exc:
        return LossyCodec("sz3", None, None, unavailable=f"import pysz failed: {exc}")

    def as_input(it: Item) -> np.ndarray:
        a = it.array
        if a.size == 0:  # an SZ3 configuration needs at least one sample
            raise Skip("SZ3: empty input")
        if a.dtype in (np.float32, np.float64, np.int32, np.int64):
            return np.ascontiguousarray(a.astype(a.dtype.newbyteorder("=")))
        if a.dtype.kind in "iu" and a.itemsize <= 2:
            return a.astype(np.int32)  # SZ3 takes 32/64-bit integers only
        if a.dtype == np.uint32:
            return a.astype(np.int64)
        raise Skip(f"SZ3 takes float32/64 and int32/64, not {it.dtype}")

    def comp(it: Item, bound: float) -> bytes:
        x = as_input(it)
        conf = szConfig(x.size)
        conf.errorBoundMode = szErrorBoundMode.ABS
        conf.absErrorBound = float(bound)
        blob, _ = sz.compress(x, conf)
        return blob.tobytes()

    def decomp(blob: bytes, it: Item, bound: float) -> np.ndarray:
        x = as_input(it)  # only its type and size
        out, _ = sz.decompress(np.frombuffer(blob, dtype=np.uint8), x.dtype, (x.size,))
        if it.is_int and out.dtype != it.array.dtype:
            # A value decoded a little past the narrow type's range would wrap in astype;
            # clipping it keeps it within the bound, since every original lies inside.
            info = np.iinfo(it.array.dtype)
            out = np.clip(out, info.min, info.max)
        return out.astype(it.array.dtype)

    return LossyCodec("sz3", comp, decomp, note="pysz ABS mode, 1-D; 8/16-bit ints as int32")


def zfp_codec() -> LossyCodec:
    """zfp through zfpy, fixed-accuracy mode (tolerance = the bound)."""
    try:
        import zfpy
    except ImportError as exc:
        return LossyCodec("zfp", None, None, unavailable=f"import zfpy failed: {exc}")

    def as_input(it: Item) -> np.ndarray:
        a = it.array
        if a.size == 0:  # zfpy crashes the process (SIGBUS) on an empty array
            raise Skip("zfp: empty input")
        if not it.is_int:
            return np.ascontiguousarray(a.astype(a.dtype.newbyteorder("=")))
        # zfp's fixed-accuracy mode is for floats only: give it the integers exactly.
        if int(np.abs(a.astype(np.int64)).max()) < (1 << 24):
            return a.astype(np.float32)
        if int(np.abs(a.astype(np.int64)).max()) < (1 << 53):
            return a.astype(np.float64)
        raise Skip("zfp: integers beyond 2**53 have no exact float")

    def comp(it: Item, bound: float) -> bytes:
        return zfpy.compress_numpy(as_input(it), tolerance=float(bound))

    def decomp(blob: bytes, it: Item, bound: float) -> np.ndarray:
        out = zfpy.decompress_numpy(blob)
        if it.is_int:
            # Rounding to the nearest integer keeps an integer bound: x - E and x + E are
            # integers, so the nearest integer to a value between them lies between them too.
            info = np.iinfo(it.array.dtype)
            return np.clip(np.rint(out.astype(np.float64)), info.min, info.max).astype(
                it.array.dtype
            )
        return out.astype(it.array.dtype)

    return LossyCodec("zfp", comp, decomp, note="zfpy fixed-accuracy, 1-D; ints as exact floats")


# --------------------------------------------------------------------------------- running
def read_corpus(folder: Path, patterns: list[str], only: str, console: Console) -> list[Item]:
    """The manifest's files (those matching ``patterns`` and ``only``), loaded."""
    manifest = folder / "MANIFEST.tsv"
    if not manifest.is_file():
        raise SystemExit(f"{manifest}: no MANIFEST.tsv in the data folder; pass the folder")
    items = []
    with open(manifest, newline="") as fh:
        for rec in csv.DictReader(fh, delimiter="\t"):
            name = rec.get("name") or Path(rec["file"]).stem
            if patterns and not any(
                fnmatch.fnmatch(name, p) or fnmatch.fnmatch(rec["file"], p) for p in patterns
            ):
                continue
            dtype = rec["dtype"].strip()
            if dtype not in LITTLE:
                console.print(f"[yellow]{rec['file']}: dtype {dtype!r} not handled; skipped")
                continue
            if (rec.get("byteorder") or "little").strip() != "little":
                console.print(f"[yellow]{rec['file']}: only little-endian files; skipped")
                continue
            kind = "int" if np.dtype(LITTLE[dtype]).kind in "iu" else "float"
            if only not in ("all", kind):
                continue
            raw = (folder / rec["file"]).read_bytes()
            sha = (rec.get("sha256") or "").strip()
            if sha and hashlib.sha256(raw).hexdigest() != sha:
                console.print(f"[yellow]{rec['file']}: sha256 differs from the manifest")
            channels = int(rec.get("channels") or 1)
            planar = (rec.get("layout") or "").strip().lower().startswith("planar")
            array = np.frombuffer(raw, dtype=LITTLE[dtype])
            items.append(Item(name, rec["file"], dtype, channels, planar, raw, array))
    return items


def warm_up(lossless: list[Codec], lossy: list[LossyCodec]) -> None:
    """Run every codec once on a small stream, untimed, so that first-call costs (imports of
    plugins and compiled modules, table set-up) do not land in the first file's figures."""
    x = (np.sin(np.arange(4096) / 20) * 1000).astype("<i2")
    item = Item("warm-up", "warm-up", "int16", 1, False, x.tobytes(), x)
    for codec in lossless:
        if not codec.unavailable:
            try:
                codec.decompress(codec.compress(item), item)
            except Exception:  # the real run reports it; the warm-up only warms
                pass
    for codec in lossy:
        if not codec.unavailable:
            try:
                codec.decompress(codec.compress(item, 2.0), item, 2.0)
            except Exception:
                pass


#: What a measurement's time is (``--clock``): wall time, or the CPU time of the calling
#: thread, which the other jobs of a shared machine inflate far less (every codec here runs
#: in the calling thread, so both clocks compare them on the same footing).
CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}
_clock = [CLOCKS["wall"]]


def best_time(fn: Callable, repeats: int):
    """The result of the last call and the shortest time of ``repeats`` calls (``--clock``)."""
    clock = _clock[0]
    best, result = math.inf, None
    for _ in range(max(1, repeats)):
        t0 = clock()
        result = fn()
        best = min(best, clock() - t0)
    return result, best


def _as_bytes(decoded, item: Item) -> bytes | None:
    """The decoded samples as the file's bytes (None: nothing usable came back)."""
    if isinstance(decoded, bytes | bytearray | memoryview):
        return bytes(decoded)
    if decoded is None:  # pcodec gives None for an empty input
        return b"" if not item.raw else None
    arr = np.asarray(decoded)
    if arr.dtype.kind not in "iuf":
        return None
    return arr.astype(item.array.dtype, copy=False).reshape(-1).tobytes()


def _base(item: Item, codec: str, mode: str, bound: float | None = None) -> Row:
    return Row(
        item.file, item.dtype, item.channels, item.array.size, len(item.raw), codec, mode, bound
    )


def _speeds(row: Row, item: Item, blob: bytes, tc: float, td: float) -> None:
    row.comp_bytes = len(blob)
    row.ratio = len(item.raw) / len(blob) if blob else math.inf
    row.comp_MBps = len(item.raw) / tc / 1e6 if tc > 0 else math.inf
    row.decomp_MBps = len(item.raw) / td / 1e6 if td > 0 else math.inf


def run_lossless(item: Item, codec: Codec, repeats: int) -> Row:
    """Measure one lossless codec on one file; never raises."""
    row = _base(item, codec.name, "lossless")
    row.note = codec.note
    if codec.unavailable:
        row.status, row.note = "skipped", codec.unavailable
        return row
    try:
        blob, tc = best_time(lambda: codec.compress(item), repeats)
        decoded, td = best_time(lambda: codec.decompress(blob, item), repeats)
    except Skip as exc:
        row.status, row.note = "skipped", str(exc)
        return row
    except Exception as exc:  # a codec's own failure is a result, not a crash of the run
        row.status, row.note = "failed", f"{type(exc).__name__}: {exc}".splitlines()[0]
        return row
    _speeds(row, item, bytes(blob), tc, td)
    try:
        same = _as_bytes(decoded, item) == item.raw
    except (TypeError, ValueError):  # a decoder returned something that is not samples
        same = False
    if not same:
        row.status, row.note = "mismatch", "round trip is not bit-exact"
    return row


def max_abs_error(item: Item, decoded: np.ndarray) -> float:
    """max |x - x'| (exact for integers; float64 arithmetic for floats, where non-finite
    samples must come back identical or count as infinite error)."""
    x = item.array
    if decoded is None:
        return 0.0 if x.size == 0 else math.inf
    y = np.asarray(decoded).reshape(-1)
    if y.size != x.size:
        return math.inf
    if x.size == 0:
        return 0.0
    if item.is_int:
        return float(np.abs(x.astype(np.int64) - y.astype(np.int64)).max())
    xf, yf = x.astype(np.float64), y.astype(np.float64)
    finite = np.isfinite(xf)
    same_special = (xf[~finite] == yf[~finite]) | (np.isnan(xf[~finite]) & np.isnan(yf[~finite]))
    if not same_special.all():
        return math.inf
    if not finite.any():
        return 0.0
    with np.errstate(invalid="ignore", over="ignore"):
        err = np.abs(xf[finite] - yf[finite])
    return float(np.nan_to_num(err, nan=math.inf).max())


def run_lossy(item: Item, codec: LossyCodec, bound: float, repeats: int, note: str) -> Row:
    """Measure one bounded-error codec on one file at one absolute bound; never raises."""
    row = _base(item, codec.name, "lossy", bound)
    row.note = "; ".join(n for n in (codec.note, note) if n)
    if codec.unavailable:
        row.status, row.note = "skipped", codec.unavailable
        return row
    try:
        blob, tc = best_time(lambda: codec.compress(item, bound), repeats)
        decoded, td = best_time(lambda: codec.decompress(blob, item, bound), repeats)
    except Skip as exc:
        row.status, row.note = "skipped", str(exc)
        return row
    except Exception as exc:
        row.status, row.note = "failed", f"{type(exc).__name__}: {exc}".splitlines()[0]
        return row
    _speeds(row, item, bytes(blob), tc, td)
    row.max_abs_error = max_abs_error(item, decoded)
    if not row.max_abs_error <= bound:
        row.status = "bound-exceeded"
    return row


def file_bound(item: Item, value: float, relative: bool) -> tuple[float | None, str]:
    """The absolute bound for a file (None: none usable) and a note on how it was made."""
    bound = value * item.value_range() if relative else value
    note = f"{value:g} x range" if relative else ""
    if item.is_int:
        # qres takes whole-number bounds on integer samples; every codec gets the same one.
        whole = float(math.floor(bound))
        if whole < 1:
            return None, f"bound {bound:g} is below one count"
        if whole != bound:
            note = "; ".join(n for n in (note, f"{bound:g} floored to {whole:g}") if n)
        bound = whole
    elif not bound > 0:
        return None, f"bound {bound:g} is not positive"
    return bound, note


# --------------------------------------------------------------------------------- reporting
def geomean(values: list[float]) -> float | None:
    """Geometric mean of positive finite values (None if there are none)."""
    vals = [v for v in values if v and math.isfinite(v) and v > 0]
    return math.exp(sum(math.log(v) for v in vals) / len(vals)) if vals else None


def _fmt(v: float | None, digits: int = 3) -> str:
    if v is None:
        return "-"
    if not math.isfinite(v):
        return "inf"
    return f"{v:.{digits}f}" if digits else f"{v:.0f}"


STATUS_STYLE = {
    "ok": "",
    "skipped": "dim",
    "failed": "red",
    "mismatch": "bold red",
    "bound-exceeded": "bold red",
}


def print_rows(console: Console, rows: list[Row], title: str, lossy: bool) -> None:
    """The per-file, per-codec table."""
    table = Table(title=title, show_lines=False)
    for col, just in (("file", "left"), ("dtype", "left"), ("ch", "right"), ("codec", "left")):
        table.add_column(col, justify=just)
    if lossy:
        table.add_column("bound", justify="right")
    table.add_column("ratio", justify="right")
    table.add_column("comp MB/s", justify="right")
    table.add_column("decomp MB/s", justify="right")
    if lossy:
        table.add_column("max err", justify="right")
    table.add_column("status / note")
    last = None
    for r in rows:
        if last is not None and r.file != last:
            table.add_section()
        last = r.file
        cells = [r.file.removesuffix(".bin"), r.dtype, str(r.channels), r.codec]
        if lossy:
            cells.append(f"{r.bound:g}" if r.bound is not None else "-")
        cells += [_fmt(r.ratio), _fmt(r.comp_MBps, 1), _fmt(r.decomp_MBps, 1)]
        if lossy:
            cells.append(_fmt(r.max_abs_error, 4) if r.max_abs_error is not None else "-")
        note = r.status if r.status == "ok" else f"{r.status}: {r.note}"
        cells.append("ok" if r.status == "ok" else note)
        table.add_row(*cells, style=STATUS_STYLE.get(r.status, ""))
    console.print(table)


def corpus_speed(rows: list[Row]) -> tuple[float | None, float | None]:
    """Compress and decompress MB/s over a set of measurements: total bytes over total time
    (so that large files weigh by their size, as a user's throughput would)."""
    total = sum(r.orig_bytes for r in rows)
    tc = sum(r.orig_bytes / r.comp_MBps / 1e6 for r in rows if r.comp_MBps)
    td = sum(r.orig_bytes / r.decomp_MBps / 1e6 for r in rows if r.decomp_MBps)
    return (total / tc / 1e6 if tc else None), (total / td / 1e6 if td else None)


def codec_summary(rows: list[Row]) -> list[dict]:
    """Per codec (and bound, for bounded error): geomean ratio over the files it took, and
    corpus-wide MB/s."""
    out = []
    for name, bound in dict.fromkeys((r.codec, r.bound) for r in rows):
        mine = [r for r in rows if r.codec == name and r.bound == bound]
        ok = [r for r in mine if r.status == "ok"]
        comp, decomp = corpus_speed(ok)
        out.append(
            {
                "codec": name,
                "bound": bound,
                "files": len(ok),
                "of": len(mine),
                "geomean_ratio": geomean([r.ratio for r in ok]),
                "comp_MBps": comp,
                "decomp_MBps": decomp,
            }
        )
    return out


def print_summary(console: Console, summary: list[dict], title: str) -> None:
    """Geometric means by codec."""
    table = Table(title=title)
    bounds = any(s["bound"] is not None for s in summary)
    cols = ("codec", "bound") if bounds else ("codec",)
    cols += ("files", "geomean ratio", "comp MB/s (corpus)", "decomp MB/s (corpus)")
    for col in cols:
        table.add_column(col, justify="left" if col == "codec" else "right")
    for s in sorted(summary, key=lambda s: s["bound"] or 0) if bounds else summary:
        table.add_row(
            s["codec"],
            *([f"{s['bound']:g}" if s["bound"] is not None else "-"] if bounds else []),
            f"{s['files']}/{s['of']}",
            _fmt(s["geomean_ratio"]),
            _fmt(s["comp_MBps"], 1),
            _fmt(s["decomp_MBps"], 1),
        )
    console.print(table)


def verdicts(rows: list[Row], reference: str) -> dict:
    """Per file: the reference profile's ratio against the best of FLAC -8, pcodec and xz."""
    by_file: dict[str, dict[str, Row]] = {}
    for r in rows:
        by_file.setdefault(r.file, {})[r.codec] = r
    files, quotients = [], []
    for file, codecs in by_file.items():
        ref = codecs.get(reference)
        anchors = [codecs[a] for a in ANCHORS if a in codecs and codecs[a].status == "ok"]
        best = max(anchors, key=lambda r: r.ratio, default=None)
        entry = {
            "file": file,
            "qres": ref.ratio if ref and ref.status == "ok" else None,
            "best_codec": best.codec if best else None,
            "best_ratio": best.ratio if best else None,
            "quotient": None,
            "pass": None,
        }
        # An empty file has ratio 0 for everyone: nothing to compare.
        if entry["qres"] is not None and best is not None and best.ratio > 0:
            entry["quotient"] = entry["qres"] / best.ratio
            entry["pass"] = entry["qres"] >= best.ratio
            quotients.append(entry["quotient"])
        files.append(entry)
    gq = geomean(quotients)
    return {
        "reference": reference,
        "files": files,
        "geomean_quotient": gq,
        "all_pass": bool(files) and all(f["pass"] for f in files),
        "geomean_pass": gq is not None and gq >= 1.05,
    }


def kind_of(row: Row) -> str:
    """The kind of data a file holds: int or float, mono or multi(channel)."""
    number = "float" if row.dtype.startswith("float") else "int"
    return f"{number} {'mono' if row.channels == 1 else 'multi'}"


def kind_summary(rows: list[Row], reference: str) -> list[dict]:
    """Per kind of data and codec: geomean ratio, and geomean of the reference profile over
    the per-file best of the anchors (None where a codec took no file of the kind)."""
    out = []
    kinds = sorted({kind_of(r) for r in rows})
    for kind in kinds:
        mine = [r for r in rows if kind_of(r) == kind and r.status == "ok"]
        files = sorted({r.file for r in mine})
        entry = {"kind": kind, "files": len(files), "geomean_ratio": {}, "quotient": None}
        for name in dict.fromkeys(r.codec for r in mine):
            entry["geomean_ratio"][name] = geomean([r.ratio for r in mine if r.codec == name])
        sub = verdicts([r for r in rows if kind_of(r) == kind], reference)
        entry["quotient"] = sub["geomean_quotient"]
        out.append(entry)
    return out


def print_kind_summary(console: Console, summary: list[dict], reference: str) -> None:
    """Geometric means per kind of data (int/float, mono/multi)."""
    codecs = list(dict.fromkeys(c for s in summary for c in s["geomean_ratio"]))
    table = Table(title="lossless: geometric means per kind of data")
    for col in ("kind", "files", *codecs, f"{reference} / best anchor"):
        table.add_column(col, justify="left" if col == "kind" else "right")
    for s in summary:
        cells = [_fmt(s["geomean_ratio"].get(c)) for c in codecs]
        table.add_row(s["kind"], str(s["files"]), *cells, _fmt(s["quotient"]))
    console.print(table)


def losses(rows: list[Row], reference: str) -> list[dict]:
    """Every file where another codec (any of them, not only the anchors) beats the reference
    profile, the largest loss first."""
    by_file: dict[str, dict[str, Row]] = {}
    for r in rows:
        if r.status == "ok":
            by_file.setdefault(r.file, {})[r.codec] = r
    out = []
    for file, codecs in by_file.items():
        ref = codecs.get(reference)
        others = [r for c, r in codecs.items() if not c.startswith("qres-")]
        best = max(others, key=lambda r: r.ratio, default=None)
        if ref and best and best.ratio > ref.ratio:
            out.append(
                {
                    "file": file,
                    "qres": ref.ratio,
                    "winner": best.codec,
                    "ratio": best.ratio,
                    "quotient": ref.ratio / best.ratio,
                }
            )
    return sorted(out, key=lambda e: e["quotient"])


def print_losses(console: Console, found: list[dict], reference: str) -> None:
    """Where the reference profile loses, largest loss first."""
    if not found:
        console.print(f"[green]{reference} is ahead of every other codec on every file")
        return
    table = Table(title=f"where {reference} loses (largest loss first)")
    for col in ("file", reference, "winner", "its ratio", "qres / winner"):
        table.add_column(col, justify="left" if col in ("file", "winner") else "right")
    for e in found:
        table.add_row(
            e["file"].removesuffix(".bin"),
            _fmt(e["qres"]),
            e["winner"],
            _fmt(e["ratio"]),
            f"[red]{_fmt(e['quotient'])}",
        )
    console.print(table)


def print_verdicts(console: Console, v: dict) -> None:
    """The lossless target: reference profile >= best of FLAC/pcodec/xz on every file."""
    table = Table(title=f"{v['reference']} against the best of {', '.join(ANCHORS)}")
    for col in ("file", v["reference"], "best anchor", "anchor ratio", "qres / best", ">= best"):
        table.add_column(col, justify="left" if col in ("file", "best anchor") else "right")
    # Losses first, then the rest from the narrowest lead.
    order = sorted(v["files"], key=lambda f: (f["quotient"] is None, f["quotient"] or 0))
    for f in order:
        mark = "-" if f["pass"] is None else ("[green]yes" if f["pass"] else "[red]NO")
        table.add_row(
            f["file"].removesuffix(".bin"),
            _fmt(f["qres"]),
            f["best_codec"] or "-",
            _fmt(f["best_ratio"]),
            _fmt(f["quotient"]),
            mark,
        )
    console.print(table)
    gq = v["geomean_quotient"]
    console.print(
        f"geomean({v['reference']} / per-file best) = {_fmt(gq, 4)} (target >= 1.05: "
        f"{'met' if v['geomean_pass'] else 'NOT met'}); >= best on every file: "
        f"{'yes' if v['all_pass'] else 'NO'}"
    )


def speed_targets(rows: list[Row]) -> list[dict]:
    """The one-thread speed targets that one lossless run can check: qres-server at
    >= 20 MB/s both ways; qres-fast compressing at least as fast as FLAC -8 (on the files FLAC
    takes) with a geomean ratio at least pcodec level 8's (on all files)."""
    ok = {(r.codec, r.file): r for r in rows if r.status == "ok"}
    out = []
    server = [r for (c, _), r in ok.items() if c == "qres-server"]
    if server:
        comp, decomp = corpus_speed(server)
        for what, v in (("compress", comp), ("decompress", decomp)):
            out.append(
                {
                    "target": f"qres-server {what} MB/s >= 20",
                    "value": v,
                    "against": 20.0,
                    "met": v is not None and v >= 20,
                }
            )
        out.extend(_slowest_file_targets(server))
    flac_files = [f for (c, f) in ok if c == "flac-8"]
    fast = [ok[("qres-fast", f)] for f in flac_files if ("qres-fast", f) in ok]
    if fast and len(fast) == len(flac_files):
        v = corpus_speed(fast)[0]
        ref = corpus_speed([ok[("flac-8", f)] for f in flac_files])[0]
        out.append(
            {
                "target": "qres-fast compress MB/s >= flac-8's (FLAC's files)",
                "value": v,
                "against": ref,
                "met": v is not None and ref is not None and v >= ref,
            }
        )
    files = {f for (_, f) in ok}
    fast_all = [ok[("qres-fast", f)].ratio for f in files if ("qres-fast", f) in ok]
    pco = [ok[("pcodec-8", f)].ratio for f in files if ("pcodec-8", f) in ok]
    if fast_all and len(fast_all) == len(pco):
        v, ref = geomean(fast_all), geomean(pco)
        out.append(
            {
                "target": "qres-fast geomean ratio >= pcodec-8's",
                "value": v,
                "against": ref,
                "met": v is not None and ref is not None and v >= ref,
            }
        )
    return out


def _slowest_file_targets(server: list[Row]) -> list[dict]:
    """The per-file form of the server speed target: its slowest file each way, named."""
    out = []
    for what, attr in (("compress", "comp_MBps"), ("decompress", "decomp_MBps")):
        timed = [r for r in server if getattr(r, attr)]
        if not timed:
            continue
        slowest = min(timed, key=lambda r: getattr(r, attr))
        v = getattr(slowest, attr)
        out.append(
            {
                "target": f"qres-server {what} MB/s >= 20 on every file (slowest: {slowest.file})",
                "value": v,
                "against": 20.0,
                "met": v >= 20,
                "file": slowest.file,
            }
        )
    return out


def print_targets(console: Console, targets: list[dict]) -> None:
    """The speed targets, measured on this run (one thread)."""
    if not targets:
        return
    table = Table(title="speed targets (one thread, this run)")
    for col in ("target", "measured", "against", "met"):
        table.add_column(col, justify="left" if col == "target" else "right")
    for t in targets:
        table.add_row(
            t["target"],
            _fmt(t["value"], 2),
            _fmt(t["against"], 2),
            "[green]yes" if t["met"] else "[red]NO",
        )
    console.print(table)


def print_lossy_verdicts(console: Console, rows: list[Row], profile: str) -> dict:
    """Bounded-error target: the qres profile's ratio >= SZ3's and zfp's at every bound."""
    name = f"qres-{profile}"
    keyed: dict[tuple, dict[str, Row]] = {}
    for r in rows:
        keyed.setdefault((r.file, r.bound), {})[r.codec] = r
    table = Table(title=f"bounded error: {name} against SZ3 and zfp at the same absolute bound")
    for col in ("file", "bound", name, "sz3", "zfp", ">= both", "bound held"):
        table.add_column(col, justify="left" if col == "file" else "right")
    results = []
    for (file, bound), codecs in keyed.items():
        if bound is None:
            continue
        q = codecs.get(name)
        others = [codecs.get(c) for c in ("sz3", "zfp")]
        q_ratio = q.ratio if q and q.status in ("ok", "bound-exceeded") else None
        rivals = [o.ratio for o in others if o and o.status == "ok"]
        wins = None if q_ratio is None or not rivals else all(q_ratio >= x for x in rivals)
        held = q is not None and q.status == "ok"
        results.append(
            {"file": file, "bound": bound, "qres": q_ratio, "wins": wins, "bound_held": held}
        )
        table.add_row(
            file.removesuffix(".bin"),
            f"{bound:g}",
            _fmt(q_ratio),
            *[
                _fmt(o.ratio) if o and o.status == "ok" else (o.status if o else "-")
                for o in others
            ],
            "-" if wins is None else ("[green]yes" if wins else "[red]NO"),
            "[green]yes" if held else f"[red]{q.status if q else 'missing'}",
        )
    console.print(table)
    return {"profile": name, "results": results}


def write_png(path: str, lossless: list[Row], lossy: list[Row]) -> None:
    """Bar chart of ratio by file and codec (a second panel for bounded error)."""
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    panels = [(t, rows) for t, rows in (("lossless", lossless), ("bounded error", lossy)) if rows]
    fig, axes = plt.subplots(len(panels), 1, figsize=(14, 5.5 * len(panels)), squeeze=False)
    for ax, (title, rows) in zip(axes[:, 0], panels, strict=True):

        def group(r: Row) -> str:
            stem = r.file.removesuffix(".bin")
            return stem if r.bound is None else f"{stem}\nE={r.bound:g}"

        groups = list(dict.fromkeys(group(r) for r in rows))
        codecs = list(dict.fromkeys(r.codec for r in rows))
        width = 0.8 / max(1, len(codecs))
        for k, codec in enumerate(codecs):
            ratios = {group(r): r.ratio for r in rows if r.codec == codec and r.status == "ok"}
            xs = [i + (k - (len(codecs) - 1) / 2) * width for i in range(len(groups))]
            ax.bar(xs, [ratios.get(g, 0.0) for g in groups], width, label=codec)
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels(groups, rotation=30, ha="right", fontsize=8)
        ax.set_yscale("log")
        # Plain numbers on the log axis ("6", not "6 x 10^0"): ratios are read, not exponents.
        ax.yaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 1.5, 2.0, 3.0, 5.0, 7.0)))
        ax.yaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
        ax.yaxis.set_minor_formatter(ticker.NullFormatter())
        ax.set_ylabel("compression ratio (log)")
        ax.set_title(f"{title}: ratio by file and codec (higher is better; missing = skipped)")
        ax.grid(axis="y", which="both", alpha=0.3)
        ax.legend(fontsize=8, ncol=min(6, len(codecs)))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def package_versions() -> dict:
    """Versions of the measured packages (``missing`` when not installed)."""
    out = {}
    for pkg in ("qres", "numpy", "soundfile", "pcodec", "zstandard", "pysz", "zfpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "missing"
    try:
        import soundfile

        out["libsndfile"] = soundfile.__libsndfile_version__
    except (ImportError, OSError):
        pass
    return out


def _floats(text: str) -> list[float]:
    try:
        vals = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give numbers separated by commas") from None
    if not vals or any(not v > 0 or not math.isfinite(v) for v in vals):
        raise argparse.ArgumentTypeError(f"{text!r}: bounds must be finite numbers > 0")
    return vals


def measure(items, lossless_codecs, lossy_codecs, args, console) -> tuple[list[Row], list[Row]]:
    """Every lossless codec, then every bounded-error codec at every bound, on every file."""
    lossless: list[Row] = []
    lossy: list[Row] = []
    for item in items:
        if not args.lossy_only:
            for codec in lossless_codecs:
                lossless.append(run_lossless(item, codec, args.repeats))
        for value in args.max_error or []:
            bound, note = file_bound(item, value, args.rel_error)
            for codec in lossy_codecs:
                if bound is None:
                    row = _base(item, codec.name, "lossy", value)  # the bound as asked
                    row.status, row.note = "skipped", note
                    lossy.append(row)
                    continue
                lossy.append(run_lossy(item, codec, bound, args.repeats, note))
        console.print(f"[dim]measured {item.file}", highlight=False)
    return lossless, lossy


def summarise(lossless: list[Row], lossy: list[Row], profiles: list[str], args, console) -> dict:
    """Print the tables, summaries and verdicts; return them as plain data for --json."""
    report: dict = {}
    if lossless:
        print_rows(console, lossless, f"lossless (best of {args.repeats})", lossy=False)
        report["lossless_summary"] = codec_summary(lossless)
        print_summary(console, report["lossless_summary"], "lossless: geometric means")
        ref = f"qres-{'server' if 'server' in profiles else profiles[0]}" if profiles else ""
        if ref in {r.codec for r in lossless}:
            report["losses"] = losses(lossless, ref)
            print_losses(console, report["losses"], ref)
            report["kind_summary"] = kind_summary(lossless, ref)
            print_kind_summary(console, report["kind_summary"], ref)
            report["lossless_verdict"] = verdicts(lossless, ref)
            print_verdicts(console, report["lossless_verdict"])
        report["speed_targets"] = speed_targets(lossless)
        print_targets(console, report["speed_targets"])
    if lossy:
        kind = "relative to each file's range" if args.rel_error else "absolute"
        print_rows(
            console, lossy, f"bounded error ({kind} bounds, best of {args.repeats})", lossy=True
        )
        report["lossy_summary"] = codec_summary(lossy)
        print_summary(console, report["lossy_summary"], "bounded error: geometric means")
        if profiles:
            ref = "server" if "server" in profiles else profiles[0]
            report["lossy_verdict"] = print_lossy_verdicts(console, lossy, ref)
    return report


def main(argv: list[str] | None = None) -> int:
    """Run the comparison; return the exit status."""
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument(
        "data",
        nargs="?",
        default=str(DEFAULT_DATA),
        help=f"folder with the files and MANIFEST.tsv (default {DEFAULT_DATA})",
    )
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per measurement; best wins")
    ap.add_argument(
        "--clock",
        choices=tuple(CLOCKS),
        default="wall",
        help="time measured: wall (default) or the calling thread's CPU time (a busy machine)",
    )
    ap.add_argument(
        "--profiles",
        default=",".join(DEFAULT_PROFILES),
        help="qres profiles, comma-separated (default server,fast,esp32)",
    )
    ap.add_argument(
        "--codecs",
        default="",
        help="keep only these codec names, comma-separated (e.g. qres-server,flac-8)",
    )
    ap.add_argument(
        "--files", default="", help="keep only manifest files matching these globs, comma-separated"
    )
    ap.add_argument(
        "--only",
        choices=("all", "int", "float"),
        default="all",
        help="keep only integer or float files",
    )
    ap.add_argument(
        "--max-error",
        type=_floats,
        default=None,
        metavar="E1,E2,...",
        help="also run bounded-error codecs at these absolute bounds",
    )
    ap.add_argument(
        "--rel-error",
        action="store_true",
        help="--max-error values are fractions of each file's value range",
    )
    ap.add_argument("--lossy-only", action="store_true", help="skip the lossless comparison")
    ap.add_argument("--csv", help="write every measurement as CSV")
    ap.add_argument("--json", help="write measurements, summaries and environment as JSON")
    ap.add_argument("--png", help="write a bar chart of ratio by file and codec")
    args = ap.parse_args(argv)

    # In a pipe or a log, rich would assume 80 columns and cut the tables: use a wide page.
    console = Console(width=None if sys.stdout.isatty() else 160)
    profiles = [p.strip() for p in args.profiles.split(",") if p.strip()]
    keep = {c.strip() for c in args.codecs.split(",") if c.strip()}
    patterns = [p.strip() for p in args.files.split(",") if p.strip()]
    items = read_corpus(Path(args.data), patterns, args.only, console)
    if not items:
        console.print("[red]no files selected; check the folder, --files and --only")
        return 1
    _clock[0] = CLOCKS[args.clock]
    load_start = os.getloadavg()

    lossless_codecs = [qres_codec(p) for p in profiles] + [
        flac_codec(),
        pcodec_codec(8),
        pcodec_codec(12),
        xz_codec(),
        zstd_codec(),
        delta_zstd_codec(),
        blosc2_codec(),
    ]
    lossy_codecs = [qres_lossy(p) for p in profiles] + [sz3_codec(), zfp_codec()]
    if keep:
        lossless_codecs = [c for c in lossless_codecs if c.name in keep]
        lossy_codecs = [c for c in lossy_codecs if c.name in keep]

    warm_up([] if args.lossy_only else lossless_codecs, lossy_codecs if args.max_error else [])
    lossless, lossy = measure(items, lossless_codecs, lossy_codecs, args, console)
    report = summarise(lossless, lossy, profiles, args, console)

    load_end = os.getloadavg()
    env = {
        "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "loadavg_start": load_start,
        "loadavg_end": load_end,
        "repeats": args.repeats,
        "clock": args.clock,
        "versions": package_versions(),
    }
    console.print(
        f"[dim]load average (1/5/15 min): start {load_start[0]:.2f}/{load_start[1]:.2f}/"
        f"{load_start[2]:.2f}, end {load_end[0]:.2f}/{load_end[1]:.2f}/{load_end[2]:.2f}; "
        f"{os.cpu_count()} CPUs; {args.clock} clock; "
        + ", ".join(f"{k} {v}" for k, v in env["versions"].items()),
        highlight=False,
    )

    rows = lossless + lossy
    if args.csv:
        with open(args.csv, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(asdict(rows[0])))
            writer.writeheader()
            writer.writerows(asdict(r) for r in rows)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(
                {"environment": env, "rows": [asdict(r) for r in rows], **report},
                fh,
                indent=1,
                default=str,
            )
    if args.png:
        write_png(args.png, lossless, lossy)
    broken = [r for r in rows if r.status in ("mismatch", "bound-exceeded")]
    if broken:
        console.print(
            "[bold red]failed checks: "
            + ", ".join(f"{r.codec} on {r.file} ({r.status})" for r in broken)
        )
    # Only qres's own failures fail the run: a rival missing its bound (zfp on NaN, say) is a
    # finding about that rival, shown in the tables.
    return 1 if any(r.codec.startswith("qres-") for r in broken) else 0


if __name__ == "__main__":
    sys.exit(main())
