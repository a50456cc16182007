"""Aggregator plugins: permutation invariance, no mutation, float references, robustness,
exact distances and clear errors on malformed input."""

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
from qres.robust import aggregate as agg

PROPS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

RULES = [
    "mean",
    "median",
    "trimmed-mean",
    "meamed",
    "krum",
    "multi-krum",
    "bulyan",
    "geometric-median",
    "centered-clipping",
    "reputation-weighted",
    "adaptive",
    "nnm",
    "bucketing",
    "clipping",
    "arc",
]


def make(name: str, **cfg):
    return plugins.create("aggregator", {"use": name, **cfg}, Location("<test>"))


def max_f(rule: str, n: int) -> int:
    """The largest f each rule accepts for n rows (-1: none)."""
    if rule in ("median", "trimmed-mean", "meamed", "adaptive"):
        return (n - 1) // 2
    if rule == "bucketing":  # default buckets of 2
        return -(-n // 2) - 1
    if rule in ("krum", "multi-krum"):
        return (n - 3) // 2
    if rule == "bulyan":
        return (n - 3) // 4
    return n - 1


@st.composite
def updates(draw, min_n=1, max_n=11, max_d=6):
    n = draw(st.integers(min_n, max_n))
    d = draw(st.integers(1, max_d))
    big = draw(st.booleans())
    lo, hi = (Q_MIN, Q_MAX) if big else (-(1 << 18), 1 << 18)
    # Few distinct values make ties (equal scores, equal distances) common.
    pool = draw(st.lists(st.integers(lo, hi), min_size=1, max_size=6))
    vals = draw(
        st.lists(st.sampled_from(pool) | st.integers(lo, hi), min_size=n * d, max_size=n * d)
    )
    return np.array(vals, dtype=np.int32).reshape(n, d)


def test_all_rules_registered():
    names = set(plugins.registry()["aggregator"])
    assert set(RULES) <= names


@pytest.mark.parametrize("rule", RULES)
@PROPS
@given(x=updates(), data=st.data())
def test_permutation_invariant_and_no_mutation(rule, x, data):
    n = x.shape[0]
    top = max_f(rule, n)
    if top < 0:
        with pytest.raises(QresError, match="needs"):
            make(rule).aggregate(x, f=0)
        return
    f = data.draw(st.integers(0, top))
    before = x.copy()
    out = make(rule).aggregate(x, f=f)
    assert out.dtype == np.int32 and out.shape == (x.shape[1],)
    np.testing.assert_array_equal(x, before)
    assert x.flags.writeable
    perm = data.draw(st.permutations(range(n)))
    again = make(rule).aggregate(np.ascontiguousarray(x[list(perm)]), f=f)
    assert out.tobytes() == again.tobytes()


def ref_round(v: float) -> int:
    return math.floor(v + 0.5)


@PROPS
@given(x=updates(), data=st.data())
def test_coordinatewise_match_float_reference(x, data):
    n = x.shape[0]
    f = data.draw(st.integers(0, (n - 1) // 2))
    xf = x.astype(np.float64)
    srt = np.sort(xf, axis=0)
    ref = {
        "mean": xf.mean(axis=0),
        "median": np.median(xf, axis=0),
        "trimmed-mean": srt[f : n - f].mean(axis=0),
    }
    for rule, expect in ref.items():
        got = make(rule).aggregate(x, f=f).astype(np.float64)
        # float64 means of large int32 values can be off by far less than one unit
        assert np.all(np.abs(got - expect) <= 0.5 + 1e-6 * np.abs(expect) + 1e-9), rule
    med = np.median(xf, axis=0)
    got = make("meamed").aggregate(x, f=f)
    for j in range(x.shape[1]):
        # any tie-break choice of the n - f closest values gives a mean between these two
        dists = sorted(abs(v - med[j]) for v in xf[:, j])
        cut = dists[n - f - 1]
        inner = [v for v in xf[:, j] if abs(v - med[j]) < cut]
        edge = sorted(v for v in xf[:, j] if abs(v - med[j]) == cut)
        need = n - f - len(inner)
        lo = (sum(inner) + sum(edge[:need])) / (n - f)
        hi = (sum(inner) + sum(edge[len(edge) - need :])) / (n - f)
        assert ref_round(lo) - 1 <= got[j] <= ref_round(hi) + 1


def exact_scores(x: np.ndarray, f: int) -> list[int]:
    rows = [[int(v) for v in r] for r in x]
    n = len(rows)
    out = []
    for i in range(n):
        ds = sorted(
            sum((a - b) ** 2 for a, b in zip(rows[i], rows[j], strict=True))
            for j in range(n)
            if j != i
        )
        out.append(sum(ds[: n - f - 2]))
    return out


@PROPS
@given(x=updates(min_n=3), data=st.data())
def test_krum_and_multikrum_match_exact_reference(x, data):
    n = x.shape[0]
    f = data.draw(st.integers(0, (n - 3) // 2))
    scores = exact_scores(x, f)
    got = make("krum").aggregate(x, f=f)
    best = min(scores)
    assert any(scores[i] == best and (x[i] == got).all() for i in range(n))
    m = data.draw(st.integers(1, n))
    multi = make("multi-krum", m=m).aggregate(x, f=f)
    order = sorted(range(n), key=lambda i: scores[i])
    if m == n or scores[order[m - 1]] != scores[order[m]]:  # the chosen set is unambiguous
        expect = x[order[:m]].astype(np.float64).mean(axis=0)
        assert np.all(np.abs(multi - expect) <= 0.5 + 1e-6 * np.abs(expect))


@PROPS
@given(x=updates(min_n=2, max_n=9, max_d=5), block=st.integers(1, 4))
def test_distance_blocks_are_exact(x, block):
    n = x.shape[0]
    rows = [[int(v) for v in r] for r in x]
    for start, dist in agg.distance_blocks(x, block=block):
        if isinstance(dist, tuple):
            full = [
                [(int(h) << 32) + int(lo) for h, lo in zip(hr, lr, strict=True)]
                for hr, lr in zip(*dist, strict=True)
            ]
        else:
            full = dist.tolist()
        for i, row in enumerate(full):
            for j in range(n):
                want = sum((a - b) ** 2 for a, b in zip(rows[start + i], rows[j], strict=True))
                assert row[j] == want
    z = x[0]
    assert agg.sq_dists_to(x, z, block=block) == [
        sum((a - int(b)) ** 2 for a, b in zip(r, z, strict=True)) for r in rows
    ]


def float_weiszfeld(x: np.ndarray, iters: int = 200) -> np.ndarray:
    z = x.mean(axis=0)
    for _ in range(iters):
        w = 1.0 / np.maximum(np.linalg.norm(x - z, axis=1), 1e-4)
        z = (w[:, None] * x).sum(axis=0) / w.sum()
    return z


def objective(x: np.ndarray, z: np.ndarray) -> float:
    return float(np.linalg.norm(x - z, axis=1).sum())


def test_geometric_median_close_to_float_reference():
    rng = np.random.default_rng(7)
    x = rng.normal(0, 1, (40, 8))
    x[:10] += 50.0  # a cluster of outliers
    q = np.floor(x * 65536 + 0.5).astype(np.int32)
    got = make("geometric-median", iterations=60, tolerance=0).aggregate(q, f=10) / 65536
    ref = float_weiszfeld(x)
    assert objective(x, got) <= objective(x, ref) * 1.001
    assert np.abs(got - ref).max() < 0.05
    # the mean is dragged toward the outliers; the geometric median is not
    assert objective(x, got) < objective(x, x.mean(axis=0))


def test_weights_mean_and_geometric_median():
    x = np.array([[0, 10], [65536, 20], [65536, 31]], dtype=np.int32)
    out = make("mean").aggregate(x, f=0, weights=[1, 0, 1])
    assert out.tolist() == [32768, 21]  # (10 + 31) / 2 = 20.5 rounds up
    dup = make("geometric-median").aggregate(np.repeat(x, [3, 1, 2], axis=0), f=0)
    w = make("geometric-median").aggregate(x, f=0, weights=np.array([3, 1, 2]))
    assert np.abs(dup.astype(np.int64) - w).max() <= 2


def test_rounding_rule_ties_toward_plus_infinity():
    x = np.array([[1], [2]], dtype=np.int32)
    assert make("mean").aggregate(x, f=0).tolist() == [2]
    assert make("median").aggregate(-x, f=0).tolist() == [-1]
    assert agg.div_round(-3, 2) == -1 and agg.div_round(3, 2) == 2 and agg.div_round(5, 3) == 2


ROBUST = ["median", "trimmed-mean", "meamed", "krum", "multi-krum", "bulyan"]


@pytest.mark.parametrize("rule", ROBUST)
@PROPS
@given(
    honest=st.integers(7, 14).flatmap(
        lambda n: st.lists(
            st.lists(st.integers(-(1 << 16), 1 << 16), min_size=4, max_size=4),
            min_size=n,
            max_size=n,
        )
    ),
    data=st.data(),
)
def test_extreme_rows_stay_outside_the_result(rule, honest, data):
    h = np.array(honest, dtype=np.int32)
    n_total_max = len(honest) * 2
    f = data.draw(st.integers(1, 3))
    n = len(honest) + f
    if max_f(rule, n) < f:
        return
    assert n <= n_total_max
    signs = data.draw(st.lists(st.sampled_from([Q_MIN, Q_MAX]), min_size=f, max_size=f))
    bad = np.array([[s] * 4 for s in signs], dtype=np.int32)
    x = np.vstack([h, bad])
    out = make(rule).aggregate(x, f=f)
    assert (out >= h.min(axis=0)).all() and (out <= h.max(axis=0)).all()


def test_krum_picks_honest_row_under_saturation():
    rng = np.random.default_rng(1)
    h = rng.integers(-(1 << 16), 1 << 16, (20, 50), dtype=np.int32)
    bad = np.full((8, 50), Q_MAX, dtype=np.int32)
    bad[::2] = Q_MIN
    out = make("krum").aggregate(np.vstack([bad, h]), f=8)
    assert any((out == r).all() for r in h)


@pytest.mark.parametrize(
    ("updates_", "f", "match"),
    [
        ([[1, 2]], 0, "numpy array"),
        (np.zeros(3, np.int32), 0, "2-D"),
        (np.zeros((2, 2, 2), np.int32), 0, "2-D"),
        (np.zeros((3, 2), np.float64), 0, "int32"),
        (np.zeros((3, 2), np.int64), 0, "int32"),
        (np.zeros((0, 2), np.int32), 0, "n >= 1"),
        (np.zeros((3, 0), np.int32), 0, "d >= 1"),
        (np.zeros((3, 2), np.int32), 3, "out of range"),
        (np.zeros((3, 2), np.int32), -1, "out of range"),
        (np.zeros((3, 2), np.int32), 1.0, "must be an integer"),
        (np.zeros((3, 2), np.int32), True, "must be an integer"),
    ],
)
@pytest.mark.parametrize("rule", RULES)
def test_malformed_input_is_a_clear_error(rule, updates_, f, match):
    with pytest.raises(QresError, match=match) as info:
        make(rule).aggregate(updates_, f=f)
    assert "\n" not in str(info.value) and rule in str(info.value)


@pytest.mark.parametrize(
    ("rule", "n", "f"),
    [
        ("bulyan", 10, 2),
        ("bulyan", 6, 1),
        ("krum", 6, 2),
        ("multi-krum", 4, 1),
        ("median", 4, 2),
        ("trimmed-mean", 5, 3),
        ("meamed", 2, 1),
    ],
)
def test_rule_specific_f_bounds(rule, n, f):
    with pytest.raises(QresError, match="needs") as info:
        make(rule).aggregate(np.zeros((n, 3), np.int32), f=f)
    if rule == "bulyan":
        assert "4f + 3" in str(info.value)


def test_bulyan_accepts_its_smallest_setting():
    x = np.arange(33, dtype=np.int32).reshape(11, 3)
    assert make("bulyan").aggregate(x, f=2).shape == (3,)


def test_weights_errors():
    x = np.zeros((3, 2), np.int32)
    with pytest.raises(QresError, match="does not take"):
        make("median").aggregate(x, f=0, weights=[1, 1, 1])
    for bad in ([1, 1], [1, -1, 1], [0, 0, 0], [1.5, 1, 1], [1 << 30, 1, 0]):
        with pytest.raises(QresError, match="weights"):
            make("mean").aggregate(x, f=0, weights=bad)


def test_config_errors_name_the_key():
    with pytest.raises(ProfileError, match="tau"):
        make("centered-clipping", tau=0)
    with pytest.raises(ProfileError, match="iterations"):
        make("geometric-median", iterations=0)
    with pytest.raises(QresError, match="m=9 exceeds"):
        make("multi-krum", m=9).aggregate(np.zeros((5, 2), np.int32), f=1)


WRAPPED = [
    {"use": "nnm", "inner": {"use": "median"}},
    {"use": "nnm", "inner": {"use": "krum"}},
    {"use": "bucketing", "bucket": 2, "inner": {"use": "mean"}},
    {"use": "bucketing", "bucket": 3, "inner": {"use": "geometric-median"}},
    {"use": "clipping", "tau": 1.5, "inner": {"use": "trimmed-mean"}},
    {"use": "arc", "inner": {"use": "multi-krum"}},
]


def make_table(table):
    return plugins.create("aggregator", table, Location("<test>"))


@pytest.mark.parametrize("table", WRAPPED, ids=lambda t: f"{t['use']}-{t['inner']['use']}")
@PROPS
@given(x=updates(), data=st.data())
def test_preaggregation_permutation_invariant(table, x, data):
    n = x.shape[0]
    inner = table["inner"]["use"]
    top = (n - 1) // 2
    if inner in ("krum", "multi-krum"):
        top = (n - 3) // 2
    if table["use"] == "bucketing":
        top = min(top, -(-n // table["bucket"]) - 1)
    if top < 0:
        return
    f = data.draw(st.integers(0, top))
    before = x.copy()
    out = make_table(table).aggregate(x, f=f)
    np.testing.assert_array_equal(x, before)
    perm = list(data.draw(st.permutations(range(n))))
    assert out.tobytes() == make_table(table).aggregate(x[perm], f=f).tobytes()


def ref_nnm_mean(x: np.ndarray, f: int) -> list[int]:
    rows = sorted(([int(v) for v in r] for r in x), key=lambda r: np.array(r, np.int32).tobytes())
    n, k = len(rows), len(rows) - f
    mixed = []
    for r in rows:
        near = sorted(
            range(n), key=lambda j: sum((a - b) ** 2 for a, b in zip(r, rows[j], strict=True))
        )[:k]
        mixed.append([(2 * sum(rows[j][c] for j in near) + k) // (2 * k) for c in range(len(r))])
    return [(2 * sum(m[c] for m in mixed) + n) // (2 * n) for c in range(len(rows[0]))]


@PROPS
@given(x=updates(), data=st.data())
def test_nnm_matches_exact_reference(x, data):
    f = data.draw(st.integers(0, x.shape[0] - 1))
    got = make_table({"use": "nnm", "inner": {"use": "mean"}}).aggregate(x, f=f)
    assert got.tolist() == ref_nnm_mean(x, f)


@PROPS
@given(x=updates(max_n=1), tau=st.floats(0.01, 100.0))
def test_clipping_bounds_the_norm(x, tau):
    out = make_table({"use": "clipping", "tau": tau}).aggregate(x, f=0).astype(np.float64)
    norm_in = float(np.linalg.norm(x[0].astype(np.float64)))
    limit = math.floor(tau * 65536 + 0.5)
    assert np.linalg.norm(out) <= max(min(norm_in, limit), 0) + math.sqrt(x.shape[1])
    if norm_in <= limit:
        assert out.tolist() == x[0].tolist()


def test_arc_clips_the_largest_rows_to_the_next_norm():
    x = np.array(
        [[3 << 16, 0], [0, 1 << 16], [40 << 16, 0], [0, -(30 << 16)], [2 << 16, 0]], dtype=np.int32
    )
    # n = 5, f = 1: floor(2 * 1 * 4 / 5) = 1 row clipped, to the second largest norm (30.0)
    got = make_table({"use": "arc"}).aggregate(x, f=1)
    expect = (np.array([3 + 30 + 2, 1 - 30]) * 65536 / 5).round()
    assert got.tolist() == expect.astype(int).tolist()
    assert make_table({"use": "arc"}).aggregate(x, f=0).tolist() == (
        make("mean").aggregate(x, f=0).tolist()
    )


def test_bucketing_seeded_and_size_one_is_the_mean():
    x = np.arange(40, dtype=np.int32).reshape(10, 4) * 7919
    one = make_table({"use": "bucketing", "bucket": 1}).aggregate(x, f=0)
    assert one.tolist() == make("mean").aggregate(x, f=0).tolist()
    t = {"use": "bucketing", "bucket": 3, "inner": {"use": "median"}}
    a = make_table(t).aggregate(x, f=1, rng=np.random.default_rng(5))
    b = make_table(t).aggregate(x[::-1].copy(), f=1, rng=np.random.default_rng(5))
    assert a.tolist() == b.tolist()


def test_preaggregation_config_errors():
    with pytest.raises(QresError, match="needs f < 2 buckets"):
        make_table({"use": "bucketing", "bucket": 3}).aggregate(np.zeros((6, 2), np.int32), f=2)
    with pytest.raises(ProfileError, match="inner"):
        make_table({"use": "nnm", "inner": "krum"})
    with pytest.raises(ProfileError, match="inner.use"):
        make_table({"use": "nnm", "inner": {"use": "nope"}})
    with pytest.raises(ProfileError, match="inner.tau"):
        make_table({"use": "arc", "inner": {"use": "centered-clipping", "tau": -1}})


@pytest.mark.parametrize("rule", ["reputation-weighted", "adaptive"])
@PROPS
@given(x=updates(), data=st.data())
def test_reputation_rules_invariant_with_their_weights(rule, x, data):
    n = x.shape[0]
    f = data.draw(st.integers(0, (n - 1) // 2))
    reps = np.array(
        data.draw(
            st.lists(
                st.sampled_from([0, 1000, 6554, 32768, 65536]) | st.integers(0, 65536),
                min_size=n,
                max_size=n,
            )
        )
    )
    if rule == "reputation-weighted" and not any(r >= 4096 for r in reps):
        reps[0] = 65536  # keep at least one weight clearly above zero
    before = x.copy()
    out = make(rule).aggregate(x, f=f, weights=reps)
    np.testing.assert_array_equal(x, before)
    perm = list(data.draw(st.permutations(range(n))))
    again = make(rule).aggregate(x[perm], f=f, weights=reps[perm])
    assert out.tobytes() == again.tobytes()


def test_reputation_weighted_exponent_and_cap():
    from fractions import Fraction

    from qres.builtin_plugins.aggregators.reputation import capped_shares, exponent_for

    assert [exponent_for(n) for n in (19, 20, 50, 51)] == [2, 3, 3, Fraction(7, 2)]
    x = np.array([[0], [5 * 65536]], np.int32)
    reps = [65536, 32768]  # n < 20: weights 1 : 0.25
    assert make("reputation-weighted", cap=1.0).aggregate(x, f=0, weights=reps).tolist() == [65536]
    # no reputations: the plain mean
    y = np.arange(60, dtype=np.int32).reshape(30, 2) * 4099
    assert make("reputation-weighted").aggregate(y, f=0).tolist() == (
        make("mean").aggregate(y, f=0).tolist()
    )
    shares = capped_shares([1000, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 0], Fraction(1, 10))
    assert shares[0] == (1 << 30) // 10 and shares[-1] == 0
    # what the cap takes from the heavy node goes to nobody: the others keep their
    # proportional share (10 / 1100 of 2**30, floored)
    assert shares[1:11] == [(10 << 30) // 1100] * 10
    few = capped_shares([5, 1, 0], Fraction(1, 10))  # 2 nodes cannot both stay under 10 %
    assert few == [(1 << 30) // 10] * 2 + [0]


def test_cap_never_raises_a_distrusted_share():
    """7 trusted nodes at cap 0.1 take 0.7; the other 0.3 must not go to the near-distrusted."""
    from fractions import Fraction

    from qres.builtin_plugins.aggregators.reputation import capped_shares, exponent_for, powered

    reps = [65536] * 7 + [3277] * 13  # 13 nodes at reputation 0.05
    raw = [powered(r, exponent_for(20)) for r in reps]
    shares = capped_shares(raw, Fraction(1, 10))
    total = sum(raw)
    for w, s in zip(raw, shares, strict=True):
        assert s <= w * (1 << 30) // total + 1
    assert sum(shares[7:]) < (1 << 30) // 1000
    # the share the cap held back stays on the reputation-weighted median, not on the 13
    x = np.zeros((20, 3), np.int32)
    x[7:] = 1 << 24
    x[:7] = np.arange(21, dtype=np.int32).reshape(7, 3) * 100
    out = make("reputation-weighted").aggregate(x, f=0, weights=reps)
    assert (np.abs(out.astype(np.int64)) < (1 << 24) // 100).all()


def test_adaptive_bounded_trust():
    """No reputation bypasses the trimmed mean: a trusted attacker moves the result by at
    most cap x radius median distances; a distrusted one not at all."""
    rng = np.random.default_rng(3)
    honest = rng.integers(-(1 << 16), 1 << 16, (14, 8), dtype=np.int32)
    attack = np.repeat(honest.mean(axis=0, dtype=np.int64)[None, :] * -10, 6, axis=0)
    attack += rng.integers(-999, 999, attack.shape)  # rows that differ: no cartel signal
    x = np.vstack([honest, attack.astype(np.int32)])
    trimmed = make("trimmed-mean").aggregate(x, f=6)
    from qres.robust.aggregate import sq_dists_to

    scale = sorted(sq_dists_to(x, trimmed))[9] ** 0.5
    for reps in (None, np.full(20, 65536), np.full(20, 32768)):  # everybody trusted, or half
        out = make("adaptive").aggregate(x, f=6, weights=reps)
        moved = np.linalg.norm(out.astype(np.float64) - trimmed)
        assert moved <= 20 * 0.1 * scale + 8, (reps, moved, scale)
    # every step clipped inside one median distance: at most one median distance moved
    assert np.linalg.norm(make("adaptive").aggregate(x, f=6) - trimmed.astype(float)) <= scale
    # distrusted attackers contribute nothing: the result is the honest rows' clipped mean
    distrusted = np.full(20, 65536)
    distrusted[14:] = 0
    out = make("adaptive").aggregate(x, f=6, weights=distrusted)
    alone = make("adaptive").aggregate(
        np.vstack([honest, np.repeat(trimmed[None, :], 6, axis=0)]), f=6, weights=distrusted
    )
    assert (out >= honest.min(axis=0)).all() and (out <= honest.max(axis=0)).all()
    assert np.linalg.norm(out - alone.astype(float)) <= 0.2 * scale
    # everybody distrusted: nothing to add, the trimmed mean
    assert make("adaptive").aggregate(x, f=6, weights=np.zeros(20, int)).tolist() == (
        trimmed.tolist()
    )
    # trust grows the radius: a half-trusted node reaches less far than a trusted one
    adaptive = make("adaptive")
    assert adaptive.trust_of(6554) == 0 and adaptive.trust_of(58982) == 1
    assert 0 < adaptive.trust_of(32768) < 1
    with pytest.raises(ProfileError, match="trust"):
        make_table({"use": "adaptive", "distrust": 0.5, "trust": 0.4})


@PROPS
@given(x=updates(), data=st.data())
def test_adaptive_is_the_trimmed_mean_at_the_breakdown_point(x, data):
    """f as large as an honest majority allows: the trimmed mean, whatever the reputations."""
    n = x.shape[0]
    f = (n - 1) // 2
    reps = np.array(data.draw(st.lists(st.integers(0, 65536), min_size=n, max_size=n)))
    out = make("adaptive", trimmed_at_breakdown=True).aggregate(x, f=f, weights=reps)
    assert out.tobytes() == make("trimmed-mean").aggregate(x, f=f).tobytes()


def test_adaptive_falls_back_only_at_the_breakdown_point():
    """With ``trimmed_at_breakdown``, three trusted rows pushing together inside the radius
    move adaptive when the caller allows for two Byzantine rows of seven, and not when it
    allows for three (the median)."""
    from qres.builtin_plugins.aggregators.reputation import at_breakdown

    assert [at_breakdown(n, f) for n, f in ((3, 0), (3, 1), (4, 1), (5, 1), (7, 3), (8, 3))] == [
        False,
        True,
        True,
        False,
        True,
        True,
    ]
    assert not at_breakdown(100, 30) and at_breakdown(101, 50) and not at_breakdown(101, 49)
    assert at_breakdown(2, 0)  # two rows allow no Byzantine row: their mean
    rng = np.random.default_rng(11)
    honest = rng.integers(-(1 << 14), 1 << 14, (4, 6), dtype=np.int32)
    push = np.repeat(np.full((1, 6), 1 << 13, np.int32), 3, axis=0) + np.arange(3)[:, None]
    x = np.vstack([honest, push.astype(np.int32)])
    reps = np.full(7, 65536)
    median = make("median").aggregate(x, f=3)
    rule = make("adaptive", trimmed_at_breakdown=True)
    assert rule.aggregate(x, f=3, weights=reps).tolist() == median.tolist()
    moved = rule.aggregate(x, f=2, weights=reps)
    assert moved.tolist() != make("trimmed-mean").aggregate(x, f=2).tolist()
    # off by default: the clipped steps move the median too
    assert make("adaptive").aggregate(x, f=3, weights=reps).tolist() != median.tolist()
    # the batched path keeps the same rule
    sets = np.stack([x, x[::-1]])
    batch = rule.aggregate_batch(sets, 3, np.stack([reps, reps]))
    assert batch.tolist() == [median.tolist()] * 2


def test_reputation_errors():
    x = np.zeros((3, 2), np.int32)
    for rule in ("reputation-weighted", "adaptive"):
        with pytest.raises(QresError, match="reputations"):
            make(rule).aggregate(x, f=0, weights=[0, 70000, 1])
        with pytest.raises(QresError, match="reputations"):
            make(rule).aggregate(x, f=0, weights=[1, 1])
    with pytest.raises(QresError, match="zero"):
        make("reputation-weighted").aggregate(x, f=0, weights=[0, 0, 0])
    with pytest.raises(QresError, match="n > 2f"):
        make("adaptive").aggregate(x, f=2)


def test_reputation_tracker_flags_groups_and_far_rows():
    from qres.robust.reputation import ReputationTracker

    rng = np.random.default_rng(5)
    honest = rng.integers(-(1 << 16), 1 << 16, (20, 8), dtype=np.int32)
    cartel = np.repeat(honest.mean(axis=0, dtype=np.int64)[None, :] - 30000, 6, axis=0)
    far = np.full((1, 8), 1 << 28, np.int32)
    x = np.vstack([honest, cartel.astype(np.int32), far])
    ref = make("trimmed-mean").aggregate(x, f=7)
    tracker = ReputationTracker(27, start=0.5)
    flags = tracker.observe(x, ref)
    assert not flags[:20].any() and flags[20:].all()
    # rewards for the rest; likeness neither costs nor earns; distance costs the penalty
    assert tracker.reputations[:20].tolist() == [32768 + 3277] * 20
    assert tracker.reputations[20:26].tolist() == [32768] * 6
    assert tracker.reputations[26] == 32768 - 16384
    for _ in range(4):
        tracker.observe(x, ref)
    assert tracker.reputations[20:26].tolist() == [32768] * 6 and tracker.reputations[26] == 0
    # flags travel with their rows: any order gives the same flags per row
    perm = rng.permutation(27)
    assert np.array_equal(ReputationTracker(27).flags(x[perm], ref), flags[perm])
    # a cartel smaller than the group size is not a group
    small = np.vstack([honest, cartel[:4].astype(np.int32)])
    assert not ReputationTracker(24).flags(small, ref).any()


def test_adaptive_counts_identical_rows_once():
    """k copies of one row weigh as one node: a cartel sending one forged vector cannot buy
    weight by numbers, and the result does not depend on the row order."""
    from qres.builtin_plugins.aggregators.reputation import one_voice

    x = np.array([[1, 2], [3, 4], [1, 2], [5, 6], [1, 2]], np.int32)
    assert one_voice(x, [90, 10, 90, 7, 60]) == [30, 10, 30, 7, 20]
    rng = np.random.default_rng(9)
    honest = rng.integers(-(1 << 12), 1 << 12, (12, 6), dtype=np.int32)
    many = np.vstack([honest, np.repeat(np.full((1, 6), 1 << 11, np.int32), 5, axis=0)])
    rule = make("adaptive")
    five = rule.aggregate(many, f=3)
    perm = rng.permutation(many.shape[0])
    assert np.array_equal(rule.aggregate(many[perm], f=3), five)


def test_reputation_tracker_active_nodes_and_errors():
    from qres.robust.reputation import ReputationTracker

    x = np.arange(12, dtype=np.int32).reshape(6, 2) * 1000
    tracker = ReputationTracker(8, start=0.5)
    active = np.array([1, 1, 0, 1, 1, 1, 0, 1], bool)
    tracker.observe(x, np.zeros(2, np.int32), active=active)
    reps = tracker.as_weights()
    assert reps[2] == reps[6] == 32768 and (reps[active] == 32768 + 3277).all()
    with pytest.raises(QresError, match="active"):
        tracker.observe(x[:5], np.zeros(2, np.int32), active=active)
    with pytest.raises(QresError, match="reference"):
        tracker.observe(x, np.zeros(3, np.int32), active=active)
    with pytest.raises(QresError, match="penalty"):
        ReputationTracker(3, penalty=2.0)


def test_bulyan_blocked_selection_matches_the_full_matrix():
    from qres.builtin_plugins.aggregators.krum import _select_blocked, _select_full

    from qres.robust.aggregate import canonical_rows

    rng = np.random.default_rng(11)
    for n, f, d, scale in [(23, 5, 4, 1 << 16), (47, 11, 6, 1 << 16), (40, 0, 3, 100),
                           (31, 7, 5, 1 << 30)]:  # fmt: skip
        x = np.clip(rng.standard_normal((n, d)) * scale, -(2**31), 2**31 - 1).astype(np.int32)
        x[:4] = x[4]  # equal rows: ties broken by canonical position
        rows = canonical_rows(x)
        assert _select_blocked(rows, f, n - 2 * f, block=5) == _select_full(rows, f, n - 2 * f)


def test_bulyan_memory_is_bounded_blocks():
    import tracemalloc

    from qres.builtin_plugins.aggregators.krum import _select_blocked

    from qres.robust.aggregate import canonical_rows

    rng = np.random.default_rng(2)
    n = 1200
    rows = canonical_rows(rng.integers(-(1 << 16), 1 << 16, (n, 3), dtype=np.int32))
    tracemalloc.start()
    try:
        _select_blocked(rows, 299, n - 598, block=32)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # the n x n int64 matrix would be 11.5 MB; a few 32 x n blocks and O(n) state are far less
    assert peak < 8 * n * n // 4


def test_krum_scores_fast_path_equals_the_distance_blocks():
    from qres.robust.aggregate import distance_blocks, krum_scores, smallest_sums

    rng = np.random.default_rng(8)
    for n, d, f in [(50, 7, 10), (300, 30, 0), (301, 20, 149)]:
        x = np.floor(rng.standard_normal((n, d)) * 65536).astype(np.int32)
        x[:5] = x[5]  # ties
        slow = []
        for _start, dist in distance_blocks(x):
            slow.extend(smallest_sums(dist, n - f - 1))
        assert krum_scores(x, f) == slow
