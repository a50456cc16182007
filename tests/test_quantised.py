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
    found = coder._quantised(
        block, quantised.quantise(block, coder.work.dtype, float(coder.settings.max_error)), None
    )
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
        shortcut = coder._quantised(
            x, quantised.quantise(x, coder.work.dtype, float(coder.settings.max_error)), None
        )
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


@pytest.mark.parametrize("frames", [0, 1, 8191, 8192, 9694, 29856, 108000, 262144, 10**7])
def test_screen_spans_are_a_spread_sample_of_a_long_block(frames):
    """The screen samples a block of 8192 frames or more in 2 to 8 spans of 512 frames or
    more, spread over the whole block, together at most an eighth of it (and of 16384 frames)."""
    spans = quantised.screen_spans(frames)
    if frames < 8192:
        assert spans == []
        return
    assert 2 <= len(spans) <= 8
    assert all(b - a >= 512 for a, b in spans)
    assert all(b1 <= a2 for (_, b1), (a2, _) in zip(spans, spans[1:], strict=False))
    assert spans[0][0] == 0 and spans[-1][1] <= frames
    assert spans[-1][0] >= frames // 2  # spread over the block, not bunched at its start
    total = sum(b - a for a, b in spans)
    assert total <= min(frames // 8, 16384)


def test_may_win_keeps_the_band_and_what_the_sample_did_not_measure():
    closed, quant, lossless = quantised.CLOSED, quantised.QUANTISED, quantised.LOSSLESS
    assert quantised.may_win({}) == quantised.CANDIDATES
    kept = quantised.may_win({closed: 1000, quant: 1300, lossless: 5000})
    assert kept == {closed, quant}
    assert quantised.may_win({closed: 1000, quant: 1400, lossless: 5000}) == {closed}
    # Small samples are noisy in bytes: an absolute slack keeps close small ones.
    assert quantised.may_win({closed: 10, quant: 40, lossless: 500}) == {closed, quant}
    # A candidate the sample could not code (no mapping) is kept: the block may have one.
    assert quantised.may_win({closed: 1000, lossless: 5000}) == {closed, quant}


def _long_block():
    rng = np.random.default_rng(11)
    t = np.arange(40000)
    wave = 3000 * np.sin(t / 50.0) + rng.normal(0, 30, t.size)
    return np.round(wave).astype("<i2").reshape(-1, 1)


def test_the_screen_skips_a_candidate_that_cannot_win(monkeypatch):
    """On a long noisy block at a coarse bound, lossless coding is screened out: no whole
    lossless coding of the samples runs, and the block is what the full choice gives."""
    block = _long_block()
    coder = _coder("int16", 1, 64)
    whole = []
    original = codec.BlockCoder._predicted

    def spy(self, x, grid_step, bound, codes):
        if len(x) == len(block) and not bound and self is coder:
            whole.append(codes)
        return original(self, x, grid_step, bound, codes)

    monkeypatch.setattr(codec.BlockCoder, "_predicted", spy)
    screened = coder.encode(block.tobytes())
    assert whole == []
    monkeypatch.setattr(quantised, "may_win", lambda sizes: quantised.CANDIDATES)
    assert coder.encode(block.tobytes()) == screened
    assert whole  # the unscreened choice codes lossless whole


def test_the_screen_falls_back_when_its_candidates_break_the_bound(monkeypatch):
    """When every candidate the screen kept fails (here the quantised one, forced), the
    others are coded: the block is the one the full choice makes without that candidate."""
    block = _long_block()
    coder = _coder("int16", 1, 16)
    monkeypatch.setattr(codec.BlockCoder, "_quantised", lambda self, *args: None)
    monkeypatch.setattr(quantised, "may_win", lambda sizes: frozenset({quantised.QUANTISED}))
    fallen = coder.encode(block.tobytes())
    monkeypatch.setattr(quantised, "may_win", lambda sizes: quantised.CANDIDATES)
    assert coder.encode(block.tobytes()) == fallen
    record, restored = fallen
    assert record.method == container.METHOD_PREDICTED and not record.flags & codec.FLAG_LOSSLESS
    back = np.frombuffer(restored, "<i2").astype(int)
    assert np.abs(back - block[:, 0].astype(int)).max() <= 16
