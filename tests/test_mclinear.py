"""The multichannel linear predictor: the native loop against a plain-Python reference,
round trips, conformance, the codec through a profile, and batch training."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qres import testing
from qres.kernel import plugins
from qres.kernel.config import Location
from qres.kernel.errors import ProfileError, QresError

I64_MIN, I64_MAX = -(2**63), 2**63 - 1
SLIM = ELIM = 1 << 24
WLIM = 1 << 23


def _clamp(v, lo, hi):
    return max(lo, min(hi, v))


def _div_round(n, d):
    return (2 * n + d) // (2 * d)


def _wrap(v):
    return (v + 2**63) % 2**64 - 2**63


def _quantise(x, pc, e, lo, hi):
    m = 2 * e + 1
    q = _div_round(x - pc, m)
    return q, _clamp(pc + q * m, lo, hi)


def _dequantise(q, pc, e, lo, hi):
    return _clamp(pc + q * (2 * e + 1), lo, hi)


def reference(src, w0, order, shift, adapt, fixed, decode, e, lo, hi):
    """The loop of docs/predictors.md with Python ints."""
    channels, n = len(src), len(src[0]) if len(src) else 0
    d = channels * order
    w = [[_clamp(int(v), -WLIM, WLIM) for v in row] for row in w0]
    hist = [0] * d
    last = [0] * channels
    lim = 1 << 40
    out = [[0] * n for _ in range(channels)]
    for t in range(n):
        energy = 1 + sum(h * h for h in hist)
        new = []
        for c in range(channels):
            acc = sum(w[c][j] * hist[j] for j in range(d))
            pc = _div_round(acc, 1 << 16)
            if fixed:
                pc = _clamp(last[c], -(2**62), 2**62) + pc
            pc = _clamp(pc, lo, hi)
            v = int(src[c][t])
            if e == 0:
                xr = _wrap(v + pc) if decode else v
                out[c][t] = xr if decode else _wrap(v - pc)
            elif decode:
                xr = _dequantise(v, pc, e, lo, hi)
                out[c][t] = xr
            else:
                q, xr = _quantise(v, pc, e, lo, hi)
                out[c][t] = q
            if fixed:
                new.append(_clamp(_clamp(xr, -lim, lim) - _clamp(last[c], -lim, lim), -SLIM, SLIM))
                last[c] = xr
            else:
                new.append(_clamp(xr, -SLIM, SLIM))
            if adapt:
                err = _clamp(_clamp(xr, -lim, lim) - _clamp(pc, -lim, lim), -ELIM, ELIM)
                for j in range(d):
                    g = _div_round(err * hist[j] * (1 << (16 - shift)), energy)
                    w[c][j] = _clamp(w[c][j] + g, -WLIM, WLIM)
        for c in range(channels):
            hist[c * order : (c + 1) * order] = [new[c]] + hist[c * order : (c + 1) * order - 1]
    return out


def _make(**table):
    return plugins.create("predictor", {"use": "mclinear", **table}, Location("<test>", "p"))


def _signal(rng, channels, n, style):
    if style == "wide":
        return rng.integers(I64_MIN, I64_MAX, (channels, n), dtype=np.int64, endpoint=True)
    t = np.arange(n)
    base = np.cumsum(rng.integers(-300, 301, n))
    rows = [base * (c + 1) // 2 + rng.integers(-50, 51, n) + (t % 37) * c for c in range(channels)]
    x = np.asarray(rows, dtype=np.int64).reshape(channels, n)
    if style == "int16":
        x = np.clip(x, -32768, 32767)
    return x


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(0, 120),
    channels=st.integers(1, 3),
    order=st.integers(1, 5),
    shift=st.integers(2, 16),
    adapt=st.booleans(),
    e=st.sampled_from([0, 0, 1, 7, 300]),
    style=st.sampled_from(["walk", "int16", "wide"]),
    learned=st.booleans(),
    fixed=st.integers(0, 1),
)
def test_kernel_matches_reference(seed, n, channels, order, shift, adapt, e, style, learned, fixed):
    rng = np.random.default_rng(seed)
    x = _signal(rng, channels, n, style)
    lo, hi = (-32768, 32767) if style == "int16" else (I64_MIN, I64_MAX)
    if style == "wide" and e:
        lo, hi = -(2**40), 2**40
        x = np.clip(x, lo, hi)
    table = {"order": order, "shift": shift, "adapt": adapt, "fixed": fixed}
    if learned:
        table["channels"] = channels
    pred = _make(**table)
    if learned:
        w = rng.integers(-(2**31), 2**31, channels * channels * order, dtype=np.int64)
        w[rng.random(w.size) < 0.5] //= 2**12  # mostly small, some beyond the clamp
        pred.set_initial_weights(w.astype(np.int32))
    w0 = pred.weight_matrix(channels).tolist()
    residuals = pred.encode(x, max_error=e, bounds=(lo, hi))
    want = reference(x.tolist(), w0, order, shift, adapt, fixed, False, e, lo, hi)
    assert residuals.tolist() == want
    back = pred.decode(residuals, max_error=e, bounds=(lo, hi))
    again = reference(residuals.tolist(), w0, order, shift, adapt, fixed, True, e, lo, hi)
    assert back.tolist() == again
    if e == 0:
        assert np.array_equal(back, x)
    else:
        assert np.abs(back - x).max(initial=0) <= e


def test_conforms():
    cls = plugins.get_plugin("predictor", "mclinear")
    testing.check_plugin(cls)
    testing.check_plugin(cls, {"order": 2, "shift": 9, "adapt": False})


def test_cross_channel_prediction_beats_per_channel():
    """Two channels carrying the same walk (one lagged by a sample): mclinear learns the link."""
    rng = np.random.default_rng(3)
    walk = np.cumsum(rng.integers(-200, 201, 4001))
    x = np.stack([walk[1:], walk[:-1]]).astype(np.int64)
    mc = np.abs(_make(order=2).encode(x)[:, 500:]).mean()
    poly = plugins.create("predictor", {"use": "polynomial", "order": 1}, Location("<t>", "p"))
    poly = np.abs(poly.encode(x))
    assert mc < 0.7 * poly[:, 500:].mean()


def test_learned_weights_are_used_and_validated():
    pred = _make(order=2, channels=2)
    assert pred.weight_count() == 8
    assert pred.initial_weights().tolist() == [0] * 8
    assert _make(order=2, channels=2, fixed=0).initial_weights().tolist() == [
        65536,
        0,
        0,
        0,
        0,
        0,
        65536,
        0,
    ]
    x = np.arange(20, dtype=np.int64).reshape(2, 10)
    before = pred.encode(x)
    w = np.zeros(8, np.int32)
    w[0] = 65536  # channel 0 extrapolates a line (its last difference again)
    pred.set_initial_weights(w)
    after = pred.encode(x)
    assert not np.array_equal(before, after)
    assert np.array_equal(pred.decode(after), x)
    # another channel count starts from persistence on both sides
    three = np.arange(30, dtype=np.int64).reshape(3, 10)
    assert np.array_equal(pred.decode(pred.encode(three)), three)
    with pytest.raises(QresError, match="shape"):
        pred.set_initial_weights(np.zeros(7, np.int32))


@pytest.mark.parametrize(
    ("key", "value"),
    [("order", 0), ("order", 33), ("shift", 1), ("shift", 17), ("adapt", 1), ("channels", 0)],
)
def test_bad_settings_are_profile_errors(key, value):
    with pytest.raises(ProfileError, match=key):
        _make(**{key: value})


def test_too_many_inputs_is_one_clear_error():
    with pytest.raises(ProfileError, match="order"):
        _make(order=32, channels=64)
    pred = _make(order=32)
    with pytest.raises(QresError, match="lower the order"):
        pred.encode(np.zeros((33, 4), np.int64))


def test_batch_step_matches_reference_and_learns():
    from qres.builtin_plugins.predictors import mclinear

    rng = np.random.default_rng(5)
    walk = np.cumsum(rng.integers(-20, 21, 301))
    x = np.clip(np.stack([walk[1:], walk[:-1]]), -2048, 2047).astype(np.int64)
    order = 2
    w = mclinear.persistence(2, order, fixed=1).astype(np.int64)
    w[1, 0] = 20000  # somewhere to start from
    delta = mclinear.batch_step(w, x, order, 65536)
    # plain-Python reference of one step, on first differences
    xs = [[b - a for a, b in zip(row, row[1:], strict=False)] for row in x.tolist()]
    n = len(xs[0])
    hrows = [
        [xs[k][order + t - 1 - j] for t in range(n - order)] for k in range(2) for j in range(2)
    ]
    tr = 1 + sum(v * v for row in hrows for v in row)
    for c in range(2):
        for j in range(4):
            g = 0
            for t in range(n - order):
                acc = sum(int(w[c, i]) * hrows[i][t] for i in range(4))
                acc = _clamp(acc, -(1 << 28), 1 << 28)
                g += ((xs[c][order + t] << 16) - acc) * hrows[j][t]
            assert delta[c, j] == _clamp(_div_round(_div_round(g, tr) * 65536, 65536), -WLIM, WLIM)
    # steps lower the error: channel 1 repeats channel 0 one sample later
    dx = mclinear.model_input(x, 1)

    def err(wm):
        h = mclinear.history(dx, order)
        return np.abs((dx[:, order:] << 16) - mclinear.predict_q16(wm, h)).mean()

    start = err(w)
    for _ in range(20):
        w = w + mclinear.batch_step(w, x, order, 65536)
    assert err(w) < 0.8 * start
    assert abs(int(w[1, 0]) - 65536) < abs(20000 - 65536)
    with pytest.raises(QresError, match="normalise"):
        mclinear.batch_step(w, x * 0 + 5000, order, 65536, fixed=0)


def test_codec_round_trip_through_a_profile(tmp_path):
    from conftest import run_qres

    rng = np.random.default_rng(9)
    walk = np.cumsum(rng.integers(-40, 41, 6001))
    data = np.stack([walk[1:], walk[:-1] // 2, rng.integers(-5, 6, 6000)], axis=1)
    raw = tmp_path / "x.raw"
    np.clip(data, -32768, 32767).astype("<i2").tofile(raw)
    profile = tmp_path / "mc.toml"
    profile.write_text(
        '[profile]\nname = "mc"\ndescription = "multichannel linear"\n\n'
        '[codec]\nblock_samples = 4096\ndtype = "int16"\n'
        'predictor = { use = "mclinear", order = 3 }\ncoder = { use = "rice" }\n'
    )
    args = ("--dtype", "int16", "--channels", "3", "--profile", str(profile))
    res = run_qres("compress", str(raw), *args)
    assert res.returncode == 0, res.stderr
    packed = tmp_path / "x.raw.qres"
    raw.rename(tmp_path / "orig.raw")
    res = run_qres("decompress", str(packed))
    assert res.returncode == 0, res.stderr
    assert raw.read_bytes() == (tmp_path / "orig.raw").read_bytes()
    assert packed.stat().st_size < 0.5 * raw.stat().st_size
    info = run_qres("info", str(packed), "--json")
    assert info.returncode == 0 and b"mclinear" in info.stdout
