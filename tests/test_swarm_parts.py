"""The swarm simulator's parts: regimes, Grubbs, the ledger, energy, gossip, transport batches."""

from __future__ import annotations

import attrs
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qres.kernel import plugins
from qres.kernel.config import Location
from qres.kernel.errors import QresError
from qres.learning import task as learning
from qres.robust.evidence import grubbs_critical, grubbs_outliers, t_quantile_upper, tightness
from qres.robust.reputation import REP_ONE, Ledger
from qres.swarm import gossip
from qres.swarm.data import GeneratedData
from qres.swarm.energy import EnergyModel
from qres.swarm.regimes import CALM, PRESTORM, STORM, RegimeTracker
from qres.swarm.settings import SwarmSettings, reputation_rules


def feed(tracker, values):
    states = []
    for v in values:
        tracker.observe(np.array([0]), np.array([v]))
        states.append(int(tracker.regime[0]))
    return states


def test_regime_cycle_with_hysteresis():
    s = SwarmSettings(storm_min_rounds=10)
    states = feed(RegimeTracker(1, s), [0.05] * 5 + [0.7] * 20 + [0.05] * 20)
    # onset at index 5: two derivative alarms, then three high-entropy confirmations
    assert states[5] == CALM and states[6] == PRESTORM
    assert states.index(STORM) == 9
    # storm holds for its minimum, then five calm confirmations (after the moving average)
    back = states.index(CALM, 10)
    assert STORM not in states[back:]
    assert back - 9 >= 10 and states[back - 1] == STORM


def test_slow_rise_is_not_a_storm_and_short_alarm_falls_back():
    s = SwarmSettings()
    slow = feed(RegimeTracker(1, s), [0.05 + 0.01 * i for i in range(60)])
    assert set(slow) == {CALM}
    blip = feed(RegimeTracker(1, s), [0.05] * 3 + [0.6, 0.6] + [0.05] * 12)
    assert PRESTORM in blip and STORM not in blip and blip[-1] == CALM


def test_thresholds_come_from_the_settings():
    s = SwarmSettings(derivative_threshold=0.5)
    assert set(feed(RegimeTracker(1, s), [0.05] * 5 + [0.7] * 10)) == {CALM}


def test_force_calm():
    t = RegimeTracker(3, SwarmSettings())
    t.regime[:] = [CALM, PRESTORM, STORM]
    t.force_calm(np.array([False, True, True]))
    assert t.regime.tolist() == [CALM, CALM, CALM]


def test_student_t_and_grubbs_critical_values():
    # published table values
    assert t_quantile_upper(0.025, 10) == pytest.approx(2.228, abs=1e-3)
    assert t_quantile_upper(0.005, 3) == pytest.approx(5.841, abs=1e-3)
    assert grubbs_critical(10, 0.05) == pytest.approx(2.290, abs=1e-3)
    assert grubbs_critical(20, 0.05) == pytest.approx(2.709, abs=1e-3)


def test_grubbs_finds_planted_outliers_only():
    rng = np.random.default_rng(0)
    v = rng.normal(0, 1, 100)
    assert grubbs_outliers(v, 0.01).tolist() == []
    v[[7, 42]] = [9.0, -8.0]
    assert grubbs_outliers(v, 0.01).tolist() == [7, 42]


def test_tightness_marks_a_copying_group():
    rng = np.random.default_rng(1)
    x = rng.normal(0, 1000, (60, 16)).astype(np.int32)
    x[50:] = x[50] + rng.integers(-3, 4, (10, 16))
    t = tightness(x, 4, np.random.default_rng(0))
    assert (t[50:] < 0.2).all() and (t[:50] > 0.2).all()


def test_tightness_keeps_resolution_next_to_saturated_rows():
    rng = np.random.default_rng(4)
    x = rng.integers(-300, 300, (70, 64)).astype(np.int32)
    x = np.vstack([x, np.full((30, 64), np.iinfo(np.int32).max, np.int32)])
    t = tightness(x, 4, np.random.default_rng(0))
    assert (t[:70] > 0.2).all() and (t[70:] < 0.2).all()


def test_ledger_bans_faults_and_audits_suspects():
    s = SwarmSettings(suspect_group_size=3, suspect_rounds=2, ban_propagation_rounds=2)
    led = Ledger(10, reputation_rules(s, 10))
    led.adjust(np.array([1]), -REP_ONE)
    assert led.ban_low(4).size == 0  # a reputation of 0 from statistics bans nobody
    assert led.fault(np.array([0]), 4).tolist() == [0]
    assert not led.banned_known(5)[0] and led.banned_known(6)[0]
    flagged = np.zeros(10, bool)
    flagged[[3, 4, 5]] = True
    ok = np.zeros(10, bool)
    assert led.suspects(flagged, ok, 1).size == 0  # one round of suspicion is not enough
    ok[4] = True  # passed an audit: cleared
    assert led.suspects(flagged, ok, 2).tolist() == [3, 5]  # due for a sure audit
    assert not led.banned()[[3, 4, 5]].any()


