"""Quantised blocks of bounded-error streams (method 3, format 10; grids on the channels' own
lattices, format 11): the bound holds on any samples (NaN, infinities, -0.0, subnormals, the
type's limits), the integer grid matches a pure-Python reference, a lattice grid's indices are
the lattice codes' floor division, sizes on a decimal lattice fall as the bound grows, the
choice never codes larger than its candidates, and damage is refused naming the block."""

from __future__ import annotations

import io
import math
import zlib

import attrs
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
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


def _forced_round_trip(coder: codec.BlockCoder, block, lattice: bool = False) -> bytes | None:
    """Code ``block`` as a quantised block whatever its size (on the channels' own lattices
    when ``lattice``), decode it through the block decoder and return the decoded bytes (None
    when the candidate declines the block)."""
    if lattice:
        grids = coder._on_lattices(block)
    else:
        grids = quantised.quantise(block, coder.work.dtype, float(coder.settings.max_error))
    found = coder._quantised(block, grids, None)
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
    assert quantised.SINCE_VERSION == container.QUANTISED_BLOCKS == 10
    assert quantised.LATTICE_SINCE == container.LATTICE_GRIDS == container.FORMAT_VERSION == 11
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
    assert summary["format_version"] == 11
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
    lattice = quantised.LATTICE
    assert quantised.may_win({}) == quantised.CANDIDATES
    kept = quantised.may_win({closed: 1000, quant: 1300, lattice: 1400, lossless: 5000})
    assert kept == {closed, quant}
    sizes = {closed: 1000, quant: 1400, lattice: 1330, lossless: 5000}
    assert quantised.may_win(sizes) == {closed, lattice}
    # Of the two grids only one is coded whole: the lattices' where it is smaller on the
    # sample by more than 1/64 (plus 8 bytes), else the bound's.
    sizes = {closed: 1000, quant: 1100, lattice: 1050, lossless: 5000}
    assert quantised.may_win(sizes) == {closed, lattice}
    assert quantised.may_win({**sizes, lattice: 1150}) == {closed, quant}
    assert quantised.may_win({**sizes, lattice: 1090}) == {closed, quant}
    assert quantised.may_win({**sizes, lattice: 1100}) == {closed, quant}
    # Small samples are noisy in bytes: an absolute slack keeps close small ones.
    assert quantised.may_win({closed: 10, quant: 40, lattice: 90, lossless: 500}) == {closed, quant}
    # A candidate the sample could not code (no mapping, no lattice) is kept: the block may
    # have one.
    assert quantised.may_win({closed: 1000, lossless: 5000}) == {closed, quant, lattice}


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


# -- grids on the channels' own lattices (format 11) -------------------------------------------


def _readings(frames: int = 6000, channels: int = 3, seed: int = 3):
    """Soil-moisture-like float64 readings: random walks of 0.001 steps, plateaus between the
    moves, converted by a formula that leaves some values (a fifth of the codes) an ulp above
    their decimal, as the corpus's soil moisture has them; and the lattice codes."""
    rng = np.random.default_rng(seed)
    moves = rng.integers(-1, 2, (frames, channels)) * (rng.random((frames, channels)) < 0.3)
    codes = 250 + np.cumsum(moves, axis=0) + 40 * np.arange(channels)
    x = codes / 1000
    return np.where(codes % 5 == 1, np.nextafter(x, np.inf), x), codes


