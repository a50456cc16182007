"""The adapter hierarchy: each mechanism against its formula, and the hierarchy end to end."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qres.fixed.q16 import ONE
from qres.kernel.config import InvalidSetting
from qres.lora import mechanisms as mech
from qres.lora.health import DEGRADED, HEALTHY
from qres.lora.hierarchy import Hierarchy
from qres.lora.queues import MigrationQueue
from qres.lora.settings import CHANNELS, HierarchySettings

# -- settings ------------------------------------------------------------------------------


def test_seed_defaults_and_rank_scaling():
    s = HierarchySettings()
    assert s.ranks == [64, 32, 16, 8, 4]
    assert s.inertia == [0.99, 0.9, 0.7, 0.5, 0.1]
    assert min(s.bandwidth) == 1e-4 and max(s.bandwidth) == 1e-2
    roles = ("foundation", "domain", "swarm", "agent", "context")
    assert [s.rank_for(r, 128, 4096) for r in roles] == [64, 32, 16, 8, 4]
    assert [s.rank_for(r, 3, 12) for r in roles] == [3, 2, 1, 1, 1]
    assert [s.rank_for(r, 16, 16) for r in roles] == [16, 8, 4, 2, 1]
    assert CHANNELS == ("context->agent", "agent->swarm", "swarm->domain", "domain->foundation")


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("ranks", [64, 32, 16, 8]),
        ("ranks", [64, 32, 16, 8, 0]),
        ("inertia", [0.99, 0.9, 0.7, 0.5, 1.0]),
        ("bandwidth", [1e-2, 1e-3, 1e-4, 0.0]),
        ("density_k", 0),
        ("entropy_low", 0.9),
        ("circuit_lags", 16),
        ("block_choice", "oracle"),
    ],
)
def test_bad_settings_are_refused(key, value):
    with pytest.raises(InvalidSetting, match=key):
        HierarchySettings(**{key: value})


def test_profile_lora_table_is_validated(tmp_path):
    from qres.kernel import profiles
    from qres.kernel.errors import ProfileError

    good = tmp_path / "good.toml"
    good.write_text('[profile]\nname = "g"\n\n[lora]\ninertia = [0.9, 0.8, 0.7, 0.5, 0.2]\n')
    assert profiles.load(str(good)).settings("lora").inertia == [0.9, 0.8, 0.7, 0.5, 0.2]
    bad = tmp_path / "bad.toml"
    bad.write_text('[profile]\nname = "b"\n\n[lora]\nbandwidth = [2.0, 1e-3, 1e-4, 1e-4]\n')
    with pytest.raises(ProfileError, match="bandwidth"):
        profiles.load(str(bad))


# -- effective inertia ------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(x=st.integers(0, 10 * ONE))
def test_tanh_is_within_two_units(x):
    assert abs(mech.tanh_q16(x) - math.tanh(x / ONE) * ONE) <= 2


def test_effective_inertia_grows_with_density():
    base, k = int(0.5 * ONE), ONE
    assert mech.effective_inertia(base, 0, k) == base
    at_k = mech.effective_inertia(base, ONE, k)
    assert abs(at_k - (0.5 + 0.5 * math.tanh(1.0)) * ONE) <= 2
    values = [mech.effective_inertia(base, d * ONE // 4, k) for d in range(40)]
    assert values == sorted(values) and values[-1] < ONE
    assert values[-1] > ONE - 8


# -- phase-based decay ---------------------------------------------------------------------------


def test_decay_is_slow_for_screened_and_fast_for_free():
    values = np.array([1000, 1000, -1000], np.int32)
    initial = np.array([0, 0, 0], np.int32)
    out = mech.decay_toward(values, initial, [True, False, False], ONE // 64, ONE // 4)
    assert out.tolist() == [984, 750, -750]  # 1000 - round(1000/64) = 984 (15.6 -> 16)


def test_traces_mark_recent_activity():
    trace = np.zeros(2, np.int32)
    for _ in range(10):
        trace = mech.update_trace(trace, [True, False], 2)
    assert trace[0] > 0.9 * ONE and trace[1] == 0
    for _ in range(10):
        trace = mech.update_trace(trace, [False, False], 2)
    assert trace[0] < 0.1 * ONE


# -- update spread and homeostasis -----------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(-(2**31), 2**31 - 1), min_size=1, max_size=40))
def test_update_spread_matches_fractions(values):
    l1 = sum(abs(v) for v in values)
    l2 = sum(v * v for v in values)
    want = (
        0
        if l2 == 0
        else min(ONE, math.floor(Fraction(l1 * l1 * ONE, len(values) * l2) + Fraction(1, 2)))
    )
    assert mech.update_spread(values) == want


def test_spread_extremes_and_gate():
    assert mech.update_spread([5] * 16) == ONE
    assert mech.update_spread([0] * 15 + [7]) == ONE // 16
    d = np.array([100, -10, 50, 1], np.int64)  # mean |d| = 40.25
    assert mech.gate(d, ONE).tolist() == [100, 0, 50, 0]
    assert mech.gate(d, 0).tolist() == d.tolist()


def test_homeostasis_moves_the_threshold_toward_the_band():
    lo, hi, step, top = ONE // 10, ONE // 2, ONE // 16, 4 * ONE
    assert mech.homeostasis(0, ONE, lo, hi, step, top) == step
    assert mech.homeostasis(step, 0, lo, hi, step, top) == 0
    assert mech.homeostasis(step, ONE // 4, lo, hi, step, top) == step
    assert mech.homeostasis(top, ONE, lo, hi, step, top) == top


def test_homeostasis_brings_diffuse_updates_into_the_band():
    s = HierarchySettings(entropy_high=0.3, threshold_step=0.25, decay_free=0.0, decay_active=0.0)
    h = Hierarchy(s, 8, 8, seed=1)
    rng = np.random.default_rng(0)
    spreads = []
    for _ in range(40):
        h.update("context", rng.integers(-ONE, ONE, (8, 8)), ONE // 8)
        spreads.append(h.layers["context"].spread_q)
        h.tick()
    assert spreads[0] > 0.3 * ONE  # dense noise starts diffuse
    assert h.layers["context"].threshold_q > 0
    assert np.mean(spreads[-10:]) < spreads[0]


# -- circuits ----------------------------------------------------------------------------------


def _float_autocorr(s, lags):
    c = np.asarray(s, float) - np.mean(s)
    e = (c * c).sum()
    return max((c[:-lag] * c[lag:]).sum() / e for lag in range(1, lags + 1))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(-(10**6), 10**6), min_size=4, max_size=40), st.integers(1, 3))
def test_autocorrelation_matches_floats(series, lags):
    got = mech.autocorrelation(series, lags)
    if len(set(series)) == 1:
        assert got == 0
    else:
        assert abs(got / ONE - _float_autocorr(series, min(lags, len(series) - 1))) < 1e-4


def test_periodic_patterns_are_circuits_and_noise_is_not():
    t = np.arange(32)
    periodic = (1000 * (t % 4 == 0)).tolist()
    noise = np.random.default_rng(2).integers(0, 1000, 32).tolist()
    assert mech.autocorrelation(periodic, 4) >= ONE // 2
    assert mech.autocorrelation(noise, 4) < ONE // 2


# -- migration queues ---------------------------------------------------------------------------


def test_bandwidth_paces_release_and_priority_orders_it():
    q = MigrationQueue(bandwidth_q=ONE // 128, limit=8, emergency_q=ONE)
    q.offer(ONE // 2, 10, 0, "low")
    q.offer(ONE * 3 // 4, 10, 0, "high")
    released = []
    for tick in range(30):
        released += [(tick, it.payload) for it in q.tick(dest_params=128)]
    # 1 parameter of credit per tick: each 10-parameter item waits 10 ticks, highest first
    assert released == [(9, "high"), (19, "low")]
    assert q.oldest_wait(30) == 0


def test_emergency_bypasses_bandwidth_and_full_queue_rejects_lowest():
    q = MigrationQueue(bandwidth_q=1, limit=2, emergency_q=ONE * 9 // 10)
    assert q.offer(ONE // 2, 1000, 0, "a")
    assert q.offer(ONE // 4, 1000, 0, "b")
    assert not q.offer(ONE // 8, 1000, 0, "c")  # the lowest, the newcomer, is rejected
    assert q.offer(ONE // 3, 1000, 0, "d")  # "b" is rejected instead
    assert [it.payload for it in q.items] == ["a", "d"]
    assert q.rejected == 2 and q.rejection_rate() == ONE // 2
    q.offer(ONE, 1000, 1, "urgent")  # the queue is full again: "d" goes
    assert [it.payload for it in q.tick(dest_params=10)] == ["urgent"]
    assert q.bypassed == 1 and [it.payload for it in q.items] == ["a"] and q.rejected == 3


# -- resonance -------------------------------------------------------------------------------------


def test_resonance_amplifies_aligned_damps_opposed_and_is_capped():
    g = ONE // 4
    assert mech.resonance_factor(ONE, 0, g, 0, 2 * ONE) == ONE + g
    assert mech.resonance_factor(-ONE, 0, g, 0, 2 * ONE) == ONE - g
    assert mech.resonance_factor(ONE, ONE, ONE, ONE, 2 * ONE) == 2 * ONE  # 4x capped to 2x
    assert mech.cosine_q16([1, 0], [2, 0]) == ONE and mech.cosine_q16([1, 0], [0, 0]) == 0


def _trained(seed=3):
    s = HierarchySettings(decay_free=0.0, decay_active=0.0)
    h = Hierarchy(s, 4, 6, seed=seed)
    grad = np.random.default_rng(seed).integers(-ONE, ONE, (4, 6))
    for _ in range(5):
        h.update("agent", grad, ONE // 4)
    return h, grad


def test_horizontal_resonance_in_the_hierarchy():
    base, grad = _trained()
    moves = {}
    for name, sign in (("aligned", -1), ("opposed", 1), ("none", 0)):
        h, _ = _trained()
        before = h.layers["agent"].delta()
        direction = None if sign == 0 else sign * grad
        h.update("agent", grad, ONE // 4, direction=direction)
        moves[name] = np.abs(h.layers["agent"].delta() - before).sum()
        assert h.layers["agent"].amplified == (name == "aligned")
        assert h.layers["agent"].damped == (name == "opposed")
    assert moves["aligned"] > moves["none"] > moves["opposed"]


# -- health, snapshots, migration, determinism ----------------------------------------------------


def test_health_reports_reasons():
    h = Hierarchy(HierarchySettings(max_queue_depth=1), 4, 4)
    assert h.health().status == HEALTHY
    q = h.queues[0]
    for i in range(3):
        q.offer(ONE // 2, 10**6, 0, ("context", i))
    report = h.health()
    assert report.status == DEGRADED
    assert any("context->agent: queue depth 3 > 1" in r for r in report.reasons)


def test_snapshot_is_frozen_during_a_block():
    h, grad = _trained()
    snap = h.begin_block()
    before = h.delta().copy()
    h.update("context", grad, ONE // 2)
    h.update("agent", grad, ONE // 2)
    assert np.array_equal(h.delta(), before) and np.array_equal(snap.total, before)
    with pytest.raises(ValueError):
        snap.total[0, 0] = 1
    assert h.end_block() == 2
    assert not np.array_equal(h.delta(), before)
    weight = np.full((4, 6), ONE, np.int32)
    assert np.array_equal(snap.apply(weight), weight.astype(np.int64) + before)


def test_a_recurring_context_pattern_migrates_to_agent_and_is_conserved():
    s = HierarchySettings(
        decay_free=0.0,
        decay_active=0.0,
        circuit_window=8,
        circuit_lags=3,
        bandwidth=[1.0, 1e-3, 1e-4, 1e-4],
        restoration=0.5,
        entropy_high=1.0,
    )
    h = Hierarchy(s, 4, 8, seed=5)
    grad = np.zeros((4, 8), np.int64)
    grad[0, :] = ONE
    moved = []
    for t in range(40):
        if t % 2 == 0:  # a pattern that recurs every other round: autocorrelation at lag 2
            h.update("context", grad, ONE // 4)
        before = h.delta().copy()
        moved += h.tick()
        if h.transfers or moved:
            # transfers move the pattern without changing the merged adapter
            assert np.abs(h.delta().astype(np.int64) - before).max() <= 2
    assert moved and moved[0][:2] == ("context", "agent")
    assert h.migrations >= 1 and h.layers["agent"].drift() > 0


def test_a_dense_destination_takes_the_outer_product_and_keeps_its_identity():
    s = HierarchySettings(
        decay_free=0.0,
        decay_active=0.0,
        circuit_window=8,
        circuit_lags=3,
        restoration=0.5,
        entropy_high=1.0,
    )
    h = Hierarchy(s, 2, 4, seed=5)  # the 2 x 4 weight: every layer dense
    assert h.layers["context"].dense and h.layers["agent"].dense
    grad = np.zeros((2, 4), np.int64)
    grad[:, 1] = ONE  # only input column 1 moves
    moved = []
    for t in range(48):
        if t % 2 == 0:
            h.update("context", grad, ONE // 4)
        before = h.delta().copy()
        moved += h.tick()
        assert np.abs(h.delta().astype(np.int64) - before).max() <= 2  # conserved
    assert ("context", "agent") in [m[:2] for m in moved]
    agent = h.layers["agent"]
    assert np.array_equal(agent.a, agent.a0)  # the identity is never overwritten
    assert agent.b[:, 1].any() and not agent.b[:, [0, 2, 3]].any()


def test_bandwidth_is_measured_at_the_seed_rank():
    s = HierarchySettings()
    # a component of a 2 x 4 weight costs 6 parameters; the agent's seed rank is 8, so the
    # context->agent channel (1e-2) earns 0.48 parameters a tick: one component in 12.5
    assert s.budget_params("agent", 2, 4) == 8 * 6
    assert s.budget_params("foundation", 64, 64) == 64 * 128  # unscaled: the layer's own


def test_a_full_destination_refuses_migration_and_health_says_so():
    s = HierarchySettings(
        decay_free=0.0,
        decay_active=0.0,
        circuit_window=8,
        circuit_lags=3,
        bandwidth=[1.0, 1e-3, 1e-4, 1e-4],
        entropy_high=1.0,
        max_rejection=0.25,
    )
    h = Hierarchy(s, 4, 8, seed=5)
    h.layers["agent"].b[:, 0] = ONE  # the agent's only slot holds its own pattern
    kept = h.layers["agent"].delta().copy()
    grad = np.zeros((4, 8), np.int64)
    grad[0, :] = ONE
    for t in range(40):
        if t % 2 == 0:
            h.update("context", grad, ONE // 4)
        assert h.tick() == []
    assert h.migrations == 0 and h.queues[0].rejected > 0
    assert np.array_equal(h.layers["agent"].delta(), kept)
    report = h.health()
    assert report.status == DEGRADED
    assert any(r.startswith("context->agent: rejection rate") for r in report.reasons)


def test_same_seed_same_updates_same_bits():
    def run():
        h = Hierarchy(HierarchySettings(), 6, 9, seed=11)
        rng = np.random.default_rng(4)
        for _ in range(12):
            for role in ("swarm", "agent", "context"):
                h.update(role, rng.integers(-ONE, ONE, (6, 9)), ONE // 8, contributions=3)
            h.tick()
        return h

    a, b = run(), run()
    for role in a.layers:
        assert np.array_equal(a.layers[role].a, b.layers[role].a)
        assert np.array_equal(a.layers[role].b, b.layers[role].b)
    assert a.summary() == b.summary()
    assert a.summary()["layers"]["swarm"]["effective_inertia"] > 0.7


def test_the_documented_example_runs(capsys):
    import re
    from pathlib import Path

    text = (Path(__file__).parent.parent / "docs" / "lora.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks
    for block in blocks:
        exec(compile(block, "docs/lora.md", "exec"), {})
    assert capsys.readouterr().out.strip() == "1 HEALTHY"


def test_documented_settings_table_matches_the_defaults():
    from pathlib import Path

    import attrs

    text = (Path(__file__).parent.parent / "docs" / "lora.md").read_text()
    for field in attrs.fields(HierarchySettings):
        assert f"`{field.name}`" in text, field.name


def test_layer_rules_wait_for_the_warmup():
    from qres.lora.health import LayerVitals, assess

    limits = {
        "entropy_low": ONE // 20,
        "entropy_high": int(0.6 * ONE),
        "max_amplified": int(0.9 * ONE),
        "max_queue_depth": 48,
        "max_wait": 256,
        "max_rejection": ONE // 2,
        "warmup": 16,
    }
    early = LayerVitals("swarm", int(0.7 * ONE), updates=3, amplified=3, damped=0)
    assert assess([early], [], limits).status == HEALTHY
    late = LayerVitals("swarm", int(0.7 * ONE), updates=20, amplified=20, damped=0)
    report = assess([late], [], limits)
    assert report.status == DEGRADED and len(report.reasons) == 2
    assert assess([late], [], {**limits, "warmup": 0}).status == DEGRADED
