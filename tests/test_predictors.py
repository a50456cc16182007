"""Predictors: round trips, the bounded-error guarantee, a plain-Python reference, determinism."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qres.kernel.config import Location
from qres.kernel.errors import ProfileError, QresError
from qres.kernel.plugins import create, get_plugin

I64_MIN, I64_MAX = -(2**63), 2**63 - 1
MASK = 2**64 - 1

TABLES = [
    {"use": "polynomial", "order": 0},
    {"use": "polynomial", "order": 2},
    {"use": "polynomial", "order": 4},
    {"use": "nlms"},
    {"use": "nlms", "order": 4, "update": "sign", "bias_shift": 3, "fixed": 3},
    {"use": "taaf"},
    {"use": "taaf", "cross": 1, "spike_ratio": 1.0, "stages": [4], "bias_shift": 2},
    {"use": "interp"},
    {"use": "interp", "kind": "linear", "anchor": 4},
]


def make(table):
    return create("predictor", table, Location("test", "codec.predictor"))


SPECIALS = [I64_MIN, I64_MAX, 0, -1, 1, 2**31 - 1, -(2**31), 2**62, -(2**62)]


@st.composite
def blocks(draw, max_len=2000):
    channels = draw(st.integers(1, 4))
    n = draw(st.sampled_from([0, 1, 2, 3, draw(st.integers(0, max_len))]))
    style = draw(st.sampled_from(["walk", "wide", "special", "int32"]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    if style == "walk":
        x = np.cumsum(rng.integers(-50, 51, (channels, n)), axis=1)
    elif style == "wide":
        x = rng.integers(I64_MIN, I64_MAX, (channels, n), dtype=np.int64, endpoint=True)
    elif style == "int32":
        x = rng.integers(-(2**31), 2**31, (channels, n), dtype=np.int64)
    else:
        x = rng.choice(np.array(SPECIALS, dtype=np.int64), (channels, n))
    return np.ascontiguousarray(x, dtype=np.int64)


@pytest.mark.parametrize("table", TABLES, ids=lambda t: "-".join(map(str, t.values())))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(x=blocks())
def test_lossless_round_trip(table, x):
    pred = make(table)
    res = pred.encode(x)
    assert res.dtype == np.int64 and res.shape == x.shape
    assert np.array_equal(pred.decode(res), x)


@pytest.mark.parametrize("table", TABLES[1::2], ids=lambda t: t["use"])
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(x=blocks(max_len=1000), e=st.sampled_from([1, 2, 7, 100, 12345, 2**40, 2**62]))
def test_bounded_error_guarantee(table, x, e):
    pred = make(table)
    res = pred.encode(x, e)
    back = pred.decode(res, e)
    err = np.abs(back.astype(object) - x.astype(object))
    assert x.size == 0 or err.max() <= e
    # the decoder's reconstruction is the encoder's: re-encoding it gives the same residuals
    assert np.array_equal(pred.encode(back, e), res)


@pytest.mark.parametrize("table", TABLES[1::2], ids=lambda t: t["use"])
@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), e=st.integers(1, 300))
def test_bounded_error_stays_in_dtype_bounds(table, seed, e):
    rng = np.random.default_rng(seed)
    x = np.clip(np.cumsum(rng.integers(-3000, 3001, (2, 700)), axis=1), -32768, 32767)
    pred = make(table)
    res = pred.encode(x, e, bounds=(-32768, 32767))
    back = pred.decode(res, e, bounds=(-32768, 32767))
    assert np.abs(back - x).max() <= e
    assert back.min() >= -32768 and back.max() <= 32767


def test_bounded_error_makes_residuals_small_and_zero_heavy():
    rng = np.random.default_rng(5)
    x = np.cumsum(rng.integers(-4, 5, (1, 5000)), axis=1)
    pred = make({"use": "nlms"})
    res = pred.encode(x, 10)
    assert (res == 0).mean() > 0.9


def test_corrupted_residuals_decode_within_bounds():
    rng = np.random.default_rng(9)
    junk = rng.integers(I64_MIN, I64_MAX, (3, 500), dtype=np.int64, endpoint=True)
    for table in TABLES:
        back = make(table).decode(junk, 5, bounds=(-100, 100))
        assert back.min() >= -100 and back.max() <= 100


# ----------------------------------------------------------------------------- references


def wrap(v: int) -> int:
    """v as int64 with two's-complement wrap-around."""
    v &= MASK
    return v - 2**64 if v >= 2**63 else v


