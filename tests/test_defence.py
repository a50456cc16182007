"""The defence: bans only on attributable evidence, robust references, the adaptive attacks
and a quick run of the red-team suite (``qres bench defence --quick``)."""

from __future__ import annotations

import numpy as np
import pytest

from qres.kernel.plugins import get_plugin
from qres.robust.evidence import grubbs_outliers, loo_median, robust_outliers
from qres.robust.reputation import Ledger, ReputationRules

ADAPTIVE = ["sleeper", "framing", "noisy-cartel", "under-threshold", "targeted", "mixed",
            "audit-aware", "base-poison", "audit-aware-poison", "friends"]  # fmt: skip


def test_statistics_never_ban_faults_do():
    led = Ledger(4, ReputationRules(initial=0.5, ban_threshold=0.2))
    led.adjust(np.array([0, 1]), -led.pen_outlier * 10)  # suspicion down to 0
    assert led.rep[0] == 0 and not led.ban_low(3).size and not led.banned().any()
    led.adjust(np.array([0]), led.reward)  # and it recovers
    assert led.rep[0] == led.reward
    banned = led.fault(np.array([2]), 4)
    assert banned.tolist() == [2] and led.banned_at[2] == 4 and led.rep[2] == 0
    # a lenient auditor: a fault that leaves the node above the threshold does not ban yet
    soft = Ledger(3, ReputationRules(initial=1.0, penalty_audit=0.5, ban_threshold=0.2))
    assert soft.fault(np.array([1]), 0).size == 0
    soft.adjust(np.array([1]), -soft.pen_outlier * 4)
    assert soft.ban_low(1).tolist() == [1]


def test_suspects_are_due_for_audit_not_banned():
    led = Ledger(6, ReputationRules(suspect_rounds=2))
    flagged = np.array([1, 1, 1, 0, 0, 0], bool)
    ok = np.zeros(6, bool)
    assert led.suspects(flagged, ok, 0).size == 0
    ok[0] = True  # node 0 passed an audit: cleared for this suspicion
    assert led.suspects(flagged, ok, 1).tolist() == [1, 2]
    assert not led.banned().any() and (led.rep == led.rep[3]).all()


def test_loo_median_and_robust_outliers():
    v = np.array([5.0, 1.0, 3.0, 2.0, 4.0])
    for i in range(5):
        assert loo_median(v)[i] == np.median(np.delete(v, i))
    rng = np.random.default_rng(1)
    honest = rng.normal(0.0, 1.0, 70)
    # 30 values alike far away mask themselves from Grubbs (they inflate the deviation);
    # the median and MAD of the others do not move
    cartel = np.full(30, 6.0) + rng.normal(0, 0.01, 30)
    x = np.concatenate([honest, cartel])
    assert len(grubbs_outliers(x, 0.01)) == 0
    flagged = set(robust_outliers(x, 0.01).tolist())
    assert set(range(70, 100)) <= flagged and len(flagged & set(range(70))) <= 1
    assert robust_outliers(np.ones(10), 0.01).size == 0  # no spread: nothing to judge
    # in any order, the same values are flagged
    perm = rng.permutation(100)
    assert sorted(perm[robust_outliers(x[perm], 0.01)].tolist()) == sorted(flagged)


@pytest.mark.parametrize("name", ADAPTIVE)
def test_adaptive_attacks_forge_with_and_without_context(name):
    from qres.kinds.attack import AttackContext

    rng = np.random.default_rng(0)
    honest = rng.integers(-(1 << 16), 1 << 16, (20, 8), dtype=np.int32)
    own = rng.integers(-(1 << 16), 1 << 16, (6, 8), dtype=np.int32)
    attack = get_plugin("attack", name)()
    plain = attack.forge(honest, 6, rng=np.random.default_rng(1))
    assert plain.shape == (6, 8) and plain.dtype == np.int32
    ctx = AttackContext(
        round=0, nodes=np.arange(6), own=own, reputations=np.full(6, 0.8), audit_rate=0.03
    )
    again = attack.forge(honest, 6, rng=np.random.default_rng(1), context=ctx)
    assert again.shape == (6, 8)
    if name == "sleeper":  # asleep in round 0: the nodes' own updates
        assert np.array_equal(again, own)
    if name == "framing":  # exact copies of honest rows
        assert all(any((row == h).all() for h in honest) for row in again)


