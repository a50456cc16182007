"""24-bit samples (``int24``, 3 bytes each): read from raw files and WAV, coded as int32 with the
int24 range as bounds, written back byte for byte; containers of them were format 5 (every other
stream format 4) until format 6 (now 8), which every stream is written in; a reader accepts each
older version only with the types it had."""

from __future__ import annotations

import io
import json
import struct
import zlib

import attrs
import numpy as np
import pytest
from conftest import run_qres
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from node_helpers import make_nodes

import qres
from qres.codec import container
from qres.codec import files as api
from qres.codec import pipeline as codec
from qres.codec.samples import SampleSource, StreamSpec
from qres.kernel.errors import IntegrityError, QresError

LO, HI = -(1 << 23), (1 << 23) - 1


def _reference(raw: bytes, order: str) -> list[int]:
    """Pure-Python reading of 3-byte signed samples."""
    return [int.from_bytes(raw[i : i + 3], order, signed=True) for i in range(0, len(raw), 3)]


@settings(max_examples=200, deadline=None)
@given(
    st.binary(max_size=90).map(lambda b: b[: len(b) - len(b) % 3]),
    st.sampled_from(["little", "big"]),
)
def test_packing_matches_the_pure_python_reference(raw, order):
    spec = StreamSpec("int24", 1, "interleaved", order)
    values = spec.to_array(raw)
    assert values.tolist() == _reference(raw, order)
    assert spec.to_bytes(values) == raw
    assert spec.to_bytes(np.array(_reference(raw, order), dtype=np.int64)) == raw


@pytest.mark.parametrize("value", [LO - 1, HI + 1, 1 << 31])
def test_values_outside_the_range_are_not_packed(value):
    with pytest.raises(IntegrityError, match="int24 range"):
        StreamSpec("int24").to_bytes(np.array([0, value], dtype=np.int64))


def _samples(draw, frames: int, channels: int) -> np.ndarray:
    kind = draw(st.sampled_from(["smooth", "noise", "edges", "flat"]))
    t = np.arange(frames)[:, None]
    if kind == "smooth":
        values = np.sin(t / 17 + np.arange(channels)) * draw(st.integers(1, HI))
    elif kind == "noise":
        seed = draw(st.integers(0, 2**32 - 1))
        values = np.random.default_rng(seed).integers(LO, HI + 1, (frames, channels))
    elif kind == "edges":
        values = np.where((t + np.arange(channels)) % 3 == 0, LO, HI) * np.ones((1, channels))
    else:
        values = np.full((frames, channels), draw(st.integers(LO, HI)))
    return np.clip(np.rint(values), LO, HI).astype(np.int64)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_any_int24_stream_round_trips_byte_for_byte(data):
    frames = data.draw(st.integers(0, 700))
    channels = data.draw(st.integers(1, 3))
    order = data.draw(st.sampled_from(["little", "big"]))
    layout = data.draw(st.sampled_from(["interleaved", "planar"]))
    values = _samples(data.draw, frames, channels)
    spec = StreamSpec("int24", channels, layout, order)
    body = spec.to_bytes(values if layout == "interleaved" else values.T)
    raw = body + data.draw(st.binary(max_size=3 * channels - 1))  # a cut frame is kept
    profile = data.draw(st.sampled_from(["server", "fast", "esp32", "arduino-mega"]))
    settings_, _ = api.codec_settings(profile)
    small = codec.CodecSettings(settings_.predictor, settings_.coder, 256)
    out = io.BytesIO()
    codec.compress(SampleSource(io.BytesIO(raw), spec), out, small)
    packed = out.getvalue()
    assert packed[8] == 9
    assert api.decompress_bytes(packed) == raw
    bound = data.draw(st.integers(1, 5000))
    lossy = api.compress_bytes(body, spec, profile, max_error=bound)
    back = spec.to_array(api.decompress_bytes(lossy)).astype(np.int64)
    assert np.abs(back - spec.to_array(body)).max(initial=0) <= bound


