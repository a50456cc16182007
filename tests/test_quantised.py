"""Quantised blocks of bounded-error streams (method 3, format 10): the bound holds on any
samples (NaN, infinities, -0.0, subnormals, the type's limits), the integer grid matches a
pure-Python reference, the choice never codes larger than its candidates, and damage is
refused naming the block."""

from __future__ import annotations

import io
import zlib

import attrs
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from qres.codec import container, quantised
from qres.codec import files as api
from qres.codec import pipeline as codec
from qres.codec.container import METHOD_QUANTISED, Block
from qres.codec.samples import StreamSpec
from qres.kernel.errors import IntegrityError

INT_TYPES = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32"]
FLOAT_BOUNDS = st.one_of(
    st.sampled_from([5e-324, 1e-300, 1e-6, 0.05, 1.0, 1e6, 1e300, 1.7e308]),
    st.floats(1e-12, 1e12),
)


def _coder(dtype: str, channels: int, bound: float) -> codec.BlockCoder:
    settings_, _ = api.codec_settings("server", bound)
    return codec.BlockCoder(settings_, StreamSpec(dtype, channels))


def _within(x, y, bound: float) -> bool:
    x, y = x.astype(np.float64), y.astype(np.float64)
    same = (x == y) | (np.isnan(x) & np.isnan(y))
    with np.errstate(invalid="ignore"):
        return bool(np.all(same | (np.abs(x - y) <= bound)))


def _forced_round_trip(coder: codec.BlockCoder, block) -> bytes | None:
    """Code ``block`` as a quantised block whatever its size, decode it through the block
    decoder and return the decoded bytes (None when the candidate declines the block)."""
    found = coder._quantised(block, None)
    if found is None:
        return None
    payload, flags, decoded = found
    restored = coder.spec.to_bytes(decoded)
    record = Block(len(block), METHOD_QUANTISED, flags, zlib.crc32(restored), payload)
    assert coder.decode(0, record) == restored
    return restored


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["float32", "float64"]), st.integers(1, 3), st.data(), FLOAT_BOUNDS)
def test_quantised_float_blocks_hold_the_bound(dtype, channels, data, bound):
    frames = data.draw(st.integers(1, 200))
    block = data.draw(hnp.arrays(np.dtype(dtype), (frames, channels)))
    coder = _coder(dtype, channels, bound)
    restored = _forced_round_trip(coder, block)
    if restored is not None:
        back = np.frombuffer(restored, dtype).reshape(block.shape)
        assert _within(block, back, bound)
        assert np.array_equal(np.isnan(back), np.isnan(block))
    # and whatever the codec chooses for the whole stream
    raw = block.astype("<" + np.dtype(dtype).str[1:]).tobytes()
    packed = api.compress_bytes(raw, StreamSpec(dtype, channels), "server", max_error=bound)
    back = np.frombuffer(api.decompress_bytes(packed), block.dtype.newbyteorder("<"))
    assert _within(block.ravel(), back, bound)


def test_special_float_values_are_kept_and_the_grid_is_the_bound_s():
    x = np.array([[np.nan], [np.inf], [-np.inf], [-0.0], [5e-324], [1e20], [0.3], [0.31]])
    coder = _coder("float64", 1, 0.05)
    back = np.frombuffer(_forced_round_trip(coder, x), "<f8")
    assert np.isnan(back[0]) and back[1] == np.inf and back[2] == -np.inf
    assert back[3] == 0 and back[4] == 0 and abs(back[5] - 1e20) <= 0.05
    assert back[6] == back[7]  # one grid cell: the step uses (almost) the whole 2E
    assert quantised.step("float64", 0.05) == pytest.approx(0.1, rel=1e-4)
    # the closed loop's grid: 7 steps and a half under the bound from format 10, E/8 before
    widest = 7.5 * quantised.grid_step(0.05, 10)
    assert widest < 0.05 and widest == pytest.approx(0.05, rel=2**-7)
    assert quantised.grid_step(0.05, 9) == 0.05 / 8
    assert quantised.SINCE_VERSION == container.QUANTISED_BLOCKS == container.FORMAT_VERSION
    # NaNs come back with their own bits, not with whatever arithmetic on them gives
    nans = np.array([0x7FF8000000000123, 0xFFF4000000000001], dtype="<u8").view("<f8")
    block = np.concatenate([nans, [1.0, 2.0]]).reshape(-1, 1)
    back = np.frombuffer(_forced_round_trip(coder, block), "<u8")
    assert back[:2].tolist() == nans.view("<u8").tolist()
    # A quantised value beyond float64's range cannot come back: the candidate declines.
    assert _forced_round_trip(coder, np.array([[1.7e308], [0.0]])) is None


def _reference(x: int, bound: int, lo: int, hi: int) -> int:
    q = (x + bound) // (2 * bound + 1)
    return min(max(q * (2 * bound + 1), lo), hi)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(INT_TYPES), st.data())
