"""The container parser on hostile bytes: any damage is an IntegrityError (or the project's own
error), never a crash, a hang or an unbounded allocation; random access agrees with streaming."""

from __future__ import annotations

import io
import math
from pathlib import Path

import attrs
import bombs
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from qres.codec import container
from qres.codec import files as api
from qres.codec.demo import make_sample
from qres.codec.samples import SampleSource, StreamSpec
from qres.kernel.errors import IntegrityError, QresError

SPEC = StreamSpec("int16", 4)
RAW = make_sample(frames=6000)
GOLDEN = Path(__file__).resolve().parent / "golden"


@pytest.fixture(scope="module")
def packed():
    from qres.codec import pipeline as codec

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


HEADERS = [
    container.Header(
        "int24",
        2,
        "planar",
        "big",
        4096,
        None,
        {"predictor": {"use": "polynomial", "order": 1}, "coder": {"use": "arith"}, "max_error": 7},
        b"RIFF....WAVE",
    ),
    container.Header(
        "float32",
        3,
        "planar",
        "big",
        512,
        1234,
        {"predictor": {"use": "x"}, "coder": {"use": "rice", "checksum": False}, "max_error": 0.05},
        b"pre",
        (1, -2),
    ),
    container.Header(
        "int16",
        4,
        "interleaved",
        "little",
        256,
        None,
        {
            "predictor": {"use": "polynomial", "order": 2},
            "coder": {"use": "arith"},
            "max_error": 16,
        },
    ),
    container.Header(
        "uint8",
        4096,
        "interleaved",
        "little",
        1 << 24,
        0,
        {
            "predictor": {"use": "nlms", "stages": [16, 8], "fixed": 1},
            "coder": {"use": "\u00e9", "": None, "k": [1.5, -3, "s", {"a": True}]},
            "max_error": 2.0**60,
        },
    ),
]


@pytest.mark.parametrize("header", HEADERS)
def test_header_round_trips(header):
    encoded = container.encode_header(header)
    parsed, length = container.read_header(io.BytesIO(encoded + b"rest"))
    assert parsed == header and length == len(encoded)
    assert container.encode_header(parsed) == encoded


def test_header_is_compact():
    """The server profile's header: preamble, fixed fields and both tables in under 50 bytes."""
    settings_, _ = api.codec_settings("server", 4)
    header = container.Header(
        "int16", 1, "interleaved", "little", settings_.block_frames, None, settings_.to_header()
    )
    assert len(container.encode_header(header)) < 50
    # An integral error bound is a varint, not 8 bytes of float64.
    floaty = attrs.evolve(header, codec=dict(header.codec, max_error=4.5))
    assert len(container.encode_header(floaty)) == len(container.encode_header(header)) + 7


def test_empty_stream_costs_about_a_hundred_bytes():
    packed = api.compress_bytes(b"", SPEC, profile="server")
    assert len(packed) <= 110
    assert api.decompress_bytes(packed) == b""
    info = container.describe(io.BytesIO(packed))
    assert info["frames"] == 0 and info["blocks"] == []
    # Lossless integer streams hold nothing of version 10 (quantised blocks) or 11 (run tables
    # of non-finite floats) and are written as 9; bounded ones as 10; float streams as 11.
    assert info["format_version"] == container.LOSSLESS_VERSION == 9
    assert container.FORMAT_VERSION == 11
    bounded = api.compress_bytes(b"", SPEC, profile="server", max_error=2)
    assert container.describe(io.BytesIO(bounded))["format_version"] == 10
    for bound in (0, 0.5):
        floats = api.compress_bytes(b"", StreamSpec("float32", 1), "server", max_error=bound)
        assert container.describe(io.BytesIO(floats))["format_version"] == 11


def test_a_version_10_reader_refuses_version_11_as_newer(monkeypatch):
    """What a release reading up to version 10 says of a bounded float stream: upgrade."""
    floats = api.compress_bytes(bytes(80), StreamSpec("float64"), profile="server", max_error=1)
    monkeypatch.setattr(container, "FORMAT_VERSION", 10)
    with pytest.raises(IntegrityError, match="format version 11 is not supported.*upgrade qres"):
        api.decompress_bytes(floats)


