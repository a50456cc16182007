"""The residual coders: round trips, a pure-Python Rice reference, costs, damage and determinism."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qres.kernel import plugins
from qres.kernel.config import Location
from qres.kernel.errors import IntegrityError, ProfileError, QresError
from qres.kinds.coder import Coder, seal

I64_MIN, I64_MAX = -(2**63), 2**63 - 1
NAMES = ("rice", "arith")
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def make(name: str, **settings_) -> Coder:
    return plugins.create("coder", {"use": name, **settings_}, Location("<test>"))


def lcg(n: int, seed: int = 1) -> list[int]:
    """A portable pseudo-random stream (64-bit LCG), independent of numpy's generators."""
    out, x = [], seed
    for _ in range(n):
        x = (x * 6364136223846793005 + 1442695040888963407) % 2**64
        out.append(x)
    return out


def laplacian(n: int, scale: float, seed: int = 7) -> np.ndarray:
    return np.random.default_rng(seed).laplace(0.0, scale, n).round().astype(np.int64)


# --------------------------------------------------------------------------------------------
# A plain-Python reference of the Rice bitstream (docs/coders.md), encoder and decoder.

RUN_ORDER = [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3,
             4, 4, 5, 5, 6, 6, 7, 7, 8, 9, 10, 11, 12, 13, 14, 15]  # fmt: skip
LIMIT = 32


def zigzag(r: int) -> int:
    return (2 * r) if r >= 0 else (-2 * r - 1)


def unzigzag(u: int) -> int:
    return (u >> 1) if u % 2 == 0 else -((u + 1) >> 1)


class RiceModel:
    """The state both sides of the Rice coder keep: the running mean and the run index."""

    def __init__(self, shift: int):
        self.shift, self.acc, self.idx = shift, 0, 0

    def k(self) -> int:
        return max(0, self.acc.bit_length() - self.shift - 1)

    def update(self, u: int) -> None:
        self.acc = self.acc - (self.acc >> self.shift) + min(u, 1 << (63 - self.shift))

    def zeros(self, count: int) -> None:
        for _ in range(count):
            if self.acc < (1 << self.shift):
                break
            self.update(0)


