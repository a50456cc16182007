"""One reputation mechanism: the rules, the ledger, and its two users (the aggregators'
tracker and the swarm) applying the same arithmetic."""

from __future__ import annotations

import numpy as np
import pytest

from qres.kernel.config import InvalidSetting
from qres.kernel.errors import QresError
from qres.robust.reputation import REP_ONE, Ledger, ReputationRules, ReputationTracker, to_rep
from qres.swarm.settings import SwarmSettings, reputation_rules


def test_rules_are_validated_and_rounded_once():
    with pytest.raises(InvalidSetting, match="penalty_audit"):
        ReputationRules(penalty_audit=1.5)
    with pytest.raises(QresError, match="n=0"):
        Ledger(0)
    led = Ledger(3, ReputationRules(initial=0.3, reward=0.1))
    assert to_rep(0.3) == 19661 and led.rep.tolist() == [19661] * 3
    assert led.reward == 6554 and led.pen_audit == REP_ONE


def test_adjust_clamps_and_bans_zero_the_reputation():
    led = Ledger(4, ReputationRules(initial=0.98, ban_threshold=0.5, ban_delay=2))
    led.adjust(np.array([0, 1]), led.reward)
    assert led.rep[:2].tolist() == [REP_ONE, REP_ONE]
    led.adjust(np.array([3]), -REP_ONE)  # suspicion alone, however strong, never bans
    assert led.rep[3] == 0 and led.ban_low(7).size == 0
    assert led.fault(np.array([2]), 7).tolist() == [2]  # an attributable fault does
    assert led.rep[2] == 0
    assert led.banned().tolist() == [False, False, True, False]
    assert not led.banned_known(8)[2] and led.banned_known(9)[2]
    assert led.ban_low(8).size == 0  # banned once


def test_tracker_is_a_ledger_that_never_bans():
    tracker = ReputationTracker(6, reward=0.1, penalty=0.5, start=0.5)
    assert isinstance(tracker.ledger, Ledger)
    assert tracker.ledger.rules.ban_threshold == 0
    x = np.zeros((6, 3), np.int32)
    x[5] = 1 << 20  # far from the reference
    for _ in range(3):
        flags = tracker.observe(x, np.zeros(3, np.int32))
    assert flags.tolist() == [False] * 5 + [True]
    assert tracker.reputations.tolist() == [to_rep(0.5) + 3 * to_rep(0.1)] * 5 + [0]
    assert not tracker.ledger.ban_low(3).size and tracker.as_weights()[5] == 0


def test_swarm_settings_fill_in_the_same_rules():
    s = SwarmSettings(rep_initial=0.7, rep_reward=0.03, ban_threshold=0.25, fanout=4)
    rules = reputation_rules(s, 100)
    assert rules.initial == 0.7 and rules.reward == 0.03 and rules.ban_threshold == 0.25
    assert rules.penalty_outlier == s.rep_penalty_outlier
    assert rules.suspect_group_size == s.suspect_group_size
    assert rules.ban_delay == 3  # ceil(log 100 / log 5): an epidemic with fan-out 4
    assert reputation_rules(SwarmSettings(ban_propagation_rounds=7), 100).ban_delay == 7