@pytest.mark.parametrize(
    ("codec", "match"),
    [
        ({"predictor": {"use": "x", "f": {1, 2}}, "coder": {"use": "y"}}, "plain data"),
        ({"predictor": {"use": "x", "n": 1 << 64}, "coder": {"use": "y"}}, "64 bits"),
        ({"predictor": {"use": "x", 3: 1}, "coder": {"use": "y"}}, "non-text key"),
        ({"predictor": {"order": 2}, "coder": {"use": "y"}}, "no plugin name"),
        ({"predictor": {"use": "x"}, "coder": {"use": "y"}, "max_error": -1}, "max_error"),
        ({"predictor": {"use": "x"}, "coder": {"use": "y"}, "max_error": True}, "max_error"),
        ({"predictor": {"use": "x"}, "coder": {"use": "y"}, "transform": {}}, "no place"),
    ],
)
def test_settings_the_format_cannot_hold_are_refused(codec, match):
    header = container.Header("int16", 1, "interleaved", "little", 256, None, codec)
    with pytest.raises(QresError, match=match):
        container.encode_header(header)


def test_a_newer_format_version_is_refused(packed):
    data = bytearray(packed)
    data[8] = container.FORMAT_VERSION + 1
    newer = f"format version {container.FORMAT_VERSION + 1} is not supported.*upgrade qres"
    with pytest.raises(IntegrityError, match=newer):
        api.decompress_bytes(bytes(data))


@pytest.mark.parametrize(
    ("version", "name"),
    [
        (1, "format-v1.sensors-4ch-int16.esp32.qres"),
        (2, "format-v2.sensors-4ch-int16.server.qres"),
        (3, "format-v3.sensors-4ch-int16.server.qres"),
    ],
)
def test_an_unreleased_older_version_is_refused(version, name):
    """Versions 1 (JSON settings), 2 (no per-channel predictors) and 3 (no significant-digit
    mapping) were never released: they are refused with a clear message."""
    old = (GOLDEN / name).read_bytes()
    for call in (api.decompress_bytes, lambda d: container.describe(io.BytesIO(d))):
        match = f"format version {version} is not supported"
        with pytest.raises(IntegrityError, match=match) as err:
            call(old)
        assert "\n" not in str(err.value) and "compress the original again" in str(err.value)


# --------------------------------------------------------------------------- plugin settings

_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(1 << 63), (1 << 63) - 1)
    | st.integers(-100, 100)
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)
_TABLES = st.builds(
    lambda use, rest: {"use": use, **{k: v for k, v in rest.items() if k != "use"}},
    st.text(min_size=1, max_size=12),
    st.dictionaries(st.text(max_size=10), _VALUES, max_size=5),
)


@settings(max_examples=150, deadline=None)
@given(_TABLES)
def test_plugin_tables_round_trip_canonically(table):
    encoded = container.encode_table(table)
    decoded = container.decode_table(encoded)
    assert decoded == table
    assert list(decoded) == ["use", *sorted(k for k in table if k != "use")]
    assert container.encode_table(decoded) == encoded


def test_plugin_table_special_values():
    assert container.encode_table({"use": "arith"}) == b"\x05arith\x00"  # empty table: 1 byte
    nan = container.decode_table(container.encode_table({"use": "u", "x": float("nan")}))["x"]
    assert math.isnan(nan)
    neg = container.decode_table(container.encode_table({"use": "u", "z": -0.0}))["z"]
    assert math.copysign(1, neg) == -1
    as_list = container.decode_table(container.encode_table({"use": "u", "t": (1, 2)}))
    assert as_list == {"use": "u", "t": [1, 2]}
    # Small integers are one byte; the boundary values take the varint forms.
    assert len(container.encode_table({"use": "u", "n": 63})) + 1 == len(
        container.encode_table({"use": "u", "n": 64})
    )


@pytest.mark.parametrize(
    ("blob", "match"),
    [
        (b"\x01u\x01\x01k\x03\x05", "shortest form"),  # 5 as a varint, not the 1-byte form
        (b"\x01u\x01\x01k\x43\x00", "extra bytes"),
        (b"\x01u\x02\x01k\x40\x01a\x40", "out of order"),
        (b"\x01u\x02\x01a\x40\x01a\x40", "out of order"),
        (b"\x01u\x01\x03use\x40", "'use' repeated"),
        (b"\x00\x00", "empty plugin name"),
        (b"\x01u\x01\x01k\x09", "unknown value tag"),
        (b"\x01u\x01\x01k\x07\xff\xff\x03", "exceeds"),  # list count beyond the bytes
        (b"\x01u\x01\x01k\x06\x02\xff\xfe", "not UTF-8"),
        (b"\x01u\x01\x01k\x05\x01\x00\x00\x00\x00\x00\xf8\x7f", "canonical form"),
        (b"\x01u\x01\x01k" + b"\x07\x01" * 40 + b"\x40", "nest too deep"),
        (b"\x01u\x81\x00", "shortest form"),
    ],
)
def test_bad_plugin_tables_name_the_damage(blob, match):
    with pytest.raises(IntegrityError, match=match):
        container.decode_table(blob)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=60))