def rsr(a: int, k: int) -> int:
    """The project's rounding rule: add half, arithmetic shift right."""
    return (a + (1 << (k - 1))) >> k


def clamp(v, lo, hi):
    return lo if v < lo else hi if v > hi else v


def tdiv(a: int, b: int) -> int:
    """C division: truncate toward zero."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def fixed_ref(hist: list[int], order: int) -> int:
    coeffs = [[], [1], [2, -1], [3, -3, 1], [4, -6, 4, -1]][order]
    return wrap(sum(c * h for c, h in zip(coeffs, hist, strict=False)))


def polynomial_ref(x: list[int], order: int) -> list[int]:
    hist: list[int] = []
    out = []
    for t, v in enumerate(x):
        out.append(wrap(v - fixed_ref(hist, min(order, t))))
        hist.insert(0, v)
    return out


def cascade_ref(x, taps, shifts, fixed, update, bias_shift, weights):
    """Plain-Python NLMS cascade for one channel, lossless mode, per docs/predictors.md."""
    vlim, wlim = 2**30 - 1, 2**23
    stages = []
    off = 0
    for n, s in zip(taps, shifts, strict=True):
        stages.append(
            {
                "n": n,
                "s": s,
                "w": list(weights[off : off + n]),
                "h": [0] * n,
                "d": [0] * n,
                "level": 0,
                "count": 0,
                "pred": 0,
            }
        )
        off += n
    bias = 0
    xh: list[int] = []
    out = []
    for t, v in enumerate(x):
        fp = fixed_ref(xh, min(fixed, t))
        pred = fp
        for st_ in stages:
            st_["pred"] = rsr(sum(w * h for w, h in zip(st_["w"], st_["h"], strict=True)), 16)
            pred = wrap(pred + st_["pred"])
        if bias_shift:
            pred = wrap(pred + rsr(bias, 16))
        out.append(wrap(v - pred))
        e = wrap(v - fp)
        for st_ in stages:
            e_out = wrap(e - st_["pred"])
            if update == "nlms":
                g = clamp(
                    tdiv(clamp(e_out, -vlim, vlim) * 2**24, st_["level"] + 65536), -4096, 4096
                )
                st_["w"] = [
                    clamp(w + rsr(g * d, 8), -wlim, wlim)
                    for w, d in zip(st_["w"], st_["d"], strict=True)
                ]
            elif e_out:
                sg = 1 if e_out > 0 else -1
                st_["w"] = [
                    clamp(w + sg * d, -wlim, wlim) for w, d in zip(st_["w"], st_["d"], strict=True)
                ]
            vc = clamp(e, -vlim, vlim)
            c = st_["count"]
            boost = 3 if c < 64 else 2 if c < 256 else 1 if c < 1024 else 0
            s = max(1, st_["s"] - boost)
            lim = 4 << (16 - s)
            direction = clamp(tdiv(vc * 2 ** (32 - s), st_["level"] + 65536), -lim, lim)
            st_["h"] = st_["h"][1:] + [vc]
            st_["d"] = st_["d"][1:] + [direction]
            st_["level"] += rsr(abs(vc) * 65536 - st_["level"], 4)
            st_["count"] += 1
            e = e_out
        if bias_shift:
            bias += rsr(clamp(e, -vlim, vlim) * 65536 - bias, bias_shift)
        xh.insert(0, v)
    return out


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    order=st.integers(0, 4),
    n=st.integers(0, 300),
    wide=st.booleans(),
)
def test_polynomial_matches_reference(seed, order, n, wide):
    rng = np.random.default_rng(seed)
    if wide:
        x = rng.integers(I64_MIN, I64_MAX, n, dtype=np.int64, endpoint=True)
    else:
        x = np.cumsum(rng.integers(-1000, 1001, n))
    got = make({"use": "polynomial", "order": order}).encode(x)
    assert got.tolist() == polynomial_ref(x.tolist(), order)


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(0, 1300),
    update=st.sampled_from(["sign", "nlms"]),
    taps=st.sampled_from([[1], [3], [8, 2], [16, 9], [32, 16, 8], [24, 8, 13]]),
    fixed=st.integers(0, 2),
    bias_shift=st.sampled_from([0, 4]),
    amp=st.sampled_from([3, 3000, 2**29, 2**40]),
    simd=st.booleans(),
    wmax=st.sampled_from([70000, 2**26]),
)
def test_cascade_matches_reference(seed, n, update, taps, fixed, bias_shift, amp, simd, wmax):
    """The native cascade gives the reference's residuals, with its AVX2 tap loops (where the
    CPU has them) and with the portable ones, from initial weights inside and beyond the
    update's clamp (2**23)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    x = (amp * np.sin(t / 7.0)).astype(np.int64) + rng.integers(-amp // 3 - 1, amp // 3 + 1, n)
    table = {
        "use": "nlms",
        "stages": taps,
        "update": update,
        "fixed": fixed,
        "bias_shift": bias_shift,
    }
    pred = make(table)
    weights = rng.integers(-wmax, wmax, pred.weight_count()).astype(np.int32)
    pred.set_initial_weights(weights)
    cfg = pred.config
    want = cascade_ref(
        x.tolist(), cfg.taps(), cfg.step_shifts(), fixed, update, bias_shift, weights.tolist()
    )
    from qres.builtin_plugins.predictors import _kernels

    before = _kernels.simd()
    try:
        _kernels.simd(simd)
        assert pred.encode(x).tolist() == want
        assert pred.decode(np.array(want, dtype=np.int64)).tolist() == x.tolist()
    finally:
        _kernels.simd(before)