def test_framing_bans_no_honest_node_and_forgers_are_caught():
    """Attackers copying honest rows used to get the originals banned as a cartel."""
    from qres.kernel import profiles
    from qres.swarm.engine import Simulation, settings_from_profile

    loaded = profiles.load("swarm-100")
    s = settings_from_profile(loaded, nodes=30, rounds=12, byzantine=0.3, seed=1)
    sim = Simulation(loaded, s, attack="framing")
    report = sim.run()
    assert report["banned_honest"] == 0
    assert report["banned_byzantine"] > 0  # sure audits of the suspects convict the copiers
    assert not (sim.ledger.faulted & ~sim.ledger.banned()).any()


def test_base_poisoning_is_caught_by_the_round_step_check_only():
    """Nodes that move their models before training pass every training audit; the replay
    of their committed round step does not. Honest steps always replay exactly. Audits
    alone (3% of packets) catch some poisoners; the check of every packet's step (the
    default) bans every one of them, in the round it publishes its first moved base."""
    from qres.kernel import profiles
    from qres.swarm.engine import Simulation, settings_from_profile

    loaded = profiles.load("swarm-100")
    caught = {}
    for name, steps, rate in (("none", False, 0.0), ("audits", True, 0.0), ("all", True, 1.0)):
        s = settings_from_profile(
            loaded, nodes=30, rounds=15, byzantine=0.3, seed=2,
            audit_steps=steps, check_rate=rate,
        )  # fmt: skip
        sim = Simulation(loaded, s, attack="base-poison")
        report = sim.run()
        assert report["banned_honest"] == 0 and report["audits"]["wrong_step_honest"] == 0
        assert report["audits"]["failed"] == report["audits"]["wrong_step_byzantine"]
        assert not (sim.ledger.faulted & ~sim.ledger.banned()).any()
        caught[name] = report["banned_byzantine"]
        if name == "all":
            assert not (sim.committed & ~sim.ledger.banned()).any()
            assert report["audits"]["checked"] > report["audits"]["audited"]
            assert report["bytes_by_kind"]["checks"] > 0
            # every poisoner is banned in the first round it is awake
            assert (sim.ledger.banned_at[sim.committed] <= 1).all()
    assert caught == {"none": 0, "audits": caught["audits"], "all": 9}
    assert 0 < caught["audits"] < 9


def test_audit_aware_poisoners_cannot_hide_from_a_certain_check():
    """Colluders that move their bases only as often as a stochastic check lets them hide
    (chance of a check under one half per round) are caught at a low rate sometimes and
    not at all in some runs; when every step is checked they never move a base (nothing
    to ban, nothing poisoned); at a low rate every node that did move is banned."""
    from qres.kernel import profiles
    from qres.swarm.engine import Simulation, settings_from_profile

    loaded = profiles.load("swarm-100")
    for rate in (0.05, 1.0):
        s = settings_from_profile(
            loaded, nodes=30, rounds=20, byzantine=0.3, seed=1, check_rate=rate
        )
        sim = Simulation(loaded, s, attack="audit-aware-poison")
        report = sim.run()
        assert report["banned_honest"] == 0
        if rate == 1.0:
            assert not sim.committed.any() and report["audits"]["wrong_step_byzantine"] == 0
        else:
            assert sim.committed.any()  # some moved their bases


def test_friends_only_weights_are_a_wrong_step_dropping_rows_is_not():
    """Colluders that aggregate only each other with full weights publish round steps whose
    weights are not the public reputations: every one of them is banned, in the round it
    publishes such a step. Keeping the rule's weights and only leaving honest rows out is
    no fault (it looks like loss): nobody is banned, and the honest error stays near the
    attack-free one."""
    from qres.kernel import profiles
    from qres.swarm.engine import Simulation, settings_from_profile

    loaded = profiles.load("swarm-100")
    s = settings_from_profile(loaded, nodes=30, rounds=12, byzantine=0.3, seed=0)
    sim = Simulation(loaded, s, attack="friends")
    report = sim.run()
    assert report["banned_honest"] == 0 and report["audits"]["failed_honest"] == 0
    assert report["banned_byzantine"] == 9
    # failed checks are all wrong steps (a banned node is checked until its ban is known)
    assert report["audits"]["failed"] == report["audits"]["wrong_step_byzantine"] >= 9
    assert sim.committed.sum() == 9 and not (sim.committed & ~sim.ledger.banned()).any()
    profile = tmp_profile(loaded, {"attack": {"use": "friends", "rule_weights": True}})
    sim = Simulation(profile, s)
    report = sim.run()
    assert report["banned_byzantine"] == 0 and report["banned_honest"] == 0
    assert not sim.committed.any()