def ref_rice_encode(values: list[int], shift: int) -> bytes:
    bits: list[str] = []
    m = RiceModel(shift)

    def value(u: int, k: int) -> None:
        q = u >> k
        if q < LIMIT:
            bits.append("0" * q + "1" + (format(u & ((1 << k) - 1), f"0{k}b") if k else ""))
        else:
            b = u.bit_length() - 1
            bits.append("0" * LIMIT + "1" + format(b, "06b"))
            bits.append(format(u - (1 << b), f"0{b}b") if b else "")

    i, n, prev_zero = 0, len(values), False
    while i < n:
        if prev_zero:
            j = i
            while j < n and values[j] == 0:
                j += 1
            run = j - i
            m.zeros(run)
            while run >= 1 << RUN_ORDER[m.idx]:
                bits.append("1")
                run -= 1 << RUN_ORDER[m.idx]
                m.idx = min(m.idx + 1, 31)
            if j == n:
                if run:
                    bits.append("1")
                break
            order = RUN_ORDER[m.idx]
            bits.append("0" + (format(run, f"0{order}b") if order else ""))
            u = zigzag(values[j])
            value(u - 1, m.k())
            m.update(u)
            m.idx = max(m.idx - 1, 0)
            prev_zero, i = False, j + 1
            continue
        u = zigzag(values[i])
        value(u, m.k())
        m.update(u)
        prev_zero, i = u == 0, i + 1
    text = "".join(bits)
    text += "0" * (-len(text) % 8)
    return int(text, 2).to_bytes(len(text) // 8, "big") if text else b""


class BitReader:
    def __init__(self, data: bytes):
        self.bits = "".join(format(b, "08b") for b in data)
        self.pos = 0

    def read(self, count: int) -> int:
        if self.pos + count > len(self.bits):
            raise IntegrityError("reference: truncated")
        chunk = self.bits[self.pos : self.pos + count]
        self.pos += count
        return int(chunk, 2) if count else 0

    def unary(self) -> int:
        q = 0
        while self.read(1) == 0:
            q += 1
            if q > LIMIT:
                raise IntegrityError("reference: unary code too long")
        return q


def ref_rice_decode(data: bytes, n: int, shift: int) -> list[int]:
    r, m, out, prev_zero = BitReader(data), RiceModel(shift), [], False

    def value(k: int) -> int:
        q = r.unary()
        if k > 58 and q >> (64 - k):
            raise IntegrityError("reference: quotient overflows")
        if q < LIMIT:
            return (q << k) | r.read(k)
        b = r.read(6)
        u = (1 << b) | r.read(b)
        if u >> k < LIMIT:
            raise IntegrityError("reference: needless escape")
        return u

    while len(out) < n:
        if prev_zero:
            if r.read(1):
                seg = min(1 << RUN_ORDER[m.idx], n - len(out))
                out += [0] * seg
                m.zeros(seg)
                m.idx = min(m.idx + 1, 31)
                continue
            run = r.read(RUN_ORDER[m.idx])
            if run >= n - len(out):
                raise IntegrityError("reference: run overflows")
            out += [0] * run
            m.zeros(run)
            u = value(m.k()) + 1
            if u >= 1 << 64:
                raise IntegrityError("reference: value overflows")
            out.append(unzigzag(u))
            m.update(u)
            m.idx = max(m.idx - 1, 0)
            prev_zero = False
            continue
        u = value(m.k())
        out.append(unzigzag(u))
        m.update(u)
        prev_zero = u == 0
    if (r.pos + 7) // 8 != len(data) or "1" in r.bits[r.pos :]:
        raise IntegrityError("reference: bytes left over")
    return out


# --------------------------------------------------------------------------------------------
# Strategies.

int64s = st.integers(I64_MIN, I64_MAX)
small = st.integers(-40, 40)
extremes = st.sampled_from([I64_MIN, I64_MIN + 1, -(2**33), 2**33, I64_MAX - 1, I64_MAX, 0])
pieces = st.one_of(
    st.lists(st.one_of(small, small, extremes, int64s), max_size=40),
    st.integers(1, 3000).map(lambda k: [0] * k),  # long zero runs
    st.tuples(st.integers(1, 500), int64s).map(lambda t: [0] * t[0] + [t[1]]),  # spike
    st.lists(st.integers(-(2**33), 2**33), max_size=30),
)
residual_arrays = st.lists(pieces, max_size=6).map(
    lambda parts: np.array([v for p in parts for v in p], dtype=np.int64)
)


# --------------------------------------------------------------------------------------------
# Round trips.


@pytest.mark.parametrize("name", NAMES)
@FUZZ
@given(values=residual_arrays, shift=st.integers(1, 16))
def test_round_trip_any_int64(name, values, shift):
    coder = make(name, adapt_shift=shift)
    data = coder.encode(values)
    back = coder.decode(data, values.size)
    assert back.dtype == np.int64 and back.shape == values.shape
    np.testing.assert_array_equal(back, values)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    "values",
    [
        [],
        [0],
        [I64_MIN],
        [I64_MAX],
        [I64_MIN, I64_MAX, I64_MIN, 0, I64_MAX],
        [1] * 5 + [0] * 100_000 + [-1],
        [0] * 70_000,
    ],
    ids=["empty", "zero", "min", "max", "extremes", "zero-run", "all-zero"],
)
def test_round_trip_edges(name, values):
    arr = np.array(values, dtype=np.int64)
    for checksum in (True, False):
        coder = make(name, checksum=checksum)
        np.testing.assert_array_equal(coder.decode(coder.encode(arr), arr.size), arr)


@pytest.mark.parametrize("name", NAMES)
def test_round_trip_full_range_noise_and_settings(name):
    noise = np.array(lcg(3000, seed=3), dtype=np.uint64).view(np.int64)
    laplace = laplacian(20_000, 300.0)
    shifts = [1, 16] if name == "rice" else [1, 16]
    for shift in shifts:
        extra = {"rate_shift": 4} if name == "arith" else {}
        coder = make(name, adapt_shift=shift, **extra)
        for arr in (noise, laplace):
            np.testing.assert_array_equal(coder.decode(coder.encode(arr), arr.size), arr)


def test_input_types_are_checked():
    coder = make("rice")
    assert coder.encode(np.array([1, 2, 3], dtype=np.int16)) == coder.encode([1, 2, 3])
    with pytest.raises(QresError, match="1-D"):
        coder.encode(np.zeros((2, 2), dtype=np.int64))
    with pytest.raises(QresError, match="integers"):
        coder.encode(np.array([0.5]))
    with pytest.raises(QresError, match="uint64"):
        coder.encode(np.array([2**64 - 1], dtype=np.uint64))
    for bad in (-1, 1.5, True, "3", 2**40):
        with pytest.raises(IntegrityError, match="sample count"):
            coder.decode(coder.encode([1]), bad)
    assert coder.decode(coder.encode([4, 5]), np.int32(2)).tolist() == [4, 5]


