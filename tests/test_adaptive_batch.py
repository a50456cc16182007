"""The adaptive rule's integer paths against its plain Fraction definition: the per-call rule,
the batch over many row sets (what the swarm runs), the row-identity counts and the power
table give the same integers as the definition, on hypothesis-drawn row sets with copies,
extreme values and every kind of reputation."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from qres.builtin_plugins.aggregators import reputation as rep_mod

from qres.fixed.q16 import Q_MAX, Q_MIN
from qres.kernel import plugins
from qres.kernel.config import Location
from qres.kernel.errors import QresError
from qres.robust.aggregate import sq_dists_to, to_q, trimmed_mean

PROPS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def make(**cfg):
    return plugins.create("aggregator", {"use": "adaptive", **cfg}, Location("<test>"))


def reference(rule, x, f, weights):
    """The adaptive rule as first written: Fractions for trust, limits and the cap,
    ``numpy.unique`` for identical rows, :func:`powered` per row."""
    cfg = rule.config
    n = x.shape[0]
    c = trimmed_mean(x, f)
    reps = [1 << 16] * n if weights is None else [int(r) for r in weights]
    low = math.floor(cfg.distrust * 65536 + 0.5)
    high = math.floor(cfg.trust * 65536 + 0.5)

    def trust_of(r):
        if r <= low:
            return Fraction(0)
        if r >= high:
            return Fraction(1)
        return Fraction(r - low, high - low)

    trust = [trust_of(r) for r in reps]
    k = rep_mod.exponent_for(n)
    raw = [rep_mod.powered(r, k) if t else 0 for r, t in zip(reps, trust, strict=True)]
    _, inverse, counts = np.unique(x, axis=0, return_inverse=True, return_counts=True)
    raw = [w // int(m) for w, m in zip(raw, counts[inverse.reshape(-1)], strict=True)]
    if not any(raw):
        return c
    d2 = sq_dists_to(x, c)
    r2 = Fraction(cfg.radius) ** 2 * sorted(d2)[(n - 1) // 2]
    factor = []
    for d, t in zip(d2, trust, strict=True):
        limit = r2 * t * t
        if d <= limit:
            factor.append(1 << 30)
        else:
            factor.append(math.isqrt((limit.numerator << 60) // (limit.denominator * d)))
    step = x.astype(np.int64) - c.astype(np.int64)
    clipped = (step * np.array(factor, np.int64)[:, None] + (1 << 29)) >> 30
    total = sum(raw)
    top = math.floor(Fraction(cfg.cap) * (1 << 30))
    shares = np.array([min(w * (1 << 30) // total, top) if w else 0 for w in raw], np.int64)
    return to_q(c.astype(np.int64) + ((shares @ clipped + (1 << 29)) >> 30))


REP_VALUES = st.one_of(
    st.integers(0, 65536), st.sampled_from([0, 6553, 6554, 6555, 58981, 58982, 65536])
)


@st.composite
def row_sets(draw, max_g=6):
    g = draw(st.integers(1, max_g))
    m = draw(st.integers(1, 13))
    d = draw(st.integers(1, 5))
    scale = draw(st.sampled_from([4, 1 << 10, 1 << 20, Q_MAX]))
    values = st.one_of(st.integers(-scale, scale), st.sampled_from([Q_MIN, Q_MAX, 0]))
    x = np.array(draw(st.lists(values, min_size=g * m * d, max_size=g * m * d)), np.int64)
    x = x.reshape(g, m, d).astype(np.int32)
    copies = draw(st.lists(st.tuples(st.integers(0, m - 1), st.integers(0, m - 1)), max_size=6))
    for a, b in copies:  # identical rows inside a set
        x[:, b] = x[:, a]
    reps = None
    if draw(st.booleans()):
        reps = np.array(draw(st.lists(REP_VALUES, min_size=g * m, max_size=g * m)), np.int64)
        reps = reps.reshape(g, m)
    f = draw(st.integers(0, (m - 1) // 2))
    return x, f, reps


CONFIGS = st.fixed_dictionaries(
    {
        "radius": st.sampled_from([1.0, 0.5, 1.5, 0.1, 3.0, 1e-30, 0.0]),
        "cap": st.sampled_from([0.1, 0.25, 1.0, 2.0**-20]),
        "distrust": st.sampled_from([0.1, 0.0, 0.5]),
        "trust": st.sampled_from([0.9, 0.5, 1.0]),
    }
)


@PROPS
@given(row_sets(), CONFIGS)
def test_per_call_and_batch_equal_the_fraction_definition(case, cfg):
    x, f, reps = case
    rule = make(**cfg)
    want = [reference(rule, x[k], f, None if reps is None else reps[k]) for k in range(len(x))]
    for k in range(len(x)):
        got = rule.aggregate(x[k], f=f, weights=None if reps is None else reps[k])
        assert got.tolist() == want[k].tolist()
    assert rule.aggregate_batch(x, f, reps).tolist() == np.array(want).tolist()


def test_batch_float_filter_meets_ties_and_exact_roots():
    """Rows whose clipping factor is a tie or an exact root (distance 4x, 16x the median,
    the limit itself) fall to the integer path and still match."""
    rule = make()
    base = np.zeros((9, 4), np.int32)
    base[:, 0] = [0, 1, -1, 2, -2, 2, 4, 8, -16]
    x = np.stack([base, base * 3, base + 5])
    reps = np.tile(np.array([65536, 32768, 6554, 58982, 40000, 65536, 1, 0, 65536]), (3, 1))
    want = [reference(rule, x[k], 2, reps[k]).tolist() for k in range(3)]
    assert rule.aggregate_batch(x, 2, reps).tolist() == want


def test_voices_count_copies_and_survive_hash_collisions(monkeypatch):
    rng = np.random.default_rng(5)
    x = rng.integers(-3, 3, (40, 7, 3)).astype(np.int32)  # many chance copies
    want = []
    for s in x:
        _, inv, cnt = np.unique(s, axis=0, return_inverse=True, return_counts=True)
        want.append(cnt[inv.reshape(-1)].tolist())
    assert rep_mod.voices(x).tolist() == want
    # every hash equal: each set is checked row by row and counted by numpy.unique
    rep_mod._mix.cache_clear()
    monkeypatch.setattr(rep_mod, "_mix", lambda d: np.zeros(d, np.uint64))
    assert rep_mod.voices(x).tolist() == want


def test_powers_are_powered():
    reps = np.array([[0, 1, 2, 255, 6554], [32768, 58982, 65535, 65536, 2]], np.int64)
    for e in (4, 6, 7):
        want = [[rep_mod.powered(int(r), Fraction(e, 2)) for r in row] for row in reps]
        assert rep_mod.powers(reps, e).tolist() == want


def test_batch_refuses_what_aggregate_refuses():
    rule = make()
    x = np.zeros((2, 5, 3), np.int32)
    with pytest.raises(QresError, match="n > 2f"):
        rule.aggregate_batch(x, 3)
    with pytest.raises(QresError, match="int32"):
        rule.aggregate_batch(x.astype(np.int64), 1)
    with pytest.raises(QresError, match=r"\[0, 65536\]"):
        rule.aggregate_batch(x, 1, np.full((2, 5), 70000))
    with pytest.raises(QresError, match="integers"):
        rule.aggregate_batch(x, 1, np.ones((2, 4), np.int64))