def test_every_receiver_checks_a_silent_colluder_hides_nothing():
    """Seed 2 is a run where one checker per packet (drawn at random) left a `friends`
    node unbanned: its one misweighted round step met a fellow colluder as checker, who
    kept quiet. With every receiver checking what it holds, a fault escapes only if no
    honest node received the packet: every faulty node is banned, and no honest one."""
    from qres.kernel import profiles
    from qres.swarm.engine import Simulation, settings_from_profile

    loaded = profiles.load("swarm-100")
    s = settings_from_profile(loaded, nodes=30, rounds=12, byzantine=0.3, seed=2)
    sim = Simulation(loaded, s, attack="friends")
    report = sim.run()
    assert sim.committed.sum() == 9 and not (sim.committed & ~sim.ledger.banned()).any()
    assert report["banned_honest"] == 0 and report["audits"]["failed_honest"] == 0
    # several receivers check each packet: far more checks than packets sent
    packets = report["bytes_by_kind"]["updates"] // (s.fanout * sim_packet_bytes(s))
    assert report["audits"]["checked"] > 3 * packets


def sim_packet_bytes(settings) -> int:
    from qres.swarm import gossip

    return gossip.packet_bytes(settings.order)


def test_a_checker_fetches_only_the_evidence_it_lacks():
    """The bytes of a check count the evidence packets the checker does not hold: not
    the ones it received, nor its own."""
    from types import SimpleNamespace

    from qres.swarm.engine import Simulation

    n, rounds = 5, 10
    span = (rounds + 1) * n
    sim = Simulation.__new__(Simulation)
    sim.s = SimpleNamespace(rounds=rounds, max_age=2)
    held = np.array([1 * span + 3 * n + 2, 4 * span + 3 * n + 0])  # 1 holds (3, 2); 4 (3, 0)
    sw = SimpleNamespace(n=n, held=np.sort(held))
    evidence = [
        np.array([3 * n + 2, 3 * n + 0, 2 * n + 3]),  # to node 1: holds the first
        np.array(
            [3 * n + 2, 3 * n + 0, 2 * n + 4]
        ),  # to node 4: holds the second, is the third's origin
        np.zeros(0, np.int64),
    ]
    missing = sim._missing(sw, np.array([1, 4, 2]), evidence)
    assert missing.tolist() == [2, 1, 0]


def tmp_profile(loaded, swarm: dict):
    """``loaded`` with keys of its ``[swarm]`` table replaced."""
    import copy

    import attrs

    data = copy.deepcopy(loaded.data)
    data.setdefault("swarm", {}).update(swarm)
    return attrs.evolve(loaded, data=data)


def test_the_kept_replay_equals_the_full_replay():
    """The step check compares each packet's base with the replay kept as the chain grew;
    replaying every aggregate again (what a real auditor does) gives the same verdicts."""
    from qres.kernel import profiles
    from qres.swarm import steps
    from qres.swarm.engine import Simulation, settings_from_profile

    loaded = profiles.load("swarm-100")
    s = settings_from_profile(loaded, nodes=20, rounds=12, byzantine=0.25, seed=3)
    sim = Simulation(loaded, s, attack="base-poison")
    verdicts = []
    original = steps.StepLog.check

    def check(log, nodes, bases, aggregate, many=None):
        kept = original(log, nodes, bases)
        full = log.replay_check(nodes, bases, aggregate, many)
        verdicts.append((kept.tolist(), full.tolist()))
        return kept

    steps.StepLog.check = check
    try:
        sim.run()
    finally:
        steps.StepLog.check = original
    assert verdicts and all(k == f for k, f in verdicts)
    assert any(not all(k) for k, _ in verdicts)  # poisoned bases were among them
    assert any(all(k) and k for k, _ in verdicts)