def interp_ref(xs, mask, anchor, e=0, lo=I64_MIN, hi=I64_MAX, choose=False):
    """Plain-Python multilevel interpolation per docs/predictors.md, for a list of channels:
    the residuals of each channel in coding order, the reconstructions and the cubic mask
    used (with ``choose``, picked per level by the cost estimate summed over channels)."""
    n = len(xs[0]) if xs else 0
    xr = [[0] * n for _ in xs]
    out = [[] for _ in xs]

    def quant(x, p):
        pc = clamp(p, lo, hi)
        if e == 0:
            return wrap(x - pc), x
        m = 2 * e + 1
        d = abs(x - pc)
        q = d // m + (1 if d % m > e else 0)
        q = q if x >= pc else -q
        return q, clamp(pc + q * m, lo, hi)

    def pred(c, t, s, cubic):
        left = xr[c][t - s]
        if t + s >= n:
            return left
        if cubic and t >= 3 * s and t + 3 * s < n:
            return wrap(9 * (left + xr[c][t + s]) - xr[c][t - 3 * s] - xr[c][t + 3 * s] + 8) >> 4
        return wrap(left + xr[c][t + s] + 1) >> 1

    def proxy(s, cubic):
        total = 0
        for c, x in enumerate(xs):
            for t in range(s, n, 2 * s):
                q, _ = quant(x[t], pred(c, t, s, cubic))
                total += 2 + 2 * abs(q).bit_length() if q else 0
        return total

    if n == 0:  # nothing to code: nothing chosen
        return out, xr, 0 if choose else mask
    for c, x in enumerate(xs):
        prev = 0
        for t in range(0, n, anchor):
            q, prev = quant(x[t], prev)
            out[c].append(q)
            xr[c][t] = prev
    used = 0
    s, level = anchor // 2, anchor.bit_length() - 2
    while s >= 1:
        cubic = proxy(s, True) <= proxy(s, False) if choose else bool(mask >> level & 1)
        used |= cubic << level
        for c, x in enumerate(xs):
            for t in range(s, n, 2 * s):
                q, xr[c][t] = quant(x[t], pred(c, t, s, cubic))
                out[c].append(q)
        s //= 2
        level -= 1
    return out, xr, (used if choose else mask)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(0, 300),
    channels=st.integers(1, 3),
    mask=st.sampled_from([0, 2**24 - 1, 0b1010, None]),
    anchor=st.sampled_from([1, 2, 8, 64, 1024]),
    e=st.sampled_from([0, 1, 5, 300]),
    style=st.sampled_from(["walk", "wide", "int16"]),
)
def test_interp_matches_reference(seed, n, channels, mask, anchor, e, style):
    """The Cython kernel against the reference, fixed masks and the per-level choice."""
    rng = np.random.default_rng(seed)
    lo, hi = (-32768, 32767) if style == "int16" else (I64_MIN, I64_MAX)
    if style == "wide":
        x = rng.integers(I64_MIN, I64_MAX, (channels, n), dtype=np.int64, endpoint=True)
    elif style == "int16":
        x = np.clip(np.cumsum(rng.integers(-4000, 4001, (channels, n)), axis=1), lo, hi)
    else:
        x = np.cumsum(rng.integers(-1000, 1001, (channels, n)), axis=1)
    if mask is None:  # the encoder chooses
        pred = make({"use": "interp", "anchor": anchor})
        want, xr, chosen = interp_ref(x.tolist(), 0, anchor, e, lo, hi, choose=True)
        got, mask = pred.encode_choosing(x, e, bounds=(lo, hi))
        assert mask == chosen
        pred = make({"use": "interp", "anchor": anchor, "cubic_levels": mask})
    else:
        pred = make({"use": "interp", "anchor": anchor, "cubic_levels": mask})
        want, xr, _ = interp_ref(x.tolist(), mask, anchor, e, lo, hi)
        got = pred.encode(x, e, bounds=(lo, hi))
    assert got.tolist() == want
    assert pred.decode(got, e, bounds=(lo, hi)).tolist() == xr


