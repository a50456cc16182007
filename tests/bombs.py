"""Decompression bombs: small ``.qres`` files with valid checksums and in-range fields whose
blocks declare far more output than their payload holds (or than a machine can hold)."""

from __future__ import annotations

import io
import struct
import zlib

from qres.codec import container
from qres.codec.container import (
    METHOD_DEFLATE,
    METHOD_PREDICTED,
    METHOD_QUANTISED,
    METHOD_STORED,
    Block,
    Header,
)

ARITH = {"use": "arith", "checksum": False}
RICE = {"use": "rice", "checksum": False}


def bomb(
    coder: dict = ARITH,
    *,
    dtype: str = "int64",
    channels: int = 4096,
    frames: int = 1 << 24,
    blocks: int = 1,
    method: int = METHOD_PREDICTED,
    stream: bytes = b"",
    declare_frames: bool = False,
    grids: bool = False,
) -> bytes:
    """A container of ``blocks`` blocks of ``frames`` frames of ``channels`` integer channels
    whose predicted payload is one byte of side record and ``stream`` per channel (an empty
    arith stream is a run of zeros of any length); a quantised block (bounded error 1) holds
    the same payload after its type byte (with ``grids``, of a float stream: int64 samples on
    recorded grids, format 11, a step and offset per channel after it). Every CRC and the index
    are valid."""
    header = Header(
        dtype=dtype,
        channels=channels,
        layout="interleaved",
        byte_order="little",
        block_frames=frames,
        frames=frames * blocks if declare_frames else None,
        codec={
            "predictor": {"use": "polynomial", "order": 2},
            "coder": dict(coder),
            "max_error": 1 if method == METHOD_QUANTISED else 0,
        },
    )
    if method in (METHOD_PREDICTED, METHOD_QUANTISED):
        payload = bytes(channels) + (struct.pack("<I", len(stream)) + stream) * channels
        if grids:
            payload = bytes([2 | 0x80]) + struct.pack("<dd", 1.0, 0.0) * channels + payload
        else:
            payload = (b"\0" if method == METHOD_QUANTISED else b"") + payload
    elif method == METHOD_DEFLATE:
        payload = zlib.compress(bytes(1 << 16), 9)
    else:
        payload = bytes(64)
    # Blocks small enough to check are honest: their CRC and the stream hash are those of the
    # zeros they decode to, so only the limits can stop them.
    size = frames * channels * container.ITEMSIZE[dtype]
    raw = bytes(size) if size <= 1 << 26 else b""
    out = io.BytesIO()
    writer = container.Writer(out, header)
    for _ in range(blocks):
        writer.add(Block(frames, method, 0, zlib.crc32(raw), payload), raw)
    writer.finish()
    return out.getvalue()


SHAPES = {
    "arith zeros": lambda: bomb(ARITH),
    "rice": lambda: bomb(RICE, stream=b"\x80"),
    "deflate": lambda: bomb(method=METHOD_DEFLATE),
    "stored": lambda: bomb(method=METHOD_STORED),
    "quantised rice": lambda: bomb(RICE, stream=b"\x80", method=METHOD_QUANTISED),
    "lattice rice": lambda: bomb(
        RICE, stream=b"\x80", method=METHOD_QUANTISED, dtype="float64", channels=1024, grids=True
    ),
}


def _stage_fields(draw, flags: int, channels: int, frames: int) -> bytes:
    """A predicted block's fields before its side record, for ``flags``: channel codes (bit 3),
    channel pairs (bit 4) and match tables (bit 5) with extreme in-range counts over a few
    coded bytes."""
    from hypothesis import strategies as st

    from qres.codec.container import put_varint

    out = bytearray()
    if flags & 8:
        out += bytes([draw(st.integers(0, 5))]) * channels
    if flags & 16:
        for c in range(min(channels, 3)):
            back = draw(st.integers(0, min(c, 8)))
            out.append(back)
            if back:
                out += draw(st.integers(-64, 64)).to_bytes(1, "little", signed=True)
    if flags & 32:
        for _ in range(min(channels, 3)):
            put_varint(out, draw(st.sampled_from([0, 1, frames // 4])))
            for _ in range(3):
                coded = draw(st.binary(max_size=4))
                put_varint(out, len(coded))
                out += coded
    return bytes(out)


def extreme_containers():
    """A hypothesis strategy: containers whose header and block records take extreme
    in-range values (channels up to 4096, blocks up to 2**24 frames, 64-bit samples, a
    declared total up to 2**62 - 1) over tiny payloads, with every checksum valid."""
    from hypothesis import strategies as st

    def edge(low: int, high: int):
        return st.one_of(st.just(low), st.just(high), st.integers(low, high))

    @st.composite
    def build(draw) -> bytes:
        channels = draw(edge(1, container.MAX_CHANNELS))
        block_frames = draw(edge(1, container.MAX_BLOCK_FRAMES))
        counts = draw(st.lists(edge(1, block_frames), min_size=1, max_size=3))
        declared = draw(
            st.sampled_from(["none", "exact", "max"]).map(
                lambda how: {"none": None, "exact": sum(counts), "max": container.MAX_FRAMES}[how]
            )
        )
        header = Header(
            dtype=draw(st.sampled_from(container.SAMPLE_DTYPES)),
            channels=channels,
            layout="interleaved",
            byte_order=draw(st.sampled_from(["little", "big"])),
            block_frames=block_frames,
            frames=declared,
            codec={
                "predictor": {"use": "polynomial", "order": draw(st.integers(0, 3))},
                "coder": {**draw(st.sampled_from([ARITH, RICE])), "checksum": draw(st.booleans())},
                "max_error": draw(st.sampled_from([0, 1, 0.5])),
            },
        )
        methods = [METHOD_PREDICTED, METHOD_DEFLATE, METHOD_STORED, METHOD_QUANTISED]
        method = draw(st.sampled_from(methods))
        stream = draw(st.binary(max_size=6))
        out = io.BytesIO()
        writer = container.Writer(out, header)
        for frames in counts:
            flags = draw(st.integers(0, 63))  # bits 4-5: channel pairs and match tables
            if method in (METHOD_PREDICTED, METHOD_QUANTISED):
                payload = _stage_fields(draw, flags, channels, frames)
                if method == METHOD_QUANTISED:  # the type of its quantised samples first
                    first = draw(st.integers(0, 4)) | draw(st.sampled_from([0, 0x80]))
                    if first & 0x80:  # then recorded grids (format 11), maybe cut short
                        size = draw(st.sampled_from([16 * channels, 16 * channels - 8]))
                        payload = draw(st.binary(min_size=size, max_size=size)) + payload
                    payload = bytes([first]) + payload
                payload += bytes(channels) + (struct.pack("<I", len(stream)) + stream) * channels
            else:
                payload = draw(st.binary(max_size=64))
            writer.add(Block(frames, method, flags, 0, payload), b"")
        writer.finish()
        return out.getvalue()

    return build()