# --------------------------------------------------------------------------------------------
# The Rice coder against its pure-Python reference.


@settings(max_examples=40, deadline=None)
@given(
    values=st.lists(
        st.one_of(st.integers(-20, 20), st.just(0), int64s, st.integers(-(2**33), 2**33)),
        max_size=120,
    ),
    shift=st.integers(1, 16),
)
def test_rice_matches_reference(values, shift):
    coder = make("rice", adapt_shift=shift, checksum=False)
    data = coder.encode(np.array(values, dtype=np.int64))
    assert data == ref_rice_encode(values, shift)
    assert ref_rice_decode(data, len(values), shift) == values
    assert coder.decode(data, len(values)).tolist() == values


def test_rice_reference_on_random_data():
    rng = np.random.default_rng(11)
    scales = np.repeat([0.2, 3.0, 40.0, 2000.0, 0.0, 5e6], 300)
    values = (rng.laplace(0, 1, scales.size) * scales).round().astype(np.int64)
    values[::97] = rng.integers(-(2**62), 2**62, values[::97].size)
    for shift in (2, 3, 5):
        coder = make("rice", adapt_shift=shift, checksum=False)
        data = coder.encode(values)
        assert data == ref_rice_encode(values.tolist(), shift)
        assert ref_rice_decode(data, values.size, shift) == values.tolist()


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=64), n=st.integers(0, 200), shift=st.integers(1, 16))
def test_rice_garbage_agrees_with_reference(data, n, shift):
    coder = make("rice", adapt_shift=shift, checksum=False)
    try:
        expected = ref_rice_decode(data, n, shift)
    except IntegrityError:
        with pytest.raises(IntegrityError):
            coder.decode(data, n)
    else:
        assert coder.decode(data, n).tolist() == expected


# --------------------------------------------------------------------------------------------
# Costs.


def entropy_bits(values: np.ndarray) -> float:
    _, counts = np.unique(values, return_counts=True)
    p = counts / counts.sum()
    return float(-(counts * np.log2(p)).sum())


@pytest.mark.parametrize("name", NAMES)
def test_zero_runs_cost_far_below_a_bit(name):
    coder = make(name, checksum=False)
    zeros = np.zeros(100_000, dtype=np.int64)
    assert len(coder.encode(zeros)) * 8 / zeros.size < 0.01
    # Zero runs between bursts of activity and lone spikes.
    sparse = np.zeros(100_000, dtype=np.int64)
    sparse[::5000] = laplacian(20, 1e6)
    sparse[50_000:50_200] = laplacian(200, 50.0)
    assert len(coder.encode(sparse)) * 8 / sparse.size < 0.1


def laplacian_source_entropy(scale: float) -> float:
    """Entropy in bits of round(Laplace(0, scale)), the source of :func:`laplacian`."""
    k = np.arange(-int(60 * scale) - 2, int(60 * scale) + 3, dtype=np.float64)

    def cdf(x):
        return np.where(x < 0, 0.5 * np.exp(np.minimum(x, 0) / scale), 1 - 0.5 * np.exp(-x / scale))

    p = cdf(k + 0.5) - cdf(k - 0.5)
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


def test_arith_is_close_to_the_entropy_of_stationary_residuals():
    # Within 1% of the source entropy (the empirical order-0 entropy of wide alphabets is
    # optimistic: it does not pay for its table).
    coder = make("arith", checksum=False)
    for scale in (2.0, 40.0, 3000.0):
        values = laplacian(200_000, scale, seed=int(scale))
        bits = len(coder.encode(values)) * 8 / values.size
        assert bits < 1.01 * laplacian_source_entropy(scale), scale
        assert bits < 1.015 * entropy_bits(values) / values.size, scale


def test_arith_beats_static_entropy_on_nonstationary_residuals():
    # Quiet and busy stretches: an order-0 code for the mixture pays for both at once.
    parts = [laplacian(5000, scale, seed=i) for i, scale in enumerate([2, 300, 5, 2000, 1] * 4)]
    values = np.concatenate(parts)
    arith = len(make("arith", checksum=False).encode(values)) * 8
    rice = len(make("rice", checksum=False).encode(values)) * 8
    assert arith < 0.9 * entropy_bits(values)
    assert rice < entropy_bits(values)


def test_rice_is_close_to_the_entropy_of_laplacian_residuals():
    values = laplacian(200_000, 60.0)
    ratio = len(make("rice", checksum=False).encode(values)) * 8 / entropy_bits(values)
    assert ratio < 1.03