def test_interp_kinds_are_masks():
    x = np.cumsum(np.random.default_rng(4).integers(-99, 100, (2, 3000)), axis=1)
    for kind, mask in (("linear", 0), ("cubic", 2**24 - 1)):
        a = make({"use": "interp", "kind": kind}).encode(x, 7)
        b = make(
            {"use": "interp", "kind": "linear" if mask else "cubic", "cubic_levels": mask}
        ).encode(x, 7)
        assert np.array_equal(a, b)
    with pytest.raises(QresError, match="outside bounds"):
        make({"use": "interp"}).encode_choosing(x, 1, bounds=(0, 10))


def test_interp_beats_extrapolation_at_coarse_bounds():
    """At a bound far above the noise, interpolating from both sides leaves more zeros than the
    adaptive cascade, whose reconstructed history is a staircase (a smoothed random walk)."""
    rng = np.random.default_rng(8)
    x = np.cumsum(np.convolve(rng.integers(-50, 51, 20000), np.ones(16, int), "same")) // 8
    zeros = {}
    for table in ({"use": "nlms"}, {"use": "interp"}, {"use": "interp", "kind": "linear"}):
        res = make(table).encode(x, 64)
        zeros[table.get("kind", table["use"])] = (res == 0).mean()
    assert zeros["interp"] > zeros["nlms"] and zeros["linear"] > zeros["nlms"]


# ----------------------------------------------------------------------------- determinism


