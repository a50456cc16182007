"""The container parser on hostile bytes: any damage is an IntegrityError (or the project's own
error), never a crash, a hang or an unbounded allocation; random access agrees with streaming."""

from __future__ import annotations

import io

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qres import api, container
from qres.demo import make_sample
from qres.errors import IntegrityError, QresError
from qres.samples import SampleSource, StreamSpec

SPEC = StreamSpec("int16", 4)
RAW = make_sample(frames=6000)


@pytest.fixture(scope="module")
def packed():
    from qres import codec

    settings_, _ = api.codec_settings("esp32")
    out = io.BytesIO()
    small = codec.CodecSettings(settings_.predictor, settings_.coder, 1000)
    codec.compress(SampleSource(io.BytesIO(RAW), SPEC), out, small)  # 6 blocks of 1000 frames
    return out.getvalue()


def _decode_fails_cleanly(data: bytes) -> None:
    try:
        out = api.decompress_bytes(data)
    except QresError:
        return
    # Damage that still decodes must give the original: every byte is under a checksum.
    assert out == RAW


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_bit_flips_are_caught(packed, data):
    position = data.draw(st.integers(0, len(packed) - 1))
    bit = data.draw(st.integers(0, 7))
    damaged = bytearray(packed)
    damaged[position] ^= 1 << bit
    with pytest.raises(QresError):
        api.decompress_bytes(bytes(damaged))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_truncation_is_caught(packed, data):
    cut = data.draw(st.integers(0, len(packed) - 1))
    with pytest.raises(IntegrityError):
        api.decompress_bytes(packed[:cut])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_crash(blob):
    _decode_fails_cleanly(blob)
    _decode_fails_cleanly(container.MAGIC + blob)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_spliced_garbage_never_crashes(packed, data):
    start = data.draw(st.integers(0, len(packed)))
    junk = data.draw(st.binary(min_size=1, max_size=64))
    _decode_fails_cleanly(packed[:start] + junk + packed[start + len(junk) :])


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=200))
def test_header_body_parser_only_raises_integrity_errors(body):
    try:
        container.parse_header_body(body)
    except IntegrityError:
        pass


def test_random_access_matches_streaming(packed):
    stream = io.BytesIO(packed)
    header, end = container.read_header(stream)
    index, trailer, size = container.read_index(stream, end)
    assert size == len(packed) and trailer.total_frames == 6000
    reader = container.Reader(io.BytesIO(packed))
    streamed = [block for _, block in reader.blocks()]
    assert len(streamed) == len(index.offsets) == 6
    for number in reversed(range(6)):
        assert container.read_block_at(stream, header, index, number) == streamed[number]
    with pytest.raises(IntegrityError, match="no such block"):
        container.read_block_at(stream, header, index, 6)


def test_header_round_trips():
    header = container.Header(
        "float32", 3, "planar", "big", 512, 1234, {"predictor": {"use": "x"}}, b"pre", (1, -2)
    )
    parsed, length = container.read_header(io.BytesIO(container.encode_header(header)))
    assert parsed == header and length == len(container.encode_header(header))


def test_a_newer_format_version_is_refused(packed):
    data = bytearray(packed)
    data[8] = 2
    with pytest.raises(IntegrityError, match="format version 2 is not supported"):
        api.decompress_bytes(bytes(data))
