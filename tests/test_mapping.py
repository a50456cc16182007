"""Integer mappings of float samples: exact round trips for every bit pattern, decimal lattices
found where the data has them, correction streams, a side record that never crashes the
decoder, determinism, and the bounded-error grid."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from qres import api, mapping
from qres.errors import IntegrityError
from qres.samples import StreamSpec

FAST = settings(max_examples=60, deadline=None)


def _round_trip(block: np.ndarray, grid_step: float | None = None) -> mapping.Mapped:
    """Map ``block`` (frames, channels), parse its side record, map back; return the mapping."""
    spec = StreamSpec(block.dtype.name, block.shape[1])
    mapped = mapping.to_integers(block, spec, grid_step)
    assert mapped is not None
    assert mapped.ints.dtype == np.int64 and mapped.ints.shape == block.shape[::-1]
    side, pos = mapping.read_side(memoryview(mapped.side), 0, spec, block.shape[0])
    assert pos == len(mapped.side), "the side record is self-delimiting"
    assert len(side.extra_lengths) == len(mapped.extras)
    assert all(len(e) == n for e, n in zip(mapped.extras, side.extra_lengths, strict=True))
    back = mapping.from_integers(mapped.ints, side, list(mapped.extras), spec, grid_step)
    if grid_step is None:
        assert back.tobytes() == block.tobytes()
    return mapped


def _kinds(mapped: mapping.Mapped, dtype: str, channels: int) -> list[int]:
    spec = StreamSpec(dtype, channels)
    frames = mapped.ints.shape[1]
    side, _ = mapping.read_side(memoryview(mapped.side), 0, spec, frames)
    return [m.kind for m in side.maps]


def _side(mapped: mapping.Mapped, dtype: str, frames: int, channels: int = 1) -> mapping.Side:
    return mapping.read_side(memoryview(mapped.side), 0, StreamSpec(dtype, channels), frames)[0]


# -- arbitrary bit patterns ----------------------------------------------------------------------


@st.composite
def float_blocks(draw, special_share: bool = True):
    """Blocks whose samples are any bit pattern (NaN payloads, -0.0, infinities, subnormals),
    decimals, or decimals with ulp noise, mixed."""
    dtype = draw(st.sampled_from(["float32", "float64"]))
    frames = draw(st.integers(0, 300))
    channels = draw(st.integers(1, 3))
    width = 32 if dtype == "float32" else 64
    raw = draw(hnp.arrays(f"<u{width // 8}", (frames, channels)))
    x = raw.view(f"<f{width // 8}").copy()
    style = draw(st.sampled_from(["bits", "decimal", "noisy"]))
    if style != "bits" and frames:
        seed = draw(st.integers(0, 2**32 - 1))
        rng = np.random.default_rng(seed)
        d = draw(st.integers(0, 6))
        k = np.cumsum(rng.integers(-50, 51, size=(frames, channels)), axis=0)
        dec = (k / 10.0**d).astype(dtype)
        keep = rng.random((frames, channels)) < 0.03  # a few raw bit patterns stay
        x = np.where(keep, x, dec)
        if style == "noisy":
            noise = rng.random((frames, channels)) < 0.1
            x = np.where(noise, np.nextafter(x, np.inf, dtype=x.dtype), x)
    return x


@FAST
@given(float_blocks())
def test_any_float_block_round_trips_bit_for_bit(block):
    _round_trip(block)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_special_values_round_trip(dtype):
    wide = [0.0, -0.0, np.inf, -np.inf, np.nan, 1.5, -2.25, 1e-310, -5e-324, 3.4e38, 1e300]
    if dtype == "float32":
        wide[-3:] = [1e-40, -1e-45, 3.4e38]  # float32 subnormals and its largest finite range
    specials = np.array(wide, dtype=dtype)
    bits = specials.view(np.uint32 if dtype == "float32" else np.uint64).copy()
    payload = np.array(0x7FC00001 if dtype == "float32" else 0x7FF8000000000123, bits.dtype)
    bits = np.append(bits, [payload, payload | np.array(1, bits.dtype) << (bits.itemsize * 8 - 1)])
    block = np.tile(bits.view(dtype), 20).reshape(-1, 1)
    _round_trip(block)
    # The same values inside decimal data keep the channel decimal: they become corrections.
    rng = np.random.default_rng(1)
    x = (np.cumsum(rng.integers(-9, 10, 2000)) / 100.0).astype(dtype)
    x[::97] = np.resize(bits.view(dtype), len(x[::97]))
    mapped = _round_trip(x.reshape(-1, 1))
    assert _kinds(mapped, dtype, 1) == [mapping.KIND_DECIMAL]
    assert _side(mapped, dtype, len(x)).maps[0].flags & mapping.FLAG_ULP_CORRECTION


def test_empty_and_single_frame_blocks():
    for dtype in ("float32", "float64"):
        _round_trip(np.zeros((0, 2), dtype=dtype))
        _round_trip(np.array([[1.25, -0.0]], dtype=dtype))


def test_random_floats_use_the_bit_view():
    rng = np.random.default_rng(2)
    x = rng.standard_normal(4000).reshape(-1, 1)
    mapped = _round_trip(x)
    assert _kinds(mapped, "float64", 1) == [mapping.KIND_FLOAT_BITS]


# -- decimals and lattices -------------------------------------------------------------------


def test_decimals_with_repr_noise_cost_only_a_sparse_ulp_stream():
    rng = np.random.default_rng(3)
    k = 1000 + np.cumsum(rng.integers(-20, 21, 20000))
    x = k / 100.0
    noisy = rng.random(len(x)) < 0.07
    x[noisy] = np.nextafter(x[noisy], np.inf)  # like -6.5600000000000005
    mapped = _round_trip(x.reshape(-1, 1))
    cmap = _side(mapped, "float64", len(x)).maps[0]
    assert (cmap.kind, cmap.decimals) == (mapping.KIND_DECIMAL, 2)
    assert np.array_equal(np.diff(mapped.ints[0]), np.diff(k)), "the predictor sees k"
    (ulps,) = mapped.extras
    assert np.count_nonzero(ulps) == np.count_nonzero(noisy)
    assert np.abs(ulps).max() <= 2


def test_mixed_two_and_three_decimals_split_into_lattice_segments():
    rng = np.random.default_rng(4)
    k2 = 95000 + np.cumsum(rng.integers(-9, 10, 6000))  # hundredths
    k3 = 10 * k2[-1] + np.cumsum(rng.integers(-90, 91, 6000))  # thousandths
    x = np.concatenate([k2 / 100.0, k3 / 1000.0, (k3[-1] // 10 + k2 - k2[0]) / 100.0])
    mapped = _round_trip(x.reshape(-1, 1))
    cmap = _side(mapped, "float64", len(x)).maps[0]
    assert cmap.decimals == 3
    assert len(cmap.starts) >= 3
    assert {10.0, 1.0} <= set(cmap.steps.tolist()), "hundredths run on a step of 10"
    step = np.abs(np.diff(mapped.ints[0][:6000])).max()
    assert step <= 9, "the hundredths part is not scaled up by the third decimal"


def test_affine_lattice_with_an_irrational_step_is_found():
    # PigCVP-like: ADC counts times an inexact scale, printed with 6 decimals, as float32.
    rng = np.random.default_rng(5)
    counts = 3000 + np.cumsum(rng.integers(-6, 7, 50000))
    x = np.round(counts * (500 / 131072), 6).astype(np.float32)
    mapped = _round_trip(x.reshape(-1, 1))
    cmap = _side(mapped, "float32", len(x)).maps[0]
    assert cmap.kind == mapping.KIND_DECIMAL
    assert cmap.steps[0] == pytest.approx(1e6 * 500 / 131072, rel=1e-6)
    diffs = np.diff(mapped.ints[0])
    assert np.mean(diffs == np.diff(counts)) > 0.999, "the predictor sees the ADC counts"
    corrections = [np.count_nonzero(e) for e in mapped.extras]
    assert sum(corrections) < 0.005 * len(x), corrections


def test_series_with_their_own_scale_and_significant_digits():
    # ACSF1-like: z-normalised series (x = (v - mean) / std) printed with %.8g.
    rng = np.random.default_rng(6)
    parts, truth = [], []
    for _ in range(4):
        v = np.abs(np.cumsum(rng.integers(-40, 41, 1500)))
        v[::4] += 200000  # spikes far from the baseline
        z = (v - v.mean()) / v.std()
        parts.append([float(f"{t:.8g}") for t in z])
        truth.append(v)
    x = np.concatenate(parts)
    mapped = _round_trip(x.reshape(-1, 1))
    cmap = _side(mapped, "float64", len(x)).maps[0]
    assert cmap.kind == mapping.KIND_DECIMAL and cmap.precision == 8
    assert 4 <= len(cmap.starts) <= 12
    n = mapped.ints[0]
    hits = [np.mean(np.diff(n[i * 1500 : (i + 1) * 1500]) == np.diff(truth[i])) for i in range(4)]
    assert min(hits) > 0.95, hits


def test_lattice_beats_the_plain_decimal_view_through_the_coder():
    from qres.config import Location
    from qres.plugins import create

    coder = create("coder", {"use": "rice"}, Location("t", "coder"))
    rng = np.random.default_rng(7)
    counts = np.cumsum(rng.integers(-3, 4, 30000))
    x = np.round(counts * 0.0076293945, 6)
    mapped = _round_trip(x.reshape(-1, 1))
    lattice = len(coder.encode(np.diff(mapped.ints[0])))
    plain = len(coder.encode(np.diff(np.rint(x * 1e6).astype(np.int64))))
    assert lattice < 0.6 * plain


# -- side record -----------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=200),
    st.sampled_from(["float32", "float64", "int16"]),
    st.integers(1, 3),
    st.integers(0, 1000),
)
def test_read_side_of_random_bytes_raises_only_integrity_errors(data, dtype, channels, frames):
    spec = StreamSpec(dtype, channels)
    try:
        side, pos = mapping.read_side(memoryview(data), 0, spec, frames)
    except IntegrityError:
        return
    assert pos <= len(data)
    assert len(side.maps) == channels
    assert all(n == frames for n in side.extra_lengths)


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 8))
def test_damaged_side_records_fail_cleanly(seed, flips):
    rng = np.random.default_rng(seed)
    counts = np.cumsum(rng.integers(-5, 6, 3000))
    x = np.round(counts * 0.0123456789, 6)
    x[rng.integers(0, len(x), 5)] = np.nan
    spec = StreamSpec("float64", 1)
    mapped = mapping.to_integers(x.reshape(-1, 1), spec, None)
    side = bytearray(mapped.side)
    for _ in range(flips):
        side[rng.integers(0, len(side))] ^= 1 << int(rng.integers(0, 8))
    cut = bytes(side[: rng.integers(0, len(side) + 1)]) if seed % 3 == 0 else bytes(side)
    try:
        parsed, _ = mapping.read_side(memoryview(cut), 0, spec, len(x))
    except IntegrityError:
        return
    extras = [np.resize(e, n) for e, n in zip(mapped.extras, parsed.extra_lengths, strict=False)]
    extras += [np.zeros(len(x), np.int64)] * (len(parsed.extra_lengths) - len(extras))
    try:  # decoding garbage gives garbage (the block CRC catches it), never a crash
        out = mapping.from_integers(mapped.ints, parsed, extras, spec, None)
    except IntegrityError:
        return
    assert out.shape == (len(x), 1)


def test_side_record_rejects_counts_beyond_the_block():
    x = (np.arange(100) / 10.0).reshape(-1, 1)
    spec = StreamSpec("float64", 1)
    mapped = mapping.to_integers(x, spec, None)
    with pytest.raises(IntegrityError):
        mapping.read_side(memoryview(mapped.side), 0, spec, 0)
    with pytest.raises(IntegrityError):
        mapping.read_side(memoryview(mapped.side[:-1]), 0, spec, 100)


# -- determinism and bounded error -------------------------------------------------------------


def test_mapping_is_deterministic():
    rng = np.random.default_rng(8)
    parts = [np.round(np.cumsum(rng.integers(-9, 10, 3000)) * s, 7) for s in (0.013, 0.0171)]
    x = np.concatenate(parts).reshape(-1, 1)
    first = mapping.to_integers(x, StreamSpec("float64"), None)
    again = mapping.to_integers(x.copy(), StreamSpec("float64"), None)
    assert first.side == again.side
    assert np.array_equal(first.ints, again.ints)
    assert all(np.array_equal(a, b) for a, b in zip(first.extras, again.extras, strict=True))


@settings(max_examples=20, deadline=None)
@given(
    st.integers(0, 2**32 - 1),
    st.sampled_from(["float32", "float64"]),
    st.sampled_from([1e-3, 0.05, 2.0]),
)
def test_bounded_error_holds_through_the_codec(seed, dtype, bound):
    rng = np.random.default_rng(seed)
    x = np.cumsum(rng.standard_normal(3000)).astype(dtype)
    x[rng.integers(0, len(x), 3)] = [np.nan, np.inf, -0.0]
    spec = StreamSpec(dtype)
    packed = api.compress_bytes(x.tobytes(), spec, profile="server", max_error=bound)
    y = np.frombuffer(api.decompress_bytes(packed), dtype=dtype).astype(np.float64)
    wide = x.astype(np.float64)
    finite = np.isfinite(wide)
    assert np.array_equal(np.isfinite(y), finite)
    assert np.all(np.abs(wide[finite] - y[finite]) <= bound)
    assert np.array_equal(np.isnan(y), np.isnan(wide))