def test_residuals_are_pinned():
    """Same bytes on every machine and CPU (AVX2 or not): a golden hash of residuals."""
    # integer-only input (no libm), so the input itself is the same everywhere
    rng = np.random.default_rng(20240601)
    t = np.arange(3000)
    tri = np.abs((t * 37) % 4000 - 2000) * 9
    x = np.stack(
        [tri + rng.integers(-40, 41, 3000), np.cumsum(rng.integers(-60, 61, 3000)) + tri // 3]
    )
    digest = hashlib.sha256()
    for table in ({"use": "polynomial", "order": 3}, {"use": "nlms"}, {"use": "taaf"}):
        for e in (0, 3):
            res = make(table).encode(x, e)
            digest.update(res.astype("<i8").tobytes())
    assert digest.hexdigest()[:16] == GOLDEN


GOLDEN = "18f0b42245ae2847"


def test_interp_residuals_are_pinned():
    """The interpolation predictor's residuals, both kinds, lossless and bounded, pinned."""
    t = np.arange(3001)
    x = np.stack([np.abs((t * 37) % 4000 - 2000) * 9, (t * t) % 7919 - 3000])
    digest = hashlib.sha256()
    for kind in ("linear", "cubic"):
        for e in (0, 3, 200):
            res = make({"use": "interp", "kind": kind, "anchor": 256}).encode(x, e)
            digest.update(res.astype("<i8").tobytes())
    assert digest.hexdigest()[:16] == INTERP_GOLDEN


INTERP_GOLDEN = "0d8ebeb33f5b31c3"


def test_repeatable_and_blocks_independent():
    rng = np.random.default_rng(1)
    x = np.cumsum(rng.integers(-9, 10, (2, 4000)), axis=1)
    pred = make({"use": "taaf"})
    first = pred.encode(x)
    assert np.array_equal(first, pred.encode(x))
    other = make({"use": "taaf"})
    other.encode(x[:, ::-1].copy())  # a call in between must not leak state
    assert np.array_equal(first, other.encode(x))


def test_int_dtypes_and_1d_input():
    x = np.array([1, 5, 9, 200, 65535, 0], dtype=np.uint16)
    pred = make({"use": "nlms", "order": 4})
    res = pred.encode(x)
    assert res.shape == (6,) and np.array_equal(pred.decode(res), x.astype(np.int64))
    with pytest.raises(QresError, match="uint64"):
        pred.encode(np.zeros(3, dtype=np.uint64))
    with pytest.raises(QresError, match="dtype float64"):
        pred.encode(np.zeros(3))
    with pytest.raises(QresError, match="max_error"):
        pred.encode(x, -1)
    with pytest.raises(QresError, match="outside bounds"):
        pred.encode(x, 1, bounds=(0, 255))


# ----------------------------------------------------------------------------- weights


def test_initial_weights_export_import():
    pred = make({"use": "nlms", "stages": [8, 4]})
    w = pred.initial_weights()
    assert w.dtype == np.int32 and w.shape == (12,) and not w.any()
    rng = np.random.default_rng(2)
    x = np.cumsum(rng.integers(-20, 21, (1, 2000)), axis=1)
    base = pred.encode(x)
    learned = w.copy()
    learned[0] = 65536  # start the first stage as "repeat the last difference"
    pred.set_initial_weights(learned)
    assert np.array_equal(pred.initial_weights(), learned)
    changed = pred.encode(x)
    assert not np.array_equal(changed, base)
    assert np.array_equal(pred.decode(changed), x)
    twin = make({"use": "nlms", "stages": [8, 4]})
    twin.set_initial_weights(pred.initial_weights())
    assert np.array_equal(twin.encode(x), changed)
    with pytest.raises(QresError, match="need \\(12,\\)"):
        pred.set_initial_weights(np.zeros(5, dtype=np.int32))
    with pytest.raises(QresError, match="int32"):
        pred.set_initial_weights(np.full(12, 2**40))
    assert make({"use": "taaf", "stages": [8], "cross": 3}).initial_weights().shape == (12,)
    assert make({"use": "polynomial"}).initial_weights().shape == (0,)


# ----------------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    "table, key",
    [
        ({"use": "polynomial", "order": 5}, "order"),
        ({"use": "polynomial", "order": "2"}, "order"),
        ({"use": "nlms", "order": 0}, "order"),
        ({"use": "nlms", "order": 8, "stages": [8]}, "order"),
        ({"use": "nlms", "stages": []}, "stages"),
        ({"use": "nlms", "stages": [1024]}, "stages"),
        ({"use": "nlms", "stages": [8, 4], "shifts": [3]}, "shifts"),
        ({"use": "nlms", "shifts": [0, 8, 8]}, "shifts"),
        ({"use": "nlms", "update": "rls"}, "update"),
        ({"use": "nlms", "taps": 8}, "taps"),
        ({"use": "taaf", "spike_ratio": 0.5}, "spike_ratio"),
        ({"use": "taaf", "cross": 33}, "cross"),
        ({"use": "interp", "kind": "spline"}, "kind"),
        ({"use": "interp", "anchor": 48}, "anchor"),
        ({"use": "interp", "anchor": 0}, "anchor"),
        ({"use": "interp", "cubic_levels": -1}, "cubic_levels"),
    ],
)
def test_bad_settings_are_profile_errors(table, key):
    with pytest.raises(ProfileError, match=f"codec.predictor.{key}"):
        make(table)