def test_bench_defence_quick(tmp_path):
    import json

    from make_swarm_golden import run_cli

    out = run_cli(
        ["bench", "defence", "--quick", "--attacks",
         "sign-flip,framing,sleeper,mixed,base-poison,friends", "--json"]
    )  # fmt: skip
    report = json.loads(out)
    cells = report["summary"]["cells"]
    assert {c["attack"] for c in cells} == {
        "sign-flip", "framing", "sleeper", "mixed", "base-poison", "friends"
    }  # fmt: skip
    poison = [c for c in cells if c["attack"] == "base-poison"]
    assert sum(c["byzantine_banned"] for c in poison) > 0
    assert all(c["honest_banned"] == 0 for c in cells)
    assert all(c["faulted_unbanned"] == 0 for c in cells)
    assert all(c["committed_unbanned"] == 0 for c in cells)
    assert all(c["worst_ratio"] <= 1.10 for c in cells), cells
    assert report["summary"]["targets"]["no_honest_banned"]


def test_recorded_faults_ban_at_the_next_ban_low():
    led = Ledger(3, ReputationRules(ban_threshold=0.2))
    led.record_fault(np.array([1]))
    assert not led.banned().any() and led.rep[1] == 0
    assert led.ban_low(5).tolist() == [1] and led.banned_at[1] == 5


def test_the_trimmed_mean_comparison_profile():
    from qres.kernel import profiles
    from qres.robust.defence_bench import _with_aggregator

    loaded = profiles.load("swarm-100")
    other = _with_aggregator(loaded, "trimmed-mean")
    assert other.build("swarm", "aggregator").name == "trimmed-mean"
    assert "aggregator" not in loaded.data.get("swarm", {}) or (
        loaded.build("swarm", "aggregator").name != "trimmed-mean"
    )


def test_the_comparison_with_the_trimmed_mean_shares_one_denominator():
    """Both ratios at 45% divide by the same attack-free error, so comparing them compares
    honest errors under the same attack (a rule with a better attack-free swarm is not
    penalised for it)."""
    import pytest

    from qres.kernel import profiles
    from qres.robust import defence_bench as db
    from qres.swarm.engine import settings_from_profile

    s = db.DefenceSettings(
        nodes=12, rounds=3, fractions=(0.45,), seeds=(0,), attacks=("sign-flip",), tail=1
    )
    row = db.run(s)["rows"][0]
    loaded = profiles.load(s.profile)
    base = settings_from_profile(loaded, nodes=12, rounds=3, byzantine=0.45, seed=0)
    err = {
        (a, g): db._honest_error(db._simulate(loaded, base, a, g)[0], 1)
        for a in (None, "sign-flip")
        for g in (None, "trimmed-mean")
    }
    assert row["error_ratio"] == pytest.approx(err["sign-flip", None] / err[None, None])
    assert row["trimmed_ratio"] == pytest.approx(err["sign-flip", "trimmed-mean"] / err[None, None])
    own = err["sign-flip", "trimmed-mean"] / err[None, "trimmed-mean"]
    assert row["trimmed_own_ratio"] == pytest.approx(own)


def test_quiet_nodes_replay_chains_of_many_rounds(monkeypatch):
    """Honest nodes that stay quiet apply an aggregate every round; their next packet's step
    covers all of them (at most 64: then they send), and auditing every packet finds each
    replay exact."""
    from qres.kernel import profiles
    from qres.swarm import steps
    from qres.swarm.engine import Simulation, settings_from_profile

    loaded = profiles.load("swarm-100")
    s = settings_from_profile(
        loaded, nodes=16, rounds=66, byzantine=0.2, audit_rate=1.0, gossip_bias_calm=1e6
    )
    lengths = []
    sim = Simulation(loaded, s, attack="base-poison")
    original = steps.StepLog.close

    def close(log, nodes, bases, *rest):
        lengths.extend(len(log.chains[i]) for i in nodes.tolist())
        original(log, nodes, bases, *rest)

    monkeypatch.setattr(steps.StepLog, "close", close)
    report = sim.run()
    assert max(lengths) == steps.MAX_SUBSTEPS - 1  # quiet honest nodes sent when full
    assert report["audits"]["wrong_step_honest"] == 0 and report["banned_honest"] == 0
    assert report["audits"]["wrong_step_byzantine"] > 0