# --------------------------------------------------------------------------------------------
# Damage: truncation, flipped bits and garbage.

SAMPLE = np.concatenate([laplacian(3000, 50.0), np.zeros(500, np.int64), laplacian(500, 2.0)])


@pytest.mark.parametrize("name", NAMES)
@FUZZ
@given(cut=st.integers(1, 10_000))
def test_truncation_is_detected(name, cut):
    coder = make(name)
    data = coder.encode(SAMPLE)
    with pytest.raises(IntegrityError):
        coder.decode(data[: max(0, len(data) - cut)], SAMPLE.size)


@pytest.mark.parametrize("name", NAMES)
@FUZZ
@given(flips=st.lists(st.integers(0, 10**9), min_size=1, max_size=3))
def test_flipped_bits_are_detected(name, flips):
    coder = make(name)
    data = bytearray(coder.encode(SAMPLE))
    for f in set(flips):
        data[(f // 8) % len(data)] ^= 1 << (f % 8)
    if bytes(data) != coder.encode(SAMPLE):
        with pytest.raises(IntegrityError):
            coder.decode(bytes(data), SAMPLE.size)


@pytest.mark.parametrize("name", NAMES)
def test_wrong_sample_count_is_detected(name):
    coder = make(name)
    data = coder.encode(SAMPLE)
    for n in (0, SAMPLE.size - 1, SAMPLE.size + 1):
        with pytest.raises(IntegrityError):
            coder.decode(data, n)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("checksum", [True, False])
@FUZZ
@given(data=st.binary(max_size=300), n=st.integers(0, 5000))
def test_garbage_never_crashes(name, checksum, data, n):
    coder = make(name, checksum=checksum)
    try:
        out = coder.decode(data, n)
    except IntegrityError:
        return
    assert out.dtype == np.int64 and out.shape == (n,)


@pytest.mark.parametrize("name", NAMES)
@FUZZ
@given(data=st.binary(min_size=1, max_size=200), n=st.integers(1, 4000))
def test_sealed_garbage_is_rejected_or_exact(name, data, n):
    # Valid checksums over random payloads: decoding must still check the bitstream itself.
    coder = make(name)
    try:
        out = coder.decode(seal(data, n), n)
    except IntegrityError:
        return
    assert out.shape == (n,)
    assert coder.encode(out) == seal(data, n)


@pytest.mark.parametrize("name", NAMES)
def test_unchecked_truncation_never_crashes(name):
    coder = make(name, checksum=False)
    data = coder.encode(SAMPLE)
    for cut in range(1, min(len(data), 200)):
        try:
            out = coder.decode(data[:-cut], SAMPLE.size)
        except IntegrityError:
            continue
        assert out.shape == SAMPLE.shape


# --------------------------------------------------------------------------------------------
# Determinism and the pinned format.

# sha256 of the encodings of PINNED below; a change here is a change of the bitstream format.
GOLDEN = {
    "rice": "81f7e8ce7a71aaf8d9d6268bebe4ee4ce68a0505607a323c0ab5bdfbb1c7f15e",
    "arith": "33567b763ed8f20de34226dc21cb3b90c37e2eb8586d1beaa8ef17715660e66c",
}


def pinned() -> np.ndarray:
    raw = lcg(6000, seed=2024)
    scale = [1 << (x >> 58) for x in raw]  # magnitudes over many octaves
    values = [((x >> 20) % (2 * s + 1)) - s for x, s in zip(raw, scale, strict=True)]
    values[1000:1500] = [0] * 500
    values[2000:2010] = [I64_MIN, I64_MAX] * 5
    return np.array(values, dtype=np.int64)


@pytest.mark.parametrize("name", NAMES)
def test_encoding_is_deterministic_and_pinned(name):
    values = pinned()
    first = make(name).encode(values)
    assert make(name).encode(values.copy()) == first
    coder = make(name)
    assert coder.encode(values) == coder.encode(values) == first  # no state leaks between calls
    assert hashlib.sha256(first).hexdigest() == GOLDEN[name]


# --------------------------------------------------------------------------------------------
# Plugin surface.


@pytest.mark.parametrize("name", NAMES)
def test_registered_with_settings_and_memory(name):
    cls = plugins.get_plugin("coder", name)
    assert issubclass(cls, Coder)
    coder = make(name, adapt_shift=5)
    assert coder.get_config()["adapt_shift"] == 5
    assert make(name, **{k: v for k, v in coder.get_config().items() if k != "use"}).config == (
        coder.config
    )
    assert 0 < cls.memory_bytes(coder.config) < 256 * 1024
    for bad in ({"adapt_shift": 0}, {"adapt_shift": 17}, {"adapt_shift": "3"}, {"nope": 1}):
        with pytest.raises(ProfileError):
            make(name, **bad)


def test_rice_is_tiny_and_arith_bounded():
    assert make("rice").memory_bytes(make("rice").config) <= 128
    with pytest.raises(ProfileError):
        make("arith", rate_shift=3)


def test_log2_helper_sanity():
    # The reference zigzag covers the whole int64 range.
    assert zigzag(I64_MIN) == 2**64 - 1 and unzigzag(2**64 - 1) == I64_MIN
    assert all(unzigzag(zigzag(v)) == v for v in (-3, -1, 0, 1, 7, I64_MAX))
    assert math.isclose(entropy_bits(np.array([0, 1])), 2.0)


# --------------------------------------------------------------------------------------------
# Segments (arith): runs of residuals with their own zero-flag contexts.


@FUZZ
@given(values=residual_arrays, cuts=st.lists(st.integers(0, 10**6), max_size=12))
def test_arith_round_trips_with_segments(values, cuts):
    n = values.size
    edges = sorted({0, n, *(c % (n + 1) for c in cuts)})
    segments = [b - a for a, b in zip(edges, edges[1:], strict=False)] + [0]
    coder = make("arith")
    data = coder.encode(values, segments=segments)
    np.testing.assert_array_equal(coder.decode(data, n, segments=segments), values)


def test_arith_segments_cost_less_on_interpolation_levels_and_none_changes_nothing():
    rng = np.random.default_rng(0)
    walk = np.cumsum(np.convolve(rng.integers(-50, 51, 65536), np.ones(16, int), "same")) // 8
    pred = plugins.create("predictor", {"use": "interp"}, Location("<test>"))
    values = pred.encode(walk, 256)
    segments = pred.segments(values.size)
    coder = make("arith")
    plain = coder.encode(values)
    assert coder.encode(values, segments=None) == plain
    split = coder.encode(values, segments=segments)
    assert len(split) < 0.99 * len(plain)  # measured 1205 vs 1231 bytes
    np.testing.assert_array_equal(coder.decode(split, values.size, segments=segments), values)
    with pytest.raises(QresError, match="adding up to"):
        coder.encode(values, segments=[1, 2])
    with pytest.raises(QresError, match="adding up to"):
        coder.decode(split, values.size, segments=[-1, values.size + 1])
    assert make("arith").uses_segments and not make("rice").uses_segments


# --------------------------------------------------------------------------------------------
# Open streams (arith): a row coded on from its coded prefix gives the bytes of the whole.


@FUZZ
@given(
    values=residual_arrays,
    cuts=st.lists(st.integers(0, 10**6), max_size=4),
    shift=st.integers(1, 16),
    checksum=st.booleans(),
)
def test_arith_resumed_stream_equals_one_encode(values, cuts, shift, checksum):
    coder = make("arith", adapt_shift=shift, checksum=checksum)
    edges = sorted({0, values.size, *(c % (values.size + 1) for c in cuts)})
    data, stream = coder.encode_open(values[: edges[1]] if len(edges) > 1 else values)
    assert data == coder.encode(values[: edges[1]] if len(edges) > 1 else values)
    for a, b in zip(edges[1:], edges[2:], strict=False):
        data = coder.resume(stream, values[a:b])
        assert data == coder.encode(values[:b])
    assert stream.finished() == stream.finished()  # finishing leaves the stream open
    np.testing.assert_array_equal(coder.decode(data, values.size), values)


@FUZZ
@given(values=residual_arrays, cut=st.integers(0, 10**6))
def test_arith_forked_stream_goes_on_apart(values, cut):
    coder = make("arith")
    at = cut % (values.size + 1)
    _, stream = coder.encode_open(values[:at])
    twin = coder.fork(stream)
    assert coder.resume(stream, values[at:]) == coder.encode(values)
    assert coder.resume(twin, values[at:][::-1].copy()) == coder.encode(
        np.concatenate([values[:at], values[at:][::-1]])
    )


def test_a_coder_without_open_streams_codes_plainly():
    rice = make("rice")
    values = np.arange(-50, 50, dtype=np.int64)
    data, stream = rice.encode_open(values)
    assert stream is None and data == rice.encode(values)
    with pytest.raises(NotImplementedError, match="cannot continue"):
        rice.resume(stream, values)
    with pytest.raises(NotImplementedError, match="cannot continue"):
        rice.fork(stream)