def test_lattice_grid_indices_are_the_lattice_codes_floor_division():
    """On readings of 3 decimals at bound 0.0025 the grid is k = 5 lattice steps (2 steps
    either side), ``q = floor((n + 2) / 5)`` of the codes ``n``, recorded with offset 0."""
    x, codes = _readings(500, 2)
    coder = _coder("float64", 2, 0.0025)
    found = coder._on_lattices(x)
    assert found is not None
    code, q, recorded = found
    assert code == 1 and np.array_equal(q, (codes + 2) // 5)
    assert [offset for _, offset in recorded] == [0.0, 0.0]
    assert all(step == pytest.approx(0.005, rel=1e-12) for step, _ in recorded)
    back = np.frombuffer(_forced_round_trip(coder, x, lattice=True), "<f8").reshape(x.shape)
    assert np.abs(back - x).max() <= 0.0025
    assert np.array_equal(np.rint(back * 1000).astype(int), 5 * ((codes + 2) // 5))
    # a bound finer than half a lattice step keeps the codes themselves (k = 1)
    found = _coder("float64", 2, 0.0004)._on_lattices(x)
    assert np.array_equal(found[1], codes)


def test_sizes_on_a_decimal_lattice_fall_as_the_bound_grows():
    """The defect format 11 fixes: on readings of 3 decimals a grid of step 2E that is no
    multiple of 0.001 broke the lattice (soil moisture cost more at 1e-3 of its range than at
    1e-5). Now every larger bound costs at most what a smaller one does, and no bound costs
    more than lossless coding."""
    x, _ = _readings()
    raw = x.astype("<f8").tobytes()
    spec = StreamSpec("float64", 3)
    lossless = len(api.compress_bytes(raw, spec, "server"))
    sizes = []
    for bound in (1e-6, 1e-5, 1e-4, 3e-4, 4.9e-4, 7e-4, 1e-3, 1.5e-3, 2e-3, 3e-3, 5e-3, 1e-2):
        packed = api.compress_bytes(raw, spec, "server", max_error=bound)
        back = np.frombuffer(api.decompress_bytes(packed), "<f8").reshape(x.shape)
        assert np.abs(back - x).max() <= bound
        sizes.append(len(packed))
    assert sizes == sorted(sizes, reverse=True), sizes
    # a bounded stream's header also carries the bound: a few bytes more than a lossless one
    assert sizes[0] <= lossless + 16 and sizes[-1] < sizes[0] // 2, (sizes, lossless)


def _lattice_floats(dtype: str, frames: int):
    """Float samples on a lattice ``a + n*d`` (decimal or a converter's scale), with some of
    the special values mixed in."""
    specials = st.sampled_from(
        [math.nan, -math.nan, math.inf, -math.inf, -0.0, 0.0, 5e-324, 1e-310, -2.2e-308]
    )

    @st.composite
    def build(draw):
        d = draw(st.sampled_from([1.0, 0.1, 0.01, 0.001, 0.05, 10 / 4095, 3.3 / 1023, 1e-6]))
        a = draw(st.sampled_from([0.0, d / 2, -3 * d]))
        codes = draw(hnp.arrays(np.int64, frames, elements=st.integers(-5000, 5000)))
        x = (codes * d + a).astype(dtype)
        if draw(st.booleans()):
            x = np.array([float(f"{v:.6g}") for v in x]).astype(dtype)
        for i in draw(st.lists(st.integers(0, frames - 1), max_size=4)):
            x[i] = draw(specials)
        return x

    return build()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["float32", "float64"]), st.integers(1, 3), st.data(), FLOAT_BOUNDS)
def test_lattice_grids_hold_the_bound_and_keep_special_values(dtype, channels, data, bound):
    """Forced onto the channels' lattice grids, a block decodes within the bound, NaNs with
    their own bits and infinities as themselves; the stream the codec chooses holds it too."""
    frames = data.draw(st.integers(2, 120))
    block = np.stack([data.draw(_lattice_floats(dtype, frames)) for _ in range(channels)], 1)
    nan_payload = np.array([0x7FF8000000000123], dtype="<u8").view("<f8")[0]
    if dtype == "float64" and data.draw(st.booleans()):
        block[0, 0] = nan_payload
    coder = _coder(dtype, channels, bound)
    restored = _forced_round_trip(coder, block, lattice=True)
    event("lattice grid" if restored is not None else "no lattice grid")
    if restored is not None:
        back = np.frombuffer(restored, dtype).reshape(block.shape)
        assert _within(block, back, bound)
        isnan = np.isnan(block)
        assert np.array_equal(np.isnan(back), isnan)
        bits = "<u8" if dtype == "float64" else "<u4"
        assert np.array_equal(back[isnan].view(bits), block[isnan].astype(dtype).view(bits))
        assert np.array_equal(back[np.isinf(block)], block[np.isinf(block)])
    raw = block.astype("<" + np.dtype(dtype).str[1:]).tobytes()
    packed = api.compress_bytes(raw, StreamSpec(dtype, channels), "server", max_error=bound)
    back = np.frombuffer(api.decompress_bytes(packed), block.dtype.newbyteorder("<"))
    assert _within(block.ravel(), back, bound)


@pytest.fixture(scope="module")
def lattice_file() -> bytes:
    x, _ = _readings(3000, 2)
    packed = api.compress_bytes(x.astype("<f8").tobytes(), StreamSpec("float64", 2), max_error=3e-4)
    reader = container.Reader(io.BytesIO(packed))
    ((_, block),) = list(reader.blocks())
    assert block.method == METHOD_QUANTISED and block.payload[0] & quantised.LATTICE_FLAG
    return packed


def test_damaged_lattice_blocks_are_refused(lattice_file):
    header = container.Reader(io.BytesIO(lattice_file)).header
    block = list(container.Reader(io.BytesIO(lattice_file)).blocks())[0][1]
    payload = block.payload
    step = quantised.GRID.size
    cases = {
        "recorded grids in a format 10 float64 stream": _rewritten(
            lattice_file, attrs.evolve(header, version=10)
        ),
        "bad sample type code 0": _rewritten(lattice_file, payload=b"\x80" + payload[1:]),
        "grids are cut short": _rewritten(lattice_file, payload=payload[: 1 + step]),
        "bad grid .step 0.0": _rewritten(
            lattice_file, payload=payload[:1] + quantised.GRID.pack(0.0, 0.0) + payload[1 + step :]
        ),
        "bad grid .step nan": _rewritten(
            lattice_file,
            payload=payload[:1] + quantised.GRID.pack(math.nan, 0.0) + payload[1 + step :],
        ),
        "bad grid .step -0.005": _rewritten(
            lattice_file,
            payload=payload[:1] + quantised.GRID.pack(-0.005, 0.0) + payload[1 + step :],
        ),
        "offset inf": _rewritten(
            lattice_file,
            payload=payload[:1] + quantised.GRID.pack(0.005, math.inf) + payload[1 + step :],
        ),
        "fails its checksum": _rewritten(
            lattice_file,
            payload=payload[:1] + quantised.GRID.pack(0.006, 0.0) + payload[1 + step :],
        ),
    }
    for says, damaged in cases.items():
        with pytest.raises(IntegrityError, match=f"block 0: .*{says}"):
            api.decompress_bytes(damaged)
    # An integer stream never records grids: the flag there is damage too, in any version.
    rng = np.random.default_rng(5)
    steps = np.repeat(rng.integers(0, 40, 300), rng.integers(1, 60, 300))[:6000] * 9
    ints = api.compress_bytes(steps.astype("<i2").tobytes(), StreamSpec("int16"), max_error=20)
    assert ints[8] == 10
    (_, block), *_ = list(container.Reader(io.BytesIO(ints)).blocks())
    assert block.method == METHOD_QUANTISED
    flagged = bytes([block.payload[0] | quantised.LATTICE_FLAG]) + block.payload[1:]
    header = container.Reader(io.BytesIO(ints)).header
    for version in (10, 11):
        damaged = _rewritten(ints, attrs.evolve(header, version=version), payload=flagged)
        says = f"block 0: .*recorded grids in a format {version} int16 stream"
        with pytest.raises(IntegrityError, match=says):
            api.decompress_bytes(damaged)


def test_format_10_float_streams_never_record_grids():
    """A coder of format 10 (what older files were written with) offers no lattice grid."""
    x, _ = _readings(3000, 2)
    settings_, _ = api.codec_settings("server", 3e-4)
    old = codec.BlockCoder(settings_, StreamSpec("float64", 2), version=10)
    record, _ = old.encode(x.astype("<f8").tobytes())
    assert not (record.method == METHOD_QUANTISED and record.payload[0] & quantised.LATTICE_FLAG)
    new = _coder("float64", 2, 3e-4)
    record, _ = new.encode(x.astype("<f8").tobytes())
    assert record.method == METHOD_QUANTISED and record.payload[0] & quantised.LATTICE_FLAG
