"""Attack plugins: shapes, seeded reproducibility, the forged values each paper defines,
no mutation of the honest rows, clear errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qres.fixed.q16 import Q_MAX, Q_MIN
from qres.kernel import plugins
from qres.kernel.config import Location
from qres.kernel.errors import ProfileError, QresError

PROPS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ATTACKS = [
    "sign-flip",
    "ipm",
    "alie",
    "gaussian",
    "mimic",
    "extreme",
    "optimal-ipm",
    "optimal-alie",
    "minmax",
    "drift",
]


def make(name: str, **cfg):
    return plugins.create("attack", {"use": name, **cfg}, Location("<test>"))


def honest_rows(seed: int = 0, h: int = 12, d: int = 9) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(-(1 << 17), 1 << 17, (h, d), dtype=np.int32)


def test_all_attacks_registered():
    assert set(ATTACKS) <= set(plugins.registry()["attack"])


@pytest.mark.parametrize("name", ATTACKS)
@PROPS
@given(
    h=st.integers(1, 8),
    d=st.integers(1, 6),
    f=st.integers(0, 5),
    seed=st.integers(0, 2**32 - 1),
    big=st.booleans(),
)
def test_shape_dtype_reproducible_no_mutation(name, h, d, f, seed, big):
    lo, hi = (Q_MIN, Q_MAX) if big else (-(1 << 18), 1 << 18)
    honest = np.random.default_rng(seed).integers(lo, hi, (h, d), dtype=np.int32, endpoint=True)
    before = honest.copy()
    out = make(name).forge(honest, f, rng=np.random.default_rng(seed))
    assert out.shape == (f, d) and out.dtype == np.int32
    np.testing.assert_array_equal(honest, before)
    again = make(name).forge(honest, f, rng=np.random.default_rng(seed))
    assert out.tobytes() == again.tobytes()


def test_sign_flip_and_ipm_values():
    honest = np.array([[65536, -131072], [196608, 0]], np.int32)  # mean (2.0, -1.0)
    rng = np.random.default_rng(0)
    assert make("sign-flip").forge(honest, 2, rng=rng).tolist() == [[-131072, 65536]] * 2
    assert make("sign-flip", scale=3.0).forge(honest, 1, rng=rng).tolist() == [[-393216, 196608]]
    assert make("ipm", epsilon=0.5).forge(honest, 1, rng=rng).tolist() == [[-65536, 32768]]


def test_alie_hides_inside_the_spread():
    honest = honest_rows()
    h = honest.astype(np.float64)
    out = make("alie").forge(honest, 4, rng=np.random.default_rng(0))
    assert (out == out[0]).all()
    mean, std = h.mean(axis=0), h.std(axis=0)
    shift = (mean - out[0]) / std
    # n = 16, f = 4: s = 5, z = Phi^-1(11 / 16) ~= 0.489
    np.testing.assert_allclose(shift, 0.4887764, atol=1e-4)
    fixed = make("alie", z=1.5).forge(honest, 1, rng=np.random.default_rng(0))[0]
    np.testing.assert_allclose((mean - fixed) / std, 1.5, atol=1e-4)


def test_gaussian_depends_on_seed_and_sigma():
    honest = honest_rows(d=2000)
    a = make("gaussian", sigma=1.0).forge(honest, 3, rng=np.random.default_rng(1))
    b = make("gaussian", sigma=1.0).forge(honest, 3, rng=np.random.default_rng(2))
    assert a.tobytes() != b.tobytes()
    noise = (a - honest.astype(np.float64).mean(axis=0)) / 65536
    assert abs(noise.std() - 1.0) < 0.05 and abs(noise.mean()) < 0.05


def test_mimic_copies_an_honest_row():
    honest = honest_rows()
    out = make("mimic").forge(honest, 5, rng=np.random.default_rng(3))
    assert any((out == r).all() for r in honest)
    fixed = make("mimic", target=4).forge(honest, 2, rng=np.random.default_rng(0))
    assert (fixed == honest[4]).all()


def test_extreme_saturates():
    honest = np.array([[10, -10, 0]], np.int32)
    rng = np.random.default_rng(0)
    assert make("extreme").forge(honest, 1, rng=rng).tolist() == [[Q_MIN, Q_MAX, Q_MAX]]
    assert make("extreme", mode="alternate").forge(honest, 3, rng=rng)[:, 0].tolist() == [
        Q_MAX,
        Q_MIN,
        Q_MAX,
    ]
    assert (make("extreme", mode="min").forge(honest, 2, rng=rng) == Q_MIN).all()


def test_attacks_move_the_mean_but_not_the_median():
    honest = honest_rows(h=20, d=5)
    median = plugins.create("aggregator", {"use": "median"}, Location("<test>"))
    mean = plugins.create("aggregator", {"use": "mean"}, Location("<test>"))
    bad = make("extreme").forge(honest, 6, rng=np.random.default_rng(0))
    x = np.vstack([honest, bad])
    m = median.aggregate(x, f=6)
    assert (m >= honest.min(axis=0)).all() and (m <= honest.max(axis=0)).all()
    assert np.abs(mean.aggregate(x, f=6).astype(np.int64)).min() > 1 << 28


@pytest.mark.parametrize("name", ATTACKS)
def test_malformed_input(name):
    rng = np.random.default_rng(0)
    ok = honest_rows(h=3, d=2)
    for bad, match in [
        (ok.astype(np.float64), "int32"),
        (ok[0], "2-D"),
        (np.zeros((0, 2), np.int32), "at least one"),
    ]:
        with pytest.raises(QresError, match=match):
            make(name).forge(bad, 1, rng=rng)
    with pytest.raises(QresError, match="negative"):
        make(name).forge(ok, -1, rng=rng)
    with pytest.raises(QresError, match="integer"):
        make(name).forge(ok, 1.0, rng=rng)
    with pytest.raises(QresError, match="Generator"):
        make(name).forge(ok, 1, rng=0)


def test_config_errors():
    with pytest.raises(ProfileError, match="mode"):
        make("extreme", mode="up")
    with pytest.raises(ProfileError, match="sigma"):
        make("gaussian", sigma=-1.0)


@pytest.mark.parametrize(
    ("name", "plain", "key"), [("optimal-ipm", "ipm", "epsilon"), ("optimal-alie", "alie", "z")]
)
def test_optimal_attacks_displace_at_least_as_much_as_any_grid_point(name, plain, key):
    honest = honest_rows(seed=4, h=14, d=6)
    table = {"use": "trimmed-mean"}
    rule = plugins.create("aggregator", table, Location("<test>"))
    mean = honest.astype(np.float64).mean(axis=0)

    def gap(bad):
        out = rule.aggregate(np.vstack([honest, bad]), f=4).astype(np.float64)
        return float(np.linalg.norm(out - mean))

    best = gap(
        make(name, aggregator=table, max_scale=8.0, steps=5).forge(
            honest, 4, rng=np.random.default_rng(0)
        )
    )
    for scale in (0.5, 1.0, 2.0, 4.0, 8.0):
        fixed = make(plain, **{key: scale}).forge(honest, 4, rng=np.random.default_rng(0))
        assert best >= gap(fixed) - 1e-9


def test_minmax_stays_within_the_honest_diameter():
    honest = honest_rows(seed=5, h=10, d=7)
    h = honest.astype(np.float64)
    diam = max(np.linalg.norm(a - b) for a in h for b in h)
    for direction in ("std", "unit", "sign"):
        bad = make("minmax", direction=direction).forge(honest, 3, rng=np.random.default_rng(0))
        reach = max(np.linalg.norm(h - bad[0].astype(np.float64), axis=1))
        assert reach <= diam + 2 * math.sqrt(7)  # rounding to Q16.16 units
        assert reach >= 0.99 * diam  # gamma is the largest that fits
    with pytest.raises(ProfileError, match="direction"):
        make("minmax", direction="up")


def test_drift_direction_is_fixed_across_rounds():
    a = make("drift").forge(honest_rows(seed=1), 3, rng=np.random.default_rng(1))
    b = make("drift").forge(honest_rows(seed=2), 3, rng=np.random.default_rng(2))
    ma = honest_rows(seed=1).astype(np.float64).mean(axis=0)
    mb = honest_rows(seed=2).astype(np.float64).mean(axis=0)
    assert (np.sign(a - ma) == np.sign(b - mb)).all()
    other = make("drift", direction_seed=9).forge(
        honest_rows(seed=1), 3, rng=np.random.default_rng(1)
    )
    assert not (np.sign(other - ma) == np.sign(a - ma)).all()
    std = honest_rows(seed=1).astype(np.float64).std(axis=0)
    assert (np.abs(a - ma) <= 0.55 * std + 1).all()
