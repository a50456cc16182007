"""Integer mappings of float samples: exact round trips for every bit pattern, decimal lattices
found where the data has them, correction streams, a side record that never crashes the
decoder, determinism, and the bounded-error grid."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from qres.codec import files as api
from qres.codec import mapping
from qres.codec.samples import StreamSpec
from qres.kernel.errors import IntegrityError

FAST = settings(max_examples=60, deadline=None)


def _round_trip(
    block: np.ndarray, grid_step: float | None = None, run_tables: bool = True
) -> mapping.Mapped:
    """Map ``block`` (frames, channels), parse its side record, map back; return the mapping.
    ``run_tables``: as a block of the newest format (runs of non-finite samples in run
    tables, shifted bit views), else as one of format 10 (runs verbatim)."""
    spec = StreamSpec(block.dtype.name, block.shape[1])
    mapped = mapping.to_integers(block, spec, grid_step, version=None if run_tables else 10)
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
    styles = ["bits", "decimal", "noisy", "gaps", "significant", "scaled", "levels"]
    style = draw(st.sampled_from(styles))
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
        if style == "significant":
            # P significant digits over many decades, as '%.{P}g' text parsed to the type
            digits = draw(st.integers(1, 9))
            logs = np.cumsum(rng.normal(0, 0.05, (frames, channels)), axis=0) - 7
            signs = np.where(rng.random((frames, channels)) < 0.1, -1, 1)
            text = [float(f"%.{digits}g" % v) for v in (signs * 10.0**logs).ravel()]
            x = np.where(keep, x, np.array(text).reshape(frames, channels).astype(dtype))
        if style == "scaled":
            # Converter codes times a scale that is no power of ten, plus an offset (kind 7),
            # with the raw bit patterns kept above and -0.0, subnormals and infinities.
            scale = draw(st.sampled_from([10 / 4095, 5 / 16384, 0.0123456789, 3 / 7, 1e-300]))
            offset = draw(st.sampled_from([0.0, 0.5, -0.25, 1 / 3]))
            x = np.where(keep, x, ((k + offset) * scale).astype(dtype))
            specials = np.array([-0.0, 1e-310, 1e-40, -np.inf, np.inf], dtype=dtype)
            x[rng.integers(0, frames, 3)] = rng.choice(specials, (3, channels))
        if style == "levels":
            # Few distinct values, unevenly spread (the dictionary, kind 8), -0.0 among them.
            levels = np.array([0.0, -0.0, 1e-300, 0.37, 5.0, 1e4, -np.inf], dtype=dtype)
            x = np.where(keep, x, levels[rng.integers(0, len(levels), (frames, channels))])
        if style == "gaps":
            # Runs of NaN (any payload), infinities, and runs touching either end.
            signed = np.int32 if width == 32 else np.int64
            specials = np.array([np.nan, np.inf, -np.inf], dtype=dtype).view(signed)
            specials = np.append(specials, np.array([-1, specials[0] | 5], dtype=signed))
            for _ in range(draw(st.integers(1, 6))):
                start = draw(st.integers(0, frames - 1))
                stop = min(frames, start + draw(st.integers(1, 40)))
                c = draw(st.integers(0, channels - 1))
                pattern = specials[draw(st.integers(0, len(specials) - 1))]
                x[start:stop, c] = np.array(pattern, signed).view(dtype)
    return x


@FAST
@given(float_blocks(), st.booleans())
def test_any_float_block_round_trips_bit_for_bit(block, run_tables):
    _round_trip(block, run_tables=run_tables)


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
    # The same values inside decimal data keep the channel decimal: the non-finite ones are
    # kept as runs (a run table, kind 9; verbatim runs, kind 5, before format 11), the others
    # (-0.0, subnormals, huge values) become corrections.
    rng = np.random.default_rng(1)
    x = (np.cumsum(rng.integers(-9, 10, 2000)) / 100.0).astype(dtype)
    x[::97] = np.resize(bits.view(dtype), len(x[::97]))
    for run_tables, kind in ((True, mapping.KIND_RUN_TABLE), (False, mapping.KIND_RUNS)):
        mapped = _round_trip(x.reshape(-1, 1), run_tables=run_tables)
        assert _kinds(mapped, dtype, 1) == [kind]
        entry = _side(mapped, dtype, len(x)).maps[0]
        assert entry.inner.kind == mapping.KIND_DECIMAL
        assert entry.inner.flags & mapping.FLAG_ULP_CORRECTION
        runs = entry.run_count if run_tables else len(entry.runs[0])
        assert runs == np.count_nonzero(~np.isfinite(x))


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
    from qres.kernel.config import Location
    from qres.kernel.plugins import create

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
    st.sampled_from(["float32", "float64", "int16", "uint32", "int64"]),
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
    x = np.arange(100) / 10.0
    spec = StreamSpec("float64", 1)
    cmap = mapping._decimal_channel(x, "float64")[1]
    side = mapping._side_bytes([cmap])
    with pytest.raises(IntegrityError):
        mapping.read_side(memoryview(side), 0, spec, 0)
    with pytest.raises(IntegrityError):
        mapping.read_side(memoryview(side[:-1]), 0, spec, 100)


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


# -- the numpy reference of the compiled lattice search ------------------------------------------
# The encoder's lattice search runs in qres/codec/_mapping_kernels.pyx. This is the numpy
# formulation it was written from (elementwise IEEE-754 operations, left-to-right sums): the
# kernels must give the same floats bit for bit, or the codec's bytes would change.


def ref_round_significant(t, precision: int):
    """``t`` rounded half-even to ``precision`` significant digits (numpy reference)."""
    if precision >= mapping.NO_ROUNDING:
        return np.rint(t)
    pow10 = mapping._pow10()
    digits = np.searchsorted(pow10[:17], np.abs(t), side="right")
    quantum = pow10[np.maximum(digits - precision, 0)]
    return np.rint(t / quantum) * quantum


def ref_approx_gcd(x: float, y: float, tol: float) -> float:
    """Euclid's algorithm on reals: the largest step that both are (nearly) multiples of."""
    x, y = max(x, y), min(x, y)
    for _ in range(64):
        if y <= tol:
            break
        x, y = y, abs(x - y * round(x / y))
    return x


def ref_refine_step(gaps, tol, step: float):
    """Improve ``step`` from the gaps it explains (``tol``: each gap's rounding noise). Sums
    over chains of consecutive gaps are exact up to the noise at the chain's ends, so the step
    gets sharper as longer gaps become trustworthy. Returns the step, its uncertainty and the
    mask of gaps that contradict it."""
    err = float(tol.max())
    for _ in range(16):
        m = np.rint(gaps / step)
        trusted_m = max(1.0, 0.25 * step / err)
        fits = (m >= 1) & (np.abs(gaps - m * step) <= tol + m * err)
        use = fits & (m <= trusted_m)
        total_m = mapping._total(m[use])
        if total_m <= 0:
            return step, err, ~fits
        heads = use.copy()
        heads[1:] &= ~use[:-1]
        new = mapping._total(gaps[use]) / total_m
        err = max(mapping._total(tol[heads]) / total_m, abs(new) * 1e-15)
        done = abs(new - step) <= 1e-13 * step and trusted_m >= float(m.max())
        step = new
        if done:
            break
    m = np.rint(gaps / step)
    return step, err, ~((m >= 1) & (np.abs(gaps - m * step) <= tol + m * err))


def ref_lattice_step(values, precision: int) -> tuple[float, float] | None:
    """The coarsest lattice step that the distinct values of a window sit on (up to rounding
    to ``precision`` digits and a few outliers) and its uncertainty, or None."""
    u = np.unique(values)
    if len(u) < 3:
        return None
    quanta = ref_quanta(u, precision)
    tol = np.maximum(quanta[1:], quanta[:-1])
    gaps = np.diff(u)
    # Distinct values on a lattice of step >= 4 quanta are at least 2 quanta apart: if too
    # many are closer, no such lattice exists.
    if np.count_nonzero(gaps < 2 * tol) > mapping._MAX_CONFLICTS * len(gaps):
        return None
    seeds = np.unique(gaps[gaps >= mapping._MIN_STEP_QUANTA * tol])[:3]
    for seed in seeds:
        step = float(seed)
        for _ in range(8):
            step, err, conflicts = ref_refine_step(gaps, tol, step)
            bad = np.flatnonzero(conflicts)
            if step < mapping._MIN_STEP_QUANTA * float(tol.min()):
                break
            if len(bad) <= mapping._MAX_CONFLICTS * len(gaps):
                return step, err
            g = float(gaps[bad[0]])
            floor = mapping._MIN_STEP_QUANTA * float(tol[bad[0]])
            step = ref_approx_gcd(step, abs(g - step * round(g / step)), floor / 2)
            if step < floor:
                break
    return None


def ref_quanta(values, precision: int):
    """The rounding quantum of ``round_P`` at each value (1 without rounding)."""
    if precision >= mapping.NO_ROUNDING:
        return np.ones(len(values))
    pow10 = mapping._pow10()
    digits = np.searchsorted(pow10[:17], np.abs(values), side="right")
    return pow10[np.maximum(digits - precision, 0)]