def test_energy_schedule_and_pool():
    hw = plugins.create("hardware", {"use": "esp32-c6"}, Location("t"))
    s = SwarmSettings(round_seconds=3600.0, wake_calm_s=1800.0, wake_storm_s=60.0)
    e = EnergyModel(3, s, hw)
    regime = np.array([CALM, CALM, STORM], np.int8)
    rep = np.array([1.0, 0.0, 1.0])
    wakes = e.wakes(0, regime, rep, np.ones(3, bool))
    # 1800 s at rep 1, 900 s at rep 0, 60 s in storm
    assert wakes.tolist() == [2, 4, 60]
    before = e.pool.copy()
    radio = e.spend(wakes, np.zeros(3), np.zeros(3))
    assert radio.tolist() == pytest.approx([1.0, 2.0, 30.0])
    assert (e.pool < before).all()
    assert e.pool[2] < e.pool[1] < e.pool[0]


def test_empty_pool_means_no_wakes_and_forced_calm():
    hw = plugins.create("hardware", {"use": "esp32-c6"}, Location("t"))
    s = SwarmSettings(energy_initial=0.0)
    e = EnergyModel(2, s, hw)
    assert e.wakes(0, np.zeros(2, np.int8), np.ones(2), np.ones(2, bool)).tolist() == [0, 0]
    assert e.low().all()


def test_window_errors_match_learning():
    s = SwarmSettings(nodes=20, order=8, window=64)
    x = GeneratedData(s, 0).windows(3, np.arange(20))
    w = np.random.default_rng(2).integers(-40000, 40000, (20, 8)).astype(np.int32)
    ref = learning.prediction_error(w, x, 8) * learning.SPAN
    assert gossip.window_errors(w, x, 8, 64) == pytest.approx(ref, rel=1e-12)


def test_generated_windows_depend_only_on_seed_node_round():
    s = SwarmSettings(nodes=50, storm_start=2, storm_rounds=3, storm_fraction=0.4)
    g = GeneratedData(s, 7)
    full = g.windows(3, np.arange(50))
    part = GeneratedData(s, 7).windows(3, np.array([4, 17, 33]))
    assert np.array_equal(full[[4, 17, 33]], part)
    assert full.min() >= -2048 and full.max() <= 2047
    assert g.storm_truth(3).sum() == 20 and g.storm_truth(5).sum() == 0


def test_packet_sizes_follow_the_trust_encoding():
    from qres.trust import packet as pk

    assert gossip.packet_bytes(64) == pk.HEADER_BYTES + 256 + 64 == 496


def test_random_peers_never_self():
    rng = np.random.default_rng(0)
    src, dst = gossip.random_peers(np.arange(10), np.arange(10), 5, rng)
    assert src.shape == dst.shape == (50,) and not (src == dst).any()


def inproc(**cfg):
    return plugins.create("transport", {"use": "inproc", **cfg}, Location("t"))


def test_batch_send_counts_loss_delay_and_queue():
    t = inproc(loss=0.25, delay_min=0, delay_max=2, seed=5, queue_limit=1000)
    kept = t.send_batch(np.zeros(4000), np.arange(4000) % 7, np.full(4000, 10), np.arange(4000))
    assert 0.2 < 1 - kept.mean() < 0.3
    got = t.receive_batch()[0].shape[0]
    t.advance(2)
    got += t.receive_batch()[0].shape[0]
    stats = t.stats
    assert stats.sent_bytes == 40000
    assert got == stats.delivered_messages == int(kept.sum())
    assert stats.sent_messages == stats.delivered_messages + stats.dropped_messages


def test_batch_queue_limit_tail_drop():
    t = inproc(queue_limit=3)
    t.send_batch(np.zeros(5), np.ones(5), np.full(5, 8), np.arange(5))
    src, dst, size, tags, seq = t.receive_batch()
    assert tags.tolist() == [0, 1, 2]
    assert t.stats.dropped_queue_full == 2


def test_batch_refuses_oversize():
    with pytest.raises(QresError, match="max_payload"):
        inproc(max_payload=16).send_batch([0], [1], [17], [0])


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32), n=st.integers(1, 300))
def test_batch_is_reproducible(seed, n):
    runs = []
    for _ in range(2):
        t = inproc(loss=0.3, delay_max=3, seed=seed)
        kept = t.send_batch(np.arange(n), np.arange(n)[::-1], np.full(n, 5), np.arange(n))
        t.advance(3)
        runs.append((kept.tolist(), [a.tolist() for a in t.receive_batch()]))
    assert runs[0] == runs[1]


def test_settings_are_validated():
    with pytest.raises(ValueError):
        attrs.evolve(SwarmSettings(), byzantine=0.6)


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_learning_residuals_match_a_plain_reference(data):
    from qres.learning.task import PRED_LIMIT, residuals

    order = data.draw(st.integers(1, 6))
    m = data.draw(st.integers(1, 4))
    t = data.draw(st.integers(1, 12))
    w = np.array(
        data.draw(
            st.lists(st.integers(-(1 << 31), (1 << 31) - 1), min_size=m * order, max_size=m * order)
        ),
        np.int64,
    )
    x = np.array(
        data.draw(
            st.lists(st.integers(-2048, 2047), min_size=m * (order + t), max_size=m * (order + t))
        ),
        np.int64,
    )
    w, x = w.reshape(m, order).astype(np.int32), x.reshape(m, order + t)
    got = residuals(w, x, order)
    for i in range(m):
        for k in range(t):
            pred = sum(int(w[i, j]) * int(x[i, order + k - 1 - j]) for j in range(order))
            pred = max(-PRED_LIMIT, min(PRED_LIMIT, pred))
            assert got[i, k] == int(x[i, order + k]) - ((pred + (1 << 15)) >> 16)