def test_raw_int24_on_the_command_line(tmp_path):
    t = np.arange(20_000)[:, None]
    values = np.rint(np.sin(t / 40 + np.arange(2)) * 4_000_000).astype(np.int64)
    path = tmp_path / "a.s24"
    path.write_bytes(StreamSpec("int24", 2).to_bytes(values) + b"\x07")
    done = run_qres("compress", str(path), "--dtype", "s24", "--channels", "2", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["output_bytes"] < 0.6 * path.stat().st_size
    back = tmp_path / "back.s24"
    assert run_qres("decompress", f"{path}.qres", "-o", str(back)).returncode == 0
    assert back.read_bytes() == path.read_bytes()
    info = json.loads(run_qres("info", f"{path}.qres", "--json").stdout)
    assert info["format_version"] == 9 and info["header"]["dtype"] == "int24"
    assert info["raw_bytes"] == path.stat().st_size and info["tail_bytes"] == 1
    assert run_qres("verify", f"{path}.qres").returncode == 0


def test_python_api_gives_int32_arrays():
    values = np.array([[LO, HI], [0, -1], [5, 6]], dtype=np.int64)
    blob = StreamSpec("int24", 2, "interleaved", "big").to_bytes(values)
    packed = qres.compress(blob, dtype="int24", channels=2, byte_order="big")
    array = qres.decompress(packed)
    assert array.dtype == np.dtype("int32") and array.tolist() == values.tolist()
    assert qres.decompress(packed, as_bytes=True) == blob
    assert qres.info(packed)["header"]["dtype"] == "int24"


def test_python_api_opens_int24_by_block(tmp_path):
    values = np.arange(-3000, 3000, dtype=np.int64).reshape(-1, 3) * 1000
    path = tmp_path / "x.qres"
    path.write_bytes(
        api.compress_bytes(StreamSpec("int24", 3).to_bytes(values), StreamSpec("int24", 3))
    )
    with qres.open(path) as opened:
        assert opened.block(0).dtype == np.dtype("int32")
        assert np.concatenate(list(opened)).tolist() == values.tolist()
        assert opened.read().tolist() == values.tolist()


# -- the header: versions 6-8 for every type; before them, 5 only for int24, 4 for the others --


def _with_version(packed: bytes, version: int) -> bytes:
    """``packed`` with another format version, its header CRC made valid again."""
    data = bytearray(packed)
    data[8] = version
    stream = io.BytesIO(bytes(data))
    stream.seek(10)
    length, raw_length = container._read_varint(stream, "header", container.MAX_HEADER_BYTES)
    end = 10 + len(raw_length) + length
    struct.pack_into("<I", data, end, zlib.crc32(bytes(data[:end])))
    return bytes(data)


@pytest.fixture(scope="module")
def int24_packed():
    values = np.rint(np.sin(np.arange(3000) / 9) * 2e6).astype(np.int64)
    return api.compress_bytes(StreamSpec("int24").to_bytes(values), StreamSpec("int24"), "esp32")


def test_an_int24_stream_is_refused_as_format_4(int24_packed):
    with pytest.raises(IntegrityError, match="unknown sample type code 9 for format 4"):
        api.decompress_bytes(_with_version(int24_packed, 4))


def test_an_int16_stream_is_refused_as_format_5():
    packed = api.compress_bytes(bytes(200), StreamSpec("int16"))
    assert packed[8] == 9
    assert api.decompress_bytes(_with_version(packed, 4)) == bytes(200)  # no version-6 stage
    with pytest.raises(IntegrityError, match="format 5 for int16 samples"):
        api.decompress_bytes(_with_version(packed, 5))
    assert api.decompress_bytes(_with_version(packed, 10)) == bytes(200)  # 10 reads it too
    assert api.decompress_bytes(_with_version(packed, 11)) == bytes(200)  # and 11
    with pytest.raises(IntegrityError, match="format version 12 is not supported.*upgrade"):
        api.decompress_bytes(_with_version(packed, 12))


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 255), st.integers(0, 255), st.sampled_from(["int16", "int24", "float32"]))
def test_any_version_and_type_code_is_refused_or_canonical(version, code, dtype):
    """Every (version, sample type code) pair with valid checksums either reads as version 6
    to 11 or the one older version its type had, or fails with an IntegrityError."""
    header = container.Header(
        dtype, 2, "interleaved", "little", 64, None,
        {"predictor": {"use": "polynomial"}, "coder": {"use": "rice"}, "max_error": 0},
    )  # fmt: skip
    head = bytearray(container.encode_header(header))
    head[8] = version
    body_start = 10 + 1  # one-byte body length: the header is short
    head[body_start] = code
    struct.pack_into("<I", head, len(head) - 4, zlib.crc32(bytes(head[:-4])))
    try:
        parsed, _ = container.read_header(io.BytesIO(bytes(head)))
    except IntegrityError:
        return
    assert parsed.version == version
    assert version in (6, 7, 8, 9, 10, 11) or container.format_version(parsed.dtype) == version
    assert container.encode_header(parsed) == bytes(head)  # the version it was read as


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_damaged_int24_containers_fail_cleanly(int24_packed, data):
    damaged = bytearray(int24_packed)
    for _ in range(data.draw(st.integers(1, 4))):
        damaged[data.draw(st.integers(0, len(damaged) - 1))] = data.draw(st.integers(0, 255))
    damaged = bytes(damaged[: data.draw(st.integers(0, len(damaged)))])
    original = api.decompress_bytes(int24_packed)
    try:
        out = api.decompress_bytes(damaged)
    except QresError:
        return
    assert out == original


def test_int32_values_in_an_int24_stream_are_damage(tmp_path):
    """A block whose integers decode beyond 24 bits (a valid int32 block relabelled) is
    refused naming the block, exit 5, and no output is left."""
    ramp = np.full(4000, 1 << 24, dtype="<i4")
    packed = api.compress_bytes(ramp.tobytes(), StreamSpec("int32"), "esp32")
    reader = container.Reader(io.BytesIO(packed))
    header = attrs.evolve(reader.header, dtype="int24")
    out = io.BytesIO()
    writer = container.Writer(out, header)
    for _, block in reader.blocks():
        assert block.method == container.METHOD_PREDICTED
        writer.add(block, b"")
    writer.finish()
    with pytest.raises(IntegrityError, match="block 0: decoded samples out of the int24 range"):
        api.decompress_bytes(out.getvalue())
    path = tmp_path / "relabelled.qres"
    path.write_bytes(out.getvalue())
    done = run_qres("decompress", str(path), "-o", str(tmp_path / "out.raw"))
    assert done.returncode == 5 and len(done.stderr.decode().strip().splitlines()) == 1
    assert b"block 0" in done.stderr and not (tmp_path / "out.raw").exists()


def test_a_node_refuses_an_int24_source_before_it_writes_state(tmp_path):
    (node,) = make_nodes(tmp_path, 1, dtype="int24")
    done = run_qres("node", "run", "--profile", str(node["profile"]))
    lines = done.stderr.decode().strip().splitlines()
    assert done.returncode == 3 and len(lines) == 1 and "int24" in lines[0], done.stderr
    assert not (node["home"] / "data").exists()