def ref_fit(values, step: float, err: float, precision: int):
    """Least-squares ``(a, b, uncertainty of b)`` of ``values ~ a + b*n`` from an approximate
    step, with the origin moved next to zero (so ``n ~ value / b`` and segments of one scale
    line up). The fit starts at the median sample; values farther away join only
    once the step is sharp enough to count the lattice steps to them without doubt. Each
    value weighs by its rounding quantum (coarser roundings say less about the lattice)."""
    u = np.unique(values)
    if step <= 0 or not len(u):
        return None
    quanta = ref_quanta(u, precision)
    ref = float(np.partition(values, len(values) // 2)[len(values) // 2])  # the median
    if step == int(step) and precision >= mapping.NO_ROUNDING and err == 0:
        # An exact integer lattice: keep it exact (the phase of the middle value).
        return ref % step, step, 0.0
    du = u - ref
    weight = 1.0 / (quanta * quanta)
    a = 0.0
    used = -1
    for _ in range(16):
        reach = 0.25 * step * step / max(err, step * 1e-15)
        near = np.abs(du) <= reach
        n = np.rint((du[near] - a) / step)
        slack = 2 * quanta[near] + 2 * np.abs(n) * err
        keep = np.abs(du[near] - a - n * step) <= slack
        n, y, w = n[keep], du[near][keep], weight[near][keep]
        if len(n) < 2 or n.min() == n.max() or len(n) == used:
            break
        used = len(n)
        total_w = mapping._total(w)
        n_mean = np.rint(mapping._total(w * n) / total_w)
        dn = n - n_mean
        dn_mean = mapping._total(w * dn) / total_w
        y_mean = mapping._total(w * y) / total_w
        spread = mapping._total(w * (dn - dn_mean) ** 2)
        slope = mapping._total(w * (dn - dn_mean) * (y - y_mean)) / spread
        if not (np.isfinite(slope) and slope > 0):
            return None
        a = y_mean - slope * (dn_mean + n_mean)
        err = max(0.5 / np.sqrt(spread), step * 1e-15)
        step = slope
    if precision < mapping.NO_ROUNDING or step != int(step):
        a, step = ref_center(du, quanta, a, step, ref, precision)
    a += ref
    a -= step * round(a / step)
    if precision >= mapping.NO_ROUNDING and abs(step - round(step)) <= 1e-9 * step:
        step = float(round(step))
        a = float(round(a)) % step
    return float(a), float(step), float(err)


def ref_center(du, quanta, a: float, step: float, ref: float, precision: int):
    """Move ``(a, step)`` into the middle of the region where every value's rounding interval
    holds its lattice point (least squares only gets close; values that sit near a rounding
    boundary need the exact middle). Falls back to the input when that reproduces more."""
    n = np.rint((du - a) / step)
    near = np.abs(du - a - n * step) <= quanta
    n, y, half = n[near], du[near], quanta[near] / 2
    if len(n) < 2:
        return a, step
    best = (a, step)
    wanted = np.count_nonzero(ref_reproduced(du + ref, a + ref, step, precision))
    if wanted == len(du):
        return best
    a_new, step_new = a, step
    for _ in range(8):
        lo = y - half - step_new * n
        hi = y + half - step_new * n
        j, i = int(np.argmax(lo)), int(np.argmin(hi))
        if lo[j] <= hi[i]:
            a_new = 0.5 * (lo[j] + hi[i])
            break
        if n[j] == n[i]:
            return best
        # The step that makes the two tightest constraints meet.
        step_new = (y[j] - half[j] - y[i] - half[i]) / (n[j] - n[i])
        if not (np.isfinite(step_new) and step_new > 0):
            return best
    got = np.count_nonzero(ref_reproduced(du + ref, a_new + ref, step_new, precision))
    return (a_new, step_new) if got >= wanted else best


def ref_reproduced(k, a: float, b: float, precision: int):
    """Which decimals the lattice reproduces exactly."""
    with np.errstate(invalid="ignore", over="ignore"):
        t = a + b * np.rint((k - a) / b)
    return ref_round_significant(t, precision) == k


def ref_segment_end(k, start: int, a: float, b: float, precision: int) -> tuple[int, int]:
    """Where the lattice stops holding: the first failure that starts a run of three or more
    failures among four samples (isolated outliers stay in the segment as corrections).
    Returns the end and the number of failures before it."""
    size = 1024
    pos = start
    failures = 0
    while pos < len(k):
        stop = min(len(k), pos + size)
        bad = ~ref_reproduced(k[pos : min(len(k), stop + 3)], a, b, precision)
        runs = np.convolve(bad.astype(np.int8), np.ones(4, dtype=np.int8))[3:]
        hits = np.flatnonzero(bad[: stop - pos] & (runs[: stop - pos] >= 3))
        if len(hits):
            end = pos + int(hits[0])
            return end, failures + int(np.count_nonzero(bad[: end - pos]))
        failures += int(np.count_nonzero(bad[: stop - pos]))
        pos = stop
        size *= 2
    return len(k), failures


def _same_floats(got, want) -> bool:
    """Whether two results (None or tuples of numbers) are equal bit for bit."""
    if got is None or want is None:
        return got is None and want is None
    return len(got) == len(want) and all(
        np.float64(g).tobytes() == np.float64(w).tobytes() for g, w in zip(got, want, strict=True)
    )


def test_round_significant_matches_the_reference_at_digit_boundaries():
    edges = [0.0, 0.5, np.nan, np.inf, 1e300, 5e-324]
    for j in range(23):
        ten = 10.0**j
        edges += [np.nextafter(ten, 0), ten, np.nextafter(ten, np.inf)]
    for e in range(60):
        two = 2.0**e
        edges += [np.nextafter(two, 0), two, np.nextafter(two, np.inf)]
    rng = np.random.default_rng(11)
    t = np.concatenate([edges, np.exp(rng.uniform(0, 40, 2000))])
    t = np.concatenate([t, -t])
    for precision in range(1, mapping.NO_ROUNDING + 1):
        with np.errstate(invalid="ignore", over="ignore"):
            want = ref_round_significant(t, precision)
        got = mapping._round_significant(t, precision)
        assert got.tobytes() == want.tobytes(), precision


@st.composite
def lattice_windows(draw):
    """Decimal integers on an affine lattice rounded to P digits, with outliers, or not."""
    seed = draw(st.integers(0, 2**32 - 1))
    size = draw(st.integers(3, 1500))
    precision = draw(st.sampled_from([5, 6, 8, 10, 16]))
    rng = np.random.default_rng(seed)
    style = draw(st.sampled_from(["lattice", "integer", "two", "random"]))
    counts = np.cumsum(rng.integers(-20, 21, size)) + int(rng.integers(-(10**6), 10**6))
    step = float(10.0 ** rng.uniform(-1, 4))
    if style == "integer":
        step = float(rng.integers(1, 50))
    values = float(rng.uniform(-1e5, 1e5)) + step * counts
    if style == "two":  # a change of scale half-way
        values[size // 2 :] = values[size // 2] + (step * 1.37) * (counts[size // 2 :] - counts[0])
    if style == "random":
        values = rng.uniform(-1e9, 1e9, size)
    outliers = rng.integers(0, size, int(rng.integers(0, 1 + size // 50)))
    values[outliers] += rng.uniform(-3 * step, 3 * step, len(outliers))
    with np.errstate(invalid="ignore", over="ignore"):
        k = ref_round_significant(values, precision) + 0.0
    return k, precision, step, rng


@settings(max_examples=80, deadline=None)
@given(lattice_windows())
def test_lattice_kernels_match_the_numpy_reference(window):
    from qres.codec import _mapping_kernels as kernels

    k, precision, step, rng = window
    with np.errstate(all="ignore"):  # the reference divides by a zero step in some draws
        _check_kernels(kernels, k, precision, step, rng)


def _check_kernels(kernels, k, precision: int, step: float, rng) -> None:
    found = ref_lattice_step(k, precision)
    assert _same_floats(kernels.lattice_step(k, precision), found)
    err = found[1] if found is not None else step * 1e-9
    for seed_step in {found[0] if found is not None else step, step, float(np.rint(step))}:
        want = ref_fit(k, seed_step, err, precision)
        assert _same_floats(kernels.fit(k, seed_step, err, precision), want)
        assert _same_floats(
            kernels.fit(k[::3], seed_step, 0.0, precision),
            ref_fit(k[::3], seed_step, 0.0, precision),
        )
        a, b = want[:2] if want is not None else (0.0, seed_step)
        start = int(rng.integers(0, len(k)))
        assert kernels.segment_end(k, start, a, b, precision) == ref_segment_end(
            k, start, a, b, precision
        )
        reproduced = int(np.count_nonzero(ref_reproduced(k, a, b, precision)))
        assert kernels.count_reproduced(k, a, b, precision) == reproduced


def _reference_search(monkeypatch):
    """Make the mapping's lattice search run on the numpy reference."""

    def count(k, a, b, precision):
        with np.errstate(invalid="ignore", over="ignore"):
            return int(np.count_nonzero(ref_reproduced(k, a, b, precision)))

    monkeypatch.setattr(mapping, "_lattice_step", ref_lattice_step)
    monkeypatch.setattr(mapping, "_fit", ref_fit)
    monkeypatch.setattr(mapping, "_segment_end", ref_segment_end)
    monkeypatch.setattr(mapping, "_count_reproduced", count)
    monkeypatch.setattr(mapping, "_round_significant", ref_round_significant)
    monkeypatch.setattr(mapping, "_segments", mapping._reference_segments)


@st.composite
def lattice_channels(draw):
    """Channels of decimals in pieces: each its own lattice (steps, offsets, rounding), plain
    integers or noise, with outliers and samples that are not usable."""
    seed = draw(st.integers(0, 2**32 - 1))
    pieces = draw(st.integers(1, 6))
    precision = draw(st.sampled_from([5, 6, 8, 10, 16]))
    rng = np.random.default_rng(seed)
    parts = []
    for _ in range(pieces):
        size = int(rng.integers(1, 3000))
        style = rng.choice(["lattice", "integer", "random", "flat"])
        counts = np.cumsum(rng.integers(-20, 21, size)) + int(rng.integers(-(10**5), 10**5))
        step = float(10.0 ** rng.uniform(-1, 4))
        if style == "integer":
            step = float(rng.integers(1, 50))
        values = float(rng.uniform(-1e5, 1e5)) + step * counts
        if style == "random":
            values = rng.uniform(-1e9, 1e9, size)
        if style == "flat":
            values = np.full(size, float(rng.uniform(-1e3, 1e3)))
        outliers = rng.integers(0, size, int(rng.integers(0, 1 + size // 40)))
        values[outliers] += rng.uniform(-3 * step, 3 * step, len(outliers))
        parts.append(values)
    with np.errstate(invalid="ignore", over="ignore"):
        k = ref_round_significant(np.concatenate(parts), precision) + 0.0
    usable = rng.random(len(k)) >= draw(st.sampled_from([0.0, 0.01, 0.3]))
    return k, usable, precision


@settings(max_examples=40, deadline=None)
@given(lattice_channels())
def test_compiled_segment_search_equals_the_python_search(channel):
    """The compiled segment search finds exactly the segments of the Python one (which calls
    the kernels one at a time): same starts, offsets and steps, bit for bit."""
    k, usable, precision = channel
    with np.errstate(all="ignore"):
        want = mapping._reference_segments(k, usable, precision)
    got = mapping._segments(k, usable, precision)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == w.dtype and g.tobytes() == w.tobytes()


def _study_channels():
    """Channels shaped like the corpus floats: z-normalised %.8g series, scaled ADC counts in
    float32, mixed two and three decimals with repr noise."""
    rng = np.random.default_rng(12)
    series = []
    for _ in range(3):
        v = np.abs(np.cumsum(rng.integers(-40, 41, 1460)))
        z = (v - v.mean()) / v.std()
        series.append([float(f"{t:.8g}") for t in z])
    acsf = np.array(np.concatenate(series)).reshape(-1, 1)
    counts = 3000 + np.cumsum(rng.integers(-6, 7, 6000))
    pig = np.round(counts * (500 / 131072), 6).astype(np.float32).reshape(-1, 1)
    mixed = np.concatenate(
        [
            np.round(np.cumsum(rng.integers(-9, 10, 2000)) * s, d)
            for s, d in ((0.01, 2), (0.001, 3), (0.01, 2))
        ]
    )
    mixed[::97] += 1e-15
    return [acsf, pig, mixed.reshape(-1, 1)]


def test_compiled_search_maps_like_the_numpy_reference(monkeypatch):
    blocks = _study_channels()
    compiled = [mapping.to_integers(b, StreamSpec(b.dtype.name), None) for b in blocks]
    _reference_search(monkeypatch)
    for block, got in zip(blocks, compiled, strict=True):
        want = mapping.to_integers(block, StreamSpec(block.dtype.name), None)
        assert got.side == want.side
        assert np.array_equal(got.ints, want.ints)
        assert len(got.extras) == len(want.extras)
        assert all(np.array_equal(g, w) for g, w in zip(got.extras, want.extras, strict=True))


def _ref_lattice_values(n, starts, offsets, steps, precision):
    """``round_P(a + b*n)`` per segment (numpy reference of the decoder's lattice view)."""
    lengths = np.diff(np.append(starts.astype(np.int64), len(n)))
    a, b = np.repeat(offsets, lengths), np.repeat(steps, lengths)
    with np.errstate(invalid="ignore", over="ignore"):
        return ref_round_significant(a + b * n, precision)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from([4, 8, 12, 16]))
def test_lattice_encode_and_decode_match_the_numpy_reference(seed, precision):
    from qres.codec import _mapping_kernels as kernels

    rng = np.random.default_rng(seed)
    frames = int(rng.integers(1, 3000))
    starts = np.unique(np.append(0, rng.integers(1, frames + 1, 4)))
    starts = starts[starts < frames].astype("<u4")
    offsets = rng.uniform(-1e6, 1e6, len(starts))
    steps = 10.0 ** rng.uniform(0, 5, len(starts))
    k = np.rint(rng.uniform(-1e12, 1e12, frames)) + 0.0
    n, correction = kernels.lattice_encode(k, starts, offsets, steps, precision)
    lengths = np.diff(np.append(starts.astype(np.int64), frames))
    a, b = np.repeat(offsets, lengths), np.repeat(steps, lengths)
    n_float = np.rint((k - a) / b)
    assert np.array_equal(n, n_float.astype(np.int64))
    want = (k - _ref_lattice_values(n_float, starts, offsets, steps, precision)).astype(np.int64)
    assert np.array_equal(correction, want)
    # The decoder, on these indices and on damaged ones (huge, so the lattice overflows).
    n[rng.integers(0, frames, 3)] = [2**63 - 1, -(2**63), 2**62]
    t = np.clip(
        _ref_lattice_values(n.astype(np.float64), starts, offsets, steps, precision),
        -(2.0**62),
        2.0**62,
    )
    assert np.array_equal(
        kernels.lattice_decode(n, starts, offsets, steps, precision),
        np.nan_to_num(t).astype(np.int64),
    )
    with pytest.raises(ValueError):
        kernels.lattice_decode(n, np.array([1], dtype="<u4"), offsets, steps, precision)


@settings(max_examples=40, deadline=None)
@given(float_blocks())
def test_channel_passes_match_the_numpy_reference(block):
    """The compiled decimal view, ulp stream and cost estimate against their numpy formulas,
    on any bit patterns (NaN, infinities, -0.0, values beyond 2**52, decimals with noise)."""
    from qres.codec import _mapping_kernels as kernels

    dtype = block.dtype.name
    x = np.ascontiguousarray(block[:, 0])
    for d in (0, 3, mapping.MAX_DECIMALS[dtype]):
        with np.errstate(all="ignore"):
            k, fits, exact = mapping._decimal_view(x, dtype, d)
            k = mapping._forward_fill(np.where(fits, k, 0.0), ~fits)
            back = (k / 10.0**d).astype(dtype)
            ulps = mapping._monotonic_bits(x, dtype) - mapping._monotonic_bits(back, dtype)
        got_k, got_exact = kernels.decimal_view(x, d)
        assert got_k.tobytes() == np.asarray(k, dtype=np.float64).tobytes()
        assert np.array_equal(got_exact, exact)
        got_ulps = kernels.ulp_stream(x, got_k, d)
        assert np.array_equal(got_ulps, ulps)
        with np.errstate(all="ignore"):
            assert kernels.bit_cost(got_ulps, False) == mapping._bit_cost(ulps)
            assert kernels.bit_cost(got_ulps, True) == mapping._bit_cost(np.diff(ulps))


@FAST
@given(hnp.arrays("<u8", st.integers(0, 200)), st.sampled_from(["float32", "float64"]))
def test_compiled_monotonic_bits_equal_the_numpy_formula(raw, dtype):
    """Order-preserving integers of any bit patterns, 1-D (compiled) as numpy forms them,
    and ordered like the floats they stand for."""
    signed = np.int32 if dtype == "float32" else np.int64
    x = (raw.astype("<u4") if dtype == "float32" else raw).view(dtype)
    bits = x.view(signed)
    want = (bits ^ ((bits >> (8 * bits.itemsize - 1)) & np.iinfo(signed).max)).astype(np.int64)
    got = mapping._monotonic_bits(x, dtype)
    assert got.dtype == np.int64 and np.array_equal(got, want)
    assert np.array_equal(mapping._monotonic_bits(x.reshape(-1, 1), dtype).ravel(), want)
    finite = np.isfinite(x)
    order = np.argsort(got[finite], kind="stable")
    assert np.all(np.diff(x[finite][order]) >= 0)


def _reference_decimal_costs(probe, dtype: str):
    """mapping._choose_decimals's per-decimals counts and costs in numpy (the formulation the
    compiled ``decimal_costs`` must equal)."""
    bits = mapping._monotonic_bits(probe, dtype)
    counts, costs = [], []
    for d in range(mapping.MAX_DECIMALS[dtype] + 1):
        k, fits, exact = mapping._decimal_view(probe, dtype, d)
        counts.append(int(len(probe) - np.count_nonzero(exact)))
        k = np.where(fits, k, 0.0)
        back = mapping._monotonic_bits((k / 10.0**d).astype(dtype), dtype)
        costs.append(mapping._bit_cost(np.diff(k)) + mapping._bit_cost(bits - back))
        if counts[-1] == 0:
            break
    return counts, costs


@settings(max_examples=60, deadline=None)
@given(float_blocks(), st.integers(1, 5))
def test_compiled_decimal_costs_equal_the_numpy_reference(block, stride):
    """The counts of inexact samples and the size estimates that choose a channel's decimals,
    on any bit patterns (NaN, infinities, -0.0, values beyond 2**52, decimal noise) and on
    strided probes."""
    from qres.codec import _mapping_kernels as kernels

    dtype = block.dtype.name
    probe = block[::stride, 0]
    with np.errstate(all="ignore"):
        want = _reference_decimal_costs(probe, dtype)
    assert kernels.decimal_costs(probe, mapping.MAX_DECIMALS[dtype]) == want


def test_bit_cost_at_the_int64_extremes():
    from qres.codec import _mapping_kernels as kernels

    s = np.array([0, -(2**63), 2**63 - 1, 2**53 + 1, 2**53 - 1, -1, 1, 7, -8], dtype=np.int64)
    with np.errstate(all="ignore"):
        assert kernels.bit_cost(s, False) == mapping._bit_cost(s)
        assert kernels.bit_cost(s, True) == mapping._bit_cost(np.diff(s))  # wraps like numpy
    assert kernels.bit_cost(s[:0], True) == 0 and kernels.bit_cost(s[:1], True) == 0


# -- non-finite runs and integer lattices ------------------------------------------------------


def _gapped_walk(dtype: str):
    """A decimal walk of 5000 samples with NaN gaps: one touching the start, one of another
    payload right before one of the plain NaN (two touching runs); the walk, its signed
    integer type and the plain NaN's bits."""
    rng = np.random.default_rng(4)
    x = (np.cumsum(rng.integers(-9, 10, 5000)) / 100.0).astype(dtype)
    signed = np.int32 if dtype == "float32" else np.int64
    nan = np.array(np.nan, dtype).view(signed)
    x[:30] = np.nan
    x[1000:1400] = np.array(nan | 7, signed).view(dtype)
    x[1400:1500] = np.nan
    return x, signed, nan


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_nan_gaps_are_a_run_table(dtype):
    """Format 11: NaN gaps and dropouts (several payloads, one touching the start, two runs
    touching) are a run table: one copy of each bit pattern in the side record, and per run
    its gap, length minus 1 and pattern as three streams after the channel's own."""
    x, signed, nan = _gapped_walk(dtype)
    x[2000:3000:50] = np.nan  # single dropouts
    x[4990:] = -np.inf
    mapped = _round_trip(x.reshape(-1, 1))
    entry = _side(mapped, dtype, len(x)).maps[0]
    assert entry.kind == mapping.KIND_RUN_TABLE and entry.inner.kind == mapping.KIND_DECIMAL
    assert (entry.run_count, entry.patterns, entry.inner.flags) == (24, 3, 0)
    patterns = np.frombuffer(entry.exception_raw, dtype=np.dtype(signed).newbyteorder("<"))
    assert list(patterns) == [nan, nan | 7, np.array(-np.inf, dtype).view(signed)]
    gaps, lengths, index = mapped.extras
    starts = np.cumsum(gaps + lengths + 1) - lengths - 1
    assert list(starts) == [0, 1000, 1400, *range(2000, 3000, 50), 4990]
    assert list(lengths + 1) == [30, 400, 100] + [1] * 20 + [10]
    assert list(index) == [0, 1, 0] + [0] * 20 + [2]
    # One pattern: no pattern stream.
    x[1000:1400] = np.nan
    x[4990:] = np.nan
    mapped = _round_trip(x.reshape(-1, 1))
    entry = _side(mapped, dtype, len(x)).maps[0]
    assert (entry.run_count, entry.patterns, len(mapped.extras)) == (23, 1, 2)
    # A run or two cost fewer bytes verbatim (kind 5) than in streams.
    x[30:] = x[30:][np.isfinite(x[30:])][0]
    assert _kinds(_round_trip(x.reshape(-1, 1)), dtype, 1) == [mapping.KIND_RUNS]


def test_isolated_dropouts_cost_a_few_bits_each():
    """Scattered single NaNs (sensor dropouts) in a run table cost a fraction of the 16
    verbatim bytes each that a kind-5 entry spends on a float64 run."""
    rng = np.random.default_rng(5)
    x = np.round(20 + np.cumsum(rng.normal(0, 0.05, 20000)), 2)
    x[rng.random(len(x)) < 0.02] = np.nan
    spec = StreamSpec("float64", 1)
    table = mapping.to_integers(x.reshape(-1, 1), spec, None)
    verbatim = mapping.to_integers(x.reshape(-1, 1), spec, None, version=10)
    starts = np.flatnonzero(np.diff(np.isnan(x).astype(int), prepend=0) == 1)
    assert len(verbatim.side) >= 16 * len(starts) > 16 * 400
    assert len(table.side) < 100 and len(table.extras) == 2
    # the streams hold what the verbatim table held: gaps from the end of the run before,
    # and lengths minus 1
    gaps, lengths = table.extras[0], table.extras[1] + 1
    assert list(np.cumsum(gaps + lengths) - lengths) == list(starts)
    assert int(lengths.sum()) == np.count_nonzero(np.isnan(x))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_nan_gaps_are_runs_and_cost_no_corrections(dtype):
    """Before format 11, NaN gaps (several payloads, one touching the start) are kept as runs:
    the decimal channel around them needs no ulp correction, and a channel of NaN only still
    maps."""
    x, signed, nan = _gapped_walk(dtype)
    x[4990:] = -np.inf
    mapped = _round_trip(x.reshape(-1, 1), run_tables=False)
    entry = _side(mapped, dtype, len(x)).maps[0]
    assert entry.kind == mapping.KIND_RUNS and entry.inner.kind == mapping.KIND_DECIMAL
    assert list(entry.runs[0]) == [0, 1000, 1400, 4990]
    assert list(entry.runs[1]) == [30, 400, 100, 10]
    assert entry.inner.flags == 0 and mapped.extras == ()
    # the gaps are flat for the predictor: the value before each gap is repeated
    assert mapped.ints[0][1000:1500].min() == mapped.ints[0][1000:1500].max()
    only = np.full((50, 1), np.nan, dtype=dtype)
    assert _kinds(_round_trip(only, run_tables=False), dtype, 1) == [mapping.KIND_RUNS]
    assert _kinds(_round_trip(only), dtype, 1) == [mapping.KIND_RUNS]  # one run: verbatim


@st.composite
def integer_lattices(draw):
    dtype = draw(st.sampled_from(["int8", "uint8", "int16", "uint16", "int32", "uint32", "int64"]))
    info = np.iinfo(dtype)
    frames = draw(st.integers(0, 200))
    step = draw(st.sampled_from([1, 2, 3, 256, 1000, 2**16]))
    lo, hi = int(info.min), int(info.max)
    offset = draw(st.integers(lo, hi))
    span_lo, span_hi = (lo - offset) // step + 1, (hi - offset) // step
    if span_lo > span_hi:
        step, span_lo, span_hi = 1, lo - offset, hi - offset
    n = draw(
        hnp.arrays(
            np.int64, frames, elements=st.integers(max(span_lo, -(2**40)), min(span_hi, 2**40))
        )
    )
    return (offset + step * n.astype(object)).astype(dtype).reshape(-1, 1), step


@FAST
@given(
    hnp.arrays(np.int64, st.integers(0, 300), elements=st.integers(-(2**31), 2**31 - 1)),
    st.integers(1, 2**16),
)
def test_compiled_common_step_equals_numpy_gcd(values, factor):
    """The compiled gcd of a channel's distances to its first sample (with its early stop at
    1) equals numpy's gcd.reduce, on any samples and on samples sharing a factor."""
    from qres.codec._mapping_kernels import common_step

    for ints in (values, (values // factor) * factor, values[::3]):
        want = int(np.gcd.reduce(ints[1:] - ints[0])) if len(ints) > 1 else 0
        assert common_step(ints) == want


@FAST
@given(integer_lattices())
def test_integer_samples_on_a_common_step_map_to_its_multiples(case):
    """Integers x = a + g*n (unused low bits, a fixed increment) map to n exactly (kind 4);
    the step found is a multiple of the one built (the samples may share a larger one)."""
    block, step = case
    mapped = _round_trip(block)
    (entry,) = _side(mapped, block.dtype.name, len(block)).maps
    values = block[:, 0].astype(object)
    true_step = 0
    for v in values[1:]:
        true_step = np.gcd(true_step, int(v - values[0]))
    if block.dtype.itemsize <= 4 and true_step >= 2:
        assert entry.kind == mapping.KIND_INTEGER_LATTICE and entry.step == true_step
        assert true_step % step == 0
    else:
        # No common step: no integer lattice (a block of few distinct values may still take
        # the dictionary, 3 values in 24 samples do).
        assert entry.kind in (mapping.KIND_INTEGER, mapping.KIND_DICTIONARY)
    # through the codec, lossless and with a bound (where the lattice is not used)
    spec = StreamSpec(block.dtype.name)
    packed = api.compress_bytes(block.tobytes(), spec, profile="server")
    assert api.decompress_bytes(packed) == block.tobytes()
    if block.dtype.itemsize <= 4 and len(block):
        bounded = api.decompress_bytes(api.compress_bytes(block.tobytes(), spec, "fast", 3))
        back = np.frombuffer(bounded, block.dtype).astype(np.int64)
        assert np.abs(back - block[:, 0].astype(np.int64)).max() <= 3


def test_damaged_integer_lattice_fails_cleanly():
    block = (np.arange(300, dtype=np.int64) * 4 - 600).astype("<i2").reshape(-1, 1)
    spec = StreamSpec("int16")
    mapped = mapping.to_integers(block, spec, None)
    assert mapped.side[0] == mapping.KIND_INTEGER_LATTICE
    for offset, step in ((0, 1), (5, 4), (0, 2**32)):
        bad = bytes([mapping.KIND_INTEGER_LATTICE]) + np.array([offset, step], "<i8").tobytes()
        with pytest.raises(IntegrityError, match="bad integer lattice"):
            mapping.read_side(memoryview(bad), 0, spec, 300)
    # a lattice index that leaves the type's range is damage, not an overflow
    side, _ = mapping.read_side(memoryview(mapped.side), 0, spec, 300)
    ints = mapped.ints.copy()
    ints[0, 7] = 2**40
    with pytest.raises(IntegrityError, match="out of the type's range"):
        mapping.from_integers(ints, side, [], spec, None)


# -- significant digits ------------------------------------------------------------------------


def _flux(dtype: str, frames: int = 20000, digits: int = 5) -> np.ndarray:
    rng = np.random.default_rng(5)
    walk = np.cumsum(rng.normal(0, 0.01, frames))
    logs = -9 + 4.5 * (walk - walk.min()) / (walk.max() - walk.min())
    return np.array([float(f"%.{digits}g" % v) for v in 10.0**logs]).astype(dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_significant_digits_over_many_decades_use_kind_6(dtype):
    """A flux of 1e-9 .. 3e-5 written with 5 significant digits: no decimal count fits, the
    significant-digit view does (no corrections) and codes far smaller than the bit view."""
    from qres.codec import significant

    x = _flux(dtype)
    mapped = _round_trip(x.reshape(-1, 1))
    (entry,) = _side(mapped, dtype, len(x)).maps
    assert entry.kind == mapping.KIND_SIGNIFICANT and entry.precision == 5
    assert entry.flags == 0 and mapped.extras == ()
    # consecutive decimals of a decade are consecutive integers, and the order is kept
    order = np.argsort(x, kind="stable")
    assert np.all(np.diff(mapped.ints[0][order]) >= 0)
    assert significant.choose_precision(x, dtype, 4096) == 5


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_significant_view_is_screened_on_long_lattice_channels(dtype):
    """A long channel on a scaled lattice (counts times a calibration constant) never computes
    the significant-digit view whole: its screen on spans of the channel says it cannot win
    (and the whole view indeed would not); a long flux over decades passes the screen."""
    rng = np.random.default_rng(3)
    x = ((np.cumsum(rng.integers(-3, 4, 40000)) + 2000) * 0.0123).astype(dtype)
    bits = mapping._monotonic_bits(x, dtype)
    cost = mapping._decimal_channel(x, dtype)[3]
    assert cost < mapping._bit_cost(bits)
    assert not mapping._significant_may_win(x, dtype, cost)
    assert mapping._significant_channel(x, dtype, bits)[3] >= mapping._SIGNIFICANT_GAIN * cost
    flux = _flux(dtype, 40000)
    flux_bits = mapping._monotonic_bits(flux, dtype)
    assert mapping._significant_may_win(flux, dtype, mapping._bit_cost(flux_bits))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_significant_digits_at_every_power_of_ten(dtype):
    """The exponent found from the binary one is exact at every power of ten and its
    neighbouring floats (the table's correctly rounded powers decide, never log10)."""
    from qres.codec import significant

    info = np.finfo(dtype)
    exps = range(int(np.floor(np.log10(info.smallest_subnormal))), int(np.log10(info.max)) + 1)
    tens = np.array([float(Fraction(10) ** k) for k in exps]).astype(dtype)
    values = np.concatenate(
        [
            tens,
            np.nextafter(tens, 0, dtype=tens.dtype),
            np.nextafter(tens, np.inf, dtype=tens.dtype),
        ]
    )
    values = values[np.isfinite(values) & (values > 0)]
    # Below the normal range the powers of ten are not representable: the digits found there
    # may be off by one step, and the ulp stream keeps the samples exact (checked below).
    normal = values[values >= info.tiny]
    # (16 digits or more exceed binary64's exact integers: the ulp stream is exact there too.)
    for digits in (1, 5, min(15, significant.MAX_DIGITS[dtype])):
        m, q = significant._digits(normal.astype(np.float64), digits)
        assert np.all((m >= 10 ** (digits - 1)) & (m < 10**digits))
        for v, mm, qq in zip(normal.tolist(), m.tolist(), q.tolist(), strict=True):
            exact = Fraction(int(mm)) * Fraction(10) ** int(qq)
            step = Fraction(10) ** int(qq)
            assert abs(exact - Fraction(v)) <= step, (v, mm, qq)
    # and every one of them round-trips through the mapping, bit for bit
    found = mapping._significant_channel(values, dtype)
    assert found is not None
    n, cmap, extras, _ = found
    back = mapping._channel_values(n, cmap, list(extras), StreamSpec(dtype), None)
    assert back.tobytes() == values.tobytes()


@FAST
@given(hnp.arrays("<u8", st.integers(1, 200)), st.sampled_from(["float32", "float64"]))
def test_significant_view_of_any_finite_bits_round_trips(raw, dtype):
    """Any finite samples (subnormals, -0.0, the largest) round-trip through kind 6 with its
    ulp stream, whatever the digits chosen."""
    x = raw.view("<f8") if dtype == "float64" else raw.astype("<u4").view("<f4")
    x = np.where(np.isfinite(x), x, 1.5).astype(dtype)
    found = mapping._significant_channel(x, dtype)
    if found is None:
        return
    n, cmap, extras, _ = found
    side = mapping._side_bytes([cmap])
    parsed, _ = mapping.read_side(memoryview(side), 0, StreamSpec(dtype), len(x))
    back = mapping.from_integers(n.reshape(1, -1), parsed, list(extras), StreamSpec(dtype), None)
    assert back.tobytes() == x.tobytes()


def _decades_apart(raw, dtype: str, spread: int) -> np.ndarray:
    """Finite samples from random bits: as they are (subnormals, -0.0, the largest), or a few
    printed digits over ``spread`` decades (what the significant-digit view is for)."""
    x = raw.view("<f8") if dtype == "float64" else raw.astype("<u4").view("<f4")
    x = np.where(np.isfinite(x), x, -2.5).astype(dtype)
    if spread:
        rng = np.random.default_rng(int(raw[0] % 1000) if len(raw) else 0)
        logs = rng.uniform(-spread, spread, len(x))
        signs = np.where(rng.random(len(x)) < 0.2, -1.0, 1.0)
        x = np.array([float(f"%.{1 + spread % 7}g" % v) for v in signs * 10.0**logs])
        x = np.where(rng.random(len(x)) < 0.05, 0.0, x).astype(dtype)
    return x


@FAST
@given(
    hnp.arrays("<u8", st.integers(0, 300)),
    st.sampled_from(["float32", "float64"]),
    st.integers(0, 30),
    st.integers(1, 17),
)
def test_compiled_significant_digits_equal_the_numpy_reference(raw, dtype, spread, digits):
    """The compiled encode, decode and precision search give the numpy reference's integers,
    samples and counts bit for bit (samples over many decades, subnormals, -0.0, extremes)."""
    from qres.codec._mapping_kernels import significant_mismatches

    from qres.codec import significant

    x = _decades_apart(raw, dtype, spread)
    digits = min(digits, significant.MAX_DIGITS[dtype])
    want = significant.encode_numpy(x, digits)
    got = significant.encode(x, digits)
    assert (got is None) == (want is None)
    if want is not None:
        assert got[1] == want[1] and got[0].tobytes() == want[0].tobytes()
        back = significant.decode(want[0], digits, want[1], dtype)
        ref = significant.decode_numpy(want[0], digits, want[1], dtype)
        assert back.dtype == ref.dtype and back.tobytes() == ref.tobytes()
    limit = significant.MAX_DIGITS[dtype]
    counts = significant_mismatches(x, limit, significant.powers(), significant._LOW)
    assert counts == significant.mismatches_numpy(x, dtype)


@FAST
@given(
    hnp.arrays(np.int64, st.integers(0, 200)),
    st.integers(1, 17),
    st.integers(-32768, 32767),
    st.sampled_from(["float32", "float64"]),
)
def test_compiled_significant_decode_of_any_indexes_equals_the_reference(n, digits, q0, dtype):
    """Damaged indexes (any int64, any lowest exponent) decode to the reference's values."""
    from qres.codec import significant

    got = significant.decode(n, digits, q0, dtype)
    with np.errstate(over="ignore"):  # huge indexes overflow float32, as they do compiled
        want = significant.decode_numpy(n, digits, q0, dtype)
    assert got.tobytes() == want.tobytes()


def test_significant_samples_that_are_not_finite_take_the_reference_path():
    from qres.codec import significant

    x = np.array([1.5, np.nan, -np.inf, 2.25e-7])
    want = significant.encode_numpy(x, 3)
    got = significant.encode(x, 3)
    assert (got is None) == (want is None)
    assert got is None or got[0].tobytes() == want[0].tobytes()
    big_endian = np.array([1.25, 3.5e9, -0.0], dtype=">f8")
    assert (
        significant.encode(big_endian, 4)[0].tobytes()
        == significant.encode_numpy(big_endian, 4)[0].tobytes()
    )


def test_bad_significant_heads_are_refused():
    spec = StreamSpec("float32")
    for head in ((0, 0, 0), (10, 0, 0), (5, 0, 1)):
        side = bytes([mapping.KIND_SIGNIFICANT]) + mapping._SIGNIFICANT.pack(*head)
        with pytest.raises(IntegrityError, match="bad significant-digit channel head"):
            mapping.read_side(memoryview(side), 0, spec, 10)


# -- scaled lattices (kind 7) ------------------------------------------------------------------


def _adc_codes(n: int, seed: int = 5):
    rng = np.random.default_rng(seed)
    return np.clip(np.cumsum(rng.integers(-3, 4, n)), -2000, 2000)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_converter_codes_times_a_scale_take_the_scaled_lattice(dtype):
    """Codes ``(c + 0.5) * 10 / 4095`` stored as floats: the lattice is found exactly (step
    and offset snapped to their fractions), the predictor sees the codes, and the samples
    that are off the lattice cost only an ulp stream."""
    codes = _adc_codes(6000)
    x = ((codes + 0.5) * 10 / 4095).astype(dtype)
    x[[100, 2000, 4000]] = np.array([0.123456, -0.0, 1e-40], dtype=dtype)
    mapped = _round_trip(x.reshape(-1, 1))
    entry = _side(mapped, dtype, len(x)).maps[0]
    assert entry.kind == mapping.KIND_SCALED
    a, b = entry.lattice
    assert b == 10 / 4095 and a in (b / 2, -b / 2)
    assert np.array_equal(np.diff(mapped.ints[0]), np.diff(codes)) or (
        np.count_nonzero(np.diff(mapped.ints[0]) != np.diff(codes)) <= 6
    )
    # float32: only the three planted samples; float64: the data's (c + 0.5) * 10 / 4095 and
    # the decoder's b*n + a round differently on some samples, by an ulp.
    limit = 3 if dtype == "float32" else 0.3 * len(x)
    assert np.count_nonzero(mapped.extras[0]) <= limit


def test_scaled_lattice_cuts_the_coded_size():
    codes = _adc_codes(20000, seed=6)
    x = ((codes + 0.5) * 10 / 4095).astype(np.float32)
    spec = StreamSpec("float32", 1)
    with_scaled = len(api.compress_bytes(x.tobytes(), spec, profile="server"))
    original = mapping._scaled_channel, mapping._dictionary_channel
    try:  # neither kind 7 nor the dictionary (4,000 codes on 20,000 samples: it holds them)
        mapping._scaled_channel = mapping._dictionary_channel = lambda *args: None
        without = len(api.compress_bytes(x.tobytes(), spec, profile="server"))
    finally:
        mapping._scaled_channel, mapping._dictionary_channel = original
    assert with_scaled < 0.5 * without


def test_decimal_readings_stay_on_the_decimal_lattice():
    """A binary64 product 0.01 * n misses decimal readings by an ulp on many samples; kind 1
    divides by 10**d and reproduces them, so the scaled lattice must not take them."""
    x = (np.cumsum(np.random.default_rng(3).integers(-9, 10, 5000)) / 100.0).reshape(-1, 1)
    assert _kinds(_round_trip(x), "float64", 1) == [mapping.KIND_DECIMAL]


def test_scaled_lattice_entries_only_in_format_7():
    x = ((_adc_codes(3000) + 0.5) * 10 / 4095).astype(np.float32).reshape(-1, 1)
    spec = StreamSpec("float32", 1)
    mapped = mapping.to_integers(x, spec, None)
    side = memoryview(mapped.side)
    assert mapping.read_side(side, 0, spec, len(x), 7)[0].maps[0].kind == mapping.KIND_SCALED
    with pytest.raises(IntegrityError, match="kind 7 does not fit"):
        mapping.read_side(side, 0, spec, len(x), 6)
    # Inside a runs entry too.
    x[10:20] = np.nan
    side = memoryview(mapping.to_integers(x, spec, None, version=10).side)
    assert mapping.read_side(side, 0, spec, len(x))[0].maps[0].inner.kind == mapping.KIND_SCALED
    with pytest.raises(IntegrityError, match="kind 7 does not fit"):
        mapping.read_side(side, 0, spec, len(x), 6)


@st.composite
def narrow_floats(draw):
    """Float blocks whose samples are of a narrower type (float16, bfloat16-like or float32
    values stored wide, or a mantissa cut to a few bits): every bit pattern ends in zeros.
    Negative samples, zeros of both signs, subnormals of the narrow type, huge values."""
    dtype = draw(st.sampled_from(["float32", "float64"]))
    width = 32 if dtype == "float32" else 64
    frames = draw(st.integers(1, 300))
    keep = draw(st.integers(1, width - 2))  # bits of the pattern kept, from the top
    raw = draw(st.lists(st.integers(0, (1 << width) - 1), min_size=frames, max_size=frames))
    mask = ((1 << keep) - 1) << (width - keep)
    bits = np.array([v & mask for v in raw], dtype=f"u{width // 8}")
    x = bits.view(dtype).copy()
    if draw(st.booleans()):  # a smooth narrow signal instead: float16 values stored wide
        x = (np.sin(np.arange(frames) / 9) * draw(st.floats(1e-6, 1e4))).astype(np.float16)
        x = x.astype(dtype)
    bad = ~np.isfinite(x)
    x[bad] = 0.0
    return x.reshape(-1, 1)


@FAST
@given(narrow_floats())
def test_narrow_floats_round_trip_through_the_shifted_bit_view(block):
    mapped = _round_trip(block)
    dtype = block.dtype.name
    entry = _side(mapped, dtype, len(block)).maps[0]
    column = block[:, 0]
    if entry.kind == mapping.KIND_NARROW:  # float32 values stored as float64
        assert dtype == "float64"
        assert np.array_equal(column.astype(np.float32).astype(np.float64), column)
        entry, column = entry.inner, column.astype(np.float32)
    every = int(np.bitwise_or.reduce(column.view(f"u{column.itemsize}")))
    if entry.kind == mapping.KIND_FLOAT_SHIFTED:
        assert every and entry.shift == min(
            8 * column.itemsize - 1, (every & -every).bit_length() - 1
        )
    elif entry.kind == mapping.KIND_FLOAT_BITS:
        assert every & 1 or not every  # the shifted view is taken whenever it can be
    # As a format-10 block, never kind 10 or 11.
    old = _kinds(mapping.to_integers(block, StreamSpec(dtype, 1), None, version=10), dtype, 1)
    assert not {mapping.KIND_FLOAT_SHIFTED, mapping.KIND_NARROW} & set(old)


def test_cut_mantissas_lose_the_dead_bits():
    """float64 samples whose mantissas keep 30 bits (not float32 values): the bit view
    shifted by the 22 zero bits they all end in."""
    rng = np.random.default_rng(6)
    x = np.sin(np.arange(5000) / 50) * 3 + rng.normal(0, 0.01, 5000)
    x = (x.view(np.uint64) & ~np.uint64((1 << 22) - 1)).view(np.float64).reshape(-1, 1)
    mapped = _round_trip(x)
    entry = _side(mapped, "float64", len(x)).maps[0]
    assert entry.kind == mapping.KIND_FLOAT_SHIFTED and entry.shift == 22
    plain = mapping._monotonic_bits(x[:, 0], "float64")
    assert np.array_equal(mapped.ints[0], plain >> 22)


def test_float32_readings_stored_as_float64_map_as_float32():
    """float32 readings of two decimals saved as float64 are a float32 decimal lattice (kind
    11 around kind 1): as float64 they are ulps of noise, coded as bits."""
    rng = np.random.default_rng(6)
    readings = np.round(200 + np.cumsum(rng.normal(0, 0.3, 5000)), 2).astype(np.float32)
    wide = readings.astype(np.float64).reshape(-1, 1)
    mapped = _round_trip(wide)
    entry = _side(mapped, "float64", len(wide)).maps[0]
    assert entry.kind == mapping.KIND_NARROW and entry.inner.kind == mapping.KIND_DECIMAL
    assert entry.inner.decimals == 2
    native = mapping.to_integers(readings.reshape(-1, 1), StreamSpec("float32", 1), None)
    assert np.array_equal(mapped.ints, native.ints) and mapped.side[1:] == native.side
    # Before format 11: the float64 decimal lattice, an ulp correction on most samples.
    old = mapping.to_integers(wide, StreamSpec("float64", 1), None, version=10)
    assert _kinds(old, "float64", 1) == [mapping.KIND_DECIMAL]
    assert np.count_nonzero(old.extras[-1]) > len(wide) // 2


@pytest.mark.parametrize(
    "side, spec, message",
    [
        (bytes([11, 2]), StreamSpec("float32", 1), "kind 11 does not fit"),
        (bytes([11, 11, 2]), StreamSpec("float64", 1), "kind 11 does not fit"),
        (bytes([11, 5]), StreamSpec("float64", 1), "kind 5 does not fit"),
        (bytes([11, 3]), StreamSpec("float64", 1), "kind 3 does not fit"),
        (bytes([11]), StreamSpec("float64", 1), "truncated"),
    ],
)
def test_bad_narrow_entries_are_refused(side, spec, message):
    with pytest.raises(IntegrityError, match=message):
        mapping.read_side(memoryview(side), 0, spec, 10)


def test_narrow_entries_only_in_lossless_blocks_of_format_11():
    side = memoryview(bytes([mapping.KIND_NARROW, mapping.KIND_FLOAT_BITS]))
    spec = StreamSpec("float64", 1)
    with pytest.raises(IntegrityError, match="kind 11 does not fit"):
        mapping.read_side(side, 0, spec, 4, 10)
    parsed, _ = mapping.read_side(side, 0, spec, 4, 11)
    ints = np.zeros((1, 4), dtype=np.int64)
    assert not mapping.from_integers(ints, parsed, [], spec, None).any()
    with pytest.raises(IntegrityError, match="bounded-error block"):
        mapping.from_integers(ints, parsed, [], spec, 0.5)


@pytest.mark.parametrize(
    "shift, dtype, message",
    [(0, "float32", "bad float bit shift 0"), (32, "float32", "bad float bit shift 32"),
     (64, "float64", "bad float bit shift 64")],
)  # fmt: skip
def test_bad_float_bit_shifts_are_refused(shift, dtype, message):
    side = bytes([mapping.KIND_FLOAT_SHIFTED, shift])
    with pytest.raises(IntegrityError, match=message):
        mapping.read_side(memoryview(side), 0, StreamSpec(dtype, 1), 10)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_shifted_bit_views_out_of_range_are_refused(dtype):
    """A damaged view whose value would not fit the sample width once shifted back."""
    spec = StreamSpec(dtype, 1)
    width = 8 * spec.itemsize
    side, _ = mapping.read_side(memoryview(bytes([mapping.KIND_FLOAT_SHIFTED, 20])), 0, spec, 2)
    top = 1 << (width - 1 - 20)
    for k in ([top - 1, -top], [top, 0], [0, -top - 1]):
        ints = np.array([k], dtype=np.int64)
        if k[0] == top - 1:
            out = mapping.from_integers(ints, side, [], spec, None)[:, 0]
            assert not np.any(out.view(f"u{spec.itemsize}") & ((1 << 20) - 1))
            continue
        with pytest.raises(IntegrityError, match="out of the type's range"):
            mapping.from_integers(ints, side, [], spec, None)


def test_run_tables_only_in_format_11():
    x = np.round(np.linspace(0, 30, 3000), 1).reshape(-1, 1)
    x[10:3000:100] = np.nan
    spec = StreamSpec("float64", 1)
    side = memoryview(mapping.to_integers(x, spec, None).side)
    assert mapping.read_side(side, 0, spec, len(x), 11)[0].maps[0].kind == mapping.KIND_RUN_TABLE
    with pytest.raises(IntegrityError, match="kind 9 does not fit"):
        mapping.read_side(side, 0, spec, len(x), 10)
    with pytest.raises(IntegrityError, match="kind 9 does not fit"):
        mapping.read_side(side, 0, StreamSpec("int64", 1), len(x))


def _run_table_side(count: int, patterns: list[float], inner: int = mapping.KIND_FLOAT_BITS):
    raw = np.array(patterns, dtype="<f8").tobytes()
    head = mapping._COUNT.pack(count) + mapping._COUNT.pack(len(patterns))
    return bytes([mapping.KIND_RUN_TABLE]) + head + raw + bytes([inner])


@pytest.mark.parametrize(
    "side, message",
    [
        (_run_table_side(0, [np.nan]), "run count out of range"),
        (_run_table_side(11, [np.nan]), "run count out of range"),
        (_run_table_side(2, []), "pattern count out of range"),
        (_run_table_side(1, [np.nan, np.inf]), "pattern count out of range"),
        (_run_table_side(2, [np.nan, np.nan]), "a bit pattern twice"),
        (_run_table_side(2, [np.nan])[:-5], "truncated in the run patterns"),
        (_run_table_side(2, [np.nan], mapping.KIND_RUN_TABLE), "kind 9 does not fit"),
        (_run_table_side(2, [np.nan], mapping.KIND_FLOAT_GRID), "kind 3 does not fit"),
    ],
)
def test_bad_run_table_entries_are_refused(side, message):
    with pytest.raises(IntegrityError, match=message):
        mapping.read_side(memoryview(side), 0, StreamSpec("float64", 1), 10)


@pytest.mark.parametrize(
    "gaps, lengths, index, message",
    [
        ([0, 1], [0, 0], [0, 1], None),  # runs at 0 and 2: valid
        ([0, 1], [0, 0], [0, 0], "out of table order"),  # a pattern never used
        ([0, 0], [0, 0], [0, 0], "two touching runs of one pattern"),
        ([0, 0], [0, 0], [0, 1], None),  # touching, two patterns: valid
        ([0, 1], [0, 0], [1, 0], "out of table order"),
        ([0, 1], [0, 0], [0, 2], "out of range"),
        ([0, 1], [0, 0], [0, 0, 0], "out of range"),
        ([-1, 1], [0, 0], [0, 0], "out of range"),
        ([0, 1], [-1, 0], [0, 0], "out of range"),
        ([5, 4], [0, 0], [0, 0], "reaches past the block"),
        ([0, 2**62], [0, 0], [0, 0], "out of range"),
        ([0, 1], [0, 2**62], [0, 0], "out of range"),
    ],
)
def test_damaged_run_table_streams_are_refused(gaps, lengths, index, message):
    """The run table's streams are checked before they place a sample: in range (before any
    sum), in order, inside the block, every pattern used in table order."""
    side = memoryview(_run_table_side(2, [np.nan, -np.inf]))
    spec = StreamSpec("float64", 1)
    parsed, _ = mapping.read_side(side, 0, spec, 10)
    streams = [np.array(v, dtype=np.int64) for v in (gaps, lengths, index)]
    ints = np.arange(10, dtype=np.int64).reshape(1, -1)
    if message is None:
        out = mapping.from_integers(ints, parsed, streams, spec, None)[:, 0]
        assert np.count_nonzero(~np.isfinite(out)) == 2
        return
    with pytest.raises(IntegrityError, match=message):
        mapping.from_integers(ints, parsed, streams, spec, None)


@pytest.mark.parametrize(
    "head",
    [(float("nan"), 1.0, 0), (0.0, float("inf"), 0), (0.0, 0.0, 0), (0.0, -1.0, 0), (0.0, 1.0, 4)],
)
def test_bad_scaled_lattice_heads_are_refused(head):
    side = bytes([mapping.KIND_SCALED]) + mapping._SCALED.pack(*head)
    with pytest.raises(IntegrityError, match="bad scaled lattice head"):
        mapping.read_side(memoryview(side), 0, StreamSpec("float32", 1), 10)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(min_value=1e-300, max_value=1e300),
    st.sampled_from(["float32", "float64"]),
)
def test_scaled_decode_of_any_code_gives_a_sample_never_an_error(n, a, b, dtype):
    """Damaged codes and lattices decode to garbage (the block CRC catches it), never raise."""
    out = mapping._channel_values(
        np.array([n, 0, -1], dtype=np.int64),
        mapping.ChannelMap(mapping.KIND_SCALED, lattice=(a, b)),
        [],
        StreamSpec(dtype, 1),
        None,
    )
    assert out.dtype == np.dtype(dtype) and out.shape == (3,)


# -- scaled lattices of integer samples (kind 7) -------------------------------------------------


def _calibrated(codes, scale: float, offset: float, dtype: str):
    """Readings as a logger writes them: rint(code * scale + offset), in the sample type."""
    return np.rint(codes * scale + offset).astype(dtype)


def _int_round_trip(x) -> mapping.Mapped:
    spec = StreamSpec(x.dtype.name, x.shape[1])
    mapped = mapping.to_integers(x, spec, None)
    side, pos = mapping.read_side(memoryview(mapped.side), 0, spec, x.shape[0])
    assert pos == len(mapped.side)
    back = mapping.from_integers(mapped.ints, side, list(mapped.extras), spec, None)
    assert back.tobytes() == x.tobytes()
    return mapped


@pytest.mark.parametrize("dtype", ["int16", "int32"])
def test_calibrated_integer_readings_take_the_scaled_lattice(dtype):
    """Accelerometer counts in mg, rint(code * 9.2593 - 12.3): the predictor sees the codes,
    nine times smaller steps than the readings, and the corrections stay sparse."""
    codes = _adc_codes(8000, seed=9)
    x = _calibrated(codes, 9.2593, -12.3, dtype).reshape(-1, 1)
    mapped = _int_round_trip(x)
    entry = _side(mapped, dtype, len(x)).maps[0]
    assert entry.kind == mapping.KIND_SCALED
    assert entry.lattice[1] == pytest.approx(9.2593, rel=1e-4)
    assert np.abs(np.diff(mapped.ints[0])).max() <= 3 + 1  # the codes' own steps (+-3)
    assert sum(np.count_nonzero(e) for e in mapped.extras) <= 0.01 * len(x)


def test_plain_and_common_step_integers_keep_their_kinds():
    rng = np.random.default_rng(4)
    walk = np.cumsum(rng.integers(-40, 41, 5000))
    plain = walk.astype(np.int32).reshape(-1, 1)
    assert _kinds(_int_round_trip(plain), "int32", 1) == [mapping.KIND_INTEGER]
    even = (256 * walk + 7).astype(np.int32).reshape(-1, 1)
    assert _kinds(_int_round_trip(even), "int32", 1) == [mapping.KIND_INTEGER_LATTICE]
    wide = _calibrated(walk, 9.5, 0.0, "int64").reshape(-1, 1)
    assert _kinds(_int_round_trip(wide), "int64", 1) == [mapping.KIND_INTEGER]


@FAST
@given(
    st.integers(0, 2**32 - 1),
    st.sampled_from(["int16", "int32", "uint16"]),
    st.floats(2.0, 60.0),
    st.floats(-100.0, 100.0),
    st.integers(0, 400),
)
def test_any_calibrated_integer_block_round_trips(seed, dtype, scale, offset, frames):
    """Any scale and offset, outliers at the type's limits, short and empty blocks."""
    rng = np.random.default_rng(seed)
    info = np.iinfo(dtype)
    codes = np.cumsum(rng.integers(-4, 5, (frames, 2)), axis=0) + 100
    x = np.clip(np.rint(codes * scale + offset), info.min, info.max).astype(dtype)
    if frames:
        x[rng.integers(0, frames, 3)] = rng.choice([info.min, info.max, 0], (3, 2))
    _int_round_trip(x)


def test_scaled_integer_entries_are_checked():
    x = _calibrated(_adc_codes(3000), 9.2593, 0.0, "int16").reshape(-1, 1)
    spec = StreamSpec("int16", 1)
    mapped = mapping.to_integers(x, spec, None)
    with pytest.raises(IntegrityError, match="kind 7 does not fit"):
        mapping.read_side(memoryview(mapped.side), 0, spec, len(x), 6)
    with pytest.raises(IntegrityError, match="64-bit integer"):
        mapping.read_side(memoryview(mapped.side), 0, StreamSpec("int64", 1), len(x))
    side, _ = mapping.read_side(memoryview(mapped.side), 0, spec, len(x))
    huge = mapped.ints.copy()
    huge[0, 5] = 2**40  # a damaged code decodes beyond int16: refused, never wrapped
    with pytest.raises(IntegrityError, match="out of the type's range"):
        mapping.from_integers(huge, side, list(mapped.extras), spec, None)


@settings(max_examples=100, deadline=None)
@given(
    st.integers(0, 2**32 - 1), st.integers(1, 8), st.sampled_from(["float32", "int16", "counts"])
)
def test_damaged_scaled_lattice_entries_fail_cleanly(seed, flips, style):
    """Flipped bits in a kind-7 or kind-8 side record and garbage codes or corrections: an
    IntegrityError or samples of the right shape, never another exception."""
    rng = np.random.default_rng(seed)
    codes = _adc_codes(2000, seed=seed % 7)
    dtype = "float32" if style == "float32" else "int16"
    if style == "float32":
        x = ((codes + 0.5) * 10 / 4095).astype(dtype)
    elif style == "int16":
        x = _calibrated(codes, 9.2593, 0.4, dtype)
    else:
        x = _bursts(2000, seed=seed % 7).astype(dtype)
    if style != "counts":
        x[rng.integers(0, len(x), 4)] = x[0] + 1  # off the lattice: a correction stream
    spec = StreamSpec(dtype, 1)
    mapped = mapping.to_integers(x.reshape(-1, 1), spec, None)
    side = bytearray(mapped.side)
    assert side[0] == (mapping.KIND_DICTIONARY if style == "counts" else mapping.KIND_SCALED)
    for _ in range(flips):
        side[rng.integers(0, len(side))] ^= 1 << int(rng.integers(0, 8))
    ints = mapped.ints.copy()
    if seed % 2:
        ints[0, rng.integers(0, len(x), 5)] = rng.integers(-(2**63), 2**63 - 1, 5)
    try:
        parsed, _ = mapping.read_side(memoryview(bytes(side)), 0, spec, len(x))
    except IntegrityError:
        return
    extras = [rng.integers(-(2**62), 2**62, len(x)) for _ in parsed.extra_lengths]
    try:
        out = mapping.from_integers(ints, parsed, extras, spec, None)
    except IntegrityError:
        return
    assert out.shape == (len(x), 1)


# -- dictionaries (kind 8) ---------------------------------------------------------------------


def _bursts(n: int, seed: int = 3):
    """Activity counts: zeros, then bursts of values from a small uneven set."""
    rng = np.random.default_rng(seed)
    levels = np.array([0, 3, 7, 12, 20, 35, 61, 104, 180, 310, 540, 930, 1600, 2900])
    on = (np.cumsum(rng.random(n) < 0.02) % 2).astype(bool)
    return np.where(on, levels[rng.integers(0, len(levels), n)], 0)


@pytest.mark.parametrize("dtype", ["int16", "int32", "uint16", "float32", "float64"])
def test_few_uneven_values_take_the_dictionary(dtype):
    x = _bursts(6000).astype(dtype).reshape(-1, 1)
    if dtype.startswith("float"):
        x[7, 0] = -0.0  # its own entry: every bit pattern is a value
    mapped = _int_round_trip(x) if not dtype.startswith("float") else _round_trip(x)
    entry = _side(mapped, dtype, len(x)).maps[0]
    assert entry.kind == mapping.KIND_DICTIONARY
    assert len(entry.table) == len(
        set(x[:, 0].tobytes()[i : i + x.itemsize] for i in range(0, x.nbytes, x.itemsize))
    )
    assert mapped.ints.max() < len(entry.table)


def test_dictionary_inside_nan_runs_and_never_for_many_values():
    x = _bursts(5000).astype(np.float64)
    x[100:140] = np.nan
    mapped = _round_trip(x.reshape(-1, 1))
    entry = _side(mapped, "float64", len(x)).maps[0]
    assert entry.kind == mapping.KIND_RUNS and entry.inner.kind == mapping.KIND_DICTIONARY
    x[200:4000:100] = np.nan
    entry = _side(_round_trip(x.reshape(-1, 1)), "float64", len(x)).maps[0]
    assert entry.kind == mapping.KIND_RUN_TABLE and entry.inner.kind == mapping.KIND_DICTIONARY
    walk = np.cumsum(np.random.default_rng(1).integers(-50, 51, 5000)).astype(np.int32)
    assert _kinds(_int_round_trip(walk.reshape(-1, 1)), "int32", 1) == [mapping.KIND_INTEGER]


def _dictionary_side(values, dtype: str) -> bytes:
    raw = np.asarray(values, dtype=np.dtype(dtype).newbyteorder("<")).tobytes()
    return bytes([mapping.KIND_DICTIONARY]) + mapping._COUNT.pack(len(values)) + raw


@pytest.mark.parametrize(
    ("values", "dtype", "message"),
    [
        ([3, 3], "int16", "not strictly ascending"),
        ([5, 1], "int32", "not strictly ascending"),
        ([0.0, -0.0], "float64", "not strictly ascending"),  # -0.0 orders before 0.0
        ([], "int16", "dictionary size out of range"),
        (list(range(11)), "int16", "dictionary size out of range"),  # more than 10 frames
        ([1, 2], "int64", "64-bit integer"),
    ],
)
def test_bad_dictionaries_are_refused(values, dtype, message):
    with pytest.raises(IntegrityError, match=message):
        mapping.read_side(memoryview(_dictionary_side(values, dtype)), 0, StreamSpec(dtype), 10)


def test_dictionary_ranks_and_versions_are_checked():
    x = _bursts(3000).astype(np.int16).reshape(-1, 1)
    spec = StreamSpec("int16", 1)
    mapped = mapping.to_integers(x, spec, None)
    side = memoryview(mapped.side)
    with pytest.raises(IntegrityError, match="kind 8 does not fit"):
        mapping.read_side(side, 0, spec, len(x), 7)
    parsed, _ = mapping.read_side(side, 0, spec, len(x), 8)
    for bad in (-1, len(parsed.maps[0].table)):
        ints = mapped.ints.copy()
        ints[0, 9] = bad
        with pytest.raises(IntegrityError, match="rank out of range"):
            mapping.from_integers(ints, parsed, [], spec, None)
    with pytest.raises(IntegrityError, match="bounded-error"):
        mapping.from_integers(mapped.ints, parsed, [], spec, 0.5)


@FAST
@given(
    st.integers(0, 2**32 - 1),
    st.sampled_from(["int16", "int32", "uint32", "float32", "float64"]),
    st.integers(1, 40),
    st.integers(0, 600),
)
def test_any_low_cardinality_block_round_trips(seed, dtype, distinct, frames):
    rng = np.random.default_rng(seed)
    width = np.dtype(dtype).itemsize
    pool = rng.integers(0, 256, (distinct, width), dtype=np.uint8).view(f"<u{width}")[:, 0]
    x = pool.view(np.dtype(dtype).newbyteorder("<"))[rng.integers(0, distinct, (frames, 2))]
    x = x.astype(np.dtype(dtype))
    if dtype.startswith("float"):
        _round_trip(x)
    else:
        _int_round_trip(x)


def _int64_samples(draw_values, style: int):
    """Int64 channels of the probes' shapes: few levels, walks, multiples of a step, any."""
    values = np.asarray(draw_values, dtype=np.int64)
    if style == 0:
        return values % 7 - 3
    if style == 1:
        return np.cumsum(values % 5 - 2)
    if style == 2:
        return (values % 40) * 9 - 2**40
    return values


@FAST
@given(
    st.lists(st.integers(-(2**63), 2**63 - 1), max_size=300),
    st.integers(0, 3),
    st.integers(0, 80),
)
def test_compiled_distinct_count_equals_the_sorted_reference(values, style, limit):
    from qres.codec._mapping_kernels import distinct_at_most

    from qres.codec import dictionary

    x = _int64_samples(values, style)
    want = dictionary.distinct(x)
    got = distinct_at_most(x, limit)
    if len(want) > limit:
        assert got is None
    else:
        assert got is not None and got.dtype == np.int64 and np.array_equal(got, want)


@FAST
@given(st.lists(st.integers(-(2**40), 2**40), max_size=600), st.integers(0, 2))
def test_compiled_tenth_gap_equals_the_numpy_reference(values, style):
    from qres.codec._mapping_kernels import tenth_gap

    from qres.codec import dictionary

    x = _int64_samples(values, style)
    gaps = np.diff(dictionary.distinct(x))
    want = int(np.sort(gaps)[len(gaps) // 10]) if len(gaps) > 1 else -1
    assert tenth_gap(x) == want


def test_probe_positions_are_numpy_linspace_and_read_only():
    from qres.codec import dictionary

    for n in (4097, 5394, 26304, 100003):
        got = dictionary.probe_index(n, 4096)
        assert np.array_equal(got, np.linspace(0, n - 1, 4096).astype(np.int64))
        assert dictionary.probe_index(n, 4096) is got and not got.flags.writeable


# -- compiled probes of the decimal view and the scaled lattice ---------------------------------


@FAST
@given(
    st.lists(
        st.floats(allow_nan=False, allow_infinity=False, width=64)
        | st.sampled_from([1e308, -1e308, 0.1, 1e-300, 2.0**53, 1.0]),
        max_size=200,
    )
)
def test_compiled_exact_sum_equals_math_fsum(values):
    import math

    from qres.codec._mapping_kernels import fsum_array

    x = np.array(values, dtype=np.float64)
    try:
        want = math.fsum(values)
    except OverflowError:
        with pytest.raises(OverflowError):
            fsum_array(x)
        return
    got = fsum_array(x)
    assert got == want and math.copysign(1.0, got) == math.copysign(1.0, want)


@st.composite
def precision_channels(draw):
    """Decimal integers k (as mapping.decimal_view gives them) of readings printed with P
    significant digits or with fixed decimals, some not exact."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    frames = draw(st.sampled_from([0, 5, 300, 5000, 9000]))
    decades = draw(st.integers(0, 12))
    values = 10.0 ** rng.uniform(0, decades, frames) * rng.choice([-1.0, 1.0], frames)
    digits = draw(st.integers(1, 16))
    if draw(st.booleans()):  # P significant digits
        k = ref_round_significant(values, digits)
    else:  # fixed decimals
        k = np.rint(values * 10.0 ** (digits % 4))
    k = np.clip(k, -(2.0**51), 2.0**51) + 0.0
    exact = rng.random(frames) >= draw(st.sampled_from([0.0, 0.2, 0.9]))
    return k, exact


@FAST
@given(precision_channels())
def test_compiled_decimal_precision_equals_the_numpy_reference(channel):
    k, exact = channel
    assert mapping._choose_precision(k, exact) == mapping._choose_precision_numpy(k, exact)


@st.composite
def scaled_values(draw):
    """Sorted distinct values of a channel on a scaled lattice (codes times a step, plus an
    offset), rounded to integers or not, with values off the lattice."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    size = draw(st.integers(0, 600))
    step = float(10.0 ** rng.uniform(-4, 4)) * draw(st.sampled_from([1.0, 10 / 4095, 9.81]))
    codes = np.cumsum(rng.integers(1, draw(st.integers(2, 6)), size))
    values = float(rng.uniform(-1e4, 1e4)) + step * codes
    rounded = draw(st.booleans())
    if rounded:
        values = np.rint(values)
    off = rng.random(size) < draw(st.sampled_from([0.0, 0.05, 0.6]))
    values[off] += rng.uniform(-step, step, int(off.sum()))
    return np.unique(values), 0.5 if rounded else 0.0


@FAST
@given(scaled_values())
def test_compiled_scaled_fit_equals_the_numpy_reference(case):
    from qres.codec import scaled

    values, quantum = case
    got = scaled._fit(values, quantum)
    want = scaled.fit_numpy(values, quantum)
    assert (got is None) == (want is None)
    if got is not None:
        assert np.array(got).tobytes() == np.array(want).tobytes()


finite_doubles = st.floats(allow_nan=False, allow_infinity=False)


@FAST
@given(
    st.one_of(finite_doubles, st.floats(-1.0, 1.0), st.floats(1e-12, 1e4)),
    st.one_of(st.integers(1, 1 << 21), st.sampled_from([2, 4, 8, 64, 16, 256, 4096, 65536])),
)
def test_compiled_limit_denominator_equals_fractions(x, most):
    from qres.codec._mapping_kernels import limit_denominator

    want = Fraction(x).limit_denominator(most)
    assert limit_denominator(*x.as_integer_ratio(), most) == (want.numerator, want.denominator)


@st.composite
def fitted_lattices(draw):
    """A fitted ``(a, b)``: near a simple fraction of a step or not, any offset."""
    step = draw(st.one_of(st.floats(1e-9, 1e9), st.sampled_from([10 / 4095, 5 / 16384, 9.81])))
    step *= draw(st.sampled_from([1.0, 1 + 1e-9, 1 - 3e-8, 1 + 1e-5]))
    a = draw(st.one_of(finite_doubles, st.floats(-2 * step, 2 * step), st.just(0.0)))
    return a, step


@FAST
@given(fitted_lattices())
def test_scaled_candidates_equal_the_fraction_reference(lattice):
    from qres.codec import scaled

    def outcome(candidates):
        try:
            return np.array(candidates(*lattice)).tobytes()
        except OverflowError as error:  # offsets beyond binary64, in both alike
            return str(error)

    assert outcome(scaled._candidates) == outcome(scaled.candidates_fraction)


def _as_probe(x, dtype: str):
    """Lattice samples ``x`` (float64) as a probe of ``dtype`` samples: the finite ones of a
    float type, or rounded and clipped to an integer type (as int64)."""
    if dtype.startswith("float"):
        probe = x.astype(dtype)
        return probe[np.isfinite(probe)]
    info = np.iinfo(dtype)
    return np.clip(np.nan_to_num(np.rint(x)), info.min, info.max).astype(np.int64)


@FAST
@given(
    st.sampled_from(["float64", "float32", "int16", "int32", "uint16"]),
    st.integers(0, 2**32 - 1),
    fitted_lattices(),
    st.integers(-1, 300),
)
def test_compiled_scaled_hits_equal_the_numpy_reference(dtype, seed, lattice, beat):
    """The compiled probe of a lattice counts the samples numpy's decode(codes) reproduces,
    and once it stops early its count still cannot pass ``beat``."""
    from qres.codec import dictionary, scaled

    rng = np.random.default_rng(seed)
    a, b = lattice
    size = int(rng.integers(0, 300))
    codes = rng.integers(-(2**20), 2**20, size).astype(np.float64)
    x = a + b * codes
    noisy = rng.random(size) < 0.3
    x[noisy] += rng.normal(0.0, b, int(noisy.sum()))
    probe = _as_probe(x, dtype)
    want = scaled.hits_numpy(probe, a, b, dtype)
    assert scaled.hits_of(probe, a, b, dtype) == want
    got = scaled.hits_of(probe, a, b, dtype, beat)
    assert got == want if want > beat else got <= beat
    # Distinct values weighted by their counts, as the lattice search tries them.
    values, counts = dictionary.distinct_counts(probe.astype(np.float64))
    values = values.astype(probe.dtype)
    assert np.array_equal(np.repeat(values, counts), np.sort(probe))
    got = scaled.hits_of(values, a, b, dtype, beat, counts)
    assert got == want if want > beat else got <= beat


@FAST
@given(
    st.integers(0, 2**32 - 1),
    st.integers(0, 3000),
    st.sampled_from([3, 40, 1000, 2**40, 2**62]),
)
def test_compiled_ranks_equal_searchsorted(seed, size, spread):
    from qres.codec import dictionary

    rng = np.random.default_rng(seed)
    view = rng.integers(-spread, spread, size)
    values = dictionary.distinct(view)
    assert np.array_equal(dictionary.ranks(view, values), np.searchsorted(values, view))
    others = dictionary.distinct(rng.integers(-spread, spread, size // 7 + 1))
    assert np.array_equal(dictionary.ranks(view, others), np.searchsorted(others, view))


# -- integer channels: the compiled views against their numpy formulation ---------------------


def _numpy_bits(stream) -> int:
    """mapping._bit_cost: the size estimate of a stream in numpy (frexp exponents)."""
    return mapping._bit_cost(np.asarray(stream, dtype=np.int64))


@st.composite
def integer_channels(draw):
    """Int64 channels shaped like sensor readings: calibrated codes rint(a + b*n) with a few
    outliers, few levels, walks, any; short, about the probe's length, longer."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    size = draw(st.sampled_from([0, 1, 15, 16, 17, 200, 4095, 4096, 4097, 5394, 9000]))
    style = draw(st.integers(0, 4))
    if style == 0:
        b = draw(st.sampled_from([9.81, 10.0 / 4095 * 4000, 2.5, 9.7, 31.25]))
        a = draw(st.sampled_from([0.0, 0.5, -0.25, 3.3]))
        codes = np.cumsum(rng.integers(-3, 4, size))
        x = np.rint(a + b * codes)
        odd = rng.random(size) < draw(st.sampled_from([0.0, 0.01, 0.3]))
        x[odd] += rng.integers(-2, 3, int(odd.sum()))
    elif style == 1:
        levels = rng.integers(-(2**31), 2**31, draw(st.integers(1, 600)))
        x = levels[rng.integers(0, len(levels), size)]
    elif style == 2:
        x = np.cumsum(rng.integers(-40, 41, size))
    elif style == 3:
        x = rng.integers(0, draw(st.sampled_from([2, 12, 400])), size) * 7 - 1000
    else:
        x = rng.integers(-(2**31), 2**31, size)
    return np.clip(x, -(2**31), 2**31 - 1).astype(np.int64)


def _integer_views_numpy(x, dtype: str):
    """mapping._integer_views in numpy: the scaled lattice and the dictionary each computed
    whole (codes, decode, ranks by searchsorted, the table by sorting), the cheaper kept."""
    from qres.codec import dictionary, scaled

    plain = _numpy_bits(np.diff(x))
    found = []
    lattice = scaled.find(x, dtype)
    if lattice is not None:
        n = scaled.codes(x, *lattice)
        correction = x - scaled.decode(n, *lattice, dtype)
        flags = mapping.FLAG_ULP_CORRECTION if correction.any() else 0
        cost = _numpy_bits(np.diff(n)) + (_numpy_bits(correction) if flags else 0) + 136
        if cost < mapping._SIGNIFICANT_GAIN * plain:
            cmap = mapping.ChannelMap(mapping.KIND_SCALED, flags=flags, lattice=lattice)
            found.append((n, cmap, [correction] if flags else [], cost))
    values = None
    if len(x) >= 2 * dictionary.DENSITY:
        values = dictionary.distinct(x)
        if len(x) > dictionary.PROBE:
            screen = dictionary.distinct(x[dictionary.probe_index(len(x), dictionary.PROBE)])
            if len(screen) > dictionary.PROBE // dictionary.DENSITY:
                values = None
        if values is not None and len(values) > len(x) // dictionary.DENSITY:
            values = None
    if values is not None:
        ranks = np.searchsorted(values, x)
        cost = _numpy_bits(np.diff(ranks)) + 8 * np.dtype(dtype).itemsize * len(values) + 40
        if cost < mapping._SIGNIFICANT_GAIN * plain:
            cmap = mapping.ChannelMap(mapping.KIND_DICTIONARY, table=values)
            found.append((ranks, cmap, [], cost))
    return min(found, key=lambda f: f[3]) if found else None


@settings(max_examples=150, deadline=None)
@given(integer_channels(), st.sampled_from(["int16", "int32", "uint16"]))
def test_integer_views_equal_their_numpy_formulation(x, dtype):
    """The scaled lattice or dictionary an integer channel takes (every decision, integer and
    stream) is the one the whole numpy computation takes."""
    want = _integer_views_numpy(x, dtype)
    got = mapping._integer_views(x, dtype)
    # to_integers passes rows of a Fortran-ordered block: strided, the same outcome.
    strided = mapping._integer_views(np.asfortranarray(np.stack([x, x]))[1], dtype)
    assert (got is None) == (strided is None)
    if got is not None:
        assert got[3] == strided[3] and np.array_equal(got[0], strided[0])
    if want is None:
        assert got is None
        return
    assert got is not None
    assert got[1].kind == want[1].kind and got[3] == want[3]
    assert got[1].flags == want[1].flags and got[1].lattice == want[1].lattice
    if want[1].kind == mapping.KIND_DICTIONARY:
        assert np.array_equal(got[1].table, want[1].table)
    assert got[0].dtype == np.int64 and np.array_equal(got[0], want[0])
    assert len(got[2]) == len(want[2])
    assert all(np.array_equal(g, w) for g, w in zip(got[2], want[2], strict=True))


@FAST
@given(integer_channels())
def test_compiled_integer_costs_equal_numpy(x):
    from qres.codec._mapping_kernels import bit_cost, integer_costs

    plain, changes = integer_costs(x)
    assert plain == _numpy_bits(np.diff(x)) == bit_cost(x, True)
    assert changes == np.count_nonzero(np.diff(x))


@FAST
@given(integer_channels(), st.integers(0, 3))
def test_compiled_distinct_counts_equal_the_sorted_reference(x, shift):
    from qres.codec._mapping_kernels import distinct_counts_int

    from qres.codec import dictionary

    x = x << shift if shift < 3 else x * (2**31)  # spans from a few values to 2**63
    values, counts = distinct_counts_int(x)
    want_values, want_counts = dictionary.distinct_counts_numpy(x)
    assert values.dtype == counts.dtype == np.int64
    assert np.array_equal(values, want_values) and np.array_equal(counts, want_counts)


@FAST
@given(
    st.lists(st.one_of(st.floats(allow_nan=True), st.sampled_from([0.0, -0.0, 1.5])), max_size=300)
)
def test_compiled_float_runs_equal_the_numpy_reference(values):
    from qres.codec import dictionary

    x = np.array(values, dtype=np.float64)
    got = dictionary.distinct_counts(x)
    want = dictionary.distinct_counts_numpy(x)
    assert got[0].tobytes() == want[0].tobytes()  # -0.0 and NaN payloads alike
    assert np.array_equal(got[1], want[1]) and got[1].dtype == want[1].dtype


@FAST
@given(integer_channels(), st.integers(0, 2**32 - 1))
def test_compiled_rank_cost_equals_searchsorted(x, seed):
    from qres.codec._mapping_kernels import rank_bit_cost

    from qres.codec import dictionary

    values = dictionary.distinct(x)
    assert rank_bit_cost(x, values) == _numpy_bits(np.diff(np.searchsorted(values, x)))
    rng = np.random.default_rng(seed)
    others = dictionary.distinct(rng.choice(x, len(x) // 5 + 1)) if len(x) else values
    assert rank_bit_cost(x, others) == _numpy_bits(np.diff(np.searchsorted(others, x)))


@FAST
@given(integer_channels(), fitted_lattices(), st.sampled_from(["int16", "int32"]))
def test_compiled_scaled_integer_pass_equals_numpy(x, lattice, dtype):
    """Codes, corrections and both bit costs of the one-pass kernel are numpy's, on spans
    small enough for its table of values and on wide ones."""
    from qres.codec._mapping_kernels import scaled_integer_encode

    from qres.codec import scaled

    # (0.5, 2.5): every other code decodes to a tie (x.5), which rint rounds to even.
    for a, b in (lattice, (0.5, 2.5), (-0.25, 9.81)):
        n, correction, code_bits, correction_bits = scaled_integer_encode(x, a, b)
        want_n = scaled.codes(x, a, b)
        want_c = x - scaled.decode(want_n, a, b, dtype)
        assert np.array_equal(n, want_n)
        if want_c.any():
            assert np.array_equal(correction, want_c)
            assert correction_bits == _numpy_bits(want_c)
        else:
            assert correction is None
        assert code_bits == _numpy_bits(np.diff(want_n))


@FAST
@given(
    st.sampled_from(["float64", "float32", "int16", "int32"]),
    st.integers(0, 2**32 - 1),
    st.lists(fitted_lattices(), min_size=1, max_size=8),
)
def test_compiled_lattice_search_equals_the_numpy_loop(dtype, seed, lattices):
    """scaled_best picks the candidate the numpy loop over hits_numpy picks (the first that
    reproduces the most, over half of the probe)."""
    from qres.codec._mapping_kernels import scaled_best

    from qres.codec import dictionary, scaled

    rng = np.random.default_rng(seed)
    a, b = lattices[0]
    size = int(rng.integers(1, 300))
    x = a + b * rng.integers(-(2**10), 2**10, size).astype(np.float64)
    noisy = rng.random(size) < rng.random()
    x[noisy] += rng.normal(0.0, b, int(noisy.sum()))
    probe = _as_probe(x, dtype)
    values, counts = dictionary.distinct_counts_numpy(probe)
    candidates = [*lattices, (float("nan"), 1.0), (0.0, -1.0)]
    want, hits = -1, len(probe) // 2
    for j, (ca, cb) in enumerate(candidates):
        if np.isfinite(ca) and np.isfinite(cb) and cb > 0:
            same = scaled.hits_numpy(probe, ca, cb, dtype)
            if same > hits:
                want, hits = j, same
                if same == len(probe):
                    break
    pairs = np.array(candidates, dtype=np.float64)
    assert scaled_best(values, counts, pairs[:, 0], pairs[:, 1]) == want


@FAST
@given(integer_channels(), st.integers(0, 2**20), st.sampled_from(["int16", "float64"]))
def test_dictionary_bound_never_changes_the_choice(x, rival, dtype):
    """The dictionary's table-size bound only skips tables that could not win: against any
    rival the compiled view gives what the whole numpy computation gives."""
    from qres.codec import dictionary

    view = x if dtype == "int16" else mapping._monotonic_bits(x.astype(np.float64), dtype)
    got = mapping._dictionary_channel(x, view, dtype, rival)
    values = dictionary.table(view)
    want = None
    if values is not None:
        ranks = np.searchsorted(values, view)
        width = 8 * np.dtype(dtype).itemsize
        cost = _numpy_bits(np.diff(ranks)) + width * len(values) + 40
        if cost < mapping._SIGNIFICANT_GAIN * rival:
            want = ranks, cost
    if want is None:
        assert got is None
    else:
        assert got is not None and got[3] == want[1] and np.array_equal(got[0], want[0])