def test_settings_decoder_is_canonical_on_any_bytes(blob):
    """Any bytes either fail with an IntegrityError or are the one encoding of their value."""
    try:
        table = container.decode_table(blob)
    except IntegrityError:
        return
    assert container.encode_table(table) == blob


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(HEADERS), st.data())
def test_damaged_header_bodies_fail_cleanly_or_are_canonical(header, data):
    body = bytearray(container.encode_header_body(header))
    for _ in range(data.draw(st.integers(1, 3))):
        position = data.draw(st.integers(0, len(body) - 1))
        body[position] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        cut = data.draw(st.integers(0, len(body)))
        body = body[:cut] + data.draw(st.binary(max_size=4))
    try:
        parsed = container.parse_header_body(bytes(body))
    except IntegrityError:
        return
    assert container.encode_header_body(parsed) == bytes(body)


def test_lying_index_counts_are_refused(packed):
    """An index claiming more blocks than fit before it is refused before it is read."""
    stream = io.BytesIO(packed)
    _, end = container.read_header(stream)
    index, trailer, _ = container.read_index(stream, end)
    damaged = bytearray(packed)
    damaged[trailer.index_offset + 4 : trailer.index_offset + 9] = b"\xff\xff\xff\xff\x0f"
    with pytest.raises(IntegrityError, match="index: block count"):
        container.read_index(io.BytesIO(bytes(damaged)), end)
    with pytest.raises(IntegrityError):
        api.decompress_bytes(bytes(damaged))


def test_bytes_after_the_end_are_refused(packed):
    with pytest.raises(IntegrityError, match="unexpected bytes after the end"):
        api.decompress_bytes(packed + b"\0")
    with pytest.raises(IntegrityError, match="end marker"):
        container.describe(io.BytesIO(packed + b"\0"))


def test_block_records_are_compact(packed):
    """Each 1000-frame block costs its payload plus a 12..20-byte record and a short entry."""
    stream = io.BytesIO(packed)
    _, end = container.read_header(stream)
    index, trailer, size = container.read_index(stream, end)
    for number, offset in enumerate(index.offsets):
        block = container.read_block_at(
            stream, container.read_header(io.BytesIO(packed))[0], index, number
        )
        stop = (*index.offsets[1:], trailer.index_offset)[number]
        # tag, method byte, 2-byte varints of frames and length, two CRC-32s
        assert stop - offset == len(block.payload) + 14
    assert size - trailer.index_offset <= 4 + 1 + 6 * 4 + 1 + container.TRAILER_SIZE


#: Found by the fuzzer: an int8 block of 2**24 frames whose match table (coded by ``arith``,
#: which holds any count of zeros in a few bytes) would have decoded 4M matches, 239 MB,
#: before the 1 MiB output limit was checked.
MATCH_TABLE_BOMB = (
    b"\x89QRS\r\n\x1a\n\x06\x00+\x00\x00\x01\x80\x80\x80\x08\np"
    b"olynomial\x01\x05order@\x05ar"
    b"ith\x01\x08checksum\x01%\x9a\x93\xdbB\xa0"
    b"\x80\x80\x80\x08\r\x00\x00\x00\x00\x01\x80\x80\x80\x02\x00\x00\x00\x00\x00\x00"
    b"\x00\x001.\xb1\xbbQIDX\x01\x1c\x80\x80\x80\x08\x00V\x00\x00"
    b"\x00\x00\x00\x00\x00\xe3\xb0\xc4B\x98\xfc\x1c\x14\x9a\xfb\xf4\xc8\x99o\xb9"
    b"$'\xaeA\xe4d\x9b\x93L\xa4\x95\x99\x1bxR\xb8U<\x85'"
    b"jQEND"
)


@given(bombs.extreme_containers())
@example(MATCH_TABLE_BOMB)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_extreme_headers_and_blocks_are_refused_without_allocating(data):
    """Extreme in-range fields over tiny payloads: a clean project error, memory bounded by a
    small output limit (never by what the file declares), and nothing hangs."""
    import tracemalloc

    tracemalloc.start()
    try:
        api.decompress_stream(io.BytesIO(data), None, max_output=1 << 20)
    except QresError:
        pass
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < 24 << 20, peak