def test_integer_grid_matches_the_python_reference(dtype, data):
    info = np.iinfo(dtype)
    most = min(1 << 62, int(info.max) - int(info.min))
    bound = data.draw(st.one_of(st.integers(1, 1100), st.integers(1, most)))
    values = data.draw(
        hnp.arrays(
            np.dtype(dtype),
            (data.draw(st.integers(1, 100)), 1),
            elements=st.one_of(
                st.sampled_from([int(info.min), int(info.max), 0, 1]),
                st.integers(int(info.min), int(info.max)),
            ),
        )
    )
    found = quantised.quantise(values, dtype, bound)
    if found is None:  # x + E would leave int64: only for int64 samples and huge bounds
        top = (1 << 63) - 1
        assert dtype == "int64" and max(2 * bound + 1, int(values.max()) + bound) > top
        return
    code, q = found
    assert code == 0 and q.dtype == values.dtype
    back = quantised.reconstruct(q, dtype, bound, (int(info.min), int(info.max)))
    expected = [_reference(int(v), bound, int(info.min), int(info.max)) for v in values.ravel()]
    assert back.ravel().tolist() == expected
    pairs = zip(expected, values.ravel().tolist(), strict=True)
    assert all(abs(int(b) - int(v)) <= bound for b, v in pairs)
    if bound <= 1100:
        coder = _coder(dtype, 1, bound)
        restored = _forced_round_trip(coder, values.astype(values.dtype.newbyteorder("<")))
        assert np.frombuffer(restored, values.dtype.newbyteorder("<")).tolist() == expected


def test_the_choice_is_never_larger_than_a_candidate():
    """A bounded block is the smallest of the closed loop, the quantised block and lossless
    coding: data on a coarse lattice with few values picks lossless at a bound finer than its
    steps, the quantised block at a coarse one, each within the bound."""
    rng = np.random.default_rng(5)
    steps = np.repeat(rng.integers(0, 40, 300), rng.integers(1, 60, 300))[:6000] * 9
    raw = steps.astype("<i2").tobytes()
    spec = StreamSpec("int16")
    methods = {}
    for bound in (1, 20):
        packed = api.compress_bytes(raw, spec, "server", max_error=bound)
        reader = container.Reader(io.BytesIO(packed))
        (_, block), *_ = list(reader.blocks())
        methods[bound] = (block.method, block.flags & codec.FLAG_LOSSLESS)
        back = np.frombuffer(api.decompress_bytes(packed), "<i2").astype(int)
        assert np.abs(back - steps).max() <= bound
        coder = _coder("int16", 1, bound)
        x = steps.astype("<i2").reshape(-1, 1)
        lossless = coder._predicted(x, None, 0, (0,))[0]
        assert len(block.payload) <= len(lossless)
        shortcut = coder._quantised(x, None)
        assert shortcut is None or len(block.payload) <= len(shortcut[0])
    assert methods[1] == (container.METHOD_PREDICTED, codec.FLAG_LOSSLESS)
    assert methods[20] == (METHOD_QUANTISED, 0)


@pytest.fixture(scope="module")
def quantised_file() -> bytes:
    rng = np.random.default_rng(5)
    x = np.repeat(rng.integers(0, 40, 300), rng.integers(1, 60, 300))[:6000] * 0.9
    packed = api.compress_bytes(x.astype("<f8").tobytes(), StreamSpec("float64"), max_error=2)
    reader = container.Reader(io.BytesIO(packed))
    assert [b.method for _, b in reader.blocks()] == [METHOD_QUANTISED]
    return packed


def _rewritten(packed: bytes, header=None, **changes) -> bytes:
    reader = container.Reader(io.BytesIO(packed))
    ((_, block),) = list(reader.blocks())
    out = io.BytesIO()
    writer = container.Writer(out, header or reader.header)
    writer.add(attrs.evolve(block, **changes), b"")
    writer.finish()
    return out.getvalue()


def test_damaged_quantised_blocks_are_refused(quantised_file):
    header = container.Reader(io.BytesIO(quantised_file)).header
    block = list(container.Reader(io.BytesIO(quantised_file)).blocks())[0][1]
    cases = {
        "method 3 in a format 9 file": _rewritten(quantised_file, attrs.evolve(header, version=9)),
        "quantised block in a lossless stream": _rewritten(
            quantised_file, attrs.evolve(header, codec={**header.codec, "max_error": 0})
        ),
        "bad sample type code 9": _rewritten(quantised_file, payload=b"\x09" + block.payload[1:]),
        "bad sample type code 0": _rewritten(quantised_file, payload=b"\x00" + block.payload[1:]),
        "lossless flag or no payload": _rewritten(quantised_file, flags=codec.FLAG_LOSSLESS),
    }
    for says, damaged in cases.items():
        with pytest.raises(IntegrityError, match=f"block 0: .*{says}"):
            api.decompress_bytes(damaged)


def test_info_names_quantised_blocks(quantised_file):
    from qres._api import summarize

    summary = summarize(io.BytesIO(quantised_file))
    assert summary["format_version"] == 10
    (block,) = summary["blocks"]
    assert block["method"] == "quantised"
    assert block["predictor"].endswith("(quantised)")