def test_taaf_channel_limit():
    pred = make({"use": "taaf", "max_channels": 2})
    with pytest.raises(QresError, match="max_channels"):
        pred.encode(np.zeros((3, 10), dtype=np.int64))


def test_registered_and_memory_declared():
    for name in ("polynomial", "nlms", "taaf", "interp"):
        assert get_plugin("predictor", name).name == name
    nlms = get_plugin("predictor", "nlms")
    small = nlms.memory_bytes(make({"use": "nlms", "order": 8}).config)
    big = nlms.memory_bytes(make({"use": "nlms", "stages": [256, 32, 16]}).config)
    assert 0 < small < big
    poly = get_plugin("predictor", "polynomial")
    assert poly.memory_bytes(make({"use": "polynomial", "order": 4}).config) == 32
    taaf = get_plugin("predictor", "taaf")
    assert taaf.memory_bytes(
        make({"use": "taaf", "max_channels": 4}).config
    ) * 2 == taaf.memory_bytes(make({"use": "taaf", "max_channels": 8}).config)


def test_cascade_settings_travel_as_one_packed_object():
    from qres.builtin_plugins.predictors import _kernels

    nlms = make({"use": "nlms", "stages": [16, 8], "fixed": 2, "bias_shift": 5})
    params = nlms.cascade_params
    assert params is nlms.cascade_params  # built once per predictor
    assert params.taps.tolist() == [16, 8] and params.weight_count == nlms.weight_count()
    taaf = make({"use": "taaf", "cross": 3, "stages": [8]})
    assert taaf.cascade_params.weight_count == taaf.weight_count() == 8 + 3 + 1
    good = {"taps": [8], "shifts": [8], "fixed_order": 1, "nlms": True, "bias_shift": 0}
    for bad in (
        {"taps": [0]},
        {"taps": [8, 8]},
        {"shifts": [17]},
        {"fixed_order": 5},
        {"bias_shift": -1},
        {"taaf": True, "cross": 33},
        {"taaf": True, "long_shift": 0},
    ):
        with pytest.raises(ValueError):
            _kernels.CascadeParams(**{**good, **bad})
    block = np.zeros((1, 4), np.int64)
    with pytest.raises(TypeError):
        _kernels.cascade(block, np.empty_like(block), False, None, np.zeros(8, np.int32), 0, 0, 1)
    with pytest.raises(ValueError, match="wrong length"):
        params = _kernels.CascadeParams(**good)
        _kernels.cascade(block, np.empty_like(block), False, params, np.zeros(9, np.int32), 0, 0, 1)
