"""The cheap size estimate that ranks per-channel polynomial candidates: integer-only (the
same on every machine), ordered like real coded sizes on clear cases, and the compiled estimate
(``qres.codec._estimate``) equal to the plain-Python reference below on any residuals."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from qres.codec import _estimate, pipeline
from qres.kernel import plugins
from qres.kernel.config import Location


def reference_log2_q16(v: int) -> int:
    """log2(v) for an integer v >= 1 in Q16, by integer squaring (Python integers)."""
    exp = v.bit_length() - 1
    x = (v << 32) >> exp  # v / 2**exp in Q32, in [1, 2)
    frac = 0
    for bit in range(15, -1, -1):
        x = (x * x) >> 32
        if x >= 2 << 32:
            x >>= 1
            frac |= 1 << bit
    return (exp << 16) | frac


def reference_estimated_bits(residuals) -> int:
    """The estimate in numpy and Python integers: order-0 entropy of the signed bit-length
    classes (Q16, truncated) plus the bits below each leading one."""
    n = len(residuals)
    if n == 0:
        return 0
    mag = np.abs(residuals.astype(np.float64))
    cls = np.frexp(mag)[1].astype(np.int64)  # bit length of |r| (0 for 0)
    mantissa = int(cls.sum()) - int(np.count_nonzero(cls))
    counts = np.bincount(np.where(residuals < 0, 65 - cls, 65 + cls), minlength=131)
    entropy = n * reference_log2_q16(n) - sum(
        int(c) * reference_log2_q16(int(c)) for c in counts[counts > 0]
    )
    return (entropy >> 16) + mantissa


@given(st.integers(1, 2**64 - 1))
def test_compiled_log2_q16_equals_the_reference(v):
    assert _estimate.log2_q16(v) == reference_log2_q16(v)


@given(
    st.lists(
        st.one_of(
            st.integers(-(2**63), 2**63 - 1),
            st.integers(-300, 300),
            st.sampled_from(
                [0, -1, 1, 2**53 - 1, 2**53, 2**53 + 1, -(2**53), -(2**53) - 1, 2**63 - 1, -(2**63)]
            ),
        ),
        max_size=400,
    )
)
def test_compiled_estimate_equals_the_reference(values):
    r = np.array(values, dtype=np.int64)
    assert pipeline._estimated_bits(r) == reference_estimated_bits(r)
    assert pipeline._estimated_bits(r[::2]) == reference_estimated_bits(r[::2])  # strided


@given(st.integers(1, 2**62))
def test_log2_q16_is_within_one_step_of_the_true_logarithm(v):
    got = _estimate.log2_q16(v)
    assert isinstance(got, int)
    assert abs(got / 65536 - math.log2(v)) <= 2 / 65536


def test_log2_q16_is_exact_on_powers_of_two():
    assert [_estimate.log2_q16(1 << k) for k in range(64)] == [k << 16 for k in range(64)]


@given(st.lists(st.integers(-(2**62), 2**62), max_size=300))
def test_estimate_is_a_nonnegative_integer_bounded_by_a_plain_code(values):
    r = np.array(values, dtype=np.int64)
    est = pipeline._estimated_bits(r)
    assert isinstance(est, int) and est >= 0
    # never more than a sign, a class among 131 (< 8 bits) and the mantissa bits per value
    assert est <= sum(8 + max(abs(v).bit_length() - 1, 0) for v in values)


def test_estimate_orders_residuals_like_the_coder():
    rng = np.random.default_rng(7)
    coder = plugins.create("coder", {"use": "arith"}, Location("<test>", "coder"))
    small = rng.laplace(0, 3, 4096).round().astype(np.int64)
    large = rng.laplace(0, 300, 4096).round().astype(np.int64)
    sparse = np.where(rng.random(4096) < 0.9, 0, small)
    est = [pipeline._estimated_bits(r) for r in (sparse, small, large)]
    coded = [len(coder.encode(r)) for r in (sparse, small, large)]
    assert est == sorted(est) and coded == sorted(coded)
    assert pipeline._estimated_bits(np.zeros(0, dtype=np.int64)) == 0


@given(
    st.integers(1, 3),
    st.integers(0, 3),
    st.integers(1, 300_000),
    st.integers(0, 2**32 - 1),
)
def test_span_residuals_equal_the_whole_blocks(channels, order, frames, seed):
    """The sampled spans of a block go through a polynomial in a few calls, each span with
    the samples before it it needs; the residuals are the whole block's at those spans (no
    restart at a span, which made the sample's polynomials look worse than the block's)."""
    rng = np.random.default_rng(seed)
    ints = np.cumsum(rng.integers(-1000, 1000, (channels, frames)), axis=1).astype(np.int64)
    spans = pipeline._sample_spans(frames)
    assert sum(b - a for a, b in spans) <= max(frames // 8, pipeline._SAMPLE_MOST) or spans == [
        (0, frames)
    ]
    poly = plugins.create(
        "predictor", {"use": "polynomial", "order": order}, Location("<test>", "predictor")
    )
    whole = poly.encode(ints, bounds=(-(2**40), 2**40))
    want = np.concatenate([whole[:, a:b] for a, b in spans], axis=1)
    got = pipeline._span_residuals(poly, ints, spans, (-(2**40), 2**40))
    assert got.shape == want.shape and np.array_equal(got, want)


def _sparse_and_smooth(frames: int = 65536) -> np.ndarray:
    """Two channels: rain-like counts (mostly zero, bursts) and a noisy oscillation."""
    rng = np.random.default_rng(11)
    rain = np.where(rng.random(frames) < 0.08, rng.integers(1, 400, frames), 0)
    t = np.arange(frames)
    wave = 3000 * np.sin(t / 37.0) + rng.normal(0, 20, frames)
    return np.stack([rain, np.round(wave)], axis=1).astype("<i2")


@pytest.mark.parametrize("frames", [65536, 6000])
def test_a_sparse_channel_a_polynomial_clearly_wins_never_runs_the_block_predictor(
    monkeypatch, frames
):
    """The server profile's NLMS cascade is not run over the whole block on a rain-like
    channel that a polynomial beats by far on the sample (a long block) or on the block's
    first quarter (a block too short to sample): only the smooth channel goes through it;
    the stream round-trips, and the choice is the one the unscreened procedure makes (the
    same bytes)."""
    from qres.builtin_plugins.predictors.nlms import NlmsPredictor

    from qres.codec import files as api
    from qres.codec.samples import StreamSpec

    block = _sparse_and_smooth(frames)
    raw = block.tobytes()
    spec = StreamSpec("int16", 2)
    calls = []
    original = NlmsPredictor.encode

    def spy(self, ints, *args, **kwargs):
        calls.append(np.shape(ints))
        return original(self, ints, *args, **kwargs)

    monkeypatch.setattr(NlmsPredictor, "encode", spy)
    packed = api.compress_bytes(raw, spec, "server")
    assert api.decompress_bytes(packed) == raw
    whole_runs = [shape for shape in calls if shape[-1] == len(block)]
    assert whole_runs == [(1, len(block))]  # the smooth channel alone
    calls.clear()
    monkeypatch.setattr(pipeline, "_SPARSE", (2, 1))  # no channel is sparse: no screen
    unscreened = api.compress_bytes(raw, spec, "server")
    assert [shape for shape in calls if shape[-1] == len(block)] == [(2, len(block))]
    assert unscreened == packed


@given(st.integers(1, 3), st.integers(0, 3), st.integers(1, 8192), st.integers(0, 2**32 - 1))
def test_short_block_screen_sees_the_whole_blocks_residuals(channels, order, frames, seed):
    """A block too short to sample is screened on a quarter of it, a sixteenth at the start of
    each quarter (none under 1024 frames); the screen's residuals are the block's there."""
    rng = np.random.default_rng(seed)
    ints = np.cumsum(rng.integers(-1000, 1000, (channels, frames)), axis=1).astype(np.int64)
    spans = pipeline._short_spans(frames)
    if frames < pipeline._MIN_SPAN:
        assert spans == []
        return
    assert len(spans) == 4 and all(0 <= a < b <= frames for a, b in spans)
    assert [a for a, _ in spans] == sorted({a for a, _ in spans})
    assert sum(b - a for a, b in spans) == 4 * (frames // 16)
    poly = plugins.create(
        "predictor", {"use": "polynomial", "order": order}, Location("<test>", "predictor")
    )
    whole = poly.encode(ints, bounds=(-(2**40), 2**40))
    want = np.concatenate([whole[:, a:b] for a, b in spans], axis=1)
    got = pipeline._span_residuals(poly, ints, spans, (-(2**40), 2**40))
    assert np.array_equal(got, want)


class _Coded(list):
    """How many samples each call of the arith coder codes; ``resumed``: the whole length of
    each row coded on from its kept prefix (its call codes only the rest)."""

    resumed: list[int]


def _coded_samples(monkeypatch) -> _Coded:
    """Records how many samples each call of the arith coder codes."""
    from qres.builtin_plugins.coders.arith import ArithCoder

    sizes = _Coded()
    sizes.resumed = []
    encode, encode_open, resume = ArithCoder.encode, ArithCoder.encode_open, ArithCoder.resume

    def spy(self, residuals, *args, **kwargs):
        sizes.append(len(residuals))
        return encode(self, residuals, *args, **kwargs)

    def spy_open(self, residuals):
        sizes.append(len(residuals))
        return encode_open(self, residuals)

    def spy_resume(self, stream, more):
        sizes.append(len(more))
        sizes.resumed.append(stream.count + len(more))
        return resume(self, stream, more)

    monkeypatch.setattr(ArithCoder, "encode", spy)
    monkeypatch.setattr(ArithCoder, "encode_open", spy_open)
    monkeypatch.setattr(ArithCoder, "resume", spy_resume)
    return sizes


def test_a_short_block_the_block_predictor_clearly_wins_codes_no_polynomial_whole(monkeypatch):
    """On a short block of smooth, noisy channels the NLMS cascade clearly beats every
    polynomial on the screen, so no polynomial is coded whole: each channel is coded whole
    once (its cascade residuals), plus the screen; without the screen the bytes are the same
    and each polynomial was coded whole."""
    from qres.codec import files as api
    from qres.codec.samples import StreamSpec

    frames, count = 4000, 3
    rng = np.random.default_rng(5)
    t = np.arange(frames)
    rows = [
        np.round(3000 * np.sin(t / (3.0 + c)) + 800 * np.sin(t / 1.7) + rng.normal(0, 9, frames))
        for c in range(count)
    ]
    raw = np.stack(rows, axis=1).astype("<i2").tobytes()
    spec = StreamSpec("int16", count)
    sizes = _coded_samples(monkeypatch)
    packed = api.compress_bytes(raw, spec, "server")
    assert api.decompress_bytes(packed) == raw
    # The cascade's residuals of each channel, nothing else (on from its screen's first span).
    whole = [n for n in sizes if n == frames] + [n for n in sizes.resumed if n == frames]
    assert len(whole) == count
    assert sum(sizes) <= count * frames * 1.5 + 3 * frames  # the screens, the stages' tables
    sizes.clear()
    monkeypatch.setattr(pipeline, "_short_spans", lambda frames: [])
    assert api.compress_bytes(raw, spec, "server") == packed
    assert len([n for n in sizes if n == frames]) >= 2 * count


def test_a_short_sparse_block_codes_one_polynomial_whole_when_the_screen_decides(monkeypatch):
    """A short block of rain-like channels: the block predictor is ruled out on the screen,
    and where the screen tells the best two polynomials apart by the margin only the best is
    coded whole; the choice is the same as measuring both whole (the same bytes)."""
    from qres.codec import files as api
    from qres.codec.samples import StreamSpec

    frames = 6000
    rng = np.random.default_rng(3)
    rain = [np.where(rng.random(frames) < 0.1, rng.integers(1, 300, frames), 0) for _ in range(3)]
    raw = np.stack(rain, axis=1).astype("<i2").tobytes()
    spec = StreamSpec("int16", 3)
    sizes = _coded_samples(monkeypatch)
    packed = api.compress_bytes(raw, spec, "server")
    assert api.decompress_bytes(packed) == raw
    # Each whole row goes on from its coded screen, the block's first quarter.
    assert sizes.resumed.count(frames) == 3 and frames not in sizes
    assert sizes.count(frames - frames // pipeline._SCREEN_SHARE) == 3
    sizes.clear()
    sizes.resumed.clear()
    # Without the margin, the screen's best is coded whole first, and the runner-up only where
    # its screen, scaled by the first's growth to the whole row, may still win: nowhere here.
    monkeypatch.setattr(pipeline, "_decisive", lambda screened, orders: None)
    assert api.compress_bytes(raw, spec, "server") == packed
    assert len([n for n in sizes if n == frames]) + sizes.resumed.count(frames) == 3
    # Measuring both whole on every channel gives the same bytes.
    sizes.clear()
    sizes.resumed.clear()
    monkeypatch.setattr(pipeline, "_may_win", lambda candidate, incumbent, width: True)
    assert api.compress_bytes(raw, spec, "server") == packed
    assert len([n for n in sizes if n == frames]) + sizes.resumed.count(frames) == 6


def test_an_obvious_polynomial_skips_the_block_predictors_coded_screen(monkeypatch):
    """Rain-like channels whose best polynomial's estimate is under 4/5 of the cascade's on
    the screen are cleared on the estimates: the cascade's screen is never coded, and the
    bytes are those of the coded comparison."""
    from qres.codec import files as api
    from qres.codec.samples import StreamSpec

    frames = 6000
    rng = np.random.default_rng(3)
    rain = [np.where(rng.random(frames) < 0.1, rng.integers(1, 300, frames), 0) for _ in range(3)]
    raw = np.stack(rain, axis=1).astype("<i2").tobytes()
    spec = StreamSpec("int16", 3)
    screen = frames // pipeline._SCREEN_SHARE
    sizes = _coded_samples(monkeypatch)
    packed = api.compress_bytes(raw, spec, "server")
    obvious = sum(sizes)
    sizes.clear()
    sizes.resumed.clear()
    monkeypatch.setattr(pipeline, "_OBVIOUS", (0, 1))  # never obvious: the screen is coded
    assert api.compress_bytes(raw, spec, "server") == packed
    assert sum(sizes) == obvious + 3 * screen


def test_decisive_needs_every_order_screened_and_the_margin():
    one, two = b"x" * 100, b"x" * 111
    assert pipeline._decisive({0: one, 1: two}, [0, 1]) == 0
    assert pipeline._decisive({0: two, 1: one}, [0, 1]) == 1
    assert pipeline._decisive({0: one, 1: b"x" * 109}, [0, 1]) is None  # within 10%
    assert pipeline._decisive({0: one}, [0, 1]) is None  # order 1 was never screened


def test_far_behind_rules_out_only_on_residuals_that_are_not_sparse():
    """A candidate whose estimate is far above the first's is ruled out against an incumbent
    the first is close to, unless either is sparse (the estimate misses runs there)."""
    rng = np.random.default_rng(2)
    small = rng.integers(-40, 41, 4000).astype(np.int64)
    large = rng.integers(-400, 401, 4000).astype(np.int64)
    rows = {0: small, 1: large}
    assert pipeline._far_behind(rows, 0, 1, 1000, 1000, {})
    assert not pipeline._far_behind({0: small, 1: small + 1}, 0, 1, 1000, 1000, {})
    sparse = np.where(rng.random(4000) < 0.5, 0, large)
    assert not pipeline._far_behind({0: small, 1: sparse}, 0, 1, 1000, 1000, {})
    assert not pipeline._far_behind({0: sparse, 1: large}, 0, 1, 1000, 1000, {})


def test_far_behind_needs_a_sample_of_a_span():
    rng = np.random.default_rng(2)
    small = rng.integers(-40, 41, pipeline._MIN_SPAN - 1).astype(np.int64)
    large = rng.integers(-400, 401, pipeline._MIN_SPAN - 1).astype(np.int64)
    assert not pipeline._far_behind({0: small, 1: large}, 0, 1, 1000, 1000, {})


@pytest.mark.parametrize(
    ("profile", "screened"), [("server", True), ("fast", False), ("esp32", False)]
)
def test_a_short_block_is_screened_only_where_it_pays(profile, screened):
    """`fast`'s block predictor is a polynomial: its rivals are of one family, within a
    screen's noise of it; `esp32`'s Rice coder codes a block whole for less than a screen's
    calls cost: a short block goes straight to whole coding under both."""
    from qres.codec.files import codec_settings
    from qres.codec.samples import StreamSpec

    settings, _ = codec_settings(profile)
    coder = pipeline.BlockCoder(settings, StreamSpec("int16", 2))
    ints = np.zeros((2, 4000), dtype=np.int64)
    choice = pipeline._Choice(coder, coder.predictor, ints, coder.bounds)
    assert bool(choice.screen) is screened


def test_format_predictors_are_built_once_per_process():
    """The predictors the format fixes hold only their settings: every BlockCoder shares them,
    and they code as freshly built ones do."""
    from qres.codec.files import codec_settings
    from qres.codec.samples import StreamSpec

    settings, _ = codec_settings("server")
    spec = StreamSpec("int16", 2, "interleaved", "little")
    one, two = pipeline.BlockCoder(settings, spec), pipeline.BlockCoder(settings, spec)
    assert one.polynomial(2) is two.polynomial(2) and one.polynomial(1) is not one.polynomial(2)
    assert one.block_predictor(1) is two.block_predictor(1)
    ints = np.cumsum(np.arange(-40, 40).reshape(2, 40) ** 3, axis=1)
    fresh = plugins.create("predictor", {"use": "polynomial", "order": 2}, Location("t"))
    assert np.array_equal(one.polynomial(2).encode(ints), fresh.encode(ints))


def test_a_row_is_coded_on_from_its_kept_prefix_only_when_it_starts_with_it():
    coder = plugins.create("coder", {"use": "arith"}, Location("<test>"))
    rng = np.random.default_rng(5)
    row = rng.laplace(0, 40, 3000).astype(np.int64)
    row[rng.random(3000) < 0.4] = 0
    prefixes = pipeline._Prefixes(coder)
    code = prefixes.for_channel(2, keep=True)
    assert code(1, row[:700]) == coder.encode(row[:700])
    assert code(3, row[:700] + 1) == coder.encode(row[:700] + 1)
    calls = []
    resume = coder.resume
    coder.resume = lambda stream, more: calls.append(len(more)) or resume(stream, more)
    whole = prefixes.for_channel(2)
    assert whole(1, row) == coder.encode(row)  # continued from its screen
    assert calls == [2300]
    assert whole(3, row) == coder.encode(row)  # another prefix: coded from the start
    assert whole(1, row) == coder.encode(row)  # a stream is continued once
    assert calls == [2300] and not prefixes.open


def test_a_sample_leaves_its_first_span_open_for_the_whole_row():
    coder = plugins.create("coder", {"use": "arith"}, Location("<test>"))
    rng = np.random.default_rng(6)
    row = rng.laplace(0, 40, 4000).astype(np.int64)
    sample = np.concatenate([row[:500], row[2000:2500]])
    prefixes = pipeline._Prefixes(coder)
    assert prefixes.code(("sample", 0), sample, mark=(500, "row")) == coder.encode(sample)
    assert len(prefixes.open["row"][1]) == 500
    assert prefixes.code("row", row) == coder.encode(row)
    # A mark shorter than a stream already open there does not replace it.
    prefixes.code("head", row[:1000], keep=True)
    prefixes.code(("sample", 1), sample, mark=(500, "head"))
    assert len(prefixes.open["head"][1]) == 1000
    assert prefixes.code("head", row) == coder.encode(row)