def test_selection_keys_are_the_receivers_and_order_free():
    """The key a receiver ranks its inbox by depends on the seed, the receiver and the
    message only: the same in any order, different per receiver, uniform in [0, 1)."""
    from qres.swarm.gossip import selection_keys

    dst = np.repeat(np.arange(50), 40)
    tag = np.tile(np.arange(40) * 97 + 3, 50)
    keys = selection_keys(dst, tag, 7)
    perm = np.random.default_rng(1).permutation(dst.shape[0])
    assert selection_keys(dst[perm], tag[perm], 7).tolist() == keys[perm].tolist()
    assert ((keys >= 0) & (keys < 1)).all() and abs(keys.mean() - 0.5) < 0.02
    assert selection_keys(dst, tag, 8).tolist() != keys.tolist()
    orders = {tuple(np.argsort(keys[dst == d]).tolist()) for d in range(50)}
    assert len(orders) == 50  # every receiver ranks the same messages its own way


def test_a_full_inbox_keeps_senders_in_their_received_share():
    """Byzantine packets claim the highest priority; a node whose inbox is over
    ``max_inbox`` keeps them in the share it received them, not first. Each node's own
    update enters its aggregation at weight 1."""
    from qres.kernel import profiles
    from qres.robust.reputation import REP_ONE
    from qres.swarm.engine import Simulation, settings_from_profile

    loaded = profiles.load("swarm-100")
    s = settings_from_profile(loaded, nodes=40, rounds=6, byzantine=0.3, seed=2, max_inbox=3)
    sim = Simulation(loaded, s, attack="ipm")
    seen = {"received": 0, "received_byz": 0, "kept": 0, "kept_byz": 0, "own": set()}
    aggregate_all = sim._aggregate_all

    def watch(sw, A, delta, in_dst, in_tag, rows, keys, n, rep_f):
        aggregate_all(sw, A, delta, in_dst, in_tag, rows, keys, n, rep_f)
        for i in A.tolist():
            got = in_tag[in_dst == i] % n
            seen["received"] += got.shape[0]
            seen["received_byz"] += int(sw.byz[got].sum())
            if got.shape[0] == 0:
                continue
            _, _, weights = sw.steps.chains[i][-1]
            kept = sw.steps.meta[i][-1][1] % n
            seen["kept"] += kept.shape[0]
            seen["kept_byz"] += int(sw.byz[kept].sum())
            seen["own"].add(int(weights[0]))

    sim._aggregate_all = watch
    sim.run()
    assert seen["own"] == {REP_ONE}
    assert seen["received"] > 1.5 * seen["kept"]  # inboxes overflowed
    share_received = seen["received_byz"] / seen["received"]
    share_kept = seen["kept_byz"] / seen["kept"]
    assert abs(share_kept - share_received) < 0.08, (share_kept, share_received)


def test_the_summary_gives_the_worst_and_the_mean_over_seeds():
    from qres.robust.defence_bench import summarise

    rows = [
        {"byzantine": 0.45, "seed": s, "attack": "friends", "error_ratio": e,
         "honest_banned": 0, "byzantine_banned": 27, "faulted_unbanned": 0,
         "committed_unbanned": 0, "trimmed_ratio": t}
        for s, (e, t) in enumerate([(0.9, 1.0), (1.07, 1.05), (0.95, 1.0)])
    ]  # fmt: skip
    (cell,) = summarise(rows)["cells"]
    assert cell["worst_ratio"] == 1.07 and cell["worst_trimmed_ratio"] == 1.05
    assert cell["mean_ratio"] == pytest.approx((0.9 + 1.07 + 0.95) / 3)
    assert cell["mean_trimmed_ratio"] == pytest.approx((1.0 + 1.05 + 1.0) / 3)
    # the target compares the worst seeds: one unlucky seed fails it
    assert not summarise(rows)["targets"]["not_worse_than_trimmed_at_45"]
